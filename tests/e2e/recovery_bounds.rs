//! What recovery may cost, end to end: a page cannot flush the history by joining topics
//! nobody publishes to, cannot make the forwarder and its servers replay without bound, and a
//! page that asks while the forwarder restarts is given each message once.

use std::time::Duration;

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

/// What `/proc/<pid>/status` says of a process's resident memory, in bytes: now (`VmRSS`) or
/// at its peak (`VmHWM`).
fn resident(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let kib: u64 = status
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no {field} in {status}"));
    kib * 1024
}

/// A page's one SockJS frame: positions, then `rounds` × (join `channel` with `since`, leave).
fn amplifying_frame(channel: &str, since: &Value, rounds: usize) -> String {
    let mut requests = vec![json!({"name": "positions"}).to_string()];
    for _ in 0..rounds {
        requests.push(
            json!({"name": "subscribe", "data": {"channel": channel, "since": since}}).to_string(),
        );
        requests.push(json!({"name": "unsubscribe", "data": {"channel": channel}}).to_string());
    }
    serde_json::to_string(&requests).unwrap()
}

/// Reads what a page is sent until it has `replies` replies named `name` or it is closed;
/// returns the replies.
async fn drain(client: &mut Client, name: &str, replies: usize) -> Vec<Value> {
    let mut got = Vec::new();
    while got.len() < replies {
        match client.frame().await {
            Frame::Messages(m) => got.extend(m.into_iter().filter(|v| v["name"] == name)),
            Frame::Heartbeat | Frame::Open => {}
            // Closed as slow (3008): it could not take what it asked for.
            Frame::Close(..) | Frame::Gone(_) => break,
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_asking_again_and_again_for_large_history_cost_the_forwarder_and_server_a_bounded_amount(
) {
    let metrics = format!("127.0.0.1:{}", free_port());
    let fwd = forwarder_with(&[
        "--sub",
        "tcp://127.0.0.1:*",
        "--pub",
        "tcp://127.0.0.1:*",
        "--metrics",
        &metrics,
    ]);
    let srv = server(&fwd, &[]);
    let bus = publisher(&fwd.sub);
    let mut bystander = Client::connect(&srv).await;
    sync(&bus, &mut bystander, None).await;
    // A channel holding 100 messages of 64 KB, which a page saw from the start.
    let mut page = Client::connect(&srv).await;
    let (replies, _) = ask_all(
        &mut page,
        &[
            json!({"name": "positions"}),
            json!({"name": "subscribe", "data": {"channel": "big"}}),
        ],
    )
    .await;
    let since = replies[1]["data"]["position"].clone();
    let pad = "x".repeat(64 * 1024);
    for n in 1..=100 {
        bus.publish("big", "tick", &json!({"n": n, "pad": pad}))
            .unwrap();
    }
    let mut got = 0;
    while got < 100 {
        if page.next().await["channel"] == "big" {
            got += 1;
        }
    }
    drop(page);
    let (server_pid, forwarder_pid) = (srv.proc.child.id(), fwd.proc.child.id());
    let before = (
        resident(server_pid, "VmRSS:"),
        resident(forwarder_pid, "VmRSS:"),
    );
    // Four pages each send one frame: positions, then 100 × (join with since, leave), each
    // join asking for the 6.4 MB the channel holds: 2.6 GB, unbounded.
    let frame = amplifying_frame("big", &since, 100);
    let attack = std::time::Instant::now();
    let mut pages = Vec::new();
    for _ in 0..4 {
        let mut client = Client::connect(&srv).await;
        client.send_raw(&frame).await;
        pages.push(client);
    }
    // Another session's broadcast still arrives, and in good time.
    let sent = std::time::Instant::now();
    bus.notify_all(&json!({"bystander": 1})).unwrap();
    while bystander.next().await.get("bystander").is_none() {}
    let latency = sent.elapsed();
    let mut joins = Vec::new();
    for client in &mut pages {
        joins.extend(drain(client, "pushnote:subscribed", 100).await);
    }
    // The forwarder has answered every request.
    let forwarder_metrics = format!("http://{metrics}/metrics");
    let deadline = tokio::time::Instant::now() + WAIT;
    while metric_at(&forwarder_metrics, "pushnote_mq_recoveries_total").await < 400 {
        assert!(tokio::time::Instant::now() < deadline, "answered in time");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let peak = (
        resident(server_pid, "VmHWM:"),
        resident(forwarder_pid, "VmHWM:"),
    );
    let mib = |b: u64| b >> 20;
    eprintln!(
        "server {} → peak {} MiB, forwarder {} → peak {} MiB, broadcast in {latency:?}",
        mib(before.0),
        mib(peak.0),
        mib(before.1),
        mib(peak.1)
    );
    assert!(
        peak.0.saturating_sub(before.0) < 100 << 20,
        "server: {} MiB → {} MiB",
        mib(before.0),
        mib(peak.0)
    );
    assert!(
        peak.1.saturating_sub(before.1) < 64 << 20,
        "forwarder: {} MiB → {} MiB",
        mib(before.1),
        mib(peak.1)
    );
    // What the forwarder replays comes down the same connection as the broadcasts, before
    // them: a generous deadline for a debug build on a busy machine.
    assert!(latency < Duration::from_secs(5), "broadcast in {latency:?}");
    // Each join was answered: recovered, or busy (given nothing), or, where this server took
    // longer than its wait for the answers, unavailable.
    for j in &joins {
        let d = &j["data"];
        assert!(
            d["recovered"] == true || d["reason"] == "busy" || d["reason"] == "unavailable",
            "recovered, busy, or unavailable: {j}"
        );
    }
    assert!(srv.metric("pushnote_recoveries_busy_total").await > 0);
    let replayed = metric_at(&forwarder_metrics, "pushnote_mq_recovered_bytes_total").await;
    // The forwarder replays at most a second's worth of its default --recovery-rate (8 MiB a
    // second) at once, and that rate after.
    let rate = 8.0 * (1 << 20) as f64;
    let bound = rate * (1.0 + attack.elapsed().as_secs_f64());
    assert!(
        (replayed as f64) <= bound,
        "replayed {} MiB in {:?}",
        mib(replayed),
        attack.elapsed()
    );
    // The pages carry on: a broadcast reaches those still open.
    bus.notify_all(&json!({"after": 1})).unwrap();
    while bystander.next().await.get("after").is_none() {}
}

/// What a page with positions received of each topic: each message's epoch, offset and `n`.
#[derive(Default)]
struct Seen {
    topics: std::collections::HashMap<String, Vec<(u64, u64, u64)>>,
}

impl Seen {
    /// Notes `v` if it is a message with its position (bare ones, before the positions reply,
    /// are given again from the history and ignored, as a page does).
    fn note(&mut self, v: &Value) {
        let Some(kind) = v["kind"].as_str() else {
            return;
        };
        let p = &v["position"];
        let at = (
            p["epoch"].as_u64().unwrap(),
            p["offset"].as_u64().unwrap(),
            v["data"]["n"].as_u64().unwrap_or(0),
        );
        self.topics.entry(kind.to_owned()).or_default().push(at);
    }

    fn last_n(&self, kind: &str) -> u64 {
        self.topics
            .get(kind)
            .and_then(|t| t.iter().map(|&(_, _, n)| n).max())
            .unwrap_or(0)
    }

    /// Every topic's messages arrived once each.
    fn assert_none_twice(&self, round: usize) {
        for (kind, got) in &self.topics {
            let mut positions: Vec<(u64, u64)> = got.iter().map(|&(e, o, _)| (e, o)).collect();
            positions.sort_unstable();
            let before = positions.len();
            positions.dedup();
            assert_eq!(
                positions.len(),
                before,
                "round {round}, {kind}: {} given twice: {got:?}",
                before - positions.len()
            );
        }
    }
}

/// Publishes `{"n": n}` to everyone and to `u1` for each n of `ns`.
fn publish_to_all_and_u1(app: &pushnote::Publisher, ns: std::ops::RangeInclusive<u64>) {
    for n in ns {
        app.notify_all(&json!({ "n": n })).unwrap();
        app.notify(&json!({ "n": n }), ["u1"]).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_that_asks_while_the_forwarder_restarts_is_given_each_message_once() {
    let mut fwd = forwarder();
    let srv = server(&fwd, &[]);
    let (sub, publish) = (fwd.sub.clone(), fwd.publish.clone());
    // Rounds at the seam: the restarted forwarder holds messages when the page's requests reach it.
    let mut seams = 0;
    for round in 0..8 {
        if seams == 3 {
            break;
        }
        // A page with positions, to come back with.
        let app = publisher(&sub);
        let mut before = Client::connect(&srv).await;
        sync(&app, &mut before, None).await;
        ask_all(
            &mut before,
            &[
                json!({"name": "positions"}),
                json!({"name": "subscribe", "data": {"token": token("u1")}}),
            ],
        )
        .await;
        publish_to_all_and_u1(&app, 1..=1);
        let mut since = (Value::Null, Value::Null);
        while since.0.is_null() || since.1.is_null() {
            let v = before.next().await;
            match v["kind"].as_str() {
                Some("broadcast") => since.0 = v["position"].clone(),
                Some("user") => since.1 = v["position"].clone(),
                _ => {}
            }
        }
        drop((before, app));
        fwd.proc.signal("KILL");
        assert!(
            fwd.proc.wait_exit(WAIT).is_some(),
            "the forwarder is killed"
        );
        // The server retries its connection ever less often.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        // The page comes back while the forwarder is down, and the forwarder within the
        // server's 3 s wait for the answers; apps publish to it before the server is back.
        let mut page = Client::connect(&srv).await;
        page.emit(json!({"name": "positions", "data": {"since": since.0}}))
            .await;
        page.emit(json!({"name": "subscribe", "data": {"token": token("u1"), "since": since.1}}))
            .await;
        fwd = forwarder_with(&["--sub", &sub, "--pub", &publish]);
        let app = publisher(&sub);
        publish_to_all_and_u1(&app, 1..=5);
        let mut seen = Seen::default();
        let mut replies = Vec::new();
        while replies.len() < 2 {
            let v = page.next().await;
            if v["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("pushnote:"))
            {
                let d = &v["data"];
                let reason = d["reason"].as_str().unwrap_or("");
                assert!(
                    d["recovered"] == true || ["epoch", "unavailable"].contains(&reason),
                    "{v}"
                );
                replies.push(v);
            } else {
                seen.note(&v);
            }
        }
        if replies[0]["data"]["position"]["offset"].as_u64() > Some(0) {
            seams += 1;
        }
        publish_to_all_and_u1(&app, 6..=10);
        while seen.last_n("broadcast") < 10 || seen.last_n("user") < 10 {
            seen.note(&page.next().await);
        }
        seen.assert_none_twice(round);
    }
    eprintln!("{seams} rounds at the seam");
}
