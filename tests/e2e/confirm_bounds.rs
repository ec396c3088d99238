//! The bounds of the forwarder's confirm socket (`--confirm`, PROTOCOL §2b), each reached
//! by a real app, and `POST /publish` with `--confirm` refusing a batch whole.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pushnote::wire;
use serde_json::json;

use crate::support::*;

/// A forwarder with `--confirm` and `--metrics` on free ports, and `extra` flags: the
/// forwarder, its confirm endpoint and its metrics URL.
fn confirming_forwarder(extra: &[&str]) -> (Forwarder, String, String) {
    let metrics = format!("127.0.0.1:{}", free_port());
    let args = [
        "--sub",
        "tcp://127.0.0.1:*",
        "--pub",
        "tcp://127.0.0.1:*",
        "--confirm",
        "tcp://127.0.0.1:*",
        "--metrics",
        &metrics,
    ];
    let fwd = forwarder_with(&[&args[..], extra].concat());
    let confirm = fwd.proc.value_after("confirmed publishes at");
    (fwd, confirm, format!("http://{metrics}/metrics"))
}

fn dealer(ctx: &zmq::Context, endpoint: &str) -> zmq::Socket {
    let dealer = ctx.socket(zmq::DEALER).unwrap();
    dealer.set_rcvtimeo(WAIT.as_millis() as i32).unwrap();
    dealer.set_sndtimeo(WAIT.as_millis() as i32).unwrap();
    dealer.set_linger(0).unwrap();
    dealer.connect(endpoint).unwrap();
    dealer
}

/// An app that sends requests and never reads a reply costs the forwarder `--confirm-hwm`
/// replies: past them, its replies are dropped and counted, while the forwarder goes on
/// serving another app's confirmed publishes and the plain publishers.
#[tokio::test]
async fn an_app_that_never_reads_its_replies_has_them_dropped_and_counted() {
    let (fwd, confirm, url) = confirming_forwarder(&["--confirm-hwm", "8"]);
    let srv = server(&fwd, &[]);
    let plain = publisher(&fwd.sub);
    let mut c = Client::connect(&srv).await;
    c.subscribe(&token("r")).await;
    sync(&plain, &mut c, Some("r")).await;

    let ctx = zmq::Context::new();
    let greedy = ctx.socket(zmq::DEALER).unwrap();
    greedy.set_rcvhwm(1).unwrap();
    greedy.set_rcvbuf(4096).unwrap(); // the kernel holds little for it either
    greedy.set_sndtimeo(WAIT.as_millis() as i32).unwrap();
    greedy.set_linger(0).unwrap();
    greedy.connect(&confirm).unwrap();
    let dropped = "pushnote_mq_confirm_replies_dropped_total";
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut sent = 0u64;
    while metric_at(&url, dropped).await == 0 {
        assert!(
            Instant::now() < deadline,
            "no reply dropped after {sent} requests unread"
        );
        for _ in 0..2000 {
            greedy
                .send_multipart([&b"1"[..], b"chan:greedy\0", b"{}"], 0)
                .expect("the forwarder keeps reading requests");
            sent += 1;
        }
    }

    // Another app is still served, and so are plain publishers.
    let good = pushnote::Publisher::builder(&fwd.sub)
        .confirm(&confirm)
        .connect()
        .unwrap();
    let positions = good.notify_confirmed(&json!({"n": 1}), ["r"]).unwrap();
    assert_eq!(positions.len(), 1);
    assert_eq!(c.next().await, json!({"n": 1}));
    plain.notify(&json!({"n": 2}), ["r"]).unwrap();
    assert_eq!(c.next().await, json!({"n": 2}));
    // The greedy app's requests are still read, its replies still dropped.
    let before = metric_at(&url, dropped).await;
    for _ in 0..100 {
        greedy
            .send_multipart([&b"1"[..], b"chan:greedy\0", b"{}"], 0)
            .unwrap();
    }
    wait_metric_at(&url, dropped, before + 1).await;
    // Every request was read (the other app's too).
    let requests = "pushnote_mq_confirm_requests_total";
    wait_metric_at(&url, requests, sent + 101).await;
}

