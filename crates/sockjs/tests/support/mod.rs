//! An in-process SockJS server on port 0 with the protocol suite's services, and a small
//! HTTP/1.1 client that reads responses chunk by chunk, as SockJS clients and the protocol
//! suite do (each frame of a streaming transport is its own chunk).

#![allow(dead_code)]

pub mod suite;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use sockjs::Options;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use warp::Filter;

/// Every read in these tests is bounded: a hang is a failure, not a stuck run.
pub const READ: Duration = Duration::from_secs(5);

/// Serves the protocol suite's services (`suite.rs`) and `/custom` (echo with `custom`'s
/// options) on 127.0.0.1:0.
pub fn serve(custom: Options) -> SocketAddr {
    let custom = sockjs::routes("/custom", custom, Arc::new(suite::Echo));
    let routes = suite::routes().or(custom).unify();
    let (addr, server) = suite::bind(routes.boxed(), 0);
    tokio::spawn(server);
    addr
}

/// A fresh session id.
pub fn sid() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "s{}x{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

pub struct Response {
    pub status: u16,
    headers: Vec<(String, String)>,
    reader: BufReader<TcpStream>,
    chunked: bool,
    length: Option<usize>,
}

/// Sends one request on a new connection and reads the status line and headers.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    read_line(&mut reader, &mut line).await;
    let status = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {line:?}"));
    let mut headers = Vec::new();
    loop {
        line.clear();
        read_line(&mut reader, &mut line).await;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':').expect("header line");
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
    }
    let get = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v);
    let chunked = get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    let length = get("content-length").and_then(|v| v.parse().ok());
    Response {
        status,
        headers,
        reader,
        chunked,
        length,
    }
}

async fn read_line(r: &mut BufReader<TcpStream>, line: &mut String) {
    tokio::time::timeout(READ, r.read_line(line))
        .await
        .expect("read in time")
        .expect("read");
}

pub async fn get(addr: SocketAddr, path: &str) -> Response {
    request(addr, "GET", path, &[], b"").await
}

pub async fn post(addr: SocketAddr, path: &str, body: &[u8]) -> Response {
    request(addr, "POST", path, &[], body).await
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The next chunk of a chunked body as text; `None` at the body's end.
    pub async fn chunk(&mut self) -> Option<String> {
        assert!(self.chunked, "not a chunked response");
        let mut line = String::new();
        read_line(&mut self.reader, &mut line).await;
        let size = usize::from_str_radix(line.trim(), 16).expect("chunk size");
        let mut data = vec![0; size + 2];
        tokio::time::timeout(READ, self.reader.read_exact(&mut data))
            .await
            .expect("chunk in time")
            .expect("chunk");
        if size == 0 {
            return None;
        }
        data.truncate(size);
        Some(String::from_utf8(data).expect("utf-8 chunk"))
    }

    /// The whole body as text.
    pub async fn text(mut self) -> String {
        if self.chunked {
            let mut all = String::new();
            while let Some(c) = self.chunk().await {
                all.push_str(&c);
            }
            return all;
        }
        let mut data = vec![0; self.length.unwrap_or(0)];
        tokio::time::timeout(READ, self.reader.read_exact(&mut data))
            .await
            .expect("body in time")
            .expect("body");
        String::from_utf8(data).expect("utf-8 body")
    }

    /// Whether nothing arrives within `wait`.
    pub async fn silent_for(&mut self, wait: Duration) -> bool {
        let mut byte = [0u8; 1];
        tokio::time::timeout(wait, self.reader.read(&mut byte))
            .await
            .is_err()
    }
}
