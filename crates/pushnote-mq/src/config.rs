//! The forwarder's configuration: its flags, their defaults (each written once, here), and the
//! checks that turn flags into a [`ForwarderConfig`].

use std::net::SocketAddr;
use std::time::Duration;

use pushnote_history::history::{
    Limits, DEFAULT_AGE_SECS, DEFAULT_IDLE_SECS, DEFAULT_MEMORY_MIB, DEFAULT_MESSAGES,
    TOPIC_OVERHEAD,
};

/// Messages held per connected app or server before ZeroMQ drops new ones.
pub const DEFAULT_HWM: i32 = 100_000;
/// The longest topic accepted, up to and including its NUL: a user topic with the longest user
/// id takes 262 bytes, so this leaves room for longer names of other kinds.
pub const DEFAULT_MAX_TOPIC_BYTES: usize = 1024;
/// The largest message accepted (topic and body), the same as a server's default.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = pushnote::DEFAULT_MAX_MESSAGE_BYTES;
/// Confirmed-publish requests held per connected app, read or not yet read, before ZeroMQ
/// stops reading that app's connection (and replies held for it before they are dropped).
pub const DEFAULT_CONFIRM_HWM: i32 = 1000;
/// MiB of kept messages recovery answers may replay a second, over every server.
pub const DEFAULT_RECOVERY_RATE_MIB: u64 = 8;
/// Seconds a client may take to send a request's headers, as on a server.
pub const DEFAULT_HEADER_TIMEOUT_SECS: u64 = pushnote_cli::connections::DEFAULT_HEADER_TIMEOUT_SECS;
/// Seconds an HTTP connection may stay open with no request in progress, as on a server.
pub const DEFAULT_IDLE_TIMEOUT_SECS: u64 = pushnote_cli::connections::DEFAULT_IDLE_TIMEOUT_SECS;
/// Seconds a `POST /publish` body may take to arrive, as on a server.
pub const DEFAULT_BODY_TIMEOUT_SECS: u64 = pushnote_cli::body::DEFAULT_BODY_TIMEOUT_SECS;
/// The share of the process's file descriptors (`ulimit -n`) the HTTP listeners may hold
/// together by default, as a divisor: half. The other half is the bus's: every app and server
/// connected takes one, and ZeroMQ a few of its own.
pub const HTTP_SHARE_OF_DESCRIPTORS: usize = 2;
/// The descriptor limit assumed where it cannot be read.
const ASSUMED_DESCRIPTOR_LIMIT: usize = 1024;

/// HTTP connections the `--http` and `--metrics` listeners hold together at most, by default:
/// half this process's descriptor limit.
pub fn default_max_http_connections() -> usize {
    let limit = pushnote_cli::connections::descriptor_limit().unwrap_or(ASSUMED_DESCRIPTOR_LIMIT);
    (limit / HTTP_SHARE_OF_DESCRIPTORS).max(1)
}

/// The HTTP side's bounds: `--http` and `--metrics` together.
#[derive(Clone, Copy, Debug)]
pub struct HttpLimits {
    /// How long a request's headers may take, and an idle connection stay open.
    pub timeouts: pushnote_cli::connections::Timeouts,
    /// How long a `POST /publish` body may take to arrive (then 408).
    pub body_timeout: Duration,
    /// Connections open at once over both listeners; past it, the one idle the longest gives
    /// way, or the new one is closed. The descriptors left are the bus's.
    pub max_connections: usize,
}

impl Default for HttpLimits {
    fn default() -> HttpLimits {
        HttpLimits {
            timeouts: pushnote_cli::connections::Timeouts::default(),
            body_timeout: Duration::from_secs(DEFAULT_BODY_TIMEOUT_SECS),
            max_connections: default_max_http_connections(),
        }
    }
}

