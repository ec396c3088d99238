//! The server's configuration: its flags, their defaults (each written once, here), the types
//! a [`ServerConfig`] is made of, and the checks that turn flags into a [`ServerConfig`] and an
//! address to listen on. It imports no other module of the server, so that every module can
//! read its configuration without an import circle.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use clap::builder::FalseyValueParser;
use pushnote::Signer;

/// The HTTP port.
pub const DEFAULT_PORT: u16 = 8080;
/// Connections the kernel completes and holds until they are accepted (the listen backlog).
pub const DEFAULT_BACKLOG: u32 = 4096;
/// The path SockJS is served under.
pub const DEFAULT_ROUTE: &str = "/sockjs";
/// The oldest token accepted, in seconds: a day, as a page stays open.
pub const DEFAULT_TOKEN_MAX_AGE_SECS: u64 = 86_400;
/// How far in the future a token's timestamp may be, in seconds.
pub const DEFAULT_TOKEN_MAX_SKEW_SECS: u64 = pushnote::DEFAULT_MAX_CLOCK_SKEW.as_secs();
/// Whether tokens an app makes itself (opaque ones) are taken: no, only signed tokens.
pub const DEFAULT_OPAQUE_TOKENS: bool = false;
/// Seconds without traffic before a heartbeat frame: below the common proxies' 30 s or more.
pub const DEFAULT_HEARTBEAT_SECS: u64 = 25;
/// Seconds an HTTP-transport session lives without a receiving request.
pub const DEFAULT_DISCONNECT_DELAY_SECS: u64 = 5;
/// Bytes one streaming response carries before the client opens the next.
pub const DEFAULT_RESPONSE_LIMIT: usize = 128 * 1024;
/// Browser origins allowed to open sessions.
pub const DEFAULT_ORIGINS: &str = "*";
/// The largest message a client may send.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// The largest body of a send request.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 256 * 1024;
/// Messages one session may have waiting before it is closed as slow.
pub const DEFAULT_QUEUE_MESSAGES: usize = 1_000;
/// Bytes one session may have waiting before it is closed as slow.
pub const DEFAULT_QUEUE_BYTES: usize = 8 * 1024 * 1024;
/// Sessions one server holds.
pub const DEFAULT_MAX_SESSIONS: usize = 100_000;
/// HTTP sessions one connection may hold (not bounded for a trusted proxy's connections).
pub const DEFAULT_MAX_SESSIONS_PER_CONNECTION: usize = sockjs::DEFAULT_MAX_SESSIONS_PER_CONNECTION;
/// New sessions one client address may open each second, after a burst of ten seconds' worth.
pub const DEFAULT_SESSION_RATE_PER_ADDRESS: u32 = sockjs::DEFAULT_SESSION_RATE_PER_ADDRESS;
/// A burst of how many seconds of `--session-rate-per-address` an address may open at once.
pub const SESSION_BURST_SECONDS: u32 =
    sockjs::DEFAULT_SESSION_BURST_PER_ADDRESS / sockjs::DEFAULT_SESSION_RATE_PER_ADDRESS;
/// The reverse proxies whose forwarding headers name the client: one on this machine.
pub const DEFAULT_TRUSTED_PROXIES: &str = "127.0.0.0/8,::1";
/// Subscribed sessions of one user on one server.
pub const DEFAULT_MAX_SESSIONS_PER_USER: usize = 100;
/// Subscribe requests with a token of one session.
pub const DEFAULT_MAX_SUBSCRIBE_ATTEMPTS: u32 = 32;
/// Channels one session may be in.
pub const DEFAULT_MAX_CHANNELS: usize = 100;
/// Distinct channels with a session on one server.
pub const DEFAULT_MAX_SERVER_CHANNELS: usize = 100_000;
/// Channel requests (joins and leaves) a session's allowance grows back by each second, past
/// its burst of twice `--max-channels`.
pub const CHANNEL_REQUESTS_PER_SECOND: u32 = 10;
/// The largest bus message accepted.
pub const DEFAULT_MAX_BUS_MESSAGE_BYTES: usize = pushnote::DEFAULT_MAX_MESSAGE_BYTES;
/// Bus messages the server's socket holds before ZeroMQ drops new ones.
pub const DEFAULT_BUS_HWM: i32 = 100_000;
/// How long, in seconds, a bus message may wait for delivery before it is shed: well under
/// the seconds of delay a backlog hidden in ZeroMQ's queues reached, and above the waits of a
/// loaded but keeping-up server (p99 under half a second in the soak).
pub const DEFAULT_MAX_LAG_SECS: f64 = 2.0;
/// The most bytes of bus messages read ahead of delivery; past them (or past the bus
/// high-water mark in messages), what comes waits in ZeroMQ's queue.
pub const BUS_BACKLOG_BYTES: usize = 64 << 20;
/// Seconds a client may take to send a request's headers (the forwarder's default too).
pub const DEFAULT_HEADER_TIMEOUT_SECS: u64 = pushnote_cli::connections::DEFAULT_HEADER_TIMEOUT_SECS;
/// Seconds a connection may stay open with no request in progress (keep-alive between
/// requests). Clients of the polling transports send their next request at once.
pub const DEFAULT_IDLE_TIMEOUT_SECS: u64 = pushnote_cli::connections::DEFAULT_IDLE_TIMEOUT_SECS;
/// Seconds a request's body (`POST /publish`, `xhr_send`, `jsonp_send`) may take to arrive.
pub const DEFAULT_BODY_TIMEOUT_SECS: u64 = pushnote_cli::body::DEFAULT_BODY_TIMEOUT_SECS;
/// Seconds shutdown waits for sessions to take their close frames.
pub const DEFAULT_SHUTDOWN_GRACE_SECS: u64 = 5;
/// The most messages of one topic (the broadcasts, a user, a channel) kept for recovery.
pub const DEFAULT_HISTORY_SIZE: usize = pushnote_history::history::DEFAULT_MESSAGES;
/// How long a message is kept for recovery, in seconds.
pub const DEFAULT_HISTORY_TTL_SECS: u64 = pushnote_history::history::DEFAULT_AGE_SECS;
/// What the history may take in all, in MiB.
pub const DEFAULT_HISTORY_MEMORY_MIB: usize = pushnote_history::history::DEFAULT_MEMORY_MIB;
/// With a forwarder: MiB of kept messages the recovery answers being received may hold at
/// once.
pub const DEFAULT_RECOVERY_MEMORY_MIB: usize = 32;

