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

use serde::Deserialize;
use tokio::net::TcpSocket;
use tokio::sync::watch;

use crate::scan::Scan;
use crate::track::{Histogram, Stream};
use crate::ws::{Incoming, Ws};

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
/// around it are not recorded (sessions checked for loss subscribe before the load starts), nor
/// are a presence channel's changes (`pushnote:presence`), which may come before the reply.
async fn subscribed(ws: &mut Ws) -> anyhow::Result<()> {
    loop {
        match ws.next().await? {
            Incoming::Text(t) if t.starts_with(b"a") => {
                let msgs: Vec<Msg> = serde_json::from_slice(&t[1..])?;
                let reply = msgs
                    .iter()
                    .filter_map(|m| m.name.as_deref())
                    .find(|&n| n != "pushnote:presence");
                match reply {
                    Some("pushnote:subscribed") => return Ok(()),
                    Some(other) => anyhow::bail!(
                        "subscribe refused: {other} {:.200}",
                        String::from_utf8_lossy(t)
                    ),
                    None => {}
                }
            }
            Incoming::Text(_) => {}
            Incoming::Close(code) => anyhow::bail!("closed while subscribing: {code:?}"),
        }
    }
}

/// An open SockJS session over WebSocket.
pub struct Session {
    ws: Ws,
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
        let mut ws = Ws::connect(stream, ws_url).await?;
        match ws.next().await? {
            Incoming::Text(b"o") => {}
            Incoming::Text(t) => anyhow::bail!(
                "expected the open frame, got {:.80}",
                String::from_utf8_lossy(t)
            ),
            Incoming::Close(code) => anyhow::bail!("closed before the open frame: {code:?}"),
        }
        if let Some(token) = token {
            // Servers before opt-in replies ignore the field, and answer all the same.
            let request =
                serde_json::json!({"name": "subscribe", "data": {"token": token, "replies": true}});
            let frame = serde_json::to_string(&[request.to_string()])?;
            ws.send_text(&frame).await?;
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
            if !text.starts_with(b"a") {
                continue;
            }
            let Ok(msgs) = serde_json::from_slice::<Vec<Msg>>(&text[1..]) else {
                report.ended = Some(format!(
                    "unreadable frame {:.80}",
                    String::from_utf8_lossy(text)
                ));
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
        let _ = tokio::time::timeout(Duration::from_secs(1), self.ws.close()).await;
        report
    }

    /// Joins `channel` (a private one with its channel `token`) and waits for the reply.
    pub async fn join(&mut self, channel: &str, token: Option<&str>) -> anyhow::Result<()> {
        let mut data = serde_json::json!({"channel": channel, "replies": true});
        if let Some(token) = token {
            data["token"] = token.into();
        }
        let request = serde_json::json!({"name": "subscribe", "data": data});
        let frame = serde_json::to_string(&[request.to_string()])?;
        self.ws.send_text(&frame).await?;
        tokio::time::timeout(SUBSCRIBE_WAIT, subscribed(&mut self.ws))
            .await
            .map_err(|_| {
                anyhow::anyhow!("no reply to joining {channel} within {SUBSCRIBE_WAIT:?}")
            })?
    }

    /// Sends a subscribe request with `token` without waiting for a reply (servers of the
    /// original protocol send none).
    pub async fn send_subscribe(&mut self, token: &str) -> anyhow::Result<()> {
        let request = serde_json::json!({"name": "subscribe", "data": {"token": token}});
        let frame = serde_json::to_string(&[request.to_string()])?;
        self.ws.send_text(&frame).await?;
        Ok(())
    }

    /// Reads and drops what arrives until `stop` turns true, then hands the session back: a
    /// session not yet counted that must not fall behind meanwhile (the `pushnote:presence`
    /// messages of a presence channel filling up with the load's sessions).
    pub async fn drain(mut self, mut stop: watch::Receiver<bool>) -> anyhow::Result<Session> {
        loop {
            let stopped = tokio::select! {
                _ = stop.changed() => true,
                next = self.ws.next() => match next? {
                    Incoming::Text(t) if t.starts_with(b"c") => anyhow::bail!(
                        "closed while waiting: {:.80}",
                        String::from_utf8_lossy(t)
                    ),
                    Incoming::Text(_) => false,
                    Incoming::Close(code) => anyhow::bail!("closed while waiting: {code:?}"),
                },
            };
            if stopped {
                return Ok(self);
            }
        }
    }

    /// The WebSocket, for a load that reads and writes it itself (`presence.rs`).
    pub fn into_ws(self) -> Ws {
        self.ws
    }

    /// The connection, the bytes read but not yet consumed, and the masking keys' state, for
    /// reading on without the async runtime (`reader.rs`).
    pub fn into_parts(self) -> (tokio::net::TcpStream, Vec<u8>, u32) {
        self.ws.into_parts()
    }

    /// The next SockJS frame other than a close frame. `Err` says why there is none: `None`
    /// when `stopped` completed (the stop signal, waited on by one future for the whole run:
    /// a new one per frame would cost as much as reading the frame), or how the session ended
    /// (a close frame, counted as closed by the server, or a failed or ended connection).
    async fn next_text<F: Future>(
        &mut self,
        shared: &Shared,
        stopped: Pin<&mut F>,
    ) -> Result<&[u8], Option<String>> {
        let next = tokio::select! {
            m = self.ws.next() => m,
            _ = stopped => return Err(None),
        };
        match next {
            Ok(Incoming::Text(t)) if t.starts_with(b"c") => {
                shared.closed_by_server.fetch_add(1, Ordering::Relaxed);
                Err(Some(String::from_utf8_lossy(t).into_owned()))
            }
            Ok(Incoming::Text(t)) => Ok(t),
            Ok(Incoming::Close(code)) => {
                shared.closed_by_server.fetch_add(1, Ordering::Relaxed);
                Err(Some(format!("closed: {code:?}")))
            }
            Err(e) => Err(Some(format!("error: {e}"))),
        }
    }
}

impl Report {
    /// Counts the `fanout` load's messages in one frame (`scan`, see `scan.rs`): latency,
    /// deliveries, and the sequence numbers of its stream, calling `received(seq)` for each.
    pub fn tally(&mut self, frame: &[u8], scan: Scan, shared: &Shared, received: &impl Fn(u64)) {
        let now = now_micros();
        let n = scan.messages(frame, |seq, t| {
            shared.latency.record(now.saturating_sub(t));
            self.broadcasts.record(seq);
            received(seq);
        });
        shared.deliveries.fetch_add(n as u64, Ordering::Relaxed);
    }
}
