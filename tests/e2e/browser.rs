//! The stock SockJS client (sockjs-client 1.6.1) in headless Chromium, on every transport
//! Chromium can use, against the real server: each page is on another origin than the server
//! (except htmlfile's: the client offers that transport to same-origin pages only; cross-origin
//! pages get it as iframe-htmlfile), opens on its forced transport, subscribes with a token, and receives broadcasts and its
//! user's messages unchanged. Over WebSocket and HTTP (xhr-streaming, xhr-polling), pages also
//! join public and private channels and receive their events, and only theirs, in the channel
//! envelope. `tests/browser/bridge.js` drives the browser; `scripts/test` installs it (npm) and
//! Chromium.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::*;

pub(crate) const TRANSPORTS: [&str; 9] = [
    "websocket",
    "xhr-streaming",
    "eventsource",
    "iframe-eventsource",
    "iframe-htmlfile",
    "htmlfile",
    "xhr-polling",
    "iframe-xhr-polling",
    "jsonp-polling",
];

/// Text that browsers, JSON and HTML each mangle in their own way; the script must never run.
const TRICKY: &str = "é à ü 中文 日本語 \u{2028}\u{2029} 😀 \"double\" 'single' back\\slash \
                      </script><script>console.log(\"PWNED\")</script> <!-- ]]>";

pub(crate) struct Bridge {
    child: Child,
    stdin: ChildStdin,
    events: mpsc::Receiver<Value>,
    /// Every event so far, in order.
    pub(crate) log: Vec<Value>,
}

impl Bridge {
    pub(crate) fn start() -> (Bridge, String) {
        let script = repo_path("tests/browser/bridge.js");
        assert!(
            repo_path("tests/browser/node_modules/playwright-core").exists(),
            "browser tests need `npm ci` in tests/browser and Chromium; scripts/test installs both"
        );
        let mut child = Command::new("node")
            .arg(&script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node (Node.js) is needed for the browser tests");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, events) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let Ok(v) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        let mut bridge = Bridge {
            child,
            stdin,
            events,
            log: Vec::new(),
        };
        let started = bridge.until(Duration::from_secs(30), |e| e["event"] == "static");
        let origin = started["origin"].as_str().unwrap().to_owned();
        (bridge, origin)
    }

    /// Opens page `id` on `transport` at the SockJS `url`: from the bridge's origin, but for
    /// htmlfile, which the client offers to same-origin pages only (cross-origin pages get it
    /// as iframe-htmlfile), from the server's own origin.
    pub(crate) fn open(&mut self, id: &str, url: &str, transport: &str) {
        let same_origin = transport == "htmlfile";
        self.command(json!({
            "cmd": "open", "id": id, "url": url, "transport": transport, "sameOrigin": same_origin
        }));
    }

    /// Opens page `id` with pushnote.js from the server at the SockJS `url`, made with
    /// `options` (see tests/browser/pushnote.html).
    pub(crate) fn open_pushnote(&mut self, id: &str, url: &str, options: Value) {
        self.command(json!({
            "cmd": "open", "id": id, "url": url, "page": "pushnote.html", "options": options
        }));
    }

    /// Evaluates `js` in page `id`.
    pub(crate) fn eval(&mut self, id: &str, js: &str) {
        self.command(json!({"cmd": "eval", "id": id, "js": js}));
    }

    pub(crate) fn command(&mut self, cmd: Value) {
        writeln!(self.stdin, "{cmd}").expect("bridge running");
    }

