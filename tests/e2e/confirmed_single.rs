//! Confirmed publishes on a `--single` server (`--confirm`): the server numbers and keeps each
//! message in its own history, and replies with the positions it gave them; a request whose
//! message the server would reject is refused whole.

use std::time::Duration;

use serde_json::json;

use crate::support::*;

/// A `--single` server with the test secret, taking confirmed publishes; and where.
fn confirming_server(extra: &[&str]) -> (Server, String) {
    let mut args = vec!["--secret", SECRET, "--confirm", "tcp://127.0.0.1:*"];
    args.extend_from_slice(extra);
    let srv = single_server(&args);
    let confirm = srv.proc.value_after("confirmed publishes at");
    (srv, confirm)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirmed_notify_returns_the_positions_pages_see() {
    let (srv, confirm) = confirming_server(&[]);
    let bus = pushnote::Publisher::builder(srv.bus.as_deref().unwrap())
        .confirm(&confirm)
        .connect()
        .unwrap();
    let mut page = Client::connect(&srv).await;
    page.emit(json!({"name": "positions", "data": {}})).await;
    let reply = page.next().await;
    assert_eq!(reply["name"], "pushnote:positions", "{reply}");
    let reply = page.subscribe(&token("u1")).await;
    assert_eq!(reply["data"]["user"], "u1", "{reply}");
    let positions = bus
        .notify_confirmed(&json!({"n": 1}), ["u1", "u2"])
        .unwrap();
    assert_eq!(positions.len(), 2);
    assert!(positions.iter().all(|p| p.offset == 1 && p.epoch != 0));
    let got = loop {
        let v = page.next().await;
        if v["data"]["n"] == 1 {
            break v;
        }
    };
    assert_eq!(got["position"]["epoch"], positions[0].epoch, "{got}");
    assert_eq!(got["position"]["offset"], 1, "{got}");
    let all = bus.notify_all_confirmed(&json!({"n": 2})).unwrap();
    assert_ne!(all.epoch, 0);
    let news = bus
        .publish_confirmed("news", "tick", &json!({"n": 3}))
        .unwrap();
    assert_eq!(news.offset, 1);
    assert_eq!(srv.metric("pushnote_confirmed_messages_total").await, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_the_server_would_reject_is_refused_whole_and_counted() {
    let (srv, confirm) = confirming_server(&["--max-bus-message-bytes", "4096"]);
    let ctx = zmq::Context::new();
    let dealer = ctx.socket(zmq::DEALER).unwrap();
    dealer.set_rcvtimeo(WAIT.as_millis() as i32).unwrap();
    dealer.connect(&confirm).unwrap();
    let ask = |frames: &[&[u8]]| {
        dealer.send_multipart(frames, 0).unwrap();
        dealer.recv_multipart(0).expect("a reply")
    };
    let body = br#"{"name":"notify","data":1}"#;
    let reply = ask(&[b"ok-1", b"user:a\0", b"user:b\0", body]);
    assert_eq!(reply[..2], [b"ok-1".to_vec(), b"ok".to_vec()]);
    assert_eq!(
        pushnote::confirm::decode_positions(&reply[2])
            .unwrap()
            .len(),
        2
    );
    // Each frame within the 4096 bytes, all of them over (a frame over closes the connection:
    // ZeroMQ's check, before the request is whole).
    let big = vec![b'x'; 4090];
    for (frames, status) in [
        // A body the server cannot read; a name of another topic's kind; one bad topic of two.
        (vec![&b"bad-1"[..], b"user:a\0", b"not json"], "malformed"),
        (vec![b"bad-2", b"all\0", body], "malformed"),
        (vec![b"bad-3", b"user:a\0", b"chan:\0", body], "malformed"),
        (vec![b"bad-4", b"user:a\0", &big], "too_large"),
    ] {
        let reply = ask(&frames);
        assert_eq!(reply[0], frames[0]);
        assert_eq!(
            String::from_utf8_lossy(&reply[1]),
            status,
            "{:?}",
            frames[0]
        );
        assert!(!reply[2].is_empty(), "a sentence says why");
    }
    // Nothing of the refused requests was kept: user a's next message is its second.
    let reply = ask(&[b"ok-2", b"user:a\0", body]);
    assert_eq!(
        pushnote::confirm::decode_positions(&reply[2]).unwrap()[0].offset,
        2
    );
    let refused = "pushnote_confirm_refused_total";
    assert_eq!(
        srv.metric(&format!("{refused}{{reason=\"malformed\"}}"))
            .await,
        3
    );
    assert_eq!(
        srv.metric(&format!("{refused}{{reason=\"too_large\"}}"))
            .await,
        1
    );
    assert_eq!(srv.metric("pushnote_confirm_requests_total").await, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_server_died_no_confirmed_publish_returns_normally() {
    let (mut srv, confirm) = confirming_server(&[]);
    let bus = pushnote::Publisher::builder(srv.bus.as_deref().unwrap())
        .confirm(&confirm)
        .confirm_timeout(Duration::from_secs(1))
        .connect()
        .unwrap();
    bus.notify_all_confirmed(&json!({"n": 0})).unwrap();
    srv.proc.signal("KILL");
    srv.proc.wait_exit(WAIT).expect("killed");
    for wait in [0, 100, 1000] {
        std::thread::sleep(Duration::from_millis(wait));
        let result = bus.notify_all_confirmed(&json!({"n": wait}));
        assert!(result.is_err(), "after {wait} ms: {result:?}");
    }
}

#[test]
fn confirm_takes_a_single_server_with_history() {
    for (args, says) in [
        (vec!["--confirm", "tcp://127.0.0.1:*"], "--single"),
        (
            vec![
                "--single",
                "--history-size",
                "0",
                "--confirm",
                "tcp://127.0.0.1:*",
            ],
            "history",
        ),
        (
            vec![
                "--single",
                "--confirm",
                "tcp://127.0.0.1:*",
                "--confirm-hwm",
                "0",
            ],
            "--confirm-hwm",
        ),
    ] {
        let out = server_cmd(&[&["--port", "0"], &args[..]].concat())
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
    }
}
