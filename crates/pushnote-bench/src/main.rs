//! pushnote-bench: load for a SockJS push server, measured from the client side.
//!
//! `soak` holds many subscribed WebSocket sessions for a long time while broadcasts and
//! targeted messages flow and other sessions connect and leave, then reports, for the sessions
//! that stayed, every message lost, duplicated or reordered, and the server's memory over time;
//! with `--overload-factor`, for a while more than the server can deliver, watching its lag
//! and overload state on `/health` (`health.rs`).
//!
//! `fanout` opens N sessions against any SockJS server and broadcasts to them at a fixed rate or
//! as fast as the slowest takes them: connects/s, RSS per idle session, deliveries/s, latency,
//! loss (`fanout.rs`).
//!
//! `presence` fills one presence channel with N members over two servers and a forwarder:
//! how long the joins take, memory per member, how long a new page waits for the member list,
//! and the bus traffic and latency of members coming and going (`presence.rs`).
//!
//! `storm` cuts sessions with positions by a server restart and measures their coming back
//! (`storm.rs`).
//!
//! `forwarder` measures pushnote-mq alone: messages/s from an app to a server, and loss
//! (`forwarder.rs`).
//!
//! `echo` and `rtt` measure the machine alone: the round trip over loopback TCP, the floor
//! under a targeted message's latency (`rtt.rs`).
//!
//! How the files divide the work: `session.rs` is one client session; `reader.rs` reads the
//! `fanout` load's WebSocket sessions once they are open, without the async runtime; `track.rs`
//! counts what sessions receive and `scan.rs` reads the load's messages out of frames (both
//! pure); this file is the command line and the soak.

mod fanout;
mod forwarder;
mod health;
mod presence;
mod reader;
mod rtt;
mod scan;
mod session;
mod storm;
mod track;
mod ws;
mod xhr;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};
use rand::Rng;
use tokio::sync::{watch, Semaphore};

use session::{now_micros, source, Report, Session, Shared};
use track::{delta, quantile};

#[derive(Parser)]
#[command(
    name = "pushnote-bench",
    version,
    about = "Load, soak and benchmarks for SockJS push servers"
)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Many sessions for a long time, with broadcasts, targeted messages and churn; reports
    /// loss, duplication and reordering for the sessions that stayed, and server RSS.
    Soak(Soak),
    /// N sessions and broadcasts to all of them, at a fixed rate or as fast as the slowest
    /// takes them; reports connects/s, RSS per idle session, deliveries/s, latency and loss.
    /// Works against pushnote-server and other SockJS servers (--bus-format original).
    Fanout(fanout::Fanout),
    /// One presence channel of N members on two servers sharing presence over a forwarder;
    /// reports the joins' time, RSS per member, the wait for the member list of a new page,
    /// and the bus messages, bytes and latency per member coming or going.
    Presence(presence::PresenceBench),
    /// Messages through pushnote-mq as fast as it moves them, from a PUB playing the app to a
    /// SUB playing a server; reports messages/s and every message lost.
    Forwarder(forwarder::ForwarderBench),
    /// Sessions with positions, each its own user, cut at once by a server restart and coming
    /// back with their positions while broadcasts and user messages flow; reports how long
    /// until every one was live again, and every message lost or duplicated.
    Storm(storm::Storm),
    /// Echoes back what each TCP connection sends, until killed: the other end of `rtt`.
    Echo(rtt::Echo),
    /// Round trips of 8 bytes through an `echo`, at a fixed rate; reports their latency. Pinned
    /// like a server and its load, this is the floor under the latency of a targeted message.
    Rtt(rtt::Rtt),
}

/// The server a load runs against, and how its apps publish and sign tokens.
#[derive(clap::Args)]
pub(crate) struct Target {
    /// The server's SockJS URL.
    #[arg(long, default_value = "http://127.0.0.1:8080/sockjs")]
    pub url: String,
    /// Where to publish (the forwarder's app side, or a --single server).
    #[arg(long, default_value = pushnote::DEFAULT_PUBLISH_ENDPOINT)]
    pub bus: String,
    /// The secret tokens are signed with (the server's --secret).
    #[arg(long, env = "PUSHNOTE_SECRET", hide_env_values = true)]
    pub secret: String,
}