/// Whether the server connects to a forwarder or binds the bus itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BusMode {
    /// Connect to a forwarder's server-facing (PUB) endpoint.
    Connect,
    /// Bind the endpoint; apps connect to it directly (`--single`).
    Bind,
    /// Take messages from Redis, which keeps the history (`--broker redis://…`).
    Redis,
}

/// With `--single --confirm`: confirmed publishes held per app, and replies, by default.
pub const DEFAULT_CONFIRM_HWM: i32 = 1000;
/// The longest topic of a confirmed publish, NUL included (longer is `topic_too_long`); a
/// user's or channel's topic is far shorter.
pub const CONFIRM_MAX_TOPIC_BYTES: usize = 1024;

/// With `--single`: where and how confirmed publishes are taken.
#[derive(Clone, Debug)]
pub struct ConfirmConfig {
    /// Where to bind.
    pub endpoint: String,
    /// Requests held per app, and replies.
    pub hwm: i32,
}

/// The prefix of pushnote's keys and channels in Redis by default.
pub const DEFAULT_BROKER_PREFIX: &str = pushnote::redis_script::DEFAULT_PREFIX;

/// With the Redis engine: where Redis is and what the history there keeps.
#[derive(Clone, Debug)]
pub struct BrokerConfig {
    /// Where Redis is, as given (password included: for `POST /publish`'s publisher).
    pub url: String,
    /// Where Redis is.
    pub endpoint: pushnote::redis_endpoint::RedisEndpoint,
    /// The prefix of pushnote's keys and channels.
    pub prefix: String,
    /// Messages kept per topic.
    pub history_size: usize,
    /// Seconds a message is kept.
    pub history_ttl: u64,
    /// Seconds a topic's position is kept after its last use.
    pub topic_idle: u64,
}

/// How the server checks tokens.
#[derive(Clone, Debug)]
pub struct TokenPolicy {
    /// The signer holding the current and old secrets, and the salt.
    pub signer: Signer,
    /// Tokens older than this are refused; `None` accepts any age.
    pub max_age: Option<Duration>,
    /// Tokens stamped further than this in the future are refused as invalid.
    pub max_skew: Duration,
    /// Whether tokens the app made itself are taken (`--opaque-tokens`): a token without the
    /// form of a signed one is then the user [`Signer::opaque_user`] makes of it.
    pub opaque: bool,
}

/// How much one server, one user and one session may take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Open sessions on this server; one more is closed at once with 3003 "Server full".
    pub max_sessions: usize,
    /// Sessions of one user on this server; one more subscribe is refused
    /// (`too_many_sessions`) and the session keeps broadcasts.
    pub max_sessions_per_user: usize,
    /// Subscribe requests with a token (a user's, a private channel's) of one session; one
    /// more is refused (`too_many_attempts`) and the session is closed with 3011.
    pub max_subscribe_attempts: u32,
    /// Channels one session may be in; one more is refused (`too_many_channels`).
    pub max_channels: usize,
    /// Distinct channels with a session on this server; a join that would add one more is
    /// refused (`channels_full`).
    pub max_server_channels: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_sessions: DEFAULT_MAX_SESSIONS,
            max_sessions_per_user: DEFAULT_MAX_SESSIONS_PER_USER,
            max_subscribe_attempts: DEFAULT_MAX_SUBSCRIBE_ATTEMPTS,
            max_channels: DEFAULT_MAX_CHANNELS,
            max_server_channels: DEFAULT_MAX_SERVER_CHANNELS,
        }
    }
}

impl Limits {
    /// The channel requests (joins and leaves) a session may make at once: twice what it may
    /// hold, so a page can join all its channels, leave them and join them again.
    pub fn channel_request_burst(&self) -> u32 {
        u32::try_from(self.max_channels.saturating_mul(2))
            .unwrap_or(u32::MAX)
            .max(CHANNEL_REQUESTS_PER_SECOND)
    }
}

/// Presence channels: their bounds and timing (PROTOCOL §6, "Presence").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PresenceConfig {
    /// Members one channel may have; a new member's join past it is refused (`presence_full`).
    pub max_members: usize,
    /// Bytes of a member's info (JSON text); more is refused (`bad_request`).
    pub max_info_bytes: usize,
    /// Presence channels one session may be in; one more is refused (`too_many_channels`).
    pub max_channels: usize,
    /// Members kept of other servers, of every channel; what they announce past it is dropped.
    pub max_known: usize,
    /// How often changes go out, to the bus and to pages, put together.
    pub interval: Duration,
    /// How long a server may go unheard before its members leave.
    pub timeout: Duration,
}

impl Default for PresenceConfig {
    fn default() -> Self {
        PresenceConfig {
            max_members: pushnote_presence::DEFAULT_MAX_MEMBERS,
            max_info_bytes: pushnote_presence::DEFAULT_MAX_INFO_BYTES,
            max_channels: pushnote_presence::DEFAULT_MAX_CHANNELS,
            max_known: pushnote_presence::DEFAULT_MAX_KNOWN,
            interval: Duration::from_millis(pushnote_presence::DEFAULT_INTERVAL_MS),
            timeout: Duration::from_secs_f64(pushnote_presence::DEFAULT_TIMEOUT_SECS),
        }
    }
}

/// Everything a server is configured with.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// The path SockJS is served under, for example `/sockjs`.
    pub route: String,
    /// The bus endpoint: the forwarder's PUB side, or in single mode where to bind.
    pub bus_endpoint: String,
    /// Connect to a forwarder, or bind the bus (`--single`).
    pub bus_mode: BusMode,
    /// Messages the bus socket holds before ZeroMQ drops new ones.
    pub bus_high_water_mark: i32,
    /// The largest bus message accepted, in bytes; larger ones are dropped and counted.
    pub max_bus_message_bytes: usize,
    /// How long a bus message may wait for delivery before it is shed; `None`: no bound.
    pub max_lag: Option<Duration>,
    /// How tokens are checked; `None` serves broadcasts only.
    pub tokens: Option<TokenPolicy>,
    /// Sessions per server and per user, subscribe requests per session.
    pub limits: Limits,
    /// SockJS settings: heartbeats, limits, queues.
    pub sockjs: sockjs::Options,
    /// Serve the demo page at `/`, loading the SockJS client from this URL.
    pub demo_sockjs_url: Option<String>,
    /// Serve Prometheus metrics at `/metrics`.
    pub metrics: bool,
    /// How long shutdown waits for sessions to take their close frames.
    pub shutdown_grace: Duration,
    /// How long a client may take to send a request's headers before its connection is
    /// closed (slow-loris clients hold connections open by trickling headers).
    pub header_timeout: Duration,
    /// How long a connection may stay open with no request in progress before it is closed
    /// (WebSocket connections and requests in progress are not idle).
    pub idle_timeout: Duration,
    /// How long a request's body (`POST /publish`; the SockJS send endpoints take theirs from
    /// `sockjs.body_timeout`, set to the same) may take to arrive before it is answered 408.
    pub body_timeout: Duration,
    /// How much history is kept for positions and recovery; `None` keeps none (and a
    /// session's `positions` request is refused).
    pub history: Option<pushnote_history::Limits>,
    /// With `--single`, the key of `POST /publish`; `None` serves no publishing over HTTP.
    pub api_key: Option<String>,
    /// With the Redis engine ([`BusMode::Redis`]): Redis and its history.
    pub broker: Option<BrokerConfig>,
    /// With `--single` and history: confirmed publishes (`--confirm`); `None` takes none.
    pub confirm: Option<ConfirmConfig>,
    /// With a forwarder: bytes of kept messages the recovery answers being received may hold
    /// at once (each answer also at most a session's queue bytes); an answer past it gives
    /// none and says "busy".
    pub recovery_memory: usize,
    /// Presence channels' bounds and timing.
    pub presence: PresenceConfig,
}

