//! `fanout`: N WebSocket sessions, and broadcasts to all of them, at a fixed rate or as fast as
//! the slowest session takes them. Works against any SockJS server that publishes what its bus
//! receives: pushnote-server (through the client crate) or the peers (the original pushnote bus
//! format). Reports session connects/s, the server's RSS per idle session, deliveries/s,
//! latency quantiles from the timestamps inside the messages, and every message lost,
//! duplicated or reordered.
//!
//! With `--channel`, every session joins that channel instead and the messages are published
//! on it (`Publisher::publish`): the same load through pushnote's channels, each message
//! arriving as the `data` of the channel's envelope (`scan.rs`).
//!
//! With `--presence-channel`, every session also joins that presence channel, each as its own
//! user, before the load: the same load on a server that holds a presence channel of all its
//! sessions (`presence.rs` measures presence itself).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use rand::Rng;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;

use crate::reader::{self, Handover};
use crate::scan::Scan;
use crate::session::{now_micros, source, Report, Session, Shared};
use crate::xhr::XhrSession;
use crate::{cpu_secs, endpoints, rss_kib};

/// How the load publishes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BusFormat {
    /// pushnote's `[topic, body]` through the client crate (pushnote-mq's app side, or a
    /// `--single` pushnote-server).
    Pushnote,
    /// The original pushnote's one JSON frame `{"name":"notify_all","data":…}` from a PUB
    /// socket that connects (the peers of ../shared/peers, or pushnote-mq feeding one).
    Original,
}

/// The SockJS transports the load speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Transport {
    Websocket,
    XhrStreaming,
}

/// An open session on either transport.
enum Conn {
    Ws(Session),
    Xhr(XhrSession),
    /// A session in a presence channel, read until the load starts (`Session::drain`).
    Draining(JoinHandle<anyhow::Result<Session>>),
}

#[derive(clap::Args)]
pub struct Fanout {
    /// The server's SockJS URL.
    #[arg(long, default_value = "http://127.0.0.1:8080/sockjs")]
    url: String,
    /// Where to publish.
    #[arg(long, default_value = pushnote::DEFAULT_PUBLISH_ENDPOINT)]
    bus: String,
    /// The bus message format the server understands.
    #[arg(long, value_enum, default_value_t = BusFormat::Pushnote)]
    bus_format: BusFormat,
    /// WebSocket sessions to open (at most about 19,500 per load process: the descriptor
    /// limit).
    #[arg(long, default_value_t = 10_000)]
    sessions: usize,
    /// Broadcasts per second. Without it, broadcasts go out as fast as the slowest session
    /// takes them, at most --window ahead of it: the maximum rate without loss.
    #[arg(long)]
    rate: Option<f64>,
    /// Broadcasts in flight ahead of the slowest session, without --rate.
    #[arg(long, default_value_t = 32)]
    window: u64,
    /// Seconds of load.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Handshakes in progress at once while connecting.
    #[arg(long, default_value_t = 200)]
    concurrency: usize,
    /// Seconds the sessions stay idle before the load (the idle RSS is read at the end).
    #[arg(long, default_value_t = 2)]
    settle: u64,
    /// The server's process id, for its memory (VmRSS from /proc).
    #[arg(long)]
    pid: Option<u32>,
    /// Targeted messages instead of broadcasts: session i subscribes as user `u<i>`, and each
    /// message goes to one user picked at random (needs --rate). The latency is then that of a
    /// notification to one user among --sessions.
    #[arg(long, requires = "rate")]
    targeted: bool,
    /// Every session joins this channel (and subscribes as no user), and the messages are
    /// published on it, event `tick`, instead of broadcast: pushnote's channels under the same
    /// load (--bus-format pushnote, WebSocket). A `private-` channel is joined with a channel
    /// token signed with --secret.
    #[arg(long, conflicts_with = "targeted")]
    channel: Option<String>,
    /// Adds a field of this many bytes to each broadcast's or user message's data (`"p":"xx…"`,
    /// after the sequence number and time): a broadcast as large on the wire as a channel's
    /// message in its envelope, to tell the envelope's bytes from the channel's routing.
    #[arg(long, default_value_t = 0, conflicts_with = "channel")]
    pad: usize,
    /// Every session also joins this presence channel (`presence-…`) before the load, session
    /// i as user `u<i>` with info `{"name":"user <i>"}` (a presence token signed with
    /// --secret); the messages are published as without it. The server's
    /// --presence-max-members must be at least --sessions.
    #[arg(long, conflicts_with = "targeted")]
    presence_channel: Option<String>,
    /// The secret pushnote tokens are signed with (the server's --secret), for --targeted with
    /// --bus-format pushnote (and private channels); the original format's tokens are the user
    /// names themselves.
    #[arg(long, env = "PUSHNOTE_SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// The one-letter key of this load's sequence numbers. Loads sharing servers (one per
    /// server of a scale-out run) each take their own and count only their own messages.
    #[arg(long, default_value_t = 'b', value_parser = stream_key)]
    stream: char,
    /// The SockJS transport of the sessions. xhr-streaming reads one long chunked response
    /// per session, opened again whenever the server ends it at its response limit.
    #[arg(long, value_enum, default_value_t = Transport::Websocket)]
    transport: Transport,
    /// A name for this run in the JSON line (for example the server's).
    #[arg(long, default_value = "")]
    label: String,
}

