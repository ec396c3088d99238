//! 10,000 WebSocket sessions through nginx with the shipped configuration
//! (deploy/nginx/nginx.conf, deploy/nginx/pushnote.conf) in front of two servers: every one is
//! upgraded and receives a broadcast. With Debian's `worker_connections 768`, about 380
//! sessions a worker get through and the rest wait until they time out.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::Semaphore;
use tokio::time::{timeout_at, Instant};

use crate::nginx::{tempdir, Nginx, Site};
use crate::proxied::{open_websocket, receive};
use crate::support::*;

const SESSIONS: usize = 10_000;
/// Descriptors a process of this test needs: the client's 10,000 connections (nginx's workers
/// and the servers need fewer each), and a margin.
const NEED: u64 = SESSIONS as u64 + 1_000;
/// How long opening every session may take, and then receiving the broadcast.
const OPENING: Duration = Duration::from_secs(30);
const RECEIVING: Duration = Duration::from_secs(15);

/// The soft and hard limits on open files of this process, from /proc.
fn nofile() -> (u64, u64) {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("Max open files in /proc/self/limits");
    let mut n = line["Max open files".len()..]
        .split_whitespace()
        .map(|v| v.parse::<u64>().unwrap_or(u64::MAX));
    (n.next().unwrap(), n.next().unwrap())
}

