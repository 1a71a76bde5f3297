//! How many sign-ins an instance starts. Every start keeps a login state (up to ~2.5 KB) in the
//! store until it completes or expires, so anonymous page visits must not be able to fill the
//! store: Redis has no cap of its own, and a full Redis evicts or refuses real sessions.

use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::forwarding::client_network as network;

/// Starts allowed: `max_pending_logins` per login lifetime in all, and a twentieth of that (at
/// least 10) per client address, so that one client cannot spend everyone's sign-ins.
pub(crate) struct LoginBudget {
    all: Bucket,
    per_client: moka::sync::Cache<IpAddr, Arc<Bucket>>,
    share: u64,
    lifetime: Duration,
}

impl LoginBudget {
    /// `capacity` starts per `lifetime`.
    pub(crate) fn new(capacity: u64, lifetime: Duration) -> Self {
        Self {
            all: Bucket::new(capacity, lifetime),
            // a bucket idle for a whole lifetime is full again: forgetting it loses nothing
            per_client: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_idle(lifetime.max(Duration::from_secs(1)))
                .build(),
            share: (capacity / 20).max(capacity.min(10)),
            lifetime,
        }
    }

    /// Takes one start for `client`, or says in how many seconds one will be available.
    pub(crate) fn take(&self, client: Option<IpAddr>) -> Result<(), u64> {
        let mine = client.map(|ip| self.bucket(ip));
        if let Some(mine) = &mine {
            mine.take()?;
        }
        self.all.take().inspect_err(|_| {
            if let Some(mine) = &mine {
                mine.refund();
            }
        })
    }

    /// Gives back a start that stored nothing.
    pub(crate) fn refund(&self, client: Option<IpAddr>) {
        self.all.refund();
        if let Some(mine) = client.and_then(|ip| self.per_client.get(&network(ip))) {
            mine.refund();
        }
    }

    fn bucket(&self, ip: IpAddr) -> Arc<Bucket> {
        self.per_client.get_with(network(ip), || Arc::new(Bucket::new(self.share, self.lifetime)))
    }
}

/// Code exchanges per client network (the same unit as sign-in starts). A callback with a
/// state from `/oauth2/start` and a made-up code costs a real token-endpoint call before the
/// code is known to be bad, so: one exchange at a time per network (the others wait their turn,
/// then find out whether the first was refused), at most the exchanges' share of the
/// token-endpoint rate a minute, and an exchange the provider refuses costs the network
/// `REFUSAL_MINUTES` of its allowance. One network sending made-up codes then costs the
/// provider one call per that many minutes.
pub(crate) struct ExchangeLimiter {
    per_client: moka::sync::Cache<IpAddr, Arc<ExchangeLane>>,
    burst: f64,
    per_second: f64,
}

struct ExchangeLane {
    bucket: Bucket,
    turn: Arc<tokio::sync::Semaphore>,
}

/// A network's turn at an exchange.
pub(crate) struct ExchangeTurn {
    lane: Arc<ExchangeLane>,
    _turn: tokio::sync::OwnedSemaphorePermit,
    penalty: f64,
}

/// What a refused exchange costs its network, in minutes of its allowance.
const REFUSAL_MINUTES: f64 = 5.0;
/// How long a callback waits for its network's previous exchange.
const TURN_WAIT: Duration = Duration::from_secs(10);

impl ExchangeLimiter {
    /// For a provider allowing `token_endpoint_rate` calls a minute (three quarters of which
    /// may be exchanges).
    pub(crate) fn new(token_endpoint_rate: u32) -> Self {
        // the exchanges' share of the budget: one network may use all of it, one code at a time
        let per_minute = (f64::from(token_endpoint_rate) * 0.75).max(1.0);
        Self {
            per_client: moka::sync::Cache::builder()
                .max_capacity(100_000)
                // longer than any debt takes to repay: forgetting a network forgives nothing
                .time_to_idle(Duration::from_secs(30 * 60))
                .build(),
            burst: per_minute,
            per_second: per_minute / 60.0,
        }
    }

