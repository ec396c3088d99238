//! The forwarder's counters, served as Prometheus text by `pushnote-mq --metrics ADDR`.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use pushnote::confirm::Refusal;
use pushnote_cli::metrics::{self, Collector, DescriptorEncoder, Figures, HistoryFigures};

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

/// Why the bridge into Redis (`--broker`) did not publish a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unpublished {
    /// Redis could not be reached: nothing was sent.
    NotConnected,
    /// Redis answered the script with an error: nothing was published.
    Refused,
    /// No reply came in time, or the connection broke after the message was sent: it may or
    /// may not have been published.
    Unconfirmed,
    /// The bridge's queue was full (Redis slower than the apps): dropped, nothing sent.
    Busy,
}

impl Unpublished {
    /// Every reason, in the order of [`Metrics::broker_unpublished`].
    pub const ALL: [Unpublished; 4] = [
        Unpublished::NotConnected,
        Unpublished::Refused,
        Unpublished::Unconfirmed,
        Unpublished::Busy,
    ];

    /// The reason as the metric's label says it.
    pub fn as_str(self) -> &'static str {
        match self {
            Unpublished::NotConnected => "not_connected",
            Unpublished::Refused => "refused",
            Unpublished::Unconfirmed => "unconfirmed",
            Unpublished::Busy => "busy",
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
    /// The history's figures.
    pub history: HistoryFigures,
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
    /// Frames from servers that were neither a subscription, a request nor a presence message.
    pub requests_malformed: AtomicU64,
    /// Presence messages of servers sent on to every server.
    pub presence_messages: AtomicU64,
    /// Presence members the forwarder's view holds (`GET /presence`), now.
    pub presence_members: AtomicU64,
    /// Confirm requests received (`--confirm`).
    pub confirm_requests: AtomicU64,
    /// Messages of confirm requests published and confirmed.
    pub confirmed: AtomicU64,
    /// Confirm requests refused, by [`Refusal`] reason.
    pub confirm_refused: [AtomicU64; 3],
    /// Confirm replies dropped: the app's connection gone, or holding `--confirm-hwm` replies.
    pub confirm_replies_dropped: AtomicU64,
    /// Messages published into Redis (`--broker`), each counted once per topic.
    pub broker_published: AtomicU64,
    /// Messages not published into Redis, by [`Unpublished`] reason (once per topic).
    pub broker_unpublished: [AtomicU64; 4],
}

impl Metrics {
    /// Counts a dropped message.
    pub fn count_drop(&self, why: Dropped) {
        self.dropped[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts `n` messages not published into Redis for `why`.
    pub fn count_unpublished(&self, why: Unpublished, n: u64) {
        self.broker_unpublished[why as usize].fetch_add(n, Ordering::Relaxed);
    }

    /// Messages not published into Redis for `why` so far.
    pub fn unpublished(&self, why: Unpublished) -> u64 {
        self.broker_unpublished[why as usize].load(Ordering::Relaxed)
    }

    /// Messages dropped for `why` so far.
    pub fn dropped(&self, why: Dropped) -> u64 {
        self.dropped[why as usize].load(Ordering::Relaxed)
    }

    /// The Prometheus text of every figure.
    pub fn render(self: &Arc<Self>) -> String {
        metrics::render(Exposed(self.clone()))
    }

    /// Writes every figure.
    fn encode(&self, figures: &mut Figures) -> fmt::Result {
        let load = |figure: &AtomicU64| figure.load(Ordering::Relaxed);
        figures.gauge(
            "pushnote_mq_running",
            "1 while the forwarder forwards (its sockets bound, its thread running).",
            load(&self.running),
        )?;
        figures.counter(
            "pushnote_mq_http_published_total",
            "Messages published through POST /publish (--http).",
            load(&self.http_published),
        )?;
        figures.counter(
            "pushnote_mq_http_refused_total",
            "POST /publish requests refused: no or a wrong key, a bad body or target, a \
             message the bus would drop or too many, or the bus not connected.",
            load(&self.http_refused),
        )?;
        figures.counter(
            "pushnote_mq_http_refused_unread_total",
            "POST /publish requests answered on their headers, their body unread: no or a \
             wrong key (401), a Content-Length over --max-message-bytes (413).",
            load(&self.http_refused_unread),
        )?;
        figures.counter(
            "pushnote_mq_http_body_timeouts_total",
            "POST /publish bodies that did not arrive within --body-timeout (answered 408).",
            load(&self.http_body_timeouts),
        )?;
        figures.counter(
            "pushnote_mq_messages_received_total",
            "Messages received from apps.",
            load(&self.received),
        )?;
        figures.counter(
            "pushnote_mq_messages_forwarded_total",
            "Messages handed on to the servers subscribed to their topic.",
            load(&self.forwarded),
        )?;
        figures.counter(
            "pushnote_mq_forwarded_bytes_total",
            "Bytes of the messages forwarded, every frame.",
            load(&self.forwarded_bytes),
        )?;
        figures.counter(
            "pushnote_mq_topics_forgotten_total",
            "Topics forgotten, idle (--topic-idle) or over --history-memory: their next \
             message starts a new epoch.",
            load(&self.topics_forgotten),
        )?;
        figures.counter(
            "pushnote_mq_recoveries_total",
            "Recovery requests of servers answered.",
            load(&self.recoveries),
        )?;
        figures.counter(
            "pushnote_mq_recovered_messages_total",
            "Kept messages given in answers to recovery requests.",
            load(&self.recovered_messages),
        )?;
        figures.counter(
            "pushnote_mq_recovered_bytes_total",
            "Bytes of kept message bodies given in answers to recovery requests.",
            load(&self.recovered_bytes),
        )?;
        figures.counter(
            "pushnote_mq_recoveries_busy_total",
            "Recovery requests answered busy, with nothing: what they missed would pass the \
             server's allowance or --recovery-rate.",
            load(&self.recoveries_busy),
        )?;
        figures.counter(
            "pushnote_mq_requests_malformed_total",
            "Frames from servers that were neither a subscription, a recovery request nor a \
             presence message.",
            load(&self.requests_malformed),
        )?;
        figures.counter(
            "pushnote_mq_presence_messages_total",
            "Presence messages of servers sent on to every server.",
            load(&self.presence_messages),
        )?;
        figures.gauge(
            "pushnote_mq_presence_members",
            "Presence members the forwarder's view holds (GET /presence), of every channel and \
             server.",
            load(&self.presence_members),
        )?;
        figures.counter(
            "pushnote_mq_confirm_requests_total",
            "Confirmed-publish requests received (--confirm).",
            load(&self.confirm_requests),
        )?;
        figures.counter(
            "pushnote_mq_confirmed_messages_total",
            "Messages of confirmed-publish requests published, their positions replied.",
            load(&self.confirmed),
        )?;
        figures.counter(
            "pushnote_mq_confirm_replies_dropped_total",
            "Confirmed-publish replies dropped: the app gone, or holding --confirm-hwm replies \
             it has not read.",
            load(&self.confirm_replies_dropped),
        )?;
        figures.counters(
            "pushnote_mq_confirm_refused_total",
            "Confirmed-publish requests refused, nothing of them published: larger than \
             --max-message-bytes, a topic longer than --max-topic-bytes, or not [id, topic..., \
             body].",
            "reason",
            Refusal::ALL.map(|r| {
                (
                    r.as_str(),
                    self.confirm_refused[r as usize].load(Ordering::Relaxed),
                )
            }),
        )?;
        figures.counter(
            "pushnote_mq_broker_published_total",
            "Messages published into Redis (--broker), one per topic, each answered with its \
             position.",
            load(&self.broker_published),
        )?;
        figures.counters(
            "pushnote_mq_broker_unpublished_total",
            "Messages not published into Redis (--broker), one per topic: Redis not reached \
             (nothing sent), Redis' error reply (nothing published), no reply in time (may or \
             may not have been published), or the bridge's queue full (dropped).",
            "reason",
            Unpublished::ALL.map(|why| (why.as_str(), self.unpublished(why))),
        )?;
        self.history.encode("pushnote_mq", figures)?;
        self.http_connections
            .encode("pushnote_mq_http_connections", figures)?;
        figures.counters(
            "pushnote_mq_messages_dropped_total",
            "Messages dropped: topic longer than --max-topic-bytes, message larger than \
             --max-message-bytes, or not [topic, body].",
            "reason",
            Dropped::ALL.map(|why| (why.as_str(), self.dropped(why))),
        )
    }
}

/// A forwarder's figures, read at scrape time.
#[derive(Debug)]
struct Exposed(Arc<Metrics>);

impl Collector for Exposed {
    fn encode(&self, encoder: DescriptorEncoder) -> fmt::Result {
        self.0.encode(&mut Figures::new(encoder))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_figure_has_help_and_type_and_drops_have_their_reason() {
        let m = Arc::new(Metrics::default());
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
