//! Per-key exponential backoff with jitter, as in controller-runtime's
//! `ItemExponentialFailureRateLimiter` (base · 2^(failures−1), capped), plus jitter so that many keys
//! failing together (for example while Nomad is down) do not retry in lock-step.

use std::time::Duration;

use rand::Rng;

/// Backoff policy for keys whose reconcile returned an error.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// Delay after the first failure (default 5 ms).
    pub base: Duration,
    /// Upper bound of any delay (default 5 min).
    pub max: Duration,
    /// Fraction of the delay that is randomised, 0.0..=1.0 (default 0.5): the delay is drawn
    /// uniformly from `[d · (1 − jitter), d]`, where `d = min(base · 2^(failures−1), max)`.
    /// Values outside 0.0..=1.0 are clamped.
    pub jitter: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: Duration::from_millis(5),
            max: Duration::from_secs(300),
            jitter: 0.5,
        }
    }
}

impl Backoff {
    /// The delay before the next attempt after `failures` consecutive failures (1-based;
    /// `0` gives `Duration::ZERO`), without jitter: `min(base · 2^(failures−1), max)`.
    pub fn ceiling(&self, failures: u32) -> Duration {
        if failures == 0 {
            return Duration::ZERO;
        }
        let exp = failures.saturating_sub(1).min(63);
        let factor = 1u128 << exp;
        let nanos = self.base.as_nanos().saturating_mul(factor);
        let max = self.max.as_nanos();
        let capped = nanos.min(max);
        // `capped <= max`, and `max` came from a `Duration`, so it fits back into one.
        Duration::from_nanos(u64::try_from(capped).unwrap_or(u64::MAX))
    }

    /// The jittered delay after `failures` consecutive failures: uniform in
    /// `[ceiling · (1 − jitter), ceiling]` (see [`Backoff::ceiling`]).
    pub fn delay(&self, failures: u32) -> Duration {
        let ceiling = self.ceiling(failures);
        let jitter = if self.jitter.is_finite() {
            self.jitter.clamp(0.0, 1.0)
        } else {
            0.0
        };
        if ceiling.is_zero() || jitter == 0.0 {
            return ceiling;
        }
        let low = ceiling.mul_f64(1.0 - jitter);
        let span = ceiling.saturating_sub(low);
        let extra = rand::rng().random_range(0.0..=1.0);
        low + span.mul_f64(extra)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceiling_doubles_from_base_and_caps_at_max() {
        let b = Backoff {
            base: Duration::from_millis(5),
            max: Duration::from_millis(100),
            jitter: 0.0,
        };
        let got: Vec<u128> = (0..8).map(|n| b.ceiling(n).as_millis()).collect();
        assert_eq!(got, vec![0, 5, 10, 20, 40, 80, 100, 100]);
        assert_eq!(b.ceiling(u32::MAX), Duration::from_millis(100));
    }

    #[test]
    fn jittered_delay_stays_within_the_documented_band() {
        let b = Backoff::default();
        for n in 1..30 {
            let c = b.ceiling(n);
            for _ in 0..20 {
                let d = b.delay(n);
                assert!(
                    d <= c && d >= c.mul_f64(0.5),
                    "{d:?} outside [{c:?}/2, {c:?}]"
                );
            }
        }
    }

    #[test]
    fn nonsense_jitter_is_clamped_not_a_panic() {
        let b = Backoff {
            jitter: f64::NAN,
            ..Backoff::default()
        };
        assert_eq!(b.delay(2), Duration::from_millis(10));
        let b = Backoff {
            jitter: 7.0,
            ..Backoff::default()
        };
        assert!(b.delay(2) <= Duration::from_millis(10));
    }
}