/// How long the load waits, after publishing, for a server still delivering.
const DRAIN_LIMIT: Duration = Duration::from_secs(30);

/// What every reader shares with the publisher: one past the highest broadcast each session
/// has received, for the flow control of the maximum-rate mode.
type Marks = Arc<Vec<AtomicU64>>;

pub async fn run(args: Fanout) -> anyhow::Result<()> {
    let (server, ws_url) = endpoints(&args.url)?;
    let shared = Arc::new(Shared::default());
    let rss_start = rss_kib(args.pid);

    if (args.targeted || args.channel.is_some()) && args.transport != Transport::Websocket {
        anyhow::bail!("--targeted and --channel work over --transport websocket only");
    }
    if args.channel.is_some() && args.bus_format != BusFormat::Pushnote {
        anyhow::bail!("--channel needs --bus-format pushnote: the original bus has no channels");
    }
    let transport = args.transport;
    let private = args
        .channel
        .as_deref()
        .is_some_and(pushnote::wire::is_private);
    if args.presence_channel.is_some() && args.transport != Transport::Websocket {
        anyhow::bail!("--presence-channel works over --transport websocket only");
    }
    let signs = args.targeted || private || args.presence_channel.is_some();
    let signer = match (&args.secret, signs, args.bus_format) {
        (Some(secret), true, BusFormat::Pushnote) => Some(pushnote::Signer::new(secret)?),
        (None, true, BusFormat::Pushnote) => anyhow::bail!(
            "--targeted, private and presence channels need --secret (or PUSHNOTE_SECRET) to \
             sign tokens"
        ),
        _ => None,
    };
    // What each session sends to join the channel, if any: its name, and a private one's token.
    let join = match (&args.channel, &signer) {
        (Some(c), Some(signer)) if private => {
            Some((c.clone(), Some(signer.channel_token(c, None)?)))
        }
        (Some(c), _) => {
            pushnote::wire::check_channel(c)
                .map_err(|e| anyhow::anyhow!("--channel {c:?}: {e}"))?;
            Some((c.clone(), None))
        }
        (None, _) => None,
    };

    // Sessions in a presence channel are read from their join until the load starts.
    let (drained_tx, drained_rx) = watch::channel(false);

    // 1. Connect, `concurrency` handshakes at a time.
    eprintln!("connecting {} sessions…", args.sessions);
    let started = Instant::now();
    let gate = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let mut opening = Vec::with_capacity(args.sessions);
    for i in 0..args.sessions {
        let url = ws_url(i);
        let gate = gate.clone();
        // pushnote tokens are signed and answered; the original protocol's are the user names.
        let (signed, plain) = match (&signer, args.targeted) {
            (Some(signer), true) => (Some(signer.tokenize(format!("u{i}"))?), None),
            (None, true) => (None, Some(format!("u{i}"))),
            (_, false) => (None, None),
        };
        let join = join.clone();
        let presence = match (&args.presence_channel, &signer) {
            (Some(c), Some(signer)) => {
                let info = format!(r#"{{"name":"user {i}"}}"#);
                Some((
                    c.clone(),
                    signer.presence_token(c, &format!("u{i}"), Some(&info))?,
                ))
            }
            _ => None,
        };
        let drained = drained_rx.clone();
        opening.push(tokio::spawn(async move {
            let _permit = gate.acquire().await;
            if transport == Transport::XhrStreaming {
                return anyhow::Ok(Conn::Xhr(XhrSession::open(server, &url, source(i)).await?));
            }
            let mut s = Session::open(server, &url, source(i), signed.as_deref()).await?;
            if let Some(token) = plain {
                s.send_subscribe(&token).await?;
            }
            if let Some((channel, token)) = join {
                s.join(&channel, token.as_deref()).await?;
            }
            if let Some((channel, token)) = presence {
                s.join(&channel, Some(&token)).await?;
                return anyhow::Ok(Conn::Draining(tokio::spawn(s.drain(drained))));
            }
            anyhow::Ok(Conn::Ws(s))
        }));
    }
    let mut sessions = Vec::with_capacity(args.sessions);
    for (i, o) in opening.into_iter().enumerate() {
        sessions.push(
            o.await?
                .with_context(|| format!("session {i} failed to open"))?,
        );
    }
    let connect_secs = started.elapsed().as_secs_f64();
    let connects_per_s = args.sessions as f64 / connect_secs;
    eprintln!(
        "connected {} sessions in {connect_secs:.2} s ({connects_per_s:.0}/s)",
        args.sessions
    );
    // Subscriptions reach the forwarder a moment after the server's reply (PROTOCOL.md §6).
    let routed = args.targeted || args.channel.is_some();
    let settle = Duration::from_secs(args.settle.max(u64::from(routed)));
    tokio::time::sleep(settle).await;
    let _ = drained_tx.send(true);
    for (i, s) in sessions.iter_mut().enumerate() {
        if let Conn::Draining(d) = s {
            let session = d
                .await?
                .with_context(|| format!("session {i} ended in the presence channel"))?;
            *s = Conn::Ws(session);
        }
    }
    let rss_idle = rss_kib(args.pid);
    let per_session = rss_start
        .zip(rss_idle)
        .map(|(a, b)| b.saturating_sub(a) as f64 / args.sessions.max(1) as f64);

    // 2. Readers.
    let scan = match args.channel {
        Some(_) => Scan::envelope(args.stream as u8),
        None => Scan::bare(args.stream as u8),
    };
    let marks: Marks = Arc::new((0..args.sessions).map(|_| AtomicU64::new(0)).collect());
    let readers = Readers::start(sessions, scan, &shared, &marks)?;

    // 3. The publisher, on a thread of its own (ZeroMQ sockets block).
    let publish = Publish::connect(
        args.bus_format,
        &args.bus,
        args.stream,
        args.channel.clone(),
        args.pad,
    )?;
    if routed {
        // A new publisher learns the servers' subscriptions (one per user, or the channel's)
        // as they arrive, and ZeroMQ takes them in only while the socket is used; until then
        // it drops messages to the topics it has not heard of. Use it for 2 s with messages to
        // nobody.
        publish.warm_up(Duration::from_secs(2));
    }
    let duration = Duration::from_secs(args.duration);
    let (rate, window) = (args.rate, args.window);
    let users = args.targeted.then_some(args.sessions);
    let marks2 = marks.clone();
    let publisher =
        std::thread::spawn(move || publish.load(rate, window, users, duration, &marks2));

    let load_start = Instant::now();
    let cpu_start = cpu_secs(args.pid);
    let mut last = shared.deliveries.load(Ordering::Relaxed);
    let mut last_at = Instant::now();
    let mut rss_load = None;
    while load_start.elapsed() < duration {
        tokio::time::sleep(Duration::from_secs(1).min(duration)).await;
        let now = shared.deliveries.load(Ordering::Relaxed);
        let rate = (now - last) as f64 / last_at.elapsed().as_secs_f64();
        rss_load = rss_kib(args.pid).or(rss_load);
        eprintln!(
            "t={:>3}s  deliveries/s={rate:>9.0}  rss={} KiB",
            load_start.elapsed().as_secs(),
            rss_load.map_or("-".into(), |r| r.to_string())
        );
        (last, last_at) = (now, Instant::now());
    }
    let Sent {
        total: sent,
        refused,
        per_user,
    } = publisher
        .join()
        .map_err(|_| anyhow::anyhow!("the publisher thread panicked"))??;
    // What session i should receive: every broadcast, or every message to its user.
    let expected = |i: usize| per_user.as_ref().map_or(sent, |p| p[i]);
    let publish_secs = load_start.elapsed().as_secs_f64();
    // The server's CPU while the load ran, as a share of one core.
    let server_cpu_percent = cpu_start
        .zip(cpu_secs(args.pid))
        .map(|(a, b)| (b - a) / publish_secs * 100.0);

    // 4. Let what is in flight arrive: as long as deliveries keep coming (a slow server can be
    // many seconds behind), until 5 s pass without one or DRAIN_LIMIT in all; what has not
    // arrived by then counts as lost. Then stop and count.
    let mut progress = (shared.deliveries.load(Ordering::Relaxed), Instant::now());
    let drain = Instant::now();
    while marks
        .iter()
        .enumerate()
        .any(|(i, m)| m.load(Ordering::Relaxed) < expected(i))
        && progress.1.elapsed() < Duration::from_secs(5)
        && drain.elapsed() < DRAIN_LIMIT
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = shared.deliveries.load(Ordering::Relaxed);
        if now != progress.0 {
            progress = (now, Instant::now());
        }
    }
    // The rate counts until the last delivery: a server still delivering after the load
    // stopped is that much slower than the publishing rate.
    let load_secs = progress
        .1
        .duration_since(load_start)
        .as_secs_f64()
        .max(publish_secs);
    let (mut lost, mut duplicated, mut reordered, mut ended) = (0, 0, 0, 0);
    for (i, r) in readers.stop().await?.into_iter().enumerate() {
        lost += r.broadcasts.lost(expected(i));
        duplicated += r.broadcasts.duplicated;
        reordered += r.broadcasts.reordered;
        ended += usize::from(r.ended.is_some());
    }
    let delivered = shared.deliveries.load(Ordering::Relaxed);
    let q = |p| shared.latency.quantile(p);
    let summary = serde_json::json!({
        "mode": match (args.targeted, &args.channel) {
            (true, _) => "targeted",
            (false, Some(_)) => "channel",
            (false, None) => "fanout",
        },
        "channel": args.channel,
        "presence_channel": args.presence_channel,
        "transport": format!("{:?}", args.transport).to_lowercase(),
        "label": args.label,
        "sessions": args.sessions,
        "rate": args.rate,
        "duration_s": publish_secs,
        "delivering_s": load_secs,
        "connects_per_s": connects_per_s,
        "messages_sent": sent,
        "publish_refused": refused,
        "deliveries": delivered,
        "deliveries_per_s": delivered as f64 / load_secs,
        "latency_p50_us": q(0.5),
        "latency_p90_us": q(0.9),
        "latency_p99_us": q(0.99),
        "latency_max_us": shared.latency.max(),
        "lost": lost,
        "duplicated": duplicated,
        "reordered": reordered,
        "sessions_ended": ended,
        "rss_start_kib": rss_start,
        "rss_idle_kib": rss_idle,
        "rss_per_idle_session_kib": per_session,
        "rss_load_kib": rss_load,
        "server_cpu_percent": server_cpu_percent,
    });
    println!("{summary}");
    eprintln!(
        "fanout {}: {} sessions, {sent} messages in {publish_secs:.1} s, delivered in {load_secs:.1} s = {:.0} deliveries/s; \
         latency p50 {} / p90 {} / p99 {} / max {} µs; lost {lost}, duplicated {duplicated}, \
         reordered {reordered}; {connects_per_s:.0} connects/s; RSS {} KiB per idle session",
        args.label,
        args.sessions,
        delivered as f64 / load_secs,
        fmt(q(0.5)),
        fmt(q(0.9)),
        fmt(q(0.99)),
        shared.latency.max(),
        per_session.map_or("-".into(), |k| format!("{k:.2}")),
    );
    if lost + duplicated + reordered > 0 || ended > 0 || refused > 0 {
        anyhow::bail!("not clean: {lost} lost, {duplicated} duplicated, {reordered} reordered, {ended} sessions ended, {refused} publishes refused");
    }
    Ok(())
}

