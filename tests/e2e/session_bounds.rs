//! What one client can take of a server: sessions per connection and per address, `/health`
//! when the server is full, distinct channels per server, and the memory channels leave
//! behind.
//!
//! The new bounds are set through their environment variables, the flags' fall-backs.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

/// A `--single` server on loopback with metrics, `args` and environment `env`.
fn single_with_env(args: &[&str], env: &[(&str, &str)]) -> Server {
    let mut cmd = server_cmd(&single_args(args));
    for (k, v) in env {
        cmd.env(k, v);
    }
    spawn_server(&mut cmd, true)
}

/// `host:port` of a server.
fn host(server: &Server) -> &str {
    server.origin.trim_start_matches("http://")
}

/// What opening session `id` over XHR polling on a connection of its own answered: its first
/// frame (`o`, or a close frame).
async fn open_xhr(server: &Server, id: &str, headers: &[(&str, &str)]) -> String {
    let url = format!("{}/000/{id}/xhr", server.url);
    let reply = http("POST", &url, headers, "").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.body
}

/// Counts the open frames and the 3004 close frames in what one connection has read.
fn opens_and_refusals(read: &str) -> (usize, usize) {
    (
        read.matches("\r\no\n\r\n").count(),
        read.matches("c[3004,\"Too many new sessions\"]").count(),
    )
}

#[tokio::test]
async fn one_connection_pipelining_new_sessions_is_held_to_its_bound_and_others_still_connect() {
    // No trusted proxy: the loopback test client is a client like any other. No rate per
    // address: this is the connection's bound alone.
    let server = single_with_env(
        &["--max-sessions", "1000"],
        &[
            ("PUSHNOTE_TRUSTED_PROXIES", ""),
            ("PUSHNOTE_MAX_SESSIONS_PER_CONNECTION", "8"),
            ("PUSHNOTE_SESSION_RATE_PER_ADDRESS", "0"),
        ],
    );
    const SENT: usize = 200;
    let mut conn = TcpStream::connect(host(&server)).await.unwrap();
    let route = server.url.trim_start_matches(&server.origin);
    let mut requests = String::new();
    for i in 0..SENT {
        requests.push_str(&format!(
            "POST {route}/000/pipelined{i}/xhr HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\n\r\n",
            host(&server)
        ));
    }
    conn.write_all(requests.as_bytes()).await.unwrap();
    let mut read = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let text = String::from_utf8_lossy(&read).into_owned();
        let (opened, refused) = opens_and_refusals(&text);
        if opened + refused >= SENT {
            assert_eq!(
                (opened, refused),
                (8, SENT - 8),
                "one connection opened more sessions than its bound"
            );
            break;
        }
        let mut buf = [0u8; 65536];
        let n = tokio::time::timeout_at(deadline, conn.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("{opened} opened, {refused} refused in time"))
            .unwrap();
        assert!(
            n > 0,
            "connection closed after {opened} opened, {refused} refused"
        );
        read.extend_from_slice(&buf[..n]);
    }
    assert!(server.metric("pushnote_sessions").await <= 8);
    assert_eq!(
        server
            .metric("pushnote_sessions_refused_connection_total")
            .await,
        (SENT - 8) as u64
    );
    // Another client's new pages still connect, over WebSocket and over XHR.
    let _page = Client::connect(&server).await;
    assert_eq!(open_xhr(&server, "another", &[]).await, "o\n");
    // The full server's 3003 was never the answer.
    assert_eq!(
        server.metric("pushnote_sessions_refused_full_total").await,
        0
    );
}

