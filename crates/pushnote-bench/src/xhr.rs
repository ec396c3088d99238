//! One SockJS session over xhr-streaming, for `fanout --transport xhr-streaming`: a POST to
//! `…/<server>/<session>/xhr_streaming` whose chunked response carries one frame per line,
//! opened again (same session) each time the server ends it at its response limit. Plain HTTP/1.1
//! over a TCP socket: the bench needs nothing more, and a client library would cost more per
//! frame than the scan that counts the messages.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;

use crate::scan::Scan;
use crate::session::{Report, Shared};

/// Room made in the read buffer before each read.
const READ_ROOM: usize = 16 * 1024;

pub struct XhrSession {
    server: SocketAddr,
    src: SocketAddr,
    request: Vec<u8>,
    stream: TcpStream,
    /// Bytes read and not yet decoded (chunk framing).
    raw: Vec<u8>,
    /// Decoded body bytes not yet ending in a newline.
    body: Vec<u8>,
}

impl XhrSession {
    /// Opens the session of the SockJS WebSocket URL `ws_url` over xhr-streaming instead, and
    /// reads past the prelude and the open frame.
    pub async fn open(server: SocketAddr, ws_url: &str, src: SocketAddr) -> anyhow::Result<Self> {
        let rest = ws_url.strip_prefix("ws://").context("a ws:// URL")?;
        let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let path = path
            .strip_suffix("/websocket")
            .context("a session's websocket URL")?;
        let request = format!(
            "POST {path}/xhr_streaming HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\n\r\n"
        )
        .into_bytes();
        let stream = Self::post(server, src, &request).await?;
        let mut s = XhrSession {
            server,
            src,
            request,
            stream,
            raw: Vec::new(),
            body: Vec::new(),
        };
        s.start_response().await?;
        loop {
            match s.next_frame().await?.as_str() {
                "o" => return Ok(s),
                f if f.starts_with('h') => {}
                other => anyhow::bail!("expected the open frame, got {other:.80}"),
            }
        }
    }

    async fn post(
        server: SocketAddr,
        src: SocketAddr,
        request: &[u8],
    ) -> anyhow::Result<TcpStream> {
        let socket = TcpSocket::new_v4()?;
        socket.bind(src)?;
        let mut stream = socket.connect(server).await?;
        stream.set_nodelay(true)?;
        stream.write_all(request).await?;
        Ok(stream)
    }

    /// Reads the status line and headers of a response; its body must be chunked.
    async fn start_response(&mut self) -> anyhow::Result<()> {
        loop {
            if let Some(end) = self.raw.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.raw[..end]).to_ascii_lowercase();
                anyhow::ensure!(head.starts_with("http/1.1 200"), "response: {head:.100}");
                anyhow::ensure!(
                    head.contains("transfer-encoding: chunked"),
                    "the response is not chunked"
                );
                self.raw.drain(..end + 4);
                return Ok(());
            }
            self.fill().await?;
        }
    }

    /// Reads what has arrived onto `raw`, straight into its spare room: a buffer on the stack
    /// would live in every session's future, at 16 KiB each.
    async fn fill(&mut self) -> anyhow::Result<()> {
        self.raw.reserve(READ_ROOM);
        let n = self.stream.read_buf(&mut self.raw).await?;
        anyhow::ensure!(n > 0, "connection ended");
        Ok(())
    }

    /// The next frame, without its newline. When the server ends the response (its response
    /// limit), the session goes on in a new request.
    pub async fn next_frame(&mut self) -> anyhow::Result<String> {
        loop {
            if let Some(nl) = self.body.iter().position(|&c| c == b'\n') {
                let line: Vec<u8> = self.body.drain(..=nl).collect();
                return Ok(String::from_utf8_lossy(&line[..nl]).into_owned());
            }
            // One chunk: "<hex size>\r\n<data>\r\n".
            let Some(eol) = self.raw.windows(2).position(|w| w == b"\r\n") else {
                self.fill().await?;
                continue;
            };
            let size_text = std::str::from_utf8(&self.raw[..eol])?;
            let size = usize::from_str_radix(size_text.trim(), 16)
                .with_context(|| format!("chunk size {size_text:?}"))?;
            if self.raw.len() < eol + 2 + size + 2 {
                self.fill().await?;
                continue;
            }
            self.body
                .extend_from_slice(&self.raw[eol + 2..eol + 2 + size]);
            self.raw.drain(..eol + 2 + size + 2);
            if size == 0 {
                // The response is over: poll again for the same session.
                self.raw.clear();
                self.stream = Self::post(self.server, self.src, &self.request).await?;
                self.start_response().await?;
            }
        }
    }

    /// Like the WebSocket session's `count`: reads until `stop`, counting the load's messages.
    pub async fn count(
        mut self,
        scan: Scan,
        shared: Arc<Shared>,
        received: impl Fn(u64),
        mut stop: watch::Receiver<bool>,
    ) -> Report {
        let mut report = Report::default();
        loop {
            let frame = tokio::select! {
                f = self.next_frame() => f,
                _ = stop.changed() => break,
            };
            match frame {
                Ok(f) if f.starts_with('c') => {
                    shared.closed_by_server.fetch_add(1, Ordering::Relaxed);
                    report.ended = Some(f);
                    break;
                }
                Ok(f) => report.tally(f.as_bytes(), scan, &shared, &received),
                Err(e) => {
                    report.ended = Some(format!("error: {e}"));
                    break;
                }
            }
        }
        report
    }
}
