//! pushnote-server: the SockJS server browsers connect to.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::builder::FalseyValueParser;
use clap::Parser;
use pushnote::Signer;
use pushnote_server::{cli, BusMode, Server, ServerConfig, TokenPolicy};

/// Pushes notifications from the bus to browsers over SockJS.
///
/// Browsers connect with the stock SockJS client at http://ADDRESS:PORT/ROUTE, receive every
/// broadcast, and after sending {"name":"subscribe","data":{"token":…}} also every message for
/// the token's user. Every flag has an environment-variable fall-back, shown in brackets.
#[derive(Parser, Debug)]
#[command(name = "pushnote-server", version)]
struct Args {
    /// The HTTP port. 0 picks a free one (printed at start).
    #[arg(short = 'p', long, env = "PUSHNOTE_PORT", default_value_t = 8080)]
    port: u16,

    /// The address to listen on. Empty means every interface.
    #[arg(short = 'a', long, env = "PUSHNOTE_ADDRESS", default_value = "")]
    address: String,

    /// Connections the kernel completes and holds until the server accepts them (the listen
    /// backlog). The kernel caps it at net.core.somaxconn. A connect arriving when it is full
    /// is dropped and retried by the client a second later, so bursts of connects need room.
    #[arg(long, env = "PUSHNOTE_BACKLOG", default_value_t = 4096)]
    backlog: u32,

    /// The path SockJS is served under.
    #[arg(short = 'r', long, env = "PUSHNOTE_ROUTE", default_value = "/sockjs")]
    route: String,