/// Raises this process's soft limit on open files to its hard limit (util-linux's prlimit on
/// its own pid; no privilege needed), which the processes it starts inherit. The hard limit.
fn raise_nofile() -> u64 {
    let (soft, hard) = nofile();
    if soft < hard {
        let status = std::process::Command::new("prlimit")
            .arg(format!("--pid={}", std::process::id()))
            .arg(format!("--nofile={hard}:{hard}"))
            .status()
            .expect("prlimit (util-linux)");
        assert!(status.success(), "prlimit --nofile={hard}:{hard}");
        assert_eq!(nofile().0, hard);
    }
    hard
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_websocket_sessions_through_the_shipped_nginx_configuration() {
    let hard = raise_nofile();
    if hard < NEED {
        eprintln!(
            "SKIPPED: {SESSIONS} sessions need {NEED} open files a process; the hard limit here \
             is {hard}, which only a privileged user can raise"
        );
        return;
    }
    let dir = tempdir("pushnote-nginx-capacity");
    let fwd = forwarder();
    // One address opens every session: no bound on its rate.
    let servers = [
        server(&fwd, &["--session-rate-per-address", "0"]),
        server(&fwd, &["--session-rate-per-address", "0"]),
    ];
    let ports: Vec<u16> = servers.iter().map(Server::port).collect();
    let port = free_port();
    let mut site = Site::new(port, &ports);
    // Plain HTTP: the test counts nginx's connections, not its TLS handshakes.
    site.tls = false;
    // nginx.conf's worker_rlimit_nofile is set by a master running as root, above the hard
    // limit; here the hard limit is as far as it goes.
    site.rlimit_nofile = Some(hard);
    // Two workers whatever the cores: one holding all 10,000 sessions (20,000 connections)
    // would need more descriptors than a process may open on a machine like this one.
    site.workers = Some(2);
    let nginx = Nginx::start(&dir, &site);

    let started = Instant::now();
    let deadline = started + OPENING;
    let gate = Arc::new(Semaphore::new(200));
    let tasks: Vec<_> = (0..SESSIONS)
        .map(|n| {
            let gate = gate.clone();
            tokio::spawn(async move {
                let _permit = gate.acquire().await;
                let server = (n % 1000).to_string();
                timeout_at(deadline, open_websocket(port, &server, &format!("c{n}")))
                    .await
                    .unwrap_or_else(|_| Err("no answer in time".into()))
                    .map(|(s, _)| s)
            })
        })
        .collect();
    let mut open_sessions = Vec::with_capacity(SESSIONS);
    let mut failures = std::collections::BTreeMap::<String, usize>::new();
    for t in tasks {
        match t.await.unwrap() {
            Ok(s) => open_sessions.push(s),
            Err(e) => *failures.entry(e).or_default() += 1,
        }
    }
    let opening = started.elapsed();
    eprintln!(
        "{} of {SESSIONS} sessions open through nginx in {opening:.1?}",
        open_sessions.len()
    );
    assert_eq!(
        open_sessions.len(),
        SESSIONS,
        "upgraded through nginx; the others: {failures:?}; nginx said: {}",
        nginx.error_log()
    );
    let mut held = 0;
    for s in &servers {
        held += s.metric("pushnote_sessions").await;
    }
    assert_eq!(held, SESSIONS as u64, "the servers hold every session");

    // One broadcast (published again until all have it: a new publisher's first messages may
    // precede its connection to the forwarder).
    let marker = format!("capacity-{}", rand_id());
    let received = Arc::new(AtomicUsize::new(0));
    let readers: Vec<_> = open_sessions
        .into_iter()
        .map(|s| {
            let (marker, received) = (marker.clone(), received.clone());
            tokio::spawn(async move {
                if receive(s, marker).await {
                    received.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let bus = publisher(&fwd.sub);
    let deadline = Instant::now() + RECEIVING;
    while received.load(Ordering::Relaxed) < SESSIONS && Instant::now() < deadline {
        bus.notify_all(&json!({ "marker": marker })).unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let got = received.load(Ordering::Relaxed);
    eprintln!(
        "{got} of {SESSIONS} received the broadcast, {:.1?} after the first opened",
        started.elapsed()
    );
    for r in &readers {
        r.abort();
    }
    assert_eq!(got, SESSIONS, "every session receives the broadcast");
    let log = nginx.error_log();
    assert!(!log.contains("worker_connections are not enough"), "{log}");
    drop(nginx);
    drop(servers);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The value of `directive` in the nginx configuration `text`.
fn directive(text: &str, directive: &str) -> u64 {
    text.lines()
        .find_map(|l| l.trim().strip_prefix(directive))
        .and_then(|v| v.trim().trim_end_matches(';').parse().ok())
        .unwrap_or_else(|| panic!("{directive} in deploy/nginx/nginx.conf"))
}

#[test]
fn the_nginx_units_drop_in_passes_systemd_analyze_verify_and_covers_the_workers() {
    let conf = std::fs::read_to_string(repo_path("deploy/nginx/nginx.conf")).unwrap();
    let drop_in =
        std::fs::read_to_string(repo_path("deploy/nginx/nginx.service.d/pushnote.conf")).unwrap();
    let connections = directive(&conf, "worker_connections");
    let rlimit = directive(&conf, "worker_rlimit_nofile");
    let limit: u64 = drop_in
        .lines()
        .find_map(|l| l.strip_prefix("LimitNOFILE="))
        .and_then(|v| v.parse().ok())
        .expect("LimitNOFILE= in the drop-in");
    // Every connection a worker may accept has a descriptor, with room for its files.
    assert!(rlimit > connections, "{rlimit} > {connections}");
    assert!(limit >= rlimit, "{limit} >= {rlimit}");
    // The drop-in on Debian's own unit, as systemd reads it.
    let debian = std::path::Path::new("/lib/systemd/system/nginx.service");
    let unit = std::fs::read_to_string(debian).expect("Debian's nginx package's unit");
    let dir = tempdir("pushnote-nginx-unit");
    std::fs::create_dir_all(dir.join("nginx.service.d")).unwrap();
    std::fs::write(dir.join("nginx.service"), unit).unwrap();
    std::fs::write(dir.join("nginx.service.d/pushnote.conf"), drop_in).unwrap();
    crate::deploy::systemd_verify(&dir, &["nginx.service"]);
    let _ = std::fs::remove_dir_all(&dir);
}
