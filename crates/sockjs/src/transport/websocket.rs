//! The WebSocket transports: SockJS-framed (`<prefix>/<server>/<session>/websocket`) and raw
//! (`<prefix>/websocket`).
//!
//! One task per connection runs [`serve`]: it writes what the session's queue holds (all of it
//! in one frame on the framed transport), reads what the client sends and hands each message to
//! the application, and when the session is idle sends heartbeats: an `h` frame on the framed
//! transport, and a WebSocket ping on both. Browsers answer pings by themselves, so a peer that
//! has answered nothing since the previous heartbeat is gone (a dead host, a dropped network)
//! and its session is reaped, instead of lingering until TCP gives up minutes later.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::Either;
use tokio::time::{sleep, timeout, Instant};

use crate::admission::Client;
use crate::frame;
use crate::message::{ws_frame_of, Form};
use crate::registry::Service;
use crate::session::Batch;
use crate::ws::codec::{self, Fault, Incoming};
use crate::ws::{Conn, Read};
use crate::{CloseCode, Handler, Message, Options, Session};

/// How the messages of a session are put on the WebSocket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Framing {
    /// SockJS frames: `o`, `h`, `a[...]`, `c[...]`; clients send JSON arrays of strings.
    SockJs,
    /// One WebSocket text message per message, no frames; clients send plain text.
    Raw,
}

/// Why the connection loop ended.
enum End {
    /// Close with this code (the application asked, or the client misbehaved).
    Close(CloseCode),
    /// Close the WebSocket without a SockJS close frame (the protocol's answer to broken JSON,
    /// and to frames that break the WebSocket protocol).
    Drop(CloseCode),
    /// The peer closed, is gone, or a write failed: nothing more is sent but, for a peer
    /// that closed, the answer to its close frame.
    Gone,
}

/// Serves the WebSocket of a new session of `client`, or refuses it. The check is made before
/// either future exists, and a refusal's future is boxed, so that the future every open
/// WebSocket keeps for its life holds neither the client nor a refusal's state.
pub(crate) fn open<H: Handler>(
    conn: Conn,
    framing: Framing,
    service: Arc<Service<H>>,
    client: Client,
) -> impl Future<Output = ()> + Send {
    match service.admit_websocket(&client) {
        Ok(()) => Either::Left(serve(conn, framing, service)),
        Err(code) => {
            let write_timeout = service.options.write_timeout;
            Either::Right(Box::pin(refuse(conn, framing, code, write_timeout)))
        }
    }
}

