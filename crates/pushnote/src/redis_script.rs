//! pushnote's layout in Redis and the one script that writes and reads it (pure).
//!
//! Under a prefix (`pushnote:` by default), for a topic `T` (the bus topic without its NUL:
//! `all`, `user:42`, `chan:room`): the hash `meta:T` holds the topic's epoch and last offset,
//! the list `history:T` its kept messages, and Pub/Sub channel `T` carries its messages as
//! they are published; the hash `config` holds the history's bounds, written by servers. A
//! publish numbers the message, keeps it and publishes it in one step of the script, so the
//! history and what servers received cannot disagree. PROTOCOL §2c documents it for apps in
//! other languages.

use crate::recover::End;
use crate::resp::Value;
use crate::wire::{self, Position, STAMP_BYTES};

/// The script (Lua), loaded once per connection with `SCRIPT LOAD`.
pub const SCRIPT: &str = include_str!("redis_script.lua");

/// The prefix of pushnote's keys and channels by default.
pub const DEFAULT_PREFIX: &str = "pushnote:";

/// The names, under a prefix, of pushnote's keys and channels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Keys {
    prefix: Vec<u8>,
}

impl Keys {
    /// The keys under `prefix`.
    pub fn new(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.as_bytes().to_vec(),
        }
    }

    /// The prefix.
    pub fn prefix(&self) -> &[u8] {
        &self.prefix
    }

    fn join(&self, part: &[u8], topic: &[u8]) -> Vec<u8> {
        let topic = bare(topic);
        let mut key = Vec::with_capacity(self.prefix.len() + part.len() + topic.len());
        key.extend_from_slice(&self.prefix);
        key.extend_from_slice(part);
        key.extend_from_slice(topic);
        key
    }

    /// The hash of the history's bounds.
    pub fn config(&self) -> Vec<u8> {
        self.join(b"config", b"")
    }

    /// The hash of `topic`'s epoch and last offset (`topic` with or without its NUL).
    pub fn meta(&self, topic: &[u8]) -> Vec<u8> {
        self.join(b"meta:", topic)
    }

    /// The list of `topic`'s kept messages.
    pub fn history(&self, topic: &[u8]) -> Vec<u8> {
        self.join(b"history:", topic)
    }

    /// The Pub/Sub channel of `topic`.
    pub fn channel(&self, topic: &[u8]) -> Vec<u8> {
        self.join(b"", topic)
    }

    /// The bus topic (NUL included) a channel's message is of, `None` for a channel not
    /// under the prefix.
    pub fn topic_of(&self, channel: &[u8]) -> Option<Vec<u8>> {
        let topic = channel.strip_prefix(self.prefix.as_slice())?;
        let mut t = Vec::with_capacity(topic.len() + 1 + STAMP_BYTES);
        t.extend_from_slice(topic);
        t.push(wire::TOPIC_END);
        Some(t)
    }
}

/// `topic` without its NUL.
fn bare(topic: &[u8]) -> &[u8] {
    topic.strip_suffix(&[wire::TOPIC_END]).unwrap_or(topic)
}

/// The arguments after `EVALSHA sha` that publish `body` under `topics` (each with or without
/// its NUL, no stamp room).
pub fn publish_args(keys: &Keys, body: &[u8], topics: &[&[u8]]) -> Vec<Vec<u8>> {
    let mut args = Vec::with_capacity(4 + 3 * topics.len());
    args.push((1 + 2 * topics.len()).to_string().into_bytes());
    args.push(keys.config());
    for t in topics {
        args.push(keys.meta(t));
        args.push(keys.history(t));
    }
    args.push(b"publish".to_vec());
    args.push(keys.prefix.clone());
    args.push(body.to_vec());
    args.extend(topics.iter().map(|t| bare(t).to_vec()));
    args
}

/// The positions a publish of `topics` messages was given, or why its reply is not one.
pub fn publish_reply(reply: &Value, topics: usize) -> Result<Vec<Position>, String> {
    let items = match reply {
        Value::Error(e) => return Err(e.clone()),
        other => other.items().ok_or("not an array")?,
    };
    if items.len() != topics {
        return Err(format!("{} positions for {topics} topics", items.len()));
    }
    items.iter().map(stamp).collect()
}

fn stamp(v: &Value) -> Result<Position, String> {
    let bytes = v.bytes().ok_or("a position that is not a string")?;
    let bytes: [u8; STAMP_BYTES] = bytes.try_into().map_err(|_| "a position not 8 bytes")?;
    Ok(wire::read_stamp(bytes))
}

