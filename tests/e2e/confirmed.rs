//! What a publish promises when the forwarder dies: a publish the forwarder did not take is
//! never reported as sent once the publisher knows the forwarder is gone.

use std::time::Duration;

use serde_json::json;

use crate::support::*;

/// The forwarder is killed (SIGKILL) and reaped; after `delay`, the publisher's first
/// `notify` since then must say it is not connected: nothing can arrive anywhere.
async fn first_notify_after_the_forwarder_died(delay: Duration) {
    let (mut fwd, srv, bus, mut c) = stack(&[]).await;
    c.subscribe(&token("r")).await;
    sync(&bus, &mut c, Some("r")).await;
    bus.notify(&json!("before"), ["r"]).unwrap();
    assert_eq!(c.next().await, json!("before"));

    fwd.proc.child.kill().unwrap(); // SIGKILL: no goodbye
    fwd.proc.child.wait().unwrap(); // its connections are closed by now
    std::thread::sleep(delay);
    let sent = bus.notify(&json!("after"), ["r"]);
    assert!(
        matches!(sent, Err(pushnote::PublishError::NotConnected(_))),
        "{delay:?} after the forwarder was gone: {sent:?}"
    );
    drop(srv);
}

#[tokio::test]
async fn the_first_notify_100_ms_after_the_forwarder_died_is_refused() {
    first_notify_after_the_forwarder_died(Duration::from_millis(100)).await;
}