/// Sessions' reports, each with the session's number.
type Reports = Vec<(usize, Report)>;

/// What reads the sessions during the load: for WebSocket, one thread per core without the
/// async runtime (`reader.rs`); for xhr-streaming, a task per session.
struct Readers {
    stop: Arc<AtomicBool>,
    stop_tasks: watch::Sender<bool>,
    running: Vec<JoinHandle<anyhow::Result<Reports>>>,
    sessions: usize,
}

impl Readers {
    fn start(
        sessions: Vec<Conn>,
        scan: Scan,
        shared: &Arc<Shared>,
        marks: &Marks,
    ) -> anyhow::Result<Readers> {
        let count = sessions.len();
        let stop = Arc::new(AtomicBool::new(false));
        let (stop_tasks, stop_rx) = watch::channel(false);
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut shares: Vec<Vec<Handover>> = (0..threads).map(|_| Vec::new()).collect();
        let mut running = Vec::new();
        for (index, conn) in sessions.into_iter().enumerate() {
            match conn {
                Conn::Ws(s) => {
                    let (stream, unread, mask) = s.into_parts();
                    shares[index % threads].push(Handover {
                        index,
                        stream: stream.into_std()?,
                        unread,
                        mask,
                    });
                }
                Conn::Draining(_) => anyhow::bail!("a session still draining"),
                Conn::Xhr(s) => {
                    let (shared, marks) = (shared.clone(), marks.clone());
                    let received = move |seq: u64| {
                        marks[index].fetch_max(seq + 1, Ordering::Relaxed);
                    };
                    let counting = s.count(scan, shared, received, stop_rx.clone());
                    running.push(tokio::spawn(
                        async move { Ok(vec![(index, counting.await)]) },
                    ));
                }
            }
        }
        for share in shares.into_iter().filter(|s| !s.is_empty()) {
            let (shared, marks, stop) = (shared.clone(), marks.clone(), stop.clone());
            running.push(tokio::task::spawn_blocking(move || {
                let received = |index: usize, seq: u64| {
                    marks[index].fetch_max(seq + 1, Ordering::Relaxed);
                };
                Ok(reader::read(share, scan, &shared, &received, &stop)?)
            }));
        }
        Ok(Readers {
            stop,
            stop_tasks,
            running,
            sessions: count,
        })
    }

