//! Every limit, exceeded against the real server, answered with a clear error; and bad bus
//! messages dropped and counted while good ones keep flowing.

use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn a_full_server_closes_new_sessions_with_server_full() {
    let (_fwd, srv, bus, first) = stack(&["--max-sessions", "2"]).await;
    let _second = Client::connect(&srv).await;
    let mut third = Client::connect(&srv).await;
    assert_eq!(
        third.frame().await,
        Frame::Close(3003, "Server full".into())
    );
    srv.wait_metric("pushnote_sessions_refused_full_total", 1)
        .await;
    drop(first);
    srv.wait_metric_at_most("pushnote_sessions", 1).await;
    // Served, not closed: a refused session gets its close frame before anything else.
    let mut fourth = Client::connect(&srv).await;
    sync(&bus, &mut fourth, None).await;
}

#[tokio::test]
async fn a_user_over_the_session_limit_is_refused_and_keeps_broadcasts() {
    let (_fwd, srv, bus, mut first) = stack(&["--max-sessions-per-user", "1"]).await;
    assert_eq!(
        first.subscribe(&token("u")).await["name"],
        "pushnote:subscribed"
    );
    let mut second = Client::connect(&srv).await;
    let refused = second.subscribe(&token("u")).await;
    assert_eq!(refused["name"], "pushnote:error");
    assert_eq!(refused["data"]["code"], "too_many_sessions");
    sync(&bus, &mut second, None).await;
    // Another user is not affected.
    assert_eq!(
        second.subscribe(&token("w")).await["name"],
        "pushnote:subscribed"
    );
    sync(&bus, &mut first, Some("u")).await;
}

#[tokio::test]
async fn too_many_subscribe_attempts_close_the_session() {
    let (_fwd, _srv, _bus, mut c) = stack(&["--max-subscribe-attempts", "2"]).await;
    assert_eq!(c.subscribe("forged").await["data"]["code"], "invalid_token");
    assert_eq!(
        c.subscribe(&token("a")).await["name"],
        "pushnote:subscribed"
    );
    let refused = c.subscribe(&token("a")).await;
    assert_eq!(refused["data"]["code"], "too_many_attempts");
    assert_eq!(
        c.frame().await,
        Frame::Close(3011, "Too many subscribe attempts".into())
    );
}

#[tokio::test]
async fn bad_bus_messages_are_dropped_and_counted() {
    let fwd = forwarder();
    let srv = server(&fwd, &["--max-bus-message-bytes", "4096"]);
    let bus = publisher(&fwd.sub);
    let mut c = Client::connect(&srv).await;
    sync(&bus, &mut c, None).await;
    let before = srv.metric("pushnote_bus_messages_rejected_total").await;

    // A plain PUB socket, as any app might misuse it.
    let ctx = zmq::Context::new();
    let raw = raw_publisher(&ctx, &fwd.sub, FORWARDER_SUBSCRIPTION);
    let huge = format!(r#"{{"name":"notify_all","data":"{}"}}"#, "x".repeat(10_000));
    // Not two frames: the forwarder drops these itself (a --single server counts them).
    for frames in [
        vec![&b"all\0"[..]],
        vec![b"all\0", br#"{"name":"notify_all","data":1}"#, b"extra"],
    ] {
        raw.send_multipart(frames, 0).unwrap();
    }
    let bad: Vec<Vec<&[u8]>> = vec![
        vec![b"all\0", b"{not json"],
        vec![b"all\0", br#"{"name":"notify_all"}"#],
        vec![b"all\0", br#"{"name":"explode","data":1}"#],
        vec![b"all\0", huge.as_bytes()],
        vec![b"all\0", b"\xff\xfe{}"],
        vec![b"all\0", br#"{"name":"notify","data":1}"#],
    ];
    for frames in &bad {
        raw.send_multipart(frames.iter().copied(), 0).unwrap();
    }
    bus.notify_all(&json!("after the bad ones")).unwrap();
    assert_eq!(c.next().await, json!("after the bad ones"));
    srv.wait_metric(
        "pushnote_bus_messages_rejected_total",
        before + bad.len() as u64,
    )
    .await;
}

#[tokio::test]
async fn slow_and_silent_connections_are_closed_after_the_header_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fwd = forwarder();
    let srv = server(&fwd, &["--header-timeout", "1"]);
    let addr = srv.origin.trim_start_matches("http://").to_owned();
    let mut trickling = tokio::net::TcpStream::connect(&addr).await.unwrap();
    trickling
        .write_all(b"GET /sockjs/info HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut silent = tokio::net::TcpStream::connect(&addr).await.unwrap();
    for (name, conn) in [("trickling", &mut trickling), ("silent", &mut silent)] {
        let mut buf = Vec::new();
        let read = tokio::time::timeout(WAIT, conn.read_to_end(&mut buf)).await;
        assert!(read.is_ok(), "the {name} connection was left open");
    }
    // The server still serves everyone else.
    assert_eq!(http_get(&format!("{}/info", srv.url)).await.0, 200);
}
