//! Servers on the Redis engine (`--broker redis://…`): messages through a real redis-server,
//! positions and history kept there, pages recovered by any server of the same Redis, and
//! Redis' death and return.

use std::time::Duration;

use serde_json::{json, Value};

use pushnote::redis_connection::Connection;
use pushnote::redis_script::{self, Keys};
use pushnote::Position;

use crate::redis_proc::Redis;
use crate::support::*;

/// A server on the Redis at `url` (`--broker`), with the test secret, metrics and `extra`
/// flags.
pub fn broker_server(url: &str, extra: &[&str]) -> Server {
    let mut args = vec![
        "--port",
        "0",
        "--address",
        "127.0.0.1",
        "--broker",
        url,
        "--secret",
        SECRET,
        "--metrics",
    ];
    args.extend_from_slice(extra);
    spawn_server(&mut server_cmd(&args), false)
}

/// A server of `redis`, with the test secret, metrics and `extra` flags.
pub fn redis_server(redis: &Redis, extra: &[&str]) -> Server {
    broker_server(&redis.url(), extra)
}

/// Sends `positions` (from `since`, if given) and reads until its reply: the reply, and the
/// messages given with their positions before it (the bare live ones before it, which a
/// recovering page ignores, PROTOCOL §6, are skipped).
pub async fn positions(client: &mut Client, since: Option<&Value>) -> (Value, Vec<Value>) {
    let data = match since {
        Some(since) => json!({ "since": since }),
        None => json!({}),
    };
    client
        .emit(json!({"name": "positions", "data": data}))
        .await;
    let mut given = Vec::new();
    loop {
        let v = client.next().await;
        if v["name"] == "pushnote:positions" {
            return (v, given);
        }
        if v.get("position").is_some() {
            given.push(v);
        }
    }
}

/// Publishes `body` under `topics` (bus topics without their NUL) through pushnote's script,
/// as any app does (PROTOCOL §2c); the positions.
fn publish(c: &mut Connection, body: &Value, topics: &[&str]) -> Vec<Position> {
    let topics: Vec<&[u8]> = topics.iter().map(|t| t.as_bytes()).collect();
    let args = redis_script::publish_args(
        &Keys::new(redis_script::DEFAULT_PREFIX),
        body.to_string().as_bytes(),
        &topics,
    );
    let reply = c.script(&args).expect("redis reply");
    redis_script::publish_reply(&reply, topics.len()).expect("positions")
}

/// Publishes `data` to everyone through the script; its position.
pub fn notify_all(c: &mut Connection, data: Value) -> Position {
    publish(c, &json!({"name": "notify_all", "data": data}), &["all"])[0]
}

fn notify(c: &mut Connection, user: &str, data: Value) -> Position {
    let topic = format!("user:{user}");
    publish(c, &json!({"name": "notify", "data": data}), &[&topic])[0]
}

/// Broadcasts markers until `client` receives one: the server subscribes to Redis as it
/// starts (or comes back), and a message published before that reaches no one.
pub async fn synced(c: &mut Connection, client: &mut Client) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let marker = rand_id();
        notify_all(c, json!({"sync": marker}));
        let end = tokio::time::Instant::now() + Duration::from_millis(200);
        while let Ok(v) = tokio::time::timeout_at(end, client.next()).await {
            if v["sync"] == marker.as_str() {
                return;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the server receives"
        );
    }
}

