//! pushnote behind nginx (deploy/nginx/pushnote.conf): TLS, two servers on one forwarder, the
//! stock client in headless Chromium on every transport it can use. Without the
//! configuration's stickiness, the same pages fail on the HTTP transports: the test can tell.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::browser::{Bridge, TRANSPORTS};
use crate::support::*;

/// A self-signed certificate for 127.0.0.1, made with openssl.
fn certificate(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let out = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args([
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}

/// nginx in the foreground with the repository's configuration, on `port` instead of 443, in
/// front of `servers`; without its stickiness (round robin) when `sticky` is false.
struct Nginx {
    proc: Proc,
}

impl Nginx {
    fn start(dir: &Path, port: u16, servers: &[u16], sticky: bool) -> Nginx {
        let (cert, key) = certificate(dir);
        let site = std::fs::read_to_string(repo_path("deploy/nginx/pushnote.conf")).unwrap();
        let upstreams: String = servers
            .iter()
            .map(|p| format!("    server 127.0.0.1:{p};\n"))
            .collect();
        let mut site = site
            .replace(
                "    server 127.0.0.1:8081;\n    server 127.0.0.1:8082;\n",
                &upstreams,
            )
            .replace(
                "    listen 443 ssl;\n    listen [::]:443 ssl;\n",
                &format!("    listen 127.0.0.1:{port} ssl;\n"),
            )
            .replace(
                "/etc/ssl/certs/push.example.com.pem",
                cert.to_str().unwrap(),
            )
            .replace(
                "/etc/ssl/private/push.example.com.key",
                key.to_str().unwrap(),
            );
        assert!(
            site.contains(&upstreams) && site.contains(&format!(":{port} ssl")),
            "{site}"
        );
        if !sticky {
            let hash = "    hash $pushnote_session consistent;\n";
            assert!(site.contains(hash));
            site = site.replace(hash, "");
        }
        // The client script the iframe transports load, from the same TLS origin (an https
        // iframe may not load an http script).
        let script = repo_path("tests/browser/node_modules/sockjs-client/dist/sockjs.min.js");
        site = site.replace(
            "    # The rest of your site.\n",
            &format!(
                "    location = /sockjs.min.js {{ alias {}; }}\n",
                script.display()
            ),
        );
        let d = dir.display();
        let conf = format!(
            "daemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
             types {{ application/javascript js; }}\n{site}\n}}\n"
        );
        let file = dir.join("nginx.conf");
        std::fs::write(&file, conf).unwrap();
        let test = Command::new("nginx")
            .arg("-t")
            .arg("-c")
            .arg(&file)
            .arg("-p")
            .arg(dir)
            .output()
            .expect("nginx (Debian's nginx package)");
        assert!(
            test.status.success(),
            "{}",
            String::from_utf8_lossy(&test.stderr)
        );
        let proc = Proc::spawn(
            Command::new("nginx")
                .arg("-c")
                .arg(&file)
                .arg("-p")
                .arg(dir),
        );
        let deadline = Instant::now() + WAIT;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nginx listens");
            std::thread::sleep(Duration::from_millis(20));
        }
        Nginx { proc }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // A fast shutdown: the master ends its workers, then itself, freeing the port.
        self.proc.signal("TERM");
        let _ = self.proc.wait_exit(WAIT);
    }
}

fn user(transport: &str, round: &str) -> String {
    format!("proxy-{round}-{transport}")
}

/// Opens a page per transport at `url` (ids `ROUND-TRANSPORT`), subscribes each as its user,
/// and, every 300 ms, publishes a broadcast and each user's message and has each page send a
/// message, until every page has had both or `limit` has passed; which pages had both and are
/// still open.
fn deliveries(
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
    let dir = std::env::temp_dir().join(format!("pushnote-nginx-{}", rand_id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (mut bridge, _origin) = Bridge::start();
    let port = free_port();
    let sockjs_url = format!("https://127.0.0.1:{port}/sockjs.min.js");
    let fwd = forwarder();
    let a = server(&fwd, &["--sockjs-url", &sockjs_url]);
    let b = server(&fwd, &["--sockjs-url", &sockjs_url]);
    let port_of = |s: &Server| s.origin.rsplit(':').next().unwrap().parse::<u16>().unwrap();
    let bus = publisher(&fwd.sub);
    let url = format!("https://127.0.0.1:{port}/sockjs");

    let nginx = Nginx::start(&dir, port, &[port_of(&a), port_of(&b)], true);
    let got = deliveries(&mut bridge, &bus, &url, "sticky", Duration::from_secs(60));
    assert!(
        got.values().all(|&d| d),
        "every transport through nginx: {got:?}"
    );
    drop(nginx);

    // The same pages without the hash on the session: the HTTP transports' requests go to
    // either server, and a session's requests miss the server that holds it.
    let nginx = Nginx::start(&dir, port, &[port_of(&a), port_of(&b)], false);
    let got = deliveries(
        &mut bridge,
        &bus,
        &url,
        "round-robin",
        Duration::from_secs(20),
    );
    assert!(got["websocket"], "a WebSocket is one connection: {got:?}");
    for t in TRANSPORTS.iter().filter(|&&t| t != "websocket") {
        assert!(!got[t], "{t} fails without stickiness: {got:?}");
    }
    drop(nginx);
}