    /// Stops reading and returns each session's report, in session order.
    async fn stop(self) -> anyhow::Result<Vec<Report>> {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.stop_tasks.send(true);
        let mut reports: Vec<Option<Report>> = (0..self.sessions).map(|_| None).collect();
        for r in self.running {
            for (index, report) in r.await?? {
                reports[index] = Some(report);
            }
        }
        Ok(reports.into_iter().map(Option::unwrap_or_default).collect())
    }
}

fn fmt(v: Option<u64>) -> String {
    v.map_or("-".into(), |v| v.to_string())
}

/// The event name of the load's messages on a channel.
const EVENT: &str = "tick";

/// A publisher in one of the two bus formats.
enum Publish {
    /// The client crate, the stream key, and the channel the load publishes on, if any.
    Pushnote(pushnote::Publisher, char, Option<String>),
    /// The client crate, the stream key, and the padding added to every message's data.
    Padded(pushnote::Publisher, char, String),
    Original {
        socket: zmq::Socket,
        _ctx: zmq::Context,
        stream: char,
    },
}

impl Publish {
    fn connect(
        format: BusFormat,
        endpoint: &str,
        stream: char,
        channel: Option<String>,
        pad: usize,
    ) -> anyhow::Result<Publish> {
        Ok(match format {
            BusFormat::Pushnote if pad > 0 => {
                let pad = "x".repeat(pad);
                Publish::Padded(pushnote::Publisher::connect(endpoint)?, stream, pad)
            }
            BusFormat::Pushnote => {
                Publish::Pushnote(pushnote::Publisher::connect(endpoint)?, stream, channel)
            }
            BusFormat::Original => {
                let ctx = zmq::Context::new();
                let socket = ctx.socket(zmq::PUB)?;
                socket.set_sndhwm(0)?;
                socket.connect(endpoint)?;
                // A PUB socket drops what it sends before the connection is up.
                std::thread::sleep(Duration::from_secs(1));
                Publish::Original {
                    socket,
                    _ctx: ctx,
                    stream,
                }
            }
        })
    }