/// Settings of a forwarder.
#[derive(Clone, Debug)]
pub struct ForwarderConfig {
    /// Where apps publish (bound).
    pub sub_endpoint: String,
    /// Where servers subscribe (bound).
    pub pub_endpoint: String,
    /// Where apps publish and are told their messages' positions (bound), if anywhere.
    pub confirm_endpoint: Option<String>,
    /// Confirm requests held per connected app (and replies held for it).
    pub confirm_hwm: i32,
    /// Messages held per connected peer and direction before ZeroMQ drops new ones.
    pub high_water_mark: i32,
    /// The longest topic, up to and including its NUL; longer ones are dropped and counted.
    pub max_topic_bytes: usize,
    /// The largest message, topic and body; larger ones are dropped and counted.
    pub max_message_bytes: usize,
    /// Each topic's positions and recent messages, kept for servers that ask.
    pub history: Limits,
    /// Bytes of kept messages recovery answers may replay a second (and at once), over every
    /// server; an answer past it gives none and says the forwarder is busy.
    pub recovery_rate: u64,
    /// The bounds of `--http` and `--metrics`.
    pub http: HttpLimits,
    /// The Redis to publish into instead of to servers (`--broker`), if any.
    pub broker: Option<pushnote::redis_endpoint::RedisEndpoint>,
    /// The prefix of pushnote's keys in that Redis.
    pub broker_prefix: String,
    /// How long a server may go unheard before its presence members leave the forwarder's
    /// view (`GET /presence`).
    pub presence_timeout: Duration,
    /// Presence members the forwarder keeps, of every channel and server.
    pub presence_max_known: usize,
}

impl ForwarderConfig {
    /// A configuration with the defaults of `pushnote-mq`'s flags on these endpoints.
    pub fn new(sub_endpoint: &str, pub_endpoint: &str) -> ForwarderConfig {
        ForwarderConfig {
            sub_endpoint: sub_endpoint.into(),
            pub_endpoint: pub_endpoint.into(),
            confirm_endpoint: None,
            confirm_hwm: DEFAULT_CONFIRM_HWM,
            high_water_mark: DEFAULT_HWM,
            max_topic_bytes: DEFAULT_MAX_TOPIC_BYTES,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            history: Limits::default(),
            recovery_rate: DEFAULT_RECOVERY_RATE_MIB << 20,
            http: HttpLimits::default(),
            broker: None,
            broker_prefix: pushnote::redis_script::DEFAULT_PREFIX.to_owned(),
            presence_timeout: Duration::from_secs_f64(pushnote_presence::DEFAULT_TIMEOUT_SECS),
            presence_max_known: pushnote_presence::DEFAULT_MAX_KNOWN,
        }
    }
}

/// Forwards notifications from apps to pushnote-server instances.
///
/// Apps publish into the SUB side; every server subscribes at the PUB side and receives the
/// broadcasts and the messages of the users connected to it. Both sides bind. Each topic's
/// messages get a position on the way (so a server counts those ZeroMQ dropped before
/// reaching it, its pushnote_bus_messages_lost_total), and its last ones are kept, so that a
/// page that comes back is given what it missed (docs/PROTOCOL.md §6). Every flag has an
/// environment-variable fall-back, shown in brackets.
#[derive(clap::Parser, Debug)]
#[command(name = "pushnote-mq", version)]
pub struct Flags {
    /// Where apps publish (bound). A port of `*` picks a free one.
    #[arg(short = 's', long = "sub", env = "PUSHNOTE_MQ_SUB", default_value = pushnote::DEFAULT_PUBLISH_ENDPOINT)]
    pub sub: String,

    /// Where servers subscribe (bound). A port of `*` picks a free one.
    #[arg(short = 'p', long = "pub", env = "PUSHNOTE_MQ_PUB", default_value = pushnote::DEFAULT_SUBSCRIBE_ENDPOINT)]
    pub publish: String,

    /// Where apps publish confirmed messages (bound), and are told each message's position
    /// once the forwarder holds it (docs/PROTOCOL.md §2b), for example tcp://127.0.0.1:8004.
    /// A port of `*` picks a free one. Off when not given.
    #[arg(long, env = "PUSHNOTE_MQ_CONFIRM", value_name = "ENDPOINT")]
    pub confirm: Option<String>,

    /// Confirm requests held per connected app before the forwarder stops reading that app's
    /// connection until it has answered some (and replies held for an app that does not read
    /// them; past it, they are dropped and counted).
    #[arg(long, env = "PUSHNOTE_MQ_CONFIRM_HWM", default_value_t = DEFAULT_CONFIRM_HWM)]
    pub confirm_hwm: i32,

