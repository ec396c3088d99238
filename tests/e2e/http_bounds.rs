//! What an HTTP client without a key, or with one, may cost: `POST /publish` answered on its
//! headers before its body is read, bodies bounded in time, the forwarder's HTTP connections
//! closed when idle, and neither process shut out of its descriptors by HTTP clients (the
//! forwarder's bus keeps its own).

use std::process::Command;
use std::time::Duration;

use futures_util::future::join_all;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

/// What a `--single` server and a forwarder accept as a body by default.
const LIMIT: usize = 1024 * 1024;

/// `HOST:PORT` of an `http://HOST:PORT/…` URL.
fn host_of(url: &str) -> &str {
    let rest = url.strip_prefix("http://").expect("http url");
    &rest[..rest.find('/').unwrap_or(rest.len())]
}

/// The resident memory of process `pid`, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .expect("VmRSS");
    kb * 1024
}

/// The head of a `POST /publish` whose body is `length` bytes, with `key` if given.
fn publish_head(host: &str, key: Option<&str>, length: usize) -> String {
    let auth = key.map_or(String::new(), |k| format!("Authorization: Bearer {k}\r\n"));
    format!(
        "POST /publish HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
         {auth}Content-Length: {length}\r\n\r\n"
    )
}

/// Reads a response's status line off `s`, within `limit`; `None` if none came (or the
/// connection closed first).
async fn status_within(s: &mut TcpStream, limit: Duration) -> Option<u16> {
    let mut head = Vec::new();
    let read = async {
        let mut chunk = [0u8; 1024];
        while head.len() < 12 {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => head.extend_from_slice(&chunk[..n]),
            }
        }
        std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
    };
    tokio::time::timeout(limit, read).await.ok().flatten()
}

