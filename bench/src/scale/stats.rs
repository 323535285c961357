//! Latency samples with percentiles, and a small seeded PRNG (runs are reproducible).

use serde_json::{json, Value};

/// Latencies in milliseconds.
#[derive(Debug, Default, Clone)]
pub struct Samples {
    v: Vec<f64>,
}

impl Samples {
    pub fn push(&mut self, ms: f64) {
        self.v.push(ms);
    }

    pub fn len(&self) -> usize {
        self.v.len()
    }

    /// Samples from index `from` on (they are kept in arrival order).
    pub fn since(&self, from: usize) -> &[f64] {
        &self.v[from.min(self.v.len())..]
    }

    /// (p99, max) of a slice of samples, if any.
    pub fn p99_max(v: &[f64]) -> Option<(f64, f64)> {
        if v.is_empty() {
            return None;
        }
        let mut s = v.to_vec();
        s.sort_by(f64::total_cmp);
        let rank = ((0.99 * s.len() as f64).ceil() as usize).clamp(1, s.len());
        Some((round3(s[rank - 1]), round3(s[s.len() - 1])))
    }

    /// Nearest-rank percentile (`q` in 0..=100); `None` without samples.
    #[cfg(test)]
    pub fn pct(&self, q: f64) -> Option<f64> {
        if self.v.is_empty() {
            return None;
        }
        let mut s = self.v.clone();
        s.sort_by(f64::total_cmp);
        let rank = ((q / 100.0) * s.len() as f64).ceil() as usize;
        Some(s[rank.clamp(1, s.len()) - 1])
    }

    /// n, p50, p90, p99, p99.9, max and mean, with `_ms` names.
    pub fn summary(&self) -> Value {
        self.summary_with("_ms")
    }

    /// The same for counts (no unit in the names).
    pub fn summary_counts(&self) -> Value {
        self.summary_with("")
    }

    fn summary_with(&self, unit: &str) -> Value {
        if self.v.is_empty() {
            return json!({ "n": 0 });
        }
        let mut s = self.v.clone();
        s.sort_by(f64::total_cmp);
        let at = |q: f64| {
            let rank = ((q / 100.0) * s.len() as f64).ceil() as usize;
            round3(s[rank.clamp(1, s.len()) - 1])
        };
        let mut m = serde_json::Map::new();
        m.insert("n".into(), json!(s.len()));
        for (name, q) in [("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p999", 99.9)] {
            m.insert(format!("{name}{unit}"), json!(at(q)));
        }
        m.insert(format!("max{unit}"), json!(round3(s[s.len() - 1])));
        m.insert(
            format!("mean{unit}"),
            json!(round3(s.iter().sum::<f64>() / s.len() as f64)),
        );
        Value::Object(m)
    }
}

pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// xorshift64*: plenty for picking hosts and VMs.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in 0..n (n > 0).
    pub fn below(&mut self, n: u32) -> u32 {
        (((self.next() >> 32) * u64::from(n)) >> 32) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let mut s = Samples::default();
        assert_eq!(s.pct(50.0), None);
        for i in 1..=100 {
            s.push(f64::from(i));
        }
        assert_eq!(s.pct(50.0), Some(50.0));
        assert_eq!(s.pct(99.0), Some(99.0));
        assert_eq!(s.pct(100.0), Some(100.0));
        assert_eq!(s.summary()["n"], 100);
    }

    #[test]
    fn rng_stays_in_range() {
        let mut r = Rng::new(7);
        for _ in 0..10_000 {
            assert!(r.below(13) < 13);
        }
    }
}