    /// Messages held per connected app or server before ZeroMQ drops new ones (a burst
    /// larger than this toward one slow server is lost for that server, which counts it).
    #[arg(long, env = "PUSHNOTE_MQ_HWM", default_value_t = DEFAULT_HWM)]
    pub hwm: i32,

    /// The longest topic accepted, in bytes up to and including its NUL; messages with longer
    /// topics are dropped, counted and logged (at most once a second).
    #[arg(long, env = "PUSHNOTE_MQ_MAX_TOPIC_BYTES", default_value_t = DEFAULT_MAX_TOPIC_BYTES)]
    pub max_topic_bytes: usize,

    /// The largest message accepted, in bytes (topic and body); larger ones are dropped,
    /// counted and logged (at most once a second).
    #[arg(long, env = "PUSHNOTE_MQ_MAX_MESSAGE_BYTES", default_value_t = DEFAULT_MAX_MESSAGE_BYTES)]
    pub max_message_bytes: usize,

    /// The most recent messages kept per topic (the broadcasts, each user, each channel) for
    /// pages that come back (docs/PROTOCOL.md §6, "Positions and recovery"); 0 keeps none,
    /// and positions are still given.
    #[arg(long, env = "PUSHNOTE_MQ_HISTORY_SIZE", default_value_t = DEFAULT_MESSAGES)]
    pub history_size: usize,

    /// Seconds a message is kept for recovery.
    #[arg(long, env = "PUSHNOTE_MQ_HISTORY_TTL", default_value_t = DEFAULT_AGE_SECS)]
    pub history_ttl: u64,

    /// MiB the topics and their kept messages may take in all, by estimate (a message counts
    /// its body and about 80 bytes, a topic its name and about 128); past it, the oldest
    /// messages of any topic go first, then topics that keep none (a forgotten topic starts a
    /// new epoch).
    #[arg(long, env = "PUSHNOTE_MQ_HISTORY_MEMORY", default_value_t = DEFAULT_MEMORY_MIB)]
    pub history_memory: usize,

    /// Seconds a topic that keeps no message is remembered (its epoch and last position), so
    /// that a page that saw its last message is told it missed nothing.
    #[arg(long, env = "PUSHNOTE_MQ_TOPIC_IDLE", default_value_t = DEFAULT_IDLE_SECS)]
    pub topic_idle: u64,

    /// MiB of kept messages that answers to servers' recovery requests may replay a second,
    /// over every server (and at most that at once). An answer that would pass it gives none
    /// and the page is told "busy" (docs/PROTOCOL.md §6); counted and logged at most once a
    /// second.
    #[arg(long, env = "PUSHNOTE_MQ_RECOVERY_RATE", default_value_t = DEFAULT_RECOVERY_RATE_MIB)]
    pub recovery_rate: u64,

    /// Seconds (decimals allowed) a server may go unheard before its presence members leave
    /// the forwarder's view, which GET /presence on --http answers with; the servers' own
    /// --presence-timeout should be the same.
    #[arg(long, env = "PUSHNOTE_MQ_PRESENCE_TIMEOUT", default_value_t = pushnote_presence::DEFAULT_TIMEOUT_SECS)]
    pub presence_timeout: f64,

    /// Presence members the forwarder keeps for GET /presence, of every channel and server;
    /// what servers announce past it is not kept (it still reaches the other servers).
    #[arg(long, env = "PUSHNOTE_MQ_PRESENCE_MAX_KNOWN", default_value_t = pushnote_presence::DEFAULT_MAX_KNOWN)]
    pub presence_max_known: usize,

    /// Serve Prometheus metrics at http://ADDR/metrics (for example 127.0.0.1:9101). Off
    /// when not given.
    #[arg(long, env = "PUSHNOTE_MQ_METRICS", value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,

