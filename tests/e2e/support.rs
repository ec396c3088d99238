//! Spawning the real binaries on ephemeral ports, and a SockJS client over real WebSocket.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long any single expected event may take before a test fails.
pub const WAIT: Duration = Duration::from_secs(10);
/// The secret the servers of these tests sign with.
pub const SECRET: &str = "e2e-test-secret-7Hq2Lx9Vb4Nw6Zr1";

pub fn bin(name: &str) -> PathBuf {
    match name {
        "pushnote-mq" => env!("CARGO_BIN_EXE_pushnote-mq").into(),
        "pushnote-server" => env!("CARGO_BIN_EXE_pushnote-server").into(),
        "pushnote" => env!("CARGO_BIN_EXE_pushnote").into(),
        other => panic!("no binary {other}"),
    }
}

pub fn repo_path(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// A spawned binary, killed when dropped; its stdout lines arrive on a channel.
pub struct Proc {
    pub child: Child,
    lines: mpsc::Receiver<String>,
}

impl Proc {
    pub fn spawn(cmd: &mut Command) -> Proc {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn binary");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Proc { child, lines }
    }

    /// Waits for a stdout line containing `marker` and returns what follows it; of a JSON
    /// line (`--log-format json`), what follows it in its message.
    pub fn value_after(&self, marker: &str) -> String {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no line with {marker:?} in time"));
            let line = serde_json::from_str::<Value>(&line)
                .ok()
                .and_then(|v| v["fields"]["message"].as_str().map(str::to_owned))
                .unwrap_or(line);
            if let Some((_, rest)) = line.split_once(marker) {
                return rest.trim().to_owned();
            }
        }
    }

    pub fn terminate(&self) {
        self.signal("TERM");
    }

    /// Sends the signal named `name` (TERM, INT, …).
    pub fn signal(&self, name: &str) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status();
        assert!(status.map(|s| s.success()).unwrap_or(false), "kill -{name}");
    }

    /// Waits for the process to exit, up to `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if std::time::Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A forwarder on free ports.
pub struct Forwarder {
    pub proc: Proc,
    /// Where apps publish.
    pub sub: String,
    /// Where servers subscribe.
    pub publish: String,
}

pub fn forwarder_with(args: &[&str]) -> Forwarder {
    forwarder_of(Command::new(bin("pushnote-mq")).args(args))
}

/// The API key of the tests' forwarders (`PUSHNOTE_MQ_API_KEY`) and servers (`--api-key`).
pub const API_KEY: &str = "e2e-api-key-0123456789-Vq7Lm2Xc9Rb4";

/// The flags of a forwarder on free ports with `--http`.
pub const HTTP_FORWARDER_ARGS: [&str; 6] = [
    "--sub",
    "tcp://127.0.0.1:*",
    "--pub",
    "tcp://127.0.0.1:*",
    "--http",
    "127.0.0.1:0",
];

/// A forwarder with `--http` on a free port, [`API_KEY`] in its environment, and `extra`
/// flags after its endpoints. Its start-up lines after the endpoints' are left to read
/// (`/metrics at`, then `/publish at`).
pub fn forwarder_with_key(extra: &[&str]) -> Forwarder {
    forwarder_of(
        Command::new(bin("pushnote-mq"))
            .env("PUSHNOTE_MQ_API_KEY", API_KEY)
            .args(HTTP_FORWARDER_ARGS)
            .args(extra),
    )
}

/// The forwarder `cmd` starts, once it says where its endpoints are.
pub fn forwarder_of(cmd: &mut Command) -> Forwarder {
    let proc = Proc::spawn(cmd);
    let line = proc.value_after("apps publish to");
    let (sub, publish) = line
        .split_once(", servers subscribe at ")
        .expect("forwarder endpoints line");
    Forwarder {
        sub: sub.to_owned(),
        publish: publish.to_owned(),
        proc,
    }
}

pub fn forwarder() -> Forwarder {
    forwarder_with(&["--sub", "tcp://127.0.0.1:*", "--pub", "tcp://127.0.0.1:*"])
}

/// A server on a free port.
pub struct Server {
    pub proc: Proc,
    /// `http://127.0.0.1:PORT/ROUTE`
    pub url: String,
    /// `http://127.0.0.1:PORT`
    pub origin: String,
    /// In single mode, where apps publish.
    pub bus: Option<String>,
}

pub fn server_cmd(args: &[&str]) -> Command {
    let mut cmd = Command::new(bin("pushnote-server"));
    cmd.env_remove("PUSHNOTE_SECRET").args(args);
    cmd
}

