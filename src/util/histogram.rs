//! A histogram of durations with fixed buckets, for Prometheus (rendered by [`crate::metrics`]).
//! A leaf: the modules that measure (the relying party, the upstream) need nothing else of the
//! metrics.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// IdP call latency buckets (seconds): token and JWKS calls over the internet, up to the default
/// `oidc.timeout` of 10s.
pub const IDP_BUCKETS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// A Prometheus histogram of durations with fixed buckets. Bucket counts are kept per bucket
/// (not cumulative) so an observation is one increment; they are summed at render time, which
/// also makes `+Inf` and `_count` always agree.
#[derive(Debug)]
pub struct Histogram {
    /// Upper bounds in seconds, ascending; `+Inf` is implicit.
    pub(crate) bounds: &'static [f64],
    /// One counter per bound, then one for `+Inf`.
    pub(crate) counts: Box<[AtomicU64]>,
    /// Sum of all observations, in nanoseconds (584 years of latency before it wraps).
    pub(crate) sum_nanos: AtomicU64,
}

impl Histogram {
    /// An empty histogram with these upper bounds (seconds, ascending).
    pub fn new(bounds: &'static [f64]) -> Histogram {
        debug_assert!(bounds.windows(2).all(|w| w[0] < w[1]), "bucket bounds must ascend");
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_nanos: AtomicU64::new(0),
        }
    }

    /// Records one duration.
    pub fn observe(&self, duration: Duration) {
        let seconds = duration.as_secs_f64();
        // `le` is inclusive: the first bound at or above the value.
        let bucket = self.bounds.iter().position(|&le| seconds <= le).unwrap_or(self.bounds.len());
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// How many durations were recorded.
    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }
}