/// Reads until a message whose `data.n` is `n` (positions on: `data.data.n`), returning it.
async fn until_n(client: &mut Client, n: u64) -> Value {
    loop {
        let v = client.next().await;
        let got = v["n"].as_u64().or(v["data"]["n"].as_u64());
        if got == Some(n) {
            return v;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcasts_and_a_users_messages_go_through_redis_to_the_servers_holding_them() {
    let redis = Redis::start();
    let (a, b) = (redis_server(&redis, &[]), redis_server(&redis, &[]));
    let mut c = redis.connect().unwrap();
    let mut on_a = Client::connect(&a).await;
    let mut on_b = Client::connect(&b).await;
    synced(&mut c, &mut on_a).await;
    synced(&mut c, &mut on_b).await;
    let reply = on_b.subscribe(&token("u7")).await;
    assert_eq!(reply["data"]["user"], "u7", "{reply}");
    // The subscription reached Redis once Redis counts a subscriber of the user's channel.
    let deadline = std::time::Instant::now() + WAIT;
    while redis
        .call(&["PUBSUB", "NUMSUB", "pushnote:user:u7"])
        .items()
        .unwrap()[1]
        .int()
        != Some(1)
    {
        assert!(std::time::Instant::now() < deadline, "b subscribes u7");
        std::thread::sleep(Duration::from_millis(10));
    }
    notify(&mut c, "u7", json!({"n": 1}));
    notify_all(&mut c, json!({"n": 2}));
    assert_eq!(until_n(&mut on_b, 1).await, json!({"n": 1}));
    assert_eq!(until_n(&mut on_b, 2).await, json!({"n": 2}));
    assert_eq!(until_n(&mut on_a, 2).await, json!({"n": 2}));
    // Only b holds u7: a never subscribed its channel.
    assert_eq!(a.metric("pushnote_bus_user_messages_total").await, 0);
    assert_eq!(a.metric("pushnote_bus_connected").await, 1);
    assert_eq!(a.metric("pushnote_broker_errors_total").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_with_positions_recovers_from_another_server_of_the_same_redis() {
    let redis = Redis::start();
    let (a, b) = (redis_server(&redis, &[]), redis_server(&redis, &[]));
    let mut c = redis.connect().unwrap();
    let mut page = Client::connect(&a).await;
    synced(&mut c, &mut page).await;
    let (reply, _) = positions(&mut page, None).await;
    let at = notify_all(&mut c, json!({"n": 1}));
    let got = until_n(&mut page, 1).await;
    assert_eq!(got["position"]["epoch"], at.epoch, "{got} {reply}");
    assert_eq!(got["position"]["offset"], at.offset, "{got}");
    drop(page);
    // Away: two more, then back on the other server with the last position seen.
    for n in 2..=3 {
        notify_all(&mut c, json!({"n": n}));
    }
    let mut back = Client::connect(&b).await;
    let (reply, given) = positions(&mut back, Some(&got["position"])).await;
    let seen: Vec<_> = given
        .iter()
        .map(|v| {
            (
                v["data"]["n"].as_u64().unwrap(),
                v["position"]["offset"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(reply["data"]["recovered"], true, "{reply}");
    let o = u64::from(at.offset);
    assert_eq!(seen, [(2, o + 1), (3, o + 2)], "{reply}");
    notify_all(&mut c, json!({"n": 4}));
    let v = until_n(&mut back, 4).await;
    assert_eq!(v["position"]["offset"], o + 3, "once and in order: {v}");
    assert!(b.metric("pushnote_recoveries_total").await >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_redis_is_down_the_server_says_so_keeps_its_sessions_and_comes_back_by_itself() {
    let mut redis = Redis::with(true);
    let srv = redis_server(&redis, &[]);
    let mut c = redis.connect().unwrap();
    let mut page = Client::connect(&srv).await;
    synced(&mut c, &mut page).await;
    let (status, _) = http_get(&format!("{}/health", srv.origin)).await;
    assert_eq!(status, 200);
    redis.kill();
    srv.wait_metric_at_most("pushnote_bus_connected", 0).await;
    let (status, body) = http_get(&format!("{}/health", srv.origin)).await;
    assert_eq!(status, 503, "{body}");
    redis.restart();
    srv.wait_metric("pushnote_bus_connected", 1).await;
    // The same session receives again, through the server's new connection.
    let mut c = redis.connect().unwrap();
    synced(&mut c, &mut page).await;
    assert!(srv.metric("pushnote_broker_errors_total").await >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_broker_url_stops_the_server_with_a_clear_error_and_no_password() {
    for (url, expected) in [
        ("redis://:hunter2@127.0.0.1:0", "--broker"),
        ("tcp://127.0.0.1:6379", "--broker"),
    ] {
        let out = server_cmd(&["--port", "0", "--broker", url])
            .output()
            .expect("run server");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{url}");
        assert!(err.contains(expected), "{url}: {err}");
        assert!(!err.contains("hunter2"), "{err}");
    }
    let out = server_cmd(&["--port", "0", "--broker", "redis://127.0.0.1", "--single"])
        .output()
        .expect("run server");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--single"));
}

/// Reads until the reply named `name`, skipping messages.
async fn reply_named(client: &mut Client, name: &str) -> Value {
    loop {
        let v = client.next().await;
        if v["name"] == name {
            return v;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_of_the_wrong_type_and_oversized_messages_get_clear_errors_and_hurt_no_other_topic() {
    let redis = Redis::start();
    let srv = redis_server(&redis, &["--max-bus-message-bytes", "2000"]);
    let mut c = redis.connect().unwrap();
    let mut page = Client::connect(&srv).await;
    synced(&mut c, &mut page).await;
    // Another app wrote a string where a topic's position is kept.
    redis.call(&["SET", "pushnote:meta:chan:bad", "not a hash"]);
    let args = redis_script::publish_args(
        &Keys::new(redis_script::DEFAULT_PREFIX),
        br#"{"name":"publish","event":"e","data":1}"#,
        &[b"chan:bad"],
    );
    let reply = c.script(&args).unwrap();
    assert!(
        matches!(&reply, pushnote::resp::Value::Error(e) if e.contains("WRONGTYPE")),
        "{reply:?}"
    );
    // A page asking that channel's position is told it is unavailable, and carries on.
    positions(&mut page, None).await;
    page.emit(json!({"name": "subscribe", "data": {"channel": "bad", "replies": true}}))
        .await;
    let reply = reply_named(&mut page, "pushnote:subscribed").await;
    assert_eq!(reply["data"]["reason"], "unavailable", "{reply}");
    assert!(srv.metric("pushnote_broker_errors_total").await >= 1);
    // Over what the servers take (2000 bytes): refused by the script, nothing published.
    let big = json!({"name": "notify_all", "data": "x".repeat(3000)}).to_string();
    let args = redis_script::publish_args(
        &Keys::new(redis_script::DEFAULT_PREFIX),
        big.as_bytes(),
        &[b"all"],
    );
    let reply = c.script(&args).unwrap();
    assert!(
        matches!(&reply, pushnote::resp::Value::Error(e) if e.contains("too_large")),
        "{reply:?}"
    );
    // Every other topic goes on, on the same connection to Redis.
    let at = notify_all(&mut c, json!({"n": 1}));
    let v = until_n(&mut page, 1).await;
    assert_eq!(v["position"]["offset"], at.offset, "{v}");
    assert_eq!(srv.metric("pushnote_bus_connected").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_answers_garbage_is_counted_and_the_server_serves_on() {
    use std::io::Write;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = accepted.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().take(50) {
            let Ok(mut conn) = conn else { break };
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let _ = conn.write_all(b"?garbage that is no reply\r\n");
        }
    });
    let srv = broker_server(&format!("redis://127.0.0.1:{port}"), &[]);
    srv.wait_metric("pushnote_broker_errors_total", 2).await;
    let (status, _) = http_get(&format!("{}/health", srv.origin)).await;
    assert_eq!(status, 503);
    assert_eq!(srv.metric("pushnote_bus_connected").await, 0);
    // Sessions open all the same, and the server tries again with a back-off, not in a loop.
    let _page = Client::connect(&srv).await;
    let tries = accepted.load(std::sync::atomic::Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let more = accepted.load(std::sync::atomic::Ordering::Relaxed) - tries;
    assert!(more <= 3, "{more} connections in a second");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_slow_for_seconds_delays_messages_and_loses_none() {
    let redis = Redis::start();
    let srv = redis_server(&redis, &[]);
    let mut c = redis.connect().unwrap();
    let mut page = Client::connect(&srv).await;
    synced(&mut c, &mut page).await;
    positions(&mut page, None).await;
    // Redis stalls for 2 s while a page asks for positions and an app publishes.
    let sleeper = {
        let mut s = redis.connect().unwrap();
        std::thread::spawn(move || s.call(&[b"DEBUG", b"SLEEP", b"2"]))
    };
    std::thread::sleep(Duration::from_millis(200));
    let mut other = Client::connect(&srv).await;
    other.emit(json!({"name": "positions", "data": {}})).await;
    let publisher = std::thread::spawn(move || notify_all(&mut c, json!({"n": 1})));
    let reply = reply_named(&mut other, "pushnote:positions").await;
    // Given after the stall, or given up on (3 s) and said: either is an answer.
    assert!(
        reply["data"]["position"].is_object() || reply["data"]["reason"].is_string(),
        "{reply}"
    );
    sleeper.join().unwrap().unwrap();
    let at = publisher.join().unwrap();
    let v = until_n(&mut page, 1).await;
    assert_eq!(v["position"]["offset"], at.offset, "{v}");
    assert_eq!(srv.metric("pushnote_bus_connected").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_stops_answering_is_taken_for_lost_and_found_again() {
    let redis = Redis::start();
    let srv = redis_server(&redis, &[]);
    let mut page = Client::connect(&srv).await;
    synced(&mut redis.connect().unwrap(), &mut page).await;
    // Stopped, not killed: its connections stay open and nothing answers on them.
    redis.signal("STOP");
    srv.wait_metric_at_most("pushnote_bus_connected", 0).await;
    let (status, _) = http_get(&format!("{}/health", srv.origin)).await;
    assert_eq!(status, 503);
    redis.signal("CONT");
    srv.wait_metric("pushnote_bus_connected", 1).await;
    synced(&mut redis.connect().unwrap(), &mut page).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_a_redis_restart_with_an_append_only_file_a_page_misses_nothing() {
    let mut redis = Redis::with(true);
    let srv = redis_server(&redis, &[]);
    let mut c = redis.connect().unwrap();
    let mut page = Client::connect(&srv).await;
    synced(&mut c, &mut page).await;
    positions(&mut page, None).await;
    let first = notify_all(&mut c, json!({"n": 1}));
    until_n(&mut page, 1).await;
    redis.restart();
    // Published at once, before the server has its connection back: the server asks Redis
    // what each topic received meanwhile, so the page gets them in order, once.
    let mut c = redis.connect().unwrap();
    let mut at = Vec::new();
    for n in 2..=4 {
        at.push(notify_all(&mut c, json!({"n": n})));
    }
    assert_eq!(at[0].epoch, first.epoch, "the epoch survived");
    for (n, position) in (2..=4).zip(&at) {
        let v = until_n(&mut page, n).await;
        assert_eq!(v["position"]["offset"], position.offset, "{v}");
    }
    // The server's connection closed under it (it connects again after 100 ms at the
    // earliest): what is published at once is filled the same way.
    srv.wait_metric("pushnote_bus_connected", 1).await;
    redis.call(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    let mut at = Vec::new();
    for n in 5..=7 {
        at.push(notify_all(&mut c, json!({"n": n})));
    }
    for (n, position) in (5..=7).zip(&at) {
        let v = until_n(&mut page, n).await;
        assert_eq!(v["position"]["offset"], position.offset, "{v}");
    }
    assert_eq!(srv.metric("pushnote_bus_messages_lost_total").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_publish_on_any_server_of_a_redis_answers_with_the_positions_pages_see() {
    let redis = Redis::start();
    let a = redis_server(
        &redis,
        &["--api-key", API_KEY, "--max-bus-message-bytes", "4096"],
    );
    let b = redis_server(&redis, &[]);
    let mut page = Client::connect(&b).await;
    synced(&mut redis.connect().unwrap(), &mut page).await;
    let auth = format!("Bearer {API_KEY}");
    let headers = [
        ("Content-Type", "application/json"),
        ("Authorization", &auth),
    ];
    let body = json!([{"to": "all", "data": {"n": 1}}, {"to": "all", "data": {"n": 2}}]);
    let reply = http(
        "POST",
        &format!("{}/publish", a.origin),
        &headers,
        &body.to_string(),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let v: Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(v["published"], 2, "{v}");
    let first = &v["positions"][0][0];
    assert_eq!(
        v["positions"][1][0]["offset"],
        first["offset"].as_u64().unwrap() + 1,
        "{v}"
    );
    // The page on the other server gets both.
    until_n(&mut page, 1).await;
    until_n(&mut page, 2).await;
    // Over what the server takes: refused, 413, nothing published.
    let big = json!([{"to": "all", "data": "x".repeat(5000)}]).to_string();
    let reply = http("POST", &format!("{}/publish", a.origin), &headers, &big).await;
    assert_eq!(reply.status, 413, "{}", reply.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restarted_without_persistence_tells_a_returning_page_epoch() {
    let mut redis = Redis::start();
    let srv = redis_server(&redis, &[]);
    let mut c = redis.connect().unwrap();
    let mut page = Client::connect(&srv).await;
    synced(&mut c, &mut page).await;
    positions(&mut page, None).await;
    notify_all(&mut c, json!({"n": 1}));
    let seen = until_n(&mut page, 1).await["position"].clone();
    drop(page);
    redis.restart();
    srv.wait_metric("pushnote_bus_connected", 1).await;
    let mut c = redis.connect().unwrap();
    let at = notify_all(&mut c, json!({"n": 2}));
    assert_eq!(at.offset, 1, "Redis came back empty: a new epoch");
    let mut back = Client::connect(&srv).await;
    let (reply, given) = positions(&mut back, Some(&seen)).await;
    let given: Vec<_> = given.iter().map(|v| v["data"]["n"].clone()).collect();
    assert_eq!(reply["data"]["recovered"], false, "{reply}");
    assert_eq!(reply["data"]["reason"], "epoch", "{reply}");
    // What the new epoch holds from its first is given, once.
    assert_eq!(given, [json!(2)], "{reply}");
}
