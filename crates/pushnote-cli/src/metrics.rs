//! The Prometheus text both processes serve at `/metrics`, written by `prometheus-client`
//! (the Prometheus project's own Rust client) in the text format 0.0.4.
//!
//! The figures stay where they are counted: plain relaxed atomics on the hot paths, cheaper
//! than any registry's handles. At scrape time a process's [`Collector`] reads them and
//! writes each through [`Figures`], which gives the library every name, help and type; the
//! library does the escaping, the `_total` of counters, the buckets of histograms and their
//! `le` labels. [`Histogram`] keeps its buckets in atomics as well (the library's own takes a
//! lock per observation), and [`HistoryFigures`] are the history's figures both processes
//! show, under their own prefix.
//!
//! Why `prometheus-client` and not `metrics` with its Prometheus exporter: no global
//! registry or recorder (each process and each test holds its own figures), the encoder can
//! be handed values read from atomics, and it brings three small crates, not an exporter
//! with an HTTP stack of its own.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub use prometheus_client::collector::Collector;
pub use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::encoding::{prometheus_text, EncodeGaugeValue, NoLabelSet};
use prometheus_client::metrics::exemplar::Exemplar;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use pushnote_history::{History, Weigh};

/// The `Content-Type` of what [`render`] returns.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// The bounds of the histograms of time, in microseconds: 50 µs to 10 s, so that a server
/// that keeps up (well under a millisecond) and one shedding past `--max-lag` (2 s by
/// default) are both told apart.
pub const TIME_BUCKETS_MICROS: &[u64] = &[
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

/// The bounds of the histograms of messages given at once: a handful (a reload) to a full
/// history of many topics.
pub const COUNT_BUCKETS: &[u64] = &[0, 1, 2, 5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 10_000];

/// The Prometheus text of `collector`'s figures.
pub fn render(collector: impl Collector) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(collector));
    let mut out = String::new();
    // Writing to a String does not fail, and the collectors fail only when writing does.
    let _ = prometheus_text::encode(&mut out, &registry);
    out
}

/// Writes figures, each with its help and type, for [`Collector::encode`].
pub struct Figures<'a>(DescriptorEncoder<'a>);

impl<'a> Figures<'a> {
    pub fn new(encoder: DescriptorEncoder<'a>) -> Figures<'a> {
        Figures(encoder)
    }

    /// A counter named `name`, which ends in `_total` as counters' names do (the library
    /// adds it to the family's name: it is taken off here and comes back on every line).
    pub fn counter(&mut self, name: &str, help: &str, value: u64) -> fmt::Result {
        self.0
            .encode_descriptor(family(name), help, None, MetricType::Counter)?
            .encode_counter(&value, None::<&Exemplar<NoLabelSet, f64>>)
    }

    /// A counter with one label, `label`, a value for each of `values`.
    pub fn counters<'v>(
        &mut self,
        name: &str,
        help: &str,
        label: &str,
        values: impl IntoIterator<Item = (&'v str, u64)>,
    ) -> fmt::Result {
        let mut metric = self
            .0
            .encode_descriptor(family(name), help, None, MetricType::Counter)?;
        for (labelled, value) in values {
            metric
                .encode_family(&[(label, labelled)])?
                .encode_counter(&value, None::<&Exemplar<NoLabelSet, f64>>)?;
        }
        Ok(())
    }

    /// A gauge.
    pub fn gauge(&mut self, name: &str, help: &str, value: impl EncodeGaugeValue) -> fmt::Result {
        self.0
            .encode_descriptor(name, help, None, MetricType::Gauge)?
            .encode_gauge(&value)
    }

    /// A histogram: its `_bucket` lines (`le` in the histogram's unit), `_sum` and `_count`.
    pub fn histogram(&mut self, name: &str, help: &str, histogram: &Histogram) -> fmt::Result {
        let counts: Vec<u64> = histogram
            .counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        let buckets: Vec<(f64, u64)> = histogram
            .bounds
            .iter()
            .map(|&b| b as f64 / histogram.per_unit)
            .chain([f64::INFINITY])
            .zip(counts.iter().copied())
            .collect();
        let sum = histogram.sum.load(Ordering::Relaxed) as f64 / histogram.per_unit;
        self.0
            .encode_descriptor(name, help, None, MetricType::Histogram)?
            .encode_histogram::<NoLabelSet>(sum, counts.iter().sum(), &buckets, None)
    }
}

/// A counter's family name: its name without `_total`, which the library adds back.
fn family(name: &str) -> &str {
    debug_assert!(name.ends_with("_total"), "a counter's name ends in _total");
    name.strip_suffix("_total").unwrap_or(name)
}

/// A histogram in atomics: what each bucket took, and the sum. An observation costs a search
/// among the bounds and two relaxed additions; the cumulative counts and the total are made
/// at scrape time.
#[derive(Debug)]
pub struct Histogram {
    /// The buckets' upper bounds (inclusive), in the unit observed, ascending.
    bounds: &'static [u64],
    /// Units observed in one unit shown (1,000,000 for microseconds shown as seconds).
    per_unit: f64,
    /// What each bucket took (not cumulative), the last one past every bound.
    counts: Box<[AtomicU64]>,
    /// The sum of what was observed, in the unit observed.
    sum: AtomicU64,
}

impl Histogram {
    /// A histogram of values in `bounds`' unit, shown divided by `per_unit`.
    pub fn new(bounds: &'static [u64], per_unit: f64) -> Histogram {
        Histogram {
            bounds,
            per_unit,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
        }
    }

