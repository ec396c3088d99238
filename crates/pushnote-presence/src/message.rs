//! The bus messages of presence (PROTOCOL §2d): every one on the topic [`TOPIC`], a JSON
//! object naming its server and sequence number.

use std::fmt::Write as _;

use pushnote::wire;
use serde::Deserialize;
use serde_json::value::RawValue;

/// The topic every presence message is sent on and every server subscribes to: `pres:` NUL.
pub const TOPIC: &[u8] = b"pres:\0";

/// A server's id on the bus: random at each start.
pub type ServerId = u64;

/// The id the forwarder sends its requests under: it keeps no members, and nothing of it is
/// tracked.
pub const FORWARDER: ServerId = 0;

/// The most bytes of one message's body that a server's state is cut into.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// One presence message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Forget what you know of `server`: its whole state follows.
    Reset { server: ServerId, n: u64 },
    /// On `channel`, `server` now has the members `added` (user, info) and no longer has the
    /// users `removed`.
    Members {
        server: ServerId,
        n: u64,
        channel: String,
        added: Vec<(String, String)>,
        removed: Vec<String>,
    },
    /// `server` is alive; `n` is the last number it used.
    Heartbeat { server: ServerId, n: u64 },
    /// Send your state: to every server, or only to `to`.
    Query {
        server: ServerId,
        n: u64,
        to: Option<ServerId>,
    },
}

/// Why a presence message could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

#[derive(Deserialize)]
struct Fields<'a> {
    k: &'a str,
    s: &'a str,
    n: u64,
    #[serde(default)]
    c: Option<String>,
    #[serde(default, borrow)]
    a: Option<Vec<(String, &'a RawValue)>>,
    #[serde(default)]
    d: Option<Vec<String>>,
    #[serde(default)]
    to: Option<&'a str>,
}

fn server_id(text: &str) -> Result<ServerId, Malformed> {
    if text.len() != 16 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Malformed);
    }
    ServerId::from_str_radix(text, 16).map_err(|_| Malformed)
}

fn quoted(out: &mut String, text: &str) {
    out.push_str(&serde_json::to_string(text).expect("a string always serializes"));
}

impl Message {
    /// The server that sent it.
    pub fn server(&self) -> ServerId {
        match self {
            Message::Reset { server, .. }
            | Message::Members { server, .. }
            | Message::Heartbeat { server, .. }
            | Message::Query { server, .. } => *server,
        }
    }

    /// Reads a message's body.
    pub fn decode(body: &[u8]) -> Result<Message, Malformed> {
        let f: Fields<'_> = serde_json::from_slice(body).map_err(|_| Malformed)?;
        let server = server_id(f.s)?;
        let n = f.n;
        Ok(match f.k {
            "r" => Message::Reset { server, n },
            "h" => Message::Heartbeat { server, n },
            "q" => Message::Query {
                server,
                n,
                to: f.to.map(server_id).transpose()?,
            },
            "m" => {
                let channel = f.c.ok_or(Malformed)?;
                wire::check_presence_channel(&channel).map_err(|_| Malformed)?;
                let added: Vec<(String, String)> =
                    f.a.unwrap_or_default()
                        .into_iter()
                        .map(|(user, info)| (user, info.get().to_owned()))
                        .collect();
                let removed = f.d.unwrap_or_default();
                let users = added.iter().map(|(u, _)| u).chain(&removed);
                if users.into_iter().any(|u| wire::check_user_id(u).is_err()) {
                    return Err(Malformed);
                }
                Message::Members {
                    server,
                    n,
                    channel,
                    added,
                    removed,
                }
            }
            _ => return Err(Malformed),
        })
    }

    /// The message's body.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = String::with_capacity(64);
        let (k, server, n) = match self {
            Message::Reset { server, n } => ("r", server, n),
            Message::Members { server, n, .. } => ("m", server, n),
            Message::Heartbeat { server, n } => ("h", server, n),
            Message::Query { server, n, .. } => ("q", server, n),
        };
        let _ = write!(out, "{{\"k\":\"{k}\",\"s\":\"{server:016x}\",\"n\":{n}");
        match self {
            Message::Members {
                channel,
                added,
                removed,
                ..
            } => {
                out.push_str(",\"c\":");
                quoted(&mut out, channel);
                out.push_str(",\"a\":[");
                for (i, (user, info)) in added.iter().enumerate() {
                    out.push_str(if i == 0 { "[" } else { ",[" });
                    quoted(&mut out, user);
                    out.push(',');
                    out.push_str(info);
                    out.push(']');
                }
                out.push_str("],\"d\":[");
                for (i, user) in removed.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    quoted(&mut out, user);
                }
                out.push(']');
            }
            Message::Query { to: Some(to), .. } => {
                let _ = write!(out, ",\"to\":\"{to:016x}\"");
            }
            _ => {}
        }
        out.push('}');
        out.into_bytes()
    }
}