    /// Publishes to a user no session has, for `time`, so the socket takes in what the
    /// servers send it (their subscriptions).
    fn warm_up(&self, time: Duration) {
        let start = Instant::now();
        while start.elapsed() < time {
            if let Publish::Pushnote(p, _, _) | Publish::Padded(p, _, _) = self {
                let _ = p.notify(&serde_json::json!(null), ["pushnote-bench-nobody"]);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Sends message `seq` to everyone (or the channel), or to user `u<user>`; false when
    /// refused.
    fn send(&self, seq: u64, user: Option<usize>) -> bool {
        let t = now_micros();
        match (self, user) {
            (Publish::Pushnote(p, k, Some(channel)), None) => {
                // The sequence number first: the envelope's scan looks for it there.
                let data = format!(r#"{{"{k}":{seq},"t":{t}}}"#);
                serde_json::value::RawValue::from_string(data)
                    .is_ok_and(|data| p.publish(channel, EVENT, &data).is_ok())
            }
            (Publish::Pushnote(p, k, None), None) => p
                .notify_all(&serde_json::json!({k.to_string(): seq, "t": t}))
                .is_ok(),
            (Publish::Padded(p, k, pad), user) => {
                // The sequence number first, as in the others.
                let data = format!(r#"{{"{k}":{seq},"t":{t},"p":"{pad}"}}"#);
                serde_json::value::RawValue::from_string(data).is_ok_and(|data| match user {
                    None => p.notify_all(&data).is_ok(),
                    Some(u) => p.notify(&data, [format!("u{u}")]).is_ok(),
                })
            }
            (Publish::Pushnote(p, k, _), Some(u)) => p
                .notify(
                    &serde_json::json!({k.to_string(): seq, "t": t}),
                    [format!("u{u}")],
                )
                .is_ok(),
            (Publish::Original { socket, stream, .. }, None) => {
                let body =
                    format!(r#"{{"name":"notify_all","data":{{"{stream}":{seq},"t":{t}}}}}"#);
                socket.send(body.as_bytes(), 0).is_ok()
            }
            (Publish::Original { socket, stream, .. }, Some(u)) => {
                let body = format!(
                    r#"{{"name":"notify","data":{{"{stream}":{seq},"t":{t}}},"recipients":["u{u}"]}}"#
                );
                socket.send(body.as_bytes(), 0).is_ok()
            }
        }
    }

    /// Publishes for `duration`, at `rate` per second or (without one) at most `window` ahead
    /// of the slowest session: broadcasts, or with `users` messages to one random user each.
    fn load(
        self,
        rate: Option<f64>,
        window: u64,
        users: Option<usize>,
        duration: Duration,
        marks: &[AtomicU64],
    ) -> anyhow::Result<Sent> {
        let start = Instant::now();
        let (mut sent, mut refused) = (0u64, 0u64);
        let mut per_user = users.map(|n| vec![0u64; n]);
        let mut rng = rand::thread_rng();
        let mut send_one = |sent: &mut u64, refused: &mut u64| {
            let ok = match &mut per_user {
                None => self.send(*sent, None),
                Some(per_user) => {
                    let u = rng.gen_range(0..per_user.len());
                    let ok = self.send(per_user[u], Some(u));
                    per_user[u] += u64::from(ok);
                    ok
                }
            };
            if ok {
                *sent += 1;
            } else {
                *refused += 1;
            }
        };
        let mut due = 0f64;
        let mut last = start;
        while start.elapsed() < duration {
            match rate {
                Some(rate) => {
                    let now = Instant::now();
                    due += now.duration_since(last).as_secs_f64() * rate;
                    last = now;
                    while due >= 1.0 {
                        due -= 1.0;
                        send_one(&mut sent, &mut refused);
                    }
                    // Until the next message is due, but at least 0.5 ms (faster rates go out
                    // in small bursts): the publisher shares the load's core, and waking it
                    // more often than it publishes takes time from the readers.
                    let next = Duration::from_secs_f64((1.0 - due) / rate);
                    let left = duration.saturating_sub(start.elapsed());
                    std::thread::sleep(next.max(Duration::from_micros(500)).min(left));
                }
                None => {
                    let slowest = marks.iter().map(|m| m.load(Ordering::Relaxed)).min();
                    if sent >= slowest.unwrap_or(0) + window {
                        std::thread::sleep(Duration::from_micros(100));
                        continue;
                    }
                    send_one(&mut sent, &mut refused);
                }
            }
        }
        Ok(Sent {
            total: sent,
            refused,
            per_user,
        })
    }
}

/// What the publisher sent.
struct Sent {
    total: u64,
    refused: u64,
    /// With targeted messages, how many went to each user.
    per_user: Option<Vec<u64>>,
}

/// A stream key: one ASCII letter other than `t` (the timestamp's).
fn stream_key(s: &str) -> Result<char, String> {
    match s.as_bytes() {
        [c] if c.is_ascii_alphabetic() && *c != b't' => Ok(*c as char),
        _ => Err("one ASCII letter other than t".into()),
    }
}
