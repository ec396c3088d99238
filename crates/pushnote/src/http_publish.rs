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
//! The request carries `Authorization: Bearer KEY`, compared with the configured key in
//! constant time. `docs/PROTOCOL.md` §2a gives the answers. Pure but for [`answer`].

use serde::Deserialize;
use serde_json::value::RawValue;
use subtle::ConstantTimeEq;

use crate::wire;
use crate::{PublishError, Publisher};

/// The most messages one request may carry.
pub const MAX_BATCH: usize = 1000;

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

/// Reads and checks a request's body: every message of it, or why none is published.
pub fn parse(body: &[u8]) -> Result<Vec<Item>, Refused> {
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| Refused::bad(format!("the body is not JSON: {e}"), None))?;
    let (items, batch) = match value {
        serde_json::Value::Array(items) => (items, true),
        one => (vec![one], false),
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
        .map(|(i, v)| item(v).map_err(|e| Refused::bad(e, batch.then_some(i))))
        .collect()
}

fn item(value: serde_json::Value) -> Result<Item, String> {
    let raw: Raw = serde_json::from_value(value).map_err(|e| {
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

/// Publishes `items` in order; how many were published, or why the rest were not (the bus
/// is not connected: 503).
fn publish(publisher: &Publisher, items: &[Item]) -> Result<usize, (usize, Refused)> {
    for (i, item) in items.iter().enumerate() {
        let sent = match item {
            Item::All { data } => publisher.notify_all(data),
            Item::Users { users, data } => publisher.notify(data, users.iter()),
            Item::Channel {
                channel,
                event,
                data,
            } => publisher.publish(channel, event, data),
        };
        if let Err(e) = sent {
            let status = match e {
                PublishError::NotConnected(_) => 503,
                _ => 500,
            };
            let refused = Refused {
                status,
                error: format!("{e}: {i} of {} published", items.len()),
                index: Some(i),
            };
            return Err((i, refused));
        }
    }
    Ok(items.len())
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

/// Checks `body` whole, then publishes it through `publisher` (which may block a moment:
/// call it where blocking is allowed).
pub fn answer(publisher: &Publisher, body: &[u8]) -> Answer {
    let items = match parse(body) {
        Ok(items) => items,
        Err(r) => return r.into(),
    };
    match publish(publisher, &items) {
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
