//! `storm`: sessions with positions, each subscribed as a user of its own, cut at once by a
//! server restart and coming back as fast as they can with their positions, while broadcasts
//! and user messages flow. Reports how long until every session was given what it missed and
//! was live again, and every message lost or duplicated.
//!
//! Each session sends `positions` and `subscribe` with the last positions it saw, and takes
//! the messages in their positioned form (`{"kind", "position", "data"}`); the load's messages
//! carry a sequence number per topic (`b` for broadcasts, `s` per user), so a session knows
//! exactly which it has and which it missed.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use rand::Rng;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::net::TcpSocket;
use tokio::sync::Semaphore;

use crate::session::source;
use crate::ws::{Incoming, Ws};

#[derive(clap::Args)]
pub struct Storm {
    #[command(flatten)]
    target: crate::Target,
    /// Sessions, each subscribed as a user of its own.
    #[arg(long, default_value_t = 10_000)]
    sessions: usize,
    /// Broadcasts per second.
    #[arg(long, default_value_t = 1.0)]
    broadcast_rate: f64,
    /// Messages per second to one random user each.
    #[arg(long, default_value_t = 100.0)]
    user_rate: f64,
    /// The shell command that restarts the server (run once every session is live).
    #[arg(long)]
    restart: String,
    /// Seconds of load after every session is live again.
    #[arg(long, default_value_t = 5)]
    after: u64,
    /// Seconds a session waits between attempts to reconnect (as fast as it can: 0).
    #[arg(long, default_value_t = 0.05)]
    retry: f64,
}

/// What every session adds to.
#[derive(Default)]
struct Shared {
    /// Sessions live now (subscribed, with positions, their missed messages given).
    live: AtomicU64,
    /// Sessions cut by the server since the restart.
    cut: AtomicU64,
    /// Connection attempts that failed (the server was down).
    failed_attempts: AtomicU64,
    /// Replies that said a topic was not recovered.
    not_recovered: AtomicU64,
    /// When the last session became live again (microseconds since the restart).
    last_live_us: AtomicU64,
    restarted_at: Mutex<Option<Instant>>,
    stop: AtomicBool,
}

/// What a session received of each topic.
#[derive(Default)]
struct Seen {
    broadcasts: BTreeSet<u64>,
    user: BTreeSet<u64>,
    duplicated: u64,
    broadcast_at: Option<Value>,
    user_at: Option<Value>,
}

#[derive(Deserialize)]
struct Data {
    b: Option<u64>,
    s: Option<u64>,
}

