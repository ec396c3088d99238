//! The WebSocket wire format (RFC 6455 §5), server side: parsing what clients send, framing what
//! the server sends. Pure: no I/O, so every rule is unit- and property-tested here.
//!
//! What a server must enforce, and does:
//! - client frames are masked, reserved bits are zero, opcodes are known (protocol error, 1002);
//! - control frames are whole (FIN set) and at most 125 bytes (1002);
//! - continuation frames continue a message, and a new message waits for the last to end (1002);
//! - text messages are UTF-8, checked once the message is whole (1007);
//! - a message longer than the limit is refused from its frame header, before its payload is
//!   buffered.

/// The opcodes of RFC 6455 §5.2.
const CONTINUATION: u8 = 0x0;
const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;

/// The longest frame header: 2 bytes, an 8-byte length, a 4-byte mask.
const MAX_HEADER: usize = 14;

/// Room a server frame keeps in front of its payload for the header (no mask on server frames).
pub(crate) const HEADROOM: usize = 10;

/// A whole message or control frame from the client.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Incoming {
    Text(String),
    /// Binary messages carry nothing for SockJS; only their arrival counts.
    Binary,
    Ping(Vec<u8>),
    Pong,
    /// The client is closing, with its status code if it gave one.
    Close(Option<u16>),
}

/// Why the client's bytes cannot be read on: the connection closes with [`Fault::code`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fault {
    /// A frame that breaks RFC 6455.
    Protocol,
    /// A text message or close reason that is not UTF-8.
    BadUtf8,
    /// A message longer than the limit.
    TooBig,
}

impl Fault {
    /// The WebSocket close code for this fault (RFC 6455 §7.4.1).
    pub(crate) fn code(self) -> u16 {
        match self {
            Fault::Protocol => 1002,
            Fault::BadUtf8 => 1007,
            Fault::TooBig => 1009,
        }
    }
}

/// Takes the client's bytes as they arrive and yields whole messages. Holds no memory while
/// nothing is partly received, so an idle connection costs nothing here.
#[derive(Debug)]
pub(crate) struct Reader {
    /// Received bytes not yet parsed (a partial frame, or frames not yet taken).
    buf: Vec<u8>,
    /// Where the unparsed bytes in `buf` start.
    pos: usize,
    /// The data frames of a fragmented message so far: whether it is text, and its payload.
    partial: Option<(bool, Vec<u8>)>,
    /// The longest message accepted, in bytes.
    limit: usize,
}

/// A parsed frame header.
struct Header {
    fin: bool,
    opcode: u8,
    mask: [u8; 4],
    /// Header length in bytes.
    len: usize,
    /// Payload length in bytes.
    payload: usize,
}

impl Reader {
    pub(crate) fn new(limit: usize) -> Reader {
        Reader {
            buf: Vec::new(),
            pos: 0,
            partial: None,
            limit,
        }
    }

