//! The real `pushnote-bench fanout` against a real pushnote server (started in this process,
//! its bus bound on an ephemeral port): what the load counts is what the server delivered.
//! And `pushnote-bench forwarder` through a real forwarder.

use std::process::Command;

use pushnote::Signer;
use pushnote_server::{BusMode, Server, ServerConfig, TokenPolicy};
use serde_json::Value;

const SECRET: &str = "bench-test-secret";

/// Serves on an ephemeral port until the test ends; returns the SockJS URL and bus endpoint.
fn server() -> (String, String) {
    server_with(|_| {})
}

/// [`server`], with `adjust` applied to its configuration first.
fn server_with(adjust: impl FnOnce(&mut ServerConfig)) -> (String, String) {
    let mut config = ServerConfig::new("tcp://127.0.0.1:*", BusMode::Bind);
    config.tokens = Some(TokenPolicy {
        signer: Signer::new(SECRET).unwrap(),
        max_age: None,
        max_skew: pushnote::DEFAULT_MAX_CLOCK_SKEW,
        opaque: false,
    });
    adjust(&mut config);
    let server = Server::new(config).unwrap();
    let bus = server.bus_endpoint().to_owned();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            server.run(listener, std::future::pending()).await.unwrap();
        });
    });
    (format!("http://127.0.0.1:{port}/sockjs"), bus)
}

/// Runs `pushnote-bench fanout` with `args` and returns its JSON result line.
fn bench(url: &str, bus: &str, args: &[&str]) -> Value {
    run_bench(&[&["fanout", "--url", url, "--bus", bus], args].concat())
}

/// Runs `pushnote-bench` with `args`, checks that it succeeded, and returns its JSON line.
fn run_bench(args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_pushnote-bench"))
        .args(args)
        .env("PUSHNOTE_SECRET", SECRET)
        .output()
        .expect("run pushnote-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bench failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .find(|l| l.starts_with('{'))
        .expect("a JSON line");
    serde_json::from_str(line).unwrap()
}

fn n(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or_else(|| panic!("{key} in {v}"))
}

fn assert_nothing_lost(r: &Value) {
    assert_eq!(
        n(r, "lost") + n(r, "duplicated") + n(r, "reordered"),
        0,
        "{r}"
    );
}

/// At least 10 messages went out, each reached all `sessions` once, in order, nothing lost,
/// with latencies that make sense.
fn assert_every_session_got_everything(r: &Value, sessions: u64) {
    let sent = n(r, "messages_sent");
    assert!(sent >= 10, "{r}");
    assert_eq!(n(r, "deliveries"), sessions * sent, "{r}");
    assert_nothing_lost(r);
    let (p50, max) = (n(r, "latency_p50_us"), n(r, "latency_max_us"));
    assert!(0 < p50 && p50 <= max && max < 5_000_000, "{r}");
}

#[test]
fn every_broadcast_is_counted_once_per_session_with_its_latency() {
    let (url, bus) = server();
    let r = bench(
        &url,
        &bus,
        &["--sessions", "40", "--rate", "20", "--duration", "1"],
    );
    assert_every_session_got_everything(&r, 40);
}

#[test]
fn targeted_messages_reach_their_subscribed_user_only() {
    let (url, bus) = server();
    let r = bench(
        &url,
        &bus,
        &[
            "--sessions",
            "30",
            "--targeted",
            "--rate",
            "50",
            "--duration",
            "1",
        ],
    );
    let sent = n(&r, "messages_sent");
    assert!(sent >= 25, "{r}");
    assert_eq!(
        n(&r, "deliveries"),
        sent,
        "each message reaches one session: {r}"
    );
    assert_nothing_lost(&r);
}

#[test]
fn channel_messages_reach_every_session_of_the_channel_and_are_read_from_their_envelopes() {
    let (url, bus) = server();
    let r = bench(
        &url,
        &bus,
        &[
            "--sessions",
            "40",
            "--channel",
            "bench",
            "--rate",
            "20",
            "--duration",
            "1",
        ],
    );
    assert_eq!(r["mode"], "channel", "{r}");
    assert_eq!(r["channel"], "bench", "{r}");
    assert_every_session_got_everything(&r, 40);
}

#[test]
fn a_channel_at_the_maximum_rate_is_paced_by_what_its_slowest_session_read() {
    // Without --rate the publisher stays at most --window messages ahead of the slowest
    // session: were the envelopes not read, it would stop after the first 4.
    let (url, bus) = server();
    let r = bench(
        &url,
        &bus,
        &[
            "--sessions",
            "20",
            "--channel",
            "fast",
            "--window",
            "4",
            "--duration",
            "1",
        ],
    );
    let sent = n(&r, "messages_sent");
    assert!(sent >= 50, "{r}");
    assert_eq!(n(&r, "deliveries"), 20 * sent, "{r}");
    assert_nothing_lost(&r);
}

#[test]
fn a_private_channel_is_joined_with_a_channel_token_signed_with_the_secret() {
    let (url, bus) = server();
    let r = bench(
        &url,
        &bus,
        &[
            "--sessions",
            "10",
            "--channel",
            "private-bench",
            "--rate",
            "20",
            "--duration",
            "1",
        ],
    );
    let sent = n(&r, "messages_sent");
    assert!(sent >= 10, "{r}");
    assert_eq!(n(&r, "deliveries"), 10 * sent, "{r}");
    assert_nothing_lost(&r);
}

#[test]
fn sessions_in_a_presence_channel_count_every_broadcast_as_without_it() {
    // 500 sessions joining, 200 at a time: many are told of others joining before their own
    // reply.
    let (url, bus) = server();
    let r = bench(
        &url,
        &bus,
        &[
            "--sessions",
            "500",
            "--presence-channel",
            "presence-bench",
            "--rate",
            "20",
            "--duration",
            "1",
        ],
    );
    assert_eq!(r["presence_channel"], "presence-bench", "{r}");
    assert_every_session_got_everything(&r, 500);
}

#[test]
fn a_channel_the_server_would_refuse_is_refused_before_connecting() {
    // Nothing listens at the URL: the name is checked first.
    for args in [
        &["--channel", "no spaces"][..],
        &["--channel", "bench", "--bus-format", "original"][..],
        &["--channel", "bench", "--targeted", "--rate", "1"][..],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_pushnote-bench"))
            .args([
                "fanout",
                "--url",
                "http://127.0.0.1:9/sockjs",
                "--sessions",
                "1",
            ])
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !err.contains("connecting"),
            "{args:?} refused before connecting: {err}"
        );
    }
}

