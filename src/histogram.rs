//! A fixed-bucket histogram: what a state machine counts of a measure (a lookup's hops or its
//! time) for `/status` and `/metrics`, with no clock and no allocation after it is made.
//!
//! The buckets are cumulative upper bounds, as Prometheus' histograms have them: `counts[i]`
//! is the number of observations at most `bounds[i]`; observations above the last bound are in
//! `count` only (the `+Inf` bucket).

use serde::Serialize;

/// Observations of one measure in fixed buckets.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Histogram {
    /// The buckets' upper bounds, ascending.
    pub bounds: &'static [f64],
    /// Observations at most each bound (cumulative).
    pub counts: Vec<u64>,
    /// The sum of every observation.
    pub sum: f64,
    /// How many observations there were.
    pub count: u64,
}

impl Histogram {
    /// An empty histogram over `bounds`, which must ascend.
    pub fn new(bounds: &'static [f64]) -> Histogram {
        debug_assert!(bounds.windows(2).all(|w| w[0] < w[1]), "bucket bounds must ascend");
        Histogram { bounds, counts: vec![0; bounds.len()], sum: 0.0, count: 0 }
    }

    /// Counts `value` in every bucket whose bound it does not exceed.
    pub fn observe(&mut self, value: f64) {
        // NaN would poison the sum; a measure never is one, but a bad input must not show.
        if value.is_nan() {
            return;
        }
        self.sum += value;
        self.count += 1;
        let first = self.bounds.partition_point(|b| *b < value);
        for c in &mut self.counts[first..] {
            *c += 1;
        }
    }

    /// `(bound, cumulative count)` for each bucket, `+Inf` last, as exposition formats want.
    pub fn buckets(&self) -> Vec<(f64, u64)> {
        self.bounds.iter().copied().zip(self.counts.iter().copied()).chain([(f64::INFINITY, self.count)]).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::Histogram;

    #[test]
    fn buckets_are_cumulative_and_inf_counts_everything() {
        let mut h = Histogram::new(&[1.0, 2.0, 4.0]);
        for v in [0.5, 1.0, 1.5, 3.0, 9.0, f64::NAN] {
            h.observe(v);
        }
        assert_eq!(h.buckets(), vec![(1.0, 2), (2.0, 3), (4.0, 4), (f64::INFINITY, 5)]);
        assert_eq!(h.count, 5);
        assert!((h.sum - 15.0).abs() < 1e-9);
    }
}