    /// Waits for `client`'s turn and takes one exchange from its allowance, or says in how many
    /// seconds to come back. `None` when the client's address is unknown (not limited here).
    pub(crate) async fn enter(&self, client: Option<IpAddr>) -> Result<Option<ExchangeTurn>, u64> {
        let Some(ip) = client else { return Ok(None) };
        let lane = self.per_client.get_with(network(ip), || {
            Arc::new(ExchangeLane {
                bucket: Bucket::with_rate(self.burst, self.per_second),
                turn: Arc::new(tokio::sync::Semaphore::new(1)),
            })
        });
        let turn = match tokio::time::timeout(TURN_WAIT, lane.turn.clone().acquire_owned()).await {
            Ok(Ok(permit)) => permit,
            _ => return Err(2),
        };
        lane.bucket.take()?;
        Ok(Some(ExchangeTurn { penalty: REFUSAL_MINUTES * 60.0 * self.per_second, lane, _turn: turn }))
    }
}

impl ExchangeTurn {
    /// The provider refused the code (`invalid_grant`, `invalid_request`): the network pays.
    pub(crate) fn refused(&self) {
        self.lane.bucket.charge(self.penalty);
    }

    /// The provider was not asked after all (no budget): the exchange goes back.
    pub(crate) fn refund(&self) {
        self.lane.bucket.refund();
    }
}

/// A token bucket: `capacity` per `lifetime`, refilled evenly. Locked only briefly, never
/// across an await.
struct Bucket {
    capacity: f64,
    per_second: f64,
    /// Starts left, and when that was computed.
    left: Mutex<(f64, Instant)>,
}

impl Bucket {
    fn new(capacity: u64, lifetime: Duration) -> Self {
        // exact: the config allows at most 10 million
        let capacity = capacity.max(1) as f64;
        Self {
            capacity,
            per_second: capacity / lifetime.as_secs_f64().max(1.0),
            left: Mutex::new((capacity, Instant::now())),
        }
    }

    /// A bucket of `capacity` refilled at `per_second`.
    fn with_rate(capacity: f64, per_second: f64) -> Self {
        Self { capacity, per_second: per_second.max(1e-6), left: Mutex::new((capacity, Instant::now())) }
    }

    /// Takes `cost` more than is left: later takes wait until the debt is repaid.
    fn charge(&self, cost: f64) {
        let mut left = self.left.lock().unwrap_or_else(PoisonError::into_inner);
        left.0 = (left.0 - cost).max(-1e9);
    }

    fn take(&self) -> Result<(), u64> {
        let mut left = self.left.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let refilled =
            (left.0 + now.duration_since(left.1).as_secs_f64() * self.per_second).min(self.capacity);
        *left = (refilled, now);
        if refilled >= 1.0 {
            left.0 -= 1.0;
            return Ok(());
        }
        // whole seconds, at least one (a small positive f64, so the cast is exact)
        Err(((1.0 - refilled) / self.per_second).ceil().clamp(1.0, 3600.0) as u64)
    }

