//! Exponential back-off with full jitter, for waits between attempts on the
//! same provider when it gave no `Retry-After`.
//!
//! The wait before retry `n` (0 for the first retry) is drawn uniformly from
//! `[0, min(max, base · 2ⁿ)]` ("full jitter"): spreading the waits over the
//! whole interval, rather than around its end, is what keeps many workers
//! that failed together from retrying together. Parameters are checked once,
//! when the [`Backoff`] is built, so a running router never meets a zero or
//! inverted interval. The random source is passed in by the caller, so a
//! seeded RNG gives the same waits on every run (tests, replays), and the
//! arithmetic saturates at `max` instead of overflowing for any retry count.

use std::time::Duration;

use rand::Rng;

/// Why back-off parameters were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackoffError {
    #[error("back-off base must be greater than zero, found {0:?}")]
    ZeroBase(Duration),
    #[error("back-off max must be at least the base {base:?}, found {max:?}")]
    MaxBelowBase { base: Duration, max: Duration },
}

/// Validated exponential back-off parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    base: Duration,
    max: Duration,
}

impl Backoff {
    /// Checks `base > 0` and `max >= base`.
    pub fn new(base: Duration, max: Duration) -> Result<Backoff, BackoffError> {
        if base.is_zero() {
            return Err(BackoffError::ZeroBase(base));
        }
        if max < base {
            return Err(BackoffError::MaxBelowBase { base, max });
        }
        Ok(Backoff { base, max })
    }

    /// The ceiling of the first retry's wait.
    pub fn base(&self) -> Duration {
        self.base
    }

    /// The largest wait ever returned.
    pub fn max(&self) -> Duration {
        self.max
    }

    /// The upper end of the jitter interval for retry `retry`:
    /// `min(max, base · 2^retry)`, saturating instead of overflowing.
    pub fn ceiling(&self, retry: u32) -> Duration {
        // u128 nanoseconds hold base · 2^retry exactly until the shift or the
        // product leaves the type; both cases are far above any `max`.
        let base = self.base.as_nanos();
        let max = self.max.as_nanos();
        let grown = 1u128
            .checked_shl(retry)
            .and_then(|factor| base.checked_mul(factor))
            .unwrap_or(max);
        from_nanos(grown.min(max))
    }

    /// The wait before retry `retry` (0 = the first retry), drawn uniformly
    /// from `[0, ceiling(retry)]`.
    pub fn delay(&self, retry: u32, rng: &mut impl Rng) -> Duration {
        let ceiling = self.ceiling(retry).as_nanos();
        from_nanos(rng.random_range(0..=ceiling))
    }
}

/// Builds a `Duration` from nanoseconds known to come from a `Duration`
/// (so the seconds fit in a `u64`).
fn from_nanos(nanos: u128) -> Duration {
    const NANOS_PER_SEC: u128 = 1_000_000_000;
    let secs = u64::try_from(nanos / NANOS_PER_SEC).unwrap_or(u64::MAX);
    // The remainder is below 10⁹, so it always fits in a u32.
    let subsec = (nanos % NANOS_PER_SEC) as u32;
    Duration::new(secs, subsec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn backoff() -> Backoff {
        Backoff::new(Duration::from_millis(100), Duration::from_secs(5)).unwrap()
    }

    #[test]
    fn delay_stays_within_zero_and_the_exponential_ceiling() {
        let backoff = backoff();
        let mut rng = StdRng::seed_from_u64(7);
        for retry in 0..6 {
            let ceiling = Duration::from_millis(100) * 2u32.pow(retry);
            assert_eq!(backoff.ceiling(retry), ceiling.min(Duration::from_secs(5)));
            for _ in 0..1_000 {
                assert!(backoff.delay(retry, &mut rng) <= ceiling);
            }
        }
    }

    #[test]
    fn delay_is_spread_over_the_whole_interval() {
        let backoff = backoff();
        let mut rng = StdRng::seed_from_u64(11);
        let delays: Vec<Duration> = (0..2_000).map(|_| backoff.delay(3, &mut rng)).collect();
        let ceiling = Duration::from_millis(800);
        assert!(delays.iter().any(|d| *d < ceiling / 10));
        assert!(delays.iter().any(|d| *d > ceiling * 9 / 10));
    }

    #[test]
    fn ceiling_is_capped_at_max_even_for_huge_retry_counts() {
        let backoff = backoff();
        let mut rng = StdRng::seed_from_u64(3);
        for retry in [6, 10, 31, 32, 63, 64, 127, 128, 1_000, u32::MAX] {
            assert_eq!(
                backoff.ceiling(retry),
                Duration::from_secs(5),
                "retry {retry}"
            );
            assert!(backoff.delay(retry, &mut rng) <= Duration::from_secs(5));
        }
        // The largest representable interval must not overflow either.
        let wide = Backoff::new(Duration::from_secs(1), Duration::MAX).unwrap();
        assert_eq!(wide.ceiling(u32::MAX), Duration::MAX);
        assert!(wide.delay(u32::MAX, &mut rng) <= Duration::MAX);
    }

    #[test]
    fn invalid_parameters_are_rejected() {
        assert_eq!(
            Backoff::new(Duration::ZERO, Duration::from_secs(1)),
            Err(BackoffError::ZeroBase(Duration::ZERO))
        );
        let error = Backoff::new(Duration::from_secs(2), Duration::from_secs(1)).unwrap_err();
        assert_eq!(
            error.to_string(),
            "back-off max must be at least the base 2s, found 1s"
        );
        assert!(Backoff::new(Duration::from_secs(1), Duration::from_secs(1)).is_ok());
    }

    #[test]
    fn same_seed_gives_the_same_delays() {
        let backoff = backoff();
        let run = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            (0..20)
                .map(|retry| backoff.delay(retry, &mut rng))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(42), run(42));
        assert_ne!(run(42), run(43));
    }
}