pub fn spawn_server(cmd: &mut Command, single: bool) -> Server {
    let proc = Proc::spawn(cmd);
    let bus = single.then(|| proc.value_after("apps publish to"));
    let url = proc.value_after("listening on");
    let origin = url[..url[7..].find('/').map(|i| i + 7).unwrap_or(url.len())].to_owned();
    Server {
        proc,
        url,
        origin,
        bus,
    }
}

/// The flags of a `--single` server on loopback with metrics, binding its bus on a free port
/// (`Server::bus`), then `extra`.
pub fn single_args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "--port",
        "0",
        "--address",
        "127.0.0.1",
        "--single",
        "--mq_socket",
        "tcp://127.0.0.1:*",
        "--metrics",
    ];
    args.extend_from_slice(extra);
    args
}

/// A `--single` server on loopback with metrics and `extra` flags, binding its bus on a free
/// port (`Server::bus`); no secret.
pub fn single_server(extra: &[&str]) -> Server {
    spawn_server(&mut server_cmd(&single_args(extra)), true)
}

/// What a forwarder's app side subscribes to: everything.
pub const FORWARDER_SUBSCRIPTION: &[u8] = b"\x01";
/// What a `--single` server subscribes to: broadcasts (and, with history, everything).
pub const SINGLE_SERVER_SUBSCRIPTION: &[u8] = b"\x01all\0";

/// A raw ZeroMQ publisher at `endpoint`, as an app in any language would be, once the peer's
/// subscription `expected` has reached it (among the others it sends on connecting).
pub fn raw_publisher(ctx: &zmq::Context, endpoint: &str, expected: &[u8]) -> zmq::Socket {
    let s = ctx.socket(zmq::XPUB).unwrap();
    // No high-water mark: a burst is queued for the peer, not dropped on the way.
    s.set_sndhwm(0).unwrap();
    s.connect(endpoint).unwrap();
    s.set_rcvtimeo(WAIT.as_millis() as i32).unwrap();
    loop {
        let subscription = s.recv_bytes(0).expect("the peer subscribes");
        if subscription == expected {
            return s;
        }
    }
}

/// A server connected to `forwarder`, with the test secret, metrics, and `extra` flags.
pub fn server(forwarder: &Forwarder, extra: &[&str]) -> Server {
    let mut args = server_args(forwarder, "0");
    args.extend_from_slice(extra);
    spawn_server(&mut server_cmd(&args), false)
}

/// The flags of a test server on `port`, on loopback, connected to `forwarder`, with the
/// test secret and metrics.
pub fn server_args<'a>(forwarder: &'a Forwarder, port: &'a str) -> Vec<&'a str> {
    vec![
        "--port",
        port,
        "--address",
        "127.0.0.1",
        "--mq_socket",
        &forwarder.publish,
        "--secret",
        SECRET,
        "--metrics",
    ]
}

/// The value of metric `name` (with its labels, if any) in the Prometheus text at `url`.
pub async fn metric_at(url: &str, name: &str) -> u64 {
    let body = http_get(url).await.1;
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no metric {name} in {body}"))
}

/// Waits until metric `name` in the Prometheus text at `url` reaches `at_least`.
pub async fn wait_metric_at(url: &str, name: &str, at_least: u64) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let v = metric_at(url, name).await;
        if v >= at_least {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} stayed at {v}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Broadcasts a server has read off the bus.
pub const BROADCASTS: &str = "pushnote_bus_broadcasts_total";
/// Messages to users a server has read off the bus (those its subscriptions let through).
pub const USER_MESSAGES: &str = "pushnote_bus_user_messages_total";

