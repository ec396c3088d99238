//! Recovery on the bus (pure): a server asks the forwarder for what a topic's history holds
//! after a position, and the forwarder answers that server alone, down the connection the
//! topic's messages take, so its answer falls exactly between the messages it forwarded
//! before and those after.
//!
//! A server's socket is an XSUB: besides its subscriptions it sends [`Request`]s upstream,
//! one frame each, first byte [`REQUEST`] (ZeroMQ reads a first byte 0 or 1 as an
//! unsubscription or a subscription). The forwarder's socket is an XPUB, which hands it those
//! frames. It answers on the server's [`reply_topic`], to which only that server subscribes:
//! `[reply topic, header]` per kept message followed by the message's body frame, then
//! `[reply topic, header]` that ends the answer (docs/PROTOCOL.md §2, "Recovery on the bus").
//! Apps cannot publish on a reply topic: the forwarder drops what they send there.

use crate::wire::{self, Position};

/// A request's first byte.
pub const REQUEST: u8 = 3;

/// The first byte of a request of earlier releases, without an allowance: read as one with
/// no allowance of its own ([`u32::MAX`]).
pub const REQUEST_WITHOUT_ALLOWANCE: u8 = 2;

/// What reply topics start with.
pub const REPLY_TOPIC_PREFIX: &[u8] = b"rep:";

/// The bytes of a request before its topic.
const REQUEST_HEAD: usize = 1 + 8 + 8 + 1 + 8 + 4;

/// The bytes of a request of earlier releases before its topic.
const REQUEST_HEAD_WITHOUT_ALLOWANCE: usize = REQUEST_HEAD - 4;

/// The bytes of a reply header.
pub const HEADER_BYTES: usize = 8 + 1 + 8;

/// A server's question about one topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request<'a> {
    /// Which server asks: the forwarder answers on its [`reply_topic`].
    pub server: u64,
    /// The server's number for the request, repeated in the answer.
    pub id: u64,
    /// The last position the page saw; `None` asks for the topic's position alone.
    pub since: Option<Position>,
    /// The most bytes of kept bodies the answer may bring: past it, the answer gives none and
    /// ends [`End::Busy`].
    pub max_bytes: u32,
    /// The topic, with its NUL.
    pub topic: &'a [u8],
}

impl Request<'_> {
    /// The frame a server sends.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(REQUEST_HEAD + self.topic.len());
        out.push(REQUEST);
        out.extend_from_slice(&self.server.to_be_bytes());
        out.extend_from_slice(&self.id.to_be_bytes());
        out.push(u8::from(self.since.is_some()));
        out.extend_from_slice(&self.since.map_or([0; 8], wire::stamp_bytes));
        out.extend_from_slice(&self.max_bytes.to_be_bytes());
        out.extend_from_slice(self.topic);
        out
    }

    /// Reads a frame a server sent; `None` if it is not a well-formed request.
    pub fn decode(frame: &[u8]) -> Option<Request<'_>> {
        let head = match frame.first() {
            Some(&REQUEST) => REQUEST_HEAD,
            Some(&REQUEST_WITHOUT_ALLOWANCE) => REQUEST_HEAD_WITHOUT_ALLOWANCE,
            _ => return None,
        };
        if frame.len() <= head {
            return None;
        }
        let u64_at = |at: usize| u64::from_be_bytes(frame[at..at + 8].try_into().expect("8"));
        let since = match frame[17] {
            0 => None,
            1 => Some(wire::read_stamp(frame[18..26].try_into().expect("8"))),
            _ => return None,
        };
        let max_bytes = match head {
            REQUEST_HEAD => u32::from_be_bytes(frame[26..30].try_into().expect("4")),
            _ => u32::MAX,
        };
        let topic = &frame[head..];
        if topic.last() != Some(&0) || topic[..topic.len() - 1].contains(&0) {
            return None;
        }
        Some(Request {
            server: u64_at(1),
            id: u64_at(9),
            since,
            max_bytes,
            topic,
        })
    }
}

/// The topic on which the forwarder answers `server`.
pub fn reply_topic(server: u64) -> Vec<u8> {
    let mut t = REPLY_TOPIC_PREFIX.to_vec();
    t.extend_from_slice(format!("{server:016x}").as_bytes());
    t.push(0);
    t
}

/// How an answer ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// The request gave no position: the topic's position alone.
    Position,
    /// Every message after the position came before this end.
    Recovered,
    /// The position is of another epoch (the forwarder restarted, or forgot the topic): what
    /// the topic's current epoch holds came before this end, from its first.
    Epoch,
    /// The position is past the topic's last message.
    Future,
    /// The history no longer reaches back to the position; nothing was given.
    Evicted,
    /// What the position missed would pass the request's allowance or what the forwarder
    /// may replay for now (`pushnote-mq --recovery-rate`); nothing was given.
    Busy,
}

