//! Sessions through nginx (deploy/nginx/pushnote.conf) stay on the server that holds them
//! when another server comes back: twenty stock-client pages in headless Chromium, polling
//! (xhr-polling), open while one of two servers is down; it starts again, nginx takes it back,
//! and every page keeps its session and receives what is published. With the hash alone, the
//! pages whose session hashes to the returning server are sent there and lose their session.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::browser::Bridge;
use crate::nginx::{tempdir, Nginx, Site};
use crate::support::*;

const PAGES: usize = 20;

fn page(n: usize) -> String {
    format!("page-{n}")
}

/// The events of page `id` so far.
fn events<'a>(bridge: &'a Bridge, id: &str) -> Vec<&'a Value> {
    bridge.log.iter().filter(|e| e["id"] == id).collect()
}

/// Opens page `id` on xhr-polling at `url`, the page on the push host's own site, as a site's
/// pages and its push host (www.example.com, push.example.com) are: the browser keeps the
/// cookies of the push host's answers as the site's own.
fn open(bridge: &mut Bridge, id: &str, url: &str) {
    bridge.command(json!({
        "cmd": "open", "id": id, "url": url, "transport": "xhr-polling", "sameOrigin": true
    }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_sessions_through_nginx_stay_on_their_server_when_another_comes_back() {
    let dir = tempdir("pushnote-nginx-restart");
    let (mut bridge, _origin) = Bridge::start();
    let fwd = forwarder();
    let bus = publisher(&fwd.sub);
    let a_port = free_port().to_string();
    let a = spawn_server(&mut server_cmd(&server_args(&fwd, &a_port)), false);
    let b = server(&fwd, &[]);
    let b_port = b.port();
    let port = free_port();
    let servers = [a_port.parse().unwrap(), b_port];
    let _nginx = Nginx::start(&dir, &Site::new(port, &servers));
    let url = format!("https://127.0.0.1:{port}/sockjs");

    // Server a stops; pages (re)connect meanwhile, and all get sessions on b.
    drop(a);
    let ids: Vec<String> = (0..PAGES).map(page).collect();
    for id in &ids {
        open(&mut bridge, id, &url);
    }
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    bridge.until_each(&refs, Duration::from_secs(60), |e| e["event"] == "open");
    assert_eq!(
        b.metric("pushnote_sessions").await,
        PAGES as u64,
        "every page on b"
    );

    // Server a starts again on its port; nginx takes it back once its retry window has
    // passed: new pages whose session hashes to a then get their session there.
    let a = spawn_server(&mut server_cmd(&server_args(&fwd, &a_port)), false);
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut probes = 0;
    while a.metric("pushnote_sessions").await == 0 {
        assert!(Instant::now() < deadline, "nginx sends new sessions to a");
        open(&mut bridge, &format!("probe-{probes}"), &url);
        probes += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Broadcasts make every page poll again; each poll must reach b, which holds its session.
    let mut n = 0u64;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        bridge.drain();
        let closed: Vec<(&String, Vec<&Value>)> = ids
            .iter()
            .map(|id| {
                let closes = events(&bridge, id)
                    .into_iter()
                    .filter(|e| e["event"] == "close")
                    .collect();
                (id, closes)
            })
            .filter(|(_, c): &(_, Vec<_>)| !c.is_empty())
            .collect();
        assert!(
            closed.is_empty(),
            "{} of {PAGES} pages lost their session: {closed:?}",
            closed.len()
        );
        // Three broadcasts each: a page polls again after each, and every poll must reach b.
        let received = ids
            .iter()
            .filter(|id| {
                let got: std::collections::HashSet<u64> = events(&bridge, id)
                    .iter()
                    .filter_map(|e| e["data"]["restart"].as_u64())
                    .collect();
                got.len() >= 3
            })
            .count();
        if received == PAGES {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{received} of {PAGES} pages received"
        );
        bus.notify_all(&json!({ "restart": n })).unwrap();
        n += 1;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    drop(a);
    let _ = std::fs::remove_dir_all(&dir);
}