impl ServerConfig {
    /// A configuration with the defaults of `pushnote-server`'s flags.
    pub fn new(bus_endpoint: &str, bus_mode: BusMode) -> ServerConfig {
        let sockjs = sockjs::Options {
            heartbeat_interval: Duration::from_secs(DEFAULT_HEARTBEAT_SECS),
            disconnect_delay: Duration::from_secs(DEFAULT_DISCONNECT_DELAY_SECS),
            response_limit: DEFAULT_RESPONSE_LIMIT,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            queue: sockjs::QueueLimits {
                max_messages: DEFAULT_QUEUE_MESSAGES,
                max_bytes: DEFAULT_QUEUE_BYTES,
            },
            sockjs_url: sockjs::DEFAULT_SOCKJS_URL.to_owned(),
            body_timeout: Duration::from_secs(DEFAULT_BODY_TIMEOUT_SECS),
            ..sockjs::Options::default()
        };
        ServerConfig {
            route: DEFAULT_ROUTE.into(),
            bus_endpoint: bus_endpoint.into(),
            bus_mode,
            bus_high_water_mark: DEFAULT_BUS_HWM,
            max_bus_message_bytes: DEFAULT_MAX_BUS_MESSAGE_BYTES,
            max_lag: Some(Duration::from_secs_f64(DEFAULT_MAX_LAG_SECS)),
            tokens: None,
            limits: Limits::default(),
            sockjs,
            demo_sockjs_url: None,
            metrics: false,
            shutdown_grace: Duration::from_secs(DEFAULT_SHUTDOWN_GRACE_SECS),
            header_timeout: Duration::from_secs(DEFAULT_HEADER_TIMEOUT_SECS),
            idle_timeout: Duration::from_secs(DEFAULT_IDLE_TIMEOUT_SECS),
            body_timeout: Duration::from_secs(DEFAULT_BODY_TIMEOUT_SECS),
            history: (bus_mode == BusMode::Bind).then(pushnote_history::Limits::default),
            api_key: None,
            broker: None,
            confirm: None,
            recovery_memory: DEFAULT_RECOVERY_MEMORY_MIB << 20,
            presence: PresenceConfig::default(),
        }
    }
}

/// Pushes notifications from the bus to browsers over SockJS.
///
/// Browsers connect with the stock SockJS client at http://ADDRESS:PORT/ROUTE, receive every
/// broadcast, and after sending {"name":"subscribe","data":{"token":…}} also every message for
/// the token's user. Every flag has an environment-variable fall-back, shown in brackets.
#[derive(clap::Parser, Debug)]
#[command(name = "pushnote-server", version)]
pub struct Flags {
    /// The HTTP port. 0 picks a free one (printed at start).
    #[arg(short = 'p', long, env = "PUSHNOTE_PORT", default_value_t = DEFAULT_PORT)]
    pub port: u16,

    /// The address to listen on: an IPv4 or IPv6 address. Empty (or ::) means every interface,
    /// IPv4 and IPv6; 0.0.0.0 means every IPv4 interface only.
    #[arg(short = 'a', long, env = "PUSHNOTE_ADDRESS", default_value = "")]
    pub address: String,

    /// Connections the kernel completes and holds until the server accepts them (the listen
    /// backlog). The kernel caps it at net.core.somaxconn. A connect arriving when it is full
    /// is dropped and retried by the client a second later, so bursts of connects need room.
    #[arg(long, env = "PUSHNOTE_BACKLOG", default_value_t = DEFAULT_BACKLOG)]
    pub backlog: u32,

    /// The path SockJS is served under.
    #[arg(short = 'r', long, env = "PUSHNOTE_ROUTE", default_value = DEFAULT_ROUTE)]
    pub route: String,