    /// The bus: the forwarder's server-facing endpoint [default: tcp://127.0.0.1:8001], or with
    /// --single the endpoint to bind for apps [default: tcp://127.0.0.1:8002].
    #[arg(
        short = 's',
        long = "mq_socket",
        alias = "mq-socket",
        env = "PUSHNOTE_MQ_SOCKET"
    )]
    mq_socket: Option<String>,

    /// Bind the bus and take apps' messages directly: no forwarder, one server.
    #[arg(short = 'S', long, env = "PUSHNOTE_SINGLE", value_parser = FalseyValueParser::new())]
    single: bool,

    /// The secret tokens are signed with (the app's secret). Without it, the server serves
    /// broadcasts only and refuses every subscribe. Prefer the environment variable: command
    /// lines are visible to other local users.
    #[arg(long, env = "PUSHNOTE_SECRET", hide_env_values = true)]
    secret: Option<String>,

    /// Old secrets still accepted while keys rotate, comma-separated.
    #[arg(
        long,
        env = "PUSHNOTE_OLD_SECRETS",
        hide_env_values = true,
        value_delimiter = ','
    )]
    old_secrets: Vec<String>,

    /// The salt tokens are signed with; the app must use the same one.
    #[arg(long, env = "PUSHNOTE_SALT", default_value = pushnote::DEFAULT_SALT)]
    salt: String,

    /// The oldest token accepted, in seconds. 0 accepts any age.
    #[arg(long, env = "PUSHNOTE_TOKEN_MAX_AGE", default_value_t = 86_400)]
    token_max_age: u64,

    /// Seconds without traffic after which a session is sent a heartbeat frame. Keep it
    /// below the idle timeout of every proxy between browsers and the server.
    #[arg(long, env = "PUSHNOTE_HEARTBEAT", default_value_t = 25)]
    heartbeat: u64,

    /// Seconds a session of a polling or streaming HTTP transport survives without a
    /// receiving request before it is closed (clients that vanished are reaped after this).
    #[arg(long, env = "PUSHNOTE_DISCONNECT_DELAY", default_value_t = 5)]
    disconnect_delay: u64,

    /// Bytes one streaming response (xhr-streaming, eventsource, htmlfile) carries before the
    /// server ends it and the client opens the next; bounds what browsers keep in memory.
    #[arg(long, env = "PUSHNOTE_RESPONSE_LIMIT", default_value_t = 128 * 1024)]
    response_limit: usize,

    /// Tell clients a JSESSIONID cookie is needed and set it on session responses, for load
    /// balancers that keep a session on one server by that cookie (sticky sessions).
    #[arg(long, env = "PUSHNOTE_COOKIE_NEEDED", value_parser = FalseyValueParser::new())]
    cookie_needed: bool,

    /// Browser origins allowed to open sessions, comma-separated: * (any), null, or
    /// scheme://host[:port], where host may be *.example.com and port *. Pages from other
    /// origins get 403; same-origin requests and clients that send no Origin always pass.
    #[arg(
        long,
        env = "PUSHNOTE_ORIGINS",
        value_delimiter = ',',
        default_value = "*"
    )]
    origins: Vec<String>,

    /// Turn the WebSocket transports off, for networks whose proxies break WebSocket: clients
    /// are told so by /info and use streaming or polling HTTP instead.
    #[arg(
        long,
        env = "PUSHNOTE_DISABLE_WEBSOCKET",
        value_parser = FalseyValueParser::new()
    )]
    disable_websocket: bool,

    /// The largest message a client may send, in bytes; larger closes the session (3009).
    #[arg(long, env = "PUSHNOTE_MAX_MESSAGE_BYTES", default_value_t = 64 * 1024)]
    max_message_bytes: usize,

    /// The largest body the send endpoints (xhr_send, jsonp_send) read, in bytes; larger gets
    /// 413 and closes the session (3009).
    #[arg(long, env = "PUSHNOTE_MAX_REQUEST_BYTES", default_value_t = 256 * 1024)]
    max_request_bytes: usize,

    /// Messages one session may have waiting before it is closed as too slow (3008).
    #[arg(long, env = "PUSHNOTE_QUEUE_MESSAGES", default_value_t = 1_000)]
    queue_messages: usize,

    /// Bytes one session may have waiting before it is closed as too slow (3008).
    #[arg(long, env = "PUSHNOTE_QUEUE_BYTES", default_value_t = 8 * 1024 * 1024)]
    queue_bytes: usize,

    /// Sessions this server holds at most; one more is closed at once with 3003 "Server full"
    /// (clients reconnect, to another server behind a load balancer).
    #[arg(long, env = "PUSHNOTE_MAX_SESSIONS", default_value_t = 100_000)]
    max_sessions: usize,

    /// Sessions one user may have subscribed on this server; one more subscribe is refused
    /// with too_many_sessions and that session keeps broadcasts.
    #[arg(long, env = "PUSHNOTE_MAX_SESSIONS_PER_USER", default_value_t = 100)]
    max_sessions_per_user: usize,

    /// Subscribe requests one session may make; one more is refused with too_many_attempts and
    /// the session is closed with 3011 (token guessing costs a reconnect).
    #[arg(long, env = "PUSHNOTE_MAX_SUBSCRIBE_ATTEMPTS", default_value_t = 32)]
    max_subscribe_attempts: u32,

    /// The largest bus message accepted, in bytes; larger ones are dropped and counted.
    #[arg(long, env = "PUSHNOTE_MAX_BUS_MESSAGE_BYTES", default_value_t = 1024 * 1024)]
    max_bus_message_bytes: usize,

    /// Serve a demo page at / that subscribes with a pasted token and shows notifications.
    #[arg(long, env = "PUSHNOTE_DEMO", value_parser = FalseyValueParser::new())]
    demo: bool,

    /// The SockJS client script loaded by /iframe.html (the iframe transports) and the demo
    /// page. Use the version your pages use; point it at your own copy to avoid the CDN.
    #[arg(long, env = "PUSHNOTE_SOCKJS_URL", default_value = sockjs::DEFAULT_SOCKJS_URL)]
    sockjs_url: String,

    /// Serve Prometheus metrics at /metrics.
    #[arg(long, env = "PUSHNOTE_METRICS", value_parser = FalseyValueParser::new())]
    metrics: bool,

    /// Seconds a client may take to send a request's headers; slower connections (slow-loris
    /// attacks, dead clients) are closed.
    #[arg(long, env = "PUSHNOTE_HEADER_TIMEOUT", default_value_t = 10)]
    header_timeout: u64,

    /// Seconds shutdown waits for sessions to take their close frames.
    #[arg(long, env = "PUSHNOTE_SHUTDOWN_GRACE", default_value_t = 5)]
    shutdown_grace: u64,

    /// Log filter: error, warn, info, debug or trace, optionally per module.
    #[arg(long, env = "PUSHNOTE_LOG", default_value = "info")]
    log: String,
}

