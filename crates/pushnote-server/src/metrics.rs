//! Counters of one server, served as Prometheus text at `/metrics` when enabled.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pushnote_cli::metrics::{
    self, Collector, DescriptorEncoder, Figures, Histogram, HistoryFigures,
};

use crate::protocol::{ErrorCode, Why};

/// Every counter and gauge of a server. All updates are relaxed atomics: cheap on hot paths.
#[derive(Default, Debug)]
pub struct Metrics {
    /// Sessions open now.
    pub sessions: AtomicU64,
    /// Users with at least one subscribed session now.
    pub users: AtomicU64,
    /// Channels with at least one session here now.
    pub channels: AtomicU64,
    /// Sessions in channels now, summed over the channels.
    pub channel_subscriptions: AtomicU64,
    /// 1 while the bus is connected to the forwarder (always, in single mode, once bound).
    pub bus_connected: AtomicU64,
    /// Bus messages received, valid or not.
    pub bus_received: AtomicU64,
    /// Broadcasts received from the bus.
    pub bus_broadcasts: AtomicU64,
    /// Targeted messages received from the bus.
    pub bus_user_messages: AtomicU64,
    /// Targeted messages for a user with no session here (routing should make this rare).
    pub bus_user_messages_unrouted: AtomicU64,
    /// Channel messages received from the bus.
    pub bus_channel_messages: AtomicU64,
    /// Channel messages for a channel with no session here (routing should make this rare).
    pub bus_channel_messages_unrouted: AtomicU64,
    /// Bus messages dropped as malformed or over the size limit.
    pub bus_rejected: AtomicU64,
    /// Messages the forwarder numbered that never arrived here.
    pub bus_lost: AtomicU64,
    /// With the Redis engine: replies of Redis it could not use, and connections lost.
    pub broker_errors: AtomicU64,
    /// Joins of presence channels.
    pub presence_joins: AtomicU64,
    /// Joins of presence channels refused: the channel full, the info too large, the
    /// session in its most presence channels.
    pub presence_refused: [AtomicU64; 3],
    /// `pushnote:presence` messages queued to sessions.
    pub presence_events: AtomicU64,
    /// Presence messages sent to other servers, and received from them.
    pub presence_sent: AtomicU64,
    pub presence_received: AtomicU64,
    /// Bytes of the presence messages sent (their bodies).
    pub presence_sent_bytes: AtomicU64,
    /// Presence messages of other servers that were not ones.
    pub presence_malformed: AtomicU64,
    /// Other servers asked for their whole state (their messages were lost or they were new).
    pub presence_asked: AtomicU64,
    /// Other servers forgotten for going silent, and their members with them.
    pub presence_expired: AtomicU64,
    /// Members kept, of every presence channel and server (this one's included), now.
    pub presence_members: AtomicU64,
    /// Presence channels with members, now.
    pub presence_channels: AtomicU64,
    /// Other servers heard from, now.
    pub presence_servers: AtomicU64,
    /// Members other servers announced past --presence-max-known, not kept.
    pub presence_dropped: AtomicU64,
    /// Confirmed publishes received (`--single --confirm`).
    pub confirm_requests: AtomicU64,
    /// Messages of confirmed publishes kept and delivered, their positions replied.
    pub confirmed: AtomicU64,
    /// Confirmed publishes refused, by [`pushnote::confirm::Refusal`].
    pub confirm_refused: [AtomicU64; 3],
    /// Replies to confirmed publishes dropped: the app gone, or holding `--confirm-hwm`.
    pub confirm_replies_dropped: AtomicU64,
    /// Messages queued to sessions.
    pub deliveries: AtomicU64,
    /// Sessions closed because their queue was full.
    pub slow_closed: AtomicU64,
    /// Sessions closed at once because the server was full.
    pub sessions_refused: AtomicU64,
    /// New sessions refused because their connection held its most.
    pub sessions_refused_connection: AtomicU64,
    /// New sessions refused because their address opened them too fast.
    pub sessions_refused_address: AtomicU64,
    /// Joins refused because the channel would be one more than the server holds.
    pub channels_refused_full: AtomicU64,
    /// Successful subscribes.
    pub subscribes: AtomicU64,
    /// Refused subscribes (bad token, no secret, malformed request).
    pub subscribes_refused: AtomicU64,
    /// Opaque tokens taken (`--opaque-tokens`), before the subscribe's other checks.
    pub opaque_tokens: AtomicU64,
    /// Opaque tokens refused (`invalid_token`) for their length or characters.
    pub opaque_tokens_refused: AtomicU64,
    /// Successful channel subscribes.
    pub channel_subscribes: AtomicU64,
    /// Refused channel subscribes (bad name, no or bad token, too many channels).
    pub channel_subscribes_refused: AtomicU64,
    /// Client messages answered with an error.
    pub client_errors: AtomicU64,
    /// Replies not sent because their session had not turned replies on: the success replies
    /// first, then the errors, by [`ErrorCode::ALL`]'s order.
    pub replies_withheld: [AtomicU64; ErrorCode::ALL.len() + 1],
    /// Sessions closed for a message over --max-message-bytes, or a send body or WebSocket
    /// message over its bound (3009).
    pub too_big_closed: AtomicU64,
    /// The history's figures (a `--single` server's own).
    pub history: HistoryFigures,
    /// Requests with a position that were given everything missed since.
    pub recoveries: AtomicU64,
    /// Messages given to sessions by those requests.
    pub recovered_messages: AtomicU64,
    /// Requests with a position answered "not recovered".
    pub recoveries_failed: AtomicU64,
    /// Of those, the ones answered "busy": past `--recovery-memory` or the forwarder's
    /// `--recovery-rate`.
    pub recoveries_busy: AtomicU64,
    /// Bytes of kept messages in the answers being received from the forwarder now.
    pub recovery_bytes_held: AtomicU64,
    /// How long the oldest bus message waiting for delivery has waited, in microseconds.
    pub bus_lag_micros: AtomicU64,
    /// 1 while the server is overloaded: behind the bus by more than half `--max-lag`, or it
    /// shed messages within the last seconds.
    pub overloaded: AtomicU64,
    /// Broadcasts shed past `--max-lag`.
    pub bus_shed_broadcasts: AtomicU64,
    /// Users' messages shed past `--max-lag`.
    pub bus_shed_user_messages: AtomicU64,
    /// Channels' messages shed past `--max-lag`.
    pub bus_shed_channel_messages: AtomicU64,
    /// Messages published through `POST /publish` (`--single` with `--api-key`).
    pub http_published: AtomicU64,
    /// `POST /publish` requests refused.
    pub http_refused: AtomicU64,
    /// What the HTTP connections did: open, closed idle, evicted, header timeouts.
    pub connections: Arc<pushnote_cli::connections::Stats>,
    /// `POST /publish` requests answered on their headers, their body unread: no key
    /// configured (404), a wrong key (401), a declared length over the limit (413).
    pub publish_refused_unread: AtomicU64,
    /// `POST /publish` bodies that did not arrive within `--body-timeout` (408).
    pub publish_body_timeouts: AtomicU64,
    /// The distributions of bus delivery and recovery.
    pub histograms: Histograms,
}

