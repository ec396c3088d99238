//! Publishing over HTTP: `POST /publish` on the forwarder (`--http`) and on a `--single`
//! server, for apps that cannot link ZeroMQ, with real pages receiving what is published.

use std::process::Command;

use serde_json::{json, Value};

use crate::support::*;

const KEY: &str = "e2e-api-key-0123456789-Vq7Lm2Xc9Rb4";

/// A forwarder with `--http` on a free port, where its `/publish` is, and its `/metrics` if
/// `extra` asks for them.
fn forwarder_with_http(extra: &[&str]) -> (Forwarder, String, Option<String>) {
    let mut args = vec![
        "--sub",
        "tcp://127.0.0.1:*",
        "--pub",
        "tcp://127.0.0.1:*",
        "--http",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(extra);
    let mut cmd = Command::new(bin("pushnote-mq"));
    cmd.env("PUSHNOTE_MQ_API_KEY", KEY).args(&args);
    let proc = Proc::spawn(&mut cmd);
    let line = proc.value_after("apps publish to");
    let (sub, publish) = line.split_once(", servers subscribe at ").unwrap();
    let metrics = extra
        .contains(&"--metrics")
        .then(|| proc.value_after("/metrics at"));
    let url = proc.value_after("/publish at");
    let fwd = Forwarder {
        sub: sub.to_owned(),
        publish: publish.to_owned(),
        proc,
    };
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
            Some(KEY),
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

    let r = post(&url, Some(KEY), r#"{"to":"all","data":{"msg":"Hi all!"}}"#).await;
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
    let r = post(&url, Some(KEY), batch).await;
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
    let r = post(&url, Some(KEY), "{not json").await;
    assert_eq!(r.status, 400, "{}", r.body);
    // One bad item in a batch: none of it is published, and the answer names it.
    let r = post(
        &url,
        Some(KEY),
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
    let r = post(&url, Some(KEY), &big).await;
    assert_eq!(r.status, 413, "{}", r.body);
    assert_eq!(http("GET", &url, &[], "").await.status, 405);
    let other = url.replace("/publish", "/other");
    assert_eq!(post(&other, Some(KEY), one).await.status, 404);
    // Nothing of it reached the page: the next message is the one published now.
    let r = post(&url, Some(KEY), r#"{"to":"all","data":"after"}"#).await;
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
    let srv = single_server(&["--api-key", KEY]);
    let bus = publisher(srv.bus.as_deref().unwrap());
    let mut client = Client::connect(&srv).await;
    sync(&bus, &mut client, None).await;
    let url = format!("{}/publish", srv.origin);
    let r = post(
        &url,
        Some(KEY),
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
        Some(KEY),
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
    let (ok, err) = run("pushnote-server", &["--port", "0", "--api-key", KEY]);
    assert!(!ok && err.contains("--single"), "{err}");
}
