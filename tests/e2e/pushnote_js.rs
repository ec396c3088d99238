//! pushnote.js, served by the server at `<route>/pushnote.js`, in headless Chromium over the
//! stock SockJS client: through a `kill -9` of a single server and of a forwarder, every
//! message once and in order; the close codes, a token refreshed when it expired, and a server
//! that keeps no history.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::browser::Bridge;
use crate::support::*;

const LONG: Duration = Duration::from_secs(60);

/// The topics the pages are given: broadcasts, user `u1`, and channel `news`'s "tick" events.
const TOPICS: [&str; 3] = ["broadcast", "user", "channel:news"];

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// What page `id` was given on `topic`, in order: each message's `n`.
fn pushed(bridge: &Bridge, id: &str, topic: &str) -> Vec<u64> {
    bridge
        .log
        .iter()
        // "null": a message without positions, which says not whether it is a broadcast.
        .filter(|e| e["id"] == id && e["event"] == "push")
        .filter(|e| e["topic"] == topic || (topic == "null" && e["topic"].is_null()))
        .map(|e| e["data"]["n"].as_u64().expect("a message with n"))
        .collect()
}

fn events<'a>(bridge: &'a Bridge, id: &'a str, name: &'a str) -> impl Iterator<Item = &'a Value> {
    bridge
        .log
        .iter()
        .filter(move |e| e["id"] == id && e["event"] == name)
}

/// Waits until page `id` has had, on every topic, a message with `n` at least `at_least`.
fn wait_pushed(bridge: &mut Bridge, id: &str, at_least: u64) {
    let what = format!("page {id}: message {at_least} on every topic");
    bridge.wait_for(&what, LONG, |b| {
        TOPICS
            .iter()
            .all(|t| pushed(b, id, t).last().copied().unwrap_or(0) >= at_least)
    });
}

/// Opens page `p` with pushnote.js at `url`, as user `u1` and in channel `news`, reconnecting
/// within a second, and waits until it is subscribed to both.
fn open_subscribed(bridge: &mut Bridge, url: &str) {
    bridge.open_pushnote(
        "p",
        url,
        json!({"token": token("u1"), "channels": ["news"], "minDelay": 200, "maxDelay": 1000}),
    );
    wait_log(bridge, "the user and the channel subscribed", |b| {
        let subscribed: Vec<_> = events(b, "p", "subscribed").collect();
        subscribed.iter().any(|e| e["data"]["user"] == "u1")
            && subscribed.iter().any(|e| e["data"]["channel"] == "news")
    });
}

/// A `--single` server on `port` binding its bus at `bus`, keeping room for all a run is sent
/// while a page is away, however slow it comes back.
fn single_on(port: &str, bus: &str) -> Server {
    let args = [
        "--port",
        port,
        "--address",
        "127.0.0.1",
        "--single",
        "--mq_socket",
        bus,
        "--metrics",
        "--secret",
        SECRET,
        "--history-size",
        "100000",
    ];
    spawn_server(&mut server_cmd(&args), true)
}

/// Waits until what the pages reported satisfies `done`.
fn wait_log(bridge: &mut Bridge, what: &str, done: impl Fn(&Bridge) -> bool) {
    bridge.wait_for(what, LONG, done);
}