    /// The bus: the forwarder's server-facing endpoint [default: tcp://127.0.0.1:8001], or with
    /// --single the endpoint to bind for apps [default: tcp://127.0.0.1:8002].
    #[arg(
        short = 's',
        long = "mq_socket",
        alias = "mq-socket",
        env = "PUSHNOTE_MQ_SOCKET"
    )]
    pub mq_socket: Option<String>,

    /// Take messages from Redis instead of a forwarder: redis://[:password@]host[:port][/db];
    /// rediss://…[?ca=CA_FILE] over TLS, Redis' certificate checked against the CA file (PEM)
    /// or the system's roots; or redis+sentinel://[:password@]host:port,host:port/master[/db]
    /// to find the primary through Sentinel and follow its failovers. Redis keeps every
    /// topic's history (--history-size, --history-ttl), and a page recovers from any server of
    /// the same Redis (docs/PROTOCOL.md §2c). Prefer the environment variable when the URL
    /// holds a password.
    #[arg(long, env = "PUSHNOTE_BROKER", hide_env_values = true, conflicts_with_all = ["mq_socket", "single"])]
    pub broker: Option<String>,

    /// With --broker: the prefix of pushnote's keys and channels in Redis, so that a Redis
    /// shared with other apps (or other pushnote deployments) keeps them apart.
    #[arg(long, env = "PUSHNOTE_BROKER_PREFIX", default_value = DEFAULT_BROKER_PREFIX)]
    pub broker_prefix: String,

    /// Bind the bus and take apps' messages directly: no forwarder, one server.
    #[arg(short = 'S', long, env = "PUSHNOTE_SINGLE", value_parser = FalseyValueParser::new())]
    pub single: bool,

    /// The secret tokens are signed with (the app's secret). Without it, the server serves
    /// broadcasts only and refuses every subscribe. At least 32 characters, 8 of them
    /// distinct, and no placeholder (change-me, django-insecure-…): a weak or empty secret
    /// stops the server at start with exit code 78. Prefer the environment variable: command
    /// lines are visible to other local users.
    #[arg(long, env = "PUSHNOTE_SECRET", hide_env_values = true)]
    pub secret: Option<String>,

    /// Old secrets still accepted while keys rotate, comma-separated; each as strong as
    /// --secret.
    #[arg(
        long,
        env = "PUSHNOTE_OLD_SECRETS",
        hide_env_values = true,
        value_delimiter = ','
    )]
    pub old_secrets: Vec<String>,

    /// The salt tokens are signed with; the app must use the same one.
    #[arg(long, env = "PUSHNOTE_SALT", default_value = pushnote::DEFAULT_SALT)]
    pub salt: String,

    /// The oldest token accepted, in seconds. 0 accepts any age.
    #[arg(long, env = "PUSHNOTE_TOKEN_MAX_AGE", default_value_t = DEFAULT_TOKEN_MAX_AGE_SECS)]
    pub token_max_age: u64,

    /// How far in the future a token's timestamp may be, in seconds, for clocks that differ
    /// between the app's machines and this one; a token stamped later is refused as invalid
    /// (Django would accept it).
    #[arg(long, env = "PUSHNOTE_TOKEN_MAX_SKEW", default_value_t = DEFAULT_TOKEN_MAX_SKEW_SECS)]
    pub token_max_skew: u64,

    /// Also take tokens the app makes itself (a PUSHNOTE_TOKENIZER returning a random string
    /// per user, as the original pushnote allowed): a token without the form of a signed one
    /// (user:timestamp:signature) is then an opaque token, 16 to 512 bytes, and holding it is
    /// the permission to receive what the app sends to it; it never expires. Signed tokens are
    /// checked as before. Needs --secret: the bus carries a keyed hash of each opaque token,
    /// never the token (docs/PROTOCOL.md §3).
    #[arg(
        long,
        env = "PUSHNOTE_OPAQUE_TOKENS",
        value_parser = FalseyValueParser::new(),
        default_value_t = DEFAULT_OPAQUE_TOKENS
    )]
    pub opaque_tokens: bool,

    /// Seconds without traffic after which a session is sent a heartbeat frame. Keep it
    /// below the idle timeout of every proxy between browsers and the server.
    #[arg(long, env = "PUSHNOTE_HEARTBEAT", default_value_t = DEFAULT_HEARTBEAT_SECS)]
    pub heartbeat: u64,

    /// Seconds a session of a polling or streaming HTTP transport survives without a
    /// receiving request before it is closed (clients that vanished are reaped after this).
    #[arg(long, env = "PUSHNOTE_DISCONNECT_DELAY", default_value_t = DEFAULT_DISCONNECT_DELAY_SECS)]
    pub disconnect_delay: u64,

    /// Bytes one streaming response (xhr-streaming, eventsource, htmlfile) carries before the
    /// server ends it and the client opens the next; bounds what browsers keep in memory.
    #[arg(long, env = "PUSHNOTE_RESPONSE_LIMIT", default_value_t = DEFAULT_RESPONSE_LIMIT)]
    pub response_limit: usize,

    /// Tell clients a JSESSIONID cookie is needed and set it on session responses, for load
    /// balancers that keep a session on one server by that cookie (sticky sessions).
    #[arg(long, env = "PUSHNOTE_COOKIE_NEEDED", value_parser = FalseyValueParser::new())]
    pub cookie_needed: bool,

    /// Browser origins allowed to open sessions, comma-separated: * (any), null, or
    /// scheme://host[:port], where host may be *.example.com and port *. Pages from other
    /// origins get 403; same-origin requests and clients that send no Origin always pass.
    #[arg(
        long,
        env = "PUSHNOTE_ORIGINS",
        value_delimiter = ',',
        default_value = DEFAULT_ORIGINS
    )]
    pub origins: Vec<String>,

    /// Turn the WebSocket transports off, for networks whose proxies break WebSocket: clients
    /// are told so by /info and use streaming or polling HTTP instead.
    #[arg(
        long,
        env = "PUSHNOTE_DISABLE_WEBSOCKET",
        value_parser = FalseyValueParser::new()
    )]
    pub disable_websocket: bool,

    /// The largest message a client may send, in bytes once decoded from its JSON string, on
    /// every transport; larger closes the session (3009).
    #[arg(long, env = "PUSHNOTE_MAX_MESSAGE_BYTES", default_value_t = DEFAULT_MAX_MESSAGE_BYTES)]
    pub max_message_bytes: usize,

    /// The largest body the send endpoints (xhr_send, jsonp_send) read, and the largest
    /// SockJS WebSocket message, in bytes: a batch of escaped messages. At least six times
    /// --max-message-bytes plus 4 is allowed, so that one message escaped at worst (control
    /// characters as \u00XX) fits. Larger gets 413 and closes the session (3009).
    #[arg(long, env = "PUSHNOTE_MAX_REQUEST_BYTES", default_value_t = DEFAULT_MAX_REQUEST_BYTES)]
    pub max_request_bytes: usize,

    /// Messages one session may have waiting before it is closed as too slow (3008).
    #[arg(long, env = "PUSHNOTE_QUEUE_MESSAGES", default_value_t = DEFAULT_QUEUE_MESSAGES)]
    pub queue_messages: usize,

    /// Bytes one session may have waiting before it is closed as too slow (3008).
    #[arg(long, env = "PUSHNOTE_QUEUE_BYTES", default_value_t = DEFAULT_QUEUE_BYTES)]
    pub queue_bytes: usize,

    /// Sessions this server holds at most; one more is closed at once with 3003 "Server full"
    /// (clients reconnect, to another server behind a load balancer).
    #[arg(long, env = "PUSHNOTE_MAX_SESSIONS", default_value_t = DEFAULT_MAX_SESSIONS)]
    pub max_sessions: usize,

    /// Sessions of the HTTP transports one connection may hold (open, or closed within the
    /// disconnect delay); one more is refused with 3004 "Too many new sessions". A browser
    /// holds a few per connection; a trusted proxy's connections, which carry many clients, are
    /// not bounded (their clients' addresses are).
    #[arg(
        long,
        env = "PUSHNOTE_MAX_SESSIONS_PER_CONNECTION",
        default_value_t = DEFAULT_MAX_SESSIONS_PER_CONNECTION
    )]
    pub max_sessions_per_connection: usize,

    /// New sessions one client address (an IPv6 /64) may open each second, of any transport,
    /// after a burst of ten seconds' worth; past it, new sessions are refused with 3004.
    /// 0: no bound. A rate, not a count, so that an office behind one NAT address opens all
    /// its pages, only not all in the same second.
    #[arg(
        long,
        env = "PUSHNOTE_SESSION_RATE_PER_ADDRESS",
        default_value_t = DEFAULT_SESSION_RATE_PER_ADDRESS
    )]
    pub session_rate_per_address: u32,

    /// Reverse proxies whose X-Forwarded-For (else X-Real-IP, else Forwarded) names the client,
    /// comma-separated addresses or networks (10.0.0.0/8); empty: none. The client's address
    /// then counts for --session-rate-per-address, and the proxy's connections are not
    /// bounded by --max-sessions-per-connection. Anyone else's forwarding headers are ignored.
    #[arg(
        long,
        env = "PUSHNOTE_TRUSTED_PROXIES",
        value_delimiter = ',',
        default_value = DEFAULT_TRUSTED_PROXIES
    )]
    pub trusted_proxies: Vec<String>,

    /// Sessions one user may have subscribed on this server; one more subscribe is refused
    /// with too_many_sessions and that session keeps broadcasts.
    #[arg(long, env = "PUSHNOTE_MAX_SESSIONS_PER_USER", default_value_t = DEFAULT_MAX_SESSIONS_PER_USER)]
    pub max_sessions_per_user: usize,

    /// Subscribe requests with a token (a user's, a private channel's) one session may make;
    /// one more is refused with too_many_attempts and the session is closed with 3011 (token
    /// guessing costs a reconnect).
    #[arg(long, env = "PUSHNOTE_MAX_SUBSCRIBE_ATTEMPTS", default_value_t = DEFAULT_MAX_SUBSCRIBE_ATTEMPTS)]
    pub max_subscribe_attempts: u32,

    /// Channels one session may be in at once; one more is refused with too_many_channels. A
    /// session may also make twice this many channel requests at once, then 10 a second
    /// (past that: too_many_requests).
    #[arg(long, env = "PUSHNOTE_MAX_CHANNELS", default_value_t = DEFAULT_MAX_CHANNELS)]
    pub max_channels: usize,

    /// Distinct channels with a session on this server; a join that would add one more is
    /// refused with channels_full (channels that have a session here can still be joined).
    /// Each costs a few KB here and at the forwarder (docs/OPERATIONS.md, "Memory").
    #[arg(long, env = "PUSHNOTE_MAX_SERVER_CHANNELS", default_value_t = DEFAULT_MAX_SERVER_CHANNELS)]
    pub max_server_channels: usize,

    /// Members one presence channel may have (as this server knows them, across servers); a
    /// new member's join past it is refused with presence_full.
    #[arg(long, env = "PUSHNOTE_PRESENCE_MAX_MEMBERS", default_value_t = pushnote_presence::DEFAULT_MAX_MEMBERS)]
    pub presence_max_members: usize,

    /// Bytes of a presence member's info (the JSON text its token carries); a join with more
    /// is refused with bad_request.
    #[arg(long, env = "PUSHNOTE_PRESENCE_MAX_INFO", default_value_t = pushnote_presence::DEFAULT_MAX_INFO_BYTES)]
    pub presence_max_info: usize,

    /// Presence channels one session may be in at once (they count in --max-channels too); one
    /// more is refused with too_many_channels.
    #[arg(long, env = "PUSHNOTE_PRESENCE_MAX_CHANNELS", default_value_t = pushnote_presence::DEFAULT_MAX_CHANNELS)]
    pub presence_max_channels: usize,

    /// Presence members this server keeps of other servers, of every channel; what they
    /// announce past it is dropped and counted (pushnote_presence_dropped_total).
    #[arg(long, env = "PUSHNOTE_PRESENCE_MAX_KNOWN", default_value_t = pushnote_presence::DEFAULT_MAX_KNOWN)]
    pub presence_max_known: usize,

    /// Milliseconds between the moments presence changes go out, put together: to the bus,
    /// and to pages (one pushnote:presence message per channel at most).
    #[arg(long, env = "PUSHNOTE_PRESENCE_INTERVAL", default_value_t = pushnote_presence::DEFAULT_INTERVAL_MS)]
    pub presence_interval: u64,

    /// Seconds (decimals allowed) another server may go unheard before its presence members
    /// leave; heartbeats go every second, or a third of this if shorter.
    #[arg(long, env = "PUSHNOTE_PRESENCE_TIMEOUT", default_value_t = pushnote_presence::DEFAULT_TIMEOUT_SECS)]
    pub presence_timeout: f64,

    /// The largest bus message accepted, in bytes; larger ones are dropped and counted.
    #[arg(long, env = "PUSHNOTE_MAX_BUS_MESSAGE_BYTES", default_value_t = DEFAULT_MAX_BUS_MESSAGE_BYTES)]
    pub max_bus_message_bytes: usize,

    /// Seconds a bus message may wait for delivery (decimals allowed). When more comes than
    /// the server can deliver, it falls behind the bus; past this, the oldest messages are
    /// shed instead of delivered late: counted by kind (pushnote_bus_messages_shed_total),
    /// logged at most once a second, and /health answers "overloaded" while it lasts. Shed
    /// messages stay in the history, so pages with positions can recover them. 0: no bound.
    #[arg(long, env = "PUSHNOTE_MAX_LAG", default_value_t = DEFAULT_MAX_LAG_SECS)]
    pub max_lag: f64,

    /// Serve a demo page at / that subscribes with a pasted token and shows notifications.
    #[arg(long, env = "PUSHNOTE_DEMO", value_parser = FalseyValueParser::new())]
    pub demo: bool,

    /// The SockJS client script loaded by /iframe.html (the iframe transports) and the demo
    /// page. Use the version your pages use; point it at your own copy to avoid the CDN.
    #[arg(long, env = "PUSHNOTE_SOCKJS_URL", default_value = sockjs::DEFAULT_SOCKJS_URL)]
    pub sockjs_url: String,

    /// Serve Prometheus metrics at /metrics.
    #[arg(long, env = "PUSHNOTE_METRICS", value_parser = FalseyValueParser::new())]
    pub metrics: bool,

    /// Seconds a client may take to send a request's headers; slower connections (slow-loris
    /// attacks, dead clients) are closed.
    #[arg(long, env = "PUSHNOTE_HEADER_TIMEOUT", default_value_t = DEFAULT_HEADER_TIMEOUT_SECS)]
    pub header_timeout: u64,

    /// Seconds a connection may stay open with no request in progress (an idle keep-alive
    /// connection) before it is closed. WebSocket connections, and requests waiting for
    /// messages or streaming them, are never idle.
    #[arg(long, env = "PUSHNOTE_IDLE_TIMEOUT", default_value_t = DEFAULT_IDLE_TIMEOUT_SECS)]
    pub idle_timeout: u64,

    /// Seconds a request's body may take to arrive, from the end of its headers (POST
    /// /publish, and the SockJS send endpoints xhr_send and jsonp_send); a slower one is
    /// answered 408. While a body is coming, its connection is among the first closed when
    /// file descriptors run out: it holds no session.
    #[arg(long, env = "PUSHNOTE_BODY_TIMEOUT", default_value_t = DEFAULT_BODY_TIMEOUT_SECS)]
    pub body_timeout: u64,

    /// Seconds shutdown waits for sessions to take their close frames.
    #[arg(long, env = "PUSHNOTE_SHUTDOWN_GRACE", default_value_t = DEFAULT_SHUTDOWN_GRACE_SECS)]
    pub shutdown_grace: u64,

    /// With --single or --broker: serve POST /publish on the HTTP port for apps that cannot link
    /// ZeroMQ or Redis (into the server's own bus, or into Redis), with this key (Authorization: Bearer KEY, as strong as --secret; docs/PROTOCOL.md §2a).
    /// With a forwarder, publish to its --http instead. Prefer the environment variable.
    #[arg(long, env = "PUSHNOTE_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,

    /// With --single or --broker: the most recent messages kept per topic (the broadcasts, each
    /// user, each channel), so that a page that comes back is given what it missed
    /// (docs/PROTOCOL.md §6, "Positions and recovery"); 0 keeps none, and positions are
    /// refused (with --broker, at least 1; every server of one Redis should give the same).
    #[arg(long, env = "PUSHNOTE_HISTORY_SIZE", default_value_t = DEFAULT_HISTORY_SIZE)]
    pub history_size: usize,

    /// With --single or --broker: seconds a message is kept for recovery.
    #[arg(long, env = "PUSHNOTE_HISTORY_TTL", default_value_t = DEFAULT_HISTORY_TTL_SECS)]
    pub history_ttl: u64,

    /// With --single: take confirmed publishes at this ZeroMQ endpoint (a ROUTER socket, for
    /// example tcp://127.0.0.1:8004; a port of * picks a free one, printed at start), each
    /// answered with the positions the history gave its messages (docs/PROTOCOL.md §2b).
    /// Needs the history (--history-size above 0). Off when not given.
    #[arg(long, env = "PUSHNOTE_CONFIRM")]
    pub confirm: Option<String>,

    /// With --confirm: requests held per app before its connection is not read, and replies
    /// held for an app that does not read them (past it, dropped and counted).
    #[arg(long, env = "PUSHNOTE_CONFIRM_HWM", default_value_t = DEFAULT_CONFIRM_HWM)]
    pub confirm_hwm: i32,

    /// With --single: MiB the history may take in all, by estimate (a message counts twice the
    /// length of its two forms, bare and with its position, plus 272 bytes); past it, the
    /// oldest messages of any topic are dropped first.
    #[arg(long, env = "PUSHNOTE_HISTORY_MEMORY", default_value_t = DEFAULT_HISTORY_MEMORY_MIB)]
    pub history_memory: usize,

    /// With a forwarder: MiB of kept messages that the forwarder's answers to this server's
    /// recovery requests may hold here at once (each answer at most --queue-bytes). An answer
    /// that would pass it gives none, and the page is told "busy" (docs/PROTOCOL.md §6);
    /// counted and logged at most once a second.
    #[arg(long, env = "PUSHNOTE_RECOVERY_MEMORY", default_value_t = DEFAULT_RECOVERY_MEMORY_MIB)]
    pub recovery_memory: usize,

    #[command(flatten)]
    pub log: pushnote_cli::LogFlags,
}