impl Server {
    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.origin
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("an origin ends with its port")
    }

    pub async fn metric(&self, name: &str) -> u64 {
        metric_at(&format!("{}/metrics", self.origin), name).await
    }

    /// Waits until metric `name` reaches `at_least`.
    pub async fn wait_metric(&self, name: &str, at_least: u64) {
        wait_metric_at(&format!("{}/metrics", self.origin), name, at_least).await;
    }

    /// Waits until metric `name` falls to `at_most`.
    pub async fn wait_metric_at_most(&self, name: &str, at_most: u64) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let v = self.metric(name).await;
            if v <= at_most {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{name} stayed at {v}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Publishes a broadcast marker and waits until this server has read it off the bus: the
    /// messages `publisher` sent before it have then reached the server and been delivered, or
    /// been dropped by a subscription filter on the way (ZeroMQ keeps one publisher's messages
    /// in order through the forwarder to each server). The server's broadcast subscription must
    /// be known to have reached the forwarder ([`sync`]), and no other broadcast be in flight.
    /// Sessions here receive the marker as a [`sync`] marker, which [`sync`] and
    /// [`Client::subscribe`] skip.
    pub async fn fence(&self, publisher: &pushnote::Publisher) {
        let broadcasts = self.metric(BROADCASTS).await;
        publisher
            .notify_all(&serde_json::json!({"sync": rand_id()}))
            .unwrap();
        self.wait_metric(BROADCASTS, broadcasts + 1).await;
    }

    /// Waits until messages to `user` no longer reach this server: after the user's last
    /// session here leaves, the server's unsubscribe reaches its bus thread and the forwarder
    /// in the background, and until it has, a message published to the user may still arrive.
    /// Sends markers to the user, each followed by a [`Server::fence`], until one is not
    /// received; no other user's messages may be in flight.
    pub async fn wait_unsubscribed(&self, publisher: &pushnote::Publisher, user: &str) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let received = self.metric(USER_MESSAGES).await;
            publisher
                .notify(&serde_json::json!({"sync": rand_id()}), [user])
                .unwrap();
            self.fence(publisher).await;
            if self.metric(USER_MESSAGES).await == received {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the server kept receiving {user}'s messages"
            );
        }
    }

    pub fn ws_url(&self) -> String {
        format!("ws{}/000/{}/websocket", &self.url[4..], rand_id())
    }

    pub fn raw_ws_url(&self) -> String {
        format!("ws{}/websocket", &self.url[4..])
    }
}

/// A loopback port free now, for a process that must be told its port before it starts.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn rand_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!("s{}", N.fetch_add(1, Ordering::Relaxed))
}

/// A minimal HTTP/1.1 GET over a plain socket: (status, body).
pub async fn http_get(url: &str) -> (u16, String) {
    let r = http("GET", url, &[], "").await;
    (r.status, r.body)
}

/// A response read to its end.
pub struct Reply {
    pub status: u16,
    /// The header lines, lowercased.
    pub headers: String,
    pub body: String,
}

/// A minimal HTTP/1.1 request over a plain socket, on a connection of its own.
pub async fn http(method: &str, url: &str, headers: &[(&str, &str)], body: &str) -> Reply {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").expect("http url");
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let mut s = TcpStream::connect(host).await.expect("connect");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut buf))
        .await
        .expect("response in time")
        .expect("read");
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text[9..12].parse().expect("status");
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let headers = head.to_ascii_lowercase();
    let body = if headers.contains("transfer-encoding: chunked") {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Reply {
        status,
        headers,
        body,
    }
}

pub fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
    out
}

/// What a SockJS client receives.
#[derive(Debug, PartialEq)]
pub enum Frame {
    Open,
    Heartbeat,
    Messages(Vec<Value>),
    Close(u16, String),
    /// The WebSocket closed (with its close code, if any).
    Gone(Option<u16>),
}

/// A SockJS client over WebSocket, as the stock browser client speaks it.
pub struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pending: std::collections::VecDeque<Value>,
}

impl Client {
    pub async fn connect(server: &Server) -> Client {
        let (ws, _) = tokio_tungstenite::connect_async(server.ws_url())
            .await
            .expect("websocket connect");
        let mut c = Client {
            ws,
            pending: Default::default(),
        };
        assert_eq!(c.frame().await, Frame::Open);
        c
    }

    pub async fn send_raw(&mut self, payload: &str) {
        self.ws
            .send(WsMessage::Text(payload.to_owned()))
            .await
            .expect("send");
    }

    /// Sends a WebSocket text frame whose payload is `bytes`, valid UTF-8 or not.
    pub async fn send_text_bytes(&mut self, bytes: Vec<u8>) {
        use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
        use tokio_tungstenite::tungstenite::protocol::frame::Frame as WsFrame;
        let frame = WsFrame::message(bytes, OpCode::Data(Data::Text), true);
        self.ws.send(WsMessage::Frame(frame)).await.expect("send");
    }

    /// Sends one SockJS message holding `text`.
    pub async fn send_text(&mut self, text: &str) {
        let payload = serde_json::to_string(&[text]).unwrap();
        self.send_raw(&payload).await;
    }

    pub async fn emit(&mut self, value: Value) {
        self.send_text(&value.to_string()).await;
    }

    /// Subscribes with `token`, asking for replies, and returns the server's reply, skipping
    /// the markers of [`sync`] that may still be on their way.
    pub async fn subscribe(&mut self, token: &str) -> Value {
        self.emit(
            serde_json::json!({"name": "subscribe", "data": {"token": token, "replies": true}}),
        )
        .await;
        self.next_unmarked().await
    }

