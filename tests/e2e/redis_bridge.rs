//! `pushnote-mq --broker redis://…`: what apps publish over ZeroMQ, on the app socket and the
//! confirm socket, published into Redis through the script (PROTOCOL §2c), so that apps
//! written for a forwarder keep working with servers on the Redis engine.

use std::time::{Duration, Instant};

use pushnote::{Position, PublishError, Publisher};
use serde_json::json;

use crate::redis_proc::{message, subscriber, Redis};
use crate::support::{forwarder_with, free_port, metric_at, wait_metric_at, WAIT};

#[tokio::test]
async fn apps_publishing_over_zeromq_publish_into_redis_through_the_bridge() {
    let mut redis = Redis::start();
    let mut sub = subscriber(&redis, &["app:all", "app:user:42", "app:chan:news"]);
    let metrics = format!("127.0.0.1:{}", free_port());
    let fwd = forwarder_with(&[
        "--sub",
        "tcp://127.0.0.1:*",
        "--pub",
        "tcp://127.0.0.1:*",
        "--confirm",
        "tcp://127.0.0.1:*",
        "--broker",
        &redis.url(),
        "--broker-prefix",
        "app:",
        "--metrics",
        &metrics,
    ]);
    let confirm = fwd.proc.value_after("confirmed publishes at");
    let url = format!("http://{metrics}/metrics");

    // Published over ZeroMQ: Redis gives it a position and hands it to its subscribers.
    let app = Publisher::connect(&fwd.sub).unwrap();
    app.notify_all(&json!({"n": 1})).unwrap();
    let (channel, first, body) = message(&mut sub);
    assert_eq!(channel, "app:all");
    assert_eq!(first.offset, 1);
    assert_eq!(body, r#"{"name":"notify_all","data":{"n":1}}"#);
    app.publish("news", "up", &json!(2)).unwrap();
    assert_eq!(message(&mut sub).0, "app:chan:news");

    // Confirmed over ZeroMQ: the app is told Redis' positions.
    let confirmed = Publisher::builder(&fwd.sub)
        .confirm(&confirm)
        .confirm_timeout(Duration::from_secs(2))
        .connect()
        .unwrap();
    let at = confirmed.notify_all_confirmed(&json!({"n": 3})).unwrap();
    assert_eq!(
        at,
        Position {
            epoch: first.epoch,
            offset: 2
        }
    );
    assert_eq!(message(&mut sub).1, at);
    let users = confirmed.notify_confirmed(&json!(4), ["42", "43"]).unwrap();
    assert_eq!(users.len(), 2);
    assert_eq!(
        message(&mut sub),
        (
            "app:user:42".into(),
            users[0],
            r#"{"name":"notify","data":4}"#.into()
        )
    );
    wait_metric_at(&url, "pushnote_mq_broker_published_total", 5).await;
    wait_metric_at(&url, "pushnote_mq_confirmed_messages_total", 3).await;

    // Redis gone: nothing confirmed (the app's confirmation times out), counted.
    redis.kill();
    match confirmed.notify_all_confirmed(&json!(5)) {
        Err(PublishError::Unconfirmed { .. }) => {}
        other => panic!("expected Unconfirmed, got {other:?}"),
    }
    wait_metric_at(
        &url,
        "pushnote_mq_broker_unpublished_total{reason=\"not_connected\"}",
        1,
    )
    .await;
    // Back: the bridge connects again by itself.
    redis.restart();
    let mut sub = subscriber(&redis, &["app:all"]);
    let deadline = Instant::now() + WAIT;
    let again = loop {
        match confirmed.notify_all_confirmed(&json!(6)) {
            Ok(at) => break at,
            Err(e) => {
                assert!(Instant::now() < deadline, "{e}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    };
    assert_eq!(message(&mut sub).1, again);

    // A burst, pipelined (fewer than the bridge's queue holds): every message published, in
    // order.
    let before = metric_at(&url, "pushnote_mq_broker_published_total").await;
    for n in 0..1000 {
        app.notify_all(&json!(n)).unwrap();
    }
    wait_metric_at(&url, "pushnote_mq_broker_published_total", before + 1000).await;
    for n in 0..1000 {
        let (_, at, body) = message(&mut sub);
        assert_eq!(at.offset, again.offset + 1 + n);
        assert_eq!(body, format!(r#"{{"name":"notify_all","data":{n}}}"#));
    }
}
