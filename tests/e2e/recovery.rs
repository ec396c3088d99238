//! Positions and recovery end to end, on `--single` servers (which keep the history) and on
//! servers of a forwarder (which keeps it for them): pages that come back with their positions,
//! to the same server or another, are given what they missed, per topic, in order and once,
//! while messages flow; or told why not.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::*;

/// A page with positions on: what it received of each topic (`broadcast`, `user`,
/// `channel:NAME`), each message's `n` and offset, and the position of the last one.
struct Page {
    client: Client,
    got: Got,
    at: HashMap<String, Value>,
    /// Whether the `positions` reply came: bare messages before it are ignored, as a page
    /// that recovers ignores them (docs/PROTOCOL.md §6).
    on: bool,
}

fn topic_of(v: &Value) -> Option<String> {
    match v["kind"].as_str()? {
        "channel" => Some(format!("channel:{}", v["channel"].as_str()?)),
        kind => Some(kind.to_owned()),
    }
}

impl Page {
    async fn open(server: &Server) -> Page {
        Page {
            client: Client::connect(server).await,
            got: HashMap::new(),
            at: HashMap::new(),
            on: false,
        }
    }

    fn record(&mut self, v: &Value) {
        let Some(topic) = topic_of(v) else {
            assert!(
                !self.on,
                "after the positions reply, every message has its position: {v}"
            );
            return;
        };
        let offset = v["position"]["offset"].as_u64().expect("an offset");
        let n = v["data"]["n"].as_u64().unwrap_or(0);
        self.got.entry(topic.clone()).or_default().push((n, offset));
        self.at.insert(topic, v["position"].clone());
    }

    /// Sends `request` and returns the reply named `name` (or an error), recording the
    /// messages that come before it.
    async fn ask(&mut self, request: Value, name: &str) -> Value {
        self.client.emit(request).await;
        loop {
            let v = self.client.next().await;
            match v["name"].as_str() {
                Some(n) if n == name || n == "pushnote:error" => return v,
                _ => self.record(&v),
            }
        }
    }

    async fn positions(&mut self, since: Option<&Value>) -> Value {
        let mut data = json!({});
        if let Some(since) = since {
            data["since"] = since.clone();
        }
        let reply = self
            .ask(
                json!({"name": "positions", "data": data}),
                "pushnote:positions",
            )
            .await;
        if reply["name"] == "pushnote:positions" {
            self.on = true;
            self.at
                .insert("broadcast".into(), reply["data"]["position"].clone());
        }
        reply
    }

    async fn subscribe(&mut self, mut data: Value, topic: &str) -> Value {
        data["replies"] = json!(true);
        let reply = self
            .ask(
                json!({"name": "subscribe", "data": data}),
                "pushnote:subscribed",
            )
            .await;
        if reply["name"] == "pushnote:subscribed" {
            self.at
                .insert(topic.into(), reply["data"]["position"].clone());
        }
        reply
    }

    /// Reads until `done` says the page has everything, within a deadline.
    async fn read_until(&mut self, done: impl Fn(&Page) -> bool) {
        let deadline = tokio::time::Instant::now() + 3 * WAIT;
        while !done(self) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "in time: {:?}",
                self.got.keys()
            );
            let v = self.client.next().await;
            self.record(&v);
        }
    }

    fn last_n(&self, topic: &str) -> u64 {
        self.got
            .get(topic)
            .and_then(|g| g.last())
            .map_or(0, |&(n, _)| n)
    }
}

const TOPICS: [&str; 3] = ["broadcast", "user", "channel:news"];

/// Publishes `{"n": i}` to everyone, to user `u1` and on channel `news`, for i = 1, 2, … up to
/// `last`, a round every millisecond or so; `rounds` says how far it is.
fn publish_rounds(
    endpoint: String,
    last: u64,
    rounds: Arc<AtomicU64>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let bus = publisher(&endpoint);
        for n in 1..=last {
            let data = json!({ "n": n });
            bus.notify_all(&data).unwrap();
            bus.notify(&data, ["u1"]).unwrap();
            bus.publish("news", "tick", &data).unwrap();
            rounds.store(n, Ordering::Release);
            std::thread::sleep(Duration::from_millis(1));
        }
    })
}