#[tokio::test]
async fn an_address_opens_sessions_at_its_rate_and_only_a_trusted_proxy_names_it() {
    // Behind the default trusted proxy (loopback), the address it forwards is the client's.
    let proxied = single_with_env(&[], &[("PUSHNOTE_SESSION_RATE_PER_ADDRESS", "1")]);
    let from = |a: &'static str| [("X-Forwarded-For", a)];
    // A burst of ten seconds' worth, then no more at once.
    for i in 0..10 {
        let first = open_xhr(&proxied, &format!("a{i}"), &from("203.0.113.9")).await;
        assert_eq!(first, "o\n", "session {i} of the burst");
    }
    let refused = open_xhr(&proxied, "a-over", &from("203.0.113.9")).await;
    assert_eq!(refused, "c[3004,\"Too many new sessions\"]\n");
    // Over WebSocket too: a close frame, no open frame.
    let request = {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut r = proxied.ws_url().into_client_request().unwrap();
        r.headers_mut()
            .insert("x-forwarded-for", "203.0.113.9".parse().unwrap());
        r
    };
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    {
        use futures_util::StreamExt;
        let first = tokio::time::timeout(WAIT, ws.next()).await.unwrap();
        let text = first.unwrap().unwrap().into_text().unwrap();
        assert_eq!(text, "c[3004,\"Too many new sessions\"]");
    }
    // Another address behind the same proxy is not held back.
    assert_eq!(open_xhr(&proxied, "b", &from("203.0.113.10")).await, "o\n");
    assert_eq!(
        proxied
            .metric("pushnote_sessions_refused_address_total")
            .await,
        2
    );

    // From a peer that is no trusted proxy, the header is the client's own word: ignored.
    let direct = single_with_env(
        &[],
        &[
            ("PUSHNOTE_SESSION_RATE_PER_ADDRESS", "1"),
            ("PUSHNOTE_TRUSTED_PROXIES", ""),
        ],
    );
    for i in 0..10 {
        let forged = format!("198.51.100.{i}");
        let first = open_xhr(&direct, &format!("d{i}"), &[("X-Forwarded-For", &forged)]).await;
        assert_eq!(first, "o\n");
    }
    let first = open_xhr(&direct, "d-over", &[("X-Forwarded-For", "198.51.100.99")]).await;
    assert_eq!(first, "c[3004,\"Too many new sessions\"]\n");
}

/// `/health`'s status code and `status`.
async fn health(server: &Server) -> (u16, Value) {
    let (code, body) = http_get(&format!("{}/health", server.origin)).await;
    let v: Value = serde_json::from_str(&body).expect("health json");
    (code, v["status"].clone())
}

/// Waits until `/health` answers `code` with `status`.
async fn wait_health(server: &Server, code: u16, status: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let now = health(server).await;
        if now == (code, json!(status)) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "health stayed {now:?}, not {code} {status}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn health_says_full_at_max_sessions_and_ready_again_once_sessions_leave() {
    let server = single_server(&["--max-sessions", "4"]);
    wait_health(&server, 200, "ready").await;
    let mut pages = Vec::new();
    for _ in 0..4 {
        pages.push(Client::connect(&server).await);
    }
    server.wait_metric("pushnote_sessions", 4).await;
    assert_eq!(
        health(&server).await,
        (503, json!("full")),
        "a full server must not be sent pages"
    );
    pages.truncate(2);
    wait_health(&server, 200, "ready").await;
}

/// Joins each of `channels` on `client` (sent at once) and returns the replies, in order.
async fn join_all(client: &mut Client, channels: &[String]) -> Vec<Value> {
    for c in channels {
        client
            .emit(json!({"name": "subscribe", "data": {"channel": c}}))
            .await;
    }
    let mut replies = Vec::new();
    while replies.len() < channels.len() {
        replies.push(client.next_unmarked().await);
    }
    replies
}

fn names(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("room-{i}")).collect()
}

#[tokio::test]
async fn a_server_holds_at_most_its_channels_and_the_ones_it_has_keep_working() {
    let server = single_with_env(&[], &[("PUSHNOTE_MAX_SERVER_CHANNELS", "20")]);
    let bus = publisher(server.bus.as_deref().unwrap());
    let (mut a, mut b, mut late) = (
        Client::connect(&server).await,
        Client::connect(&server).await,
        Client::connect(&server).await,
    );
    for r in join_all(&mut a, &names(0..10)).await {
        assert_eq!(r["name"], "pushnote:subscribed", "{r}");
    }
    for r in join_all(&mut b, &names(10..20)).await {
        assert_eq!(r["name"], "pushnote:subscribed", "{r}");
    }
    // One channel more than the server holds is refused, with the channel named.
    let refused = join_all(&mut late, &names(20..25)).await;
    for (r, name) in refused.iter().zip(names(20..25)) {
        assert_eq!(r["name"], "pushnote:error", "{r}");
        assert_eq!(r["data"]["code"], "channels_full", "{r}");
        assert_eq!(r["data"]["channel"], name.as_str());
    }
    assert_eq!(server.metric("pushnote_channels").await, 20);
    assert_eq!(
        server.metric("pushnote_channels_refused_full_total").await,
        5
    );
    // A channel that exists can still be joined, and its messages reach everyone in it.
    let joined = join_all(&mut late, &names(5..6)).await;
    assert_eq!(joined[0]["name"], "pushnote:subscribed", "{}", joined[0]);
    let marker = json!({"n": 1});
    let deadline = tokio::time::Instant::now() + WAIT;
    'published: loop {
        bus.publish("room-5", "e", &marker).unwrap();
        for page in [&mut a, &mut late] {
            let got = tokio::time::timeout(Duration::from_millis(300), page.next_unmarked()).await;
            match got {
                Ok(v) => assert_eq!(v["data"], marker, "{v}"),
                Err(_) => {
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "room-5 never reached"
                    );
                    continue 'published;
                }
            }
        }
        break;
    }
    // Once channels empty out, new ones can be made again.
    drop(a);
    server.wait_metric_at_most("pushnote_channels", 11).await;
    let again = join_all(&mut late, &names(30..31)).await;
    assert_eq!(again[0]["name"], "pushnote:subscribed", "{}", again[0]);
}