/// A request over `--max-message-bytes`, every frame together, is refused `too_large`, counted,
/// and the connection stays for the next request; a single frame over it closes the app's
/// connection (ZeroMQ's check, before the request is whole: no reply), and the app's next
/// request, on its connection made again, is confirmed.
#[tokio::test]
async fn a_request_over_max_message_bytes_is_refused() {
    let (fwd, confirm, url) = confirming_forwarder(&["--max-message-bytes", "4096"]);
    let srv = server(&fwd, &[]);
    let plain = publisher(&fwd.sub);
    let mut c = Client::connect(&srv).await;
    c.subscribe(&token("r")).await;
    sync(&plain, &mut c, Some("r")).await;

    let ctx = zmq::Context::new();
    let app = dealer(&ctx, &confirm);
    let body = |n: usize| {
        let data = json!("x".repeat(n));
        String::from_utf8(wire::encode_body(wire::Target::User(""), &data).unwrap()).unwrap()
    };
    // Each frame within the limit, all of them over it.
    let half = body(2100);
    let reply = {
        app.send_multipart(
            [&b"big"[..], b"user:r\0", half.as_bytes(), half.as_bytes()],
            0,
        )
        .unwrap();
        app.recv_multipart(0).expect("a reply")
    };
    // Two bodies make a topic of the second: out of shape, but too large first.
    assert_eq!(reply[0], b"big");
    assert_eq!(String::from_utf8_lossy(&reply[1]), "too_large");
    assert!(String::from_utf8_lossy(&reply[2]).contains("4096"));
    let too_large = "pushnote_mq_confirm_refused_total{reason=\"too_large\"}";
    assert_eq!(metric_at(&url, too_large).await, 1);
    // The same connection takes the next request.
    let small = body(10);
    app.send_multipart([&b"ok-1"[..], b"user:r\0", small.as_bytes()], 0)
        .unwrap();
    let reply = app.recv_multipart(0).expect("a reply");
    assert_eq!(reply[..2], [b"ok-1".to_vec(), b"ok".to_vec()]);

    // One frame over the limit: ZeroMQ closes the connection.
    let monitor = "inproc://confirm-app-events";
    app.monitor(monitor, zmq::SocketEvent::DISCONNECTED as i32)
        .unwrap();
    let events = ctx.socket(zmq::PAIR).unwrap();
    events.set_rcvtimeo(WAIT.as_millis() as i32).unwrap();
    events.connect(monitor).unwrap();
    let huge = body(5000);
    app.send_multipart([&b"huge"[..], b"user:r\0", huge.as_bytes()], 0)
        .unwrap();
    let event = events.recv_multipart(0).expect("the connection closed");
    assert_eq!(
        u16::from_le_bytes([event[0][0], event[0][1]]),
        zmq::SocketEvent::DISCONNECTED.to_raw()
    );
    // The app's socket connects again by itself; a request sent while it did may be lost
    // with the old connection, so it is sent again until answered.
    let deadline = Instant::now() + WAIT;
    app.set_rcvtimeo(500).unwrap();
    let reply = loop {
        assert!(
            Instant::now() < deadline,
            "no reply after the connection closed"
        );
        app.send_multipart([&b"ok-2"[..], b"user:r\0", small.as_bytes()], 0)
            .unwrap();
        match app.recv_multipart(0) {
            Ok(reply) => break reply,
            Err(zmq::Error::EAGAIN) => continue,
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(reply[..2], [b"ok-2".to_vec(), b"ok".to_vec()]);
    // Nothing of the huge request reached the page: the first small one, then the next.
    for _ in 0..2 {
        let got = c.next().await;
        assert_eq!(got.as_str().map(str::len), Some(10), "{got}");
    }
    assert_eq!(metric_at(&url, too_large).await, 1);
}

/// Many malformed requests make about one log line a second, which counts them all.
#[tokio::test]
async fn refusals_are_logged_at_most_once_a_second() {
    let confirm = format!("tcp://127.0.0.1:{}", free_port());
    let mut child = Command::new(bin("pushnote-mq"))
        .args(["--sub", "tcp://127.0.0.1:*", "--pub", "tcp://127.0.0.1:*"])
        .args(["--confirm", &confirm, "--log-format", "json"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = Arc::new(Mutex::new(Vec::<serde_json::Value>::new()));
    let stderr = child.stderr.take().unwrap();
    let kept = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Ok(v) = serde_json::from_str(&line) {
                kept.lock().unwrap().push(v);
            }
        }
    });
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _child = Kill(child);

    let ctx = zmq::Context::new();
    let app = dealer(&ctx, &confirm);
    const N: u64 = 600;
    let started = Instant::now();
    for i in 0..N {
        app.send_multipart([&i.to_be_bytes()[..], b"no-nul", b"{}"], 0)
            .unwrap();
        let reply = app.recv_multipart(0).expect("a reply");
        assert_eq!(reply[1], b"malformed");
    }
    // Every refusal is in a line, within a second or so of the last.
    let refusals = |lines: &[serde_json::Value]| -> Vec<u64> {
        lines
            .iter()
            .filter_map(|l| l["fields"]["malformed"].as_u64())
            .collect()
    };
    let deadline = Instant::now() + WAIT;
    loop {
        let counted: u64 = refusals(&lines.lock().unwrap()).iter().sum();
        if counted == N {
            break;
        }
        assert!(counted < N && Instant::now() < deadline, "{counted} of {N}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let took = started.elapsed().as_secs() + 1;
    let logged = refusals(&lines.lock().unwrap()).len() as u64;
    assert!(
        logged <= took + 1,
        "{logged} lines for {N} refusals over {took} s"
    );
}

/// With `--confirm`, `POST /publish` checks every message of a batch as a confirm request
/// before publishing any: one too large for a request refuses the batch whole.
#[tokio::test]
async fn http_publish_with_confirm_refuses_a_batch_whole() {
    let metrics = format!("127.0.0.1:{}", free_port());
    let mut cmd = Command::new(bin("pushnote-mq"));
    cmd.env("PUSHNOTE_MQ_API_KEY", API_KEY).args([
        "--sub",
        "tcp://127.0.0.1:*",
        "--pub",
        "tcp://127.0.0.1:*",
        "--confirm",
        "tcp://127.0.0.1:*",
        "--http",
        "127.0.0.1:0",
        "--max-message-bytes",
        "4096",
        "--metrics",
        &metrics,
    ]);
    let proc = Proc::spawn(&mut cmd);
    let url = proc.value_after("/publish at");
    let auth = format!("Bearer {API_KEY}");
    let headers = [
        ("Content-Type", "application/json"),
        ("Authorization", &auth),
    ];
    // Each user's bus message fits; the request of all of them with the body does not.
    let users: Vec<String> = (0..80).map(|i| format!("u{i:02}")).collect();
    let body = json!([
        {"to": "all", "data": 1},
        {"to": "users", "users": users, "data": "x".repeat(3000)},
    ]);
    let reply = http("POST", &url, &headers, &body.to_string()).await;
    assert_eq!(reply.status, 413, "{}", reply.body);
    let v: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(v["index"], 1, "{v}");
    let metrics = format!("http://{metrics}/metrics");
    assert_eq!(
        metric_at(&metrics, "pushnote_mq_confirmed_messages_total").await,
        0,
        "nothing was published"
    );
    let body = json!([{"to": "all", "data": 2}]);
    let reply = http("POST", &url, &headers, &body.to_string()).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let v: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(v["positions"][0][0]["offset"], 1, "the first to everyone");
}
