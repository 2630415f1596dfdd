//! Latency histograms (HdrHistogram, microseconds) and per-second timelines.

use std::sync::Mutex;

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

/// One histogram for thousands of recording tasks (receivers, echo
/// clients): a few [`Latency`]s behind locks, each task recording into the
/// one its index picks. A
/// histogram of this range is 170 KiB of counters; one per receiver was
/// hundreds of MiB for a large fanout and a cache miss on every record.
pub struct SharedLatency(Box<[Mutex<Latency>]>);

impl Default for SharedLatency {
    fn default() -> SharedLatency {
        SharedLatency::new()
    }
}

impl SharedLatency {
    /// One stripe per runtime thread and some, so that two threads seldom
    /// want the same lock.
    pub fn new() -> SharedLatency {
        let stripes = 4 * std::thread::available_parallelism().map_or(1, |n| n.get());
        SharedLatency((0..stripes).map(|_| Mutex::new(Latency::new())).collect())
    }

    /// Records into the first free stripe from `who`'s on: a thread never
    /// waits for a lock whose holder the scheduler has just put aside (on a
    /// machine shared with the servers, that is often), unless all are held.
    pub fn record(&self, who: usize, us: u64) {
        let n = self.0.len();
        for i in 0..n {
            if let Ok(mut stripe) = self.0[(who + i) % n].try_lock() {
                stripe.record(us);
                return;
            }
        }
        let stripe = &self.0[who % n];
        stripe.lock().unwrap_or_else(|p| p.into_inner()).record(us);
    }

    /// All stripes in one histogram.
    pub fn merged(&self) -> Latency {
        let mut all = Latency::new();
        for stripe in &self.0 {
            all.merge(&stripe.lock().unwrap_or_else(|p| p.into_inner()));
        }
        all
    }
}

/// Which (sender, seq) pairs a receiver has seen, to count duplicates
/// exactly: one bit per seq of each sender (senders and seqs count up from
/// 0), so 10 000 messages cost 1.2 KiB and a lookup no hashing.
#[derive(Default)]
pub struct Seen(Vec<Vec<u64>>);

impl Seen {
    /// Notes the pair; false if it was seen before.
    pub fn insert(&mut self, from: u64, seq: u64) -> bool {
        // Beyond these a server is sending pairs we never sent: counted as
        // new rather than allocating for them.
        const SENDERS: u64 = 1 << 20;
        const SEQS: u64 = 1 << 26;
        if from >= SENDERS || seq >= SEQS {
            return true;
        }
        let (from, word) = (from as usize, (seq / 64) as usize);
        if self.0.len() <= from {
            self.0.resize_with(from + 1, Vec::new);
        }
        let bits = &mut self.0[from];
        if bits.len() <= word {
            bits.resize(word + 1, 0);
        }
        let mask = 1u64 << (seq % 64);
        let new = bits[word] & mask == 0;
        bits[word] |= mask;
        new
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

    #[test]
    fn shared_latency_merges_every_stripe() {
        let shared = SharedLatency::new();
        for who in 0..100 {
            shared.record(who, 1000 + who as u64);
        }
        let all = shared.merged();
        assert_eq!(all.count(), 100);
        assert_eq!(all.summary()["max"].as_f64().unwrap(), 1.099);
    }

    #[test]
    fn seen_counts_each_pair_once() {
        let mut seen = Seen::default();
        assert!(seen.insert(0, 0));
        assert!(seen.insert(0, 63));
        assert!(seen.insert(0, 64));
        assert!(seen.insert(2, 5));
        assert!(!seen.insert(0, 0));
        assert!(!seen.insert(0, 64));
        assert!(!seen.insert(2, 5));
        assert!(seen.insert(1, 5));
        assert!(seen.insert(0, 1000));
        assert!(!seen.insert(0, 1000));
        // Pairs no sender of ours could have sent are new, and cost nothing.
        assert!(seen.insert(0, u64::MAX));
        assert!(seen.insert(0, u64::MAX));
        assert!(seen.insert(u64::MAX, 0));
        assert_eq!(seen.0.len(), 3);
        assert_eq!(seen.0[0].len(), 1000 / 64 + 1);
    }
}
