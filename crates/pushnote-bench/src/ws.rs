//! The client side of a WebSocket, just what the load needs: the handshake, text frames out
//! (masked), and frames in, read into one buffer and handed out as byte slices without a copy
//! or a UTF-8 check. Tens of thousands of sessions read by one core at a million messages a
//! second leave no room for a general-purpose client's per-frame allocations and wake-ups.
//!
//! Servers here send each message in one frame; a fragmented one is reported as an error, not
//! reassembled. Pings are answered as they arrive.

use std::io;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub(crate) const OP_TEXT: u8 = 0x1;
pub(crate) const OP_BINARY: u8 = 0x2;
pub(crate) const OP_CLOSE: u8 = 0x8;
pub(crate) const OP_PING: u8 = 0x9;
pub(crate) const OP_PONG: u8 = 0xA;

/// The key of RFC 6455's example, and the accept value a server must answer it with.
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// The largest frame accepted from a server.
const MAX_FRAME: usize = 64 << 20;
/// How much room a read asks for.
pub(crate) const READ_ROOM: usize = 8 * 1024;

/// What arrived.
pub enum Incoming<'a> {
    /// A text frame's payload.
    Text(&'a [u8]),
    /// The server closed the WebSocket, with this code if it gave one.
    Close(Option<u16>),
}

/// An open WebSocket connection, client side.
pub struct Ws {
    stream: TcpStream,
    buf: Vec<u8>,
    /// Where the unread bytes of `buf` start.
    start: usize,
    /// The state of the masking keys' generator.
    mask: u32,
}

fn bad(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

impl Ws {
    /// Upgrades `stream` to a WebSocket at `url` (`ws://host[:port]/path`).
    pub async fn connect(mut stream: TcpStream, url: &str) -> io::Result<Ws> {
        let rest = url
            .strip_prefix("ws://")
            .ok_or_else(|| bad(format!("not a ws:// URL: {url}")))?;
        let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let path = if path.is_empty() { "/" } else { path };
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await?;
        let mut buf = Vec::with_capacity(1024);
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if buf.len() > 16 * 1024 {
                return Err(bad("handshake response too long"));
            }
            if stream.read_buf(&mut buf).await? == 0 {
                return Err(bad("connection closed during the handshake"));
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        if !head.starts_with("http/1.1 101") {
            let status = head.lines().next().unwrap_or("").to_owned();
            return Err(bad(format!("handshake refused: {status}")));
        }
        if !head.contains(&ACCEPT.to_ascii_lowercase()) {
            return Err(bad("handshake answered with a wrong Sec-WebSocket-Accept"));
        }
        let mask = rand::random::<u32>() | 1;
        Ok(Ws {
            stream,
            buf,
            start: head_end,
            mask,
        })
    }

    /// Sends one text message.
    pub async fn send_text(&mut self, text: &str) -> io::Result<()> {
        self.send(OP_TEXT, text.as_bytes()).await
    }

    /// Sends a close frame and waits (as long as the caller lets it) for the server's close.
    pub async fn close(&mut self) -> io::Result<()> {
        self.send(OP_CLOSE, &1000u16.to_be_bytes()).await?;
        while !matches!(self.next().await?, Incoming::Close(_)) {}
        Ok(())
    }

    async fn send(&mut self, opcode: u8, payload: &[u8]) -> io::Result<()> {
        let frame = masked(opcode, payload, &mut self.mask);
        self.stream.write_all(&frame).await
    }

    /// The connection, the bytes read but not yet consumed, and the masking keys' state: for
    /// reading on without the async runtime (`reader.rs`).
    pub fn into_parts(self) -> (TcpStream, Vec<u8>, u32) {
        let Ws {
            stream,
            mut buf,
            start,
            mask,
        } = self;
        buf.drain(..start);
        (stream, buf, mask)
    }

    /// The next text frame or close; pings are answered on the way. An error when the
    /// connection fails, ends, or breaks the protocol.
    pub async fn next(&mut self) -> io::Result<Incoming<'_>> {
        loop {
            let Some((opcode, from, to)) = self.parse()? else {
                self.fill().await?;
                continue;
            };
            match opcode {
                OP_TEXT => return Ok(Incoming::Text(&self.buf[from..to])),
                OP_CLOSE => {
                    let payload = &self.buf[from..to];
                    let code =
                        (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
                    return Ok(Incoming::Close(code));
                }
                OP_PING => {
                    let payload = self.buf[from..to].to_vec();
                    self.send(OP_PONG, &payload).await?;
                }
                OP_BINARY | OP_PONG => {}
                other => return Err(bad(format!("unexpected opcode {other:#x}"))),
            }
        }
    }

    /// The next whole frame in the buffer, consumed: its opcode and where its payload is.
    fn parse(&mut self) -> io::Result<Option<(u8, usize, usize)>> {
        let Some((opcode, header, len)) = frame_at(&self.buf[self.start..])? else {
            return Ok(None);
        };
        let from = self.start + header;
        self.start = from + len;
        Ok(Some((opcode, from, from + len)))
    }

    /// Reads more bytes, first dropping those already consumed.
    async fn fill(&mut self) -> io::Result<()> {
        if self.start == self.buf.len() {
            self.buf.clear();
        } else if self.start > 0 {
            self.buf.drain(..self.start);
        }
        self.start = 0;
        self.buf.reserve(READ_ROOM);
        if self.stream.read_buf(&mut self.buf).await? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection ended",
            ));
        }
        Ok(())
    }
}

