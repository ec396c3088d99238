//! pushnote behind HAProxy (deploy/haproxy/haproxy.cfg), changed only where a test must (its
//! port, certificate, servers and a temporary directory instead of the system's paths): the
//! stock client in headless Chromium on every transport, and /health steering new sessions
//! away from a server cut off from its forwarder while its own sessions carry on.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::browser::{Bridge, TRANSPORTS};
use crate::nginx::{certificate, tempdir};
use crate::proxied::{Polling, Ws};
use crate::proxy::deliveries;
use crate::support::*;

/// How a test runs the shipped configuration.
struct Site<'a> {
    port: u16,
    servers: &'a [u16],
    tls: bool,
    /// Lines added to the global section.
    global: String,
    /// Lines added to the frontend (where "The rest of your site" is).
    frontend: String,
    /// Lines added to the backend, before its servers.
    backend: String,
}

fn replace(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "the configuration has {from:?}");
    text.replace(from, to)
}

fn config(dir: &Path, site: &Site) -> String {
    let text = std::fs::read_to_string(repo_path("deploy/haproxy/haproxy.cfg")).unwrap();
    let d = dir.display();
    let mut text = replace(
        &text,
        "\tlog /dev/log\tlocal0\n\tlog /dev/log\tlocal1 notice\n\tchroot /var/lib/haproxy\n",
        "",
    );
    text = replace(
        &text,
        "\tstats socket /run/haproxy/admin.sock mode 660 level admin\n",
        &format!("\tstats socket {d}/admin.sock mode 600 level admin\n"),
    );
    // Started by whoever runs the tests, in the foreground.
    text = replace(&text, "\tuser haproxy\n\tgroup haproxy\n\tdaemon\n", "");
    // HAProxy raises its descriptor limit to twice maxconn, which root may; a test's hard
    // limit allows less, and its few sessions need less.
    text = replace(
        &text,
        "\tmaxconn 200000\n",
        &format!("\tmaxconn 4000\n{}", site.global),
    );
    let bind = if site.tls {
        let (cert, key) = certificate(dir);
        let pem = dir.join("haproxy.pem");
        let both = std::fs::read_to_string(cert).unwrap() + &std::fs::read_to_string(key).unwrap();
        std::fs::write(&pem, both).unwrap();
        format!("\tbind 127.0.0.1:{} ssl crt {}\n", site.port, pem.display())
    } else {
        format!("\tbind 127.0.0.1:{}\n", site.port)
    };
    text = replace(
        &text,
        "\tbind :443 ssl crt /etc/haproxy/certs/push.example.com.pem\n\
         \tbind :::443 v6only ssl crt /etc/haproxy/certs/push.example.com.pem\n",
        &bind,
    );
    text = replace(
        &text,
        "\t# The rest of your site.\n",
        &format!("\t# The rest of your site.\n{}", site.frontend),
    );
    let servers: String = site
        .servers
        .iter()
        .map(|p| format!("\tserver s{p} 127.0.0.1:{p}\n"))
        .collect();
    replace(
        &text,
        "\tserver s8081 127.0.0.1:8081\n\tserver s8082 127.0.0.1:8082\n",
        &format!("{}{servers}", site.backend),
    )
}

/// HAProxy in the foreground, stopped when dropped.
struct Haproxy {
    proc: Proc,
    dir: PathBuf,
}

