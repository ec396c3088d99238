//! Starting, serving the demo, heartbeats, shutting down, refusing bad flags.

use std::time::Duration;

use crate::support::*;

#[tokio::test]
async fn sigterm_and_sigint_close_every_session_with_going_away_and_exit() {
    for signal in ["TERM", "INT"] {
        let fwd = forwarder();
        let mut srv = server(&fwd, &["--shutdown-grace", "3"]);
        let mut clients = Vec::new();
        for _ in 0..3 {
            clients.push(Client::connect(&srv).await);
        }
        // A streaming HTTP session, receiving when the signal comes.
        let session = format!("{}/000/{}", srv.url, rand_id());
        let streaming = tokio::spawn(async move {
            http("POST", &format!("{session}/xhr_streaming"), &[], "").await
        });
        srv.wait_metric("pushnote_sessions", 4).await;
        srv.proc.signal(signal);
        for c in &mut clients {
            assert_eq!(
                c.frame().await,
                Frame::Close(3001, "Server shutting down".into())
            );
        }
        let streamed = streaming.await.unwrap();
        assert!(
            streamed
                .body
                .ends_with("o\nc[3001,\"Server shutting down\"]\n"),
            "{}",
            streamed.body
        );
        let status = srv
            .proc
            .wait_exit(Duration::from_secs(10))
            .expect("exits in time");
        assert!(status.success(), "SIG{signal}: {status:?}");

        let mut fwd = fwd;
        fwd.proc.signal(signal);
        let status = fwd
            .proc
            .wait_exit(Duration::from_secs(10))
            .expect("forwarder exits");
        assert!(status.success(), "SIG{signal}: {status:?}");
    }
}

#[tokio::test]
async fn clients_reconnect_to_a_restarted_server() {
    let fwd = forwarder();
    let mut srv = server(&fwd, &[]);
    let bus = publisher(&fwd.sub);
    let mut c = Client::connect(&srv).await;
    c.subscribe(&token("back")).await;
    sync(&bus, &mut c, Some("back")).await;
    let port = srv.origin.rsplit(':').next().unwrap().to_owned();
    srv.proc.terminate();
    assert_eq!(
        c.frame().await,
        Frame::Close(3001, "Server shutting down".into())
    );
    srv.proc.wait_exit(Duration::from_secs(10)).expect("exits");

    // What a page does on 3001: open a new session (same URL) and subscribe again.
    let restarted = spawn_server(&mut server_cmd(&server_args(&fwd, &port)), false);
    assert_eq!(restarted.origin, srv.origin);
    let mut again = Client::connect(&restarted).await;
    assert_eq!(
        again.subscribe(&token("back")).await["name"],
        "pushnote:subscribed"
    );
    sync(&bus, &mut again, Some("back")).await;
}

#[tokio::test]
async fn idle_sessions_get_heartbeats_and_unresponsive_peers_are_reaped() {
    let fwd = forwarder();
    let srv = server(&fwd, &["--heartbeat", "1"]);
    let mut alive = Client::connect(&srv).await;
    // Connected, then silent: it never reads, so it never answers the server's pings, as a
    // host that vanished without closing its connections.
    let _vanished = Client::connect(&srv).await;
    let (_raw_vanished, _) = tokio_tungstenite::connect_async(srv.raw_ws_url())
        .await
        .unwrap();
    srv.wait_metric("pushnote_sessions", 3).await;
    for _ in 0..3 {
        assert_eq!(alive.frame().await, Frame::Heartbeat);
    }
    // Two heartbeats without an answer: reaped; the live one stays. It reads (and so answers
    // the pings) meanwhile: a client that stopped reading while it waited would be reaped too.
    let deadline = tokio::time::Instant::now() + WAIT;
    while srv.metric("pushnote_sessions").await > 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the silent sessions were not reaped"
        );
        assert_eq!(alive.frame().await, Frame::Heartbeat);
    }
    for _ in 0..2 {
        assert_eq!(alive.frame().await, Frame::Heartbeat);
    }
    assert_eq!(srv.metric("pushnote_sessions").await, 1);
}

#[tokio::test]
async fn the_demo_page_is_served_only_when_asked_for() {
    let fwd = forwarder();
    let plain = server(&fwd, &[]);
    assert_eq!(http_get(&format!("{}/", plain.origin)).await.0, 404);
    let demo = server(
        &fwd,
        &[
            "--demo",
            "--sockjs-url",
            "/static/sockjs.min.js",
            "-r",
            "/push",
        ],
    );
    let (status, body) = http_get(&format!("{}/", demo.origin)).await;
    assert_eq!(status, 200);
    assert!(
        body.contains(r#"<script src="/static/sockjs.min.js"></script>"#),
        "{body}"
    );
    assert!(body.contains(r#"var route = "/push";"#));
    assert!(
        body.contains(r#"<script src="/push/pushnote.js"></script>"#),
        "{body}"
    );
    let (status, library) = http_get(&format!("{}/push/pushnote.js", demo.origin)).await;
    assert_eq!(status, 200);
    assert!(library.contains("function Pushnote(url, options)"));
}

#[tokio::test]
async fn greeting_and_info_answer_like_sockjs() {
    let fwd = forwarder();
    let srv = server(&fwd, &[]);
    assert_eq!(
        http_get(&srv.url).await,
        (200, "Welcome to SockJS!\n".into())
    );
    let (status, body) = http_get(&format!("{}/info", srv.url)).await;
    assert_eq!(status, 200);
    let info: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(info["websocket"], true);
    assert_eq!(info["origins"], serde_json::json!(["*:*"]));
    assert!(info["entropy"].is_u64());
    assert_eq!(http_get(&format!("{}/metrics", srv.origin)).await.0, 200);
    let no_metrics = spawn_server(
        &mut server_cmd(&["-p", "0", "-a", "127.0.0.1", "-s", &fwd.publish]),
        false,
    );
    assert_eq!(
        http_get(&format!("{}/metrics", no_metrics.origin)).await.0,
        404
    );
}

#[test]
fn bad_flags_are_refused_with_a_reason() {
    let cases: [(&[&str], &str); 4] = [
        (&["--route", "/"], "--route"),
        (&["--address", "not-an-ip", "-p", "0"], "--address"),
        (&["-S", "-s", "tcp://127.0.0.1:notaport", "-p", "0"], "bus"),
        (&["--port", "99999"], "99999"),
    ];
    for (args, needle) in cases {
        let out = server_cmd(args).output().unwrap();
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    let help = server_cmd(&["--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--port",
        "--address",
        "--route",
        "--mq_socket",
        "--single",
        "--secret",
        "--demo",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}");
    }
}

#[test]
fn the_forwarder_refuses_an_endpoint_in_use() {
    let fwd = forwarder();
    let out = std::process::Command::new(bin("pushnote-mq"))
        .args(["--sub", &fwd.sub, "--pub", "tcp://127.0.0.1:*"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains(&fwd.sub));
}

#[tokio::test]
async fn switches_take_any_truthy_environment_value() {
    let srv = spawn_server(
        server_cmd(&["-p", "0", "-a", "127.0.0.1", "-s", "tcp://127.0.0.1:*"])
            .env("PUSHNOTE_SINGLE", "1")
            .env("PUSHNOTE_METRICS", "yes")
            .env("PUSHNOTE_DEMO", "false"),
        true,
    );
    assert!(srv.bus.is_some());
    assert_eq!(http_get(&format!("{}/metrics", srv.origin)).await.0, 200);
    assert_eq!(http_get(&format!("{}/", srv.origin)).await.0, 404);
}
