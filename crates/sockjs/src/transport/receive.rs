//! The receiving side of every HTTP transport: a response that writes a session's frames.
//!
//! The response body is a stream that yields one chunk per frame (HTTP/1.1 sends each as its
//! own chunk, which is what clients and the protocol suite expect):
//! 1. the transport's prelude, if it has one;
//! 2. `o` if this request opened the session, or the close frame if the session is closed,
//!    or `c[2010,…]` if another request is receiving on it, or `c[3004,…]` if the client may
//!    not open another session now;
//! 3. everything queued, as one `a[…]` frame per wake-up; `h` after the heartbeat interval
//!    of silence; the close frame when the session closes.
//!
//! A polling transport ends after one frame; a streaming one once it has sent the response
//! limit. Then the session waits for the client's next request (the disconnect delay runs).
//! If the client drops the connection mid-response, the stream is dropped unfinished and the
//! session is closed as interrupted.

use std::convert::Infallible;
use std::sync::Arc;

use futures_util::stream;
use hyper::body::Bytes;
use tokio::time::sleep;
use warp::http::{header, HeaderMap, HeaderValue};
use warp::Reply;

use super::HttpReceiver;
use crate::admission::Client;
use crate::frame;
use crate::http::{self, Resp};
use crate::registry::{Attach, Service, Ticket};
use crate::session::Batch;
use crate::{CloseCode, Handler, Message, Session};

/// The response of a receiving request of `client` on session `key`.
pub(crate) fn respond<H: Handler, T: HttpReceiver>(
    service: Arc<Service<H>>,
    key: String,
    client: Client,
    transport: T,
    request: &HeaderMap,
) -> Resp {
    let mut response = Resp::default();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(transport.content_type()),
    );
    http::no_cache(h);
    if T::CORS {
        http::cors(h, request);
    }
    http::session_cookie(h, &service.options, request);
    let receiver = Receiver {
        service,
        key,
        client,
        transport,
        stage: Stage::Prelude,
        ticket: None,
        sent: 0,
        batch: Vec::new(),
    };
    let chunks = stream::unfold(receiver, |mut r| async move {
        let chunk = r.next_chunk().await?;
        Some((Ok::<_, Infallible>(chunk), r))
    });
    *response.body_mut() = warp::reply::stream(chunks).into_response().into_body();
    response
}

enum Stage {
    Prelude,
    Attach,
    /// Receiving on this session.
    Frames(Session),
    /// The last frame is out: detach and end the response.
    Finish,
    Done,
}

struct Receiver<H: Handler, T> {
    service: Arc<Service<H>>,
    key: String,
    client: Client,
    transport: T,
    stage: Stage,
    /// Held while this request is the session's receiver.
    ticket: Option<Ticket>,
    /// Frame bytes sent on this response, for the response limit.
    sent: usize,
    batch: Vec<Message>,
}

impl<H: Handler, T: HttpReceiver> Receiver<H, T> {
    async fn next_chunk(&mut self) -> Option<Bytes> {
        loop {
            match self.stage {
                Stage::Prelude => {
                    self.stage = Stage::Attach;
                    if let Some(prelude) = self.transport.prelude() {
                        return Some(Bytes::from(prelude));
                    }
                }
                Stage::Attach => match self.service.attach(&self.key, &self.client) {
                    Attach::Busy => {
                        self.stage = Stage::Done;
                        return Some(self.close_frame(CloseCode::ANOTHER_CONNECTION));
                    }
                    Attach::Closed(code) | Attach::Refused(code) => {
                        self.stage = Stage::Done;
                        return Some(self.close_frame(code));
                    }
                    Attach::Opened(session, ticket) => {
                        self.ticket = Some(ticket);
                        self.stage = if T::STREAMING {
                            Stage::Frames(session)
                        } else {
                            Stage::Finish
                        };
                        return Some(self.frame(frame::OPEN));
                    }
                    Attach::Resumed(session, ticket) => {
                        self.ticket = Some(ticket);
                        self.stage = Stage::Frames(session);
                    }
                },
                Stage::Frames(ref session) => {
                    let session = session.clone();
                    return Some(self.next_frame(&session).await);
                }
                Stage::Finish => {
                    self.stage = Stage::Done;
                    if let Some(ticket) = self.ticket.take() {
                        self.service.detach(ticket, false);
                    }
                    return None;
                }
                Stage::Done => return None,
            }
        }
    }

    /// Waits for the session's next frame: messages, its close, or a heartbeat.
    async fn next_frame(&mut self, session: &Session) -> Bytes {
        let heartbeat = self.service.options.heartbeat_interval;
        let next = tokio::select! {
            batch = session.next_batch(&mut self.batch) => Some(batch),
            () = sleep(heartbeat) => None,
        };
        let chunk = match next {
            Some(Batch::Messages) => {
                let mut array = String::new();
                frame::push_array(&mut array, self.batch.iter().map(Message::as_json));
                self.batch.clear();
                self.frame(&array)
            }
            Some(Batch::Close(code)) => {
                self.stage = Stage::Finish;
                let chunk = self.close_frame(code);
                if session.mark_closed() {
                    self.service.handler.on_close(session);
                }
                return chunk;
            }
            None => self.frame(frame::HEARTBEAT),
        };
        self.sent += chunk.len();
        if !T::STREAMING || self.sent >= self.service.options.response_limit {
            self.stage = Stage::Finish;
        }
        chunk
    }

    fn frame(&self, frame: &str) -> Bytes {
        let mut out = String::with_capacity(frame.len() + 32);
        self.transport.wrap(frame, &mut out);
        Bytes::from(out)
    }

    fn close_frame(&self, code: CloseCode) -> Bytes {
        self.frame(&frame::close(code.code, code.reason))
    }
}

impl<H: Handler, T> Drop for Receiver<H, T> {
    /// The response was dropped before it ended: the client went away mid-request.
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            self.service.detach(ticket, true);
        }
    }
}
