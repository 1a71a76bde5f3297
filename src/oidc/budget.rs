//! The token-endpoint budget: the gateway is one OAuth client for all its users, and providers
//! limit a client's token-endpoint calls (Calimatic: 20 per minute). Every call takes a token
//! from this bucket first. Code exchanges have priority (a code dies within a minute and a user
//! is waiting on it); refreshes may only use the part of the budget above a reserve, and are
//! deferred, not failed, when there is none. A 429 stops all calls until its `Retry-After`, then
//! consecutive 429s back off exponentially with jitter.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Why a token-endpoint call is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// `authorization_code`: a user is waiting at the callback.
    CodeExchange,
    /// `refresh_token`: can usually wait while the current access token is still valid.
    Refresh,
}

impl Grant {
    /// The metrics label.
    pub fn label(self) -> &'static str {
        match self {
            Grant::CodeExchange => "authorization_code",
            Grant::Refresh => "refresh_token",
        }
    }
}

/// A client-side limiter for the provider's token endpoint.
#[derive(Debug)]
pub struct TokenBudget {
    capacity: f64,
    per_second: f64,
    /// Tokens refreshes must leave for code exchanges.
    reserve: f64,
    state: Mutex<BudgetState>,
}

#[derive(Debug)]
struct BudgetState {
    tokens: f64,
    updated: Instant,
    /// No call before this (after a 429).
    blocked_until: Option<Instant>,
    /// Consecutive 429s.
    strikes: u32,
}

/// Longest pause after repeated 429s without `Retry-After`.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

impl TokenBudget {
    /// A budget of `per_minute` calls, spread evenly (a full bucket allows a burst of all of them).
    pub fn new(per_minute: u32) -> Self {
        let capacity = f64::from(per_minute.max(1));
        Self {
            capacity,
            per_second: capacity / 60.0,
            reserve: (capacity / 4.0).floor(),
            state: Mutex::new(BudgetState {
                tokens: capacity,
                updated: Instant::now(),
                blocked_until: None,
                strikes: 0,
            }),
        }
    }

    /// Takes one call's worth for `grant`, or says how long until one could be taken.
    pub fn try_take(&self, grant: Grant) -> Result<(), Duration> {
        let now = Instant::now();
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(until) = s.blocked_until {
            if until > now {
                return Err(until - now);
            }
            s.blocked_until = None;
        }
        let elapsed = now.saturating_duration_since(s.updated).as_secs_f64();
        s.tokens = (s.tokens + elapsed * self.per_second).min(self.capacity);
        s.updated = now;
        let needed = match grant {
            Grant::CodeExchange => 1.0,
            Grant::Refresh => 1.0 + self.reserve,
        };
        if s.tokens >= needed {
            s.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((needed - s.tokens) / self.per_second))
        }
    }

    /// The provider answered 429: pause every call for `retry_after`, or back off exponentially
    /// (1 s, 2 s, 4 s ... up to a minute, with jitter) when it gave none. Returns the pause.
    pub fn throttled(&self, retry_after: Option<Duration>) -> Duration {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.strikes = s.strikes.saturating_add(1);
        let backoff = Duration::from_secs(1u64 << (s.strikes - 1).min(6)).min(MAX_BACKOFF);
        let pause = match retry_after {
            // a Retry-After beyond the backoff cap is still honoured: it is the provider's rule
            Some(ra) if s.strikes == 1 => ra,
            Some(ra) => ra.max(backoff),
            None => backoff,
        };
        let pause = pause.min(Duration::from_secs(3600)) + jitter(pause);
        // no burst when the pause ends: sign-ins first, and one refresh to probe
        s.tokens = s.tokens.min(self.reserve + 1.0);
        s.blocked_until = Some(Instant::now() + pause);
        pause
    }

    /// A call went through: the backoff starts over.
    pub fn succeeded(&self) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).strikes = 0;
    }
}

/// Up to 10% of `d` (at most 1 s) of random extra wait, so instances do not retry in lockstep.
fn jitter(d: Duration) -> Duration {
    let max_ms = (d.as_millis() / 10).min(1000) as u64;
    if max_ms == 0 {
        return Duration::ZERO;
    }
    let r = crate::random::random_bytes::<8>().map(u64::from_le_bytes).unwrap_or(0);
    Duration::from_millis(r % max_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refreshes_leave_a_reserve_for_sign_ins() {
        let budget = TokenBudget::new(20);
        // 20 calls a minute, 5 of them kept for code exchanges
        for i in 0..15 {
            assert!(budget.try_take(Grant::Refresh).is_ok(), "refresh {i}");
        }
        let wait = budget.try_take(Grant::Refresh).unwrap_err();
        assert!(wait > Duration::from_secs(1) && wait <= Duration::from_secs(4), "{wait:?}");
        for i in 0..5 {
            assert!(budget.try_take(Grant::CodeExchange).is_ok(), "exchange {i}");
        }
        let wait = budget.try_take(Grant::CodeExchange).unwrap_err();
        assert!(wait <= Duration::from_secs(3), "one call every 3 s comes back: {wait:?}");
    }

    #[test]
    fn a_429_pauses_every_call_and_repeated_ones_back_off() {
        let budget = TokenBudget::new(20);
        let pause = budget.throttled(Some(Duration::from_secs(7)));
        assert!(pause >= Duration::from_secs(7) && pause < Duration::from_millis(7800), "{pause:?}");
        let wait = budget.try_take(Grant::CodeExchange).unwrap_err();
        assert!(wait > Duration::from_secs(6), "{wait:?}");
        assert!(budget.throttled(None) >= Duration::from_secs(2));
        assert!(budget.throttled(None) >= Duration::from_secs(4));
        budget.succeeded();
        let again = budget.throttled(None);
        assert!(again >= Duration::from_secs(1) && again < Duration::from_secs(2), "{again:?}");
    }
}