#[test]
fn through_a_dropped_connection_and_a_kill_9_every_accepted_message_arrives_once_and_in_order() {
    let (mut bridge, _) = Bridge::start();
    let mut srv = single_on("0", "tcp://127.0.0.1:*");
    let port = srv.origin.rsplit(':').next().unwrap().to_owned();
    let bus = srv.bus.clone().unwrap();
    open_subscribed(&mut bridge, &srv.url);

    // An app publishes a round to all three topics every 3 ms.
    let rounds = Rounds::start(&bus, Duration::from_millis(3));
    wait_pushed(&mut bridge, "p", 20);

    // The page's connection drops; it comes back to the same run and is given what it missed.
    let dropped = rounds.last_accepted();
    bridge.eval("p", "push._sock.close()");
    bridge.until(LONG, |e| e["id"] == "p" && e["state"] == "reconnecting");
    bridge.until(LONG, |e| e["id"] == "p" && e["state"] == "open");
    wait_pushed(&mut bridge, "p", dropped + 50);
    for topic in TOPICS {
        let got = pushed(&bridge, "p", topic);
        let upto: Vec<u64> = got.iter().copied().filter(|&n| n <= dropped + 50).collect();
        assert_eq!(
            upto,
            (1..=dropped + 50).collect::<Vec<_>>(),
            "{topic}: every message, once, in order, across the drop"
        );
    }
    assert_eq!(events(&bridge, "p", "lost").count(), 0, "all recovered");

    // The server is killed and started again: its history is gone with it.
    srv.proc.signal("KILL");
    assert!(srv.proc.wait_exit(WAIT).is_some(), "the server is killed");
    let srv = single_on(&port, &bus);
    // What the publisher sent before it saw the new run may be lost on the way; once the new
    // run has received a message, every later one follows it down the same connection.
    block_on(srv.wait_metric(BROADCASTS, 1));
    rounds.restarted();
    rounds.wait_accepted_after(100);
    // The page comes back by itself, and is told the old run's history is gone.
    wait_log(&mut bridge, "a page told of every topic it lost", |b| {
        TOPICS
            .iter()
            .all(|t| events(b, "p", "lost").any(|e| e["topic"] == *t))
    });
    let accepted = rounds.stop();
    wait_pushed(&mut bridge, "p", accepted.last().unwrap().0);
    for topic in TOPICS {
        assert_after_restart_all_once_in_order(topic, &pushed(&bridge, "p", topic), &accepted);
    }
    let lost: HashMap<String, String> = events(&bridge, "p", "lost")
        .map(|e| {
            (
                e["topic"].as_str().unwrap().to_owned(),
                e["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for topic in TOPICS {
        assert_eq!(lost[topic], "epoch", "{topic}: {lost:?}");
    }
    let states: Vec<&str> = events(&bridge, "p", "state")
        .map(|e| e["state"].as_str().unwrap())
        .collect();
    assert!(
        states
            .windows(2)
            .any(|w| w == ["reconnecting", "connecting"]),
        "{states:?}"
    );
    assert_eq!(states.last(), Some(&"open"), "{states:?}");
}

#[test]
fn through_a_kill_9_of_the_forwarder_every_message_the_new_run_accepted_arrives_once_and_in_order()
{
    let (mut bridge, _) = Bridge::start();
    let mut fwd = forwarder();
    let srv = server(&fwd, &[]);
    let (sub, publish) = (fwd.sub.clone(), fwd.publish.clone());
    open_subscribed(&mut bridge, &srv.url);
    // An app publishes a round to all three every 10 ms.
    let rounds = Rounds::start(&sub, Duration::from_millis(10));
    wait_pushed(&mut bridge, "p", 20);
    fwd.proc.signal("KILL");
    assert!(
        fwd.proc.wait_exit(WAIT).is_some(),
        "the forwarder is killed"
    );
    std::thread::sleep(Duration::from_secs(1));
    let _again = forwarder_with(&["--sub", &sub, "--pub", &publish]);
    rounds.restarted();
    rounds.wait_accepted_after(100);
    let accepted = rounds.stop();
    wait_pushed(&mut bridge, "p", accepted.last().unwrap().0);
    for topic in TOPICS {
        assert_after_restart_all_once_in_order(topic, &pushed(&bridge, "p", topic), &accepted);
    }
}

/// The states page `id` went through, in order.
fn states(bridge: &Bridge, id: &str) -> Vec<(String, Option<u64>)> {
    events(bridge, id, "state")
        .map(|e| (e["state"].as_str().unwrap().to_owned(), e["code"].as_u64()))
        .collect()
}

#[test]
fn the_close_codes_say_whether_and_when_a_page_reconnects() {
    let (mut bridge, _) = Bridge::start();
    let fast = json!({"minDelay": 100, "maxDelay": 200, "fullDelay": 2000});
    // One session at a time: the second page is told the server is full (3003) and waits
    // the longer delay; once the first page closes for good (3000), it gets in.
    let fwd = forwarder();
    let srv = server(&fwd, &["--max-sessions", "1"]);
    bridge.open_pushnote("a", &srv.url, fast.clone());
    bridge.until(LONG, |e| e["id"] == "a" && e["state"] == "open");
    let mut with_channel = fast.clone();
    with_channel["channels"] = json!(["news"]);
    bridge.open_pushnote("b", &srv.url, with_channel);
    let full = bridge.until(LONG, |e| e["id"] == "b" && e["state"] == "reconnecting");
    assert_eq!(full["code"], 3003, "{full}");
    let delay = full["delay"].as_u64().unwrap();
    assert!(
        (1000..=2000).contains(&delay),
        "after 3003, half to all of fullDelay: {delay}"
    );
    bridge.eval("a", "push.close()");
    bridge.until(LONG, |e| e["id"] == "a" && e["state"] == "closed");
    // A refused session opens and closes at once; an accepted one gets its channel.
    bridge.until(LONG, |e| e["id"] == "b" && e["event"] == "subscribed");

    // Too many subscribe attempts (3011): reconnecting cannot help, and the page stops.
    let srv = server(&fwd, &["--max-subscribe-attempts", "2"]);
    bridge.open_pushnote("c", &srv.url, fast.clone());
    bridge.until(LONG, |e| e["id"] == "c" && e["state"] == "open");
    bridge.eval(
        "c",
        "for (var i = 0; i < 3; i++) push.emit('subscribe', {token: 'not-a-token'})",
    );
    let stopped = bridge.until(LONG, |e| e["id"] == "c" && e["event"] == "state");
    assert_eq!(stopped["state"], "stopped", "{stopped}");
    assert_eq!(stopped["code"], 3011, "{stopped}");
    // A reconnection would start within maxDelay (200 ms); ten times that passes without one.
    std::thread::sleep(Duration::from_secs(2));
    bridge.drain();
    assert_eq!(
        states(&bridge, "c").last(),
        Some(&("stopped".to_owned(), Some(3011))),
        "{:?}",
        states(&bridge, "c")
    );
    // A server shutting down (3001) is reconnected to, once it is back.
    let mut srv = srv;
    bridge.open_pushnote("d", &srv.url, fast);
    bridge.until(LONG, |e| e["id"] == "d" && e["state"] == "open");
    let port = srv.origin.rsplit(':').next().unwrap().to_owned();
    srv.proc.terminate();
    assert!(srv.proc.wait_exit(WAIT).is_some(), "the server stops");
    let going = bridge.until(LONG, |e| e["id"] == "d" && e["state"] == "reconnecting");
    assert_eq!(going["code"], 3001, "{going}");
    let mut args = server_args(&fwd, &port);
    args.extend_from_slice(&["--max-subscribe-attempts", "2"]);
    let _srv = spawn_server(&mut server_cmd(&args), false);
    bridge.until(LONG, |e| e["id"] == "d" && e["state"] == "open");
}

/// Publishes rounds of `{"n": n}` to everyone, to `u1` and on `news` through `app` until page
/// `id` has had a message on each of `topics` (bus subscriptions reach the forwarder in the
/// background); the `n`s of each come in order.
fn publish_until_each(bridge: &mut Bridge, app: &pushnote::Publisher, id: &str, topics: &[&str]) {
    let deadline = Instant::now() + LONG;
    let mut n = 0;
    loop {
        n += 1;
        let data = json!({ "n": n });
        app.notify_all(&data).unwrap();
        app.notify(&data, ["u1"]).unwrap();
        app.publish("news", "tick", &data).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        bridge.drain();
        if topics.iter().all(|t| !pushed(bridge, id, t).is_empty()) {
            break;
        }
        assert!(Instant::now() < deadline, "events: {:#?}", bridge.log);
    }
    for topic in topics {
        let got = pushed(bridge, id, topic);
        assert!(got.windows(2).all(|w| w[0] < w[1]), "{topic}: {got:?}");
    }
}

#[test]
fn an_expired_token_is_refreshed_and_a_server_without_history_still_subscribes() {
    let (mut bridge, _) = Bridge::start();
    let fwd = forwarder();
    let srv = server(&fwd, &["--token-max-age", "60"]);
    let stale = signer().tokenize_at("u1", now() - 3600).unwrap();
    bridge.open_pushnote(
        "p",
        &srv.url,
        json!({"token": stale, "refreshTokens": [token("u1")], "channels": ["news"]}),
    );
    // The page is told its token expired, fetches a fresh one and subscribes with it.
    bridge.until(LONG, |e| e["id"] == "p" && e["event"] == "refresh");
    wait_log(&mut bridge, "the user and the channel subscribed", |b| {
        let subscribed: Vec<_> = events(b, "p", "subscribed").collect();
        subscribed.iter().any(|e| e["data"]["user"] == "u1")
            && subscribed.iter().any(|e| e["data"]["channel"] == "news")
    });
    let app = publisher(&fwd.sub);
    publish_until_each(&mut bridge, &app, "p", &TOPICS);

    // A server that keeps no history refuses positions: the page subscribes without them,
    // and is given broadcasts bare (it cannot tell them from the user's: none here).
    let srv = single_server(&["--history-size", "0"]);
    bridge.open_pushnote("q", &srv.url, json!({"channels": ["news"]}));
    wait_log(&mut bridge, "the channel joined", |b| {
        events(b, "q", "subscribed").any(|e| e["data"]["channel"] == "news")
    });
    let app = publisher(srv.bus.as_deref().unwrap());
    publish_until_each(&mut bridge, &app, "q", &["null", "channel:news"]);
    assert_eq!(
        events(&bridge, "p", "pnerror")
            .chain(events(&bridge, "q", "pnerror"))
            .count(),
        0,
        "no error reaches the pages: {:#?}",
        bridge.log
    );
}