/// `channel`'s changes from `server` as messages of at most [`MAX_BODY_BYTES`] each (one
/// member more, if a single member is larger), numbered from `*n` + 1 on.
pub fn members(
    server: ServerId,
    n: &mut u64,
    channel: &str,
    added: Vec<(String, String)>,
    removed: Vec<String>,
) -> Vec<Message> {
    let mut out = Vec::new();
    let fresh = |n: &mut u64| {
        *n += 1;
        Message::Members {
            server,
            n: *n,
            channel: channel.to_owned(),
            added: Vec::new(),
            removed: Vec::new(),
        }
    };
    let mut current = fresh(n);
    let mut bytes = 0;
    let mut full = |current: &mut Message, bytes: &mut usize, more: usize, n: &mut u64| {
        if *bytes > 0 && *bytes + more > MAX_BODY_BYTES {
            out.push(std::mem::replace(current, fresh(n)));
            *bytes = 0;
        }
        *bytes += more;
    };
    for (user, info) in added {
        full(&mut current, &mut bytes, user.len() + info.len() + 8, n);
        if let Message::Members { added, .. } = &mut current {
            added.push((user, info));
        }
    }
    for user in removed {
        full(&mut current, &mut bytes, user.len() + 4, n);
        if let Message::Members { removed, .. } = &mut current {
            removed.push(user);
        }
    }
    out.push(current);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_read_back_as_written() {
        let all = [
            Message::Reset { server: 1, n: 7 },
            Message::Heartbeat {
                server: u64::MAX,
                n: 0,
            },
            Message::Query {
                server: 5,
                n: 2,
                to: Some(0xabc),
            },
            Message::Query {
                server: 5,
                n: 3,
                to: None,
            },
            Message::Members {
                server: 9,
                n: 4,
                channel: "presence-room".into(),
                added: vec![("a\"b".into(), r#"{"x":1.50}"#.into())],
                removed: vec!["7".into()],
            },
        ];
        for m in all {
            let body = m.encode();
            assert_eq!(
                Message::decode(&body),
                Ok(m),
                "{}",
                String::from_utf8_lossy(&body)
            );
        }
        let text = Message::Reset { server: 1, n: 7 }.encode();
        assert_eq!(text, br#"{"k":"r","s":"0000000000000001","n":7}"#);
    }

    #[test]
    fn what_breaks_the_rules_is_malformed() {
        for bad in [
            &br#"{"k":"x","s":"0000000000000001","n":1}"#[..],
            br#"{"k":"r","s":"1","n":1}"#,
            br#"{"k":"m","s":"0000000000000001","n":1,"c":"private-x"}"#,
            br#"{"k":"m","s":"0000000000000001","n":1,"c":"presence-x","d":[""]}"#,
            br#"{"k":"m","s":"0000000000000001","n":1,"c":"presence-x","a":[["u"]]}"#,
            b"not json",
        ] {
            assert_eq!(
                Message::decode(bad),
                Err(Malformed),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn a_large_state_is_cut_into_numbered_messages_of_bounded_size() {
        let info = format!("\"{}\"", "i".repeat(1000));
        let added: Vec<_> = (0..200).map(|i| (i.to_string(), info.clone())).collect();
        let mut n = 10;
        let parts = members(3, &mut n, "presence-x", added, vec!["gone".into()]);
        assert!(parts.len() >= 4, "{}", parts.len());
        assert_eq!(n, 10 + parts.len() as u64);
        let mut users = 0;
        for (i, part) in parts.iter().enumerate() {
            assert!(part.encode().len() <= MAX_BODY_BYTES + 1100);
            let Message::Members { n, added, .. } = part else {
                panic!("{part:?}")
            };
            assert_eq!(*n, 11 + i as u64);
            users += added.len();
        }
        assert_eq!(users, 200);
    }
}
