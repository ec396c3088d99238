//! What recovery may cost, end to end: a page cannot flush the history by joining topics
//! nobody publishes to, cannot make the forwarder and its servers replay without bound, and a
//! page that asks while the forwarder restarts is given each message once.

use serde_json::{json, Value};

use crate::support::*;

/// Sends `requests`, then reads until as many replies (or errors) came; the other messages
/// that came meanwhile are returned after the replies.
async fn ask_all(client: &mut Client, requests: &[Value]) -> (Vec<Value>, Vec<Value>) {
    for r in requests {
        client.emit(r.clone()).await;
    }
    let (mut replies, mut others) = (Vec::new(), Vec::new());
    while replies.len() < requests.len() {
        let v = client.next().await;
        match v["name"].as_str() {
            Some(n) if n.starts_with("pushnote:") => replies.push(v),
            _ => others.push(v),
        }
    }
    (replies, others)
}

/// `sessions` pages one after the other, each with positions on, joining and leaving `per`
/// channels nobody publishes to (names as long as allowed), within the session's request
/// budget and never more than `per` such channels at once on the server.
async fn join_unpublished_channels(srv: &Server, sessions: usize, per: usize) {
    for s in 0..sessions {
        let mut client = Client::connect(srv).await;
        let names: Vec<String> = (0..per)
            .map(|i| format!("{s:04}-{i:03}-{}", "x".repeat(150)))
            .collect();
        let mut requests = vec![json!({"name": "positions"})];
        requests.extend(
            names
                .iter()
                .map(|c| json!({"name": "subscribe", "data": {"channel": c}})),
        );
        requests.extend(
            names
                .iter()
                .map(|c| json!({"name": "unsubscribe", "data": {"channel": c}})),
        );
        let (replies, _) = ask_all(&mut client, &requests).await;
        for r in &replies {
            assert_ne!(r["name"], "pushnote:error", "within the budget: {r}");
        }
    }
}

/// A page with positions in channel `real` (published to through `publish`), which goes away
/// after `count` messages and comes back, after `flood` ran, with the position it was told on
/// joining: it must be given every message.
async fn a_real_channel_survives(
    srv: &Server,
    publish: impl Fn(u64),
    count: u64,
    flood: impl std::future::Future<Output = ()>,
) {
    let mut a = Client::connect(srv).await;
    let (replies, _) = ask_all(
        &mut a,
        &[
            json!({"name": "positions"}),
            json!({"name": "subscribe", "data": {"channel": "real"}}),
        ],
    )
    .await;
    let since = replies[1]["data"]["position"].clone();
    assert_eq!(since["offset"], 0, "{}", replies[1]);
    for n in 1..=count {
        publish(n);
    }
    // The page has them all: so has the history.
    let mut got = 0;
    while got < count {
        let v = a.next().await;
        if v["channel"] == "real" {
            got += 1;
        }
    }
    drop(a);
    flood.await;
    let mut b = Client::connect(srv).await;
    let (replies, others) = ask_all(
        &mut b,
        &[
            json!({"name": "positions"}),
            json!({"name": "subscribe", "data": {"channel": "real", "since": since}}),
        ],
    )
    .await;
    let reply = &replies[1];
    assert_eq!(reply["data"]["recovered"], true, "{reply}");
    let ns: Vec<u64> = others
        .iter()
        .filter(|v| v["channel"] == "real")
        .map(|v| v["data"]["n"].as_u64().unwrap())
        .collect();
    assert_eq!(ns, (1..=count).collect::<Vec<_>>());
}

/// A message of about a kilobyte.
fn message(n: u64) -> Value {
    json!({"n": n, "pad": "p".repeat(1000)})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_of_channels_nobody_publishes_to_never_flush_a_single_servers_history() {
    let srv = single_server(&["--history-memory", "1"]);
    let bus = publisher(srv.bus.as_deref().unwrap());
    // 45 × 99 topic names of ~170 bytes would take the whole MiB, had they a cost.
    let flood = join_unpublished_channels(&srv, 45, 99);
    let publish = |n| bus.publish("real", "tick", &message(n)).unwrap();
    a_real_channel_survives(&srv, publish, 20, flood).await;
    assert!(srv.metric("pushnote_history_topics").await <= 2);
    assert_eq!(srv.metric("pushnote_history_evicted_total").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_of_channels_nobody_publishes_to_never_flush_the_forwarders_history() {
    let fwd = forwarder_with(&[
        "--sub",
        "tcp://127.0.0.1:*",
        "--pub",
        "tcp://127.0.0.1:*",
        "--history-memory",
        "1",
    ]);
    let srv = server(&fwd, &[]);
    let bus = publisher(&fwd.sub);
    let mut probe = Client::connect(&srv).await;
    sync(&bus, &mut probe, None).await;
    let flood = join_unpublished_channels(&srv, 45, 99);
    let publish = |n| bus.publish("real", "tick", &message(n)).unwrap();
    a_real_channel_survives(&srv, publish, 20, flood).await;
    drop(probe);
}
