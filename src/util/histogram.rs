//! A histogram of durations (or of sizes) with fixed buckets, for Prometheus (rendered by
//! [`crate::metrics`]).
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
    /// Sum of all observations, in nanoseconds (584 years of latency before it wraps) — or, for
    /// sizes, in bytes.
    pub(crate) sum_nanos: AtomicU64,
    /// What one unit of `sum_nanos` is worth in the rendered sum: 1e-9 (nanoseconds to
    /// seconds), or 1 for sizes.
    pub(crate) sum_scale: f64,
}

/// Session cookie sizes (bytes): one cookie is about 4 KB in every browser; nginx's default header
/// buffers are 8 KB.
pub const COOKIE_BYTES_BUCKETS: &[f64] = &[256.0, 512.0, 1024.0, 2048.0, 3072.0, 4096.0, 6144.0, 8192.0, 12288.0, 16384.0, 32768.0];

impl Histogram {
    /// An empty histogram with these upper bounds (seconds, ascending).
    pub fn new(bounds: &'static [f64]) -> Histogram {
        debug_assert!(bounds.windows(2).all(|w| w[0] < w[1]), "bucket bounds must ascend");
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_nanos: AtomicU64::new(0),
            sum_scale: 1e-9,
        }
    }

    /// An empty histogram of sizes (bytes) with these upper bounds.
    pub fn of_sizes(bounds: &'static [f64]) -> Histogram {
        Histogram { sum_scale: 1.0, ..Histogram::new(bounds) }
    }

    /// Records one size (a histogram made by [`Histogram::of_sizes`]).
    pub fn observe_size(&self, bytes: u64) {
        let bucket = self.bounds.iter().position(|&le| bytes as f64 <= le).unwrap_or(self.bounds.len());
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(bytes, Ordering::Relaxed);
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
