//! One SockJS client session over WebSocket: connect from a chosen loopback source address,
//! subscribe with a token, and record every message until told to stop.
//!
//! Messages the load publishes are JSON objects: broadcasts `{"b": SEQ, "t": MICROS}`, targeted
//! ones `{"u": USER, "s": SEQ, "t": MICROS}`, where `t` is when they were published.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::net::TcpSocket;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::scan;
use crate::track::{Histogram, Stream};

/// Counters every session adds to.
#[derive(Default)]
pub struct Shared {
    pub deliveries: AtomicU64,
    pub latency: Histogram,
    pub connects: AtomicU64,
    /// Churning sessions that have left again (connects − leaves are open now).
    pub leaves: AtomicU64,
    /// Churning sessions that failed to connect or subscribe.
    pub failed: AtomicU64,
    pub closed_by_server: AtomicU64,
}

/// What a session saw, returned when it stops.
#[derive(Debug, Default)]
pub struct Report {
    pub broadcasts: Stream,
    pub targeted: Stream,
    /// The server closed the session (code), or the connection failed.
    pub ended: Option<String>,
}

#[derive(Deserialize)]
struct Msg {
    b: Option<u64>,
    s: Option<u64>,
    t: Option<u64>,
    name: Option<String>,
}

pub fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// The `i`th loopback source address: spreading connections over 127.0.0.x keeps each
/// source address far from its ephemeral-port limit.
pub fn source(i: usize) -> SocketAddr {
    let host = 1 + (i % 250) as u8;
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, host)), 0)
}

/// How long a session waits for the reply to its subscribe request.
const SUBSCRIBE_WAIT: Duration = Duration::from_secs(10);

/// Reads until the reply to a subscribe request. Under load the reply may share a frame with
/// broadcasts, in any position, so every message of each frame is looked at; the broadcasts
/// around it are not recorded (sessions checked for loss subscribe before the load starts).
async fn subscribed(
    ws: &mut tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
) -> anyhow::Result<()> {
    loop {
        match ws.next().await {
            Some(Ok(WsMessage::Text(t))) if t.starts_with('a') => {
                let msgs: Vec<Msg> = serde_json::from_str(&t[1..])?;
                match msgs.iter().find_map(|m| m.name.as_deref()) {
                    Some("pushnote:subscribed") => return Ok(()),
                    Some(other) => anyhow::bail!("subscribe refused: {other} {t:.200}"),
                    None => {}
                }
            }
            Some(Ok(_)) => {}
            other => anyhow::bail!("closed while subscribing: {other:?}"),
        }
    }
}

/// An open SockJS session over WebSocket.
pub struct Session {
    pub ws: tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
}

impl Session {
    /// Opens a session on `ws_url` (a SockJS `…/<server>/<session>/websocket` URL) at
    /// `server`, from source address `src`. With a token it subscribes and waits for the reply.
    pub async fn open(
        server: SocketAddr,
        ws_url: &str,
        src: SocketAddr,
        token: Option<&str>,
    ) -> anyhow::Result<Session> {
        let socket = TcpSocket::new_v4()?;
        socket.bind(src)?;
        let stream = socket.connect(server).await?;
        stream.set_nodelay(true)?;
        let (mut ws, _) = tokio_tungstenite::client_async(ws_url, stream).await?;
        match ws.next().await {
            Some(Ok(WsMessage::Text(t))) if t == "o" => {}
            other => anyhow::bail!("expected the open frame, got {other:?}"),
        }
        if let Some(token) = token {
            let request = serde_json::json!({"name": "subscribe", "data": {"token": token}});
            let frame = serde_json::to_string(&[request.to_string()])?;
            ws.send(WsMessage::Text(frame)).await?;
            tokio::time::timeout(SUBSCRIBE_WAIT, subscribed(&mut ws))
                .await
                .map_err(|_| anyhow::anyhow!("no subscribe reply within {SUBSCRIBE_WAIT:?}"))??;
        }
        Ok(Session { ws })
    }