    /// Turns the session's replies on before anything else (with an `unsubscribe` that asks for
    /// them, which changes nothing on a new session), taking its reply.
    pub async fn ask_replies(&mut self) {
        self.emit(serde_json::json!({"name": "unsubscribe", "data": {"replies": true}}))
            .await;
        assert_eq!(
            self.next_unmarked().await,
            serde_json::json!({"name": "pushnote:unsubscribed", "data": {}})
        );
    }

    /// The next message that is not a marker of [`sync`] (nor of a channel's sync, which
    /// arrives in the channel's envelope).
    pub async fn next_unmarked(&mut self) -> Value {
        loop {
            let v = self.next().await;
            if v.get("sync").is_none() && v["data"].get("sync").is_none() {
                return v;
            }
        }
    }

    pub async fn frame(&mut self) -> Frame {
        let text = loop {
            let msg = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("a frame in time");
            match msg {
                None | Some(Err(_)) => return Frame::Gone(None),
                Some(Ok(WsMessage::Close(c))) => return Frame::Gone(c.map(|c| c.code.into())),
                Some(Ok(WsMessage::Text(t))) => break t,
                // The server's liveness pings; the library answers them while reading.
                Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => {}
                Some(Ok(other)) => panic!("unexpected websocket message {other:?}"),
            }
        };
        match text.as_bytes().first() {
            Some(b'o') => Frame::Open,
            Some(b'h') => Frame::Heartbeat,
            Some(b'a') => Frame::Messages(serde_json::from_str(&text[1..]).expect("a[] json")),
            Some(b'c') => {
                let v: (u16, String) = serde_json::from_str(&text[1..]).expect("c[] json");
                Frame::Close(v.0, v.1)
            }
            _ => panic!("not a SockJS frame: {text:?}"),
        }
    }

    /// The messages of the next frame of messages, unparsed, each as the server wrote it in
    /// the frame. Skips heartbeats.
    pub async fn next_texts(&mut self) -> Vec<String> {
        assert!(self.pending.is_empty(), "unexpected {:?}", self.pending);
        loop {
            let msg = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("a frame in time");
            match msg {
                Some(Ok(WsMessage::Text(t))) if t.starts_with('a') => {
                    let messages: Vec<&serde_json::value::RawValue> =
                        serde_json::from_str(&t[1..]).expect("a[] json");
                    return messages.iter().map(|m| m.get().to_owned()).collect();
                }
                Some(Ok(WsMessage::Text(t))) if t == "h" => {}
                Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => {}
                other => panic!("expected messages, got {other:?}"),
            }
        }
    }

    /// The next message, skipping heartbeats. Panics on close.
    pub async fn next(&mut self) -> Value {
        loop {
            if let Some(v) = self.pending.pop_front() {
                return v;
            }
            match self.frame().await {
                Frame::Messages(m) => self.pending.extend(m),
                Frame::Heartbeat => {}
                other => panic!("expected a message, got {other:?}"),
            }
        }
    }

    /// The messages of frames already read that [`Client::next`] has not returned yet.
    pub fn take_pending(&mut self) -> Vec<Value> {
        self.pending.drain(..).collect()
    }

    /// Asserts that no message arrives for `d`.
    pub async fn expect_silence(&mut self, d: Duration) {
        assert!(self.pending.is_empty(), "unexpected {:?}", self.pending);
        if let Ok(f) = tokio::time::timeout(d, self.frame()).await {
            assert_eq!(f, Frame::Heartbeat, "expected nothing");
        }
    }
}

/// A forwarder, a server connected to it (with `extra` flags), a publisher, and a client whose
/// server's bus is known to be connected.
pub async fn stack(extra: &[&str]) -> (Forwarder, Server, pushnote::Publisher, Client) {
    let fwd = forwarder();
    let srv = server(&fwd, extra);
    let bus = publisher(&fwd.sub);
    let mut client = Client::connect(&srv).await;
    sync(&bus, &mut client, None).await;
    (fwd, srv, bus, client)
}

/// A publisher of the client crate connected to `endpoint`.
pub fn publisher(endpoint: &str) -> pushnote::Publisher {
    pushnote::Publisher::connect(endpoint).expect("publisher")
}

/// This machine's clock, in Unix seconds, as tokens are stamped.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// This machine's clock, in Unix microseconds: a message's publish time, for its latency.
pub fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

pub fn signer() -> pushnote::Signer {
    pushnote::Signer::new(SECRET).unwrap()
}

pub fn token(user: &str) -> String {
    signer().tokenize(user).unwrap()
}

