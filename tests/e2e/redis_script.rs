//! pushnote's script in a real Redis: a publish numbers, keeps and publishes in one step, and
//! a topic's history is answered as the forwarder answers it (PROTOCOL §2c).

use pushnote::recover::End;
use pushnote::redis_script::{self, history_args, history_reply, publish_args, Keys};
use pushnote::resp::Value;
use pushnote::Position;

use crate::redis_proc::Redis;

fn publish(
    c: &mut pushnote::redis_connection::Connection,
    keys: &Keys,
    body: &str,
    topics: &[&str],
) -> Vec<Position> {
    let topics: Vec<&[u8]> = topics.iter().map(|t| t.as_bytes()).collect();
    let reply = c
        .script(&publish_args(keys, body.as_bytes(), &topics))
        .unwrap();
    redis_script::publish_reply(&reply, topics.len()).unwrap()
}

fn history(
    c: &mut pushnote::redis_connection::Connection,
    keys: &Keys,
    topic: &str,
    since: Option<Position>,
    max_bytes: u32,
) -> redis_script::HistoryReply {
    let reply = c
        .script(&history_args(keys, topic.as_bytes(), since, max_bytes))
        .unwrap();
    history_reply(&reply).unwrap()
}

#[test]
fn a_publish_is_numbered_kept_and_published_in_one_step() {
    let redis = Redis::start();
    let keys = Keys::new("t1:");
    let mut listener = redis.connect().unwrap();
    // In RESP3 a subscription is confirmed by a push, not a reply.
    listener.send(&[b"SUBSCRIBE", b"t1:user:1"]).unwrap();
    let confirmed = listener.receive().unwrap();
    assert_eq!(
        confirmed.items().unwrap()[0].bytes(),
        Some(&b"subscribe"[..])
    );
    let mut c = redis.connect().unwrap();
    let first = publish(&mut c, &keys, "{\"a\":1}", &["user:1", "user:2"]);
    assert_eq!(first.len(), 2);
    assert_eq!((first[0].offset, first[1].offset), (1, 1));
    assert_ne!(first[0].epoch, 0);
    let second = publish(&mut c, &keys, "{\"a\":2}", &["user:1"]);
    assert_eq!(
        second[0],
        Position {
            epoch: first[0].epoch,
            offset: 2
        }
    );
    // The subscriber got both, each with its position in front of its body.
    for (at, body) in [(first[0], "{\"a\":1}"), (second[0], "{\"a\":2}")] {
        let push = listener.receive().unwrap();
        let items = push.items().unwrap();
        assert_eq!(items[0].bytes(), Some(&b"message"[..]));
        assert_eq!(items[1].bytes(), Some(&b"t1:user:1"[..]));
        let mut expected = pushnote::wire::stamp_bytes(at).to_vec();
        expected.extend_from_slice(body.as_bytes());
        assert_eq!(items[2].bytes(), Some(expected.as_slice()));
    }
    // Keys of another prefix are untouched.
    assert_eq!(
        redis.call(&["EXISTS", "pushnote:meta:user:1"]),
        Value::Int(0)
    );
}

#[test]
fn a_topics_history_answers_every_end_as_the_forwarder_does() {
    let redis = Redis::start();
    let keys = Keys::new("pushnote:");
    let mut c = redis.connect().unwrap();
    redis.call(&["HSET", "pushnote:config", "history_size", "3"]);
    // A topic nobody published to stands at offset 0 of the epoch its first message starts.
    let empty = history(&mut c, &keys, "chan:x", None, 1000);
    assert_eq!((empty.end, empty.last.offset), (End::Position, 0));
    let at = publish(&mut c, &keys, "m1", &["chan:x"])[0];
    assert_eq!(at.epoch, empty.last.epoch);
    for m in ["m2", "m3", "m4", "m5"] {
        publish(&mut c, &keys, m, &["chan:x"]);
    }
    let epoch = at.epoch;
    let p = |offset| Position { epoch, offset };
    let bodies = |h: &redis_script::HistoryReply| {
        h.messages
            .iter()
            .map(|(p, b)| format!("{}:{}", p.offset, String::from_utf8_lossy(b)))
            .collect::<Vec<_>>()
    };
    let h = history(&mut c, &keys, "chan:x", Some(p(3)), 1000);
    assert_eq!((h.end, h.last), (End::Recovered, p(5)));
    assert_eq!(bodies(&h), ["4:m4", "5:m5"]);
    let h = history(&mut c, &keys, "chan:x", Some(p(5)), 1000);
    assert_eq!((h.end, bodies(&h).len()), (End::Recovered, 0));
    // Only the last three are kept.
    assert_eq!(
        history(&mut c, &keys, "chan:x", Some(p(1)), 1000).end,
        End::Evicted
    );
    assert_eq!(
        bodies(&history(&mut c, &keys, "chan:x", Some(p(2)), 1000)).len(),
        3
    );
    assert_eq!(
        history(&mut c, &keys, "chan:x", Some(p(6)), 1000).end,
        End::Future
    );
    assert_eq!(
        history(&mut c, &keys, "chan:x", Some(p(2)), 3).end,
        End::Busy
    );
    // Another epoch: given the current epoch's messages from its first while that is kept.
    let other = Position {
        epoch: epoch ^ 1,
        offset: 1,
    };
    assert_eq!(
        history(&mut c, &keys, "chan:x", Some(other), 1000).end,
        End::Epoch
    );
    assert!(history(&mut c, &keys, "chan:x", Some(other), 1000)
        .messages
        .is_empty());
    // A topic forgotten (its keys gone) starts a new epoch.
    redis.call(&["DEL", "pushnote:meta:chan:x", "pushnote:history:chan:x"]);
    let again = publish(&mut c, &keys, "n1", &["chan:x"])[0];
    assert_ne!(again.epoch, epoch);
    assert_eq!(again.offset, 1);
    let h = history(&mut c, &keys, "chan:x", Some(p(5)), 1000);
    assert_eq!((h.end, bodies(&h)), (End::Epoch, vec!["1:n1".to_owned()]));
}

#[test]
fn the_script_is_loaded_again_when_redis_lost_it() {
    let redis = Redis::start();
    let keys = Keys::new("pushnote:");
    let mut c = redis.connect().unwrap();
    publish(&mut c, &keys, "a", &["all"]);
    redis.call(&["SCRIPT", "FLUSH"]);
    assert_eq!(publish(&mut c, &keys, "b", &["all"])[0].offset, 2);
}

#[test]
fn a_redis_restarted_keeps_its_epochs_and_history_with_an_append_only_file_and_not_without() {
    let keys = Keys::new("pushnote:");
    for append_only in [true, false] {
        let mut redis = Redis::with(append_only);
        let mut c = redis.connect().unwrap();
        let at = publish(&mut c, &keys, "kept", &["user:7"])[0];
        redis.restart();
        let mut c = redis.connect().unwrap();
        let since = Some(Position {
            epoch: at.epoch,
            offset: 0,
        });
        let h = history(&mut c, &keys, "user:7", since, 1000);
        if append_only {
            assert_eq!((h.end, h.last, h.messages.len()), (End::Recovered, at, 1));
        } else {
            assert_eq!(h.end, End::Epoch);
            assert_ne!(h.last.epoch, at.epoch);
        }
    }
}
