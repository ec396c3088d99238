//! `presence`: one presence channel of N members spread over two servers that share presence
//! over a forwarder (PROTOCOL §2d, §6 "Presence"), measured from the pages' side and the
//! servers' `/metrics`.
//!
//! Session i, on server i mod 2, joins as user `u<i>` with info `{"name":"user <i>"}`. The
//! load reports how long the N joins took and until both servers knew every member
//! (`pushnote_presence_members` = N on each: a member is counted once per server holding it,
//! and each of these users is on one); each server's RSS per member (with the N sessions open
//! but not yet joined, against after the joins); how long a new page waits for the member list
//! (its `pushnote:subscribed` reply) and how large that is, and the server's CPU time per
//! such reply; then churn: K pages of server 1 leave and, each --away-ms later, join again, at
//! a fixed rate of changes, with the presence messages and bytes the servers send
//! each other per change (`pushnote_presence_bus_sent_total`, `…_bytes_total`) and how long
//! a join takes to reach a page on the same server and on the other one.
//!
//! The N sessions are read all along, each by a task of its own that only looks for its own
//! replies: every join is announced to every member, so they receive about N²/2 members' worth
//! of `pushnote:presence` messages while the channel fills, which must be read for the server
//! not to close them as too slow. The pages that time the member list parse what they receive.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::Value;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use crate::health::metric;
use crate::session::{source, Session};
use crate::ws::{Incoming, Ws};
use crate::{cpu_secs, endpoints, rss_kib};

#[derive(clap::Args)]
pub struct PresenceBench {
    /// The two servers' SockJS URLs (give --url twice), sharing presence over one forwarder;
    /// each serves /metrics (--metrics) on the same port.
    #[arg(long = "url", num_args = 1, required = true)]
    urls: Vec<String>,
    /// The servers' process ids, in the order of --url, for their memory and CPU.
    #[arg(long = "pid")]
    pids: Vec<u32>,
    /// The secret presence tokens are signed with (the servers' --secret).
    #[arg(long, env = "PUSHNOTE_SECRET", hide_env_values = true)]
    secret: String,
    /// The presence channel.
    #[arg(long, default_value = "presence-bench")]
    channel: String,
    /// Members (sessions), half on each server. The servers' --presence-max-members must be
    /// at least this plus the probes (--samples + 1 per server).
    #[arg(long, default_value_t = 10_000)]
    sessions: usize,
    /// Handshakes, and joins, in progress at once.
    #[arg(long, default_value_t = 200)]
    concurrency: usize,
    /// New pages timed joining the full channel, per server.
    #[arg(long, default_value_t = 5)]
    samples: usize,
    /// Times a page of server 1 leaves and joins again, each time waiting for the list, for
    /// the server's CPU time per join (each a subscribe attempt: the server's
    /// --max-subscribe-attempts must be above it).
    #[arg(long, default_value_t = 100)]
    relists: usize,
    /// Pages of server 1 that leave and join again during the churn.
    #[arg(long, default_value_t = 1_000)]
    churn_pages: usize,
    /// Changes (a leave or a join) per second during the churn.
    #[arg(long, default_value_t = 500.0)]
    churn_rate: f64,
    /// Seconds of churn.
    #[arg(long, default_value_t = 10)]
    churn_secs: u64,
    /// Milliseconds a page stays away before it joins again (longer than the servers'
    /// --presence-interval, or its leave and join cancel out).
    #[arg(long, default_value_t = 1_000)]
    away_ms: u64,
}

/// How long each phase may take before the run gives up.
const PHASE_LIMIT: Duration = Duration::from_secs(300);
/// How long the churn's last joins may take to reach the watching pages.
const DRAIN_LIMIT: Duration = Duration::from_secs(10);
/// How long a probe waits for its reply.
const REPLY_LIMIT: Duration = Duration::from_secs(30);
/// The start of the reply to a join.
const SUBSCRIBED: &str = r#"{"name":"pushnote:subscribed""#;
const ERROR: &str = r#"{"name":"pushnote:error""#;

/// What a member's page is told to do.
enum Cmd {
    /// Join, holding the permit until the reply; with the moment the join was asked for, the
    /// wait for the reply is recorded.
    Join(Option<OwnedSemaphorePermit>, Option<Instant>),
    Leave,
}

