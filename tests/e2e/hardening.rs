//! What an attacker or a careless client tried, and how each attempt ends: idle and HTTP/2
//! connections, descriptors run short, IPv6, tokens from the future, the forwarder's bounds,
//! and logs fit for files and collectors.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

/// The host and port of a server's origin (`http://HOST:PORT`).
fn host(server: &Server) -> &str {
    server.origin.strip_prefix("http://").expect("http origin")
}

/// Reads one HTTP/1.1 response (chunked, or with a Content-Length) off `s`: (status, body).
async fn read_response(s: &mut TcpStream) -> (u16, String) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let read = async {
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let status = head[9..12].parse().expect("status");
                if head.contains("transfer-encoding: chunked") {
                    if buf.ends_with(b"\r\n0\r\n\r\n") {
                        let body = String::from_utf8_lossy(&buf[end + 4..]);
                        return (status, dechunk(&body));
                    }
                    let n = s.read(&mut chunk).await.expect("read");
                    assert!(n > 0, "connection closed mid-response: {buf:?}");
                    buf.extend_from_slice(&chunk[..n]);
                    continue;
                }
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map_or(0, |v| v.trim().parse().expect("content-length"));
                if buf.len() >= end + 4 + length {
                    let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + length]);
                    return (status, body.into_owned());
                }
            }
            let n = s.read(&mut chunk).await.expect("read");
            assert!(n > 0, "connection closed mid-response: {buf:?}");
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(WAIT, read)
        .await
        .expect("response in time")
}

async fn request(s: &mut TcpStream, method: &str, path: &str, host: &str) {
    let req = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed_after_the_idle_timeout() {
    let fwd = forwarder();
    let srv = server(&fwd, &["--idle-timeout", "1", "--header-timeout", "30"]);
    let host = host(&srv).to_owned();
    // A connection that has finished a request, and one that never sends one.
    let mut finished = TcpStream::connect(&host).await.unwrap();
    request(&mut finished, "GET", "/sockjs/info", &host).await;
    assert_eq!(read_response(&mut finished).await.0, 200);
    let mut silent = TcpStream::connect(&host).await.unwrap();
    assert!(
        closed_within(&mut finished, WAIT).await,
        "idle after a request"
    );
    assert!(
        closed_within(&mut silent, WAIT).await,
        "idle from the start"
    );
}

#[tokio::test]
async fn requests_in_progress_and_websockets_are_never_idle() {
    // Idle after 1 s, but a polling request waits 3 s for its heartbeat, and a WebSocket
    // session sends nothing for longer than that.
    let (fwd, srv, bus, mut ws) = stack(&[
        "--idle-timeout",
        "1",
        "--heartbeat",
        "3",
        "--header-timeout",
        "30",
    ])
    .await;
    let host = host(&srv).to_owned();
    let mut poll = TcpStream::connect(&host).await.unwrap();
    let session = format!("/sockjs/000/{}/xhr", rand_id());
    request(&mut poll, "POST", &session, &host).await;
    assert_eq!(read_response(&mut poll).await, (200, "o\n".to_owned()));
    let started = Instant::now();
    request(&mut poll, "POST", &session, &host).await;
    assert_eq!(read_response(&mut poll).await, (200, "h\n".to_owned()));
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "the heartbeat answered the poll"
    );
    // The WebSocket session has been silent all along.
    bus.notify_all(&json!({"still": "here"})).unwrap();
    loop {
        let v = ws.next().await;
        if v == json!({"still": "here"}) {
            break;
        }
    }
    drop(fwd);
}

#[tokio::test]
async fn http2_is_refused_and_its_connection_closed() {
    let fwd = forwarder();
    let srv = server(&fwd, &["--idle-timeout", "60", "--header-timeout", "60"]);
    // The prior-knowledge preface, a SETTINGS frame, then the start of a HEADERS frame that
    // never completes, in one write: the server may close as soon as it reads the preface,
    // and a later write would then meet a broken pipe.
    let mut s = TcpStream::connect(host(&srv)).await.unwrap();
    let mut h2 = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    h2.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    h2.extend_from_slice(&[0, 0, 0x40, 1, 4, 0, 0, 0, 1]);
    s.write_all(&h2).await.unwrap();
    assert!(
        closed_within(&mut s, WAIT).await,
        "an HTTP/2 connection stays open"
    );
    // An upgrade to h2c over HTTP/1.1 is answered as HTTP/1.1.
    let reply = http(
        "GET",
        &format!("{}/sockjs/info", srv.origin),
        &[
            ("Upgrade", "h2c"),
            ("HTTP2-Settings", "AAMAAABkAARAAAAAAAIAAAAA"),
        ],
        "",
    )
    .await;
    assert_eq!(reply.status, 200);
}