    /// Serve POST http://ADDR/publish, for apps that cannot link ZeroMQ: a JSON message or a
    /// batch, each to everyone, to users or to a channel (docs/PROTOCOL.md §2a). Needs
    /// --api-key. Off when not given.
    #[arg(
        long,
        env = "PUSHNOTE_MQ_HTTP",
        value_name = "ADDR",
        requires = "api_key"
    )]
    pub http: Option<SocketAddr>,

    /// The key POST /publish requests must carry (Authorization: Bearer KEY). At least 32
    /// characters, 8 of them distinct, and no placeholder (change-me, …): a weak key stops the
    /// forwarder at start with exit code 78. Prefer the environment variable: command lines
    /// are visible to other local users.
    #[arg(long, env = "PUSHNOTE_MQ_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,

    /// Seconds an HTTP client (--http, --metrics) may take to send a request's headers; slower
    /// connections are closed.
    #[arg(long, env = "PUSHNOTE_MQ_HEADER_TIMEOUT", default_value_t = DEFAULT_HEADER_TIMEOUT_SECS)]
    pub header_timeout: u64,

    /// Seconds an HTTP connection (--http, --metrics) may stay open with no request in
    /// progress (an idle keep-alive connection) before it is closed.
    #[arg(long, env = "PUSHNOTE_MQ_IDLE_TIMEOUT", default_value_t = DEFAULT_IDLE_TIMEOUT_SECS)]
    pub idle_timeout: u64,

    /// Seconds a POST /publish body may take to arrive, from the end of its headers; a slower
    /// one is answered 408.
    #[arg(long, env = "PUSHNOTE_MQ_BODY_TIMEOUT", default_value_t = DEFAULT_BODY_TIMEOUT_SECS)]
    pub body_timeout: u64,

    /// HTTP connections --http and --metrics hold together at most, so that the bus keeps the
    /// other descriptors (every app and server connected takes one). Past it, the connection
    /// idle the longest (or sending a body the longest) is closed for the new one; with none,
    /// the new one is closed at once. Both are counted. [default: half of ulimit -n]
    #[arg(long, env = "PUSHNOTE_MQ_MAX_HTTP_CONNECTIONS", value_name = "N")]
    pub max_http_connections: Option<usize>,

    /// Publish what apps send (on --sub and --confirm) into this Redis, for servers started
    /// with --broker (redis://[:password@]host[:port][/db]), instead of to servers on --pub:
    /// apps that publish over ZeroMQ keep working with servers on the Redis engine
    /// (docs/PROTOCOL.md §2c). Confirmed publishes are answered with Redis' positions. Off
    /// when not given.
    #[arg(
        long,
        env = "PUSHNOTE_MQ_BROKER",
        value_name = "URL",
        hide_env_values = true
    )]
    pub broker: Option<String>,

    /// The prefix of pushnote's keys and channels in the --broker Redis: the servers'
    /// --broker-prefix.
    #[arg(
        long,
        env = "PUSHNOTE_MQ_BROKER_PREFIX",
        default_value = pushnote::redis_script::DEFAULT_PREFIX
    )]
    pub broker_prefix: String,

    #[command(flatten)]
    pub log: pushnote_cli::LogFlags,
}

impl Flags {
    /// Refuses an API key anyone could guess (`pushnote::secret`): a placeholder such as
    /// `change-me`, a short or repetitive one. The binary exits with its own code for it, so
    /// that a service manager does not restart it in a loop.
    pub fn check_keys(&self) -> Result<(), String> {
        match self.api_key.as_deref() {
            None => Ok(()),
            Some("") if self.http.is_none() => Ok(()),
            Some(key) => pushnote::secret::check_flag("--api-key", "PUSHNOTE_MQ_API_KEY", key),
        }
    }

