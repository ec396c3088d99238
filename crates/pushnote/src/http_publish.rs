//! Publishing over HTTP: what an app that cannot link ZeroMQ sends to `POST /publish` (on
//! `pushnote-mq --http`, or a `--single` server with `--http-publish`), checked whole before
//! anything is published, then published through a [`Publisher`].
//!
//! The body is one message or a JSON array of them (a batch):
//!
//! ```json
//! {"to": "all", "data": DATA}
//! {"to": "users", "users": ["42", "7"], "data": DATA}
//! {"to": "channel", "channel": "news", "event": "create", "data": DATA}
//! ```
//!
//! `data` is passed on as the text it was sent as, byte for byte: numbers, key order and
//! escapes as the app wrote them. A request is answered 200 only when every bus message it
//! makes was handed to the bus: one the bus would drop for its size, or more of them than
//! [`MAX_MESSAGES`], refuse the whole request.
//!
//! The request carries `Authorization: Bearer KEY`, compared with the configured key in
//! constant time. `docs/PROTOCOL.md` §2a gives the answers. Pure but for [`answer`].

use serde::Deserialize;
use serde_json::value::RawValue;
use subtle::ConstantTimeEq;

use crate::publisher::{Limits, Outgoing};
use crate::wire;
use crate::{PublishError, Publisher};

/// The most messages one request may carry.
pub const MAX_BATCH: usize = 1000;

/// The most bus messages one request may make: one for each message to everyone or to a
/// channel, one for each user named. A tenth of a publisher's send high-water mark, past
/// which ZeroMQ would drop the rest of a request without a word.
pub const MAX_MESSAGES: usize = 10_000;

/// One message to publish, checked.
#[derive(Debug)]
pub enum Item {
    All {
        data: Box<RawValue>,
    },
    Users {
        users: Vec<String>,
        data: Box<RawValue>,
    },
    Channel {
        channel: String,
        event: String,
        data: Box<RawValue>,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    to: String,
    #[serde(default)]
    users: Option<Vec<String>>,
    #[serde(default)]
    channel: Option<String>,
    #[serde(default)]
    event: Option<String>,
    data: Box<RawValue>,
}

/// Why a request was refused, with the HTTP status it is answered with.
#[derive(Debug, PartialEq, Eq)]
pub struct Refused {
    pub status: u16,
    pub error: String,
    /// The batch item at fault, if one is.
    pub index: Option<usize>,
}

impl Refused {
    fn bad(error: impl Into<String>, index: Option<usize>) -> Refused {
        Refused {
            status: 400,
            error: error.into(),
            index,
        }
    }

    /// The JSON body of the answer.
    pub fn body(&self) -> String {
        let mut v = serde_json::json!({ "error": self.error });
        if let Some(i) = self.index {
            v["index"] = i.into();
        }
        v.to_string()
    }
}

/// Whether `authorization` (the header's value) carries `key`, compared in constant time.
pub fn authorized(authorization: Option<&[u8]>, key: &str) -> Result<(), Refused> {
    let given = authorization
        .and_then(|h| h.strip_prefix(b"Bearer "))
        .unwrap_or_default();
    if bool::from(given.ct_eq(key.as_bytes())) && !key.is_empty() {
        Ok(())
    } else {
        Err(Refused {
            status: 401,
            error: "missing or wrong API key: send Authorization: Bearer KEY".into(),
            index: None,
        })
    }
}

/// Reads and checks a request's body: every message of it, or why none is published. Each
/// message's `data` is kept as the text it was sent as.
pub fn parse(body: &[u8]) -> Result<Vec<Item>, Refused> {
    let not_json = |e: serde_json::Error| Refused::bad(format!("the body is not JSON: {e}"), None);
    let whole: &RawValue = serde_json::from_slice(body).map_err(not_json)?;
    let items: Vec<&RawValue> = if whole.get().starts_with('[') {
        serde_json::from_str(whole.get()).map_err(not_json)?
    } else {
        vec![whole]
    };
    if items.is_empty() || items.len() > MAX_BATCH {
        return Err(Refused::bad(
            format!("a batch holds 1 to {MAX_BATCH} messages"),
            None,
        ));
    }
    items
        .into_iter()
        .enumerate()
        .map(|(i, v)| item(v).map_err(|e| Refused::bad(e, Some(i))))
        .collect()
}

fn item(value: &RawValue) -> Result<Item, String> {
    let raw: Raw = serde_json::from_str(value.get()).map_err(|e| {
        format!("expected {{\"to\": \"all\"|\"users\"|\"channel\", …, \"data\": …}}: {e}")
    })?;
    let data = raw.data;
    let unexpected = |what: &str| format!("\"{what}\" does not go with \"to\": \"{}\"", raw.to);
    match raw.to.as_str() {
        "all" => {
            if raw.users.is_some() || raw.channel.is_some() || raw.event.is_some() {
                return Err(unexpected("users, channel or event"));
            }
            Ok(Item::All { data })
        }
        "users" => {
            let users = raw
                .users
                .ok_or("\"users\" is missing: a list of user ids")?;
            if raw.channel.is_some() || raw.event.is_some() {
                return Err(unexpected("channel or event"));
            }
            if users.is_empty() {
                return Err("\"users\" is empty".into());
            }
            for u in &users {
                wire::check_user_id(u).map_err(|e| e.to_string())?;
            }
            Ok(Item::Users { users, data })
        }
        "channel" => {
            let channel = raw.channel.ok_or("\"channel\" is missing")?;
            let event = raw.event.ok_or("\"event\" is missing")?;
            if raw.users.is_some() {
                return Err(unexpected("users"));
            }
            wire::check_channel(&channel).map_err(|e| e.to_string())?;
            wire::check_event(&event).map_err(|e| e.to_string())?;
            Ok(Item::Channel {
                channel,
                event,
                data,
            })
        }
        other => Err(format!(
            "\"to\" must be \"all\", \"users\" or \"channel\", not {other:?}"
        )),
    }
}

impl Item {
    /// How many bus messages this item makes.
    fn len(&self) -> usize {
        match self {
            Item::Users { users, .. } => users.len(),
            Item::All { .. } | Item::Channel { .. } => 1,
        }
    }