#[tokio::test]
async fn idle_connections_give_way_when_descriptors_run_out() {
    let fwd = forwarder();
    let mut args = server_args(&fwd, "0");
    args.extend_from_slice(&["--idle-timeout", "600", "--header-timeout", "600"]);
    // The server runs with 128 descriptors; the test holds more idle connections than that.
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("ulimit -n 128 && exec \"$0\" \"$@\"")
        .arg(bin("pushnote-server"))
        .args(&args)
        .env_remove("PUSHNOTE_SECRET");
    let srv = spawn_server(&mut cmd, false);
    let host = host(&srv).to_owned();
    let mut idle = Vec::new();
    for _ in 0..200 {
        let mut s = TcpStream::connect(&host).await.unwrap();
        request(&mut s, "GET", "/sockjs/info", &host).await;
        idle.push(s);
    }
    // The server accepts and answers what its descriptors allow; the rest wait in the
    // backlog, the new session last of all.
    let bus = publisher(&fwd.sub);
    let mut client = tokio::time::timeout(WAIT, Client::connect(&srv))
        .await
        .expect("a new session is accepted while idle connections hold the descriptors");
    client.subscribe(&token("fd")).await;
    sync(&bus, &mut client, Some("fd")).await;
    // To make room, the server closed idle ones (after answering them, or before their
    // request was read: either is an idle connection).
    let closes = idle.iter_mut().map(|s| {
        Box::pin(async move {
            let mut chunk = [0u8; 4096];
            while let Ok(n) = s.read(&mut chunk).await {
                if n == 0 {
                    break;
                }
            }
        })
    });
    tokio::time::timeout(WAIT, futures_util::future::select_all(closes))
        .await
        .expect("idle connections were closed to make room");
}

#[tokio::test]
async fn every_interface_means_ipv6_and_ipv4() {
    let srv = spawn_server(
        &mut server_cmd(&[
            "--port",
            "0",
            "--single",
            "--mq_socket",
            "tcp://127.0.0.1:*",
        ]),
        true,
    );
    let port = srv.origin.rsplit(':').next().unwrap().to_owned();
    for address in [format!("127.0.0.1:{port}"), format!("[::1]:{port}")] {
        let (status, body) = http_get(&format!("http://{address}/sockjs/info")).await;
        assert_eq!(status, 200, "{address}");
        assert!(body.contains("websocket"), "{address}: {body}");
    }
}

#[tokio::test]
async fn a_token_stamped_in_the_future_is_invalid_past_the_clock_skew() {
    let (_fwd, _srv, _bus, mut client) = stack(&["--token-max-skew", "60"]).await;
    let now = now();
    let century = 100 * 365 * 86_400;
    for ahead in [century, 61] {
        let t = signer().tokenize_at("future", now + ahead).unwrap();
        let reply = client.subscribe(&t).await;
        assert_eq!(reply["name"], "pushnote:error", "{ahead}: {reply}");
        assert_eq!(reply["data"]["code"], "invalid_token", "{ahead}: {reply}");
    }
    // Within the skew, a clock slightly ahead is fine.
    let t = signer().tokenize_at("future", now + 30).unwrap();
    assert_eq!(client.subscribe(&t).await["name"], "pushnote:subscribed");
}