/// What the members' tasks count.
#[derive(Default)]
struct Counts {
    replies: AtomicU64,
    refused: AtomicU64,
    ended: AtomicU64,
    first_refusal: Mutex<Option<String>>,
    /// The waits for the replies of the joins asked for with a time.
    waits: Mutex<Vec<Duration>>,
}

/// When each user's last join was sent, for the pages that watch for it.
type Sent = Arc<Mutex<HashMap<String, Instant>>>;

/// A SockJS frame of one request.
fn request(name: &str, data: Value) -> anyhow::Result<String> {
    let request = serde_json::json!({"name": name, "data": data});
    Ok(serde_json::to_string(&[request.to_string()])?)
}

/// A member's page: joins and leaves when told, and reads everything it receives, looking only
/// for the start of its replies.
async fn member(
    mut ws: Ws,
    join: String,
    leave: String,
    mut cmds: mpsc::UnboundedReceiver<Cmd>,
    counts: Arc<Counts>,
) {
    let mut permit = None;
    let mut asked = None;
    loop {
        tokio::select! {
            cmd = cmds.recv() => {
                let frame = match cmd {
                    None => break,
                    Some(Cmd::Join(p, at)) => {
                        permit = p;
                        asked = at;
                        &join
                    }
                    Some(Cmd::Leave) => &leave,
                };
                if ws.send_text(frame).await.is_err() {
                    counts.ended.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
            next = ws.next() => match next {
                Ok(Incoming::Text(t)) if t.starts_with(b"c") => {
                    counts.ended.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Ok(Incoming::Text(t)) => {
                    let text = std::str::from_utf8(t).unwrap_or("");
                    if text.contains(SUBSCRIBED) {
                        counts.replies.fetch_add(1, Ordering::Relaxed);
                        permit = None;
                        if let Some(at) = asked.take() {
                            let mut waits = counts.waits.lock().unwrap_or_else(|e| e.into_inner());
                            waits.push(at.elapsed());
                        }
                    } else if text.contains(ERROR) {
                        counts.refused.fetch_add(1, Ordering::Relaxed);
                        let mut first = counts.first_refusal.lock().unwrap_or_else(|e| e.into_inner());
                        first.get_or_insert_with(|| format!("{text:.200}"));
                        permit = None;
                    }
                }
                Ok(Incoming::Close(_)) | Err(_) => {
                    counts.ended.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
        }
    }
    drop(permit);
    let _ = tokio::time::timeout(Duration::from_secs(1), ws.close()).await;
}

/// What a probe's join got: the wait for the reply, the members listed, the reply's bytes.
struct Listed {
    wait: Duration,
    members: usize,
    bytes: usize,
}

/// The messages of a SockJS `a[…]` frame.
fn messages(frame: &[u8]) -> Vec<Value> {
    frame
        .strip_prefix(b"a")
        .and_then(|m| serde_json::from_slice(m).ok())
        .unwrap_or_default()
}

/// Joins with the request `join` on the open page `ws`: how long the reply took from the
/// request, and what it held.
async fn list(ws: &mut Ws, join: &str) -> anyhow::Result<Listed> {
    let sent = Instant::now();
    ws.send_text(join).await?;
    let listed = async {
        loop {
            let t = match ws.next().await? {
                Incoming::Text(t) => t,
                Incoming::Close(code) => anyhow::bail!("closed while joining: {code:?}"),
            };
            if !std::str::from_utf8(t).unwrap_or("").contains(SUBSCRIBED) {
                continue;
            }
            let wait = sent.elapsed();
            for m in messages(t) {
                match m["name"].as_str() {
                    Some("pushnote:subscribed") => {
                        return Ok(Listed {
                            wait,
                            members: m["data"]["members"].as_array().map_or(0, Vec::len),
                            bytes: m.to_string().len(),
                        })
                    }
                    Some("pushnote:error") => anyhow::bail!("join refused: {m}"),
                    _ => {}
                }
            }
        }
    };
    tokio::time::timeout(REPLY_LIMIT, listed)
        .await
        .map_err(|_| anyhow::anyhow!("no reply to a probe's join within {REPLY_LIMIT:?}"))?
}

/// A page that watches the channel: for every member added whose join `sent` knows, records
/// how long it took to get here, until the channel closes.
async fn watch(
    mut ws: Ws,
    sent: Sent,
    count: Arc<AtomicU64>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Vec<Duration> {
    let mut seen = Vec::new();
    loop {
        let t = tokio::select! {
            _ = stop.changed() => break,
            next = ws.next() => match next {
                Ok(Incoming::Text(t)) => t,
                _ => break,
            },
        };
        let now = Instant::now();
        for m in messages(t) {
            if m["name"] != "pushnote:presence" {
                continue;
            }
            let Some(added) = m["data"]["added"].as_array() else {
                continue;
            };
            let sent = sent.lock().unwrap_or_else(|e| e.into_inner());
            for a in added {
                if let Some(at) = a["user"].as_str().and_then(|u| sent.get(u)) {
                    seen.push(now.saturating_duration_since(*at));
                    count.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
    seen
}

/// The value of metric `name` on each server.
async fn metrics(servers: &[SocketAddr], name: &str) -> Vec<u64> {
    let mut values = Vec::new();
    for &s in servers {
        values.push(metric(s, name).await.unwrap_or(0));
    }
    values
}

/// Quantile `q` of `d`, sorted, in milliseconds.
fn ms(d: &[Duration], q: f64) -> f64 {
    if d.is_empty() {
        return f64::NAN;
    }
    let i = ((d.len() - 1) as f64 * q).round() as usize;
    d[i].as_secs_f64() * 1e3
}

/// Waits until `done` or `PHASE_LIMIT`; an error naming `what` then.
async fn until(what: &str, mut done: impl FnMut() -> bool) -> anyhow::Result<()> {
    let start = Instant::now();
    while !done() {
        anyhow::ensure!(
            start.elapsed() < PHASE_LIMIT,
            "{what}: not within {PHASE_LIMIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

pub async fn run(args: PresenceBench) -> anyhow::Result<()> {
    anyhow::ensure!(args.urls.len() == 2, "give --url twice: the two servers");
    anyhow::ensure!(
        args.pids.is_empty() || args.pids.len() == 2,
        "give --pid twice (in the order of --url), or not at all"
    );
    let n = args.sessions;
    let signer = pushnote::Signer::new(&args.secret)?;
    let (mut servers, mut ws_urls) = (Vec::new(), Vec::new());
    for u in &args.urls {
        let (addr, ws_url) = endpoints(u)?;
        servers.push(addr);
        ws_urls.push(ws_url);
    }
    let pid = |s: usize| args.pids.get(s).copied();
    let rss = |s: usize| rss_kib(pid(s));
    let token = |user: &str, i: usize| {
        let info = format!(r#"{{"name":"user {i}"}}"#);
        signer
            .presence_token(&args.channel, user, Some(&info))
            .context("signing a presence token")
    };
    let join_frame = |token: &str| {
        request(
            "subscribe",
            serde_json::json!({"channel": args.channel, "token": token, "replies": true}),
        )
    };
    let leave = request("unsubscribe", serde_json::json!({"channel": args.channel}))?;

    // 1. The N pages, open and read, not yet joined.
    eprintln!("connecting {n} sessions…");
    let started = Instant::now();
    let gate = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let mut opening = Vec::with_capacity(n);
    for i in 0..n {
        let (server, url) = (servers[i % 2], ws_urls[i % 2](i));
        let gate = gate.clone();
        opening.push(tokio::spawn(async move {
            let _permit = gate.acquire().await;
            Session::open(server, &url, source(i), None).await
        }));
    }
    let counts = Arc::new(Counts::default());
    let mut pages = Vec::with_capacity(n);
    let mut tasks = Vec::with_capacity(n);
    for (i, o) in opening.into_iter().enumerate() {
        let ws = o
            .await?
            .with_context(|| format!("session {i} failed to open"))?
            .into_ws();
        let (tx, rx) = mpsc::unbounded_channel();
        let join = join_frame(&token(&format!("u{i}"), i)?)?;
        tasks.push(tokio::spawn(member(
            ws,
            join,
            leave.clone(),
            rx,
            counts.clone(),
        )));
        pages.push(tx);
    }
    eprintln!("connected in {:.1} s", started.elapsed().as_secs_f64());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_open: Vec<_> = (0..2).map(rss).collect();

    // 2. The joins, `concurrency` awaiting their replies at a time.
    eprintln!("joining {}…", args.channel);
    let joins = Instant::now();
    for page in &pages {
        let permit = gate.clone().acquire_owned().await?;
        page.send(Cmd::Join(Some(permit), None))
            .map_err(|_| anyhow::anyhow!("a page ended before joining"))?;
    }
    let answered = || {
        counts.replies.load(Ordering::Relaxed)
            + counts.refused.load(Ordering::Relaxed)
            + counts.ended.load(Ordering::Relaxed)
            >= n as u64
    };
    until("the joins' replies", answered).await?;
    let joined_s = joins.elapsed().as_secs_f64();
    let (refused, ended) = (
        counts.refused.load(Ordering::Relaxed),
        counts.ended.load(Ordering::Relaxed),
    );
    if refused + ended > 0 {
        let first = counts
            .first_refusal
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        anyhow::bail!(
            "{refused} joins refused, {ended} pages ended (first refusal: {})",
            first.unwrap_or_default()
        );
    }
    let mut known_s = None;
    let start = Instant::now();
    while start.elapsed() < PHASE_LIMIT {
        let members = metrics(&servers, "pushnote_presence_members").await;
        if members.iter().all(|&m| m == n as u64) {
            known_s = Some(joins.elapsed().as_secs_f64());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let known_s = known_s.context("the servers did not come to know every member")?;
    eprintln!(
        "{n} joins answered in {joined_s:.1} s ({:.0}/s); every member known on both servers \
         {known_s:.1} s after the first join",
        n as f64 / joined_s
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_joined: Vec<_> = (0..2).map(rss).collect();
    let per_member: Vec<Option<f64>> = (0..2)
        .map(|s| {
            rss_open[s]
                .zip(rss_joined[s])
                .map(|(a, b)| (b as f64 - a as f64) / n as f64)
        })
        .collect();
    eprintln!(
        "server RSS, open → joined: {} (KiB per member: {})",
        (0..2)
            .map(|s| format!("{:?} → {:?} KiB", rss_open[s], rss_joined[s]))
            .collect::<Vec<_>>()
            .join(", "),
        per_member
            .iter()
            .map(|p| p.map_or("-".into(), |k| format!("{k:.2}")))
            .collect::<Vec<_>>()
            .join(", ")
    );

    // 3. New pages getting the list, on each server in turn; the last on each stays to watch.
    let mut waits: [Vec<Duration>; 2] = Default::default();
    let mut listed = [(0usize, 0usize); 2];
    let mut watchers = Vec::new();
    for r in 0..args.samples.max(1) {
        for s in 0..2 {
            let i = n + 2 * r + s;
            let user = format!("probe{i}");
            let join = join_frame(&token(&user, i)?)?;
            let session = Session::open(servers[s], &ws_urls[s](i), source(i), None).await?;
            let mut ws = session.into_ws();
            let got = list(&mut ws, &join).await?;
            waits[s].push(got.wait);
            listed[s] = (got.members, got.bytes);
            if r + 1 == args.samples.max(1) {
                watchers.push((ws, join));
            } else {
                let _ = tokio::time::timeout(Duration::from_secs(1), ws.close()).await;
            }
        }
    }
    for (s, w) in waits.iter_mut().enumerate() {
        w.sort();
        eprintln!(
            "a new page on server {} got the list of {} members ({} bytes) in {:.1} ms median, \
             {:.1} ms at most ({} pages)",
            s + 1,
            listed[s].0,
            listed[s].1,
            ms(w, 0.5),
            ms(w, 1.0),
            w.len()
        );
    }
    // The server's CPU time for a join's reply: the page on server 1 leaves and joins again,
    // --relists times, each time waiting for the list (its leave and join put together by the
    // server, the other pages told nothing, or little).
    let cpu_before = cpu_secs(pid(0));
    let relisting = Instant::now();
    let (page, join) = &mut watchers[0];
    for _ in 0..args.relists {
        page.send_text(&leave).await?;
        list(page, join).await?;
    }
    let relist_ms = relisting.elapsed().as_secs_f64() * 1e3 / args.relists.max(1) as f64;
    let relist_cpu_ms = cpu_before
        .zip(cpu_secs(pid(0)))
        .map(|(a, b)| (b - a) * 1e3 / args.relists.max(1) as f64);
    eprintln!(
        "a page of server 1 leaving and joining again {} times: {relist_ms:.1} ms each, the \
         server's CPU {} ms each",
        args.relists,
        relist_cpu_ms.map_or("-".into(), |c| format!("{c:.2}"))
    );

    // 4. Churn: pages of server 1 leave and join again, round robin, at a fixed rate.
    let churn: Vec<usize> = (0..n).step_by(2).take(args.churn_pages).collect();
    anyhow::ensure!(!churn.is_empty(), "--churn-pages 0");
    let sent: Sent = Arc::default();
    let seen_count = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let watching: Vec<_> = watchers
        .into_iter()
        .map(|(ws, _)| tokio::spawn(watch(ws, sent.clone(), seen_count.clone(), stop_rx.clone())))
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let bus_before = metrics(&servers, "pushnote_presence_bus_sent_total").await;
    let bytes_before = metrics(&servers, "pushnote_presence_bus_sent_bytes_total").await;
    let events_before = metrics(&servers, "pushnote_presence_events_total").await;
    let cpu_before: Vec<_> = (0..2).map(|s| cpu_secs(pid(s))).collect();
    let load_cpu_before = cpu_secs(Some(std::process::id()));
    eprintln!(
        "churn: {} pages of server 1 leaving and joining again, {} changes/s for {} s…",
        churn.len(),
        args.churn_rate,
        args.churn_secs
    );
    let churn_start = Instant::now();
    // Pages that left, and when, in that order: each joins again --away-ms after leaving, and
    // leaves again (its turn come round) no sooner than --away-ms after that: a leave and a
    // join within one --presence-interval would cancel out, and the join not be seen.
    let mut away: std::collections::VecDeque<(usize, Instant)> = Default::default();
    let mut back: Vec<Option<Instant>> = vec![None; churn.len()];
    let stay_away = Duration::from_millis(args.away_ms);
    let (mut changes, mut joins_sent, mut next) = (0usize, 0usize, 0usize);
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / args.churn_rate));
    while churn_start.elapsed() < Duration::from_secs(args.churn_secs) {
        tick.tick().await;
        let now = Instant::now();
        let k = next % churn.len();
        match away.front() {
            Some(&(k, left)) if now.duration_since(left) >= stay_away => {
                away.pop_front();
                back[k] = Some(now);
                let i = churn[k];
                let mut sent = sent.lock().unwrap_or_else(|e| e.into_inner());
                sent.insert(format!("u{i}"), now);
                drop(sent);
                pages[i].send(Cmd::Join(None, Some(now))).ok();
                joins_sent += 1;
            }
            _ if back[k].is_none_or(|t| now.duration_since(t) >= stay_away)
                && !away.iter().any(|&(a, _)| a == k) =>
            {
                next += 1;
                pages[churn[k]].send(Cmd::Leave).ok();
                away.push_back((k, now));
            }
            _ => continue,
        }
        changes += 1;
    }
    let churn_s = churn_start.elapsed().as_secs_f64();
    // The last changes go out within an interval or two, unless the servers are behind.
    let drain = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    while seen_count.load(Ordering::Relaxed) < 2 * joins_sent as u64
        && drain.elapsed() < DRAIN_LIMIT
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let churn_all_s = churn_start.elapsed().as_secs_f64();
    let cpu: Vec<Option<f64>> = (0..2)
        .map(|s| {
            cpu_before[s]
                .zip(cpu_secs(pid(s)))
                .map(|(a, b)| (b - a) / churn_all_s * 100.0)
        })
        .collect();
    let load_cpu = load_cpu_before
        .zip(cpu_secs(Some(std::process::id())))
        .map(|(a, b)| (b - a) / churn_all_s * 100.0);
    let delta = |after: Vec<u64>, before: &[u64]| -> u64 {
        after
            .iter()
            .zip(before)
            .map(|(a, b)| a.saturating_sub(*b))
            .sum()
    };
    let bus = delta(
        metrics(&servers, "pushnote_presence_bus_sent_total").await,
        &bus_before,
    );
    let bytes = delta(
        metrics(&servers, "pushnote_presence_bus_sent_bytes_total").await,
        &bytes_before,
    );
    let events = delta(
        metrics(&servers, "pushnote_presence_events_total").await,
        &events_before,
    );
    let _ = stop_tx.send(true);
    let mut seen = Vec::new();
    for w in watching {
        let mut d = w.await?;
        d.sort();
        seen.push(d);
    }
    let ended = counts.ended.load(Ordering::Relaxed);
    let mut replies = std::mem::take(&mut *counts.waits.lock().unwrap_or_else(|e| e.into_inner()));
    replies.sort();
    eprintln!(
        "churn: {changes} changes ({joins_sent} joins) in {churn_s:.1} s, watched until \
         {churn_all_s:.1} s; the servers sent each \
         other {bus} presence messages, {bytes} bytes ({:.3} messages, {:.1} bytes per change, \
         heartbeats included); {events} pushnote:presence messages queued to pages; server CPU \
         {} % of a core, the load's {} %",
        bus as f64 / changes as f64,
        bytes as f64 / changes as f64,
        cpu.iter()
            .map(|c| c.map_or("-".into(), |c| format!("{c:.0}")))
            .collect::<Vec<_>>()
            .join(" and "),
        load_cpu.map_or("-".into(), |c| format!("{c:.0}")),
    );
    eprintln!(
        "the pages joining again on server 1 got their lists in: p50 {:.1} ms, p99 {:.1} ms, \
         max {:.1} ms ({} replies)",
        ms(&replies, 0.5),
        ms(&replies, 0.99),
        ms(&replies, 1.0),
        replies.len()
    );
    for (s, d) in seen.iter().enumerate() {
        eprintln!(
            "a join on server 1 reached a page on server {}: p50 {:.1} ms, p99 {:.1} ms, max \
             {:.1} ms ({} of {joins_sent} joins seen)",
            s + 1,
            ms(d, 0.5),
            ms(d, 0.99),
            ms(d, 1.0),
            d.len()
        );
    }
    if ended > 0 {
        eprintln!("{ended} pages ended during the run");
    }
    let summary = serde_json::json!({
        "mode": "presence",
        "channel": args.channel,
        "members": n,
        "joins_s": joined_s,
        "all_known_s": known_s,
        "rss_open_kib": rss_open,
        "rss_joined_kib": rss_joined,
        "rss_per_member_kib": per_member,
        "list_members": [listed[0].0, listed[1].0],
        "list_bytes": [listed[0].1, listed[1].1],
        "list_ms_median": [ms(&waits[0], 0.5), ms(&waits[1], 0.5)],
        "list_ms_max": [ms(&waits[0], 1.0), ms(&waits[1], 1.0)],
        "relist_ms": relist_ms,
        "relist_server_cpu_ms": relist_cpu_ms,
        "churn_changes": changes,
        "churn_s": churn_s,
        "churn_seen_s": churn_all_s,
        "bus_messages": bus,
        "bus_bytes": bytes,
        "bus_messages_per_change": bus as f64 / changes as f64,
        "bus_bytes_per_change": bytes as f64 / changes as f64,
        "page_messages": events,
        "server_cpu_percent": cpu,
        "load_cpu_percent": load_cpu,
        "join_seen_same_server_ms": seen.first().map(|d| [ms(d, 0.5), ms(d, 0.99), ms(d, 1.0)]),
        "join_seen_other_server_ms": seen.get(1).map(|d| [ms(d, 0.5), ms(d, 0.99), ms(d, 1.0)]),
        "rejoin_reply_ms": [ms(&replies, 0.5), ms(&replies, 0.99), ms(&replies, 1.0)],
        "joins_seen": seen.iter().map(Vec::len).collect::<Vec<_>>(),
        "joins_sent": joins_sent,
        "pages_ended": ended,
    });
    println!("{summary}");
    drop(pages);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    Ok(())
}