/// The resident memory of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Opens `sessions` pages, joins each to `each` channels of its own, starting at `first`,
/// and closes them all; returns the server's and the forwarder's memory at the peak and once
/// every channel is gone.
async fn channels_come_and_go(
    server: &Server,
    fwd: &Forwarder,
    first: usize,
    sessions: usize,
    each: usize,
) -> ((u64, u64), (u64, u64)) {
    let (server_pid, fwd_pid) = (server.proc.child.id(), fwd.proc.child.id());
    let mut pages = Vec::new();
    for _ in 0..sessions {
        pages.push(Client::connect(server).await);
    }
    for (i, page) in pages.iter_mut().enumerate() {
        let start = first + i * each;
        for r in join_all(page, &names(start..start + each)).await {
            assert_eq!(r["name"], "pushnote:subscribed", "{r}");
        }
    }
    assert_eq!(
        server.metric("pushnote_channels").await,
        (sessions * each) as u64
    );
    // The subscriptions reach the forwarder in the background.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let peak = (rss_kib(server_pid), rss_kib(fwd_pid));
    pages.clear();
    server.wait_metric_at_most("pushnote_sessions", 0).await;
    server.wait_metric_at_most("pushnote_channels", 0).await;
    assert_eq!(server.metric("pushnote_channel_subscriptions").await, 0);
    tokio::time::sleep(Duration::from_millis(500)).await;
    (peak, (rss_kib(server_pid), rss_kib(fwd_pid)))
}

#[tokio::test]
async fn the_memory_of_channels_is_given_back_when_their_sessions_leave() {
    const SESSIONS: usize = 60;
    const EACH: usize = 100;
    let fwd = forwarder();
    let server = server(&fwd, &[]);
    let before = (
        rss_kib(server.proc.child.id()),
        rss_kib(fwd.proc.child.id()),
    );
    let (peak, after) = channels_come_and_go(&server, &fwd, 0, SESSIONS, EACH).await;
    let channels = (SESSIONS * EACH) as f64;
    let per_channel =
        |peak: u64, before: u64| (peak.saturating_sub(before) * 1024) as f64 / channels;
    eprintln!(
        "{SESSIONS} sessions in {channels} channels: server {} -> {} -> {} KiB ({:.0} B a \
         channel), forwarder {} -> {} -> {} KiB ({:.0} B a channel)",
        before.0,
        peak.0,
        after.0,
        per_channel(peak.0, before.0),
        before.1,
        peak.1,
        after.1,
        per_channel(peak.1, before.1),
    );
    // What the allocator keeps of the first channels is what the next ones take: as many
    // channels again, all new, cost the processes less than the first did (the allocator's
    // arenas make it more than nothing).
    let (peak2, after2) = channels_come_and_go(&server, &fwd, 100_000, SESSIONS, EACH).await;
    eprintln!(
        "again: server {} -> {} KiB, forwarder {} -> {} KiB",
        peak2.0, after2.0, peak2.1, after2.1
    );
    let first_growth = peak.0.saturating_sub(before.0).max(1024);
    assert!(
        peak2.0 <= peak.0 + first_growth,
        "the server's memory grew from {} to {} KiB for channels that all went",
        peak.0,
        peak2.0
    );
    let fwd_growth = peak.1.saturating_sub(before.1).max(1024);
    assert!(
        peak2.1 <= peak.1 + fwd_growth,
        "the forwarder's memory grew from {} to {} KiB for channels that all went",
        peak.1,
        peak2.1
    );
}