    /// Reads until `stop` turns true, recording what arrives. `last_broadcast` is raised to one
    /// past the highest broadcast sequence received, for the publisher's flow control.
    pub async fn run(
        mut self,
        shared: Arc<Shared>,
        last_broadcast: Option<Arc<AtomicU64>>,
        mut stop: watch::Receiver<bool>,
    ) -> Report {
        let mut report = Report::default();
        let stopped = stop.changed();
        tokio::pin!(stopped);
        loop {
            let text = match self.next_text(&shared, stopped.as_mut()).await {
                Ok(t) => t,
                Err(ended) => {
                    report.ended = ended;
                    break;
                }
            };
            if !text.starts_with('a') {
                continue;
            }
            let Ok(msgs) = serde_json::from_str::<Vec<Msg>>(&text[1..]) else {
                report.ended = Some(format!("unreadable frame {text:.80}"));
                break;
            };
            let now = now_micros();
            for m in msgs {
                if let Some(t) = m.t {
                    shared.latency.record(now.saturating_sub(t));
                    shared.deliveries.fetch_add(1, Ordering::Relaxed);
                }
                if let Some(b) = m.b {
                    report.broadcasts.record(b);
                    if let Some(last) = &last_broadcast {
                        last.fetch_max(b + 1, Ordering::Relaxed);
                    }
                } else if let Some(s) = m.s {
                    report.targeted.record(s);
                }
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), self.ws.close(None)).await;
        report
    }

    /// Sends a subscribe request with `token` without waiting for a reply (servers of the
    /// original protocol send none).
    pub async fn send_subscribe(&mut self, token: &str) -> anyhow::Result<()> {
        let request = serde_json::json!({"name": "subscribe", "data": {"token": token}});
        let frame = serde_json::to_string(&[request.to_string()])?;
        self.ws.send(WsMessage::Text(frame)).await?;
        Ok(())
    }

    /// Reads until `stop` turns true, counting the `fanout` load's broadcasts with a scan
    /// instead of a JSON parser (see `scan.rs`); `received(seq)` is called for each one.
    pub async fn count(
        mut self,
        stream: u8,
        shared: Arc<Shared>,
        received: impl Fn(u64),
        mut stop: watch::Receiver<bool>,
    ) -> Report {
        let mut report = Report::default();
        let stopped = stop.changed();
        tokio::pin!(stopped);
        loop {
            match self.next_text(&shared, stopped.as_mut()).await {
                Ok(text) => report.tally(&text, stream, &shared, &received),
                Err(ended) => {
                    report.ended = ended;
                    break;
                }
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), self.ws.close(None)).await;
        report
    }

    /// The next SockJS frame other than a close frame. `Err` says why there is none: `None`
    /// when `stopped` completed (the stop signal, waited on by one future for the whole run:
    /// a new one per frame would cost as much as reading the frame), or how the session ended
    /// (a close frame, counted as closed by the server, or a failed or ended connection).
    async fn next_text<F: Future>(
        &mut self,
        shared: &Shared,
        mut stopped: Pin<&mut F>,
    ) -> Result<String, Option<String>> {
        loop {
            let next = tokio::select! {
                m = self.ws.next() => m,
                _ = stopped.as_mut() => return Err(None),
            };
            return match next {
                Some(Ok(WsMessage::Text(t))) if t.starts_with('c') => {
                    shared.closed_by_server.fetch_add(1, Ordering::Relaxed);
                    Err(Some(t))
                }
                Some(Ok(WsMessage::Text(t))) => Ok(t),
                Some(Ok(WsMessage::Close(c))) => {
                    shared.closed_by_server.fetch_add(1, Ordering::Relaxed);
                    Err(Some(format!("closed: {c:?}")))
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => Err(Some(format!("error: {e}"))),
                None => Err(Some("connection ended".into())),
            };
        }
    }
}

impl Report {
    /// Counts the `fanout` load's messages in one frame (a scan, see `scan.rs`): latency,
    /// deliveries, and the sequence numbers of stream `stream`, calling `received(seq)` for
    /// each.
    pub fn tally(&mut self, frame: &str, stream: u8, shared: &Shared, received: &impl Fn(u64)) {
        let now = now_micros();
        let n = scan::messages(frame.as_bytes(), stream, |seq, t| {
            shared.latency.record(now.saturating_sub(t));
            self.broadcasts.record(seq);
            received(seq);
        });
        shared.deliveries.fetch_add(n as u64, Ordering::Relaxed);
    }
}