    fn refund(&self) {
        let mut left = self.left.lock().unwrap_or_else(PoisonError::into_inner);
        left.0 = (left.0 + 1.0).min(self.capacity);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_network_whose_codes_are_refused_pays_for_them() {
        let limiter = ExchangeLimiter::new(20);
        let (attacker, other): (IpAddr, IpAddr) =
            ("203.0.113.7".parse().unwrap(), "198.51.100.1".parse().unwrap());
        // good exchanges: the exchanges' share (15 of 20 a minute) at once, then one every 4 s
        for i in 0..15 {
            assert!(limiter.enter(Some(other)).await.unwrap().is_some(), "exchange {i}");
        }
        let wait = limiter.enter(Some(other)).await.err().unwrap();
        assert!((1..=4).contains(&wait), "{wait}");
        // one refused code costs five minutes of allowance; other networks do not pay
        let turn = limiter.enter(Some(attacker)).await.unwrap().unwrap();
        turn.refused();
        drop(turn);
        // (its unused allowance, 14 exchanges, goes towards the 75 a refusal costs)
        let wait = limiter.enter(Some(attacker)).await.err().unwrap();
        assert!((240..=250).contains(&wait), "{wait}");
        assert!(limiter.enter(Some("192.0.2.1".parse().unwrap())).await.unwrap().is_some());
        assert!(limiter.enter(None).await.unwrap().is_none(), "an unknown address is not limited here");
    }

    #[tokio::test]
    async fn a_network_exchanges_one_code_at_a_time() {
        let limiter = Arc::new(ExchangeLimiter::new(20));
        let ip: IpAddr = "203.0.113.9".parse().unwrap();
        let first = limiter.enter(Some(ip)).await.unwrap().unwrap();
        let waiting = tokio::spawn({
            let limiter = limiter.clone();
            async move { limiter.enter(Some(ip)).await.map(|t| t.is_some()) }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "the second waits for the first's verdict");
        first.refused();
        drop(first);
        assert!(waiting.await.unwrap().is_err(), "and then finds the network in debt");
    }

    #[test]
    fn a_bucket_allows_its_capacity_then_says_when_to_retry() {
        let bucket = Bucket::new(3, Duration::from_secs(600));
        assert_eq!((bucket.take(), bucket.take(), bucket.take()), (Ok(()), Ok(()), Ok(())));
        // one start comes back every 200 s
        let retry = bucket.take().unwrap_err();
        assert!((199..=200).contains(&retry), "{retry}");
        bucket.refund();
        assert_eq!(bucket.take(), Ok(()), "a refunded start can be taken again");
        // a lifetime under a second is read as one second: never a division by zero
        let quick = Bucket::new(1, Duration::ZERO);
        assert_eq!(quick.take(), Ok(()));
        assert_eq!(quick.take(), Err(1));
    }

    #[test]
    fn one_client_gets_its_share_and_the_others_the_rest() {
        let budget = LoginBudget::new(40, Duration::from_secs(600));
        let (a, b): (IpAddr, IpAddr) = ("203.0.113.7".parse().unwrap(), "203.0.113.8".parse().unwrap());
        for _ in 0..10 {
            assert_eq!(budget.take(Some(a)), Ok(()));
        }
        assert!(budget.take(Some(a)).is_err(), "a's share (10) is spent");
        assert_eq!(budget.take(Some(b)), Ok(()), "b is not affected");
        // one IPv6 host: its whole /64 counts as one client
        let (v6a, v6b): (IpAddr, IpAddr) =
            ("2001:db8::1".parse().unwrap(), "2001:db8::ffff:1".parse().unwrap());
        for _ in 0..10 {
            assert_eq!(budget.take(Some(v6a)), Ok(()));
        }
        assert!(budget.take(Some(v6b)).is_err(), "same /64");
        assert_eq!(budget.take(Some("2001:db8:0:1::1".parse().unwrap())), Ok(()), "another /64");
        // IPv4 clients of a dual-stack listener are told apart, and are their IPv4 address
        let mapped: IpAddr = "::ffff:203.0.113.8".parse().unwrap();
        assert_eq!(network(mapped), b);
        assert_ne!(network("::ffff:203.0.113.9".parse().unwrap()), network(mapped));
        // the whole budget (40) is spent at last: 10 + 1 + 10 + 1 taken, 18 left
        let others = (1..=18).map(|i| budget.take(Some(format!("198.51.100.{i}").parse().unwrap())));
        assert!(others.into_iter().all(|r| r.is_ok()));
        assert!(budget.take(Some("198.51.100.200".parse().unwrap())).is_err(), "none left for anyone");
        assert!(budget.take(None).is_err());
    }
}
