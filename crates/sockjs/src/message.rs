//! Messages a server sends to sessions, encoded once and shared by reference.
//!
//! A SockJS message is normally a string: the client's `onmessage` gets it as `e.data`. A server
//! may also send an already-encoded JSON *value* (`a[{"k":1}]` rather than `a["{\"k\":1}"]`),
//! which the stock client hands to the page as the parsed value. Either way the frame-ready
//! encoding is computed once, when the message is made, and every session holds a reference.
//!
//! A message may come in two forms (say, bare and with its place in a stream): each session
//! takes the one it asked for ([`crate::Session::set_form`]), and the others share the same
//! message.

use std::sync::{Arc, OnceLock};

use crate::frame;
use crate::ws::codec::OutFrame;

/// A message for one or many sessions. Cloning is a reference-count increment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message(Arc<Encoded>);

struct Encoded {
    /// The JSON element that goes inside an `a[...]` frame, SockJS-escaped.
    json: Box<str>,
    /// What the raw WebSocket transport sends, where it differs from `json`.
    raw: Option<Box<str>>,
    /// The whole WebSocket frame `a[json]`, made by the first session that writes this message
    /// on its own and shared by all the others; it starts at the offset given.
    ws_frame: OnceLock<(Box<[u8]>, usize)>,
    /// The message's second form, if it has one.
    second: Second,
}

/// Makes a message's second form from the message and the number given with it.
type MakeSecond = fn(&Message, u64) -> Message;

/// A message's second form: none, made with the message, or made when a session first takes
/// it (most messages are never taken in their second form, and never pay for it).
enum Second {
    None,
    Made(Message),
    Later(MakeSecond, u64, OnceLock<Message>),
}

impl PartialEq for Encoded {
    fn eq(&self, other: &Encoded) -> bool {
        let second = |e: &Encoded| match &e.second {
            Second::None => None,
            Second::Made(m) => Some(m.clone()),
            Second::Later(_, _, made) => made.get().cloned(),
        };
        self.json == other.json && self.raw == other.raw && second(self) == second(other)
    }
}

impl Eq for Encoded {}

impl std::fmt::Debug for Encoded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let second = match &self.second {
            Second::None => None,
            Second::Made(m) => Some(m.as_json()),
            Second::Later(_, _, made) => Some(made.get().map_or("(not made yet)", |m| m.as_json())),
        };
        f.debug_struct("Message")
            .field("json", &self.json)
            .field("raw", &self.raw)
            .field("second", &second)
            .finish()
    }
}

/// Which form of a message a session takes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Form {
    /// The message as made.
    #[default]
    First,
    /// Its second form, where it has one ([`Message::with_second_form`]); the first otherwise.
    Second,
}

impl Message {
    /// A string message: the client receives exactly `text`.
    pub fn text(text: &str) -> Message {
        Message(Arc::new(Encoded {
            json: frame::quote(text).into_boxed_str(),
            raw: Some(text.into()),
            ws_frame: OnceLock::new(),
            second: Second::None,
        }))
    }

    /// A JSON value message from valid JSON text (for example a `serde_json::value::RawValue`):
    /// SockJS clients receive the value itself; raw WebSocket clients receive its JSON text.
    /// Numbers and key order are kept as written; white space is removed.
    pub fn json(json_text: &str) -> Message {
        Message(Arc::new(Encoded {
            json: frame::compact_json(json_text).into_boxed_str(),
            raw: None,
            ws_frame: OnceLock::new(),
            second: Second::None,
        }))
    }

    /// A JSON value message from any serializable value.
    pub fn from_value<T: serde::Serialize + ?Sized>(value: &T) -> serde_json::Result<Message> {
        serde_json::to_string(value).map(|s| Message::json(&s))
    }

    /// This message, with `second` as its second form.
    pub fn with_second_form(self, second: Message) -> Message {
        self.with_second(Second::Made(second))
    }

    /// This message, with the second form `make` makes of it and `arg`, made when a session
    /// first takes the message in that form (and kept from then on). A function and a number,
    /// not a closure: a message that is never taken in its second form allocates nothing for
    /// it.
    pub fn with_second_form_by(self, make: MakeSecond, arg: u64) -> Message {
        self.with_second(Second::Later(make, arg, OnceLock::new()))
    }

    fn with_second(mut self, second: Second) -> Message {
        // A message no one else holds yet (one just made) takes its second form in place.
        if let Some(first) = Arc::get_mut(&mut self.0) {
            first.second = second;
            return self;
        }
        Message(Arc::new(Encoded {
            json: self.0.json.clone(),
            raw: self.0.raw.clone(),
            ws_frame: OnceLock::new(),
            second,
        }))
    }

    /// The message in `form`.
    pub fn in_form(&self, form: Form) -> &Message {
        match (form, &self.0.second) {
            (Form::Second, Second::Made(second)) => second,
            (Form::Second, Second::Later(make, arg, made)) => made.get_or_init(|| make(self, *arg)),
            _ => self,
        }
    }

    /// The element of an `a[...]` frame that carries this message.
    pub fn as_json(&self) -> &str {
        &self.0.json
    }

    /// What the raw WebSocket transport sends for this message.
    pub fn as_raw(&self) -> &str {
        self.0.raw.as_deref().unwrap_or(&self.0.json)
    }