    /// The forwarder's configuration, or what is wrong with the flags.
    pub fn config(&self) -> Result<ForwarderConfig, String> {
        self.check_keys()?;
        if self.hwm < 1 {
            return Err("--hwm must be at least 1".into());
        }
        if self.confirm_hwm < 1 {
            return Err("--confirm-hwm must be at least 1".into());
        }
        if self.max_topic_bytes < 2 {
            return Err("--max-topic-bytes must be at least 2 (a name and its NUL)".into());
        }
        if self.max_message_bytes <= self.max_topic_bytes {
            return Err("--max-message-bytes must be larger than --max-topic-bytes".into());
        }
        let bytes = self.history_memory.saturating_mul(1 << 20);
        if bytes < self.max_topic_bytes + TOPIC_OVERHEAD {
            return Err("--history-memory must be at least 1 (MiB)".into());
        }
        if self.history_ttl == 0 {
            return Err("--history-ttl must be at least 1 second".into());
        }
        if self.topic_idle == 0 {
            return Err("--topic-idle must be at least 1 second".into());
        }
        if self.recovery_rate == 0 {
            return Err("--recovery-rate must be at least 1 (MiB a second)".into());
        }
        let seconds = |flag: &str, value: u64| {
            (value > 0)
                .then(|| Duration::from_secs(value))
                .ok_or_else(|| format!("--{flag} must be at least 1 second"))
        };
        let http = HttpLimits {
            timeouts: pushnote_cli::connections::Timeouts {
                header: seconds("header-timeout", self.header_timeout)?,
                idle: seconds("idle-timeout", self.idle_timeout)?,
            },
            body_timeout: seconds("body-timeout", self.body_timeout)?,
            max_connections: match self.max_http_connections {
                Some(0) => return Err("--max-http-connections must be at least 1".into()),
                Some(n) => n,
                None => default_max_http_connections(),
            },
        };
        let broker = match &self.broker {
            None => None,
            Some(url) => Some(
                pushnote::redis_endpoint::RedisEndpoint::parse(url)
                    .map_err(|e| format!("--broker: {e}"))?,
            ),
        };
        if !(0.1..=3600.0).contains(&self.presence_timeout) {
            return Err("--presence-timeout must be between 0.1 and 3600 seconds".into());
        }
        Ok(ForwarderConfig {
            presence_timeout: Duration::from_secs_f64(self.presence_timeout),
            presence_max_known: self.presence_max_known,
            broker,
            broker_prefix: self.broker_prefix.clone(),
            sub_endpoint: self.sub.clone(),
            pub_endpoint: self.publish.clone(),
            confirm_endpoint: self.confirm.clone(),
            confirm_hwm: self.confirm_hwm,
            high_water_mark: self.hwm,
            max_topic_bytes: self.max_topic_bytes,
            max_message_bytes: self.max_message_bytes,
            history: Limits {
                messages: self.history_size,
                age: Duration::from_secs(self.history_ttl),
                bytes,
                idle: Duration::from_secs(self.topic_idle),
            },
            recovery_rate: self.recovery_rate.saturating_mul(1 << 20),
            http,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn config(args: &[&str]) -> Result<ForwarderConfig, String> {
        let flags =
            Flags::try_parse_from(std::iter::once("pushnote-mq").chain(args.iter().copied()))
                .map_err(|e| e.to_string())?;
        flags.config()
    }

    #[test]
    fn the_flags_defaults_are_the_library_defaults() {
        let from_flags = config(&[]).unwrap();
        let library = ForwarderConfig::new(
            pushnote::DEFAULT_PUBLISH_ENDPOINT,
            pushnote::DEFAULT_SUBSCRIBE_ENDPOINT,
        );
        assert_eq!(format!("{from_flags:?}"), format!("{library:?}"));
    }

    #[test]
    fn bounds_that_cannot_work_are_refused() {
        for (args, expected) in [
            (&["--hwm", "0"][..], "--hwm"),
            (&["--confirm-hwm", "0"], "--confirm-hwm"),
            (&["--max-topic-bytes", "1"], "--max-topic-bytes"),
            (&["--max-message-bytes", "1024"], "--max-message-bytes"),
            (&["--history-memory", "0"], "--history-memory"),
            (&["--history-ttl", "0"], "--history-ttl"),
            (&["--topic-idle", "0"], "--topic-idle"),
            (&["--recovery-rate", "0"], "--recovery-rate"),
            (&["--metrics", "localhost"], "--metrics"),
            (&["--idle-timeout", "0"], "--idle-timeout"),
            (&["--header-timeout", "0"], "--header-timeout"),
            (&["--body-timeout", "0"], "--body-timeout"),
            (&["--max-http-connections", "0"], "--max-http-connections"),
            (&["--broker", "redis://:x@h:notaport"], "--broker"),
        ] {
            let e = config(args).unwrap_err();
            assert!(e.contains(expected), "{args:?}: {e}");
        }
        assert!(config(&["--metrics", "127.0.0.1:0"]).is_ok());
        assert!(config(&["--metrics", "[::1]:9101"]).is_ok());
    }
}
