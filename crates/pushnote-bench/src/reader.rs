//! Reading the `fanout` load's WebSocket sessions without the async runtime: one thread per
//! core, each polling its share of the sockets and reading every one that is ready until it
//! would block.
//!
//! At a million deliveries a second the load reads about a hundred thousand frames a second,
//! and it must not be the bottleneck of what it measures. Most of a read's cost is the
//! kernel's (the read, and the TCP acknowledgement it sends), which no client avoids; a task
//! per session added a wake-up, a poll and a select for every frame on top of it
//! (docs/BENCHMARKS.md, "The load's own cost"). Sessions are opened and subscribed on the runtime
//! (`session.rs`) and handed over here once they are quiet.

use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use crate::scan::Scan;
use crate::session::{Report, Shared};
use crate::ws::{self, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, READ_ROOM};

/// How often a reader looks at the stop flag while nothing arrives.
const STOP_CHECK: Duration = Duration::from_millis(50);
/// How long the sessions are given, after the stop, to answer the close frame.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// An open WebSocket session handed over from the runtime.
pub struct Handover {
    /// The session's number in the run.
    pub index: usize,
    pub stream: std::net::TcpStream,
    /// Bytes already read and not yet consumed.
    pub unread: Vec<u8>,
    /// The masking keys' state.
    pub mask: u32,
}

/// Reads `sessions` until `stop` is set, counting the load's messages as `scan` finds them
/// (`Report::tally`); `received(index, seq)` is called for each. Then closes each session
/// still open, and returns every session's report with its index.
pub fn read(
    sessions: Vec<Handover>,
    scan: Scan,
    shared: &Shared,
    received: &impl Fn(usize, u64),
    stop: &AtomicBool,
) -> io::Result<Vec<(usize, Report)>> {
    let poll = Poll::new()?;
    let mut conns = Vec::with_capacity(sessions.len());
    for (token, s) in sessions.into_iter().enumerate() {
        let mut conn = Conn::new(s);
        poll.registry()
            .register(&mut conn.stream, Token(token), Interest::READABLE)?;
        conns.push(conn);
    }
    let mut reader = Reader { poll, conns };
    // Bytes read during the handshake may hold whole frames: count them first.
    for token in 0..reader.conns.len() {
        reader.conns[token].consume(scan, shared, received);
    }
    reader.run(scan, shared, received, || stop.load(Ordering::Relaxed))?;
    for conn in reader.conns.iter_mut().filter(|c| c.report.ended.is_none()) {
        conn.closing = true;
        let frame = ws::masked(OP_CLOSE, &1000u16.to_be_bytes(), &mut conn.mask);
        // A close frame is a few bytes; a socket that cannot take them is left to the drop.
        let _ = conn.stream.write(&frame);
    }
    let deadline = Instant::now() + CLOSE_WAIT;
    reader.run(scan, shared, received, || Instant::now() >= deadline)?;
    Ok(reader
        .conns
        .into_iter()
        .map(|c| (c.index, c.report))
        .collect())
}

struct Reader {
    poll: Poll,
    conns: Vec<Conn>,
}

impl Reader {
    /// Reads what arrives until `done()` or until every session has ended.
    fn run(
        &mut self,
        scan: Scan,
        shared: &Shared,
        received: &impl Fn(usize, u64),
        done: impl Fn() -> bool,
    ) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        let mut open = self.conns.iter().filter(|c| !c.finished()).count();
        while open > 0 && !done() {
            match self.poll.poll(&mut events, Some(STOP_CHECK)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            for event in &events {
                let conn = &mut self.conns[event.token().0];
                if conn.finished() {
                    continue;
                }
                conn.read_ready(scan, shared, received);
                if conn.finished() {
                    open -= 1;
                }
            }
        }
        Ok(())
    }
}

/// One session's connection and what it has read.
struct Conn {
    index: usize,
    stream: TcpStream,
    /// Bytes `start..end` are read and not yet consumed; the rest is room for reads.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    mask: u32,
    report: Report,
    /// The load has sent its close frame: what arrives now is not counted.
    closing: bool,
    /// The server's close frame, or the end of the connection, has been seen.
    gone: bool,
}

impl Conn {
    fn new(s: Handover) -> Conn {
        let end = s.unread.len();
        let mut buf = s.unread;
        buf.resize(end.max(READ_ROOM), 0);
        Conn {
            index: s.index,
            stream: TcpStream::from_std(s.stream),
            buf,
            start: 0,
            end,
            mask: s.mask,
            report: Report::default(),
            closing: false,
            gone: false,
        }
    }

    /// Nothing more is read from this session: it ended, or it answered the close.
    fn finished(&self) -> bool {
        self.gone || (self.report.ended.is_some() && !self.closing)
    }

    fn end(&mut self, why: String) {
        self.gone = true;
        if !self.closing && self.report.ended.is_none() {
            self.report.ended = Some(why);
        }
    }

    /// Reads until the socket would block (readiness is edge-triggered), consuming every
    /// whole frame as it comes.
    fn read_ready(&mut self, scan: Scan, shared: &Shared, received: &impl Fn(usize, u64)) {
        loop {
            if self.start == self.end {
                (self.start, self.end) = (0, 0);
            } else if self.end == self.buf.len() {
                if self.start > 0 {
                    self.buf.copy_within(self.start..self.end, 0);
                    (self.start, self.end) = (0, self.end - self.start);
                } else {
                    // One frame larger than the buffer: make room for it.
                    self.buf.resize(self.buf.len() * 2, 0);
                }
            }
            match self.stream.read(&mut self.buf[self.end..]) {
                Ok(0) => return self.end("error: connection ended".into()),
                Ok(n) => {
                    self.end += n;
                    self.consume(scan, shared, received);
                    if self.finished() {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return self.end(format!("error: {e}")),
            }
        }
    }

    /// Handles every whole frame in the buffer.
    fn consume(&mut self, scan: Scan, shared: &Shared, received: &impl Fn(usize, u64)) {
        while !self.finished() {
            let (opcode, header, len) = match ws::frame_at(&self.buf[self.start..self.end]) {
                Ok(Some(frame)) => frame,
                Ok(None) => return,
                Err(e) => return self.end(format!("error: {e}")),
            };
            let from = self.start + header;
            self.start = from + len;
            let payload = &self.buf[from..from + len];
            match opcode {
                _ if self.closing => {
                    if opcode == OP_CLOSE {
                        self.gone = true;
                    }
                }
                OP_TEXT if payload.starts_with(b"c") => {
                    shared.closed_by_server.fetch_add(1, Ordering::Relaxed);
                    let why = String::from_utf8_lossy(payload).into_owned();
                    self.end(why);
                }
                OP_TEXT => {
                    let index = self.index;
                    self.report
                        .tally(payload, scan, shared, &|seq| received(index, seq));
                }
                OP_CLOSE => {
                    shared.closed_by_server.fetch_add(1, Ordering::Relaxed);
                    let code =
                        (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
                    self.end(format!("closed: {code:?}"));
                }
                OP_PING => {
                    let pong = ws::masked(OP_PONG, payload, &mut self.mask);
                    // Pings are rare and small; one the socket cannot take at once ends the
                    // session visibly rather than leaving the server without its answer.
                    if !matches!(self.stream.write(&pong), Ok(n) if n == pong.len()) {
                        self.end("error: could not answer a ping at once".into());
                    }
                }
                OP_BINARY | OP_PONG => {}
                other => self.end(format!("error: unexpected opcode {other:#x}")),
            }
        }
    }
}
