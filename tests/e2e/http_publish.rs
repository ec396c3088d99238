//! Publishing over HTTP: `POST /publish` on the forwarder (`--http`) and on a `--single`
//! server, for apps that cannot link ZeroMQ, with real pages receiving what is published.

use std::process::Command;

use serde_json::{json, Value};

use crate::support::*;

/// A forwarder with `--http` on a free port, where its `/publish` is, and its `/metrics` if
/// `extra` asks for them.
fn forwarder_with_http(extra: &[&str]) -> (Forwarder, String, Option<String>) {
    let fwd = forwarder_with_key(extra);
    let metrics = extra
        .contains(&"--metrics")
        .then(|| fwd.proc.value_after("/metrics at"));
    let url = fwd.proc.value_after("/publish at");
    (fwd, url, metrics)
}

async fn post(url: &str, key: Option<&str>, body: &str) -> Reply {
    let auth = key.map(|k| format!("Bearer {k}"));
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(auth) = &auth {
        headers.push(("Authorization", auth));
    }
    http("POST", url, &headers, body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_forwarder_publishes_what_apps_post_to_everyone_users_and_channels() {
    let (fwd, url, _) = forwarder_with_http(&[]);
    let srv = server(&fwd, &[]);
    let bus = publisher(&fwd.sub);
    let mut client = Client::connect(&srv).await;
    sync(&bus, &mut client, None).await;
    client.subscribe(&token("u1")).await;
    sync(&bus, &mut client, Some("u1")).await;
    client
        .emit(json!({"name": "subscribe", "data": {"channel": "news"}}))
        .await;
    assert_eq!(client.next_unmarked().await["name"], "pushnote:subscribed");
    // The channel's bus subscription travels in the background: publish until one arrives.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let r = post(
            &url,
            Some(API_KEY),
            r#"{"to":"channel","channel":"news","event":"sync","data":{"sync":1}}"#,
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.body);
        let got = tokio::time::timeout(std::time::Duration::from_millis(200), client.next()).await;
        if let Ok(v) = got {
            if v["event"] == "sync" {
                break;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the channel's subscription arrives"
        );
    }
    while tokio::time::timeout(std::time::Duration::from_millis(300), client.next())
        .await
        .is_ok()
    {}

    let r = post(
        &url,
        Some(API_KEY),
        r#"{"to":"all","data":{"msg":"Hi all!"}}"#,
    )
    .await;
    assert_eq!((r.status, r.body.as_str()), (200, r#"{"published":1}"#));
    assert!(
        r.headers.contains("content-type: application/json"),
        "{}",
        r.headers
    );
    assert_eq!(client.next_unmarked().await, json!({"msg": "Hi all!"}));
    let batch = r#"[
        {"to": "users", "users": ["u1", "u2"], "data": 1},
        {"to": "channel", "channel": "news", "event": "create", "data": {"id": 2}},
        {"to": "all", "data": 3}
    ]"#;
    let r = post(&url, Some(API_KEY), batch).await;
    assert_eq!((r.status, r.body.as_str()), (200, r#"{"published":3}"#));
    assert_eq!(client.next_unmarked().await, json!(1));
    assert_eq!(
        client.next_unmarked().await,
        json!({"channel": "news", "event": "create", "data": {"id": 2}})
    );
    assert_eq!(client.next_unmarked().await, json!(3));
    drop(srv);
    drop(fwd);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_their_status_and_publish_nothing() {
    let (fwd, url, metrics) =
        forwarder_with_http(&["--max-message-bytes", "2000", "--metrics", "127.0.0.1:0"]);
    let metrics = metrics.unwrap();
    let srv = server(&fwd, &[]);
    let bus = publisher(&fwd.sub);
    let mut client = Client::connect(&srv).await;
    sync(&bus, &mut client, None).await;
    let one = r#"{"to":"all","data":"nope"}"#;
    for key in [
        None,
        Some("e2e-api-key-0123456789-Vq7Lm2Xc9Rb"),
        Some("wrong"),
    ] {
        let r = post(&url, key, one).await;
        assert_eq!(r.status, 401, "{key:?}: {}", r.body);
        assert!(
            r.headers.contains("www-authenticate: bearer"),
            "{}",
            r.headers
        );
    }
    let r = post(&url, Some(API_KEY), "{not json").await;
    assert_eq!(r.status, 400, "{}", r.body);
    // One bad item in a batch: none of it is published, and the answer names it.
    let r = post(
        &url,
        Some(API_KEY),
        r#"[{"to":"all","data":"nope"},{"to":"channel","channel":"no spaces","event":"e","data":1}]"#,
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.body);
    let answer: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(answer["index"], 1, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("channel"),
        "{answer}"
    );
    let big = format!(r#"{{"to":"all","data":"{}"}}"#, "x".repeat(3000));
    let r = post(&url, Some(API_KEY), &big).await;
    assert_eq!(r.status, 413, "{}", r.body);
    assert_eq!(http("GET", &url, &[], "").await.status, 405);
    let other = url.replace("/publish", "/other");
    assert_eq!(post(&other, Some(API_KEY), one).await.status, 404);
    // Nothing of it reached the page: the next message is the one published now.
    let r = post(&url, Some(API_KEY), r#"{"to":"all","data":"after"}"#).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(client.next_unmarked().await, json!("after"));
    let (_, text) = http_get(&metrics).await;
    assert!(text.contains("pushnote_mq_http_refused_total 6"), "{text}");
    assert!(
        text.contains("pushnote_mq_http_published_total 1"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_server_publishes_what_apps_post_to_it() {
    let srv = single_server(&["--api-key", API_KEY]);
    let bus = publisher(srv.bus.as_deref().unwrap());
    let mut client = Client::connect(&srv).await;
    sync(&bus, &mut client, None).await;
    let url = format!("{}/publish", srv.origin);
    let r = post(
        &url,
        Some(API_KEY),
        r#"[{"to":"all","data":1},{"to":"all","data":2}]"#,
    )
    .await;
    assert_eq!((r.status, r.body.as_str()), (200, r#"{"published":2}"#));
    assert_eq!(client.next_unmarked().await, json!(1));
    assert_eq!(client.next_unmarked().await, json!(2));
    assert_eq!(
        post(&url, None, r#"{"to":"all","data":1}"#).await.status,
        401
    );
    // Without a key the server publishes nothing over HTTP.
    let plain = single_server(&[]);
    let r = post(
        &format!("{}/publish", plain.origin),
        Some(API_KEY),
        r#"{"to":"all","data":1}"#,
    )
    .await;
    assert_eq!(r.status, 404);
}

#[test]
fn http_publishing_needs_a_real_key_and_a_server_needs_single_mode_for_it() {
    let run = |bin_name: &str, args: &[&str]| {
        let out = Command::new(bin(bin_name))
            .env_remove("PUSHNOTE_API_KEY")
            .env_remove("PUSHNOTE_MQ_API_KEY")
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, err) = run("pushnote-mq", &["--http", "127.0.0.1:0"]);
    assert!(!ok && err.contains("--api-key"), "{err}");
    let (ok, err) = run(
        "pushnote-mq",
        &["--http", "127.0.0.1:0", "--api-key", "short"],
    );
    assert!(!ok && err.contains("at least 32"), "{err}");
    let (ok, err) = run("pushnote-server", &["--port", "0", "--api-key", API_KEY]);
    assert!(!ok && err.contains("--single"), "{err}");
}

/// Data as an app may write it, which a JSON parser would change: numbers beyond a float's
/// precision or written otherwise, keys out of order, escapes, whitespace.
const EXACT: &str = r#"{"b":1e2,"a":1.50,"c":123456789012345678901234567890,"d":"\u00e9\n ", "e" : [ -0.0,1E-7 ],"f":{}}"#;
/// `EXACT` as pages receive it: the same text, without the whitespace between its tokens
/// (which every server leaves out of what it sends).
const ON_PAGE: &str = r#"{"b":1e2,"a":1.50,"c":123456789012345678901234567890,"d":"\u00e9\n ","e":[-0.0,1E-7],"f":{}}"#;

/// A page subscribed as `u1` and joined to channel `news`, whose messages have all arrived:
/// what is published next is the next thing it receives.
async fn page_on_everything(url: &str, srv: &Server, bus: &pushnote::Publisher) -> Client {
    let mut client = Client::connect(srv).await;
    sync(bus, &mut client, None).await;
    client.subscribe(&token("u1")).await;
    sync(bus, &mut client, Some("u1")).await;
    client
        .emit(json!({"name": "subscribe", "data": {"channel": "news"}}))
        .await;
    assert_eq!(client.next_unmarked().await["name"], "pushnote:subscribed");
    // The channel's bus subscription travels in the background: publish until one arrives.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let r = post(
            url,
            Some(API_KEY),
            r#"{"to":"channel","channel":"news","event":"sync","data":{"sync":1}}"#,
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.body);
        let got = tokio::time::timeout(std::time::Duration::from_millis(200), client.next()).await;
        if matches!(got, Ok(v) if v["event"] == "sync") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the channel's subscription arrives"
        );
    }
    while tokio::time::timeout(std::time::Duration::from_millis(300), client.next())
        .await
        .is_ok()
    {}
    client
}

/// Posts `body` (answered 200) and returns the text of the one message the page receives.
async fn posted_and_received(url: &str, client: &mut Client, body: &str) -> String {
    let r = post(url, Some(API_KEY), body).await;
    assert_eq!((r.status, r.body.as_str()), (200, r#"{"published":1}"#));
    let texts = client.next_texts().await;
    assert_eq!(texts.len(), 1, "{texts:?}");
    texts.into_iter().next().unwrap_or_default()
}

/// What pages receive for `EXACT` published to everyone, to `u1` and on `news`, with the
/// request's own whitespace around it: the data's text, value for value and byte for byte
/// but for whitespace between tokens.
async fn data_arrives_as_written(url: &str, client: &mut Client) {
    for body in [
        format!(r#"{{"to": "all", "data": {EXACT}}}"#),
        format!(r#" [ {{ "data" :{EXACT} , "to":"users","users":["u1"]}} ] "#),
    ] {
        assert_eq!(
            posted_and_received(url, client, &body).await,
            ON_PAGE,
            "{body}"
        );
    }
    let body = format!(r#"{{"to":"channel","channel":"news","event":"e","data":{EXACT}}}"#);
    assert_eq!(
        posted_and_received(url, client, &body).await,
        format!(r#"{{"channel":"news","event":"e","data":{ON_PAGE}}}"#)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_reaches_the_page_byte_for_byte_through_the_forwarder() {
    let (fwd, url, _) = forwarder_with_http(&[]);
    let srv = server(&fwd, &[]);
    let bus = publisher(&fwd.sub);
    let mut client = page_on_everything(&url, &srv, &bus).await;
    data_arrives_as_written(&url, &mut client).await;
    // The same text published over ZeroMQ arrives the same.
    let raw: Box<serde_json::value::RawValue> = serde_json::from_str(EXACT).unwrap();
    bus.notify_all(&raw).unwrap();
    assert_eq!(client.next_texts().await, [ON_PAGE]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_reaches_the_page_byte_for_byte_through_a_single_server() {
    let srv = single_server(&["--api-key", API_KEY, "--secret", SECRET]);
    let bus = publisher(srv.bus.as_deref().unwrap());
    let url = format!("{}/publish", srv.origin);
    let mut client = page_on_everything(&url, &srv, &bus).await;
    data_arrives_as_written(&url, &mut client).await;
}

/// `answer` is a refusal with `status` naming message `index`, whose error mentions `says`.
fn refused(answer: &Reply, status: u16, index: u64, says: &str) {
    assert_eq!(answer.status, status, "{}", answer.body);
    let v: Value = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(v["index"], index, "{v}");
    assert!(v["error"].as_str().unwrap().contains(says), "{v}");
}

/// A bus message over the bus's limit made from a body under the request's limit is refused
/// (413, with its index), and nothing of the request reaches the page.
async fn what_the_bus_would_drop_is_refused(url: &str, client: &mut Client, limit: usize) {
    // {"to":"all","data":"…"} just under the limit: its bus message (topic, stamp room,
    // {"name":"notify_all","data":…}) is larger.
    let under = |room: usize| format!(r#"{{"to":"all","data":"{}"}}"#, "x".repeat(room - 22));
    let body = under(limit - 1);
    assert_eq!(body.len(), limit - 1);
    refused(&post(url, Some(API_KEY), &body).await, 413, 0, "bytes");
    let batch = format!("[{}]", under(limit - 3));
    assert_eq!(batch.len(), limit - 1);
    refused(&post(url, Some(API_KEY), &batch).await, 413, 0, "bytes");
    let r = post(url, Some(API_KEY), r#"{"to":"all","data":"after"}"#).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(client.next_texts().await, [r#""after""#]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_forwarder_refuses_what_its_bus_would_drop_naming_the_message() {
    let (fwd, url, metrics) =
        forwarder_with_http(&["--max-message-bytes", "2000", "--metrics", "127.0.0.1:0"]);
    let srv = server(&fwd, &[]);
    let bus = publisher(&fwd.sub);
    let mut client = Client::connect(&srv).await;
    sync(&bus, &mut client, None).await;
    what_the_bus_would_drop_is_refused(&url, &mut client, 2000).await;
    let metrics = metrics.unwrap();
    assert_eq!(
        metric_at(&metrics, "pushnote_mq_http_refused_total").await,
        2
    );
    assert_eq!(
        metric_at(
            &metrics,
            "pushnote_mq_messages_dropped_total{reason=\"too_large\"}"
        )
        .await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_server_refuses_what_its_bus_would_drop_naming_the_message() {
    let srv = single_server(&["--api-key", API_KEY, "--max-bus-message-bytes", "2000"]);
    let bus = publisher(srv.bus.as_deref().unwrap());
    let mut client = Client::connect(&srv).await;
    sync(&bus, &mut client, None).await;
    let url = format!("{}/publish", srv.origin);
    what_the_bus_would_drop_is_refused(&url, &mut client, 2000).await;
    assert_eq!(srv.metric("pushnote_bus_messages_rejected_total").await, 0);
    assert_eq!(srv.metric("pushnote_http_refused_total").await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_message_refused_is_named_as_message_0() {
    let (_fwd, url, _) = forwarder_with_http(&[]);
    let srv = single_server(&["--api-key", API_KEY]);
    for url in [url, format!("{}/publish", srv.origin)] {
        for (body, says) in [
            (r#"{"to":"everyone","data":1}"#, "\"to\""),
            (
                r#"{"to":"channel","channel":"a b","event":"e","data":1}"#,
                "channel",
            ),
            (r#"[{"to":"users","users":[""],"data":1}]"#, "user id"),
        ] {
            refused(&post(&url, Some(API_KEY), body).await, 400, 0, says);
        }
        // A body that is no message at all names none.
        let r = post(&url, Some(API_KEY), "{").await;
        assert_eq!(r.status, 400, "{}", r.body);
        assert!(!r.body.contains("index"), "{}", r.body);
    }
}

/// `"users"` with `n` ids, `u0` to `u{n-1}`.
fn to_users(n: usize) -> String {
    let ids: Vec<String> = (0..n).map(|i| format!("\"u{i}\"")).collect();
    format!(
        r#"{{"to":"users","users":[{}],"data":"many"}}"#,
        ids.join(",")
    )
}

/// Waits until the forwarder has received `expected` messages from apps; how many it has.
async fn received_reaches(metrics: &str, expected: u64) -> u64 {
    let name = "pushnote_mq_messages_received_total";
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let v = metric_at(metrics, name).await;
        if v >= expected || tokio::time::Instant::now() >= deadline {
            return v;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_for_more_users_than_the_bus_takes_at_once_is_all_or_nothing() {
    let (fwd, url, metrics) = forwarder_with_http(&["--metrics", "127.0.0.1:0"]);
    let metrics = metrics.unwrap();
    let srv = server(&fwd, &[]);
    let bus = publisher(&fwd.sub);
    let mut client = Client::connect(&srv).await;
    sync(&bus, &mut client, None).await;
    let before = metric_at(&metrics, "pushnote_mq_messages_received_total").await;
    // 110,000 users, under the 1 MiB a request may be: more than the publisher's socket
    // holds at once. Either all of them reach the bus, or the request is refused whole.
    let body = to_users(110_000);
    assert!(body.len() < 1024 * 1024);
    let r = post(&url, Some(API_KEY), &body).await;
    let first = match r.status {
        200 => {
            assert_eq!(
                received_reaches(&metrics, before + 110_000).await,
                before + 110_000,
                "answered {} and some were dropped",
                r.body
            );
            110_000
        }
        _ => {
            refused(&r, 413, 0, "10000 bus messages");
            assert_eq!(
                metric_at(&metrics, "pushnote_mq_http_refused_total").await,
                1
            );
            0
        }
    };
    // So is a batch whose lists add up to more than a request may make; just up to it passes.
    let r = post(
        &url,
        Some(API_KEY),
        &format!("[{},{}]", to_users(9_999), to_users(2)),
    )
    .await;
    refused(&r, 413, 1, "10000 bus messages");
    let r = post(
        &url,
        Some(API_KEY),
        &format!("[{},{}]", to_users(9_999), to_users(1)),
    )
    .await;
    assert_eq!((r.status, r.body.as_str()), (200, r#"{"published":2}"#));
    let expected = before + first + 10_000;
    assert_eq!(received_reaches(&metrics, expected).await, expected);
    assert_eq!(client.take_pending(), Vec::<Value>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_server_refuses_a_request_for_too_many_users_and_counts_it() {
    let srv = single_server(&["--api-key", API_KEY]);
    let url = format!("{}/publish", srv.origin);
    refused(
        &post(&url, Some(API_KEY), &to_users(10_001)).await,
        413,
        0,
        "10000",
    );
    let r = post(&url, Some(API_KEY), &to_users(10_000)).await;
    assert_eq!((r.status, r.body.as_str()), (200, r#"{"published":1}"#));
    assert_eq!(srv.metric("pushnote_http_refused_total").await, 1);
    assert_eq!(srv.metric("pushnote_http_published_total").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_crate_notifies_every_user_named_or_none() {
    let (fwd, _, metrics) = forwarder_with_http(&["--metrics", "127.0.0.1:0"]);
    let metrics = metrics.unwrap();
    let small = pushnote::Publisher::builder(&fwd.sub)
        .send_high_water_mark(1_000)
        .connect()
        .unwrap();
    // The first send waits for the forwarder's subscription.
    small.notify_all(&"ready").unwrap();
    let before = received_reaches(&metrics, 1).await;
    let users: Vec<String> = (0..50_000).map(|i| format!("u{i}")).collect();
    match small.notify(&"many", &users) {
        Ok(()) => assert_eq!(
            received_reaches(&metrics, before + 50_000).await,
            before + 50_000,
            "notify said every user and some were dropped"
        ),
        Err(e) => {
            assert!(e.to_string().contains("50000 users"), "{e}");
            small.notify_all(&"after").unwrap();
            assert_eq!(received_reaches(&metrics, before + 1).await, before + 1);
        }
    }
    // A call well within what the socket holds goes through whole.
    let before = received_reaches(&metrics, 0).await;
    small.notify(&"some", &users[..100]).unwrap();
    assert_eq!(received_reaches(&metrics, before + 100).await, before + 100);
}
