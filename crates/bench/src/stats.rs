//! Latency histograms (HdrHistogram, microseconds) and per-second timelines.

use hdrhistogram::Histogram;
use serde_json::{Value, json};

/// One-way or round-trip latencies in microseconds, up to 10 minutes, three
/// significant digits.
pub struct Latency(Histogram<u64>);

impl Latency {
    pub fn new() -> Latency {
        Latency(Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds"))
    }

    pub fn record(&mut self, us: u64) {
        self.0.saturating_record(us.max(1));
    }

    pub fn merge(&mut self, other: &Latency) {
        let _ = self.0.add(&other.0);
    }

    pub fn count(&self) -> u64 {
        self.0.len()
    }

    /// The value at a quantile, in milliseconds.
    pub fn ms_at(&self, quantile: f64) -> f64 {
        self.0.value_at_quantile(quantile) as f64 / 1000.0
    }

    /// p50 / p90 / p99 / p99.9 / max in milliseconds.
    pub fn summary(&self) -> Value {
        if self.count() == 0 {
            return Value::Null;
        }
        json!({
            "p50": self.ms_at(0.5),
            "p90": self.ms_at(0.9),
            "p99": self.ms_at(0.99),
            "p999": self.ms_at(0.999),
            "max": self.0.max() as f64 / 1000.0,
            "mean": self.0.mean() / 1000.0,
        })
    }
}

/// Counts per second.
#[derive(Default)]
pub struct Timeline(pub Vec<u64>);

impl Timeline {
    pub fn push(&mut self, count: u64) {
        self.0.push(count);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let mut latency = Latency::new();
        for us in 1..=1000 {
            latency.record(us * 1000);
        }
        let summary = latency.summary();
        assert!((summary["p50"].as_f64().unwrap() - 500.0).abs() < 1.0);
        assert!((summary["p99"].as_f64().unwrap() - 990.0).abs() < 1.0);
        let mut other = Latency::new();
        other.merge(&latency);
        assert_eq!(other.count(), 1000);
        assert_eq!(Latency::new().summary(), Value::Null);
    }
}
