//! The token-endpoint budget: the gateway is one OAuth client for all its users, and providers
//! limit a client's token-endpoint calls (Calimatic: 20 per minute, counted over a rolling
//! minute). Every call is counted here first, over the same rolling 60 s, so the gateway never
//! sends more than `token_endpoint_rate` in any minute. Each kind of call has a reserve the
//! other cannot take: code exchanges (which anonymous clients can provoke) never take the
//! refreshes' quarter, and refreshes never take the sign-ins' quarter; each is deferred, not
//! failed, when its share is spent. A 429 stops all calls until its `Retry-After`, then
//! consecutive 429s back off exponentially with jitter.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Why a token-endpoint call is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// `authorization_code`: a user is waiting at the callback.
    CodeExchange,
    /// `refresh_token` for a session whose access token has expired: the user waits on it.
    Refresh,
    /// `refresh_token` before the access token expires: only from spare budget, leaving the
    /// refreshes' reserve to sessions that need it now.
    EarlyRefresh,
}

impl Grant {
    /// The metrics label.
    pub fn label(self) -> &'static str {
        match self {
            Grant::CodeExchange => "authorization_code",
            Grant::Refresh | Grant::EarlyRefresh => "refresh_token",
        }
    }
}

/// The provider's window.
const WINDOW: Duration = Duration::from_secs(60);

/// A client-side limiter for the provider's token endpoint.
#[derive(Debug)]
pub struct TokenBudget {
    /// Calls allowed in any window.
    rate: usize,
    /// Calls in any window that only refreshes may make (exchanges never take them).
    refresh_reserve: usize,
    /// Calls in any window that only exchanges may make.
    exchange_reserve: usize,
    state: Mutex<BudgetState>,
}

#[derive(Debug)]
struct BudgetState {
    /// The calls of the last window, oldest first.
    calls: VecDeque<(Instant, Grant)>,
    /// No call before this (after a 429).
    blocked_until: Option<Instant>,
    /// Consecutive 429s.
    strikes: u32,
}

/// Longest pause after repeated 429s without `Retry-After`.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

impl TokenBudget {
    /// A budget of `per_minute` calls in any rolling minute.
    pub fn new(per_minute: u32) -> Self {
        let rate = usize::try_from(per_minute.max(1)).unwrap_or(usize::MAX);
        // a quarter each (at least one once there are two calls a minute to share)
        let reserve = if rate >= 2 { (rate / 4).max(1) } else { 0 };
        Self {
            rate,
            refresh_reserve: reserve,
            exchange_reserve: reserve,
            state: Mutex::new(BudgetState {
                calls: VecDeque::with_capacity(rate.min(4096)),
                blocked_until: None,
                strikes: 0,
            }),
        }
    }

    /// Counts one call for `grant`, or says how long until one could be made.
    pub fn try_take(&self, grant: Grant) -> Result<(), Duration> {
        self.try_take_at(grant, Instant::now())
    }

    fn try_take_at(&self, grant: Grant, now: Instant) -> Result<(), Duration> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(until) = s.blocked_until {
            if until > now {
                return Err(until - now);
            }
            s.blocked_until = None;
        }
        while s.calls.front().is_some_and(|(at, _)| now.saturating_duration_since(*at) >= WINDOW) {
            s.calls.pop_front();
        }
        let (kind, share) = match grant {
            Grant::CodeExchange => (Grant::CodeExchange, self.rate - self.refresh_reserve),
            Grant::Refresh => (Grant::Refresh, self.rate - self.exchange_reserve),
            Grant::EarlyRefresh => {
                (Grant::Refresh, self.rate.saturating_sub(self.exchange_reserve + self.refresh_reserve))
            }
        };
        let mine = s.calls.iter().filter(|(_, g)| *g == kind).count();
        if s.calls.len() < self.rate && mine < share {
            s.calls.push_back((now, kind));
            return Ok(());
        }
        let grant = kind;
        // the wait until a call that holds this one back leaves the window: the oldest call of
        // any kind when the window is full, else the oldest of this kind
        let blocking = match s.calls.len() >= self.rate {
            true => s.calls.front().map(|(at, _)| *at),
            false => s.calls.iter().find(|(_, g)| *g == grant).map(|(at, _)| *at),
        };
        Err(blocking.map_or(WINDOW, |at| (at + WINDOW).saturating_duration_since(now)))
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
    fn never_more_than_the_rate_in_any_minute() {
        let budget = TokenBudget::new(20);
        let t0 = Instant::now();
        let mut sent: Vec<Instant> = Vec::new();
        // 30 sign-ins and 30 refreshes ask every 100 ms for three minutes
        for tick in 0..1800u64 {
            let now = t0 + Duration::from_millis(100 * tick);
            let grant = if tick % 2 == 0 { Grant::CodeExchange } else { Grant::Refresh };
            if budget.try_take_at(grant, now).is_ok() {
                sent.push(now);
            }
        }
        for (i, at) in sent.iter().enumerate() {
            let in_window = sent[i..].iter().take_while(|t| t.duration_since(*at) < WINDOW).count();
            assert!(in_window <= 20, "{in_window} calls in the minute from {:?}", at.duration_since(t0));
        }
        assert!(sent.len() >= 55, "the budget is used: {} calls in 3 minutes", sent.len());
    }

    #[test]
    fn each_kind_keeps_a_reserve_the_other_cannot_take() {
        let budget = TokenBudget::new(20);
        let t0 = Instant::now();
        // exchanges (which anonymous clients can provoke) take 15 of 20 at most
        for i in 0..15 {
            assert!(budget.try_take_at(Grant::CodeExchange, t0).is_ok(), "exchange {i}");
        }
        let wait = budget.try_take_at(Grant::CodeExchange, t0).unwrap_err();
        assert_eq!(wait, WINDOW, "the next exchange when the first leaves the window");
        for i in 0..5 {
            assert!(budget.try_take_at(Grant::Refresh, t0).is_ok(), "refresh {i} in its reserve");
        }
        assert!(budget.try_take_at(Grant::Refresh, t0).is_err(), "the window is full");
        // and the other way round: refreshes leave the sign-ins' quarter
        let budget = TokenBudget::new(20);
        for _ in 0..15 {
            assert!(budget.try_take_at(Grant::Refresh, t0).is_ok());
        }
        assert!(budget.try_take_at(Grant::Refresh, t0).is_err());
        assert!(budget.try_take_at(Grant::CodeExchange, t0 + Duration::from_secs(1)).is_ok());
        // a minute later the first calls have left the window
        assert!(budget.try_take_at(Grant::Refresh, t0 + WINDOW).is_ok());
        // early refreshes leave the refreshes' own reserve to expired sessions
        let budget = TokenBudget::new(20);
        for _ in 0..10 {
            assert!(budget.try_take_at(Grant::EarlyRefresh, t0).is_ok());
        }
        assert!(budget.try_take_at(Grant::EarlyRefresh, t0).is_err());
        for _ in 0..5 {
            assert!(budget.try_take_at(Grant::Refresh, t0).is_ok());
        }
        assert!(budget.try_take_at(Grant::Refresh, t0).is_err());
        assert!(budget.try_take_at(Grant::CodeExchange, t0).is_ok(), "and the sign-ins' quarter is there");
        // a one-call budget has no reserve to keep
        let one = TokenBudget::new(1);
        assert!(one.try_take_at(Grant::Refresh, t0).is_ok());
        assert!(one.try_take_at(Grant::CodeExchange, t0).is_err());
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