async fn wait_rounds(rounds: &AtomicU64, at_least: u64) {
    let deadline = tokio::time::Instant::now() + 3 * WAIT;
    while rounds.load(Ordering::Acquire) < at_least {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the publisher goes on"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

type Got = HashMap<String, Vec<(u64, u64)>>;

/// Every topic's `n`s, first from `a` then from `b`, are one run without a gap or a repeat,
/// up to `last`, and so are the offsets.
fn assert_seamless(a: &Got, b: &Got, last: u64) {
    for topic in TOPICS {
        let all: Vec<(u64, u64)> = a[topic].iter().chain(&b[topic]).copied().collect();
        let (first_n, first_offset) = all[0];
        for (i, &(n, offset)) in all.iter().enumerate() {
            assert_eq!(
                n,
                first_n + i as u64,
                "{topic}: no gap, no repeat, in order"
            );
            assert_eq!(offset, first_offset + i as u64, "{topic}: offsets too");
        }
        assert_eq!(all.last().unwrap().0, last, "{topic}: everything");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_that_comes_back_while_messages_flow_misses_none_and_sees_none_twice() {
    let srv = single_server(&["--secret", SECRET, "--history-size", "100000", QUEUE, ROOM]);
    let endpoint = srv.bus.clone().unwrap();
    comes_back(&srv, &srv, endpoint).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_that_comes_back_to_another_server_of_a_forwarder_misses_none_and_sees_none_twice() {
    let fwd = forwarder_keeping("100000");
    let (first, second) = (server(&fwd, &[QUEUE, ROOM]), server(&fwd, &[QUEUE, ROOM]));
    comes_back(&first, &second, fwd.sub.clone()).await;
    assert_eq!(first.metric("pushnote_bus_messages_lost_total").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_that_comes_back_to_another_server_of_a_redis_misses_none_and_sees_none_twice() {
    let redis = crate::redis_proc::Redis::start();
    let history = ["--history-size", "100000", QUEUE, ROOM];
    let first = crate::redis_engine::redis_server(&redis, &history);
    let second = crate::redis_engine::redis_server(&redis, &history);
    comes_back(&first, &second, redis.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_a_kill_9_of_its_server_a_page_of_a_redis_misses_none_and_sees_none_twice() {
    let redis = crate::redis_proc::Redis::start();
    let history = ["--history-size", "100000", QUEUE, ROOM];
    let first = crate::redis_engine::redis_server(&redis, &history);
    let second = crate::redis_engine::redis_server(&redis, &history);
    comes_back_after(&first, &second, redis.url(), true).await;
}

/// Room in a session's queue for all a page missed, however slow it comes back on a busy
/// machine (a page that cannot take what it missed is closed as slow, 3008).
const QUEUE: &str = "--queue-messages";
const ROOM: &str = "100000";

/// A page on `first` with positions, subscribed as `u1` and in channel `news`, goes away while
/// an app publishes to all three at `endpoint`, and comes back on `second` with its positions.
async fn comes_back(first: &Server, second: &Server, endpoint: String) {
    comes_back_after(first, second, endpoint, false).await
}

/// [`comes_back`], the first server killed with SIGKILL as the page goes (`kill_first`).
async fn comes_back_after(first: &Server, second: &Server, endpoint: String, kill_first: bool) {
    let (srv, mut a) = (second, Page::open(first).await);
    let reply = a.positions(None).await;
    assert_eq!(reply["data"]["position"]["offset"], 0, "{reply}");
    assert!(reply["data"].get("recovered").is_none(), "{reply}");
    let reply = a.subscribe(json!({"token": token("u1")}), "user").await;
    assert_eq!(reply["data"]["user"], "u1", "{reply}");
    assert_eq!(reply["data"]["position"]["offset"], 0, "{reply}");
    let reply = a
        .subscribe(json!({"channel": "news"}), "channel:news")
        .await;
    assert_eq!(reply["data"]["channel"], "news", "{reply}");

    let last = 1500;
    let rounds = Arc::new(AtomicU64::new(0));
    let publishing = publish_rounds(endpoint, last, rounds.clone());
    a.read_until(|p| TOPICS.iter().all(|t| p.last_n(t) >= 100))
        .await;
    // The page goes away mid-stream: what was on its way to it is lost with its connection.
    let (a_got, since) = (a.got.clone(), a.at.clone());
    if kill_first {
        first.proc.signal("KILL");
    }
    drop(a);
    let away_from = rounds.load(Ordering::Acquire);
    // It comes back after at least 200 more rounds, the user with no session meanwhile.
    wait_rounds(&rounds, away_from + 200).await;
    let mut b = Page::open(srv).await;
    let reply = b.positions(Some(&since["broadcast"])).await;
    assert_eq!(reply["data"]["recovered"], true, "{reply}");
    let reply = b
        .subscribe(
            json!({"token": token("u1"), "since": since["user"]}),
            "user",
        )
        .await;
    assert_eq!(reply["data"]["recovered"], true, "{reply}");
    let reply = b
        .subscribe(
            json!({"channel": "news", "since": since["channel:news"]}),
            "channel:news",
        )
        .await;
    assert_eq!(reply["data"]["recovered"], true, "{reply}");
    b.read_until(|p| TOPICS.iter().all(|t| p.last_n(t) == last))
        .await;
    publishing.join().unwrap();
    assert_seamless(&a_got, &b.got, last);
    assert!(srv.metric("pushnote_recoveries_total").await >= 3);
    assert!(srv.metric("pushnote_recovered_messages_total").await >= 3 * 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_forwarders_history_a_page_is_told_it_was_not_recovered() {
    let fwd = forwarder_keeping("3");
    let srv = server(&fwd, &[]);
    let bus = publisher(&fwd.sub);
    let mut a = Page::open(&srv).await;
    a.positions(None).await;
    let since = a.at["broadcast"].clone();
    a.subscribe(json!({"channel": "news"}), "channel:news")
        .await;
    // The forwarder keeps 3 of a topic; 5 go by (the page stays, so that this server has
    // them too).
    for n in 1..=5 {
        bus.publish("news", "tick", &json!({ "n": n })).unwrap();
    }
    a.read_until(|p| p.last_n("channel:news") == 5).await;
    let mut b = Page::open(&srv).await;
    let reply = b.positions(Some(&since)).await;
    assert_eq!(
        reply["data"]["recovered"], true,
        "no broadcast went by: {reply}"
    );
    let news_since = json!({"epoch": since["epoch"], "offset": 0});
    let reply = b
        .subscribe(
            json!({"channel": "news", "since": news_since}),
            "channel:news",
        )
        .await;
    assert_eq!(reply["data"]["recovered"], false, "{reply}");
    assert_eq!(
        reply["data"]["reason"], "epoch",
        "another topic's epoch: {reply}"
    );
    assert!(
        !b.got.contains_key("channel:news"),
        "the epoch's first is gone, so none of it: {:?}",
        b.got
    );
    // With the channel's own position from before the five, the history no longer reaches.
    let mut c = Page::open(&srv).await;
    c.positions(None).await;
    let from_start = json!({"epoch": reply["data"]["position"]["epoch"], "offset": 0});
    let reply = c
        .subscribe(
            json!({"channel": "news", "since": from_start}),
            "channel:news",
        )
        .await;
    assert_eq!(reply["data"]["recovered"], false, "{reply}");
    assert_eq!(reply["data"]["reason"], "evicted", "{reply}");
    assert!(!c.got.contains_key("channel:news"), "{:?}", c.got);
    bus.publish("news", "tick", &json!({ "n": 6 })).unwrap();
    c.read_until(|p| p.last_n("channel:news") == 6).await;
    assert_eq!(c.got["channel:news"], [(6, 6)]);
    assert!(srv.metric("pushnote_recoveries_failed_total").await >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_history_a_page_is_told_it_was_not_recovered_and_goes_on_from_now() {
    let srv = single_server(&["--secret", SECRET, "--history-size", "3"]);
    let bus = publisher(srv.bus.as_deref().unwrap());
    let mut a = Page::open(&srv).await;
    a.positions(None).await;
    let since = a.at["broadcast"].clone();
    drop(a);
    // The history keeps 3 broadcasts; 5 go by.
    for n in 1..=5 {
        bus.notify_all(&json!({ "n": n })).unwrap();
    }
    let mut b = Page::open(&srv).await;
    // Until the fifth is in the history, a page can still be given all it missed.
    let deadline = tokio::time::Instant::now() + WAIT;
    let reply = loop {
        let reply = b.positions(Some(&since)).await;
        if reply["data"]["position"]["offset"] == 5 {
            break reply;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the server has the fifth"
        );
        b = Page::open(&srv).await;
    };
    assert_eq!(reply["data"]["recovered"], false, "{reply}");
    assert_eq!(reply["data"]["reason"], "evicted", "{reply}");
    // Broadcasts published before the page opened may still have been on their way to it:
    // those come before the reply, with positions up to the reply's, as live ones do.
    let before = b.got.get("broadcast").cloned().unwrap_or_default();
    assert!(
        before.iter().all(|&(n, offset)| n == offset && offset <= 5),
        "{before:?}"
    );
    bus.notify_all(&json!({ "n": 6 })).unwrap();
    b.read_until(|p| p.last_n("broadcast") == 6).await;
    let mut after = before.clone();
    after.push((6, 6));
    assert_eq!(
        b.got["broadcast"], after,
        "then on from the reply's position"
    );
    assert!(srv.metric("pushnote_recoveries_failed_total").await >= 1);
    assert!(srv.metric("pushnote_history_evicted_total").await >= 2);
    assert_eq!(srv.metric("pushnote_history_messages").await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_positions_get_clear_answers_and_the_session_carries_on() {
    let srv = single_server(&["--secret", SECRET]);
    let bus = publisher(srv.bus.as_deref().unwrap());
    bad_positions(&srv, &bus).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_forwarder_bad_positions_and_requests_in_a_loop_get_clear_answers() {
    let fwd = forwarder();
    let srv = server(&fwd, &["--max-channels", "5"]);
    let bus = publisher(&fwd.sub);
    bad_positions(&srv, &bus).await;
    // Each positions request costs a request to the forwarder: a page asking in a loop is
    // told to slow down, and carries on.
    let mut page = Page::open(&srv).await;
    let mut slowed = 0;
    for _ in 0..30 {
        let reply = page.positions(None).await;
        if reply["data"]["code"] == "too_many_requests" {
            slowed += 1;
        }
    }
    assert!(slowed > 0, "requests in a loop are refused past the budget");
    bus.notify_all(&json!({ "n": 99 })).unwrap();
    page.read_until(|p| p.last_n("broadcast") == 99).await;
}

/// Bad positions sent to `srv` (whose apps publish through `bus`) get clear answers.
async fn bad_positions(srv: &Server, bus: &pushnote::Publisher) {
    let mut page = Page::open(srv).await;
    let code = |reply: &Value| reply["data"]["code"].as_str().unwrap_or("").to_owned();
    // A position without positions on.
    let reply = page
        .subscribe(
            json!({"channel": "news", "since": {"epoch": 1, "offset": 0}}),
            "x",
        )
        .await;
    assert_eq!(code(&reply), "bad_request", "{reply}");
    // Malformed positions.
    for bad in [
        json!({"epoch": 1}),
        json!({"epoch": -1, "offset": 0}),
        json!("1:0"),
        json!({"epoch": 1, "offset": 1e20}),
    ] {
        let reply = page.positions(Some(&bad)).await;
        assert_eq!(code(&reply), "bad_request", "{bad}: {reply}");
    }
    bus.notify_all(&json!({ "n": 1 })).unwrap();
    let reply = page.positions(None).await;
    let now = reply["data"]["position"].clone();
    // Positions with `since` come once, first.
    let reply = page.positions(Some(&now)).await;
    assert_eq!(code(&reply), "bad_request", "{reply}");
    let epoch = now["epoch"].as_u64().unwrap();
    let offset = now["offset"].as_u64().unwrap();
    // From the future, and from another epoch: not recovered, and said why.
    let future = json!({"epoch": epoch, "offset": offset + 1000});
    let reply = page
        .subscribe(json!({"channel": "a", "since": future}), "channel:a")
        .await;
    assert_eq!(reply["data"]["recovered"], false, "{reply}");
    assert_eq!(
        reply["data"]["reason"], "epoch",
        "a channel never published: {reply}"
    );
    let reply = page
        .subscribe(
            json!({"token": token("u1"), "since": {"epoch": epoch ^ 1, "offset": 0}}),
            "user",
        )
        .await;
    assert_eq!(reply["data"]["recovered"], false, "{reply}");
    assert_eq!(reply["data"]["reason"], "epoch", "{reply}");
    // A private channel is not given, history or not, without its token.
    let reply = page
        .subscribe(
            json!({"channel": "private-x", "since": now}),
            "channel:private-x",
        )
        .await;
    assert_eq!(code(&reply), "forbidden", "{reply}");
    // The session carries on, with positions.
    bus.notify_all(&json!({ "n": 2 })).unwrap();
    page.read_until(|p| p.last_n("broadcast") == 2).await;
    let b = page.positions(None).await;
    let future =
        json!({"epoch": epoch, "offset": b["data"]["position"]["offset"].as_u64().unwrap() + 5});
    let mut other = Page::open(srv).await;
    let reply = other.positions(Some(&future)).await;
    assert_eq!(reply["data"]["recovered"], false, "{reply}");
    assert_eq!(reply["data"]["reason"], "future", "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_server_without_history_gives_no_positions_and_says_so() {
    let srv = single_server(&["--history-size", "0"]);
    let mut client = Client::connect(&srv).await;
    client.emit(json!({"name": "positions"})).await;
    let reply = client.next_unmarked().await;
    assert_eq!(reply["data"]["code"], "no_history", "{reply}");
    assert_eq!(srv.metric("pushnote_history_messages").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_server_restart_a_page_gets_everything_the_new_run_accepted_and_is_told_of_the_rest(
) {
    let mut srv = single_server(&["--secret", SECRET]);
    let endpoint = srv.bus.clone().unwrap();
    let port = srv.origin.rsplit(':').next().unwrap().to_owned();
    let mut a = Page::open(&srv).await;
    a.positions(None).await;
    a.subscribe(json!({"token": token("u1")}), "user").await;
    // An app publishes to the user every 2 ms throughout, noting what was accepted.
    let accepted = Arc::new(std::sync::Mutex::new(Vec::<(u64, bool)>::new()));
    let restarted = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let publishing = {
        let (accepted, restarted, stop) = (accepted.clone(), restarted.clone(), stop.clone());
        std::thread::spawn(move || {
            let bus = publisher(&endpoint);
            let mut n = 0;
            while !stop.load(Ordering::Acquire) {
                n += 1;
                let after = restarted.load(Ordering::Acquire);
                if bus.notify(&json!({ "n": n }), ["u1"]).is_ok() {
                    accepted.lock().unwrap().push((n, after));
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    a.read_until(|p| p.last_n("user") >= 20).await;
    let since = a.at["user"].clone();
    srv.proc.terminate();
    assert!(srv.proc.wait_exit(WAIT).is_some(), "the server stops");
    drop(a);
    let bus_endpoint = srv.bus.clone().unwrap();
    let srv = spawn_server(
        &mut server_cmd(&[
            "--port",
            &port,
            "--address",
            "127.0.0.1",
            "--single",
            "--mq_socket",
            &bus_endpoint,
            "--metrics",
            "--secret",
            SECRET,
            // Room for all the new run is sent before the page is back, however slow that is.
            "--history-size",
            "100000",
        ]),
        true,
    );
    // Until the publisher has seen the old run go and the new one subscribe, what it sends is
    // lost on the way, and nothing tells it so. Once the new run has received a message, every
    // later one follows it down the same connection: those are what the new run accepted.
    srv.wait_metric(USER_MESSAGES, 1).await;
    restarted.store(true, Ordering::Release);
    // Messages flow to the new run for a while before the page comes back.
    let deadline = tokio::time::Instant::now() + WAIT;
    while accepted
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, after)| *after)
        .count()
        < 50
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new run accepts messages"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut b = Page::open(&srv).await;
    b.positions(None).await;
    let reply = b
        .subscribe(json!({"token": token("u1"), "since": since}), "user")
        .await;
    assert_eq!(reply["data"]["recovered"], false, "{reply}");
    assert_eq!(reply["data"]["reason"], "epoch", "{reply}");
    stop.store(true, Ordering::Release);
    publishing.join().unwrap();
    let last = accepted.lock().unwrap().last().unwrap().0;
    b.read_until(|p| p.last_n("user") == last).await;
    let got: Vec<u64> = b.got["user"].iter().map(|&(n, _)| n).collect();
    assert!(
        got.windows(2).all(|w| w[0] < w[1]),
        "in order, once: {got:?}"
    );
    let offsets: Vec<u64> = b.got["user"].iter().map(|&(_, o)| o).collect();
    assert_eq!(
        offsets,
        (1..=offsets.len() as u64).collect::<Vec<_>>(),
        "the new run's, from its first"
    );
    for (n, after) in accepted.lock().unwrap().iter() {
        if *after {
            assert!(got.contains(n), "accepted after the restart: {n}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_a_kill_9_of_the_forwarder_every_message_the_new_run_accepted_arrives_once_and_in_order(
) {
    let mut fwd = forwarder();
    let srv = server(&fwd, &[]);
    let (sub, publish) = (fwd.sub.clone(), fwd.publish.clone());
    let mut page = Page::open(&srv).await;
    page.positions(None).await;
    page.subscribe(json!({"token": token("u1")}), "user").await;
    page.subscribe(json!({"channel": "news"}), "channel:news")
        .await;
    // An app publishes a round to all three every 10 ms.
    let rounds = Rounds::start(&sub, Duration::from_millis(10));
    page.read_until(|p| TOPICS.iter().all(|t| p.last_n(t) >= 20))
        .await;
    fwd.proc.signal("KILL");
    assert!(
        fwd.proc.wait_exit(WAIT).is_some(),
        "the forwarder is killed"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let _restarted_forwarder = forwarder_with(&["--sub", &sub, "--pub", &publish]);
    // Every round accepted from now on is the new run's; the server comes back to it in its
    // own time (ZeroMQ's reconnection back-off), after the app has.
    rounds.restarted();
    rounds.wait_accepted_after(100);
    let accepted = rounds.stop();
    let last = accepted.last().unwrap().0;
    page.read_until(|p| TOPICS.iter().all(|t| p.last_n(t) == last))
        .await;
    for topic in TOPICS {
        let got: Vec<u64> = page.got[topic].iter().map(|&(n, _)| n).collect();
        assert_after_restart_all_once_in_order(topic, &got, &accepted);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_of_a_forwarder_restarted_with_sigterm_gives_its_pages_all_they_missed() {
    let fwd = forwarder_keeping("100000");
    let mut srv = server(&fwd, &[QUEUE, ROOM]);
    let port = srv.origin.rsplit(':').next().unwrap().to_owned();
    let mut a = Page::open(&srv).await;
    a.positions(None).await;
    a.subscribe(json!({"token": token("u1")}), "user").await;
    a.subscribe(json!({"channel": "news"}), "channel:news")
        .await;
    let last = 1000;
    let rounds = Arc::new(AtomicU64::new(0));
    let publishing = publish_rounds(fwd.sub.clone(), last, rounds.clone());
    a.read_until(|p| TOPICS.iter().all(|t| p.last_n(t) >= 100))
        .await;
    // The server goes: its pages are told 3001, and what was on its way to them is lost.
    srv.proc.terminate();
    for v in a.client.take_pending() {
        a.record(&v);
    }
    let close = loop {
        match a.client.frame().await {
            Frame::Close(code, _) => break code,
            Frame::Messages(m) => m.iter().for_each(|v| a.record(v)),
            Frame::Heartbeat => {}
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(close, 3001);
    assert!(srv.proc.wait_exit(WAIT).is_some(), "the server stops");
    let (a_got, since) = (a.got.clone(), a.at.clone());
    drop(a);
    let mut args = server_args(&fwd, &port);
    args.extend_from_slice(&[QUEUE, ROOM]);
    let srv = spawn_server(&mut server_cmd(&args), false);
    // The page comes back to the restarted server with its positions.
    let mut b = Page::open(&srv).await;
    let reply = b.positions(Some(&since["broadcast"])).await;
    assert_eq!(reply["data"]["recovered"], true, "{reply}");
    for (data, topic) in [
        (
            json!({"token": token("u1"), "since": since["user"]}),
            "user",
        ),
        (
            json!({"channel": "news", "since": since["channel:news"]}),
            "channel:news",
        ),
    ] {
        let reply = b.subscribe(data, topic).await;
        assert_eq!(reply["data"]["recovered"], true, "{topic}: {reply}");
    }
    b.read_until(|p| TOPICS.iter().all(|t| p.last_n(t) == last))
        .await;
    publishing.join().unwrap();
    assert_seamless(&a_got, &b.got, last);
}
