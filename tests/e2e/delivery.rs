//! From an app's notify to the browser: command lines, both modes, both WebSocket transports.

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::support::*;

#[tokio::test]
async fn original_long_command_lines_deliver_broadcasts_and_targeted_messages() {
    let fwd = forwarder_with(&["--sub", "tcp://127.0.0.1:*", "--pub", "tcp://127.0.0.1:*"]);
    let srv = spawn_server(
        server_cmd(&[
            "--port",
            "0",
            "--address",
            "127.0.0.1",
            "--mq_socket",
            &fwd.publish,
            "--route",
            "/sockjs",
        ])
        .env("PUSHNOTE_SECRET", SECRET),
        false,
    );
    assert!(srv.url.ends_with("/sockjs"), "{}", srv.url);
    let bus = publisher(&fwd.sub);
    let mut c = Client::connect(&srv).await;
    sync(&bus, &mut c, None).await;
    bus.notify_all(&json!({"msg": "Hi all!"})).unwrap();
    assert_eq!(c.next().await, json!({"msg": "Hi all!"}));

    assert_eq!(
        c.subscribe(&token("42")).await["name"],
        "pushnote:subscribed"
    );
    sync(&bus, &mut c, Some("42")).await;
    bus.notify(&json!({"msg": "Hi 42"}), [42]).unwrap();
    assert_eq!(c.next().await, json!({"msg": "Hi 42"}));
}

#[tokio::test]
async fn short_flags_and_the_dashed_mq_socket_spelling_work() {
    let fwd = forwarder_with(&["-s", "tcp://127.0.0.1:*", "-p", "tcp://127.0.0.1:*"]);
    for bus_flag in ["-s", "--mq-socket"] {
        let srv = spawn_server(
            &mut server_cmd(&[
                "-p",
                "0",
                "-a",
                "127.0.0.1",
                bus_flag,
                &fwd.publish,
                "-r",
                "/push/js",
            ]),
            false,
        );
        assert!(srv.url.ends_with("/push/js"), "{}", srv.url);
        let bus = publisher(&fwd.sub);
        let mut c = Client::connect(&srv).await;
        sync(&bus, &mut c, None).await;
        bus.notify_all("a string stays a string").unwrap();
        assert_eq!(c.next().await, json!("a string stays a string"));
    }
}

#[tokio::test]
async fn single_mode_binds_the_bus_and_needs_no_forwarder() {
    for flag in ["-S", "--single"] {
        let srv = spawn_server(
            &mut server_cmd(&[
                flag,
                "-p",
                "0",
                "-a",
                "127.0.0.1",
                "-s",
                "tcp://127.0.0.1:*",
                "--secret",
                SECRET,
            ]),
            true,
        );
        let bus = publisher(srv.bus.as_deref().unwrap());
        let mut c = Client::connect(&srv).await;
        sync(&bus, &mut c, None).await;
        c.subscribe(&token("7")).await;
        sync(&bus, &mut c, Some("7")).await;
        bus.notify(&json!([1, 2, 3]), ["7"]).unwrap();
        assert_eq!(c.next().await, json!([1, 2, 3]));
    }
}

#[tokio::test]
async fn data_arrives_unchanged_as_a_json_value() {
    let (_fwd, _srv, bus, mut c) = stack(&[]).await;
    let values = [
        json!({"msg": "Hi all!", "n": 1.5, "nested": {"list": [true, null]}}),
        json!("é 中文 😀 \u{2028}\u{2029} \"quotes\" \\ </script><script>alert(1)</script>"),
        json!(12345678901234567u64),
        json!(null),
    ];
    for v in &values {
        bus.notify_all(v).unwrap();
    }
    for v in &values {
        assert_eq!(&c.next().await, v);
    }
}

