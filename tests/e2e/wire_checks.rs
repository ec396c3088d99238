//! What the binaries accept at start and on the wire: weak secrets and keys refused with their
//! own exit code, every line in the chosen log format, the message limit applied to messages
//! (not to the frames that carry them) on every transport, and the client protocol as
//! docs/PROTOCOL.md tells it.

use std::io::{BufRead, BufReader};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::support::*;

/// The exit code of a binary that refused a weak secret or key.
const WEAK_KEY: i32 = 78;

/// A binary's output lines, read as they come, and what it exited with.
struct Run {
    child: std::process::Child,
    stdout: mpsc::Receiver<String>,
    lines: Arc<Mutex<Vec<String>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Run {
    fn spawn(cmd: &mut Command) -> Run {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, stdout) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        let mut readers = Vec::new();
        for (stream, tx) in [
            (Box::new(out) as Box<dyn std::io::Read + Send>, Some(tx)),
            (Box::new(err), None),
        ] {
            let lines = lines.clone();
            readers.push(std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    lines.lock().unwrap().push(line.clone());
                    if let Some(tx) = &tx {
                        let _ = tx.send(line);
                    }
                }
            }));
        }
        Run {
            child,
            stdout,
            lines,
            readers,
        }
    }

    /// Waits for the exit, up to [`WAIT`]; `None` if it is still running.
    fn exit(&mut self) -> Option<ExitStatus> {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                // Its pipes end with it: the readers have the last lines once they end.
                for reader in self.readers.drain(..) {
                    let _ = reader.join();
                }
                return Some(status);
            }
            if std::time::Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn text(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// The next stdout line, parsed as JSON.
    fn next_json(&self) -> Value {
        let line = self
            .stdout
            .recv_timeout(WAIT)
            .expect("a start-up line in time");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn clean(bin_name: &str) -> Command {
    let mut cmd = Command::new(bin(bin_name));
    for var in [
        "PUSHNOTE_SECRET",
        "PUSHNOTE_OLD_SECRETS",
        "PUSHNOTE_API_KEY",
        "PUSHNOTE_MQ_API_KEY",
        "PUSHNOTE_LOG_FORMAT",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// Starts `cmd` and expects it to stop at once with the weak-key code, saying `words`.
fn refused(cmd: &mut Command, words: &[&str]) {
    let mut run = Run::spawn(cmd);
    let status = run.exit();
    let said = run.text();
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(WEAK_KEY),
        "{cmd:?} still runs or exited otherwise: {said}"
    );
    for word in words {
        assert!(said.contains(word), "{cmd:?}: {word:?} not in {said:?}");
    }
}

const SERVER: [&str; 6] = [
    "--port",
    "0",
    "--address",
    "127.0.0.1",
    "--mq_socket",
    "tcp://127.0.0.1:1",
];

#[test]
fn weak_secrets_and_api_keys_stop_the_server_and_the_forwarder_with_exit_code_78() {
    let server = |extra: &[&str]| {
        let mut cmd = clean("pushnote-server");
        cmd.args(SERVER).args(extra);
        cmd
    };
    refused(
        &mut server(&["--secret", "change-me"]),
        &["--secret", "placeholder"],
    );
    refused(
        &mut server(&["--secret", "0123456789abcdefghijklmnopqrstu"]),
        &["--secret", "31 characters", "at least 32"],
    );
    refused(
        server(&[]).env(
            "PUSHNOTE_SECRET",
            "django-insecure-k9#2m@x!v7q$w1z&e4r%t8y*u3i(o6p)a5s",
        ),
        &["PUSHNOTE_SECRET", "placeholder"],
    );
    refused(
        server(&[]).env("PUSHNOTE_SECRET", "ab".repeat(30)),
        &["2 distinct characters"],
    );
    refused(server(&[]).env("PUSHNOTE_SECRET", ""), &["empty"]);
    refused(
        &mut server(&[
            "--secret",
            SECRET,
            "--old-secrets",
            &format!("{SECRET}x,short"),
        ]),
        &["--old-secrets", "secret 2"],
    );
    refused(
        &mut server(&["--single", "--api-key", "change-me-please"]),
        &["--api-key", "placeholder"],
    );
    let forwarder = |extra: &[&str]| {
        let mut cmd = clean("pushnote-mq");
        cmd.args(["--sub", "tcp://127.0.0.1:*", "--pub", "tcp://127.0.0.1:*"])
            .args(extra);
        cmd
    };
    refused(
        &mut forwarder(&["--http", "127.0.0.1:0", "--api-key", "changeme"]),
        &["--api-key", "placeholder"],
    );
    refused(
        forwarder(&["--http", "127.0.0.1:0"]).env("PUSHNOTE_MQ_API_KEY", "0123456789abcdef"),
        &["PUSHNOTE_MQ_API_KEY", "at least 32"],
    );
}

#[test]
fn the_example_environment_file_starts_no_server_until_its_secret_is_set() {
    let text =
        std::fs::read_to_string(repo_path("deploy/systemd/pushnote-server.env.example")).unwrap();
    let mut cmd = clean("pushnote-server");
    cmd.args(SERVER);
    let mut set = 0;
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains('='))
    {
        let (key, value) = line.split_once('=').unwrap();
        cmd.env(key, value);
        set += 1;
    }
    assert!(set > 0, "the file sets PUSHNOTE_SECRET, to nothing");
    refused(&mut cmd, &["PUSHNOTE_SECRET", "empty"]);
    assert!(
        std::fs::read_to_string(repo_path("deploy/systemd/pushnote-server@.service"))
            .unwrap()
            .contains("RestartPreventExitStatus=78")
    );
}

/// Every line of `run` parsed as JSON, after it stopped.
fn all_json(run: &Run) -> Vec<Value> {
    let lines = run.lines.lock().unwrap().clone();
    assert!(!lines.is_empty());
    lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

#[tokio::test]
async fn with_log_format_json_every_line_either_binary_writes_is_json() {
    let key = "e2e-json-key-4Rt8Vw2Xz6Bn1Mq9Lk3";
    let mut mq = Run::spawn(clean("pushnote-mq").args([
        "--sub",
        "tcp://127.0.0.1:*",
        "--pub",
        "tcp://127.0.0.1:*",
        "--metrics",
        "127.0.0.1:0",
        "--http",
        "127.0.0.1:0",
        "--api-key",
        key,
        "--log-format",
        "json",
    ]));
    let mut fields = serde_json::Map::new();
    for _ in 0..3 {
        let line = mq.next_json();
        assert_eq!(line["level"], "INFO", "{line}");
        fields.extend(line["fields"].as_object().unwrap().clone());
    }
    let publish = fields["pub"].as_str().unwrap().to_owned();
    assert!(fields["sub"].as_str().unwrap().starts_with("tcp://"));
    let mut srv = Run::spawn(
        clean("pushnote-server")
            .args([
                "--port",
                "0",
                "--address",
                "127.0.0.1",
                "--mq_socket",
                &publish,
            ])
            .env("PUSHNOTE_LOG_FORMAT", "json"),
    );
    let bus = srv.next_json();
    assert_eq!(bus["fields"]["bus"], publish.as_str(), "{bus}");
    let listening = srv.next_json();
    let url = listening["fields"]["url"].as_str().unwrap().to_owned();
    assert!(
        url.starts_with("http://127.0.0.1:") && url.ends_with("/sockjs"),
        "{listening}"
    );
    // The server answers at the address its line gives.
    let origin = url.trim_end_matches("/sockjs");
    let deadline = tokio::time::Instant::now() + WAIT;
    while http_get(&format!("{origin}/health")).await.0 != 200 {
        assert!(tokio::time::Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for run in [&mut srv, &mut mq] {
        let pid = run.child.id().to_string();
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
        assert!(run.exit().is_some_and(|s| s.success()), "{}", run.text());
    }
    // The server warned of its missing secret, and both logged their stop: all of it JSON.
    let server_lines = all_json(&srv);
    assert!(server_lines.len() > 2, "{server_lines:?}");
    assert!(
        server_lines.iter().any(|l| l["level"] == "WARN"),
        "{server_lines:?}"
    );
    all_json(&mq);

    // The error a binary stops with, and a flag the parser refuses, are JSON too.
    let mut weak = Run::spawn(clean("pushnote-server").args(SERVER).args([
        "--secret",
        "change-me",
        "--log-format",
        "json",
    ]));
    assert_eq!(weak.exit().and_then(|s| s.code()), Some(WEAK_KEY));
    let lines = all_json(&weak);
    assert_eq!(lines[0]["level"], "ERROR");
    assert!(lines[0]["fields"]["message"]
        .as_str()
        .unwrap()
        .contains("--secret"));
    let mut bad_flag = Run::spawn(
        clean("pushnote-mq")
            .args(["--hwm", "lots"])
            .env("PUSHNOTE_LOG_FORMAT", "json"),
    );
    assert_eq!(bad_flag.exit().and_then(|s| s.code()), Some(2));
    let lines = all_json(&bad_flag);
    assert!(lines[0]["fields"]["message"]
        .as_str()
        .unwrap()
        .contains("--hwm"));
}

/// A request of exactly `bytes` bytes that the server answers with `pushnote:unsubscribed`.
fn request_of(bytes: usize) -> String {
    let head = r#"{"name":"unsubscribe","data":{"replies":true,"pad":""#;
    let tail = r#""}}"#;
    format!(
        "{head}{}{tail}",
        "x".repeat(bytes - head.len() - tail.len())
    )
}

/// Messages at the limit, however escaped: a request of 65,536 bytes, 40,000 quotes (80,004
/// bytes once escaped in their frame), 65,536 newlines (each a six-byte `\u000a` as SockJS
/// clients escape them: 393,220 bytes).
fn at_the_limit() -> Vec<(String, &'static str)> {
    vec![
        (request_of(65_536), "pushnote:unsubscribed"),
        ("\"".repeat(40_000), "pushnote:error"),
        ("\n".repeat(65_536), "pushnote:error"),
    ]
}

/// `message` in a SockJS array, escaped as the stock client escapes it.
fn sockjs_payload(message: &str) -> String {
    let mut out = String::from("[\"");
    for c in message.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push_str("\"]");
    out
}

#[tokio::test]
async fn the_message_limit_applies_to_messages_once_decoded_on_websocket() {
    let srv = single_server(&[]);
    for (message, reply) in at_the_limit() {
        let mut c = Client::connect(&srv).await;
        c.ask_replies().await;
        c.send_raw(&sockjs_payload(&message)).await;
        assert_eq!(c.next().await["name"], reply, "{} bytes", message.len());
        // The session is still open: it answers the next request.
        c.emit(json!({"name": "unsubscribe"})).await;
        assert_eq!(c.next().await["name"], "pushnote:unsubscribed");
    }
    let mut c = Client::connect(&srv).await;
    c.send_raw(&sockjs_payload(&request_of(65_537))).await;
    assert_eq!(
        c.frame().await,
        Frame::Close(3009, "Message too big".into())
    );
    // A frame past the batch bound is refused from its header.
    let mut c = Client::connect(&srv).await;
    c.send_raw(&sockjs_payload(&"\n".repeat(65_537))).await;
    assert_eq!(
        c.frame().await,
        Frame::Close(3009, "Message too big".into())
    );
    srv.wait_metric(TOO_BIG, 2).await;

    // Raw WebSocket: the message is the frame.
    let raw = |message: String| {
        let url = srv.raw_ws_url();
        async move {
            let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
            ws.send(WsMessage::Text(message)).await.unwrap();
            loop {
                match tokio::time::timeout(WAIT, ws.next())
                    .await
                    .expect("an answer")
                {
                    Some(Ok(WsMessage::Text(t))) => return Ok(t),
                    Some(Ok(WsMessage::Close(c))) => return Err(c.map(|c| u16::from(c.code))),
                    Some(Ok(_)) => {}
                    other => panic!("{other:?}"),
                }
            }
        }
    };
    let answer = raw(request_of(65_536)).await.unwrap();
    assert!(answer.contains("pushnote:unsubscribed"), "{answer}");
    assert_eq!(raw(request_of(65_537)).await, Err(Some(3009)));
    srv.wait_metric(TOO_BIG, 3).await;
    assert_eq!(
        srv.metric(TOO_BIG).await,
        3,
        "the messages within the limit closed nothing"
    );
}

/// Sessions closed for a message or frame too big.
const TOO_BIG: &str = "pushnote_sessions_closed_too_big_total";

#[tokio::test]
async fn the_message_limit_applies_to_messages_once_decoded_on_xhr_send() {
    let srv = single_server(&[]);
    let open = || async {
        let session = format!("{}/000/{}", srv.url, rand_id());
        let r = http("POST", &format!("{session}/xhr"), &[], "").await;
        assert_eq!(r.body, "o\n");
        session
    };
    for (message, reply) in at_the_limit() {
        let session = open().await;
        let ask = json!([json!({"name": "unsubscribe", "data": {"replies": true}}).to_string()]);
        let r = http(
            "POST",
            &format!("{session}/xhr_send"),
            &[],
            &ask.to_string(),
        )
        .await;
        assert_eq!(r.status, 204, "{}", r.body);
        let r = http("POST", &format!("{session}/xhr"), &[], "").await;
        assert!(r.body.contains("pushnote:unsubscribed"), "{}", r.body);
        let payload = sockjs_payload(&message);
        let r = http("POST", &format!("{session}/xhr_send"), &[], &payload).await;
        assert_eq!(r.status, 204, "{} bytes: {}", message.len(), r.body);
        let r = http("POST", &format!("{session}/xhr"), &[], "").await;
        let frame: Vec<Value> = serde_json::from_str(r.body.trim_end().strip_prefix('a').unwrap())
            .unwrap_or_else(|_| panic!("{}", r.body));
        assert_eq!(frame[0]["name"], reply);
    }
    let session = open().await;
    let payload = sockjs_payload(&request_of(65_537));
    let r = http("POST", &format!("{session}/xhr_send"), &[], &payload).await;
    assert_eq!(r.status, 413);
    let r = http("POST", &format!("{session}/xhr"), &[], "").await;
    assert_eq!(r.body, "c[3009,\"Message too big\"]\n");
    srv.wait_metric(TOO_BIG, 1).await;
}

#[tokio::test]
async fn a_since_with_a_number_out_of_range_is_a_bad_request() {
    let srv = single_server(&[]);
    let mut c = Client::connect(&srv).await;
    let huge = "9".repeat(400);
    c.send_text(&format!(
        r#"{{"name":"positions","data":{{"since":{{"epoch":{huge},"offset":1}}}}}}"#
    ))
    .await;
    let reply = c.next().await;
    assert_eq!(reply["data"]["code"], "bad_request", "{reply}");
    // A request that is no JSON object at all is still a bad message.
    c.send_text(&format!(r#"{{"name":"positions","data":{huge}"#))
        .await;
    assert_eq!(c.next().await["data"]["code"], "bad_message");
}

#[tokio::test]
async fn a_channel_named_private_in_another_case_is_refused() {
    let srv = single_server(&[]);
    let mut c = Client::connect(&srv).await;
    for channel in ["Private-team-7", "PRIVATE-x"] {
        c.emit(json!({"name": "subscribe", "data": {"channel": channel}}))
            .await;
        let reply = c.next().await;
        assert_eq!(reply["data"]["code"], "invalid_channel", "{reply}");
        assert_eq!(reply["data"]["channel"], channel);
    }
    c.emit(json!({"name": "subscribe", "data": {"channel": "team-7"}}))
        .await;
    assert_eq!(c.next().await["name"], "pushnote:subscribed");
}

type RawWs =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The next message of a raw WebSocket client, parsed.
async fn raw_next(ws: &mut RawWs) -> Value {
    loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a message")
        {
            Some(Ok(WsMessage::Text(t))) => return serde_json::from_str(&t).unwrap(),
            Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => {}
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn a_raw_websocket_client_receives_a_channels_message_in_its_envelope() {
    let srv = single_server(&[]);
    let bus = publisher(srv.bus.as_deref().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(srv.raw_ws_url())
        .await
        .unwrap();
    let join = json!({"name": "subscribe", "data": {"channel": "news"}});
    ws.send(WsMessage::Text(join.to_string())).await.unwrap();
    assert_eq!(raw_next(&mut ws).await["name"], "pushnote:subscribed");
    // Published until one arrives: the publisher may connect before the server's subscription.
    let deadline = tokio::time::Instant::now() + WAIT;
    let got = loop {
        bus.publish("news", "create", &json!({"id": "r1"})).unwrap();
        if let Ok(got) = tokio::time::timeout(Duration::from_millis(300), raw_next(&mut ws)).await {
            break got;
        }
        assert!(tokio::time::Instant::now() < deadline, "nothing arrived");
    };
    assert_eq!(
        got,
        json!({"channel": "news", "event": "create", "data": {"id": "r1"}})
    );
}

/// A session with positions on; the broadcasts' position.
async fn with_positions(srv: &Server, since: Option<Value>) -> (Client, Value) {
    let mut c = Client::connect(srv).await;
    let data = since.map_or(json!({}), |p| json!({"since": p}));
    c.emit(json!({"name": "positions", "data": data})).await;
    let reply = c.next().await;
    assert_eq!(reply["name"], "pushnote:positions", "{reply}");
    (c, reply)
}

#[tokio::test]
async fn a_since_for_a_topic_joined_already_is_answered_without_recovered() {
    let srv = single_server(&[]);
    let (mut c, _) = with_positions(&srv, None).await;
    c.emit(json!({"name": "subscribe", "data": {"channel": "news"}}))
        .await;
    let first = c.next().await;
    let position = first["data"]["position"].clone();
    assert!(position.is_object(), "{first}");
    c.emit(json!({"name": "subscribe", "data": {"channel": "news", "since": position}}))
        .await;
    let again = c.next().await;
    assert_eq!(again["name"], "pushnote:subscribed", "{again}");
    assert_eq!(again["data"]["position"], position);
    assert!(again["data"].get("recovered").is_none(), "{again}");
}

#[tokio::test]
async fn an_epoch_answer_gives_the_new_epoch_only_while_it_holds_its_first_message() {
    for (size, given) in [("10", 3), ("2", 0)] {
        let srv = single_server(&["--history-size", size]);
        let bus = publisher(srv.bus.as_deref().unwrap());
        let (_first, reply) = with_positions(&srv, None).await;
        let epoch = reply["data"]["position"]["epoch"].as_u64().unwrap();
        for i in 0..3 {
            bus.notify_all(&json!({"n": i})).unwrap();
        }
        srv.wait_metric(BROADCASTS, 3).await;
        // A page of another run of the server: its position is of another epoch.
        let other = json!({"epoch": epoch ^ 1, "offset": 1});
        let mut c = Client::connect(&srv).await;
        c.emit(json!({"name": "positions", "data": {"since": other}}))
            .await;
        let mut before = Vec::new();
        let reply = loop {
            let m = c.next().await;
            if m["name"] == "pushnote:positions" {
                break m;
            }
            before.push(m);
        };
        assert_eq!(reply["data"]["recovered"], false, "{reply}");
        assert_eq!(reply["data"]["reason"], "epoch", "{reply}");
        assert_eq!(reply["data"]["position"]["offset"], 3, "{reply}");
        let offsets: Vec<u64> = before
            .iter()
            .map(|m| m["position"]["offset"].as_u64().unwrap())
            .collect();
        let expected: Vec<u64> = (1..=given).collect();
        assert_eq!(offsets, expected, "--history-size {size}: {before:?}");
    }
}

#[tokio::test]
async fn with_a_forwarder_the_replies_that_wait_for_it_keep_their_order() {
    let fwd = forwarder();
    let srv = server(&fwd, &[]);
    let (mut c, _) = with_positions(&srv, None).await;
    // Three joins that ask the forwarder, and a refusal answered at once, in one frame.
    let join =
        |channel: &str| json!({"name": "subscribe", "data": {"channel": channel}}).to_string();
    let batch = [join("a"), join("b"), join("c"), "not json".to_owned()];
    c.send_raw(&serde_json::to_string(&batch).unwrap()).await;
    let mut channels = Vec::new();
    let mut refused = 0;
    while channels.len() < 3 || refused < 1 {
        let reply = c.next().await;
        match reply["name"].as_str() {
            Some("pushnote:subscribed") => {
                assert!(reply["data"]["position"].is_object(), "{reply}");
                channels.push(reply["data"]["channel"].as_str().unwrap().to_owned());
            }
            // The refusal may come before, between or after them.
            Some("pushnote:error") => {
                assert_eq!(reply["data"]["code"], "bad_message");
                refused += 1;
            }
            _ => panic!("unexpected {reply}"),
        }
    }
    assert_eq!(channels, ["a", "b", "c"]);
}
