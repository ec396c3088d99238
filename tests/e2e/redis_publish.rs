//! The client crate publishing through a real Redis (PROTOCOL §2c): every publish answered
//! with its positions, the messages on Redis' Pub/Sub channels as servers receive them, Redis
//! lost and found again by the same publisher.

use std::time::{Duration, Instant};

use pushnote::resp::Value;
use pushnote::{Position, PublishError, Publisher};
use serde_json::json;

use crate::redis_proc::{message, subscriber, Redis};
use crate::support::WAIT;

/// How many times Redis ran EVALSHA since its statistics were reset.
fn evalsha_calls(redis: &Redis) -> u64 {
    let info = redis.call(&["INFO", "commandstats"]);
    let text = String::from_utf8_lossy(info.bytes().unwrap()).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix("cmdstat_evalsha:calls="))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().unwrap())
}

#[test]
fn every_publish_returns_once_redis_holds_it_and_servers_receive_it_with_its_position() {
    let redis = Redis::start();
    let mut sub = subscriber(
        &redis,
        &[
            "pushnote:all",
            "pushnote:user:1",
            "pushnote:user:2",
            "pushnote:chan:room",
        ],
    );
    let bus = Publisher::connect(&redis.url()).unwrap();
    assert!(bus.is_connected());
    assert!(bus.confirms());
    bus.notify_all(&json!({"n": 1})).unwrap();
    let second = bus.notify_all_confirmed(&json!({"n": 2})).unwrap();
    let users = bus.notify_confirmed(&json!({"n": 3}), ["1", "2"]).unwrap();
    bus.notify(&json!({"n": 4}), ["2"]).unwrap();
    let room = bus
        .publish_confirmed("room", "ev", &json!({"n": 5}))
        .unwrap();
    bus.publish("room", "ev", &json!({"n": 6})).unwrap();

    let (channel, first, body) = message(&mut sub);
    assert_eq!(channel, "pushnote:all");
    assert_eq!(body, r#"{"name":"notify_all","data":{"n":1}}"#);
    assert_eq!(
        second,
        Position {
            epoch: first.epoch,
            offset: first.offset + 1
        }
    );
    assert_eq!(
        message(&mut sub),
        (
            "pushnote:all".into(),
            second,
            r#"{"name":"notify_all","data":{"n":2}}"#.into()
        )
    );
    assert_eq!(users.len(), 2);
    assert_eq!((users[0].offset, users[1].offset), (1, 1));
    let three = r#"{"name":"notify","data":{"n":3}}"#.to_owned();
    assert_eq!(
        message(&mut sub),
        ("pushnote:user:1".into(), users[0], three.clone())
    );
    assert_eq!(
        message(&mut sub),
        ("pushnote:user:2".into(), users[1], three)
    );
    let (channel, at, _) = message(&mut sub);
    assert_eq!((channel.as_str(), at.offset), ("pushnote:user:2", 2));
    let (channel, at, body) = message(&mut sub);
    assert_eq!((channel.as_str(), at), ("pushnote:chan:room", room));
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap(),
        json!({"name": "publish", "event": "ev", "data": {"n": 5}})
    );
    assert_eq!(message(&mut sub).1.offset, room.offset + 1);
    // Kept in the history too.
    assert_eq!(redis.call(&["LLEN", "pushnote:history:all"]), Value::Int(2));
}

#[test]
fn a_notify_to_several_users_is_one_call_of_the_script() {
    let redis = Redis::start();
    let bus = Publisher::connect(&redis.url()).unwrap();
    bus.notify_all(&json!("warm")).unwrap();
    redis.call(&["CONFIG", "RESETSTAT"]);
    let users: Vec<String> = (0..50).map(|u| u.to_string()).collect();
    let positions = bus.notify_confirmed(&json!({"x": 1}), &users).unwrap();
    assert_eq!(positions.len(), 50);
    assert!(positions.iter().all(|p| p.offset == 1));
    bus.notify(&json!({"x": 2}), &users).unwrap();
    assert_eq!(evalsha_calls(&redis), 2);
    for u in ["0", "49"] {
        assert_eq!(
            redis.call(&["LLEN", &format!("pushnote:history:user:{u}")]),
            Value::Int(2)
        );
    }
}

