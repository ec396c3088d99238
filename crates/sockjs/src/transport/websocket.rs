//! The WebSocket transports: SockJS-framed (`<prefix>/<server>/<session>/websocket`) and raw
//! (`<prefix>/websocket`).
//!
//! One task per connection runs [`serve`]: it writes what the session's queue holds (all of it
//! in one frame on the framed transport), reads what the client sends and hands each message to
//! the application, and when the session is idle sends heartbeats: an `h` frame on the framed
//! transport, and a WebSocket ping on both. Browsers answer pings by themselves, so a peer that
//! has answered nothing since the previous heartbeat is gone (a dead host, a dropped network)
//! and its session is reaped, instead of lingering until TCP gives up minutes later.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::time::{sleep, timeout, Instant};
use warp::ws::{Message as WsMessage, WebSocket};

use crate::frame;
use crate::registry::Service;
use crate::session::Batch;
use crate::{CloseCode, Handler, Message, Session};

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
    /// Close the WebSocket without a SockJS close frame (the protocol's answer to broken JSON).
    Drop(CloseCode),
    /// The peer is gone, or a write failed: nothing more can be sent.
    Gone,
}

pub(crate) async fn serve<H: Handler>(ws: WebSocket, framing: Framing, service: Arc<Service<H>>) {
    let options = &service.options;
    let handler = &service.handler;
    let session = Session::new(options.queue);
    let (mut tx, mut rx) = ws.split();
    let write_timeout = options.write_timeout;
    if framing == Framing::SockJs && !write(&mut tx, frame::OPEN.to_owned(), write_timeout).await {
        return;
    }
    handler.on_open(&session);

    let heartbeat = sleep(options.heartbeat_interval);
    tokio::pin!(heartbeat);
    // Whether the peer has sent anything (a message, a pong) since the last heartbeat.
    let mut heard = true;
    let mut batch: Vec<Message> = Vec::new();
    let mut out = String::new();

    let end = loop {
        tokio::select! {
            next = session.next_batch(&mut batch) => match next {
                Batch::Messages => {
                    let ok = match framing {
                        Framing::SockJs => {
                            out.clear();
                            frame::push_array(&mut out, batch.iter().map(Message::as_json));
                            write(&mut tx, std::mem::take(&mut out), write_timeout).await
                        }
                        Framing::Raw => write_each(&mut tx, &batch, write_timeout).await,
                    };
                    batch.clear();
                    if !ok {
                        break End::Gone;
                    }
                    heartbeat.as_mut().reset(Instant::now() + options.heartbeat_interval);
                }
                Batch::Close(code) => break End::Close(code),
            },
            incoming = rx.next() => match incoming {
                None => break End::Gone,
                Some(Err(e)) => {
                    tracing::debug!(session = session.id(), error = %e, "websocket read failed");
                    // The one read error a live peer causes on purpose is an oversized message.
                    break if e.to_string().contains("too long") || e.to_string().contains("Space limit") {
                        End::Close(CloseCode::MESSAGE_TOO_BIG)
                    } else {
                        End::Gone
                    };
                }
                Some(Ok(m)) => {
                    heard = true;
                    if m.is_close() {
                        break End::Gone;
                    }
                    let Ok(text) = m.to_str() else {
                        // Binary, ping and pong messages carry nothing for the application.
                        continue;
                    };
                    if let Err(code) = deliver(&session, framing, text, handler.as_ref()) {
                        break End::Drop(code);
                    }
                }
            },
            () = &mut heartbeat => {
                if !std::mem::replace(&mut heard, false) {
                    tracing::debug!(session = session.id(), "websocket peer unresponsive; reaped");
                    break End::Gone;
                }
                let beat = async {
                    if framing == Framing::SockJs {
                        tx.feed(WsMessage::text(frame::HEARTBEAT)).await?;
                    }
                    tx.feed(WsMessage::ping(Vec::new())).await?;
                    tx.flush().await
                };
                if !matches!(timeout(write_timeout, beat).await, Ok(Ok(()))) {
                    break End::Gone;
                }
                heartbeat.as_mut().reset(Instant::now() + options.heartbeat_interval);
            }
        }
    };

    if session.mark_closed() {
        handler.on_close(&session);
    }
    let code = match end {
        End::Close(code) => {
            if framing == Framing::SockJs {
                let _ = write(&mut tx, frame::close(code.code, code.reason), write_timeout).await;
            }
            code
        }
        End::Drop(code) => code,
        End::Gone => return,
    };
    let close = WsMessage::close_with(code.code, code.reason);
    if let Ok(Ok(())) = timeout(write_timeout, tx.send(close)).await {
        // The closing handshake: wait (briefly) for the client's close frame, so the client
        // reads ours before the connection goes, instead of a reset.
        let _ = timeout(CLOSE_HANDSHAKE, async {
            while let Some(Ok(m)) = rx.next().await {
                if m.is_close() {
                    break;
                }
            }
        })
        .await;
    }
}

/// How long a closing server waits for the client to answer its close frame.
const CLOSE_HANDSHAKE: Duration = Duration::from_secs(1);

/// Hands what the client sent to the application. An error means the payload broke the
/// protocol and the connection must close.
fn deliver<H: Handler>(
    session: &Session,
    framing: Framing,
    text: &str,
    handler: &H,
) -> Result<(), CloseCode> {
    match framing {
        Framing::Raw => handler.on_message(session, text.to_owned()),
        Framing::SockJs => {
            if text.is_empty() {
                return Ok(());
            }
            let messages = frame::decode_messages(text).map_err(|_| CloseCode::BROKEN_JSON)?;
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

type Tx = futures_util::stream::SplitSink<WebSocket, WsMessage>;

/// Writes one text message; false when the peer is gone or did not take it in time.
async fn write(tx: &mut Tx, text: String, limit: Duration) -> bool {
    matches!(
        timeout(limit, tx.send(WsMessage::text(text))).await,
        Ok(Ok(()))
    )
}

async fn write_each(tx: &mut Tx, batch: &[Message], limit: Duration) -> bool {
    let send_all = async {
        for m in batch {
            tx.feed(WsMessage::text(m.as_raw())).await?;
        }
        tx.flush().await
    };
    matches!(timeout(limit, send_all).await, Ok(Ok(())))
}