/// A client frame: `payload` masked with the next key from the xorshift32 state `mask`. Keys
/// need only vary here: the peer is a server under test, not an intermediary to confuse.
pub(crate) fn masked(opcode: u8, payload: &[u8], mask: &mut u32) -> Vec<u8> {
    *mask ^= *mask << 13;
    *mask ^= *mask >> 17;
    *mask ^= *mask << 5;
    let key = mask.to_be_bytes();
    let mut frame = Vec::with_capacity(payload.len() + 14);
    frame.push(0x80 | opcode);
    match payload.len() {
        n if n < 126 => frame.push(0x80 | n as u8),
        n if n <= 0xFFFF => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&key);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    frame
}

/// The opcode, header length and payload length of the whole server frame `b` starts with;
/// `None` while it is incomplete.
pub(crate) fn frame_at(b: &[u8]) -> io::Result<Option<(u8, usize, usize)>> {
    if b.len() < 2 {
        return Ok(None);
    }
    if b[0] & 0x80 == 0 || b[0] & 0x0F == 0 {
        return Err(bad("fragmented frames are not supported"));
    }
    if b[1] & 0x80 != 0 {
        return Err(bad("the server masked a frame"));
    }
    let (len, header) = match b[1] & 0x7F {
        126 if b.len() >= 4 => (usize::from(u16::from_be_bytes([b[2], b[3]])), 4),
        127 if b.len() >= 10 => {
            let mut n = [0; 8];
            n.copy_from_slice(&b[2..10]);
            (
                usize::try_from(u64::from_be_bytes(n)).unwrap_or(usize::MAX),
                10,
            )
        }
        126 | 127 => return Ok(None),
        n => (usize::from(n), 2),
    };
    if len > MAX_FRAME {
        return Err(bad(format!("a frame of {len} bytes")));
    }
    if b.len() < header + len {
        return Ok(None);
    }
    Ok(Some((b[0] & 0x0F, header, len)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_of_each_length_encoding_are_found_once_whole() {
        let mut short = vec![0x81, 3];
        short.extend_from_slice(b"abc");
        assert_eq!(frame_at(&short).unwrap(), Some((OP_TEXT, 2, 3)));
        assert_eq!(frame_at(&short[..4]).unwrap(), None);

        let mut medium = vec![0x81, 126, 0x01, 0x00];
        medium.resize(4 + 256, b'x');
        assert_eq!(frame_at(&medium).unwrap(), Some((OP_TEXT, 4, 256)));
        assert_eq!(frame_at(&medium[..3]).unwrap(), None);
        assert_eq!(frame_at(&medium[..100]).unwrap(), None);

        let mut long = vec![0x88, 127, 0, 0, 0, 0, 0, 1, 0, 0];
        long.resize(10 + 65536, 0);
        assert_eq!(frame_at(&long).unwrap(), Some((OP_CLOSE, 10, 65536)));
        assert_eq!(frame_at(&long[..9]).unwrap(), None);
    }

    #[test]
    fn fragments_masked_and_huge_frames_are_errors() {
        assert!(frame_at(&[0x01, 0]).is_err(), "FIN unset");
        assert!(frame_at(&[0x80, 0]).is_err(), "a continuation");
        assert!(frame_at(&[0x81, 0x81, 1, 2, 3, 4, 0]).is_err(), "masked");
        assert!(
            frame_at(&[0x81, 127, 0, 0, 0, 1, 0, 0, 0, 0]).is_err(),
            "4 GiB"
        );
    }
}