#[tokio::test]
async fn datetimes_arrive_as_iso_8601_strings() {
    #[derive(serde::Serialize)]
    struct Event {
        at: chrono::DateTime<chrono::Utc>,
    }
    let (_fwd, _srv, bus, mut c) = stack(&[]).await;
    let at = chrono::DateTime::parse_from_rfc3339("2026-11-22T10:15:30.250Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    bus.notify_all(&Event { at }).unwrap();
    assert_eq!(c.next().await, json!({"at": "2026-11-22T10:15:30.250Z"}));
}

#[tokio::test]
async fn a_process_that_notifies_at_once_and_exits_still_delivers() {
    let fwd = forwarder();
    let srv = server(&fwd, &[]);
    let mut c = Client::connect(&srv).await;
    sync(&publisher(&fwd.sub), &mut c, None).await;
    c.subscribe(&token("5")).await;
    sync(&publisher(&fwd.sub), &mut c, Some("5")).await;
    // Each CLI call is a fresh process: connect, first notify, exit. It waits for the
    // forwarder's subscription (2 s by default; longer here, for busy machines).
    let status = std::process::Command::new(bin("pushnote"))
        .args([
            "notify-all",
            "--bus",
            &fwd.sub,
            "--timeout",
            "10",
            r#"{"first":"message"}"#,
        ])
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(c.next().await, json!({"first": "message"}));
    let status = std::process::Command::new(bin("pushnote"))
        .args([
            "notify",
            "--bus",
            &fwd.sub,
            "--timeout",
            "10",
            "--user",
            "5",
            "--text",
            "just for 5",
        ])
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(c.next().await, json!("just for 5"));
    // And through the crate: the first notify of a publisher that has just connected.
    let fresh = pushnote::Publisher::builder(&fwd.sub)
        .ready_timeout(WAIT)
        .connect()
        .unwrap();
    fresh.notify_all(&json!({"fresh": true})).unwrap();
    drop(fresh);
    assert_eq!(c.next().await, json!({"fresh": true}));
}

#[tokio::test]
async fn a_cli_notify_with_nothing_listening_fails_clearly() {
    let out = std::process::Command::new(bin("pushnote"))
        .args([
            "notify-all",
            "--bus",
            "tcp://127.0.0.1:1",
            "--timeout",
            "0.3",
            "{}",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no forwarder, server or Redis is connected"),
        "{err}"
    );
    let out = std::process::Command::new(bin("pushnote"))
        .args(["notify-all", "not json"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--text"));
}

#[tokio::test]
async fn raw_websocket_receives_json_text_and_subscribes_with_plain_text() {
    let (_fwd, srv, bus, mut sockjs) = stack(&[]).await;
    let (mut raw, _) = tokio_tungstenite::connect_async(srv.raw_ws_url())
        .await
        .unwrap();
    let subscribe =
        json!({"name": "subscribe", "data": {"token": token("raw"), "replies": true}}).to_string();
    raw.send(WsMessage::Text(subscribe)).await.unwrap();
    let reply = match tokio::time::timeout(WAIT, raw.next()).await.unwrap() {
        Some(Ok(WsMessage::Text(t))) => t,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&reply).unwrap(),
        json!({"name": "pushnote:subscribed", "data": {"user": "raw"}})
    );
    sockjs.subscribe(&token("raw")).await;
    sync(&bus, &mut sockjs, Some("raw")).await;
    bus.notify(&json!({"to": "raw"}), ["raw"]).unwrap();
    assert_eq!(sockjs.next().await, json!({"to": "raw"}));
    // The raw session got the sync markers too, then the message.
    loop {
        match tokio::time::timeout(WAIT, raw.next()).await.unwrap() {
            Some(Ok(WsMessage::Text(t))) => {
                let v: serde_json::Value = serde_json::from_str(&t).unwrap();
                if v.get("sync").is_some() {
                    continue;
                }
                assert_eq!(v, json!({"to": "raw"}));
                break;
            }
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn large_broadcasts_to_a_client_that_reads_late_arrive_whole_and_in_order() {
    // A queue that never counts as slow: how much the socket holds depends on the kernel.
    let (_fwd, _srv, bus, mut c) = stack(&["--queue-bytes", "1000000000"]).await;
    // Published one at a time, 60 ms apart, each is written straight to the socket by a
    // sweeper. The client reads nothing meanwhile, so the socket fills: a frame it takes only
    // in part is finished by the session's writer, and the ones after it queue.
    let pad = "x".repeat(300_000);
    for i in 0..40 {
        bus.notify_all(&json!({"i": i, "pad": pad})).unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(60)).await;
    }
    let mut i = 0;
    while i < 40 {
        let v = c.next().await;
        if v.get("sync").is_some() {
            continue;
        }
        assert_eq!(v["i"], i);
        assert_eq!(v["pad"].as_str().map(str::len), Some(pad.len()));
        i += 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_messages_come_after_the_broadcasts_published_before_them() {
    // More sessions than a sweeper visits in one step (`fanout::SWEEP_STEP`), and the user's
    // session last of all: the message to the user comes while the sweep has yet to give that
    // session the broadcast before it, and must not pass it.
    const SESSIONS: usize = 600;
    const ROUNDS: u64 = 20;
    let (_fwd, srv, bus, first) = stack(&[]).await;
    let mut others = vec![first];
    for _ in 1..SESSIONS {
        others.push(Client::connect(&srv).await);
    }
    let mut user = Client::connect(&srv).await;
    assert_eq!(
        user.subscribe(&token("u")).await["name"],
        "pushnote:subscribed"
    );
    sync(&bus, &mut user, Some("u")).await;
    for round in 0..ROUNDS {
        bus.notify_all(&json!({"all": round})).unwrap();
        bus.notify(&json!({"u": round}), ["u"]).unwrap();
    }
    let mut received = Vec::new();
    while received.len() < 2 * ROUNDS as usize {
        let v = user.next().await;
        if v.get("sync").is_none() {
            received.push(v);
        }
    }
    let expected: Vec<_> = (0..ROUNDS)
        .flat_map(|round| [json!({"all": round}), json!({"u": round})])
        .collect();
    assert_eq!(received, expected);
    // The others got every broadcast too.
    for c in &mut others[SESSIONS - 3..] {
        for round in 0..ROUNDS {
            assert_eq!(c.next().await, json!({"all": round}));
        }
    }
}
