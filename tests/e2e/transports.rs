//! The HTTP transports and the SockJS flags of the real server: a polling client subscribes
//! and receives through the bus like a WebSocket one, and each flag changes what it says.

use std::time::Duration;

use serde_json::{json, Value};

use crate::support::*;

/// A SockJS client over XHR polling, as browsers behind WebSocket-breaking proxies use.
pub(crate) struct Polling {
    session: String,
    received: std::collections::VecDeque<Value>,
}

impl Polling {
    pub(crate) async fn open(server: &Server) -> Polling {
        let session = format!("{}/000/{}", server.url, rand_id());
        let r = http("POST", &format!("{session}/xhr"), &[], "").await;
        assert_eq!((r.status, r.body.as_str()), (200, "o\n"));
        Polling {
            session,
            received: Default::default(),
        }
    }

    pub(crate) async fn emit(&self, value: Value) {
        let payload = serde_json::to_string(&[value.to_string()]).unwrap();
        let r = http("POST", &format!("{}/xhr_send", self.session), &[], &payload).await;
        assert_eq!(r.status, 204, "{}", r.body);
    }

    /// The next message, polling as long as it takes (heartbeats are skipped).
    pub(crate) async fn next(&mut self) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.received.is_empty() {
            assert!(tokio::time::Instant::now() < deadline, "nothing arrived");
            self.poll().await;
        }
        self.received.pop_front().unwrap()
    }

    /// One poll: its messages are queued; a heartbeat (after the server's interval of
    /// silence) adds none.
    pub(crate) async fn poll(&mut self) {
        let r = http("POST", &format!("{}/xhr", self.session), &[], "").await;
        let frame = r.body.trim_end();
        if let Some(array) = frame.strip_prefix('a') {
            let messages: Vec<Value> = serde_json::from_str(array).unwrap();
            self.received.extend(messages);
        } else {
            assert_eq!(frame, "h", "unexpected frame");
        }
    }
}

#[tokio::test]
async fn a_polling_client_subscribes_and_receives_broadcasts_and_its_users_messages() {
    let fwd = forwarder();
    let srv = server(&fwd, &["--heartbeat", "1"]);
    let bus = publisher(&fwd.sub);
    let mut client = Polling::open(&srv).await;
    client
        .emit(json!({"name": "subscribe", "data": {"token": token("7"), "replies": true}}))
        .await;
    assert_eq!(client.next().await["name"], "pushnote:subscribed");
    // Broadcasts and targeted messages until both kinds arrive (the bus subscription travels
    // to the forwarder in the background).
    let deadline = tokio::time::Instant::now() + WAIT;
    let (mut all, mut mine) = (false, false);
    while !(all && mine) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the bus never delivered"
        );
        bus.notify_all(&json!({"to": "all", "text": "é中😀\u{2028}</script>"}))
            .unwrap();
        bus.notify(&json!({"to": "7"}), ["7"]).unwrap();
        bus.notify(&json!({"to": "8"}), ["8"]).unwrap();
        client.poll().await;
        while let Some(v) = client.received.pop_front() {
            match v["to"].as_str() {
                Some("all") => {
                    assert_eq!(v["text"], "é中😀\u{2028}</script>");
                    all = true;
                }
                Some("7") => mine = true,
                other => panic!("user 7 received {other:?}: {v}"),
            }
        }
    }
}

#[tokio::test]
async fn sockjs_flags_change_what_the_server_offers() {
    let fwd = forwarder();
    let srv = server(
        &fwd,
        &[
            "--disable-websocket",
            "--cookie-needed",
            "--origins",
            "https://app.example,https://*.corp.example",
            "--sockjs-url",
            "http://127.0.0.1:1/own-sockjs.js",
            "--disconnect-delay",
            "1",
        ],
    );
    let info: Value =
        serde_json::from_str(&http_get(&format!("{}/info", srv.url)).await.1).unwrap();
    assert_eq!(info["websocket"], false);
    assert_eq!(info["cookie_needed"], true);
    let iframe = http_get(&format!("{}/iframe.html", srv.url)).await.1;
    assert!(iframe.contains(r#"src="http://127.0.0.1:1/own-sockjs.js""#));

    let session = format!("{}/000/{}", srv.url, rand_id());
    let evil = http(
        "POST",
        &format!("{session}/xhr"),
        &[("Origin", "https://evil.example")],
        "",
    )
    .await;
    assert_eq!(evil.status, 403);
    let good = http(
        "POST",
        &format!("{session}/xhr"),
        &[("Origin", "https://a.corp.example")],
        "",
    )
    .await;
    assert_eq!((good.status, good.body.as_str()), (200, "o\n"));
    assert!(good
        .headers
        .contains("set-cookie: jsessionid=dummy; path=/"));
    assert!(good
        .headers
        .contains("access-control-allow-origin: https://a.corp.example"));

    // Gone after the 1 s disconnect delay without a receiving request: well before the
    // default 5 s, even on a busy machine.
    let since = tokio::time::Instant::now();
    srv.wait_metric_at_most("pushnote_sessions", 0).await;
    let took = since.elapsed();
    assert!(took < Duration::from_secs(4), "gone only after {took:?}");
    let r = http("POST", &format!("{session}/xhr_send"), &[], r#"["x"]"#).await;
    assert_eq!(r.status, 404);

    let ws = tokio_tungstenite::connect_async(srv.ws_url()).await;
    assert!(ws.is_err(), "WebSocket is off");
}

#[test]
fn bad_sockjs_flags_are_refused_with_the_reason() {
    for (args, says) in [
        (&["--origins", "example.com"][..], "--origins"),
        (&["--disconnect-delay", "0"][..], "--disconnect-delay"),
    ] {
        let out = server_cmd(&[&["--port", "0"], args].concat())
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{err}");
    }
}