    /// Adds bytes read from the connection.
    pub(crate) fn push(&mut self, data: &[u8]) {
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// The next whole message or control frame, `None` until more bytes arrive.
    pub(crate) fn next(&mut self) -> Result<Option<Incoming>, Fault> {
        loop {
            let Some(header) = self.header()? else {
                return Ok(self.idle());
            };
            let end = self.pos + header.len + header.payload;
            if self.buf.len() < end {
                return Ok(None);
            }
            let mut payload = self.buf[self.pos + header.len..end].to_vec();
            self.pos = end;
            unmask(&mut payload, header.mask);
            if let Some(message) = self.frame(header, payload)? {
                return Ok(Some(message));
            }
        }
    }

    /// Frees the buffer once everything in it is parsed; `None` for [`Reader::next`].
    fn idle(&mut self) -> Option<Incoming> {
        if self.pos == self.buf.len() {
            self.buf = Vec::new();
            self.pos = 0;
        }
        None
    }

    /// Parses the header at `pos`, checking everything a header alone can break.
    fn header(&self) -> Result<Option<Header>, Fault> {
        let b = &self.buf[self.pos..];
        if b.len() < 2 {
            return Ok(None);
        }
        let fin = b[0] & 0x80 != 0;
        let opcode = b[0] & 0x0F;
        if b[0] & 0x70 != 0 || b[1] & 0x80 == 0 {
            // Reserved bits without an extension, or an unmasked client frame.
            return Err(Fault::Protocol);
        }
        let (payload, mut len) = match b[1] & 0x7F {
            126 if b.len() >= 4 => (u64::from(u16::from_be_bytes([b[2], b[3]])), 4),
            127 if b.len() >= 10 => {
                let n = u64::from_be_bytes(b[2..10].try_into().expect("8 bytes"));
                if n >> 63 != 0 {
                    return Err(Fault::Protocol);
                }
                (n, 10)
            }
            126 | 127 => return Ok(None),
            n => (u64::from(n), 2),
        };
        match opcode {
            TEXT | BINARY | CONTINUATION => {
                let so_far = self.partial.as_ref().map_or(0, |(_, data)| data.len());
                if payload > (self.limit.saturating_sub(so_far)) as u64 {
                    return Err(Fault::TooBig);
                }
                if (opcode == CONTINUATION) != self.partial.is_some() {
                    return Err(Fault::Protocol);
                }
            }
            CLOSE | PING | PONG if fin && payload <= 125 => {}
            _ => return Err(Fault::Protocol),
        }
        if b.len() < len + 4 {
            return Ok(None);
        }
        let mask = b[len..len + 4].try_into().expect("4 bytes");
        len += 4;
        debug_assert!(len <= MAX_HEADER);
        Ok(Some(Header {
            fin,
            opcode,
            mask,
            len,
            payload: payload as usize,
        }))
    }

    /// Takes one unmasked frame: a message when it completes one, `None` when it continues one.
    fn frame(&mut self, header: Header, payload: Vec<u8>) -> Result<Option<Incoming>, Fault> {
        let (text, data) = match header.opcode {
            PING => return Ok(Some(Incoming::Ping(payload))),
            PONG => return Ok(Some(Incoming::Pong)),
            CLOSE => return close(&payload).map(|code| Some(Incoming::Close(code))),
            CONTINUATION => {
                let (text, mut data) = self.partial.take().expect("checked by header()");
                data.extend_from_slice(&payload);
                (text, data)
            }
            opcode => (opcode == TEXT, payload),
        };
        if !header.fin {
            self.partial = Some((text, data));
            return Ok(None);
        }
        if !text {
            return Ok(Some(Incoming::Binary));
        }
        String::from_utf8(data)
            .map(|s| Some(Incoming::Text(s)))
            .map_err(|_| Fault::BadUtf8)
    }
}

/// The status code of a close frame's payload, checked as RFC 6455 §7.4 says.
fn close(payload: &[u8]) -> Result<Option<u16>, Fault> {
    match payload {
        [] => Ok(None),
        [_] => Err(Fault::Protocol),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            let valid = matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999);
            if !valid {
                return Err(Fault::Protocol);
            }
            std::str::from_utf8(reason).map_err(|_| Fault::BadUtf8)?;
            Ok(Some(code))
        }
    }
}

fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    for (i, b) in payload.iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
}

/// A server frame being built: its payload is appended after [`HEADROOM`] bytes that
/// [`OutFrame::finish`] fills with the header, so the frame is written without a copy.
pub(crate) struct OutFrame(String);

impl OutFrame {
    /// A text frame, with room for a payload of `payload` bytes without growing; append its
    /// payload to [`OutFrame::payload`].
    pub(crate) fn text_with_capacity(payload: usize) -> OutFrame {
        let mut s = String::with_capacity(HEADROOM + payload);
        for _ in 0..HEADROOM {
            s.push('\0');
        }
        OutFrame(s)
    }

    /// The frame's payload so far. Only append to it.
    pub(crate) fn payload(&mut self) -> &mut String {
        &mut self.0
    }

    /// The finished frame: the bytes to write start at the returned offset.
    pub(crate) fn finish(self) -> (Vec<u8>, usize) {
        let mut bytes = self.0.into_bytes();
        let len = bytes.len() - HEADROOM;
        let mut header = [0; HEADROOM];
        let n = put_header(&mut header, TEXT, len);
        let start = HEADROOM - n;
        bytes[start..HEADROOM].copy_from_slice(&header[..n]);
        (bytes, start)
    }
}