/// Seconds of a flag that must be at least one.
fn seconds(flag: &str, value: u64) -> Result<Duration, String> {
    if value == 0 {
        return Err(format!("--{flag} must be at least 1 second"));
    }
    Ok(Duration::from_secs(value))
}

impl Flags {
    /// Refuses the secrets and key given that anyone could guess (`pushnote::secret`): an
    /// empty `--secret`, a placeholder such as `change-me`, a short or repetitive one. The
    /// binary exits with its own code for these, so that a service manager does not restart
    /// it in a loop.
    pub fn check_keys(&self) -> Result<(), String> {
        use pushnote::secret::check_flag;
        if let Some(secret) = &self.secret {
            check_flag("--secret", "PUSHNOTE_SECRET", secret).map_err(|e| {
                if secret.is_empty() {
                    format!("{e}; or leave it out to serve broadcasts and public channels only")
                } else {
                    e
                }
            })?;
        }
        for (i, old) in self.old_secrets.iter().enumerate() {
            let flag = format!("--old-secrets' secret {}", i + 1);
            check_flag(&flag, "PUSHNOTE_OLD_SECRETS", old)?;
        }
        match self.api_key.as_deref() {
            None | Some("") => Ok(()),
            Some(key) => check_flag("--api-key", "PUSHNOTE_API_KEY", key),
        }
    }