impl Haproxy {
    fn start(dir: &Path, site: &Site) -> Haproxy {
        let file = dir.join("haproxy.cfg");
        std::fs::write(&file, config(dir, site)).unwrap();
        let check = Command::new("haproxy")
            .arg("-c")
            .arg("-f")
            .arg(&file)
            .output()
            .expect("haproxy (Debian's haproxy package)");
        assert!(
            check.status.success(),
            "{}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
        let proc = Proc::spawn(Command::new("haproxy").arg("-db").arg("-f").arg(&file));
        let deadline = Instant::now() + WAIT;
        while std::net::TcpStream::connect(("127.0.0.1", site.port)).is_err() {
            assert!(Instant::now() < deadline, "haproxy listens");
            std::thread::sleep(Duration::from_millis(20));
        }
        // Its stats socket is put in place on its own, maybe after the port: the tests read it.
        while std::os::unix::net::UnixStream::connect(dir.join("admin.sock")).is_err() {
            assert!(Instant::now() < deadline, "haproxy's stats socket");
            std::thread::sleep(Duration::from_millis(20));
        }
        Haproxy {
            proc,
            dir: dir.to_owned(),
        }
    }

    /// Which servers of the backend HAProxy counts as up, by name (`s<port>`), from its
    /// runtime API.
    fn up(&self) -> Vec<String> {
        let mut s = std::os::unix::net::UnixStream::connect(self.dir.join("admin.sock"))
            .expect("haproxy's stats socket");
        s.write_all(b"show servers state pushnote\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        // be_id be_name srv_id srv_name srv_addr srv_op_state …; 2 is running.
        out.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .filter(|f| f.len() > 5 && f[5] == "2")
            .map(|f| f[3].to_owned())
            .collect()
    }

    /// Waits until exactly `servers` are up.
    fn wait_up(&self, servers: &[&str]) {
        let deadline = Instant::now() + WAIT + WAIT;
        loop {
            let mut up = self.up();
            up.sort();
            let mut want: Vec<String> = servers.iter().map(|s| s.to_string()).collect();
            want.sort();
            if up == want {
                return;
            }
            assert!(Instant::now() < deadline, "up: {up:?}, expected {want:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        self.proc.signal("TERM");
        let _ = self.proc.wait_exit(WAIT);
    }
}

#[test]
fn behind_haproxy_with_tls_every_transport_reaches_two_servers() {
    let dir = tempdir("pushnote-haproxy");
    let (mut bridge, _origin) = Bridge::start();
    let port = free_port();
    let sockjs_url = format!("https://127.0.0.1:{port}/sockjs.min.js");
    let fwd = forwarder();
    let a = server(&fwd, &["--sockjs-url", &sockjs_url]);
    let b = server(&fwd, &["--sockjs-url", &sockjs_url]);
    let bus = publisher(&fwd.sub);
    let servers = [a.port(), b.port()];
    // The client script the iframe transports load, from the same TLS origin.
    let script = repo_path("tests/browser/node_modules/sockjs-client/dist/sockjs.min.js");
    let site = Site {
        port,
        servers: &servers,
        tls: true,
        // Room for the script in one answer.
        global: "\ttune.bufsize 131072\n".into(),
        frontend: format!(
            "\thttp-request return status 200 content-type application/javascript file {} \
             if {{ path /sockjs.min.js }}\n",
            script.display()
        ),
        backend: String::new(),
    };
    let haproxy = Haproxy::start(&dir, &site);
    haproxy.wait_up(&[&format!("s{}", servers[0]), &format!("s{}", servers[1])]);
    let url = format!("https://127.0.0.1:{port}/sockjs");
    let got = deliveries(&mut bridge, &bus, &url, "haproxy", Duration::from_secs(60));
    assert!(
        got.values().all(|&d| d) && got.len() == TRANSPORTS.len(),
        "every transport through HAProxy: {got:?}"
    );
    drop(haproxy);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Sessions opened through the proxy at `port` until `want` of each transport are on server
/// `on` (by the proxy's X-Upstream header), at most 40 of each: the WebSockets and the
/// polling sessions, all of them (on any server).
async fn sessions_until(port: u16, on: &str, want: usize) -> (Vec<Ws>, Vec<Polling>) {
    let base = format!("http://127.0.0.1:{port}/sockjs");
    let (mut ws, mut polling) = (Vec::new(), Vec::new());
    for n in 0..40 {
        if ws
            .iter()
            .filter(|w: &&Ws| w.upstream_is("x-upstream", on))
            .count()
            < want
        {
            ws.push(Ws::open(port, "0", &format!("w{n}x{}", rand_id())).await);
        }
        let on_it = |p: &&Polling| p.upstream.as_deref() == Some(on);
        if polling.iter().filter(on_it).count() < want {
            polling.push(Polling::open(&base, n, "x-upstream").await);
        }
    }
    (ws, polling)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_cut_off_from_its_forwarder_gets_no_new_sessions_through_haproxy_and_keeps_its_own(
) {
    let dir = tempdir("pushnote-haproxy-health");
    // Server a on a forwarder of its own, which the test stops and starts again on the same
    // port; server b on another, which stays.
    // Its first port is the system's pick, so that no other process can take it between a
    // pick here and the forwarder's bind.
    let fwd_a = forwarder_with(&["--sub", "tcp://127.0.0.1:*", "--pub", "tcp://127.0.0.1:*"]);
    let a_pub = fwd_a.publish.clone();
    let fwd_b = forwarder();
    // A heartbeat every second: a long poll is answered within it.
    let flags = ["--heartbeat", "1", "--session-rate-per-address", "0"];
    let a = server(&fwd_a, &flags);
    let b = server(&fwd_b, &flags);
    let (name_a, name_b) = (format!("s{}", a.port()), format!("s{}", b.port()));
    let port = free_port();
    let servers = [a.port(), b.port()];
    let site = Site {
        port,
        servers: &servers,
        tls: false,
        global: String::new(),
        frontend: String::new(),
        // Which server the proxy chose, for the test to see.
        backend: "\thttp-response set-header X-Upstream %s\n".into(),
    };
    let haproxy = Haproxy::start(&dir, &site);
    haproxy.wait_up(&[&name_a, &name_b]);

    // Sessions of both transports on a (and some on b).
    let (ws, polling) = sessions_until(port, &name_a, 2).await;
    let ws_a: Vec<&Ws> = ws
        .iter()
        .filter(|w| w.upstream_is("x-upstream", &name_a))
        .collect();
    let polling_a: Vec<&Polling> = polling
        .iter()
        .filter(|p| p.upstream.as_deref() == Some(name_a.as_str()))
        .collect();
    assert!(
        ws_a.len() >= 2 && polling_a.len() >= 2,
        "sessions on {name_a}"
    );

    // a loses its forwarder: its /health answers 503, and HAProxy takes it out.
    drop(fwd_a);
    haproxy.wait_up(&[&name_b]);
    // New sessions, of both transports, all go to b.
    for n in 0..10 {
        let w = Ws::open(port, "1", &format!("n{n}x{}", rand_id())).await;
        assert!(
            w.upstream_is("x-upstream", &name_b),
            "a new WebSocket goes to the ready server: {}",
            w.head
        );
        let p = Polling::open(
            &format!("http://127.0.0.1:{port}/sockjs"),
            100 + n,
            "x-upstream",
        )
        .await;
        assert_eq!(
            p.upstream.as_deref(),
            Some(name_b.as_str()),
            "a new polling session"
        );
    }
    // a's own sessions carried on: its polls still reach it.
    for p in &polling_a {
        assert_eq!(p.ended(), None, "a polling session of the server taken out");
    }

    // Its forwarder comes back: a is ready again and taken back in; what is published through
    // the new forwarder reaches a's sessions of before, over both transports.
    let fwd_a = forwarder_with(&["--sub", "tcp://127.0.0.1:*", "--pub", &a_pub]);
    haproxy.wait_up(&[&name_a, &name_b]);
    let bus = publisher(&fwd_a.sub);
    let marker = format!("carried-on-{}", rand_id());
    let deadline = tokio::time::Instant::now() + WAIT;
    while !ws_a.iter().all(|w| w.received(&marker))
        || !polling_a.iter().all(|p| p.received(&marker))
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a's sessions of before receive: WebSocket {:?}, polling {:?}",
            ws_a.iter()
                .map(|w| (w.received(&marker), w.ended()))
                .collect::<Vec<_>>(),
            polling_a
                .iter()
                .map(|p| (p.received(&marker), p.ended()))
                .collect::<Vec<_>>()
        );
        bus.notify_all(&json!({ "marker": marker })).unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for p in &polling_a {
        assert_eq!(p.ended(), None);
    }
    drop(haproxy);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_sessions_through_haproxy_stay_on_their_server_when_another_comes_back() {
    let dir = tempdir("pushnote-haproxy-restart");
    let fwd = forwarder();
    let bus = publisher(&fwd.sub);
    let flags = ["--heartbeat", "1", "--session-rate-per-address", "0"];
    let a_port = free_port().to_string();
    let a_args = || {
        let mut args = server_args(&fwd, &a_port);
        args.extend_from_slice(&flags);
        args
    };
    let a = spawn_server(&mut server_cmd(&a_args()), false);
    let b = server(&fwd, &flags);
    let (name_a, name_b) = (format!("s{a_port}"), format!("s{}", b.port()));
    let port = free_port();
    let servers = [a.port(), b.port()];
    let site = Site {
        port,
        servers: &servers,
        tls: false,
        global: String::new(),
        frontend: String::new(),
        backend: "\thttp-response set-header X-Upstream %s\n".into(),
    };
    let haproxy = Haproxy::start(&dir, &site);
    haproxy.wait_up(&[&name_a, &name_b]);

    // Server a stops; HAProxy takes it out, and sessions opened meanwhile all begin on b.
    drop(a);
    haproxy.wait_up(&[&name_b]);
    let base = format!("http://127.0.0.1:{port}/sockjs");
    let mut sessions = Vec::new();
    for n in 0..10 {
        let p = Polling::open(&base, n, "x-upstream").await;
        assert_eq!(p.upstream.as_deref(), Some(name_b.as_str()));
        sessions.push(p);
    }
    // Server a is back, with fewer connections than b: balanced alone, the sessions' next
    // requests would go to it.
    let _a = spawn_server(&mut server_cmd(&a_args()), false);
    haproxy.wait_up(&[&name_a, &name_b]);
    // Three rounds, each published once every session has the one before: every session
    // polls again between them, and each poll must reach b.
    for round in 0..3 {
        let marker = format!("stayed-{round}-{}", rand_id());
        let deadline = tokio::time::Instant::now() + WAIT;
        while !sessions.iter().all(|p| p.received(&marker)) {
            let ended: Vec<_> = sessions.iter().filter_map(Polling::ended).collect();
            assert!(ended.is_empty(), "sessions lost: {ended:?}");
            assert!(
                tokio::time::Instant::now() < deadline,
                "every session receives"
            );
            bus.notify_all(&json!({ "marker": marker })).unwrap();
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let ended: Vec<_> = sessions.iter().filter_map(Polling::ended).collect();
    assert!(ended.is_empty(), "sessions lost: {ended:?}");
    drop(haproxy);
    let _ = std::fs::remove_dir_all(&dir);
}
