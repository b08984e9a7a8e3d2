//! A fixed-bucket histogram of integer observations: plain counters, no
//! allocation, no atomics, `Copy` so a core can hand a snapshot to the
//! scraping core.

/// The buckets of one histogram family: upper bounds in the unit observed
/// (an integer: microseconds, records, requests), their `le` label in the
/// unit exposed (seconds, records), and the divisor from one to the other.
#[derive(Debug)]
pub struct Buckets<const N: usize> {
    /// Inclusive upper bounds, increasing, in the observed unit.
    pub upper: [u64; N],
    /// The `le` label of each bound, in the exposed unit.
    pub le: [&'static str; N],
    /// Observed unit per exposed unit (1 000 000 for µs exposed as seconds).
    pub scale: u64,
}

/// Group-commit flush latency, observed in µs, exposed in seconds: 50 µs to 1 s.
pub const FLUSH_SECONDS: Buckets<14> = Buckets {
    upper: [50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000],
    le: ["0.00005", "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1"],
    scale: 1_000_000,
};

/// Time from reading a Requests frame to writing its replies, observed in
/// µs, exposed in seconds: 10 µs to 1 s, finer around 1 ms (the target of
/// the latency curve).
pub const REPLY_SECONDS: Buckets<18> = Buckets {
    upper: [10, 25, 50, 100, 200, 300, 400, 500, 750, 1_000, 1_500, 2_000, 3_000, 5_000, 10_000, 25_000, 100_000, 1_000_000],
    le: [
        "0.00001", "0.000025", "0.00005", "0.0001", "0.0002", "0.0003", "0.0004", "0.0005", "0.00075", "0.001", "0.0015", "0.002", "0.003",
        "0.005", "0.01", "0.025", "0.1", "1",
    ],
    scale: 1_000_000,
};

/// Records one flush made durable.
pub const FLUSH_RECORDS: Buckets<10> = Buckets {
    upper: [1, 4, 16, 64, 256, 1_024, 4_096, 16_384, 65_536, 262_144],
    le: ["1", "4", "16", "64", "256", "1024", "4096", "16384", "65536", "262144"],
    scale: 1,
};

/// Requests per Requests frame (the client's batch size), up to the wire maximum.
pub const FRAME_REQUESTS: Buckets<13> = Buckets {
    upper: [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1_024, 2_048, 4_096],
    le: ["1", "2", "4", "8", "16", "32", "64", "128", "256", "512", "1024", "2048", "4096"],
    scale: 1,
};

/// Observations counted per bucket (not cumulative: rendering accumulates).
#[derive(Debug, Clone, Copy)]
pub struct Histogram<const N: usize> {
    buckets: &'static Buckets<N>,
    /// `counts[i]`: observations in `(upper[i-1], upper[i]]`.
    counts: [u64; N],
    /// Every observation, the `+Inf` bucket.
    count: u64,
    /// Sum of the observations, in the observed unit.
    sum: u64,
}

impl<const N: usize> Histogram<N> {
    /// An empty histogram over `buckets`.
    #[must_use]
    pub const fn new(buckets: &'static Buckets<N>) -> Self {
        Histogram { buckets, counts: [0; N], count: 0, sum: 0 }
    }

    /// Count one observation of `value` (in the observed unit).
    pub fn observe(&mut self, value: u64) {
        self.observe_n(value, 1);
    }

    /// Count `n` observations of `value` (in the observed unit).
    pub fn observe_n(&mut self, value: u64, n: u64) {
        let i = self.buckets.upper.partition_point(|&upper| upper < value);
        if let Some(c) = self.counts.get_mut(i) {
            *c += n;
        }
        self.count += n;
        self.sum = self.sum.saturating_add(value.saturating_mul(n));
    }

    /// Observations so far.
    #[must_use]
    pub const fn count(&self) -> u64 {
        self.count
    }

    /// Sum of the observations, in the observed unit.
    #[must_use]
    pub const fn sum(&self) -> u64 {
        self.sum
    }

    /// The buckets.
    #[must_use]
    pub const fn buckets(&self) -> &'static Buckets<N> {
        self.buckets
    }

    /// `(le, cumulative count)` for each finite bucket, in order.
    pub fn cumulative(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        self.buckets.le.iter().zip(&self.counts).scan(0u64, |acc, (&le, &n)| {
            *acc += n;
            Some((le, *acc))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check<const N: usize>(b: &Buckets<N>) {
        assert!(b.upper.windows(2).all(|w| w[0] < w[1]), "bounds must increase");
        for (upper, le) in b.upper.iter().zip(b.le) {
            let exposed: f64 = le.parse().unwrap();
            assert!((exposed * b.scale as f64 - *upper as f64).abs() < 1e-6, "le {le} is not {upper} / {}", b.scale);
        }
    }

    #[test]
    fn labels_match_bounds() {
        check(&FLUSH_SECONDS);
        check(&FLUSH_RECORDS);
        check(&FRAME_REQUESTS);
        assert_eq!(FRAME_REQUESTS.upper[12] as usize, orderd_protocol::limits::MAX_BATCH_REQUESTS);
    }

    #[test]
    fn observations_land_in_their_bucket_and_accumulate() {
        let mut h = Histogram::new(&FRAME_REQUESTS);
        for v in [1, 2, 3, 64, 65, 10_000] {
            h.observe(v);
        }
        let c: Vec<_> = h.cumulative().collect();
        assert_eq!(c[0], ("1", 1));
        assert_eq!(c[1], ("2", 2));
        assert_eq!(c[2], ("4", 3));
        assert_eq!(c[6], ("64", 4));
        assert_eq!(c[7], ("128", 5));
        assert_eq!(c[12], ("4096", 5), "past the last bound only +Inf counts it");
        assert_eq!((h.count(), h.sum()), (6, 1 + 2 + 3 + 64 + 65 + 10_000));
    }
}