    /// The server's configuration, or what is wrong with the flags.
    pub fn config(&self) -> Result<ServerConfig, String> {
        self.check_keys()?;
        let (mode, default_endpoint) = if self.broker.is_some() {
            (BusMode::Redis, "")
        } else if self.single {
            (BusMode::Bind, pushnote::DEFAULT_PUBLISH_ENDPOINT)
        } else {
            (BusMode::Connect, pushnote::DEFAULT_SUBSCRIBE_ENDPOINT)
        };
        let endpoint = self.mq_socket.as_deref().unwrap_or(default_endpoint);
        let mut config = ServerConfig::new(endpoint, mode);
        if let Some(url) = self.broker.as_deref() {
            let endpoint = pushnote::redis_endpoint::RedisEndpoint::parse(url)
                .map_err(|e| format!("--broker: {e}"))?;
            if endpoint.reach == pushnote::redis_endpoint::Reach::Tls {
                // A CA file that cannot be read stops the server now, not every reconnection.
                pushnote::redis_tls::config(endpoint.ca.as_deref())
                    .map_err(|e| format!("--broker: TLS: {e}"))?;
            }
            if self.history_size == 0 {
                return Err("--history-size must be at least 1 with --broker".into());
            }
            if self.broker_prefix.is_empty() {
                return Err("--broker-prefix must not be empty".into());
            }
            config.bus_endpoint = endpoint.to_string();
            config.broker = Some(BrokerConfig {
                url: url.to_owned(),
                endpoint,
                prefix: self.broker_prefix.clone(),
                history_size: self.history_size,
                history_ttl: seconds("history-ttl", self.history_ttl)?.as_secs(),
                topic_idle: pushnote_history::history::DEFAULT_IDLE_SECS,
            });
        }
        config.route = normalize_route(&self.route)?;
        config.tokens = match self.secret.as_deref() {
            None if self.opaque_tokens => {
                return Err(
                    "--opaque-tokens needs --secret (or PUSHNOTE_SECRET): the bus \
                            carries a hash of each opaque token keyed with it"
                        .to_owned(),
                )
            }
            None => None,
            Some(secret) => {
                let signer = Signer::with_salt(secret, &self.salt, &self.old_secrets)
                    .map_err(|e| format!("--secret/--old-secrets: {e}"))?;
                Some(TokenPolicy {
                    signer,
                    max_age: (self.token_max_age > 0)
                        .then(|| Duration::from_secs(self.token_max_age)),
                    max_skew: Duration::from_secs(self.token_max_skew),
                    opaque: self.opaque_tokens,
                })
            }
        };
        config.sockjs.heartbeat_interval = seconds("heartbeat", self.heartbeat)?;
        config.sockjs.disconnect_delay = seconds("disconnect-delay", self.disconnect_delay)?;
        config.sockjs.response_limit = self.response_limit.max(1);
        config.sockjs.cookie_needed = self.cookie_needed;
        config.sockjs.websocket = !self.disable_websocket;
        config.sockjs.origins =
            sockjs::Origins::list(&self.origins).map_err(|e| format!("--origins: {e}"))?;
        config.sockjs.sockjs_url = self.sockjs_url.clone();
        config.sockjs.max_request_bytes = self.max_request_bytes.max(1);
        config.sockjs.max_message_bytes = self.max_message_bytes;
        config.sockjs.queue.max_messages = self.queue_messages.max(1);
        config.sockjs.queue.max_bytes = self.queue_bytes.max(1);
        config.sockjs.max_sessions_per_connection = self.max_sessions_per_connection.max(1);
        config.sockjs.sessions_per_address =
            (self.session_rate_per_address > 0).then(|| sockjs::Rate {
                per_second: self.session_rate_per_address,
                burst: self
                    .session_rate_per_address
                    .saturating_mul(SESSION_BURST_SECONDS),
            });
        config.sockjs.trusted_proxies = sockjs::Proxies::list(&self.trusted_proxies)
            .map_err(|e| format!("--trusted-proxies: {e}"))?;
        config.max_bus_message_bytes = self.max_bus_message_bytes;
        if !(0.0..=3600.0).contains(&self.max_lag) {
            return Err("--max-lag must be between 0 (no bound) and 3600 seconds".into());
        }
        config.max_lag = (self.max_lag > 0.0).then(|| Duration::from_secs_f64(self.max_lag));
        config.limits = Limits {
            max_sessions: self.max_sessions,
            max_sessions_per_user: self.max_sessions_per_user,
            max_subscribe_attempts: self.max_subscribe_attempts,
            max_channels: self.max_channels,
            max_server_channels: self.max_server_channels,
        };
        config.demo_sockjs_url = self.demo.then(|| self.sockjs_url.clone());
        config.metrics = self.metrics;
        config.shutdown_grace = Duration::from_secs(self.shutdown_grace);
        config.header_timeout = seconds("header-timeout", self.header_timeout)?;
        config.idle_timeout = seconds("idle-timeout", self.idle_timeout)?;
        config.body_timeout = seconds("body-timeout", self.body_timeout)?;
        config.sockjs.body_timeout = config.body_timeout;
        config.api_key = match self.api_key.as_deref() {
            None | Some("") => None,
            Some(_) if !self.single && self.broker.is_none() => {
                return Err(
                    "--api-key serves POST /publish with --single or --broker only: \
                            with a forwarder, publish over HTTP to pushnote-mq --http"
                        .into(),
                )
            }
            Some(key) => Some(key.to_owned()),
        };
        config.recovery_memory = self.recovery_memory.saturating_mul(1 << 20);
        if !(0.1..=3600.0).contains(&self.presence_timeout) {
            return Err("--presence-timeout must be between 0.1 and 3600 seconds".into());
        }
        if !(1..=10_000).contains(&self.presence_interval) {
            return Err("--presence-interval must be between 1 and 10000 milliseconds".into());
        }
        config.presence = PresenceConfig {
            max_members: self.presence_max_members,
            max_info_bytes: self.presence_max_info,
            max_channels: self.presence_max_channels,
            max_known: self.presence_max_known,
            interval: Duration::from_millis(self.presence_interval),
            timeout: Duration::from_secs_f64(self.presence_timeout),
        };
        if let Some(history) = &mut config.history {
            if self.history_size == 0 || self.history_memory == 0 {
                config.history = None;
            } else {
                history.messages = self.history_size;
                history.age = seconds("history-ttl", self.history_ttl)?;
                history.bytes = self.history_memory.saturating_mul(1 << 20);
            }
        }
        if let Some(endpoint) = self.confirm.as_deref() {
            if !self.single {
                return Err(
                    "--confirm takes confirmed publishes with --single only: with a \
                            forwarder, use pushnote-mq --confirm; on Redis every publish is \
                            confirmed"
                        .into(),
                );
            }
            if config.history.is_none() {
                return Err("--confirm needs the history (--history-size and \
                            --history-memory above 0): a confirmation is the position the \
                            history gave the message"
                    .into());
            }
            if self.confirm_hwm < 1 {
                return Err("--confirm-hwm must be at least 1".into());
            }
            config.confirm = Some(ConfirmConfig {
                endpoint: endpoint.to_owned(),
                hwm: self.confirm_hwm,
            });
        }
        Ok(config)
    }