/// Publishes markers until `client` receives one: bus subscriptions travel to the forwarder in
/// the background, so a message sent right after a server starts, or right after a subscribe,
/// can precede them. `target` is `None` for broadcasts, or the user to send to.
pub async fn sync(publisher: &pushnote::Publisher, client: &mut Client, target: Option<&str>) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let id = rand_id();
        let marker = serde_json::json!({"sync": id});
        let sent = match target {
            None => publisher.notify_all(&marker),
            Some(user) => publisher.notify(&marker, [user]),
        };
        // While the bus is (re)connecting the publisher says so; markers resume after.
        if let Err(e) = sent {
            assert!(matches!(e, pushnote::PublishError::NotConnected(_)), "{e}");
        }
        let wait = tokio::time::sleep(Duration::from_millis(200));
        tokio::pin!(wait);
        loop {
            tokio::select! {
                v = client.next() => {
                    assert!(v.get("sync").is_some(), "unexpected {v}");
                    if v["sync"] == id.as_str() {
                        return;
                    }
                }
                () = &mut wait => break,
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "bus never connected"
        );
    }
}

/// An app publishing rounds `{"n": n}` to everyone, to user `u1` and on channel `news` (event
/// `tick`), one every `period`, noting each round accepted (with no forwarder or server
/// subscribed, sends fail at once and the round is not) and whether it came after
/// [`Rounds::restarted`].
pub struct Rounds {
    accepted: std::sync::Arc<std::sync::Mutex<Vec<(u64, bool)>>>,
    restarted: std::sync::Arc<std::sync::atomic::AtomicBool>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Rounds {
    pub fn start(endpoint: &str, period: Duration) -> Rounds {
        use std::sync::atomic::Ordering;
        let rounds = Rounds {
            accepted: Default::default(),
            restarted: Default::default(),
            stop: Default::default(),
            thread: None,
        };
        let (accepted, restarted, stop) = (
            rounds.accepted.clone(),
            rounds.restarted.clone(),
            rounds.stop.clone(),
        );
        let endpoint = endpoint.to_owned();
        let thread = std::thread::spawn(move || {
            let app = publisher(&endpoint);
            let mut n = 0u64;
            while !stop.load(Ordering::Acquire) {
                n += 1;
                let after = restarted.load(Ordering::Acquire);
                let data = serde_json::json!({ "n": n });
                let sent = app.notify_all(&data).is_ok()
                    && app.notify(&data, ["u1"]).is_ok()
                    && app.publish("news", "tick", &data).is_ok();
                if sent {
                    accepted.lock().unwrap().push((n, after));
                }
                std::thread::sleep(period);
            }
        });
        Rounds {
            thread: Some(thread),
            ..rounds
        }
    }

    /// The last round accepted so far (0 before the first).
    pub fn last_accepted(&self) -> u64 {
        self.accepted.lock().unwrap().last().map_or(0, |&(n, _)| n)
    }

    /// Rounds accepted from now on count as the restarted run's.
    pub fn restarted(&self) {
        self.restarted
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// Waits until `n` rounds were accepted since [`Rounds::restarted`].
    pub fn wait_accepted_after(&self, n: usize) {
        let deadline = std::time::Instant::now() + 3 * WAIT;
        while self
            .accepted
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, a)| *a)
            .count()
            < n
        {
            assert!(
                std::time::Instant::now() < deadline,
                "the restarted run accepts rounds"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops publishing; every round accepted, in order, each with whether it came after the
    /// restart.
    pub fn stop(mut self) -> Vec<(u64, bool)> {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        self.accepted.lock().unwrap().clone()
    }
}

/// `got`, the `n`s a page received of `topic`, holds each once and in order, and every round
/// of `accepted` that came after the restart.
pub fn assert_after_restart_all_once_in_order(topic: &str, got: &[u64], accepted: &[(u64, bool)]) {
    assert!(
        got.windows(2).all(|w| w[0] < w[1]),
        "{topic}: in order, once: {got:?}"
    );
    for (n, after) in accepted {
        if *after {
            assert!(got.contains(n), "{topic}: accepted after the restart: {n}");
        }
    }
}

/// A forwarder on free ports that keeps `history_size` messages a topic.
pub fn forwarder_keeping(history_size: &str) -> Forwarder {
    forwarder_with(&[
        "--sub",
        "tcp://127.0.0.1:*",
        "--pub",
        "tcp://127.0.0.1:*",
        "--history-size",
        history_size,
    ])
}

/// Waits, up to `limit`, for the peer to close `s`; true if it did.
pub async fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    let mut chunk = [0u8; 4096];
    let until_eof = async {
        loop {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(limit, until_eof).await.is_ok()
}