#[test]
fn redis_lost_is_not_connected_at_once_and_found_again_by_the_same_publisher() {
    let mut redis = Redis::start();
    let bus = Publisher::builder(&redis.url())
        .ready_timeout(Duration::from_secs(1))
        .connect()
        .unwrap();
    let before = bus.notify_all_confirmed(&json!(1)).unwrap();
    redis.kill();
    let started = Instant::now();
    match bus.notify_all(&json!(2)) {
        Err(PublishError::NotConnected(why)) => {
            assert!(why.contains(&redis.port.to_string()), "{why}")
        }
        other => panic!("expected NotConnected, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(!bus.is_connected());
    assert!(matches!(
        bus.notify_confirmed(&json!(3), ["7"]),
        Err(PublishError::NotConnected(_))
    ));
    redis.restart();
    assert!(bus.is_connected());
    // A Redis without persistence forgot the topic: a new epoch.
    let after = bus.notify_all_confirmed(&json!(4)).unwrap();
    assert_eq!(after.offset, 1);
    assert_ne!(after.epoch, before.epoch);
    // The script was loaded again into the new Redis.
    bus.notify(&json!(5), ["7"]).unwrap();
}

#[test]
fn a_publisher_made_while_redis_is_away_publishes_once_it_is_there() {
    let mut redis = Redis::start();
    redis.kill();
    let bus = Publisher::connect(&redis.url()).unwrap();
    assert!(matches!(
        bus.notify_all(&json!(1)),
        Err(PublishError::NotConnected(_))
    ));
    redis.restart();
    assert_eq!(bus.notify_all_confirmed(&json!(2)).unwrap().offset, 1);
}

#[test]
fn a_prefix_keeps_one_apps_keys_and_channels_apart() {
    let redis = Redis::start();
    let mut sub = subscriber(&redis, &["app2:all"]);
    let bus = Publisher::builder(&redis.url())
        .broker_prefix("app2:")
        .connect()
        .unwrap();
    let at = bus.notify_all_confirmed(&json!("x")).unwrap();
    assert_eq!(message(&mut sub).1, at);
    assert_eq!(redis.call(&["EXISTS", "app2:meta:all"]), Value::Int(1));
    assert_eq!(redis.call(&["EXISTS", "pushnote:meta:all"]), Value::Int(0));
    assert_eq!(
        redis.call(&["EXISTS", "pushnote:history:all"]),
        Value::Int(0)
    );
}

#[test]
fn a_message_over_the_limit_is_refused_before_anything_is_sent() {
    let redis = Redis::start();
    let bus = Publisher::builder(&redis.url())
        .max_message_bytes(200)
        .connect()
        .unwrap();
    redis.call(&["CONFIG", "RESETSTAT"]);
    let big = "x".repeat(300);
    assert!(matches!(
        bus.notify_all(&big),
        Err(PublishError::TooLarge { limit: 200, .. })
    ));
    assert!(matches!(
        bus.notify_confirmed(&big, ["1", "2"]),
        Err(PublishError::TooLarge { .. })
    ));
    assert!(matches!(
        bus.publish_confirmed("room", "ev", &big),
        Err(PublishError::TooLarge { .. })
    ));
    assert_eq!(evalsha_calls(&redis), 0);
    assert_eq!(redis.call(&["DBSIZE"]), Value::Int(0));
    bus.notify_all(&"small").unwrap();
}

#[test]
fn redis_refusing_a_publish_is_refused_and_a_late_reply_unconfirmed() {
    let redis = Redis::start();
    let bus = Publisher::builder(&redis.url())
        .confirm_timeout(Duration::from_millis(300))
        .connect()
        .unwrap();
    bus.notify_all(&json!(1)).unwrap();
    // A replica (of a primary that is not there): Redis refuses scripts that write.
    let nobody = crate::support::free_port().to_string();
    redis.call(&["REPLICAOF", "127.0.0.1", &nobody]);
    match bus.notify_all(&json!(2)) {
        Err(PublishError::Refused { reason, detail }) => {
            assert_eq!(reason, pushnote::redis_publisher::REFUSED_BY_REDIS);
            assert!(detail.contains("READONLY"), "{detail}");
        }
        other => panic!("expected Refused, got {other:?}"),
    }
    redis.call(&["REPLICAOF", "NO", "ONE"]);
    // Promoted from a replica, the Redis starts the topic's next epoch (PROTOCOL §2c): the
    // position is the new epoch's first, never one given before.
    let after = bus.notify_all_confirmed(&json!(3)).unwrap();
    assert_eq!(after.offset, 1);
    // Writes paused: the script's reply does not come within the time-out.
    redis.call(&["CLIENT", "PAUSE", "3000", "WRITE"]);
    let started = Instant::now();
    match bus.notify_all(&json!(4)) {
        Err(PublishError::Unconfirmed { .. }) => {}
        other => panic!("expected Unconfirmed, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_millis(2500));
    redis.call(&["CLIENT", "UNPAUSE"]);
    // The next call connects again and gets its own reply, not the late one.
    let deadline = Instant::now() + WAIT;
    let next = loop {
        match bus.notify_all_confirmed(&json!(5)) {
            Ok(at) => break at,
            Err(e) if Instant::now() < deadline => {
                eprintln!("not yet: {e}");
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("{e}"),
        }
    };
    // The publish given up on may or may not have run (Redis drops a paused command whose
    // client has gone): the next one follows it or takes its place, never repeats a position.
    assert_eq!(next.epoch, after.epoch);
    assert!([2, 3].contains(&next.offset), "{next:?}");
}

#[test]
fn an_endpoint_that_cannot_be_used_is_refused_when_the_publisher_is_made() {
    match Publisher::connect("rediss://127.0.0.1:1?ca=/nonexistent/ca.pem") {
        Err(PublishError::Endpoint(why)) => assert!(why.contains("/nonexistent/ca.pem"), "{why}"),
        other => panic!("expected Endpoint, got {other:?}"),
    }
    assert!(matches!(
        Publisher::connect("redis://127.0.0.1:notaport"),
        Err(PublishError::Endpoint(_))
    ));
}

/// The command-line publisher through Redis prints each message's position, as a confirmed
/// publish does, under the prefix it is given.
#[test]
fn the_cli_publishes_through_redis_and_prints_positions() {
    let redis = Redis::start();
    let mut sub = subscriber(&redis, &["cli:user:b", "cli:chan:news"]);
    let pushnote = |args: &[&str]| {
        std::process::Command::new(crate::support::bin("pushnote"))
            .args(args)
            .env_remove("PUSHNOTE_BROKER_PREFIX")
            .output()
            .unwrap()
    };
    let url = redis.url();
    let out = pushnote(&[
        "notify",
        "--user",
        "a",
        "--user",
        "b",
        "--bus",
        &url,
        "--broker-prefix",
        "cli:",
        r#"{"hi": 1}"#,
    ]);
    assert!(out.status.success(), "{out:?}");
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines.iter().all(|p| p["offset"] == 1 && p["epoch"] != 0));
    let (channel, at, body) = message(&mut sub);
    assert_eq!(channel, "cli:user:b");
    assert_eq!(json!({"epoch": at.epoch, "offset": at.offset}), lines[1]);
    assert_eq!(body, r#"{"name":"notify","data":{"hi":1}}"#);

    let out = pushnote(&[
        "publish",
        "-c",
        "news",
        "-e",
        "up",
        "--bus",
        &url,
        "--broker-prefix",
        "cli:",
        "2",
    ]);
    assert!(out.status.success(), "{out:?}");
    let (channel, at, _) = message(&mut sub);
    assert_eq!(channel, "cli:chan:news");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        json!({"epoch": at.epoch, "offset": at.offset}).to_string()
    );
    // Nothing under the default prefix.
    assert_eq!(
        redis.call(&["EXISTS", "pushnote:meta:user:b"]),
        Value::Int(0)
    );

    let out = pushnote(&[
        "notify-all",
        "--bus",
        &url,
        "--confirm",
        "tcp://127.0.0.1:1",
        "1",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("every publish is confirmed"));
    let gone = format!("redis://127.0.0.1:{}", crate::support::free_port());
    let out = pushnote(&["notify-all", "--bus", &gone, "1"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Redis is connected"), "{stderr}");
}

/// With `replicas(1)`, a publish returns only once Redis' replica holds it too; with the
/// replica gone it is published all the same, and said unconfirmed: a failover could lose it.
#[test]
fn a_publish_that_asks_for_a_replica_returns_only_once_the_replica_holds_it() {
    let primary = Redis::start();
    let replica = Redis::replica_of(&primary);
    let deadline = Instant::now() + crate::support::WAIT;
    while replica.info("replication", "master_link_status").as_deref() != Some("up") {
        assert!(Instant::now() < deadline, "the replica syncs");
        std::thread::sleep(Duration::from_millis(20));
    }
    let bus = Publisher::builder(&primary.url())
        .replicas(1)
        .confirm_timeout(Duration::from_millis(800))
        .connect()
        .unwrap();
    let at = bus.notify_all_confirmed(&json!({"n": 1})).unwrap();
    // The replica has it: its copy of the topic's position is the publish's.
    let offset = replica.call(&["HGET", "pushnote:meta:all", "offset"]);
    assert_eq!(offset.int(), Some(i64::from(at.offset)));
    drop(replica);
    match bus.notify_all(&json!({"n": 2})) {
        Err(PublishError::Unconfirmed { why, .. }) => assert!(why.contains("replicas"), "{why}"),
        other => panic!("expected Unconfirmed, got {other:?}"),
    }
    // The command line asks the same way.
    let out = std::process::Command::new(crate::support::bin("pushnote"))
        .args([
            "notify-all",
            "--bus",
            &primary.url(),
            "--replicas",
            "1",
            "{}",
        ])
        .env_remove("PUSHNOTE_BROKER_PREFIX")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("replicas"), "{err}");
    // Without asking, the same publish returns (each unconfirmed one was published: 2 and
    // the command line's 3).
    let plain = Publisher::connect(&primary.url()).unwrap();
    assert_eq!(
        plain.notify_all_confirmed(&json!({"n": 4})).unwrap().offset,
        4
    );
}
