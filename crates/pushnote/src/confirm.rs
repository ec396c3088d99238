//! Confirmed publishes: the request an app sends to the forwarder's `--confirm` socket and the
//! reply that gives each message's position once the forwarder holds it (pure;
//! `docs/PROTOCOL.md` §2b).
//!
//! A request is one ZeroMQ multipart message, `[id, topic_1, …, topic_n, body]`: an id of 1 to
//! [`MAX_ID_BYTES`] bytes the reply repeats, one or more topics as on the bus (NUL-terminated,
//! with or without the room for a stamp), and the body they share. All of it, every frame,
//! is at most the forwarder's `--max-message-bytes`. The reply is `[id, status, detail]`:
//! status `ok` with the positions, in the topics' order, each as a stamp ([`wire::stamp_bytes`],
//! 8 bytes), or a refusal's [`Refusal`] code with a sentence saying why. A refused request
//! published nothing.

use crate::wire::{self, Position};

/// The longest request id a forwarder repeats; a request with a longer one is refused with an
/// empty id.
pub const MAX_ID_BYTES: usize = 64;

/// The status of a reply whose request was published.
pub const OK: &[u8] = b"ok";

/// Why a confirmed publish was refused; nothing of its request was published.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The request, every frame, is larger than the forwarder's `--max-message-bytes`.
    TooLarge,
    /// A topic is longer than `--max-topic-bytes`.
    TopicTooLong,
    /// Not `[id, topic…, body]` with an id of 1 to [`MAX_ID_BYTES`] bytes and NUL-terminated
    /// topics (each followed by nothing or by the room for a stamp), or a topic of the
    /// forwarder's own replies.
    Malformed,
}

impl Refusal {
    /// Every refusal, in the order of the forwarder's counters.
    pub const ALL: [Refusal; 3] = [Refusal::TooLarge, Refusal::TopicTooLong, Refusal::Malformed];

    /// The status frame of the reply, and the metric's label.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::TooLarge => "too_large",
            Refusal::TopicTooLong => "topic_too_long",
            Refusal::Malformed => "malformed",
        }
    }

    /// The refusal a status frame names.
    pub fn from_status(status: &[u8]) -> Option<Refusal> {
        Refusal::ALL
            .into_iter()
            .find(|r| r.as_str().as_bytes() == status)
    }
}

/// What a forwarder takes from a request: the length of each topic up to and including its
/// NUL.
pub struct Checked {
    /// Each topic's length without what follows its NUL, in the request's order.
    pub topic_lens: Vec<usize>,
}

/// The limits a forwarder checks a request against.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// The longest topic, up to and including its NUL.
    pub max_topic_bytes: usize,
    /// The largest request, every frame.
    pub max_message_bytes: usize,
}

/// Checks a request's frames after the id: topics and body.
pub fn check<F: AsRef<[u8]>>(id: &[u8], rest: &[F], limits: Limits) -> Result<Checked, Refusal> {
    let bytes = id.len() + rest.iter().map(|f| f.as_ref().len()).sum::<usize>();
    if bytes > limits.max_message_bytes {
        return Err(Refusal::TooLarge);
    }
    if id.is_empty() || id.len() > MAX_ID_BYTES {
        return Err(Refusal::Malformed);
    }
    let [topics @ .., _body] = rest else {
        return Err(Refusal::Malformed);
    };
    if topics.is_empty() {
        return Err(Refusal::Malformed);
    }
    let mut topic_lens = Vec::with_capacity(topics.len());
    for topic in topics {
        let topic = topic.as_ref();
        let len = wire::topic_len(topic);
        if len.unwrap_or(topic.len()) > limits.max_topic_bytes {
            return Err(Refusal::TopicTooLong);
        }
        let len = len.ok_or(Refusal::Malformed)?;
        if topic.starts_with(crate::recover::REPLY_TOPIC_PREFIX)
            || !matches!(topic.len() - len, 0 | wire::STAMP_BYTES)
        {
            return Err(Refusal::Malformed);
        }
        topic_lens.push(len);
    }
    Ok(Checked { topic_lens })
}

/// The detail frame of an `ok` reply: the positions, each as a stamp.
pub fn encode_positions(positions: &[Position]) -> Vec<u8> {
    positions
        .iter()
        .flat_map(|&p| wire::stamp_bytes(p))
        .collect()
}

/// The positions of an `ok` reply's detail frame; `None` if it is not whole stamps.
pub fn decode_positions(detail: &[u8]) -> Option<Vec<Position>> {
    if !detail.len().is_multiple_of(wire::STAMP_BYTES) {
        return None;
    }
    detail
        .chunks_exact(wire::STAMP_BYTES)
        .map(|c| c.try_into().ok().map(wire::read_stamp))
        .collect()
}

/// The sentence of a refusal's detail frame, naming the limits.
pub fn explain(refusal: Refusal, limits: Limits) -> String {
    match refusal {
        Refusal::TooLarge => format!(
            "the request is over the {} bytes the forwarder takes (--max-message-bytes)",
            limits.max_message_bytes
        ),
        Refusal::TopicTooLong => format!(
            "a topic is over the {} bytes the forwarder takes (--max-topic-bytes)",
            limits.max_topic_bytes
        ),
        Refusal::Malformed => format!(
            "not [id, topic..., body] with an id of 1 to {MAX_ID_BYTES} bytes and NUL-terminated \
             topics"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_topic_bytes: 16,
        max_message_bytes: 64,
    };

    #[test]
    fn a_request_is_checked_whole() {
        let ok = check(
            b"1",
            &[&b"all\0"[..], b"user:7\0\0\0\0\0\0\0\0\0", b"{}"],
            LIMITS,
        );
        assert_eq!(ok.unwrap().topic_lens, vec![4, 7]);
        for (id, rest, refusal) in [
            (&b""[..], vec![&b"all\0"[..], b"{}"], Refusal::Malformed),
            (b"1", vec![b"{}"], Refusal::Malformed),
            (b"1", vec![b"all", b"{}"], Refusal::Malformed),
            (b"1", vec![b"all\0xx", b"{}"], Refusal::Malformed),
            (
                b"1",
                vec![b"user:0123456789abcdef\0", b"{}"],
                Refusal::TopicTooLong,
            ),
            (b"1", vec![b"all\0", &[b' '; 64]], Refusal::TooLarge),
        ] {
            assert_eq!(check(id, &rest, LIMITS).err(), Some(refusal), "{rest:?}");
        }
        let long_id = [b'1'; MAX_ID_BYTES + 1];
        let limits = Limits {
            max_message_bytes: 1024,
            ..LIMITS
        };
        assert_eq!(
            check(&long_id, &[&b"all\0"[..], b"{}"], limits).err(),
            Some(Refusal::Malformed)
        );
    }

    #[test]
    fn positions_travel_as_stamps() {
        let positions = [
            Position {
                epoch: 3,
                offset: 9,
            },
            Position {
                epoch: u32::MAX,
                offset: 1,
            },
        ];
        let detail = encode_positions(&positions);
        assert_eq!(detail.len(), 16);
        assert_eq!(decode_positions(&detail).unwrap(), positions);
        assert_eq!(decode_positions(&detail[1..]), None);
        for r in Refusal::ALL {
            assert_eq!(Refusal::from_status(r.as_str().as_bytes()), Some(r));
        }
        assert_eq!(Refusal::from_status(OK), None);
    }
}