    /// The bus messages this item makes.
    fn outgoing(&self) -> Result<Outgoing, PublishError> {
        match self {
            Item::All { data } => Outgoing::all(data),
            Item::Users { users, data } => Outgoing::users(data, users),
            Item::Channel {
                channel,
                event,
                data,
            } => Outgoing::channel(channel, event, data),
        }
    }
}

/// The bus messages of `items`, each checked against `limits` and all of them together
/// against [`MAX_MESSAGES`]; or why none is published (413 when too large or too many, with
/// the item at fault).
fn prepare(items: &[Item], limits: Limits) -> Result<Vec<Outgoing>, Refused> {
    let mut total = 0;
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let refused = |status, error| Refused {
                status,
                error,
                index: Some(i),
            };
            // Counted before they are made: a request's memory stays within its size.
            total += item.len();
            if total > MAX_MESSAGES {
                return Err(refused(
                    413,
                    format!(
                        "the request makes over {MAX_MESSAGES} bus messages (one per message to \
                         everyone or a channel, one per user named), the most one request \
                         may: send the rest in other requests; nothing was published"
                    ),
                ));
            }
            let out = item.outgoing().map_err(|e| refused(400, e.to_string()))?;
            limits.check(out).map_err(|e| match e {
                PublishError::TooLarge { .. } | PublishError::TooManyUsers { .. } => {
                    refused(413, e.to_string())
                }
                other => refused(400, other.to_string()),
            })
        })
        .collect()
}

/// Publishes `messages` in order, each confirmed; each one's positions (one per topic: per
/// user named), or how many were published and why the rest were not (503 when nothing is
/// connected, 504 when a confirmation did not come: that message may or may not have been
/// published).
fn publish_confirmed(
    publisher: &Publisher,
    messages: &[Outgoing],
) -> Result<Vec<Vec<serde_json::Value>>, (usize, Refused)> {
    let mut all = Vec::with_capacity(messages.len());
    for (i, out) in messages.iter().enumerate() {
        match publisher.confirmed(out) {
            Ok(positions) => all.push(
                positions
                    .iter()
                    .map(|p| serde_json::json!({"epoch": p.epoch, "offset": p.offset}))
                    .collect(),
            ),
            Err(e) => return Err((i, refused_at(&e, i, messages.len()))),
        }
    }
    Ok(all)
}

/// The answer to a request whose message `i` of `total` was not published because of `e`:
/// 503 when nothing is connected, 504 when a confirmation did not come, 413 when the engine
/// refused the message, 500 otherwise.
fn refused_at(e: &PublishError, i: usize, total: usize) -> Refused {
    let status = match e {
        PublishError::NotConnected(_) => 503,
        PublishError::Unconfirmed { .. } => 504,
        // Redis refused for itself (read-only replica, out of memory): not the request's fault.
        PublishError::Refused { reason, .. }
            if *reason == crate::redis_publisher::REFUSED_BY_REDIS =>
        {
            503
        }
        PublishError::TooLarge { .. } | PublishError::Refused { .. } => 413,
        _ => 500,
    };
    Refused {
        status,
        error: format!("{e}: {i} of {total} published"),
        index: Some(i),
    }
}

