//! The forwarder's counters, served as Prometheus text by `pushnote-mq --metrics ADDR`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// Why the forwarder dropped a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dropped {
    /// The topic (up to and including its NUL) is longer than `--max-topic-bytes`.
    TopicTooLong,
    /// The message (all its frames) is larger than `--max-message-bytes`.
    TooLarge,
    /// Not `[topic, body]` with a NUL-terminated topic.
    Malformed,
}

impl Dropped {
    /// Every reason, in the order of [`Metrics::dropped`].
    pub const ALL: [Dropped; 3] = [Dropped::TopicTooLong, Dropped::TooLarge, Dropped::Malformed];

    /// The reason as the metric's label says it.
    pub fn as_str(self) -> &'static str {
        match self {
            Dropped::TopicTooLong => "topic_too_long",
            Dropped::TooLarge => "too_large",
            Dropped::Malformed => "malformed",
        }
    }
}

/// Every counter and gauge of a forwarder; relaxed atomics, cheap on the hot path.
#[derive(Default, Debug)]
pub struct Metrics {
    /// Messages published through `POST /publish`.
    pub http_published: AtomicU64,
    /// `POST /publish` requests refused (bad key, body, target; or the bus not connected).
    pub http_refused: AtomicU64,
    /// 1 while the forwarding thread runs.
    pub running: AtomicU64,
    /// Messages received from apps.
    pub received: AtomicU64,
    /// Messages handed to the server-facing socket.
    pub forwarded: AtomicU64,
    /// Bytes of the messages forwarded (every frame).
    pub forwarded_bytes: AtomicU64,
    /// Messages dropped, by [`Dropped`] reason.
    pub dropped: [AtomicU64; 3],
    /// Topics numbered now.
    pub topics: AtomicU64,
    /// What the numbered topics take, by estimate.
    pub topic_bytes: AtomicU64,
    /// Topics forgotten, idle or over the memory budget.
    pub topics_forgotten: AtomicU64,
}

impl Metrics {
    /// Counts a dropped message.
    pub fn count_drop(&self, why: Dropped) {
        self.dropped[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Messages dropped for `why` so far.
    pub fn dropped(&self, why: Dropped) -> u64 {
        self.dropped[why as usize].load(Ordering::Relaxed)
    }

    /// The Prometheus text exposition of every figure.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut row = |name: &str, kind: &str, help: &str, value: &AtomicU64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}",
                value.load(Ordering::Relaxed)
            );
        };
        row(
            "pushnote_mq_running",
            "gauge",
            "1 while the forwarder forwards (its sockets bound, its thread running).",
            &self.running,
        );
        row(
            "pushnote_mq_http_published_total",
            "counter",
            "Messages published through POST /publish (--http).",
            &self.http_published,
        );
        row(
            "pushnote_mq_http_refused_total",
            "counter",
            "POST /publish requests refused: no or a wrong key, a bad body or target, too \
             large, or the bus not connected.",
            &self.http_refused,
        );
        row(
            "pushnote_mq_messages_received_total",
            "counter",
            "Messages received from apps.",
            &self.received,
        );
        row(
            "pushnote_mq_messages_forwarded_total",
            "counter",
            "Messages handed on to the servers subscribed to their topic.",
            &self.forwarded,
        );
        row(
            "pushnote_mq_forwarded_bytes_total",
            "counter",
            "Bytes of the messages forwarded, every frame.",
            &self.forwarded_bytes,
        );
        row(
            "pushnote_mq_topics",
            "gauge",
            "Topics whose messages are numbered now.",
            &self.topics,
        );
        row(
            "pushnote_mq_topic_memory_bytes",
            "gauge",
            "What the numbered topics take, by estimate (bounded by --topic-memory).",
            &self.topic_bytes,
        );
        row(
            "pushnote_mq_topics_forgotten_total",
            "counter",
            "Topics forgotten, idle (--topic-idle) or over --topic-memory.",
            &self.topics_forgotten,
        );
        let name = "pushnote_mq_messages_dropped_total";
        let _ = writeln!(
            out,
            "# HELP {name} Messages dropped: topic longer than --max-topic-bytes, message \
             larger than --max-message-bytes, or not [topic, body].\n# TYPE {name} counter"
        );
        for why in Dropped::ALL {
            let _ = writeln!(
                out,
                "{name}{{reason=\"{}\"}} {}",
                why.as_str(),
                self.dropped(why)
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_figure_has_help_and_type_and_drops_have_their_reason() {
        let m = Metrics::default();
        m.count_drop(Dropped::TooLarge);
        let text = m.render();
        assert!(text.contains("pushnote_mq_messages_dropped_total{reason=\"too_large\"} 1"));
        assert!(text.contains("pushnote_mq_messages_dropped_total{reason=\"malformed\"} 0"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            assert!(text.contains(&format!("# TYPE {name} ")), "{name}");
            assert!(text.contains(&format!("# HELP {name} ")), "{name}");
        }
    }
}