    /// A histogram of durations over [`TIME_BUCKETS_MICROS`], shown in seconds.
    pub fn seconds() -> Histogram {
        Histogram::new(TIME_BUCKETS_MICROS, 1e6)
    }

    /// A histogram of numbers of messages over [`COUNT_BUCKETS`].
    pub fn counts() -> Histogram {
        Histogram::new(COUNT_BUCKETS, 1.0)
    }

    /// Counts `value`, in the bounds' unit.
    pub fn observe(&self, value: u64) {
        let bucket = self.bounds.partition_point(|&bound| bound < value);
        if let Some(count) = self.counts.get(bucket) {
            count.fetch_add(1, Ordering::Relaxed);
        }
        self.sum.fetch_add(value, Ordering::Relaxed);
    }

    /// Counts a duration, in microseconds.
    pub fn observe_duration(&self, took: Duration) {
        self.observe(u64::try_from(took.as_micros()).unwrap_or(u64::MAX));
    }

    /// How many values were observed.
    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }
}

/// The figures of a history of recent messages, as both processes show them.
#[derive(Default, Debug)]
pub struct HistoryFigures {
    /// What the history takes now, by estimate, in bytes.
    pub bytes: AtomicU64,
    /// Messages kept now.
    pub messages: AtomicU64,
    /// Topics remembered now.
    pub topics: AtomicU64,
    /// Messages dropped before their time: a topic's count, or the byte budget.
    pub evicted: AtomicU64,
    /// Messages dropped for their age.
    pub expired: AtomicU64,
}

impl HistoryFigures {
    /// Takes the figures of `history` as they are now.
    pub fn store<V: Weigh>(&self, history: &History<V>) {
        let counts = history.counts();
        for (figure, value) in [
            (&self.bytes, history.bytes() as u64),
            (&self.messages, history.messages() as u64),
            (&self.topics, history.topics() as u64),
            (&self.evicted, counts.evicted),
            (&self.expired, counts.expired),
        ] {
            figure.store(value, Ordering::Relaxed);
        }
    }

    /// Writes the figures, named `{prefix}_history_…`.
    pub fn encode(&self, prefix: &str, figures: &mut Figures) -> fmt::Result {
        let load = |figure: &AtomicU64| figure.load(Ordering::Relaxed);
        figures.gauge(
            &format!("{prefix}_history_bytes"),
            "What the history of recent messages takes, by estimate (bounded by \
             --history-memory).",
            load(&self.bytes),
        )?;
        figures.gauge(
            &format!("{prefix}_history_messages"),
            "Messages the history keeps now.",
            load(&self.messages),
        )?;
        figures.gauge(
            &format!("{prefix}_history_topics"),
            "Topics the history remembers now (their epoch and last position, and kept \
             messages).",
            load(&self.topics),
        )?;
        figures.counter(
            &format!("{prefix}_history_evicted_total"),
            "Messages dropped from the history before --history-ttl: past --history-size for \
             their topic, or past --history-memory.",
            load(&self.evicted),
        )?;
        figures.counter(
            &format!("{prefix}_history_expired_total"),
            "Messages dropped from the history at --history-ttl.",
            load(&self.expired),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Sample(Histogram);

    impl Collector for Sample {
        fn encode(&self, encoder: DescriptorEncoder) -> fmt::Result {
            let mut figures = Figures::new(encoder);
            figures.counter("t_things_total", "Things.", 3)?;
            figures.counters("t_kinds_total", "Kinds.", "kind", [("a", 1), ("b", 2)])?;
            figures.gauge("t_level", "Level.", 0.5)?;
            figures.histogram("t_wait_seconds", "Waits.", &self.0)
        }
    }

    #[test]
    fn counters_keep_their_name_and_histograms_count_each_value_in_its_bucket() {
        let histogram = Histogram::seconds();
        histogram.observe_duration(Duration::from_micros(50));
        histogram.observe_duration(Duration::from_micros(51));
        histogram.observe_duration(Duration::from_secs(60));
        assert_eq!(histogram.count(), 3);
        let text = render(Sample(histogram));
        for line in [
            "# HELP t_things_total Things.",
            "# TYPE t_things_total counter",
            "t_things_total 3",
            "t_kinds_total{kind=\"b\"} 2",
            "# TYPE t_level gauge",
            "t_level 0.5",
            "# TYPE t_wait_seconds histogram",
            "t_wait_seconds_bucket{le=\"5e-05\"} 1",
            "t_wait_seconds_bucket{le=\"0.0001\"} 2",
            "t_wait_seconds_bucket{le=\"10\"} 2",
            "t_wait_seconds_bucket{le=\"+Inf\"} 3",
            "t_wait_seconds_sum 60.000101",
            "t_wait_seconds_count 3",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
    }
}
