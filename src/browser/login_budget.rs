//! How many sign-ins an instance starts. Every start keeps a login state (up to ~2.5 KB) in the
//! store until it completes or expires, so anonymous page visits must not be able to fill the
//! store: Redis has no cap of its own, and a full Redis evicts or refuses real sessions.

use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

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

/// The unit a client is counted by: its IPv4 address, or its IPv6 /64 (one host can use a
/// whole /64). An IPv4 client of a dual-stack listener (`::ffff:a.b.c.d`) is its IPv4 address:
/// a /64 would put every IPv4 client in one.
fn network(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
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