    /// The WebSocket frame that carries this message alone to a SockJS client, `a[json]`.
    pub(crate) fn ws_frame(&self) -> &[u8] {
        let (bytes, start) = self.0.ws_frame.get_or_init(|| {
            // Made in place, in memory of its exact size: "a[", the message, "]".
            let mut out = OutFrame::text_with_capacity(self.as_json().len() + 3);
            frame::push_array(out.payload(), [self.as_json()]);
            let (bytes, start) = out.finish();
            (bytes.into_boxed_slice(), start)
        });
        &bytes[*start..]
    }

    /// The size this message takes in a session's queue, for its byte limit.
    pub fn queued_len(&self) -> usize {
        self.0.json.len()
    }
}

/// The WebSocket frame `a[m1,m2,…]` that carries `messages` together, each in `form`; the
/// bytes to write start at the returned offset.
pub(crate) fn ws_frame_of(messages: &[Message], form: Form) -> (Vec<u8>, usize) {
    // "a[", the messages, a comma between each two, "]".
    let len: usize = messages
        .iter()
        .map(|m| m.in_form(form).as_json().len() + 1)
        .sum();
    let mut out = OutFrame::text_with_capacity(len + 2);
    frame::push_array(
        out.payload(),
        messages.iter().map(|m| m.in_form(form).as_json()),
    );
    out.finish()
}

/// Messages that go to many sessions together, framed once: a WebSocket session that has
/// nothing else queued takes them as one shared frame ([`crate::Session::send_burst_now`]).
#[derive(Debug)]
pub struct Burst {
    messages: Vec<Message>,
    /// The form the frame carries the messages in.
    form: Form,
    /// The frame for all of them, from `start` on.
    frame: Vec<u8>,
    start: usize,
}

impl Burst {
    /// `messages`, in order, framed together.
    pub fn new(messages: Vec<Message>) -> Burst {
        Burst::in_form(messages, Form::First)
    }

    /// `messages`, in order, framed together in `form`, for the sessions that take it (the
    /// others are given the messages one by one).
    pub fn in_form(messages: Vec<Message>, form: Form) -> Burst {
        let (frame, start) = ws_frame_of(&messages, form);
        Burst {
            messages,
            form,
            frame,
            start,
        }
    }

    /// The form the frame carries the messages in.
    pub fn form(&self) -> Form {
        self.form
    }

    /// The messages, in order.
    pub fn messages(&self) -> &[Message] {
        &self.messages
    }

    /// The size of the WebSocket frame that carries them all, in bytes.
    pub fn ws_frame_len(&self) -> usize {
        self.frame.len() - self.start
    }

    /// The WebSocket frame that carries them all to a SockJS client.
    pub(crate) fn ws_frame(&self) -> &[u8] {
        &self.frame[self.start..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_quoted_for_frames_and_raw_for_raw_websocket() {
        let m = Message::text("he said \"hi\"\u{2028}");
        assert_eq!(m.as_json(), r#""he said \"hi\"\u2028""#);
        assert_eq!(m.as_raw(), "he said \"hi\"\u{2028}");
    }

    #[test]
    fn json_values_stay_values() {
        let m = Message::json("{ \"msg\": \"Hi all!\" }");
        assert_eq!(m.as_json(), r#"{"msg":"Hi all!"}"#);
        assert_eq!(m.as_raw(), r#"{"msg":"Hi all!"}"#);
        let s = Message::from_value("just a string").unwrap();
        assert_eq!(s.as_json(), r#""just a string""#);
    }

    #[test]
    fn a_second_form_made_later_is_made_once_and_only_when_taken() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static MADE: AtomicUsize = AtomicUsize::new(0);
        fn make(first: &Message, arg: u64) -> Message {
            MADE.fetch_add(1, Ordering::Relaxed);
            Message::json(&format!("{{\"n\":{},\"arg\":{arg}}}", first.as_json()))
        }
        let m = Message::json("7").with_second_form_by(make, 12);
        assert_eq!(m.in_form(Form::First).as_json(), "7");
        assert_eq!(
            MADE.load(Ordering::Relaxed),
            0,
            "not taken in its second form yet"
        );
        let c = m.clone();
        assert_eq!(m.in_form(Form::Second).as_json(), r#"{"n":7,"arg":12}"#);
        assert!(std::ptr::eq(
            m.in_form(Form::Second).as_json(),
            c.in_form(Form::Second).as_json()
        ));
        assert_eq!(MADE.load(Ordering::Relaxed), 1);
        assert_eq!(
            m,
            Message::json("7").with_second_form(Message::json(r#"{"n":7,"arg":12}"#))
        );
    }

    #[test]
    fn clones_share_one_encoding() {
        let m = Message::json("[1,2,3]");
        let c = m.clone();
        assert!(std::ptr::eq(m.as_json(), c.as_json()));
        assert!(std::ptr::eq(m.ws_frame(), c.ws_frame()));
        assert_eq!(&m.ws_frame()[2..], b"a[[1,2,3]]");
    }

    #[test]
    fn a_burst_is_one_frame_of_all_its_messages() {
        let b = Burst::new(vec![Message::json("1"), Message::text("two")]);
        assert_eq!(b.messages().len(), 2);
        assert_eq!(b.ws_frame(), b"\x81\x0aa[1,\"two\"]");
        let one = Message::json("[1,2,3]");
        assert_eq!(Burst::new(vec![one.clone()]).ws_frame(), one.ws_frame());
    }
}