    /// Where to listen: [`Listen::Everywhere`] for an empty `--address`, or the address given.
    pub fn listen(&self) -> Result<Listen, String> {
        listen(&self.address, self.port)
    }
}

/// Where the server listens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listen {
    /// Every interface, IPv4 and IPv6: one dual-stack socket on `[::]`, or `0.0.0.0` where the
    /// machine has no IPv6.
    Everywhere(u16),
    /// One address; `[::]` is dual-stack too, `0.0.0.0` IPv4 only.
    At(SocketAddr),
}

impl Listen {
    /// The address to bind first.
    pub fn address(self) -> SocketAddr {
        match self {
            Listen::Everywhere(port) => SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port),
            Listen::At(address) => address,
        }
    }

    /// The address to bind when [`Listen::address`] cannot be, because the machine has no
    /// IPv6.
    pub fn fallback(self) -> Option<SocketAddr> {
        match self {
            Listen::Everywhere(port) => {
                Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port))
            }
            Listen::At(_) => None,
        }
    }
}

/// Reads `--address` (an IP address, IPv6 with or without brackets, or empty for every
/// interface) and `--port`.
pub fn listen(address: &str, port: u16) -> Result<Listen, String> {
    if address.is_empty() {
        return Ok(Listen::Everywhere(port));
    }
    let host = address
        .strip_prefix('[')
        .and_then(|a| a.strip_suffix(']'))
        .unwrap_or(address);
    let ip: IpAddr = host.parse().map_err(|_| {
        format!("--address {address:?} is not an IP address (such as 127.0.0.1 or ::1)")
    })?;
    Ok(Listen::At(SocketAddr::new(ip, port)))
}