/// `connections` clients that each send the head of a 1 MiB `POST /publish` (with `key`, if
/// given) and all of its body but its last byte, as fast as the server takes it; returns the
/// connections, still open, once every client is done sending (or the server stopped reading).
async fn large_bodies_but_one_byte(
    host: &str,
    key: Option<&str>,
    connections: usize,
) -> Vec<TcpStream> {
    let body = vec![b' '; LIMIT - 2];
    join_all((0..connections).map(|_| {
        let body = &body;
        async move {
            let mut s = TcpStream::connect(host).await.expect("connect");
            let head = publish_head(host, key, LIMIT - 1);
            s.write_all(head.as_bytes()).await.expect("write the head");
            // A server that answers on the headers closes the connection: the rest of the
            // body then meets a reset, or fills the socket's buffers and waits.
            let _ = tokio::time::timeout(WAIT, s.write_all(body)).await;
            s
        }
    }))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_answers_on_the_headers_and_reads_no_body_first() {
    // 200 clients × 1 MiB held whole in memory was the finding (on every server: one without
    // --api-key answered 404 only after the body); answered on the headers, a server's memory
    // does not grow with them.
    const CLIENTS: usize = 200;
    const BOUND: u64 = 64 << 20;
    let bare = single_server(&[]);
    let keyed = single_server(&["--api-key", API_KEY]);
    for (srv, key, expected) in [
        (&bare, None, 404),
        (&bare, Some(API_KEY), 404),
        (&keyed, None, 401),
        (&keyed, Some("a-wrong-key-0123456789"), 401),
    ] {
        let host = host_of(&srv.origin).to_owned();
        let pid = srv.proc.child.id();
        let before = rss(pid);
        let mut held = large_bodies_but_one_byte(&host, key, CLIENTS).await;
        let grown = rss(pid).saturating_sub(before);
        eprintln!(
            "{expected} for {key:?}: the server grew by {} KiB",
            grown >> 10
        );
        assert!(
            grown < BOUND,
            "{expected} for {key:?}: the server grew by {} MiB holding {CLIENTS} bodies",
            grown >> 20
        );
        for s in &mut held {
            assert_eq!(status_within(s, WAIT).await, Some(expected), "{key:?}");
        }
    }
    // A body declared over the limit is refused before it is sent, even with the key.
    let host = host_of(&keyed.origin).to_owned();
    let mut s = TcpStream::connect(&host).await.unwrap();
    let head = publish_head(&host, Some(API_KEY), 4 * LIMIT);
    s.write_all(head.as_bytes()).await.unwrap();
    assert_eq!(status_within(&mut s, WAIT).await, Some(413));
    assert!(
        keyed
            .metric("pushnote_http_publish_refused_unread_total")
            .await
            >= 201
    );
    assert!(
        bare.metric("pushnote_http_publish_refused_unread_total")
            .await
            >= 200
    );
}

/// A forwarder with `--http` and `--metrics` on free ports and `extra` flags, run by `sh` with
/// `ulimit -n` at `descriptors` if given: (forwarder, its `/publish` URL, its `/metrics` URL).
fn forwarder_with_http(extra: &[&str], descriptors: Option<u32>) -> (Forwarder, String, String) {
    let mut cmd = match descriptors {
        None => Command::new(bin("pushnote-mq")),
        Some(n) => {
            let mut cmd = Command::new("sh");
            cmd.arg("-c")
                .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                .arg(bin("pushnote-mq"));
            cmd
        }
    };
    cmd.env("PUSHNOTE_MQ_API_KEY", API_KEY)
        .args(HTTP_FORWARDER_ARGS)
        .args(["--metrics", "127.0.0.1:0"])
        .args(extra);
    let fwd = forwarder_of(&mut cmd);
    let metrics = fwd.proc.value_after("/metrics at");
    let url = fwd.proc.value_after("/publish at");
    (fwd, url, metrics)
}

/// Sends the head of a `POST /publish` with the key and a 100-byte body, then one byte of the
/// body every 200 ms; the status of the answer, or `None` if none came within `limit`.
async fn trickle(host: &str, limit: Duration) -> Option<u16> {
    let mut s = TcpStream::connect(host).await.expect("connect");
    s.write_all(publish_head(host, Some(API_KEY), 100).as_bytes())
        .await
        .expect("write the head");
    let (mut reader, mut writer) = s.into_split();
    let sending = tokio::spawn(async move {
        for _ in 0..100 {
            if writer.write_all(b" ").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let mut head = [0u8; 12];
    let status = tokio::time::timeout(limit, reader.read_exact(&mut head))
        .await
        .ok()
        .and_then(|r| r.ok())
        .and_then(|_| std::str::from_utf8(&head[9..12]).ok()?.parse().ok());
    sending.abort();
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_body_from_a_key_holder_times_out_with_408() {
    let srv = single_server(&["--api-key", API_KEY, "--body-timeout", "1"]);
    let host = host_of(&srv.origin).to_owned();
    assert_eq!(trickle(&host, WAIT).await, Some(408), "the server");
    assert_eq!(
        srv.metric("pushnote_http_publish_body_timeouts_total")
            .await,
        1
    );
    let (_fwd, url, metrics) = forwarder_with_http(&["--body-timeout", "1"], None);
    assert_eq!(
        trickle(host_of(&url), WAIT).await,
        Some(408),
        "the forwarder"
    );
    assert_eq!(
        metric_at(&metrics, "pushnote_mq_http_body_timeouts_total").await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_forwarders_idle_http_connections_are_closed() {
    let (_fwd, url, metrics) =
        forwarder_with_http(&["--idle-timeout", "2", "--header-timeout", "30"], None);
    let mut held = Vec::new();
    for port in [host_of(&url), host_of(&metrics)] {
        // One that has finished a request (kept alive), one that never sends one.
        let mut finished = TcpStream::connect(port).await.unwrap();
        let health = format!("GET /health HTTP/1.1\r\nHost: {port}\r\n\r\n");
        finished.write_all(health.as_bytes()).await.unwrap();
        // Answered (200 once a server is connected, 503 before): the request is finished.
        assert!(status_within(&mut finished, WAIT).await.is_some());
        held.push((port.to_owned(), "idle after a request", finished));
        let silent = TcpStream::connect(port).await.unwrap();
        held.push((port.to_owned(), "idle from the start", silent));
    }
    for (port, what, s) in &mut held {
        assert!(closed_within(s, WAIT).await, "{port}: {what}");
    }
    let closed = metric_at(&metrics, "pushnote_mq_http_connections_closed_idle_total").await;
    assert!(closed >= 4, "{closed}");
}

/// `count` connections to `host` that each send one `GET /health` and then stay open, idle.
async fn idle_connections(host: &str, count: usize) -> Vec<TcpStream> {
    let mut held = Vec::with_capacity(count);
    for _ in 0..count {
        let mut s = TcpStream::connect(host).await.expect("connect");
        let health = format!("GET /health HTTP/1.1\r\nHost: {host}\r\n\r\n");
        let _ = s.write_all(health.as_bytes()).await;
        held.push(s);
    }
    held
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_http_connections_leave_the_forwarders_bus_its_descriptors() {
    // With 256 descriptors, 218 idle HTTP connections left new publishers without a
    // subscription and new servers without a bus.
    let (fwd, url, metrics) = forwarder_with_http(
        &["--idle-timeout", "600", "--header-timeout", "600"],
        Some(256),
    );
    let mut held = idle_connections(host_of(&url), 250).await;
    held.extend(idle_connections(host_of(&metrics), 50).await);
    let srv = server(&fwd, &[]);
    let bus = publisher(&fwd.sub);
    let mut client = tokio::time::timeout(WAIT, Client::connect(&srv))
        .await
        .expect("a session on a server that has just connected");
    client.subscribe(&token("fd")).await;
    sync(&bus, &mut client, Some("fd")).await;
    // And the HTTP side still answers, having closed the connections idle the longest.
    assert_eq!(
        http_get(&format!("http://{}/health", host_of(&url)))
            .await
            .0,
        200
    );
    assert!(metric_at(&metrics, "pushnote_mq_http_connections_evicted_total").await > 0);
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickled_publish_bodies_give_way_to_sessions_and_health() {
    // With 256 descriptors, 336 connections trickling bodies shut out every new session and
    // made /health time out for 32 s: a request still sending its body held its descriptor
    // as if it were a session.
    let args = single_args(&[
        "--api-key",
        API_KEY,
        "--body-timeout",
        "600",
        "--idle-timeout",
        "600",
        "--header-timeout",
        "600",
        "--secret",
        SECRET,
    ]);
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("ulimit -n 256 && exec \"$0\" \"$@\"")
        .arg(bin("pushnote-server"))
        .args(&args)
        .env_remove("PUSHNOTE_SECRET");
    let srv = spawn_server(&mut cmd, true);
    let host = host_of(&srv.origin).to_owned();
    let mut held = Vec::new();
    for _ in 0..340 {
        let mut s = TcpStream::connect(&host).await.expect("connect");
        let _ = s
            .write_all(publish_head(&host, Some(API_KEY), 1000).as_bytes())
            .await;
        let _ = s.write_all(b"[").await;
        held.push(s);
    }
    let health = tokio::time::timeout(WAIT, http_get(&format!("{}/health", srv.origin)))
        .await
        .expect("/health answers while bodies trickle");
    assert_eq!(health.0, 200);
    let bus = publisher(srv.bus.as_deref().expect("single"));
    let mut client = tokio::time::timeout(WAIT, Client::connect(&srv))
        .await
        .expect("a new session while bodies trickle");
    sync(&bus, &mut client, None).await;
    assert!(srv.metric("pushnote_http_connections_evicted_total").await > 0);
    drop(held);
}