/// Appends a whole text frame carrying `payload`.
pub(crate) fn text(out: &mut Vec<u8>, payload: &str) {
    frame(out, TEXT, payload.as_bytes());
}

/// Appends a ping frame with an empty payload.
pub(crate) fn ping(out: &mut Vec<u8>) {
    frame(out, PING, &[]);
}

/// Appends a pong frame answering a ping's `payload`.
pub(crate) fn pong(out: &mut Vec<u8>, payload: &[u8]) {
    frame(out, PONG, payload);
}

/// Appends a close frame with `code` and as much of `reason` as a control frame holds.
pub(crate) fn close_frame(out: &mut Vec<u8>, code: u16, reason: &str) {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    frame(out, CLOSE, &payload);
}

fn frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    let mut header = [0; HEADROOM];
    let n = put_header(&mut header, opcode, payload.len());
    out.extend_from_slice(&header[..n]);
    out.extend_from_slice(payload);
}

/// Writes an unmasked, final frame header into `out`; returns its length.
fn put_header(out: &mut [u8; HEADROOM], opcode: u8, len: usize) -> usize {
    out[0] = 0x80 | opcode;
    if len < 126 {
        out[1] = len as u8;
        2
    } else if let Ok(len) = u16::try_from(len) {
        out[1] = 126;
        out[2..4].copy_from_slice(&len.to_be_bytes());
        4
    } else {
        out[1] = 127;
        out[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A masked client frame, as browsers send.
    fn client(fin: bool, opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
        let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n <= 0xFFFF => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        let mut body = payload.to_vec();
        unmask(&mut body, mask);
        out.extend_from_slice(&body);
        out
    }

    fn read_all(bytes: &[u8], limit: usize) -> Result<Vec<Incoming>, Fault> {
        let mut r = Reader::new(limit);
        r.push(bytes);
        let mut out = Vec::new();
        while let Some(m) = r.next()? {
            out.push(m);
        }
        Ok(out)
    }

    const M: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    #[test]
    fn the_rfc_examples_parse() {
        // RFC 6455 §5.7: a masked "Hello".
        let hello = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        assert_eq!(
            read_all(&hello, 100),
            Ok(vec![Incoming::Text("Hello".into())])
        );
        // The same message in two fragments.
        let mut two = client(false, TEXT, b"Hel", M);
        two.extend(client(true, CONTINUATION, b"lo", M));
        assert_eq!(
            read_all(&two, 100),
            Ok(vec![Incoming::Text("Hello".into())])
        );
    }

    #[test]
    fn control_frames_may_come_between_fragments() {
        let mut bytes = client(false, TEXT, b"a", M);
        bytes.extend(client(true, PING, b"p", M));
        bytes.extend(client(true, CONTINUATION, b"b", M));
        bytes.extend(client(true, PONG, b"", M));
        bytes.extend(client(true, CLOSE, &[0x03, 0xe8, b'o', b'k'], M));
        assert_eq!(
            read_all(&bytes, 100),
            Ok(vec![
                Incoming::Ping(b"p".to_vec()),
                Incoming::Text("ab".into()),
                Incoming::Pong,
                Incoming::Close(Some(1000)),
            ])
        );
    }

    #[test]
    fn broken_frames_are_protocol_errors() {
        let unmasked = [0x81, 0x01, b'a'];
        let reserved = [0xC1, 0x80, 0, 0, 0, 0];
        let bad_opcode = [0x83, 0x80, 0, 0, 0, 0];
        let fragmented_ping = client(false, PING, b"", M);
        let long_ping = client(true, PING, &[0; 126], M);
        let lone_continuation = client(true, CONTINUATION, b"a", M);
        let mut interleaved = client(false, TEXT, b"a", M);
        interleaved.extend(client(true, TEXT, b"b", M));
        let one_byte_close = client(true, CLOSE, &[3], M);
        let reserved_code = client(true, CLOSE, &1005u16.to_be_bytes(), M);
        let huge = [0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0];
        for bytes in [
            &unmasked[..],
            &reserved,
            &bad_opcode,
            &fragmented_ping,
            &long_ping,
            &lone_continuation,
            &interleaved,
            &one_byte_close,
            &reserved_code,
            &huge,
        ] {
            assert_eq!(
                read_all(bytes, 1 << 20),
                Err(Fault::Protocol),
                "{bytes:02x?}"
            );
        }
    }

    #[test]
    fn text_must_be_utf8_once_whole() {
        let bad = client(true, TEXT, &[0xff], M);
        assert_eq!(read_all(&bad, 100), Err(Fault::BadUtf8));
        // "é" split between two fragments is fine.
        let mut split = client(false, TEXT, &[0xc3], M);
        split.extend(client(true, CONTINUATION, &[0xa9], M));
        assert_eq!(read_all(&split, 100), Ok(vec![Incoming::Text("é".into())]));
        let bad_reason = client(true, CLOSE, &[0x03, 0xe8, 0xff], M);
        assert_eq!(read_all(&bad_reason, 100), Err(Fault::BadUtf8));
    }

    #[test]
    fn oversized_messages_are_refused_from_the_header() {
        // Only the header has arrived: the length alone refuses it.
        let header = &client(true, TEXT, &[b'a'; 300], M)[..8];
        assert_eq!(read_all(header, 200), Err(Fault::TooBig));
        // Fragments add up.
        let mut bytes = client(false, TEXT, &[b'a'; 150], M);
        bytes.extend(client(true, CONTINUATION, &[b'a'; 60], M));
        assert_eq!(read_all(&bytes, 200), Err(Fault::TooBig));
        assert_eq!(read_all(&bytes, 210).map(|m| m.len()), Ok(1));
    }

    #[test]
    fn an_idle_reader_holds_no_buffer() {
        let mut r = Reader::new(100);
        r.push(&client(true, TEXT, b"hi", M));
        assert_eq!(r.next(), Ok(Some(Incoming::Text("hi".into()))));
        assert_eq!(r.next(), Ok(None));
        assert_eq!(r.buf.capacity(), 0);
    }

    #[test]
    fn server_frames_have_minimal_headers() {
        for (len, header_len) in [(0, 2), (125, 2), (126, 4), (65535, 4), (65536, 10)] {
            let payload = "x".repeat(len);
            let mut out = Vec::new();
            text(&mut out, &payload);
            assert_eq!(out.len(), header_len + len);
            let mut f = OutFrame::text_with_capacity(0);
            f.payload().push_str(&payload);
            let (bytes, start) = f.finish();
            assert_eq!(&bytes[start..], &out[..]);
        }
        let mut out = Vec::new();
        close_frame(&mut out, 3000, "Go away!");
        assert_eq!(out, b"\x88\x0a\x0b\xb8Go away!");
        let mut long = Vec::new();
        close_frame(&mut long, 3000, &"é".repeat(100));
        // Cut to fit 125 bytes, at a character boundary: 2 + 61 × "é".
        assert_eq!(long[1], 124);
        assert!(std::str::from_utf8(&long[4..]).is_ok());
    }

    proptest! {
        /// However the bytes are split into reads, the same messages come out.
        #[test]
        fn any_split_of_the_stream_yields_the_same_messages(
            messages in prop::collection::vec(("\\PC{0,300}", 1usize..4), 1..8),
            cuts in prop::collection::vec(0usize..2000, 0..10),
            mask in any::<[u8; 4]>(),
        ) {
            let mut bytes = Vec::new();
            for (m, parts) in &messages {
                let b = m.as_bytes();
                let step = b.len().div_ceil(*parts).max(1);
                let chunks: Vec<&[u8]> = if b.is_empty() { vec![b] } else { b.chunks(step).collect() };
                for (i, c) in chunks.iter().enumerate() {
                    let op = if i == 0 { TEXT } else { CONTINUATION };
                    bytes.extend(client(i + 1 == chunks.len(), op, c, mask));
                }
            }
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (bytes.len() + 1)).collect();
            cuts.push(bytes.len());
            cuts.sort_unstable();
            let mut r = Reader::new(1 << 20);
            let mut got = Vec::new();
            let mut from = 0;
            for cut in cuts {
                r.push(&bytes[from..cut]);
                from = cut;
                while let Some(m) = r.next().unwrap() {
                    got.push(m);
                }
            }
            let want: Vec<Incoming> = messages.into_iter().map(|(m, _)| Incoming::Text(m)).collect();
            prop_assert_eq!(got, want);
        }
    }
}
