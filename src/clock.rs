//! Time as the gateway reads it: wall-clock seconds for what tokens and sessions say
//! (`exp`, `iat`, expiry), and one monotonic millisecond clock for back-off, health marks and
//! refetch cool-downs, which must not jump when the wall clock is set.

use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Milliseconds on a monotonic clock that starts at 1 with the process (0 is free to mean
/// "never" in an atomic).
pub fn monotonic_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX).saturating_add(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_monotonic_clock_starts_above_zero_and_never_goes_back() {
        let a = monotonic_ms();
        let b = monotonic_ms();
        assert!(a >= 1 && b >= a);
        assert!(unix_now() > 1_700_000_000);
    }
}
