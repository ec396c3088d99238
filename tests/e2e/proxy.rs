//! pushnote behind nginx (deploy/nginx/pushnote.conf): TLS, two servers on one forwarder, the
//! stock client in headless Chromium on every transport it can use. Without the
//! configuration's stickiness, the same pages fail on the HTTP transports: the test can tell.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::browser::{Bridge, TRANSPORTS};
use crate::nginx::{tempdir, Nginx, Site};
use crate::support::*;

fn user(transport: &str, round: &str) -> String {
    format!("proxy-{round}-{transport}")
}

/// Opens a page per transport at `url` (ids `ROUND-TRANSPORT`), subscribes each as its user,
/// and, every 300 ms, publishes a broadcast and each user's message and has each page send a
/// message, until every page has had both or `limit` has passed; which pages had both and are
/// still open.
pub(crate) fn deliveries(
    bridge: &mut Bridge,
    bus: &pushnote::Publisher,
    url: &str,
    round: &str,
    limit: Duration,
) -> HashMap<&'static str, bool> {
    let id = |t: &str| format!("{round}-{t}");
    for t in TRANSPORTS {
        bridge.open(&id(t), url, t);
    }
    let deadline = Instant::now() + limit;
    let mut subscribed: Vec<&str> = Vec::new();
    let mut n = 0;
    loop {
        bridge.drain();
        let events: Vec<Value> = bridge.log.clone();
        let of = |t: &str| -> Vec<&Value> {
            let page = id(t);
            events.iter().filter(|e| e["id"] == page.as_str()).collect()
        };
        for t in TRANSPORTS {
            if subscribed.contains(&t) {
                continue;
            }
            let opened = of(t)
                .iter()
                .any(|e| e["event"] == "open" && e["transport"] == t);
            if opened {
                let subscribe =
                    json!({"name": "subscribe", "data": {"token": token(&user(t, round))}});
                bridge.command(json!({"cmd": "send", "id": id(t), "data": subscribe.to_string()}));
                subscribed.push(t);
            }
        }
        let done: HashMap<&'static str, bool> = TRANSPORTS
            .iter()
            .map(|&t| {
                let got = of(t);
                let closed = got.iter().any(|e| e["event"] == "close");
                let broadcast = got.iter().any(|e| e["data"]["all"].is_number());
                let mine = got
                    .iter()
                    .any(|e| e["data"]["for"] == user(t, round).as_str());
                (t, !closed && broadcast && mine)
            })
            .collect();
        if done.values().all(|&d| d) || Instant::now() > deadline {
            return done;
        }
        n += 1;
        bus.notify_all(&json!({ "all": n })).unwrap();
        for t in &subscribed {
            bus.notify(&json!({"for": user(t, round)}), [user(t, round)])
                .unwrap();
            // Every page sends too (answered with an error, harmless): an HTTP transport's
            // sends are requests of their own, each of which must reach the session's server.
            let ping = json!({"name": "ping"}).to_string();
            bridge.command(json!({"cmd": "send", "id": id(t), "data": ping}));
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn behind_nginx_with_tls_every_transport_reaches_two_servers_and_only_with_stickiness() {
    let dir = tempdir("pushnote-nginx");
    let (mut bridge, _origin) = Bridge::start();
    let port = free_port();
    let sockjs_url = format!("https://127.0.0.1:{port}/sockjs.min.js");
    let fwd = forwarder();
    let a = server(&fwd, &["--sockjs-url", &sockjs_url]);
    let b = server(&fwd, &["--sockjs-url", &sockjs_url]);
    let bus = publisher(&fwd.sub);
    let url = format!("https://127.0.0.1:{port}/sockjs");

    let servers = [a.port(), b.port()];
    // The client script the iframe transports load, from the same TLS origin (an https
    // iframe may not load an http script).
    let script = repo_path("tests/browser/node_modules/sockjs-client/dist/sockjs.min.js");
    let mut site = Site::new(port, &servers);
    site.locations = format!(
        "    location = /sockjs.min.js {{ alias {}; }}\n",
        script.display()
    );
    let nginx = Nginx::start(&dir, &site);
    let got = deliveries(&mut bridge, &bus, &url, "sticky", Duration::from_secs(60));
    assert!(
        got.values().all(|&d| d),
        "every transport through nginx: {got:?}"
    );
    drop(nginx);

    // The same pages through a balancer that does not keep a session's requests together:
    // the HTTP transports' sends miss the server that holds their session.
    site.sticky = false;
    let nginx = Nginx::start(&dir, &site);
    let got = deliveries(&mut bridge, &bus, &url, "split", Duration::from_secs(20));
    assert!(got["websocket"], "a WebSocket is one connection: {got:?}");
    for t in TRANSPORTS.iter().filter(|&&t| t != "websocket") {
        assert!(!got[t], "{t} fails without stickiness: {got:?}");
    }
    drop(nginx);
    let _ = std::fs::remove_dir_all(&dir);
}