/// One part of an answer, as its header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// A kept message at `position`; its body is the next frame.
    Message { id: u64, position: Position },
    /// The answer's end; `position` is the topic's last message's.
    End {
        id: u64,
        position: Position,
        end: End,
    },
}

impl Part {
    pub fn encode(self) -> [u8; HEADER_BYTES] {
        let (id, kind, position) = match self {
            Part::Message { id, position } => (id, 0, position),
            Part::End { id, position, end } => {
                let kind = match end {
                    End::Position => 1,
                    End::Recovered => 2,
                    End::Epoch => 3,
                    End::Future => 4,
                    End::Evicted => 5,
                    End::Busy => 6,
                };
                (id, kind, position)
            }
        };
        let mut out = [0; HEADER_BYTES];
        out[..8].copy_from_slice(&id.to_be_bytes());
        out[8] = kind;
        out[9..].copy_from_slice(&wire::stamp_bytes(position));
        out
    }

    pub fn decode(header: &[u8]) -> Option<Part> {
        let header: &[u8; HEADER_BYTES] = header.try_into().ok()?;
        let id = u64::from_be_bytes(header[..8].try_into().expect("8"));
        let position = wire::read_stamp(header[9..].try_into().expect("8"));
        let end = match header[8] {
            0 => return Some(Part::Message { id, position }),
            1 => End::Position,
            2 => End::Recovered,
            3 => End::Epoch,
            4 => End::Future,
            5 => End::Evicted,
            6 => End::Busy,
            _ => return None,
        };
        Some(Part::End { id, position, end })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_parts_read_back_as_written() {
        let at = Position {
            epoch: 7,
            offset: 42,
        };
        for since in [None, Some(at)] {
            let r = Request {
                server: u64::MAX - 1,
                id: 3,
                since,
                max_bytes: 1 << 20,
                topic: b"user:42\0",
            };
            assert_eq!(Request::decode(&r.encode()), Some(r));
        }
        let parts = [
            Part::Message {
                id: 1,
                position: at,
            },
            Part::End {
                id: 2,
                position: at,
                end: End::Evicted,
            },
            Part::End {
                id: 4,
                position: at,
                end: End::Busy,
            },
        ];
        for p in parts {
            assert_eq!(Part::decode(&p.encode()), Some(p));
        }
    }

    #[test]
    fn a_request_of_earlier_releases_reads_as_one_with_no_allowance_of_its_own() {
        let at = Position {
            epoch: 7,
            offset: 42,
        };
        let mut old = vec![REQUEST_WITHOUT_ALLOWANCE];
        old.extend_from_slice(&5u64.to_be_bytes());
        old.extend_from_slice(&6u64.to_be_bytes());
        old.push(1);
        old.extend_from_slice(&wire::stamp_bytes(at));
        old.extend_from_slice(b"all\0");
        let r = Request::decode(&old).unwrap();
        assert_eq!((r.server, r.id, r.since), (5, 6, Some(at)));
        assert_eq!((r.max_bytes, r.topic), (u32::MAX, &b"all\0"[..]));
    }

    #[test]
    fn malformed_frames_are_not_requests() {
        let good = Request {
            server: 1,
            id: 1,
            since: None,
            max_bytes: 0,
            topic: b"all\0",
        }
        .encode();
        assert!(Request::decode(&good[..good.len() - 1]).is_none(), "no NUL");
        assert!(Request::decode(&good[..REQUEST_HEAD]).is_none(), "no topic");
        let mut bad = good.clone();
        bad[17] = 9;
        assert!(Request::decode(&bad).is_none(), "since flag");
        let mut bad = good.clone();
        bad[0] = 1;
        assert!(Request::decode(&bad).is_none(), "a subscription");
        let mut two_nuls = good[..good.len() - 1].to_vec();
        two_nuls.extend_from_slice(b"\0x\0");
        assert!(Request::decode(&two_nuls).is_none());
        assert!(Part::decode(&[0; HEADER_BYTES - 1]).is_none());
        let mut unknown = Part::End {
            id: 1,
            position: Position {
                epoch: 1,
                offset: 1,
            },
            end: End::Busy,
        }
        .encode();
        unknown[8] = 7;
        assert!(Part::decode(&unknown).is_none(), "an end of no kind");
        assert_eq!(reply_topic(255), b"rep:00000000000000ff\0");
    }
}