/// A forwarder with metrics; returns it and its metrics URL.
fn forwarder_with_metrics(extra: &[&str]) -> (Forwarder, String) {
    let mut args = vec![
        "--sub",
        "tcp://127.0.0.1:*",
        "--pub",
        "tcp://127.0.0.1:*",
        "--metrics",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(extra);
    let fwd = forwarder_with(&args);
    let url = fwd.proc.value_after("metrics at");
    (fwd, url)
}

/// Waits until `name` at `url` satisfies `ok`; returns its value.
async fn wait_for(url: &str, name: &str, ok: impl Fn(u64) -> bool) -> u64 {
    let deadline = Instant::now() + WAIT;
    loop {
        let v = metric_at(url, name).await;
        if ok(v) {
            return v;
        }
        assert!(Instant::now() < deadline, "{name} stayed at {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_forwarder_drops_and_counts_what_is_over_its_limits() {
    let (fwd, metrics) =
        forwarder_with_metrics(&["--max-topic-bytes", "64", "--max-message-bytes", "4096"]);
    let ctx = zmq::Context::new();
    // A server's side: everything the forwarder sends on.
    let sub = ctx.socket(zmq::SUB).unwrap();
    sub.set_subscribe(b"").unwrap();
    sub.set_rcvtimeo(WAIT.as_millis() as i32).unwrap();
    sub.connect(&fwd.publish).unwrap();
    let app = raw_publisher(&ctx, &fwd.sub, FORWARDER_SUBSCRIPTION);
    let body = br#"{"name":"notify","data":1}"#;
    let long_topic = format!("user:{}\0", "x".repeat(100));
    let huge = format!(r#"{{"name":"notify","data":"{}"}}"#, "y".repeat(5000));
    // Wait until the forwarder's PUB side has our SUB: send probes until one arrives.
    let deadline = Instant::now() + WAIT;
    sub.set_rcvtimeo(100).unwrap();
    loop {
        app.send_multipart([&b"all\0"[..], br#"{"name":"notify_all","data":0}"#], 0)
            .unwrap();
        if sub.recv_multipart(0).is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "the forwarder never forwarded");
    }
    while sub.recv_multipart(0).is_ok() {}
    let received_before = metric_at(&metrics, "pushnote_mq_messages_received_total").await;
    app.send_multipart([long_topic.as_bytes(), body], 0)
        .unwrap();
    app.send_multipart([&b"user:1\0"[..], huge.as_bytes()], 0)
        .unwrap();
    app.send_multipart([&b"user:1\0"[..], body, b"third frame"], 0)
        .unwrap();
    app.send_multipart([&b"no terminator"[..], body], 0)
        .unwrap();
    app.send_multipart([&b"user:1\0"[..], body], 0).unwrap();
    wait_for(&metrics, "pushnote_mq_messages_received_total", |n| {
        n >= received_before + 5
    })
    .await;
    let dropped =
        |reason: &str| format!("pushnote_mq_messages_dropped_total{{reason=\"{reason}\"}}");
    assert_eq!(metric_at(&metrics, &dropped("topic_too_long")).await, 1);
    assert_eq!(metric_at(&metrics, &dropped("too_large")).await, 1);
    assert_eq!(metric_at(&metrics, &dropped("malformed")).await, 2);
    // Only the valid message went on.
    sub.set_rcvtimeo(WAIT.as_millis() as i32).unwrap();
    let frames = sub.recv_multipart(0).expect("the valid message");
    assert!(frames[0].starts_with(b"user:1\0"), "{frames:?}");
    assert_eq!(frames[1], body);
    sub.set_rcvtimeo(300).unwrap();
    assert!(sub.recv_multipart(0).is_err(), "nothing else went on");
}

#[tokio::test]
async fn the_forwarders_history_is_bounded_in_bytes_and_forgets_idle_topics() {
    let budget = 1 << 20;
    let (fwd, metrics) = forwarder_with_metrics(&[
        "--history-memory",
        "1",
        "--history-ttl",
        "1",
        "--topic-idle",
        "1",
    ]);
    let ctx = zmq::Context::new();
    let app = raw_publisher(&ctx, &fwd.sub, FORWARDER_SUBSCRIPTION);
    let body = br#"{"name":"notify","data":1}"#;
    // 2,000 topics of 900 bytes and more: about twice the budget.
    for i in 0..2_000 {
        let topic = format!("user:{i:0>900}\0");
        app.send_multipart([topic.as_bytes(), body], 0).unwrap();
    }
    wait_for(&metrics, "pushnote_mq_messages_received_total", |n| {
        n >= 2_000
    })
    .await;
    let bytes = metric_at(&metrics, "pushnote_mq_history_bytes").await;
    assert!(bytes > 0 && bytes <= budget, "{bytes} of {budget}");
    assert!(metric_at(&metrics, "pushnote_mq_topics_forgotten_total").await > 0);
    // The messages age out, then their topics, idle, are forgotten.
    wait_for(&metrics, "pushnote_mq_history_topics", |n| n == 0).await;
    assert_eq!(metric_at(&metrics, "pushnote_mq_history_bytes").await, 0);
    assert_eq!(metric_at(&metrics, "pushnote_mq_history_messages").await, 0);
}

/// The first `n` lines a server started with `extra` flags writes on standard error.
fn server_log_lines(extra: &[&str], n: usize) -> Vec<String> {
    let mut child = server_cmd(
        &[
            &["--port", "0", "--address", "127.0.0.1", "--single"][..],
            &["--mq_socket", "tcp://127.0.0.1:*"],
            extra,
        ]
        .concat(),
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let lines: Vec<String> = (0..n)
        .map(|_| rx.recv_timeout(WAIT).expect("a log line in time"))
        .collect();
    let _ = child.kill();
    let _ = child.wait();
    lines
}

#[test]
fn logs_into_a_file_or_pipe_have_no_colour_codes_and_json_is_one_object_per_line() {
    // Without a secret the server warns at start: one line at least.
    let text = server_log_lines(&[], 1);
    assert!(text[0].contains("no token secret"), "{text:?}");
    assert!(!text[0].contains('\u{1b}'), "colour codes in {:?}", text[0]);
    let json = server_log_lines(&["--log-format", "json"], 1);
    let line: Value = serde_json::from_str(&json[0]).expect("a JSON log line");
    assert_eq!(line["level"], "WARN", "{line}");
    assert!(
        line["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("no token secret")),
        "{line}"
    );
}