async fn serve<H: Handler>(mut conn: Conn, framing: Framing, service: Arc<Service<H>>) {
    let options = &service.options;
    let handler = &service.handler;
    let session = Session::new(options.queue);
    let write_timeout = options.write_timeout;
    if framing == Framing::SockJs {
        let mut open = Vec::new();
        codec::text(&mut open, frame::OPEN);
        if !write(&mut conn, &open, write_timeout).await {
            return;
        }
        // From here on senders may write this session's frames themselves (Session::send_now).
        if let Some(stream) = conn.tcp() {
            session.write_directly(stream);
        }
    }
    handler.on_open(&session);
    // What the client sent right behind its handshake.
    if let Some(end) = take_incoming(&mut conn, &session, framing, handler.as_ref(), options).await
    {
        return finish(conn, session, framing, handler.as_ref(), end, write_timeout).await;
    }

    let heartbeat = sleep(options.heartbeat_interval);
    tokio::pin!(heartbeat);
    let mut last_write = Instant::now();
    // Whether the peer has sent anything (a message, a pong) since the last heartbeat.
    let mut heard = true;
    let mut batch: Vec<Message> = Vec::new();

    let end = loop {
        tokio::select! {
            next = session.next_batch(&mut batch) => match next {
                Batch::Messages => {
                    // The batch may be empty when a direct write left bytes unsent.
                    let ok = match framing {
                        Framing::SockJs => match batch.as_slice() {
                            [] => write_session(&mut conn, &session, &[], write_timeout).await,
                            [one] => {
                                write_session(&mut conn, &session, one.ws_frame(), write_timeout).await
                            }
                            many => {
                                let (bytes, start) = ws_frame_of(many, Form::First);
                                write_session(&mut conn, &session, &bytes[start..], write_timeout).await
                            }
                        },
                        Framing::Raw => {
                            let mut out = Vec::new();
                            for m in &batch {
                                codec::text(&mut out, m.as_raw());
                            }
                            write_session(&mut conn, &session, &out, write_timeout).await
                        }
                    };
                    batch.clear();
                    if !ok {
                        break End::Gone;
                    }
                    // The heartbeat is due an interval after the last write: rather than
                    // moving its timer on every write, it is put off when it fires.
                    last_write = Instant::now();
                }
                Batch::Close(code) => break End::Close(code),
            },
            read = conn.read() => {
                if let Read::Closed = read {
                    break End::Gone;
                }
                heard = true;
                if let Some(end) = take_incoming(&mut conn, &session, framing, handler.as_ref(), options).await {
                    break end;
                }
            },
            () = &mut heartbeat => {
                let due = last_write + options.heartbeat_interval;
                if due > Instant::now() {
                    heartbeat.as_mut().reset(due);
                    continue;
                }
                if !std::mem::replace(&mut heard, false) {
                    tracing::debug!(session = session.id(), "websocket peer unresponsive; reaped");
                    break End::Gone;
                }
                let mut beat = Vec::new();
                if framing == Framing::SockJs {
                    codec::text(&mut beat, frame::HEARTBEAT);
                }
                codec::ping(&mut beat);
                if !write_session(&mut conn, &session, &beat, write_timeout).await {
                    break End::Gone;
                }
                last_write = Instant::now();
                heartbeat.as_mut().reset(last_write + options.heartbeat_interval);
            }
        }
    };

    finish(conn, session, framing, handler.as_ref(), end, write_timeout).await;
}

/// Ends the session: tells the application, and closes as `end` says.
async fn finish<H: Handler>(
    mut conn: Conn,
    session: Session,
    framing: Framing,
    handler: &H,
    end: End,
    write_timeout: Duration,
) {
    // The code the session ends with, for the application's on_close.
    if let End::Close(code) | End::Drop(code) = &end {
        session.close(*code);
    }
    // Direct writes stop here; one may have left the rest of a frame to send first.
    let unsent = session.claim();
    if session.mark_closed() {
        handler.on_close(&session);
    }
    if let (Some(unsent), false) = (unsent, matches!(end, End::Gone)) {
        if !write(&mut conn, &unsent, write_timeout).await {
            return;
        }
    }
    let code = match end {
        End::Close(code) => {
            if framing == Framing::SockJs {
                let mut out = Vec::new();
                codec::text(&mut out, &frame::close(code.code, code.reason));
                if !write(&mut conn, &out, write_timeout).await {
                    return;
                }
            }
            code
        }
        End::Drop(code) => code,
        End::Gone => return,
    };
    let mut close = Vec::new();
    codec::close_frame(&mut close, code.code, code.reason);
    close_with(&mut conn, &close, write_timeout).await;
}

/// Writes `out` (ending with a close frame), then the closing handshake: waits (briefly) for
/// the client's close frame, so the client reads ours before the connection goes, instead of a
/// reset.
async fn close_with(conn: &mut Conn, out: &[u8], write_timeout: Duration) {
    if write(conn, out, write_timeout).await {
        let _ = timeout(CLOSE_HANDSHAKE, async {
            while let Read::Data = conn.read().await {
                while let Ok(Some(m)) = conn.next() {
                    if let Incoming::Close(_) = m {
                        return;
                    }
                }
            }
        })
        .await;
    }
}

/// Closes a connection whose session may not open, without opening it: the SockJS close frame
/// (no `o` before it), then the WebSocket close with the same code.
async fn refuse(mut conn: Conn, framing: Framing, code: CloseCode, write_timeout: Duration) {
    let mut out = Vec::new();
    if framing == Framing::SockJs {
        codec::text(&mut out, &frame::close(code.code, code.reason));
    }
    codec::close_frame(&mut out, code.code, code.reason);
    close_with(&mut conn, &out, write_timeout).await;
}