    /// Waits for the first event (from now on) that satisfies `pred`.
    pub(crate) fn until(&mut self, limit: Duration, mut pred: impl FnMut(&Value) -> bool) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let event = match self.events.recv_timeout(left) {
                Ok(e) => e,
                Err(_) => panic!("browser: timed out; events so far: {:#?}", self.log),
            };
            assert_ne!(event["event"], "error", "browser bridge failed: {event}");
            self.log.push(event.clone());
            if pred(&event) {
                return event;
            }
        }
    }

    /// Waits until every page of `ids` has had an event (at any time so far) that satisfies
    /// `pred`.
    pub(crate) fn until_each(
        &mut self,
        ids: &[&str],
        limit: Duration,
        pred: impl Fn(&Value) -> bool,
    ) {
        let what = format!("browser: every page of {ids:?}");
        self.wait_for(&what, limit, |b| {
            let seen: HashSet<&str> = b
                .log
                .iter()
                .filter(|e| pred(e))
                .filter_map(|e| e["id"].as_str())
                .collect();
            ids.iter().all(|t| seen.contains(t))
        });
    }

    /// Takes in what arrives until `done` holds of what has, within `limit`; fails naming
    /// `what` and showing every event otherwise.
    pub(crate) fn wait_for(&mut self, what: &str, limit: Duration, done: impl Fn(&Bridge) -> bool) {
        let deadline = Instant::now() + limit;
        loop {
            self.drain();
            if done(self) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: timed out; events: {:#?}",
                self.log
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Takes what has arrived without waiting.
    pub(crate) fn drain(&mut self) {
        while let Ok(event) = self.events.try_recv() {
            self.log.push(event);
        }
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "{}", json!({"cmd": "quit"}));
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn user(transport: &str) -> String {
    format!("browser-{transport}")
}

#[test]
fn the_stock_client_receives_on_every_transport_chromium_can_use() {
    let (mut bridge, origin) = Bridge::start();
    let fwd = forwarder();
    let sockjs_url = format!("{origin}/sockjs.min.js");
    let srv = server(&fwd, &["--sockjs-url", &sockjs_url]);
    assert_ne!(srv.origin, origin, "the page is on another origin");
    let bus = publisher(&fwd.sub);

    for t in TRANSPORTS {
        bridge.open(t, &srv.url, t);
    }
    let mut opened = HashSet::new();
    while opened.len() < TRANSPORTS.len() {
        let e = bridge.until(Duration::from_secs(60), |e| e["event"] == "open");
        let id = e["id"].as_str().unwrap().to_owned();
        assert_eq!(
            e["transport"],
            id.as_str(),
            "the page opened on another transport"
        );
        let subscribe =
            json!({"name": "subscribe", "data": {"token": token(&user(&id)), "replies": true}});
        bridge.command(json!({"cmd": "send", "id": id, "data": subscribe.to_string()}));
        opened.insert(id);
    }
    bridge.until_each(&TRANSPORTS, Duration::from_secs(30), |e| {
        e["event"] == "message" && e["data"]["name"] == "pushnote:subscribed"
    });

    // Bus subscriptions reach the forwarder in the background: send markers to every user
    // until each page has one.
    let mut synced = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while synced.len() < TRANSPORTS.len() {
        assert!(Instant::now() < deadline, "never synced: {synced:?}");
        for t in TRANSPORTS {
            bus.notify(&json!({"sync": t}), [user(t)]).unwrap();
        }
        std::thread::sleep(Duration::from_millis(300));
        bridge.drain();
        for e in &bridge.log {
            if e["event"] == "message" && e["data"]["sync"].is_string() {
                synced.insert(e["id"].as_str().unwrap().to_owned());
            }
        }
    }

    let broadcast = json!({"text": TRICKY, "n": 1.5, "list": [null, true, {"k": "v"}]});
    let big = json!({"big": "x".repeat(64 * 1024)});
    bus.notify_all(&broadcast).unwrap();
    bus.notify_all(&json!(TRICKY)).unwrap();
    bus.notify_all(&big).unwrap();
    for t in TRANSPORTS {
        bus.notify(&json!({"for": user(t), "text": TRICKY}), [user(t)])
            .unwrap();
    }
    bus.notify_all(&json!({"end": true})).unwrap();

    bridge.until_each(&TRANSPORTS, Duration::from_secs(30), |e| {
        e["event"] == "message" && e["data"]["end"] == true
    });
    // Give a script that should never run the time to run.
    std::thread::sleep(Duration::from_millis(300));
    bridge.drain();

    let mut received: HashMap<String, Vec<Value>> = HashMap::new();
    for e in &bridge.log {
        let id = e["id"].as_str().unwrap_or_default().to_owned();
        match e["event"].as_str() {
            Some("message") if e["data"]["sync"].is_null() => {
                received.entry(id).or_default().push(e["data"].clone())
            }
            Some("console") | Some("pageerror") => {
                assert!(!e["text"].as_str().unwrap().contains("PWNED"), "{id}: {e}")
            }
            Some("close") => panic!("{id} closed: {e}"),
            _ => {}
        }
    }
    for t in TRANSPORTS {
        let got = &received[t];
        let expected = [
            json!({"name": "pushnote:subscribed", "data": {"user": user(t)}}),
            broadcast.clone(),
            json!(TRICKY),
            big.clone(),
            json!({"for": user(t), "text": TRICKY}),
            json!({"end": true}),
        ];
        assert_eq!(got.len(), expected.len(), "{t}: {got:?}");
        for (g, e) in got.iter().zip(&expected) {
            assert!(g == e, "{t}: got {g:.200}, expected {e:.200}");
        }
    }
}

/// The channel test's pages: WebSocket, and HTTP streaming and polling.
const CHANNEL_TRANSPORTS: [&str; 3] = ["websocket", "xhr-streaming", "xhr-polling"];

fn public_channel(transport: &str) -> String {
    format!("news-{transport}")
}

fn private_channel(transport: &str) -> String {
    format!("private-team-{transport}")
}

#[test]
fn the_stock_client_joins_public_and_private_channels_and_receives_only_their_events() {
    let (mut bridge, origin) = Bridge::start();
    let fwd = forwarder();
    let srv = server(&fwd, &[]);
    assert_ne!(srv.origin, origin, "the page is on another origin");
    let bus = publisher(&fwd.sub);
    let signer = signer();

    // Each page asks for its private channel without a token (refused), then joins its public
    // channel and its private channel with a channel token the app minted.
    for t in CHANNEL_TRANSPORTS {
        bridge.open(t, &srv.url, t);
    }
    for _ in CHANNEL_TRANSPORTS {
        let e = bridge.until(Duration::from_secs(60), |e| e["event"] == "open");
        let id = e["id"].as_str().unwrap().to_owned();
        assert_eq!(
            e["transport"],
            id.as_str(),
            "the page opened on another transport"
        );
        let (public, private) = (public_channel(&id), private_channel(&id));
        let token = signer.channel_token(&private, None).unwrap();
        for data in [
            json!({"channel": private}),
            json!({"channel": public}),
            json!({"channel": private, "token": token}),
        ] {
            let request = json!({"name": "subscribe", "data": data});
            bridge.command(json!({"cmd": "send", "id": id, "data": request.to_string()}));
        }
    }
    bridge.until_each(&CHANNEL_TRANSPORTS, Duration::from_secs(30), |e| {
        let id = e["id"].as_str().unwrap_or_default();
        e["event"] == "message"
            && e["data"]["name"] == "pushnote:subscribed"
            && e["data"]["data"]["channel"] == private_channel(id).as_str()
    });

    // The server's channel subscriptions reach the forwarder a moment after the replies:
    // publish markers on every channel until its page has one.
    let mut pending: Vec<(&str, String)> = CHANNEL_TRANSPORTS
        .iter()
        .flat_map(|&t| [(t, public_channel(t)), (t, private_channel(t))])
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !pending.is_empty() {
        assert!(
            Instant::now() < deadline,
            "channels never reached: {pending:?}"
        );
        for (_, channel) in &pending {
            if let Err(e) = bus.publish(channel, "sync", &json!({"sync": true})) {
                assert!(matches!(e, pushnote::PublishError::NotConnected(_)), "{e}");
            }
        }
        std::thread::sleep(Duration::from_millis(200));
        bridge.drain();
        let log = &bridge.log;
        pending.retain(|(t, channel)| {
            !log.iter().any(|e| {
                e["id"] == *t
                    && e["event"] == "message"
                    && e["data"]["event"] == "sync"
                    && e["data"]["channel"] == channel.as_str()
            })
        });
    }

    // Every page's channels are joined on this server by another page too, so their events
    // reach the server: only the session must tell them apart. Two channels nobody joined
    // as well. Then each page's end marker, on its own public channel, after all of them.
    let event =
        |t: &str| json!({"id": t, "text": TRICKY, "n": 1.5, "list": [null, true, {"k": "v"}]});
    let secret = |t: &str| json!({"team": t, "members": ["42", "43"]});
    for t in CHANNEL_TRANSPORTS {
        bus.publish(&public_channel(t), "create", &event(t))
            .unwrap();
        bus.publish(&private_channel(t), "update", &secret(t))
            .unwrap();
    }
    bus.publish("news-nobody", "create", &event("nobody"))
        .unwrap();
    bus.publish("private-nobody", "update", &secret("nobody"))
        .unwrap();
    for t in CHANNEL_TRANSPORTS {
        bus.publish(&public_channel(t), "end", &json!({"end": t}))
            .unwrap();
    }
    bridge.until_each(&CHANNEL_TRANSPORTS, Duration::from_secs(30), |e| {
        e["event"] == "message" && e["data"]["event"] == "end"
    });
    bridge.drain();

    let mut received: HashMap<String, Vec<Value>> = HashMap::new();
    for e in &bridge.log {
        let id = e["id"].as_str().unwrap_or_default().to_owned();
        match e["event"].as_str() {
            Some("message") => {
                assert_eq!(e["type"], "object", "{id}: e.data is not an object: {e}");
                if e["data"]["event"] == "sync" {
                    let own = [public_channel(&id), private_channel(&id)];
                    assert!(
                        own.iter().any(|c| e["data"]["channel"] == c.as_str()),
                        "{id} got another channel's marker: {e}"
                    );
                } else {
                    received.entry(id).or_default().push(e["data"].clone());
                }
            }
            Some("console") | Some("pageerror") => {
                assert!(!e["text"].as_str().unwrap().contains("PWNED"), "{id}: {e}")
            }
            Some("close") => panic!("{id} closed: {e}"),
            _ => {}
        }
    }
    for t in CHANNEL_TRANSPORTS {
        let (public, private) = (public_channel(t), private_channel(t));
        let got = &received[t];
        assert_eq!(got.len(), 6, "{t}: {got:#?}");
        let refused = &got[0];
        assert_eq!(refused["name"], "pushnote:error", "{t}: {refused}");
        assert_eq!(refused["data"]["code"], "forbidden", "{t}: {refused}");
        assert_eq!(
            refused["data"]["channel"],
            private.as_str(),
            "{t}: {refused}"
        );
        let expected = [
            json!({"name": "pushnote:subscribed", "data": {"channel": public}}),
            json!({"name": "pushnote:subscribed", "data": {"channel": private}}),
            json!({"channel": public, "event": "create", "data": event(t)}),
            json!({"channel": private, "event": "update", "data": secret(t)}),
            json!({"channel": public, "event": "end", "data": {"end": t}}),
        ];
        for (g, e) in got[1..].iter().zip(&expected) {
            assert!(g == e, "{t}: got {g:.300}, expected {e:.300}");
        }
    }
}
