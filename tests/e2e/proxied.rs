//! SockJS sessions through a reverse proxy, as a test sees them: a WebSocket opened by hand,
//! and an xhr-polling session whose polls run in a task of their own and record everything
//! they are answered, so that a test can tell a session that carried on from one that was
//! lost (a 404, or a close frame).

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use crate::support::*;

/// The value of header `name` (lowercase) in a response head, lowercased.
fn header(head: &str, name: &str) -> Option<String> {
    head.to_ascii_lowercase().lines().find_map(|l| {
        l.strip_prefix(&format!("{name}:"))
            .map(|v| v.trim().to_owned())
    })
}

/// A WebSocket handshake at `port` for `/sockjs/<server>/<session>/websocket`, and the
/// session's open frame: the open connection and the response head, or why not.
pub(crate) async fn open_websocket(
    port: u16,
    server: &str,
    session: &str,
) -> Result<(TcpStream, String), String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let request = format!(
        "GET /sockjs/{server}/{session}/websocket HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
         Upgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    s.write_all(request.as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let n = s.read(&mut buf).await.map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err(format!("closed after {:?}", String::from_utf8_lossy(&got)));
        }
        got.extend_from_slice(&buf[..n]);
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).into_owned();
            if !got.starts_with(b"HTTP/1.1 101") {
                return Err(head);
            }
            // The open frame: a text frame of one byte, "o".
            match &got[end + 4..] {
                [] | [0x81] | [0x81, 0x01] => continue,
                [0x81, 0x01, b'o', ..] => return Ok((s, head)),
                other => return Err(format!("no open frame: {other:?}")),
            }
        }
    }
}

/// An empty pong, masked as a client's frames are: the server closes a WebSocket it has heard
/// nothing from for a heartbeat interval (browsers answer its pings by themselves).
const PONG: [u8; 6] = [0x8a, 0x80, 0, 0, 0, 0];

/// Reads `s` until `marker` has arrived, answering the server's heartbeats: whether it did
/// before the connection ended.
pub(crate) async fn receive(mut s: TcpStream, marker: String) -> bool {
    let mut window: Vec<u8> = Vec::new();
    let mut buf = [0u8; 2048];
    let mut beat = tokio::time::interval(std::time::Duration::from_millis(500));
    loop {
        let n = tokio::select! {
            read = s.read(&mut buf) => match read {
                Ok(n) if n > 0 => n,
                _ => return false,
            },
            _ = beat.tick() => {
                if s.write_all(&PONG).await.is_err() {
                    return false;
                }
                continue;
            }
        };
        window.extend_from_slice(&buf[..n]);
        if window.windows(marker.len()).any(|w| w == marker.as_bytes()) {
            return true;
        }
        let keep = window.len().saturating_sub(marker.len());
        window.drain(..keep);
    }
}

/// A WebSocket session, read (and its heartbeats answered) until dropped.
pub(crate) struct Ws {
    /// The response head of its handshake.
    pub head: String,
    found: Arc<Mutex<Vec<u8>>>,
    task: JoinHandle<bool>,
}

impl Ws {
    pub(crate) async fn open(port: u16, server: &str, session: &str) -> Ws {
        let (mut s, head) = open_websocket(port, server, session)
            .await
            .expect("a WebSocket through the proxy");
        let found = Arc::new(Mutex::new(Vec::new()));
        let sink = found.clone();
        let task = tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            let mut beat = tokio::time::interval(std::time::Duration::from_millis(500));
            loop {
                tokio::select! {
                    read = s.read(&mut buf) => match read {
                        Ok(n) if n > 0 => sink.lock().unwrap().extend_from_slice(&buf[..n]),
                        _ => return false,
                    },
                    _ = beat.tick() => {
                        if s.write_all(&PONG).await.is_err() {
                            return false;
                        }
                    }
                }
            }
        });
        Ws { head, found, task }
    }

    /// Whether the proxy's response header `name` (lowercase) is `value`.
    pub(crate) fn upstream_is(&self, name: &str, value: &str) -> bool {
        header(&self.head, name).as_deref() == Some(value)
    }

    /// Whether `marker` has arrived.
    pub(crate) fn received(&self, marker: &str) -> bool {
        let got = self.found.lock().unwrap();
        got.windows(marker.len()).any(|w| w == marker.as_bytes())
    }

    /// Whether the connection has ended.
    pub(crate) fn ended(&self) -> bool {
        self.task.is_finished()
    }
}

impl Drop for Ws {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An xhr-polling session, polling until dropped.
pub(crate) struct Polling {
    /// The server the proxy says it sent the first request to (a response header), if any.
    pub upstream: Option<String>,
    /// Every answer to its polls after the open frame, in order.
    answers: Arc<Mutex<Vec<String>>>,
    /// Why it ended: a status other than 200, a close frame, or an open frame (its poll
    /// reached a server that did not hold it).
    ended: Arc<Mutex<Option<String>>>,
    task: JoinHandle<()>,
}

impl Polling {
    /// Opens an xhr-polling session at `base` (`http://host:port/sockjs`); `upstream_header`
    /// names the proxy's response header naming the server, if it sends one.
    pub(crate) async fn open(base: &str, n: usize, upstream_header: &str) -> Polling {
        let url = format!("{base}/{}/p{n}x{}/xhr", n % 1000, rand_id());
        let first = http("POST", &url, &[], "").await;
        assert_eq!(
            (first.status, first.body.as_str()),
            (200, "o\n"),
            "an xhr-polling session opens through the proxy: {}",
            first.headers
        );
        let upstream = header(&first.headers, upstream_header);
        let answers = Arc::new(Mutex::new(Vec::new()));
        let ended = Arc::new(Mutex::new(None));
        let (a, e) = (answers.clone(), ended.clone());
        let task = tokio::spawn(async move {
            loop {
                let r = tokio::time::timeout(WAIT, http_answer("POST", &url)).await;
                let (status, body) = match r {
                    Ok(Ok(answer)) => answer,
                    Ok(Err(why)) => (0, why),
                    Err(_) => (0, "no answer in time".to_owned()),
                };
                // A second open frame: the poll reached a server that did not hold the
                // session, which opened a new one of the same id.
                if status != 200 || body.starts_with('c') || body.starts_with('o') {
                    *e.lock().unwrap() = Some(format!("{status} {body}"));
                    return;
                }
                a.lock().unwrap().push(body);
            }
        });
        Polling {
            upstream,
            answers,
            ended,
            task,
        }
    }

    /// Whether some answer so far contains `marker`.
    pub(crate) fn received(&self, marker: &str) -> bool {
        self.answers
            .lock()
            .unwrap()
            .iter()
            .any(|a| a.contains(marker))
    }

    /// Why the session ended, if it did.
    pub(crate) fn ended(&self) -> Option<String> {
        self.ended.lock().unwrap().clone()
    }
}

impl Drop for Polling {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One HTTP/1.1 request on a connection of its own: (status, body), or why not (a proxy that
/// cannot reach the server may close the connection).
async fn http_answer(method: &str, url: &str) -> Result<(u16, String), String> {
    let rest = url.strip_prefix("http://").expect("http url");
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let mut s = TcpStream::connect(host)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    );
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)
        .await
        .map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status: {text:?}"))?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Ok((status, body))
}