#[test]
fn xhr_streaming_sessions_count_every_broadcast_across_their_responses() {
    // Responses end after 1 KiB, so each session reads several of them, opening the next.
    let (url, bus) = server_with(|c| c.sockjs.response_limit = 1024);
    let r = bench(
        &url,
        &bus,
        &[
            "--sessions",
            "10",
            "--transport",
            "xhr-streaming",
            "--rate",
            "200",
            "--duration",
            "1",
        ],
    );
    let sent = n(&r, "messages_sent");
    assert!(sent >= 100, "{r}");
    assert_eq!(n(&r, "deliveries"), 10 * sent, "{r}");
    assert_nothing_lost(&r);
}

#[test]
fn forwarder_mode_moves_every_message_through_a_real_forwarder() {
    let forwarder = pushnote_mq::Forwarder::start(&pushnote_mq::ForwarderConfig::new(
        "tcp://127.0.0.1:*",
        "tcp://127.0.0.1:*",
    ))
    .unwrap();
    let r = run_bench(&[
        "forwarder",
        "--app",
        forwarder.sub_endpoint(),
        "--server",
        forwarder.pub_endpoint(),
        "--messages",
        "20000",
        "--size",
        "100",
    ]);
    assert_eq!(n(&r, "received"), 20_000, "{r}");
    assert_eq!(
        n(&r, "lost") + n(&r, "lost_after_numbering") + n(&r, "reordered"),
        0,
        "{r}"
    );
    assert_eq!(forwarder.stop(), 20_000);
}

/// A child process killed when the test ends, however it ends.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn rtt_times_each_round_trip_through_a_real_echo() {
    use std::io::{BufRead, BufReader};
    let mut echo = Child(
        Command::new(env!("CARGO_BIN_EXE_pushnote-bench"))
            .args(["echo", "--listen", "127.0.0.1:0"])
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run pushnote-bench echo"),
    );
    // Kept open until the end: the echo writes what goes wrong there.
    let mut stderr = BufReader::new(echo.0.stderr.take().unwrap());
    let mut first = String::new();
    stderr.read_line(&mut first).unwrap();
    let addr = first
        .trim()
        .strip_prefix("echo: listening on ")
        .unwrap_or_else(|| panic!("the echo's address: {first}"));
    let r = run_bench(&["rtt", "--addr", addr, "--rate", "200", "--duration", "1"]);
    let sent = n(&r, "messages");
    assert!((150..=202).contains(&sent), "{r}");
    let (p50, p99, max) = (
        n(&r, "latency_p50_us"),
        n(&r, "latency_p99_us"),
        n(&r, "latency_max_us"),
    );
    assert!(
        0 < p50 && p50 <= p99 && p99 <= max && max < 5_000_000,
        "{r}"
    );
    drop(echo);
}

#[test]
fn rtt_without_an_echo_says_so() {
    // A port nothing listens on: bind one, then close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = Command::new(env!("CARGO_BIN_EXE_pushnote-bench"))
        .args([
            "rtt",
            "--addr",
            &format!("127.0.0.1:{port}"),
            "--duration",
            "1",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot connect to the echo"), "{err}");
}