/// The histograms of a server: what an operator reads a tail from, not a gauge.
#[derive(Debug)]
pub struct Histograms {
    /// How long each bus message waited in the backlog (`overload.rs`) before its delivery
    /// began, or before it was shed.
    pub bus_wait: Histogram,
    /// How long from a bus message's read to its write (or queueing, behind) to the last of
    /// its sessions.
    pub delivery: Histogram,
    /// How long a request with a position took from the request to its answer.
    pub recovery_time: Histogram,
    /// How many messages a recovered request was given.
    pub recovery_messages: Histogram,
}

impl Default for Histograms {
    fn default() -> Histograms {
        Histograms {
            bus_wait: Histogram::seconds(),
            delivery: Histogram::seconds(),
            recovery_time: Histogram::seconds(),
            recovery_messages: Histogram::counts(),
        }
    }
}

impl Metrics {
    /// Counts a reply not sent: the error of `refused`, or (`None`) a success reply.
    pub fn count_withheld(&self, refused: Option<ErrorCode>) {
        let slot = refused.map_or(0, |code| code as usize + 1);
        if let Some(counter) = self.replies_withheld.get(slot) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a request's outcome: recovered with `given` messages, not recovered, or (`None`)
    /// a request without a position; one with a position was answered `took` after it came.
    pub fn count_recovery(&self, recovered: Option<Result<(), Why>>, given: usize, took: Duration) {
        if recovered.is_some() {
            self.histograms.recovery_time.observe_duration(took);
        }
        match recovered {
            Some(Ok(())) => {
                self.recoveries.fetch_add(1, Ordering::Relaxed);
                self.recovered_messages
                    .fetch_add(given as u64, Ordering::Relaxed);
                self.histograms.recovery_messages.observe(given as u64);
            }
            Some(Err(why)) => {
                self.recoveries_failed.fetch_add(1, Ordering::Relaxed);
                if why == Why::Busy {
                    self.recoveries_busy.fetch_add(1, Ordering::Relaxed);
                }
            }
            None => {}
        }
    }

    /// The Prometheus text of every figure.
    pub fn render(self: &Arc<Self>) -> String {
        metrics::render(Exposed(self.clone()))
    }

    /// Writes every figure.
    fn encode(&self, figures: &mut Figures) -> fmt::Result {
        let rows: &[(&str, &str, &str, &AtomicU64)] = &[
            (
                "pushnote_http_publish_refused_unread_total",
                "counter",
                "POST /publish requests answered on their headers, their body unread: no \
                 --api-key (404), no or a wrong key (401), a Content-Length over the limit \
                 (413).",
                &self.publish_refused_unread,
            ),
            (
                "pushnote_http_publish_body_timeouts_total",
                "counter",
                "POST /publish bodies that did not arrive within --body-timeout (answered 408).",
                &self.publish_body_timeouts,
            ),
            (
                "pushnote_bus_connected",
                "gauge",
                "1 while the bus is connected to the forwarder or Redis (with --single: once \
                 bound).",
                &self.bus_connected,
            ),
            (
                "pushnote_confirm_requests_total",
                "counter",
                "Confirmed publishes received (--single --confirm).",
                &self.confirm_requests,
            ),
            (
                "pushnote_confirmed_messages_total",
                "counter",
                "Messages of confirmed publishes kept and delivered, their positions replied.",
                &self.confirmed,
            ),
            (
                "pushnote_confirm_replies_dropped_total",
                "counter",
                "Replies to confirmed publishes dropped: the app gone, or holding --confirm-hwm \
                 replies.",
                &self.confirm_replies_dropped,
            ),
            (
                "pushnote_broker_errors_total",
                "counter",
                "With --broker: replies of Redis that were errors or unreadable, and \
                 connections to it lost.",
                &self.broker_errors,
            ),
            (
                "pushnote_overloaded",
                "gauge",
                "1 while the server is overloaded: behind the bus by more than half --max-lag, \
                 or it shed messages within the last 5 s.",
                &self.overloaded,
            ),
            (
                "pushnote_sessions",
                "gauge",
                "Sessions open now.",
                &self.sessions,
            ),
            (
                "pushnote_users",
                "gauge",
                "Users with a subscribed session here.",
                &self.users,
            ),
            (
                "pushnote_channels",
                "gauge",
                "Channels with a session here.",
                &self.channels,
            ),
            (
                "pushnote_channel_subscriptions",
                "gauge",
                "Sessions in channels here, summed over the channels.",
                &self.channel_subscriptions,
            ),
            (
                "pushnote_bus_messages_received_total",
                "counter",
                "Bus messages received.",
                &self.bus_received,
            ),
            (
                "pushnote_bus_broadcasts_total",
                "counter",
                "Broadcasts received from the bus.",
                &self.bus_broadcasts,
            ),
            (
                "pushnote_bus_user_messages_total",
                "counter",
                "Targeted messages received from the bus.",
                &self.bus_user_messages,
            ),
            (
                "pushnote_bus_user_messages_unrouted_total",
                "counter",
                "Targeted messages for a user with no session here.",
                &self.bus_user_messages_unrouted,
            ),
            (
                "pushnote_bus_channel_messages_total",
                "counter",
                "Channel messages received from the bus.",
                &self.bus_channel_messages,
            ),
            (
                "pushnote_bus_channel_messages_unrouted_total",
                "counter",
                "Channel messages for a channel with no session here.",
                &self.bus_channel_messages_unrouted,
            ),
            (
                "pushnote_bus_messages_rejected_total",
                "counter",
                "Bus messages dropped as malformed or too large.",
                &self.bus_rejected,
            ),
            (
                "pushnote_bus_messages_lost_total",
                "counter",
                "Messages the forwarder numbered that never arrived here (dropped past a \
                 high-water mark, or while disconnected).",
                &self.bus_lost,
            ),
            (
                "pushnote_deliveries_total",
                "counter",
                "Messages queued to sessions.",
                &self.deliveries,
            ),
            (
                "pushnote_sessions_closed_slow_total",
                "counter",
                "Sessions closed because their queue was full.",
                &self.slow_closed,
            ),
            (
                "pushnote_sessions_refused_full_total",
                "counter",
                "Sessions closed at once because the server held --max-sessions.",
                &self.sessions_refused,
            ),
            (
                "pushnote_sessions_refused_connection_total",
                "counter",
                "New sessions refused (3004) because their connection held \
                 --max-sessions-per-connection.",
                &self.sessions_refused_connection,
            ),
            (
                "pushnote_sessions_refused_address_total",
                "counter",
                "New sessions refused (3004) because their address opened them faster than \
                 --session-rate-per-address.",
                &self.sessions_refused_address,
            ),
            (
                "pushnote_subscribes_total",
                "counter",
                "Successful subscribes.",
                &self.subscribes,
            ),
            (
                "pushnote_subscribes_refused_total",
                "counter",
                "Refused subscribes.",
                &self.subscribes_refused,
            ),
            (
                "pushnote_opaque_tokens_total",
                "counter",
                "Opaque tokens taken by subscribes (--opaque-tokens).",
                &self.opaque_tokens,
            ),
            (
                "pushnote_opaque_tokens_refused_total",
                "counter",
                "Opaque tokens refused (invalid_token) for their length or characters.",
                &self.opaque_tokens_refused,
            ),
            (
                "pushnote_channel_subscribes_total",
                "counter",
                "Successful channel subscribes.",
                &self.channel_subscribes,
            ),
            (
                "pushnote_channel_subscribes_refused_total",
                "counter",
                "Refused channel subscribes.",
                &self.channel_subscribes_refused,
            ),
            (
                "pushnote_channels_refused_full_total",
                "counter",
                "Joins refused (channels_full) because the channel would be one more than \
                 --max-server-channels.",
                &self.channels_refused_full,
            ),
            (
                "pushnote_presence_joins_total",
                "counter",
                "Joins of presence channels.",
                &self.presence_joins,
            ),
            (
                "pushnote_presence_events_total",
                "counter",
                "pushnote:presence messages (members added and removed) queued to sessions.",
                &self.presence_events,
            ),
            (
                "pushnote_presence_bus_sent_total",
                "counter",
                "Presence messages sent to the other servers.",
                &self.presence_sent,
            ),
            (
                "pushnote_presence_bus_sent_bytes_total",
                "counter",
                "Bytes of the presence messages sent to the other servers (their bodies).",
                &self.presence_sent_bytes,
            ),
            (
                "pushnote_presence_bus_received_total",
                "counter",
                "Presence messages received from the other servers.",
                &self.presence_received,
            ),
            (
                "pushnote_presence_bus_malformed_total",
                "counter",
                "Presence messages received that were not ones; dropped.",
                &self.presence_malformed,
            ),
            (
                "pushnote_presence_resyncs_total",
                "counter",
                "Other servers asked for their whole state (messages of theirs lost, or new).",
                &self.presence_asked,
            ),
            (
                "pushnote_presence_servers_expired_total",
                "counter",
                "Other servers forgotten, with their members, after --presence-timeout unheard.",
                &self.presence_expired,
            ),
            (
                "pushnote_presence_dropped_total",
                "counter",
                "Members other servers announced past --presence-max-known; not kept.",
                &self.presence_dropped,
            ),
            (
                "pushnote_presence_members",
                "gauge",
                "Presence members kept, of every channel and server (a member on two servers \
                 counts twice).",
                &self.presence_members,
            ),
            (
                "pushnote_presence_channels",
                "gauge",
                "Presence channels with members.",
                &self.presence_channels,
            ),
            (
                "pushnote_presence_servers",
                "gauge",
                "Other servers heard from over the bus.",
                &self.presence_servers,
            ),
            (
                "pushnote_client_errors_total",
                "counter",
                "Client messages answered with an error.",
                &self.client_errors,
            ),
            (
                "pushnote_sessions_closed_too_big_total",
                "counter",
                "Sessions closed for a message over --max-message-bytes or a frame over its bound (3009).",
                &self.too_big_closed,
            ),
            (
                "pushnote_recoveries_total",
                "counter",
                "Requests with a position given everything they missed since.",
                &self.recoveries,
            ),
            (
                "pushnote_recovered_messages_total",
                "counter",
                "Messages given to sessions from the history by those requests.",
                &self.recovered_messages,
            ),
            (
                "pushnote_recoveries_failed_total",
                "counter",
                "Requests with a position answered not recovered (another epoch, a position \
                 from the future, or history that no longer reaches back).",
                &self.recoveries_failed,
            ),
            (
                "pushnote_http_published_total",
                "counter",
                "Messages published through POST /publish (--single with --api-key).",
                &self.http_published,
            ),
            (
                "pushnote_http_refused_total",
                "counter",
                "POST /publish requests refused: no or a wrong key, a bad body or target, a \
                 message the bus would drop or too many, or the bus not connected.",
                &self.http_refused,
            ),
            (
                "pushnote_recoveries_busy_total",
                "counter",
                "Requests with a position answered busy, given nothing: what they missed would \
                 pass --recovery-memory here or the forwarder's --recovery-rate.",
                &self.recoveries_busy,
            ),
            (
                "pushnote_recovery_bytes",
                "gauge",
                "Bytes of kept messages in the recovery answers being received from the \
                 forwarder (bounded by --recovery-memory).",
                &self.recovery_bytes_held,
            ),
        ];
        for (name, kind, help, value) in rows {
            let value = value.load(Ordering::Relaxed);
            match *kind {
                "counter" => figures.counter(name, help, value)?,
                _ => figures.gauge(name, help, value)?,
            }
        }
        self.history.encode("pushnote", figures)?;
        self.connections
            .encode("pushnote_http_connections", figures)?;
        figures.gauge(
            "pushnote_bus_lag_seconds",
            "How long the oldest bus message waiting for delivery has waited (shed past \
             --max-lag).",
            self.bus_lag_micros.load(Ordering::Relaxed) as f64 / 1e6,
        )?;
        let load = |figure: &AtomicU64| figure.load(Ordering::Relaxed);
        figures.counters(
            "pushnote_bus_messages_shed_total",
            "Bus messages not delivered because they waited past --max-lag (recoverable where \
             there is history), by kind.",
            "kind",
            [
                ("broadcast", load(&self.bus_shed_broadcasts)),
                ("user", load(&self.bus_shed_user_messages)),
                ("channel", load(&self.bus_shed_channel_messages)),
            ],
        )?;
        figures.counters(
            "pushnote_confirm_refused_total",
            "Confirmed publishes refused (--single --confirm), by reason; nothing of them was \
             published.",
            "reason",
            pushnote::confirm::Refusal::ALL
                .map(|r| (r.as_str(), load(&self.confirm_refused[r as usize]))),
        )?;
        figures.counters(
            "pushnote_presence_refused_total",
            "Joins of presence channels refused, by reason: full (presence_full), info \
             (bad_request, over --presence-max-info), channels (too_many_channels, over \
             --presence-max-channels).",
            "reason",
            ["full", "info", "channels"]
                .into_iter()
                .zip(self.presence_refused.iter().map(load)),
        )?;
        let codes = std::iter::once("ok").chain(ErrorCode::ALL.map(ErrorCode::as_str));
        figures.counters(
            "pushnote_replies_withheld_total",
            "Replies not sent because the session had not asked for them (a page written for \
             the original pushnote), by error code, ok for a success reply.",
            "code",
            codes.zip(self.replies_withheld.iter().map(load)),
        )?;
        let h = &self.histograms;
        figures.histogram(
            "pushnote_bus_delivery_lag_seconds",
            "How long each bus message waited in the server between its read off the bus and \
             the start of its delivery (or its shedding past --max-lag).",
            &h.bus_wait,
        )?;
        figures.histogram(
            "pushnote_delivery_latency_seconds",
            "How long from a bus message's read off the bus until it was written to the last \
             of its sessions (queued to their writers, when the server is behind).",
            &h.delivery,
        )?;
        figures.histogram(
            "pushnote_recovery_seconds",
            "How long requests with a position took from the request to the answer (with a \
             forwarder: its round trip, up to the 3 s it is given).",
            &h.recovery_time,
        )?;
        figures.histogram(
            "pushnote_recovery_messages",
            "Messages given to each request with a position that was recovered.",
            &h.recovery_messages,
        )
    }
}

/// A server's figures, read at scrape time.
#[derive(Debug)]
struct Exposed(Arc<Metrics>);

impl Collector for Exposed {
    fn encode(&self, encoder: DescriptorEncoder) -> fmt::Result {
        self.0.encode(&mut Figures::new(encoder))
    }
}