/// Handles every whole message among the bytes just read; `Some` when the connection ends.
async fn take_incoming<H: Handler>(
    conn: &mut Conn,
    session: &Session,
    framing: Framing,
    handler: &H,
    options: &Options,
) -> Option<End> {
    let write_timeout = options.write_timeout;
    loop {
        let incoming = match conn.next() {
            Ok(Some(incoming)) => incoming,
            Ok(None) => return None,
            Err(fault) => {
                tracing::debug!(session = session.id(), ?fault, "websocket protocol broken");
                return Some(match fault {
                    // The one fault a live peer causes on purpose is an oversized message.
                    Fault::TooBig => End::Close(CloseCode::MESSAGE_TOO_BIG),
                    Fault::Protocol | Fault::BadUtf8 => End::Drop(CloseCode {
                        code: fault.code(),
                        reason: "",
                    }),
                });
            }
        };
        match incoming {
            Incoming::Text(text) => {
                if let Err(end) =
                    deliver(session, framing, text, handler, options.max_message_bytes)
                {
                    return Some(end);
                }
            }
            Incoming::Binary | Incoming::Pong => {}
            Incoming::Ping(payload) => {
                let mut pong = Vec::new();
                codec::pong(&mut pong, &payload);
                if !write_session(conn, session, &pong, write_timeout).await {
                    return Some(End::Gone);
                }
            }
            Incoming::Close(code) => {
                // Answer the client's close with its own code (RFC 6455 §5.5.1), then go.
                let mut answer = Vec::new();
                match code {
                    Some(code) => codec::close_frame(&mut answer, code, ""),
                    None => codec::close_frame(&mut answer, 1000, ""),
                }
                let _ = write_session(conn, session, &answer, write_timeout).await;
                return Some(End::Gone);
            }
        }
    }
}

/// How long a closing server waits for the client to answer its close frame.
const CLOSE_HANDSHAKE: Duration = Duration::from_secs(1);

/// Hands what the client sent to the application. An error means the payload broke the
/// protocol, or held a message over `max_message_bytes` once decoded, and the connection must
/// close. (A raw WebSocket message is the message: the reader refused a longer one already.)
fn deliver<H: Handler>(
    session: &Session,
    framing: Framing,
    text: String,
    handler: &H,
    max_message_bytes: usize,
) -> Result<(), End> {
    match framing {
        Framing::Raw => handler.on_message(session, text),
        Framing::SockJs => {
            if text.is_empty() {
                return Ok(());
            }
            let messages =
                frame::decode_messages(&text).map_err(|_| End::Drop(CloseCode::BROKEN_JSON))?;
            if messages.iter().any(|m| m.len() > max_message_bytes) {
                return Err(End::Close(CloseCode::MESSAGE_TOO_BIG));
            }
            for m in messages {
                if session.is_closed() {
                    break;
                }
                handler.on_message(session, m);
            }
        }
    }
    Ok(())
}

/// Writes `frames` after what a direct write left unsent, with direct writes held off
/// meanwhile; false when the peer is gone or did not take them in time.
async fn write_session(conn: &mut Conn, session: &Session, frames: &[u8], limit: Duration) -> bool {
    let ok = match session.claim() {
        Some(unsent) => write(conn, &unsent, limit).await && write(conn, frames, limit).await,
        None => write(conn, frames, limit).await,
    };
    session.release();
    ok
}

/// Writes whole frames; false when the peer is gone or did not take them in time. What the
/// socket takes at once needs no timer.
async fn write(conn: &mut Conn, bytes: &[u8], limit: Duration) -> bool {
    let rest = match conn.write_now(bytes) {
        Ok(n) => &bytes[n..],
        Err(_) => return false,
    };
    rest.is_empty() || matches!(timeout(limit, conn.write(rest)).await, Ok(Ok(())))
}