pub async fn run(args: Storm) -> anyhow::Result<()> {
    let (server, ws_url) = crate::endpoints(&args.target.url)?;
    let ws_url = Arc::new(ws_url);
    let signer = pushnote::Signer::new(&args.target.secret)?;
    let shared = Arc::new(Shared::default());
    let gate = Arc::new(Semaphore::new(200));
    eprintln!("connecting {} sessions…", args.sessions);
    let mut tasks = Vec::with_capacity(args.sessions);
    for i in 0..args.sessions {
        let token = signer.tokenize(format!("u{i}"))?;
        let (shared, gate, ws_url) = (shared.clone(), gate.clone(), ws_url.clone());
        let retry = Duration::from_secs_f64(args.retry);
        tasks.push(tokio::spawn(async move {
            session(i, server, &*ws_url, &token, shared, gate, retry).await
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while shared.live.load(Ordering::Relaxed) < args.sessions as u64 {
        anyhow::ensure!(Instant::now() < deadline, "sessions did not all connect");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("{} sessions live; publishing", args.sessions);
    // The load: broadcasts and user messages, each numbered in its topic.
    let published = Arc::new(Mutex::new((0u64, vec![0u64; args.sessions])));
    let load = {
        let (published, shared) = (published.clone(), shared.clone());
        let (bus, sessions) = (args.target.bus.clone(), args.sessions);
        let (b_rate, u_rate) = (args.broadcast_rate, args.user_rate);
        std::thread::spawn(move || -> anyhow::Result<u64> {
            let app = pushnote::Publisher::connect(&bus)?;
            let start = Instant::now();
            let (mut b_due, mut u_due) = (0f64, 0f64);
            let mut refused = 0;
            let mut rng = rand::thread_rng();
            while !shared.stop.load(Ordering::Relaxed) {
                let t = start.elapsed().as_secs_f64();
                while b_due <= t * b_rate {
                    b_due += 1.0;
                    let mut p = published.lock().unwrap();
                    let b = p.0 + 1;
                    match app.notify_all(&json!({"b": b})) {
                        Ok(()) => p.0 = b,
                        Err(_) => refused += 1,
                    }
                }
                while u_due <= t * u_rate {
                    u_due += 1.0;
                    let u = rng.gen_range(0..sessions);
                    let mut p = published.lock().unwrap();
                    let s = p.1[u] + 1;
                    match app.notify(&json!({"s": s}), [format!("u{u}")]) {
                        Ok(()) => p.1[u] = s,
                        Err(_) => refused += 1,
                    }
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            Ok(refused)
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    // The restart, then every session comes back.
    eprintln!("restarting the server: {}", args.restart);
    *shared.restarted_at.lock().unwrap() = Some(Instant::now());
    let restart = args.restart.clone();
    let status = tokio::task::spawn_blocking(move || {
        std::process::Command::new("sh")
            .arg("-c")
            .arg(restart)
            .status()
    })
    .await??;
    anyhow::ensure!(status.success(), "the restart command failed: {status}");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (cut, live) = (
            shared.cut.load(Ordering::Relaxed),
            shared.live.load(Ordering::Relaxed),
        );
        if cut >= args.sessions as u64 && live >= args.sessions as u64 {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "not every session came back: {cut} cut, {live} live"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let recovered_s = shared.last_live_us.load(Ordering::Relaxed) as f64 / 1e6;
    eprintln!("every session live again {recovered_s:.2} s after the restart began");
    tokio::time::sleep(Duration::from_secs(args.after)).await;
    shared.stop.store(true, Ordering::Relaxed);
    let refused = load
        .join()
        .map_err(|_| anyhow::anyhow!("the load panicked"))??;
    // Time for the last messages to arrive.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (last_b, per_user) = published.lock().unwrap().clone();
    let (mut lost, mut duplicated) = (0u64, 0u64);
    // A session's task runs until stopped; one that ended failed.
    let ended = tasks.iter().filter(|t| t.is_finished()).count();
    for t in &tasks {
        t.abort();
    }
    let seen_all = SEEN.lock().unwrap();
    for (i, seen) in seen_all.iter().enumerate() {
        let first_b = seen.broadcasts.first().copied().unwrap_or(last_b + 1);
        lost += (first_b..=last_b)
            .filter(|b| !seen.broadcasts.contains(b))
            .count() as u64;
        lost += (1..=per_user[i]).filter(|s| !seen.user.contains(s)).count() as u64;
        duplicated += seen.duplicated;
    }
    let report = json!({
        "mode": "storm",
        "sessions": args.sessions,
        "broadcasts": last_b,
        "user_messages": per_user.iter().sum::<u64>(),
        "publishes_refused": refused,
        "recovered_s": recovered_s,
        "failed_attempts": shared.failed_attempts.load(Ordering::Relaxed),
        "not_recovered": shared.not_recovered.load(Ordering::Relaxed),
        "lost": lost,
        "duplicated": duplicated,
        "sessions_failed": ended,
    });
    println!("{report}");
    eprintln!(
        "storm: {} sessions back with their positions {recovered_s:.2} s after the restart \
         began; {last_b} broadcasts and {} user messages; lost {lost}, duplicated {duplicated}, \
         not recovered {}",
        args.sessions,
        per_user.iter().sum::<u64>(),
        shared.not_recovered.load(Ordering::Relaxed)
    );
    anyhow::ensure!(
        lost + duplicated == 0 && shared.not_recovered.load(Ordering::Relaxed) == 0,
        "not clean"
    );
    Ok(())
}

/// What each session saw, by its number.
static SEEN: Mutex<Vec<Seen>> = Mutex::new(Vec::new());

fn with_seen<T>(i: usize, f: impl FnOnce(&mut Seen) -> T) -> T {
    let mut all = SEEN.lock().unwrap();
    if all.len() <= i {
        all.resize_with(i + 1, Seen::default);
    }
    f(&mut all[i])
}

/// One session: connects, asks for positions, subscribes, reads; when the server cuts it,
/// comes back with its positions, again and again.
async fn session(
    i: usize,
    server: SocketAddr,
    ws_url: &(dyn Fn(usize) -> String + Send + Sync),
    token: &str,
    shared: Arc<Shared>,
    gate: Arc<Semaphore>,
    retry: Duration,
) -> anyhow::Result<()> {
    let mut first = true;
    loop {
        let ws = {
            let _permit = gate.acquire().await;
            match connect(i, server, &ws_url(i)).await {
                Ok(ws) => ws,
                Err(e) => {
                    if shared.failed_attempts.fetch_add(1, Ordering::Relaxed) == 0 {
                        eprintln!("a connection attempt failed: {e:#}");
                    }
                    tokio::time::sleep(retry).await;
                    continue;
                }
            }
        };
        let cut = live(i, ws, token, &shared, first).await?;
        first = false;
        if cut {
            shared.cut.fetch_add(1, Ordering::Relaxed);
            shared.live.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

async fn connect(i: usize, server: SocketAddr, url: &str) -> anyhow::Result<Ws> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(source(i))?;
    let stream = socket.connect(server).await?;
    stream.set_nodelay(true)?;
    let mut ws = Ws::connect(stream, url).await?;
    match ws.next().await? {
        Incoming::Text(b"o") => Ok(ws),
        _ => anyhow::bail!("no open frame"),
    }
}

/// Runs one connection of session `i`: positions, subscribe, then messages; true when the
/// server cut it after it was live.
async fn live(
    i: usize,
    mut ws: Ws,
    token: &str,
    shared: &Shared,
    first: bool,
) -> anyhow::Result<bool> {
    let (b_at, u_at) = with_seen(i, |s| (s.broadcast_at.clone(), s.user_at.clone()));
    let mut positions = json!({"name": "positions", "data": {"replies": true}});
    if let Some(at) = &b_at {
        positions["data"]["since"] = at.clone();
    }
    let mut subscribe = json!({"name": "subscribe", "data": {"token": token, "replies": true}});
    if let Some(at) = &u_at {
        subscribe["data"]["since"] = at.clone();
    }
    let frame = serde_json::to_string(&[positions.to_string(), subscribe.to_string()])?;
    ws.send_text(&frame).await?;
    // Bare broadcasts before the positions reply are given again from the history.
    let mut on = false;
    let mut replies = 0;
    loop {
        let text = match ws.next().await {
            Ok(Incoming::Text(t)) => t.to_vec(),
            Ok(Incoming::Close(_)) | Err(_) => return Ok(replies == 2),
        };
        if text.first() == Some(&b'c') {
            return Ok(replies == 2);
        }
        if text.first() != Some(&b'a') {
            continue;
        }
        // pushnote sends each message as its JSON value in the frame's array.
        let msgs: Vec<Value> = serde_json::from_slice(&text[1..]).context("frame")?;
        for v in msgs {
            if let Some(name) = v["name"].as_str() {
                let data = &v["data"];
                if data["recovered"] == false {
                    shared.not_recovered.fetch_add(1, Ordering::Relaxed);
                }
                match name {
                    "pushnote:positions" => {
                        on = true;
                        with_seen(i, |s| s.broadcast_at = Some(data["position"].clone()));
                        replies += 1;
                    }
                    "pushnote:subscribed" => {
                        with_seen(i, |s| s.user_at = Some(data["position"].clone()));
                        replies += 1;
                    }
                    other => anyhow::bail!("session {i}: {other} {data}"),
                }
                if replies == 2 {
                    shared.live.fetch_add(1, Ordering::Relaxed);
                    if !first {
                        let since = shared.restarted_at.lock().unwrap().map(|t| t.elapsed());
                        if let Some(since) = since {
                            shared
                                .last_live_us
                                .fetch_max(since.as_micros() as u64, Ordering::Relaxed);
                        }
                    }
                }
                continue;
            }
            let (Some(kind), true) = (v["kind"].as_str(), on || v["position"].is_object()) else {
                continue;
            };
            let Ok(d) = serde_json::from_value::<Data>(v["data"].clone()) else {
                continue;
            };
            with_seen(i, |s| {
                let (set, at) = match kind {
                    "broadcast" => (&mut s.broadcasts, &mut s.broadcast_at),
                    _ => (&mut s.user, &mut s.user_at),
                };
                if let Some(n) = d.b.or(d.s) {
                    if !set.insert(n) {
                        s.duplicated += 1;
                    }
                }
                *at = Some(v["position"].clone());
            });
        }
    }
}