#[tokio::test]
async fn the_first_notify_a_second_after_the_forwarder_died_is_refused() {
    first_notify_after_the_forwarder_died(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn the_first_notify_5_s_after_the_forwarder_died_is_refused() {
    first_notify_after_the_forwarder_died(Duration::from_secs(5)).await;
}

/// What a publish of `n` returned.
#[derive(Debug)]
enum Outcome {
    /// Confirmed: the message must arrive.
    Confirmed,
    /// Refused before anything was sent: the message must not arrive.
    NotSent,
    /// Unconfirmed: it may or may not arrive.
    MayHave,
    /// An unconfirmed publish returned normally: it must arrive, unless the publisher could
    /// not have known yet that the forwarder was gone (at once after its death).
    Sent,
}

fn confirmed(result: Result<Vec<pushnote::Position>, pushnote::PublishError>) -> Outcome {
    match result {
        Ok(positions) => {
            assert_eq!(positions.len(), 1, "one user, one position");
            assert!(positions[0].epoch != 0 && positions[0].offset != 0);
            Outcome::Confirmed
        }
        Err(pushnote::PublishError::Unconfirmed { .. }) => Outcome::MayHave,
        Err(pushnote::PublishError::NotConnected(_)) => Outcome::NotSent,
        Err(e) => panic!("an error no dead forwarder explains: {e}"),
    }
}

fn unconfirmed(result: Result<(), pushnote::PublishError>) -> Outcome {
    match result {
        Ok(()) => Outcome::Sent,
        Err(pushnote::PublishError::NotConnected(_)) => Outcome::NotSent,
        Err(e) => panic!("an error no dead forwarder explains: {e}"),
    }
}

/// The issue's test: publish confirmed, kill -9 the forwarder, publish again at once and after
/// 0.1, 1 and 5 s, the forwarder restarted before the last: every confirmed call either
/// confirms and its message reaches a real page, or returns an error; every unconfirmed call
/// made once the publisher can know the forwarder is gone returns an error.
#[tokio::test]
async fn no_publish_the_forwarder_did_not_take_is_reported_as_sent() {
    let args = ["--sub", "tcp://127.0.0.1:*", "--pub", "tcp://127.0.0.1:*"];
    let mut fwd = forwarder_with(&[&args[..], &["--confirm", "tcp://127.0.0.1:*"]].concat());
    let confirm = fwd.proc.value_after("confirmed publishes at");
    let srv = server(&fwd, &[]);
    let bus = pushnote::Publisher::builder(&fwd.sub)
        .confirm(&confirm)
        .confirm_timeout(Duration::from_secs(1))
        .connect()
        .unwrap();
    let mut c = Client::connect(&srv).await;
    c.subscribe(&token("r")).await;
    sync(&bus, &mut c, Some("r")).await;

    // Another app, which publishes only at once after the death.
    let early = publisher(&fwd.sub);
    early.notify(&json!({"n": 100}), ["r"]).unwrap();
    assert_eq!(c.next().await, json!({"n": 100}));
    let first = bus.notify_confirmed(&json!({"n": 0}), ["r"]).unwrap();
    assert_eq!(c.next().await, json!({"n": 0}));
    let epoch = first[0].epoch;

    fwd.proc.child.kill().unwrap(); // SIGKILL: no goodbye
    fwd.proc.child.wait().unwrap();
    let died = std::time::Instant::now();
    let mut outcomes = Vec::new();
    // At once, the publisher may not have seen the connection close yet.
    outcomes.push((101, unconfirmed(early.notify(&json!({"n": 101}), ["r"]))));
    for (n, after) in [(1, 0.0), (2, 0.1), (3, 1.0)] {
        tokio::time::sleep(Duration::from_secs_f64(after)).await;
        outcomes.push((n, confirmed(bus.notify_confirmed(&json!({"n": n}), ["r"]))));
    }
    // The first unconfirmed publish since the death, over a second after it: by now the
    // publisher has seen the connection close.
    let sent = unconfirmed(bus.notify(&json!({"n": 103}), ["r"]));
    assert!(matches!(sent, Outcome::NotSent), "a second after: {sent:?}");
    outcomes.push((103, sent));
    // Nothing can confirm while no forwarder runs.
    for (n, outcome) in &outcomes {
        assert!(!matches!(outcome, Outcome::Confirmed), "{n}: {outcome:?}");
    }

    drop(early);
    let restarted = forwarder_with(&[
        "--sub",
        &fwd.sub,
        "--pub",
        &fwd.publish,
        "--confirm",
        &confirm,
    ]);
    sync(&bus, &mut c, Some("r")).await; // the server and the publisher are back
    tokio::time::sleep(Duration::from_secs(5).saturating_sub(died.elapsed())).await;
    let last = bus.notify_confirmed(&json!({"n": 4}), ["r"]);
    if let Ok(positions) = &last {
        assert_ne!(positions[0].epoch, epoch, "a new forwarder, a new epoch");
    }
    outcomes.push((4, confirmed(last)));
    outcomes.push((104, unconfirmed(bus.notify(&json!({"n": 104}), ["r"]))));

    // What reached the page, up to a fence published after everything else.
    let fence = rand_id();
    bus.notify(&json!({"fence": fence}), ["r"]).unwrap();
    let mut arrived = Vec::new();
    loop {
        let v = c.next_unmarked().await;
        if v["fence"] == fence.as_str() {
            break;
        }
        arrived.push(v["n"].as_u64().unwrap());
    }
    for (n, outcome) in &outcomes {
        let got = arrived.contains(n);
        match outcome {
            Outcome::Confirmed => assert!(got, "{n} was confirmed and never arrived: {arrived:?}"),
            Outcome::NotSent => assert!(!got, "{n} was refused and arrived"),
            Outcome::Sent if *n == 101 => {} // at once: the publisher may not know yet
            Outcome::Sent => assert!(got, "{n} was sent and never arrived: {arrived:?}"),
            Outcome::MayHave => {}
        }
    }
    drop((restarted, srv));
}

/// The CLI's `--confirm` prints the positions; a raw DEALER, as an app in another language
/// would use, gets them in the frames PROTOCOL §2b gives, and a clear refusal for a request
/// out of shape, counted in the forwarder's metrics.
#[tokio::test]
async fn the_cli_and_a_raw_socket_are_told_positions_and_refusals() {
    let metrics = format!("127.0.0.1:{}", free_port());
    let fwd = forwarder_with(&[
        "--sub",
        "tcp://127.0.0.1:*",
        "--pub",
        "tcp://127.0.0.1:*",
        "--confirm",
        "tcp://127.0.0.1:*",
        "--max-topic-bytes",
        "64",
        "--metrics",
        &metrics,
    ]);
    let confirm = fwd.proc.value_after("confirmed publishes at");
    let out = std::process::Command::new(bin("pushnote"))
        .args(["notify", "--user", "a", "--user", "b", "--bus", &fwd.sub])
        .args(["--confirm", &confirm, r#"{"hi": 1}"#])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines.iter().all(|p| p["offset"] == 1 && p["epoch"] != 0));

    let ctx = zmq::Context::new();
    let dealer = ctx.socket(zmq::DEALER).unwrap();
    dealer.set_rcvtimeo(WAIT.as_millis() as i32).unwrap();
    dealer.connect(&confirm).unwrap();
    let ask = |frames: &[&[u8]]| {
        dealer.send_multipart(frames, 0).unwrap();
        dealer.recv_multipart(0).expect("a reply")
    };
    let reply = ask(&[
        b"id-1",
        b"chan:news\0",
        br#"{"name":"publish","event":"e","data":1}"#,
    ]);
    assert_eq!(reply[..2], [b"id-1".to_vec(), b"ok".to_vec()]);
    let positions = pushnote::confirm::decode_positions(&reply[2]).unwrap();
    assert_eq!(positions.len(), 1);
    assert_eq!(positions[0].offset, 1);
    let reply = ask(&[
        b"id-2",
        b"chan:news\0",
        br#"{"name":"publish","event":"e","data":2}"#,
    ]);
    assert_eq!(
        pushnote::confirm::decode_positions(&reply[2]).unwrap()[0].offset,
        2
    );

    let long_topic = [&[b'x'; 64][..], b"\0"].concat();
    for (frames, status) in [
        (vec![&b"id-3"[..], b"no-nul", b"{}"], "malformed"),
        (vec![b"id-4", b"{}"], "malformed"),
        (vec![b"id-5", &long_topic, b"{}"], "topic_too_long"),
    ] {
        let reply = ask(&frames);
        assert_eq!(reply[0], frames[0]);
        assert_eq!(String::from_utf8_lossy(&reply[1]), status);
        assert!(!reply[2].is_empty(), "a sentence says why");
    }
    let url = format!("http://{metrics}/metrics");
    let refused = "pushnote_mq_confirm_refused_total";
    assert_eq!(
        metric_at(&url, &format!("{refused}{{reason=\"malformed\"}}")).await,
        2
    );
    assert_eq!(
        metric_at(&url, &format!("{refused}{{reason=\"topic_too_long\"}}")).await,
        1
    );
    assert_eq!(
        metric_at(&url, "pushnote_mq_confirm_requests_total").await,
        6
    );
    assert_eq!(
        metric_at(&url, "pushnote_mq_confirmed_messages_total").await,
        4
    );
}

/// With `--confirm`, the forwarder's `POST /publish` answers with each message's positions
/// (one per user named), keeping `published`.
#[tokio::test]
async fn the_forwarders_http_publish_answers_with_positions() {
    let mut cmd = std::process::Command::new(bin("pushnote-mq"));
    cmd.env("PUSHNOTE_MQ_API_KEY", API_KEY).args([
        "--sub",
        "tcp://127.0.0.1:*",
        "--pub",
        "tcp://127.0.0.1:*",
        "--confirm",
        "tcp://127.0.0.1:*",
        "--http",
        "127.0.0.1:0",
    ]);
    let proc = Proc::spawn(&mut cmd);
    let url = proc.value_after("/publish at");
    let auth = format!("Bearer {API_KEY}");
    let headers = [
        ("Content-Type", "application/json"),
        ("Authorization", &auth),
    ];
    let body = json!([
        {"to": "all", "data": 1},
        {"to": "users", "users": ["a", "b"], "data": 2},
        {"to": "all", "data": 3},
    ]);
    let reply = http("POST", &url, &headers, &body.to_string()).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let v: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(v["published"], 3);
    let offsets: Vec<Vec<u64>> = v["positions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            m.as_array()
                .unwrap()
                .iter()
                .map(|p| p["offset"].as_u64().unwrap())
                .collect()
        })
        .collect();
    assert_eq!(offsets, vec![vec![1], vec![1, 1], vec![2]]);
    assert_eq!(v["positions"][0][0]["epoch"], v["positions"][2][0]["epoch"]);
}