/// `/sockjs`, `sockjs` and `/sockjs/` all mean `/sockjs`; `/` is refused, as the route needs
/// a path of its own beside the demo page and metrics.
pub fn normalize_route(route: &str) -> Result<String, String> {
    let trimmed = route.trim_matches('/');
    if trimmed.is_empty() {
        return Err("--route must be a path such as /sockjs".into());
    }
    Ok(format!("/{trimmed}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn flags(args: &[&str]) -> Flags {
        Flags::try_parse_from(std::iter::once("pushnote-server").chain(args.iter().copied()))
            .unwrap()
    }

    fn refusal(args: &[&str]) -> String {
        flags(args).config().unwrap_err()
    }

    #[test]
    fn the_flags_defaults_are_the_library_defaults() {
        let from_flags = flags(&[]).config().unwrap();
        let library = ServerConfig::new(pushnote::DEFAULT_SUBSCRIBE_ENDPOINT, BusMode::Connect);
        assert_eq!(format!("{from_flags:?}"), format!("{library:?}"));
        let single = flags(&["-S"]).config().unwrap();
        assert_eq!(single.bus_endpoint, pushnote::DEFAULT_PUBLISH_ENDPOINT);
        assert_eq!(single.bus_mode, BusMode::Bind);
    }

    #[test]
    fn zero_seconds_are_refused_where_they_cannot_work() {
        for flag in [
            "heartbeat",
            "disconnect-delay",
            "header-timeout",
            "idle-timeout",
        ] {
            let e = refusal(&[&format!("--{flag}"), "0"]);
            assert_eq!(e, format!("--{flag} must be at least 1 second"));
        }
    }

    #[test]
    fn max_lag_takes_decimals_and_zero_means_no_bound() {
        let lag = |v: &str| flags(&["--max-lag", v]).config().unwrap().max_lag;
        assert_eq!(lag("0.5"), Some(Duration::from_millis(500)));
        assert_eq!(lag("0"), None);
        for bad in ["-1", "NaN", "3601", "inf"] {
            let e = refusal(&[&format!("--max-lag={bad}")]);
            assert!(e.contains("--max-lag"), "{bad}: {e}");
        }
    }

    #[test]
    fn routes_are_normalized_and_the_root_is_refused() {
        for route in ["/sockjs", "sockjs", "/sockjs/", "//sockjs//"] {
            assert_eq!(normalize_route(route).unwrap(), "/sockjs");
        }
        assert_eq!(normalize_route("/a/b").unwrap(), "/a/b");
        for route in ["/", "", "//"] {
            assert!(
                refusal(&["--route", route]).contains("--route"),
                "{route:?}"
            );
        }
    }

    #[test]
    fn addresses_with_and_without_brackets() {
        assert_eq!(listen("", 80).unwrap(), Listen::Everywhere(80));
        assert_eq!(
            listen("", 80).unwrap().address(),
            "[::]:80".parse().unwrap(),
            "every interface is IPv6 and IPv4"
        );
        assert_eq!(
            listen("", 80).unwrap().fallback(),
            Some("0.0.0.0:80".parse().unwrap())
        );
        assert_eq!(
            listen("[::1]", 80).unwrap(),
            Listen::At("[::1]:80".parse().unwrap())
        );
        assert_eq!(
            listen("::1", 80).unwrap(),
            Listen::At("[::1]:80".parse().unwrap())
        );
        assert_eq!(
            listen("127.0.0.1", 0).unwrap().address(),
            "127.0.0.1:0".parse().unwrap()
        );
        assert_eq!(listen("127.0.0.1", 0).unwrap().fallback(), None);
        for bad in ["localhost", "[127.0.0.1", "::1]", "1.2.3.4:80", "[::1]:80"] {
            assert!(
                listen(bad, 80).unwrap_err().contains("not an IP address"),
                "{bad}"
            );
        }
    }

    #[test]
    fn tokens_need_a_secret_and_take_their_ages() {
        const STRONG: &str = "a-secret-of-32-characters-7Hq2Lx";
        assert!(flags(&[]).config().unwrap().tokens.is_none());
        for (weak, why) in [
            ("", "empty"),
            ("s", "1 characters"),
            ("change-me", "placeholder"),
        ] {
            let e = refusal(&["--secret", weak]);
            assert!(e.contains("--secret") && e.contains(why), "{weak:?}: {e}");
            let e = refusal(&["--secret", STRONG, "--old-secrets", weak]);
            assert!(
                e.contains("--old-secrets") && e.contains(why),
                "{weak:?}: {e}"
            );
            if !weak.is_empty() {
                let e = refusal(&["-S", "--api-key", weak]);
                assert!(e.contains("--api-key") && e.contains(why), "{weak:?}: {e}");
            }
        }
        let policy = flags(&["--secret", STRONG, "--token-max-age", "0"])
            .config()
            .unwrap()
            .tokens
            .unwrap();
        assert_eq!(policy.max_age, None, "0 accepts any age");
        assert_eq!(
            policy.max_skew,
            Duration::from_secs(DEFAULT_TOKEN_MAX_SKEW_SECS)
        );
        assert_eq!(policy.opaque, DEFAULT_OPAQUE_TOKENS);
    }

    #[test]
    fn opaque_tokens_are_opt_in_and_need_a_secret() {
        const STRONG: &str = "a-secret-of-32-characters-7Hq2Lx";
        let on = flags(&["--secret", STRONG, "--opaque-tokens"])
            .config()
            .unwrap();
        assert!(on.tokens.unwrap().opaque);
        let e = refusal(&["--opaque-tokens"]);
        assert!(e.contains("--opaque-tokens needs --secret"), "{e}");
    }
}