#[derive(clap::Args)]
struct Soak {
    #[command(flatten)]
    target: Target,
    /// Sessions that stay connected the whole run (the ones checked for loss).
    #[arg(long, default_value_t = 10_000)]
    sessions: usize,
    /// Users the staying sessions subscribe as (session i is user i mod USERS).
    #[arg(long, default_value_t = 1_000)]
    users: usize,
    /// Seconds of load.
    #[arg(long, default_value_t = 600)]
    duration: u64,
    /// Seconds of a probe before the load, for reference: broadcasts alone as fast as the
    /// slowest session takes them (a burst: not what the mix sustains). 0: none.
    #[arg(long, default_value_t = 0)]
    probe: u64,
    /// Broadcasts per second. The default is three quarters of the mix this machine kind
    /// sustains for 10 minutes with the load generator on the same two cores
    /// (docs/BENCHMARKS.md, "Sustained rates": 32 broadcasts/s with 32,000 targeted/s,
    /// 640,000 deliveries/s, for 10,000 sessions).
    #[arg(long, default_value_t = 24.0)]
    broadcast_rate: f64,
    /// Targeted messages per second, each to one random user (the default: three quarters
    /// of the sustained mix, as many deliveries as the broadcasts make).
    #[arg(long, default_value_t = 24_000.0)]
    targeted_rate: f64,
    /// Offer this many times the rates for --overload-for seconds from --overload-at (1: no
    /// overload). What the server sheds then counts as lost.
    #[arg(long, default_value_t = 1.0)]
    overload_factor: f64,
    /// Second of the load the overload starts at.
    #[arg(long, default_value_t = 120)]
    overload_at: u64,
    /// Seconds the overload lasts.
    #[arg(long, default_value_t = 60)]
    overload_for: u64,
    /// Extra sessions connecting per second, each staying 1 to 10 s, then leaving.
    #[arg(long, default_value_t = 50)]
    churn: u32,
    /// The churning sessions do not subscribe (broadcasts only).
    #[arg(long)]
    churn_anonymous: bool,
    /// The server's process id, for its memory (VmRSS from /proc).
    #[arg(long)]
    pid: Option<u32>,
    /// Seconds between progress lines.
    #[arg(long, default_value_t = 10)]
    every: u64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match args.command {
        Command::Soak(soak) => runtime.block_on(run_soak(soak)),
        Command::Fanout(f) => runtime.block_on(fanout::run(f)),
        Command::Presence(p) => runtime.block_on(presence::run(p)),
        Command::Forwarder(f) => forwarder::run(f),
        Command::Storm(s) => runtime.block_on(storm::run(s)),
        Command::Echo(e) => rtt::echo(e),
        Command::Rtt(r) => rtt::rtt(r),
    }
}

pub(crate) fn rss_kib(pid: Option<u32>) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid?)).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The CPU time (user and system) process `pid` has used, in seconds, from `/proc/<pid>/stat`
/// (its 14th and 15th fields, in the kernel's fixed 100 ticks a second).
pub(crate) fn cpu_secs(pid: Option<u32>) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid?)).ok()?;
    // The command name (field 2) may hold spaces: count fields after its closing parenthesis.
    let mut fields = stat
        .get(stat.rfind(')')? + 1..)?
        .split_whitespace()
        .skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / 100.0)
}

/// `http://host:port/route` → the server's address and the WebSocket URL of a new session.
pub(crate) fn endpoints(url: &str) -> anyhow::Result<(SocketAddr, impl Fn(usize) -> String)> {
    let rest = url
        .strip_prefix("http://")
        .context("--url must start with http://")?;
    let (host, route) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let addr: SocketAddr = host.parse().context("--url needs an IP address and port")?;
    let base = format!("ws://{host}{}", route.trim_end_matches('/'));
    Ok((addr, move |i| {
        format!(
            "{base}/{}/s{i}x{}/websocket",
            i % 1000,
            rand::random::<u32>()
        )
    }))
}