fn config(args: &Args) -> Result<ServerConfig, String> {
    let (mode, default_endpoint) = if args.single {
        (BusMode::Bind, pushnote::DEFAULT_PUBLISH_ENDPOINT)
    } else {
        (BusMode::Connect, pushnote::DEFAULT_SUBSCRIBE_ENDPOINT)
    };
    let endpoint = args.mq_socket.as_deref().unwrap_or(default_endpoint);
    let mut config = ServerConfig::new(endpoint, mode);
    config.route = normalize_route(&args.route)?;
    config.tokens = match args.secret.as_deref() {
        None | Some("") => None,
        Some(secret) => {
            let signer = Signer::with_salt(secret, &args.salt, &args.old_secrets)
                .map_err(|e| format!("--secret/--old-secrets: {e}"))?;
            Some(TokenPolicy {
                signer,
                max_age: (args.token_max_age > 0).then(|| Duration::from_secs(args.token_max_age)),
            })
        }
    };
    if args.heartbeat == 0 {
        return Err("--heartbeat must be at least 1 second".into());
    }
    if args.disconnect_delay == 0 {
        return Err("--disconnect-delay must be at least 1 second".into());
    }
    config.sockjs.heartbeat_interval = Duration::from_secs(args.heartbeat);
    config.sockjs.disconnect_delay = Duration::from_secs(args.disconnect_delay);
    config.sockjs.response_limit = args.response_limit.max(1);
    config.sockjs.cookie_needed = args.cookie_needed;
    config.sockjs.websocket = !args.disable_websocket;
    config.sockjs.origins =
        sockjs::Origins::list(&args.origins).map_err(|e| format!("--origins: {e}"))?;
    config.sockjs.sockjs_url = args.sockjs_url.clone();
    config.sockjs.max_request_bytes = args.max_request_bytes.max(1);
    config.sockjs.max_message_bytes = args.max_message_bytes;
    config.sockjs.queue.max_messages = args.queue_messages.max(1);
    config.sockjs.queue.max_bytes = args.queue_bytes.max(1);
    config.max_bus_message_bytes = args.max_bus_message_bytes;
    config.limits = pushnote_server::Limits {
        max_sessions: args.max_sessions,
        max_sessions_per_user: args.max_sessions_per_user,
        max_subscribe_attempts: args.max_subscribe_attempts,
    };
    config.demo_sockjs_url = args.demo.then(|| args.sockjs_url.clone());
    config.metrics = args.metrics;
    config.shutdown_grace = Duration::from_secs(args.shutdown_grace);
    if args.header_timeout == 0 {
        return Err("--header-timeout must be at least 1 second".into());
    }
    config.header_timeout = Duration::from_secs(args.header_timeout);
    Ok(config)
}

/// `/sockjs`, `sockjs` and `/sockjs/` all mean `/sockjs`; `/` is refused, as the route needs
/// a path of its own beside the demo page and metrics.
fn normalize_route(route: &str) -> Result<String, String> {
    let trimmed = route.trim_matches('/');
    if trimmed.is_empty() {
        return Err("--route must be a path such as /sockjs".into());
    }
    Ok(format!("/{trimmed}"))
}

fn listen_address(args: &Args) -> Result<SocketAddr, String> {
    let host = if args.address.is_empty() {
        "0.0.0.0"
    } else {
        args.address.as_str()
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let ip: std::net::IpAddr = host
        .parse()
        .map_err(|_| format!("--address {host:?} is not an IP address"))?;
    Ok(SocketAddr::new(ip, args.port))
}

fn main() -> ExitCode {
    let args = Args::parse();
    cli::init_logging(&args.log);
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pushnote-server: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), String> {
    let config = config(&args)?;
    let address = listen_address(&args)?;
    let backlog = args.backlog;
    let runtime = tokio::runtime::Runtime::new().map_err(|e| format!("cannot start: {e}"))?;
    runtime.block_on(async move {
        let listener = pushnote_server::server::listen(address, backlog)
            .map_err(|e| format!("cannot listen on {address}: {e}"))?;
        let local = listener
            .local_addr()
            .map_err(|e| format!("cannot listen on {address}: {e}"))?;
        if config.tokens.is_none() {
            tracing::warn!(
                "no token secret (--secret or PUSHNOTE_SECRET): serving broadcasts only, \
                 every subscribe is refused"
            );
        }
        let route = config.route.clone();
        let mode = config.bus_mode;
        let demo = config.demo_sockjs_url.is_some();
        let server = Server::new(config).map_err(|e| format!("cannot open the bus: {e}"))?;
        match mode {
            BusMode::Bind => cli::say(format_args!(
                "pushnote-server: apps publish to {}",
                server.bus_endpoint()
            )),
            BusMode::Connect => cli::say(format_args!(
                "pushnote-server: bus at {}",
                server.bus_endpoint()
            )),
        }
        cli::say(format_args!(
            "pushnote-server: listening on http://{local}{route}"
        ));
        if demo {
            cli::say(format_args!(
                "pushnote-server: demo page at http://{local}/"
            ));
        }
        server
            .run(listener, cli::shutdown_signal())
            .await
            .map_err(|e| e.to_string())
    })
}
