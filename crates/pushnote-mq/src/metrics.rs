//! The forwarder's counters, served as Prometheus text by `pushnote-mq --metrics ADDR`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

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
    /// `POST /publish` requests answered on their headers, their body unread (a wrong key,
    /// a declared length over the limit).
    pub http_refused_unread: AtomicU64,
    /// `POST /publish` bodies that did not arrive within `--body-timeout` (408).
    pub http_body_timeouts: AtomicU64,
    /// What the HTTP connections (`--http`, `--metrics`) did.
    pub http_connections: Arc<pushnote_cli::connections::Stats>,
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
    /// Topics the history knows now.
    pub history_topics: AtomicU64,
    /// What the history's topics and messages take, by estimate.
    pub history_bytes: AtomicU64,
    /// Messages kept now.
    pub history_messages: AtomicU64,
    /// Messages dropped before their time (past --history-size or --history-memory).
    pub history_evicted: AtomicU64,
    /// Messages dropped for their age (--history-ttl).
    pub history_expired: AtomicU64,
    /// Topics forgotten, idle or over the memory budget.
    pub topics_forgotten: AtomicU64,
    /// Recovery requests answered.
    pub recoveries: AtomicU64,
    /// Messages given in answers.
    pub recovered_messages: AtomicU64,
    /// Bytes of the kept bodies given in answers.
    pub recovered_bytes: AtomicU64,
    /// Answers that gave nothing: past the request's allowance or `--recovery-rate`.
    pub recoveries_busy: AtomicU64,
    /// Frames from servers that were neither a subscription nor a request.
    pub requests_malformed: AtomicU64,
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
            "POST /publish requests refused: no or a wrong key, a bad body or target, a \
             message the bus would drop or too many, or the bus not connected.",
            &self.http_refused,
        );
        row(
            "pushnote_mq_http_refused_unread_total",
            "counter",
            "POST /publish requests answered on their headers, their body unread: no or a \
             wrong key (401), a Content-Length over --max-message-bytes (413).",
            &self.http_refused_unread,
        );
        row(
            "pushnote_mq_http_body_timeouts_total",
            "counter",
            "POST /publish bodies that did not arrive within --body-timeout (answered 408).",
            &self.http_body_timeouts,
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
            "pushnote_mq_history_topics",
            "gauge",
            "Topics the history knows (their epoch and last position, and kept messages).",
            &self.history_topics,
        );
        row(
            "pushnote_mq_history_bytes",
            "gauge",
            "What the history's topics and messages take, by estimate (bounded by \
             --history-memory).",
            &self.history_bytes,
        );
        row(
            "pushnote_mq_history_messages",
            "gauge",
            "Messages kept for recovery now.",
            &self.history_messages,
        );
        row(
            "pushnote_mq_history_evicted_total",
            "counter",
            "Messages dropped from the history before their time (--history-size, \
             --history-memory).",
            &self.history_evicted,
        );
        row(
            "pushnote_mq_history_expired_total",
            "counter",
            "Messages dropped from the history for their age (--history-ttl).",
            &self.history_expired,
        );
        row(
            "pushnote_mq_topics_forgotten_total",
            "counter",
            "Topics forgotten, idle (--topic-idle) or over --history-memory: their next \
             message starts a new epoch.",
            &self.topics_forgotten,
        );
        row(
            "pushnote_mq_recoveries_total",
            "counter",
            "Recovery requests of servers answered.",
            &self.recoveries,
        );
        row(
            "pushnote_mq_recovered_messages_total",
            "counter",
            "Kept messages given in answers to recovery requests.",
            &self.recovered_messages,
        );
        row(
            "pushnote_mq_recovered_bytes_total",
            "counter",
            "Bytes of kept message bodies given in answers to recovery requests.",
            &self.recovered_bytes,
        );
        row(
            "pushnote_mq_recoveries_busy_total",
            "counter",
            "Recovery requests answered busy, with nothing: what they missed would pass the \
             server's allowance or --recovery-rate.",
            &self.recoveries_busy,
        );
        row(
            "pushnote_mq_requests_malformed_total",
            "counter",
            "Frames from servers that were neither a subscription nor a recovery request.",
            &self.requests_malformed,
        );
        self.http_connections
            .render("pushnote_mq_http_connections", &mut out);
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