/// Publishes `messages` in order; how many were published, or why the rest were not (the
/// bus is not connected: 503).
fn publish(publisher: &Publisher, messages: &[Outgoing]) -> Result<usize, (usize, Refused)> {
    for (i, out) in messages.iter().enumerate() {
        if let Err(e) = publisher.send(out) {
            return Err((i, refused_at(&e, i, messages.len())));
        }
    }
    Ok(messages.len())
}

/// What a request whose key was accepted is answered: its status and JSON body, and how many
/// messages were published.
#[derive(Debug, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub body: String,
    pub published: usize,
}

impl From<Refused> for Answer {
    fn from(r: Refused) -> Answer {
        Answer {
            status: r.status,
            body: r.body(),
            published: 0,
        }
    }
}

/// Checks `body` whole, and every bus message it makes against `publisher`'s limits, then
/// publishes it through `publisher` (which may block a moment: call it where blocking is
/// allowed).
pub fn answer(publisher: &Publisher, body: &[u8]) -> Answer {
    let messages = match parse(body).and_then(|items| prepare(&items, publisher.limits())) {
        Ok(messages) => messages,
        Err(r) => return r.into(),
    };
    if publisher.confirms() {
        // Each message is one confirm request: all of them are checked before any is sent.
        for (i, out) in messages.iter().enumerate() {
            if let Err(e) = publisher.check_confirmed(out) {
                return Refused {
                    status: 413,
                    error: format!("{e}: nothing was published"),
                    index: Some(i),
                }
                .into();
            }
        }
        return match publish_confirmed(publisher, &messages) {
            Ok(positions) => Answer {
                status: 200,
                body: serde_json::json!({"published": positions.len(), "positions": positions})
                    .to_string(),
                published: positions.len(),
            },
            Err((n, r)) => Answer {
                published: n,
                ..r.into()
            },
        };
    }
    match publish(publisher, &messages) {
        Ok(n) => Answer {
            status: 200,
            body: format!(r#"{{"published":{n}}}"#),
            published: n,
        },
        Err((n, r)) => Answer {
            published: n,
            ..r.into()
        },
    }
}

/// Where a process on this host reaches a ZeroMQ `endpoint` as bound: an address of every
/// interface becomes the loopback one.
pub fn loopback(endpoint: &str) -> String {
    endpoint
        .replacen("//0.0.0.0:", "//127.0.0.1:", 1)
        .replacen("//*:", "//127.0.0.1:", 1)
        .replacen("//[::]:", "//[::1]:", 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_message_or_a_batch_is_read_and_checked_whole() {
        let one = parse(br#"{"to":"all","data":{"a":1}}"#).unwrap();
        assert!(matches!(&one[..], [Item::All { data }] if data.get() == r#"{"a":1}"#));
        let batch = parse(
            br#"[{"to":"users","users":["42","7"],"data":"hi"},
                 {"to":"channel","channel":"news","event":"create","data":null}]"#,
        )
        .unwrap();
        assert!(matches!(&batch[0], Item::Users { users, .. } if users == &["42", "7"]));
        assert!(
            matches!(&batch[1], Item::Channel { channel, event, .. } if channel == "news" && event == "create")
        );
    }

    #[test]
    fn bad_bodies_are_refused_naming_the_item() {
        let refused = |body: &str| parse(body.as_bytes()).unwrap_err();
        assert_eq!(refused("{").status, 400);
        assert_eq!(refused("[]").status, 400);
        assert!(refused(r#"{"to":"all"}"#)
            .error
            .contains("missing field `data`"));
        let r = refused(
            r#"[{"to":"all","data":1},{"to":"channel","channel":"a b","event":"e","data":1}]"#,
        );
        assert_eq!((r.status, r.index), (400, Some(1)));
        // A single message is item 0; a body that is no message at all names none.
        assert_eq!(refused(r#"{"to":"everyone","data":1}"#).index, Some(0));
        assert_eq!(refused(r#"[1]"#).index, Some(0));
        assert!(refused(r#"{"to":"all","data":1,"to":"all"}"#)
            .error
            .contains("duplicate field"));
        assert_eq!(refused("{").index, None);
        assert_eq!(refused("[]").index, None);
        for body in [
            r#"{"to":"everyone","data":1}"#,
            r#"{"to":"users","data":1}"#,
            r#"{"to":"users","users":[],"data":1}"#,
            r#"{"to":"users","users":[""],"data":1}"#,
            r#"{"to":"channel","channel":"a","data":1}"#,
            r#"{"to":"all","channel":"a","data":1}"#,
            r#"{"to":"all","data":1,"extra":1}"#,
            r#"{"to":"channel","channel":"a","event":"","data":1}"#,
        ] {
            assert_eq!(refused(body).status, 400, "{body}");
        }
        let too_many = format!(
            "[{}]",
            vec![r#"{"to":"all","data":1}"#; MAX_BATCH + 1].join(",")
        );
        assert_eq!(refused(&too_many).status, 400);
    }

    #[test]
    fn data_is_kept_as_the_text_it_was_sent_as() {
        let data =
            r#"{"b":1e2,"a":1.50,"c":123456789012345678901234567890,"d":"\u00e9", "e" : [ -0.0 ]}"#;
        for body in [
            format!(r#"{{"to":"all","data":{data}}}"#),
            format!(r#" [ {{ "data" : {data} , "to" : "users", "users": ["7"] }} ] "#),
            format!(r#"{{"to":"channel","channel":"c","event":"e","data":{data}}}"#),
        ] {
            let items = parse(body.as_bytes()).unwrap();
            let kept = match &items[..] {
                [Item::All { data } | Item::Users { data, .. } | Item::Channel { data, .. }] => {
                    data.get()
                }
                other => panic!("{other:?}"),
            };
            assert_eq!(kept, data, "{body}");
            let out = items[0].outgoing().unwrap();
            let body = String::from_utf8(out.body().to_vec()).unwrap();
            assert!(body.ends_with(&format!(r#""data":{data}}}"#)), "{body}");
        }
    }

    #[test]
    fn what_the_bus_would_drop_refuses_the_request_naming_the_item() {
        let limits = Limits {
            max_message_bytes: 100,
            max_messages: 100_000,
        };
        let prepared = |body: &str| prepare(&parse(body.as_bytes()).unwrap(), limits);
        // topic "all\0" + 8 bytes of stamp room, {"name":"notify_all","data":…}: 41 + data.
        let fits = format!(r#""{}""#, "x".repeat(100 - 41 - 2));
        let over = format!(r#""{}""#, "x".repeat(100 - 41 - 1));
        assert_eq!(
            prepared(&format!(r#"{{"to":"all","data":{fits}}}"#))
                .unwrap()
                .len(),
            1
        );
        let r = prepared(&format!(r#"{{"to":"all","data":{over}}}"#)).unwrap_err();
        assert_eq!((r.status, r.index), (413, Some(0)), "{}", r.error);
        assert!(
            r.error.contains("101 bytes") && r.error.contains("100"),
            "{}",
            r.error
        );
        let r = prepared(&format!(
            r#"[{{"to":"all","data":1}},{{"to":"channel","channel":"c","event":"e","data":{fits}}}]"#
        ))
        .unwrap_err();
        assert_eq!((r.status, r.index), (413, Some(1)), "{}", r.error);
        // Each user's topic counts: the longest one decides.
        let long = "u".repeat(70);
        let r = prepared(&format!(
            r#"{{"to":"users","users":["1","{long}"],"data":1}}"#
        ))
        .unwrap_err();
        assert_eq!((r.status, r.index), (413, Some(0)), "{}", r.error);
    }

    #[test]
    fn a_request_makes_at_most_max_messages_bus_messages() {
        let limits = Limits {
            max_message_bytes: 1 << 20,
            max_messages: 100_000,
        };
        let users = |n: usize| {
            let ids: Vec<String> = (0..n).map(|i| format!(r#""{i}""#)).collect();
            format!(r#"{{"to":"users","users":[{}],"data":1}}"#, ids.join(","))
        };
        let prepared = |body: &str| prepare(&parse(body.as_bytes()).unwrap(), limits);
        assert_eq!(
            prepared(&users(MAX_MESSAGES)).unwrap()[0].len(),
            MAX_MESSAGES
        );
        let r = prepared(&users(MAX_MESSAGES + 1)).unwrap_err();
        assert_eq!((r.status, r.index), (413, Some(0)));
        assert!(r.error.contains(&MAX_MESSAGES.to_string()), "{}", r.error);
        let r = prepared(&format!(
            r#"[{},{{"to":"all","data":1}}]"#,
            users(MAX_MESSAGES)
        ))
        .unwrap_err();
        assert_eq!((r.status, r.index), (413, Some(1)));
        // A publisher whose socket holds fewer refuses more users than it holds.
        let small = Limits {
            max_messages: 10,
            ..limits
        };
        let r = prepare(&parse(users(11).as_bytes()).unwrap(), small).unwrap_err();
        assert_eq!((r.status, r.index), (413, Some(0)));
        assert!(
            r.error.contains("11 users") && r.error.contains("10"),
            "{}",
            r.error
        );
    }

    #[test]
    fn the_key_must_match_exactly() {
        assert!(authorized(Some(b"Bearer k3y"), "k3y").is_ok());
        for given in [
            None,
            Some(&b"Bearer k3"[..]),
            Some(b"Bearer k3yy"),
            Some(b"k3y"),
            Some(b"bearer k3y"),
        ] {
            assert_eq!(
                authorized(given, "k3y").unwrap_err().status,
                401,
                "{given:?}"
            );
        }
        assert!(
            authorized(Some(b"Bearer "), "").is_err(),
            "no key, no entry"
        );
    }
}
