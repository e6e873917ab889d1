//! Latency histograms per queue: how long jobs wait before they start, and how long they run.
//!
//! Fixed millisecond buckets, counted in memory as events happen (one array increment), so
//! `/metrics` can export true Prometheus histograms without the engine keeping per-job
//! timings. They are not persisted: after a restart they start from zero, which Prometheus
//! reads as a counter reset.

use serde::Serialize;

/// Upper bounds of the buckets, in ms; a last, implicit bucket holds everything above.
pub const BUCKET_BOUNDS_MS: [u64; 16] = [
    1, 2, 5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000, 300_000,
];

/// Counts of observations per bucket, with their sum.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LatencyHistogram {
    /// Observations per bucket (not cumulative); index `i` counts values `<= BUCKET_BOUNDS_MS[i]`
    /// and above the previous bound; the last entry counts values above every bound.
    pub buckets: [u64; BUCKET_BOUNDS_MS.len() + 1],
    /// Sum of every observation, ms.
    pub sum_ms: u64,
    /// Number of observations.
    pub count: u64,
    /// The largest observation, ms (0 when empty).
    pub max_ms: u64,
}

impl LatencyHistogram {
    /// Records one observation.
    pub fn observe(&mut self, ms: u64) {
        let i = BUCKET_BOUNDS_MS.partition_point(|&b| b < ms);
        self.buckets[i] += 1;
        self.sum_ms = self.sum_ms.saturating_add(ms);
        self.count += 1;
        self.max_ms = self.max_ms.max(ms);
    }

    /// The `q` quantile (0..=1), ms: found in its bucket and interpolated linearly between
    /// the bucket's bounds, as Prometheus' `histogram_quantile` does, and never above the
    /// largest observation (so the overflow bucket, which has no upper bound, ends there).
    /// `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * self.count as f64;
        let mut below = 0u64;
        for (i, &n) in self.buckets.iter().enumerate() {
            if n > 0 && (below + n) as f64 >= rank {
                let lo = if i == 0 { 0 } else { BUCKET_BOUNDS_MS[i - 1] };
                let hi = BUCKET_BOUNDS_MS
                    .get(i)
                    .copied()
                    .unwrap_or(self.max_ms)
                    .min(self.max_ms);
                let within = ((rank - below as f64) / n as f64).clamp(0.0, 1.0);
                let v = lo as f64 + within * hi.saturating_sub(lo) as f64;
                return Some((v.round() as u64).min(self.max_ms));
            }
            below += n;
        }
        Some(self.max_ms)
    }

    /// The value under which a fraction `q` (0..=1) of observations fall, as the upper bound
    /// of the bucket that holds it (`None` when empty; `u64::MAX` for the overflow bucket).
    pub fn quantile_upper_bound(&self, q: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(BUCKET_BOUNDS_MS.get(i).copied().unwrap_or(u64::MAX));
            }
        }
        Some(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_bucket_of_their_upper_bound() {
        let mut h = LatencyHistogram::default();
        for ms in [0, 1, 2, 3, 300_000, 300_001] {
            h.observe(ms);
        }
        assert_eq!(h.buckets[0], 2, "0 and 1 are <= 1");
        assert_eq!(h.buckets[1], 1, "2 is <= 2");
        assert_eq!(h.buckets[2], 1, "3 is <= 5");
        assert_eq!(h.buckets[15], 1, "300000 is <= 300000");
        assert_eq!(h.buckets[16], 1, "300001 overflows");
        assert_eq!(h.count, 6);
        assert_eq!(h.sum_ms, 600_007);
        assert_eq!(h.quantile_upper_bound(0.5), Some(2));
        assert_eq!(h.quantile_upper_bound(1.0), Some(u64::MAX));
        assert_eq!(LatencyHistogram::default().quantile_upper_bound(0.5), None);
        assert_eq!(h.max_ms, 300_001);
    }

    /// Regression: p99 past the last bucket answered u64::MAX (the dashboard printed
    /// "18446744073709552.0 s"), and a bucket's upper bound stood for every value in it (p99
    /// "300 s" while the longest wait was 66 s).
    #[test]
    fn quantiles_interpolate_and_never_pass_the_largest_observation() {
        let mut h = LatencyHistogram::default();
        for _ in 0..99 {
            h.observe(40);
        }
        h.observe(66_000);
        assert_eq!(h.quantile(0.99), Some(50), "the 99th of 100 is in (25, 50]");
        assert_eq!(h.quantile(1.0), Some(66_000), "capped at the largest wait");
        let p50 = h.quantile(0.5).unwrap_or(0);
        assert!(p50 > 25 && p50 <= 50, "{p50}");
        let mut over = LatencyHistogram::default();
        over.observe(400_000);
        over.observe(500_000);
        assert_eq!(
            over.quantile(1.0),
            Some(500_000),
            "overflow ends at the max"
        );
        let p99 = over.quantile(0.99).unwrap_or(0);
        assert!((300_000..=500_000).contains(&p99), "{p99}");
        assert!(over.quantile(0.5).unwrap_or(0) >= 300_000);
        let mut small = LatencyHistogram::default();
        small.observe(3);
        assert_eq!(small.quantile(0.99), Some(3));
        assert_eq!(LatencyHistogram::default().quantile(0.5), None);
    }
}