async fn run_soak(args: Soak) -> anyhow::Result<()> {
    let (server, ws_url) = endpoints(&args.target.url)?;
    let signer = pushnote::Signer::new(&args.target.secret)?;
    let shared = Arc::new(Shared::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let rss_start = rss_kib(args.pid);

    // 1. The sessions that stay, subscribed, 200 handshakes at a time.
    eprintln!("connecting {} sessions…", args.sessions);
    let started = Instant::now();
    let gate = Arc::new(Semaphore::new(200));
    let mut opening = Vec::with_capacity(args.sessions);
    for i in 0..args.sessions {
        let url = ws_url(i);
        let token = signer.tokenize(format!("u{}", i % args.users))?;
        let gate = gate.clone();
        opening.push(tokio::spawn(async move {
            let _permit = gate.acquire().await;
            Session::open(server, &url, source(i), Some(&token)).await
        }));
    }
    let mut sessions = Vec::with_capacity(args.sessions);
    for o in opening {
        sessions.push(o.await?.context("a staying session failed to open")?);
    }
    let connect_secs = started.elapsed().as_secs_f64();
    eprintln!(
        "connected and subscribed {} sessions in {connect_secs:.1} s ({:.0}/s)",
        args.sessions,
        args.sessions as f64 / connect_secs
    );
    let rss_idle = rss_kib(args.pid);
    let marks: Arc<Vec<Arc<AtomicU64>>> = Arc::new(
        (0..args.sessions)
            .map(|_| Arc::new(AtomicU64::new(0)))
            .collect(),
    );
    let readers: Vec<_> = sessions
        .into_iter()
        .enumerate()
        .map(|(i, s)| tokio::spawn(s.run(shared.clone(), Some(marks[i].clone()), stop_rx.clone())))
        .collect();

    // 2. The publisher, on its own thread (ZeroMQ sockets block).
    let bus = Arc::new(pushnote::Publisher::connect(&args.target.bus)?);
    let users = args.users;
    let mut sent_b = 0u64;
    let mut sent_u = vec![0u64; users];

    // Subscriptions reach the forwarder a moment after the server's reply: a message for a
    // user published before that is not routed to this server. Let them settle.
    tokio::time::sleep(Duration::from_secs(1)).await;

    // 3. The probe, for reference: broadcasts as fast as the slowest staying session takes them.
    if args.probe > 0 {
        let probe = Duration::from_secs(args.probe);
        let window = 32;
        let since = Instant::now();
        let bus2 = bus.clone();
        let marks2 = marks.clone();
        let sent = tokio::task::spawn_blocking(move || {
            let mut sent = 0u64;
            while since.elapsed() < probe {
                let slowest = marks2.iter().map(|m| m.load(Ordering::Relaxed)).min();
                if sent >= slowest.unwrap_or(0) + window {
                    std::thread::sleep(Duration::from_micros(200));
                    continue;
                }
                let msg = serde_json::json!({"b": sent, "t": now_micros()});
                if bus2.notify_all(&msg).is_ok() {
                    sent += 1;
                }
            }
            sent
        })
        .await?;
        sent_b = sent;
        let max = sent as f64 / since.elapsed().as_secs_f64();
        eprintln!(
            "probe: {max:.0} broadcasts/s to {} sessions = {:.0} deliveries/s without loss \
             (broadcasts alone, in a burst)",
            args.sessions,
            max * args.sessions as f64
        );
    }
    let (broadcast_rate, targeted_rate) = (args.broadcast_rate, args.targeted_rate);
    eprintln!(
        "soak: {broadcast_rate:.1} broadcasts/s and {targeted_rate:.1} targeted/s for {} s, \
         {} sessions connecting per second beside",
        args.duration, args.churn
    );

    // 4. Churn: sessions that come and go, not checked for loss.
    let churn_stop = stop_rx.clone();
    let churn_shared = shared.clone();
    let churn_signer = signer.clone();
    let churn_rate = args.churn;
    let churn_anonymous = args.churn_anonymous;
    let churn = tokio::spawn(async move {
        if churn_rate == 0 {
            return;
        }
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(churn_rate)));
        let mut n = 1_000_000usize;
        while !*churn_stop.borrow() {
            tick.tick().await;
            n += 1;
            let url = ws_url(n);
            let user = format!("u{}", rand::thread_rng().gen_range(0..users));
            let Ok(token) = churn_signer.tokenize(user) else {
                continue;
            };
            let shared = churn_shared.clone();
            let stop = churn_stop.clone();
            tokio::spawn(async move {
                let stay = Duration::from_millis(rand::thread_rng().gen_range(1_000..10_000));
                let token = (!churn_anonymous).then_some(token);
                let Ok(s) = Session::open(server, &url, source(n), token.as_deref()).await else {
                    shared.failed.fetch_add(1, Ordering::Relaxed);
                    return;
                };
                shared.connects.fetch_add(1, Ordering::Relaxed);
                let (leave_tx, leave_rx) = watch::channel(false);
                let reading = tokio::spawn(s.run(shared.clone(), None, leave_rx));
                let mut stop = stop;
                tokio::select! {
                    () = tokio::time::sleep(stay) => {}
                    _ = stop.changed() => {}
                }
                let _ = leave_tx.send(true);
                let _ = reading.await;
                shared.leaves.fetch_add(1, Ordering::Relaxed);
            });
        }
    });

    // 5. The load, at fixed rates, with progress lines.
    let duration = Duration::from_secs(args.duration);
    let (sent_tx, sent_rx) = std::sync::mpsc::channel();
    let bus2 = bus.clone();
    let overload = (
        Duration::from_secs(args.overload_at),
        Duration::from_secs(args.overload_at + args.overload_for),
        args.overload_factor,
    );
    if overload.2 != 1.0 {
        eprintln!(
            "overload: {}× the rates from {} s to {} s",
            overload.2,
            overload.0.as_secs(),
            overload.1.as_secs()
        );
    }
    let (watch_stop_tx, watch_stop_rx) = watch::channel(false);
    let watching = tokio::spawn(health::watch(server, Duration::from_secs(1), watch_stop_rx));
    let publisher = std::thread::spawn(move || {
        let start = Instant::now();
        let mut refused = 0u64;
        let mut b_due = 0f64;
        let mut t_due = 0f64;
        let mut rng = rand::thread_rng();
        let mut last = Instant::now();
        while start.elapsed() < duration {
            let now = Instant::now();
            let into = start.elapsed();
            let factor = if into >= overload.0 && into < overload.1 {
                overload.2
            } else {
                1.0
            };
            let dt = now.duration_since(last).as_secs_f64() * factor;
            last = now;
            b_due += dt * broadcast_rate;
            t_due += dt * targeted_rate;
            while b_due >= 1.0 {
                b_due -= 1.0;
                match bus2.notify_all(&serde_json::json!({"b": sent_b, "t": now_micros()})) {
                    Ok(()) => sent_b += 1,
                    Err(_) => refused += 1,
                }
            }
            while t_due >= 1.0 {
                t_due -= 1.0;
                let u = rng.gen_range(0..users);
                let msg = serde_json::json!({"u": u, "s": sent_u[u], "t": now_micros()});
                match bus2.notify(&msg, [format!("u{u}")]) {
                    Ok(()) => sent_u[u] += 1,
                    Err(_) => refused += 1,
                }
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let _ = sent_tx.send((sent_b, sent_u, refused));
    });
    let run_start = Instant::now();
    let mut rss_series = Vec::new();
    let mut last_hist = shared.latency.snapshot();
    let mut last_deliveries = shared.deliveries.load(Ordering::Relaxed);
    let mut last_at = Instant::now();
    while run_start.elapsed() < duration {
        tokio::time::sleep(
            Duration::from_secs(args.every)
                .min(duration.saturating_sub(run_start.elapsed()) + Duration::from_millis(10)),
        )
        .await;
        let hist = shared.latency.snapshot();
        let d = delta(&hist, &last_hist);
        let deliveries = shared.deliveries.load(Ordering::Relaxed);
        let rate = (deliveries - last_deliveries) as f64 / last_at.elapsed().as_secs_f64();
        let rss = rss_kib(args.pid);
        let t = run_start.elapsed().as_secs();
        rss_series.push((t, rss));
        eprintln!(
            "t={t:>4}s  deliveries/s={rate:>9.0}  p50={:>6} µs  p99={:>7} µs  rss={} KiB  churn connects={} open={} failed={}  server closes={}",
            quantile(&d, 0.5).unwrap_or(0),
            quantile(&d, 0.99).unwrap_or(0),
            rss.map_or("-".into(), |r| r.to_string()),
            shared.connects.load(Ordering::Relaxed),
            shared.connects.load(Ordering::Relaxed) - shared.leaves.load(Ordering::Relaxed),
            shared.failed.load(Ordering::Relaxed),
            shared.closed_by_server.load(Ordering::Relaxed),
        );
        last_hist = hist;
        last_deliveries = deliveries;
        last_at = Instant::now();
    }
    let _ = publisher.join();
    let (sent_b, sent_u, refused) = sent_rx.recv()?;

    // 6. Let what is in flight arrive, stop everyone, count.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let _ = watch_stop_tx.send(true);
    let samples = watching.await?;
    let (max_lag, overloaded_s, last_overloaded) = health::summary(&samples);
    let shed = health::metric(server, "pushnote_bus_messages_shed_total").await;
    let bus_lost = health::metric(server, "pushnote_bus_messages_lost_total").await;
    let _ = stop_tx.send(true);
    let _ = churn.await;
    let mut lost = 0u64;
    let mut duplicated = 0u64;
    let mut reordered = 0u64;
    let mut ended = 0usize;
    for (i, r) in readers.into_iter().enumerate() {
        let r: Report = r.await?;
        if let Some(why) = &r.ended {
            ended += 1;
            if ended <= 3 {
                eprintln!("staying session {i} ended early: {why}");
            }
        }
        lost += r.broadcasts.lost(sent_b) + r.targeted.lost(sent_u[i % users]);
        duplicated += r.broadcasts.duplicated + r.targeted.duplicated;
        reordered += r.broadcasts.reordered + r.targeted.reordered;
    }
    let all = shared.latency.snapshot();
    let warm = rss_series
        .iter()
        .find(|(t, _)| *t >= 60)
        .and_then(|(_, r)| *r);
    let end = rss_series.last().and_then(|(_, r)| *r);
    let summary = serde_json::json!({
        "mode": "soak",
        "sessions": args.sessions,
        "users": args.users,
        "duration_s": args.duration,
        "broadcast_rate": broadcast_rate,
        "targeted_rate": targeted_rate,
        "broadcasts_sent": sent_b,
        "targeted_sent": sent_u.iter().sum::<u64>(),
        "publish_refused": refused,
        "connects_per_s": args.sessions as f64 / connect_secs,
        "churn_connects": shared.connects.load(Ordering::Relaxed),
        "churn_failed": shared.failed.load(Ordering::Relaxed),
        "staying_sessions_ended": ended,
        "lost": lost,
        "duplicated": duplicated,
        "reordered": reordered,
        "overload_factor": args.overload_factor,
        "max_lag_s": max_lag,
        "overloaded_s": overloaded_s,
        "last_overloaded_at_s": last_overloaded,
        "server_shed": shed,
        "server_bus_lost": bus_lost,
        "latency_p50_us": quantile(&all, 0.5),
        "latency_p99_us": quantile(&all, 0.99),
        "rss_start_kib": rss_start,
        "rss_idle_kib": rss_idle,
        "rss_after_warmup_kib": warm,
        "rss_end_kib": end,
        "rss_series_kib": rss_series.iter().map(|(t, r)| serde_json::json!([t, r])).collect::<Vec<_>>(),
    });
    println!("{summary}");
    eprintln!(
        "\nsoak over: {} staying sessions; lost {lost}, duplicated {duplicated}, reordered {reordered}; \
         {ended} ended early; server RSS {} KiB idle, {} KiB after warm-up, {} KiB at the end",
        args.sessions,
        rss_idle.map_or("-".into(), |r| r.to_string()),
        warm.map_or("-".into(), |r| r.to_string()),
        end.map_or("-".into(), |r| r.to_string()),
    );
    eprintln!(
        "server: lag at most {max_lag:.3} s, overloaded for {overloaded_s:.0} s{}; shed {}, \
         lost on the bus {}",
        last_overloaded.map_or(String::new(), |t| format!(" (last at {t:.0} s)")),
        shed.map_or("-".into(), |v| v.to_string()),
        bus_lost.map_or("-".into(), |v| v.to_string()),
    );
    let clean = lost == 0 && duplicated == 0 && reordered == 0 && ended == 0 && refused == 0;
    std::process::exit(if clean { 0 } else { 1 });
}
