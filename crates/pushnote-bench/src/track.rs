//! What one session received: which sequence numbers, how many twice, how many out of order,
//! and a latency histogram shared by all sessions. Pure bookkeeping, no I/O.

use std::sync::atomic::{AtomicU64, Ordering};

/// The sequence numbers one stream (the broadcasts, or one user's messages) delivered to one
/// session.
#[derive(Debug, Default, Clone)]
pub struct Stream {
    seen: Vec<u64>,
    max: Option<u64>,
    /// Distinct sequence numbers received.
    pub received: u64,
    /// Received again after the first time.
    pub duplicated: u64,
    /// Received after a higher one.
    pub reordered: u64,
}

impl Stream {
    pub fn record(&mut self, seq: u64) {
        let (word, bit) = ((seq / 64) as usize, seq % 64);
        if self.seen.len() <= word {
            self.seen.resize(word + 1, 0);
        }
        if self.seen[word] & (1 << bit) != 0 {
            self.duplicated += 1;
            return;
        }
        self.seen[word] |= 1 << bit;
        self.received += 1;
        if self.max.is_some_and(|m| seq < m) {
            self.reordered += 1;
        }
        self.max = Some(self.max.map_or(seq, |m| m.max(seq)));
    }

    /// How many of `0..sent` never arrived.
    pub fn lost(&self, sent: u64) -> u64 {
        let mut got = 0;
        for seq in 0..sent {
            let (word, bit) = ((seq / 64) as usize, seq % 64);
            if self.seen.get(word).is_some_and(|w| w & (1 << bit) != 0) {
                got += 1;
            }
        }
        sent - got
    }
}

/// Latencies in buckets a 128th of a power of two wide (about 0.54 %), up to 2^40 µs,
/// counted atomically by every session at once. Quantiles are reported as the upper bound of
/// their bucket.
pub struct Histogram {
    buckets: Vec<AtomicU64>,
    max: AtomicU64,
}

/// Buckets per power of two, and the powers of two covered.
const PER_OCTAVE: usize = 128;
const OCTAVES: usize = 40;
const SUB: f64 = PER_OCTAVE as f64;

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: (0..PER_OCTAVE * OCTAVES)
                .map(|_| AtomicU64::new(0))
                .collect(),
            max: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    pub fn record(&self, micros: u64) {
        self.max.fetch_max(micros, Ordering::Relaxed);
        let i = if micros == 0 {
            0
        } else {
            ((micros as f64).log2() * SUB) as usize + 1
        };
        self.buckets[i.min(self.buckets.len() - 1)].fetch_add(1, Ordering::Relaxed);
    }

    /// The highest latency recorded, exactly.
    pub fn max(&self) -> u64 {
        self.max.load(Ordering::Relaxed)
    }

    /// Quantile `q` of every latency recorded: the upper bound of its bucket (within 0.54 %),
    /// never above the exact maximum.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        quantile(&self.snapshot(), q).map(|v| v.min(self.max()))
    }

    /// A copy of the counts, for quantiles over an interval (subtract two snapshots).
    pub fn snapshot(&self) -> Vec<u64> {
        self.buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect()
    }
}

/// The upper bound, in microseconds, of the bucket holding quantile `q` of `counts`.
pub fn quantile(counts: &[u64], q: f64) -> Option<u64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = ((total as f64) * q).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (i, c) in counts.iter().enumerate() {
        seen += c;
        if seen >= rank {
            return Some(if i == 0 {
                0
            } else {
                2f64.powf(i as f64 / SUB).ceil() as u64
            });
        }
    }
    None
}

/// `after - before`, bucket by bucket.
pub fn delta(after: &[u64], before: &[u64]) -> Vec<u64> {
    after.iter().zip(before).map(|(a, b)| a - b).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_count_losses_duplicates_and_reordering() {
        let mut s = Stream::default();
        for seq in [0, 1, 3, 2, 3, 5] {
            s.record(seq);
        }
        assert_eq!(s.received, 5);
        assert_eq!(s.duplicated, 1);
        assert_eq!(s.reordered, 1);
        assert_eq!(s.lost(6), 1, "4 never came");
        assert_eq!(s.lost(200), 195);
    }

    #[test]
    fn quantiles_come_from_the_buckets() {
        let h = Histogram::default();
        for us in 1..=1000 {
            h.record(us);
        }
        let counts = h.snapshot();
        let p50 = quantile(&counts, 0.5).unwrap();
        let p99 = quantile(&counts, 0.99).unwrap();
        // Bucket upper bounds: at most 0.54 % above the true quantile.
        assert!((500..=503).contains(&p50), "{p50}");
        assert!((990..=996).contains(&p99), "{p99}");
        assert_eq!(quantile(&[0; 4], 0.5), None);
        assert_eq!(h.max(), 1000);
        // The bucket of 1000 reaches above it; the whole run's quantiles stop at the maximum.
        assert!(quantile(&counts, 1.0).unwrap() > 1000);
        assert_eq!(h.quantile(1.0), Some(1000));
        assert_eq!(h.quantile(0.5), Some(p50));
        assert_eq!(Histogram::default().quantile(0.5), None);
    }
}