/// The arguments after `EVALSHA sha` that ask `topic`'s position and, with `since`, the
/// messages it keeps after it, at most `max_bytes` of bodies.
pub fn history_args(
    keys: &Keys,
    topic: &[u8],
    since: Option<Position>,
    max_bytes: u32,
) -> Vec<Vec<u8>> {
    let since = since.map(|p| (p.epoch, p.offset));
    let (has, epoch, offset) = since.map_or((0, 0, 0), |(e, o)| (1, e, o));
    vec![
        b"3".to_vec(),
        keys.config(),
        keys.meta(topic),
        keys.history(topic),
        b"history".to_vec(),
        keys.prefix.clone(),
        has.to_string().into_bytes(),
        epoch.to_string().into_bytes(),
        offset.to_string().into_bytes(),
        max_bytes.to_string().into_bytes(),
    ]
}

/// A topic's history as the script gives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryReply {
    /// How the answer ends.
    pub end: End,
    /// The topic's last message's position.
    pub last: Position,
    /// The messages given, oldest first, each with its position.
    pub messages: Vec<(Position, Vec<u8>)>,
}

/// The history in a reply of the script, or why the reply is not one.
pub fn history_reply(reply: &Value) -> Result<HistoryReply, String> {
    let items = match reply {
        Value::Error(e) => return Err(e.clone()),
        other => other.items().ok_or("not an array")?,
    };
    let [kind, last, messages @ ..] = items else {
        return Err("fewer than two elements".into());
    };
    let end = match kind.int() {
        Some(1) => End::Position,
        Some(2) => End::Recovered,
        Some(3) => End::Epoch,
        Some(4) => End::Future,
        Some(5) => End::Evicted,
        Some(6) => End::Busy,
        _ => return Err("an unknown end".into()),
    };
    let messages = messages
        .iter()
        .map(|m| {
            let bytes = m.bytes().ok_or("a message that is not a string")?;
            if bytes.len() < STAMP_BYTES {
                return Err("a message shorter than its position".to_owned());
            }
            let (at, body) = bytes.split_at(STAMP_BYTES);
            Ok((stamp(&Value::Bulk(at.to_vec()))?, body.to_vec()))
        })
        .collect::<Result<_, String>>()?;
    Ok(HistoryReply {
        end,
        last: stamp(last)?,
        messages,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_channels_sit_under_the_prefix_whatever_the_nul() {
        let keys = Keys::new("app1:");
        assert_eq!(keys.meta(b"user:42\0"), b"app1:meta:user:42");
        assert_eq!(keys.history(b"user:42"), b"app1:history:user:42");
        assert_eq!(keys.channel(b"all\0"), b"app1:all");
        assert_eq!(keys.config(), b"app1:config");
        assert_eq!(keys.topic_of(b"app1:chan:x").unwrap(), b"chan:x\0");
        assert_eq!(keys.topic_of(b"other:chan:x"), None);
    }

    #[test]
    fn a_publish_names_its_keys_before_its_arguments() {
        let args = publish_args(&Keys::new("p:"), b"{}", &[b"user:1\0", b"user:2\0"]);
        let text: Vec<_> = args.iter().map(|a| String::from_utf8_lossy(a)).collect();
        assert_eq!(
            text,
            [
                "5",
                "p:config",
                "p:meta:user:1",
                "p:history:user:1",
                "p:meta:user:2",
                "p:history:user:2",
                "publish",
                "p:",
                "{}",
                "user:1",
                "user:2"
            ]
        );
    }

    #[test]
    fn replies_that_are_not_the_scripts_are_errors() {
        let at = |e: u32, o: u32| {
            Value::Bulk(
                wire::stamp_bytes(Position {
                    epoch: e,
                    offset: o,
                })
                .to_vec(),
            )
        };
        assert_eq!(
            publish_reply(&Value::Array(vec![at(7, 1)]), 1),
            Ok(vec![Position {
                epoch: 7,
                offset: 1
            }])
        );
        assert!(publish_reply(&Value::Array(vec![at(7, 1)]), 2).is_err());
        assert!(publish_reply(&Value::Error("ERR x".into()), 1).is_err());
        assert!(publish_reply(&Value::Array(vec![Value::Int(3)]), 1).is_err());
        let mut message = wire::stamp_bytes(Position {
            epoch: 7,
            offset: 2,
        })
        .to_vec();
        message.extend_from_slice(b"{}");
        let reply = Value::Array(vec![Value::Int(2), at(7, 2), Value::Bulk(message)]);
        assert_eq!(
            history_reply(&reply),
            Ok(HistoryReply {
                end: End::Recovered,
                last: Position {
                    epoch: 7,
                    offset: 2
                },
                messages: vec![(
                    Position {
                        epoch: 7,
                        offset: 2
                    },
                    b"{}".to_vec()
                )],
            })
        );
        assert!(history_reply(&Value::Array(vec![Value::Int(9), at(1, 1)])).is_err());
        assert!(history_reply(&Value::Array(vec![Value::Int(2)])).is_err());
        assert!(history_reply(&Value::Array(vec![
            Value::Int(2),
            at(1, 1),
            Value::Bulk(vec![1])
        ]))
        .is_err());
    }
}
