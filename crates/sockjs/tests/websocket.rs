//! The WebSocket transports over real connections, with a client that writes frames byte by
//! byte, so it can also break the protocol on purpose.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use sockjs::Options;
use support::READ;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// A server frame: opcode and payload.
#[derive(Debug, PartialEq, Eq)]
struct Frame {
    fin: bool,
    opcode: u8,
    payload: Vec<u8>,
}

impl Frame {
    fn text(&self) -> &str {
        assert_eq!(self.opcode, 1, "not a text frame: {self:?}");
        std::str::from_utf8(&self.payload).expect("UTF-8")
    }

    /// The code of a close frame.
    fn close_code(&self) -> u16 {
        assert_eq!(self.opcode, 8, "not a close frame: {self:?}");
        u16::from_be_bytes([self.payload[0], self.payload[1]])
    }
}

struct Client {
    stream: TcpStream,
}

const MASK: [u8; 4] = [0x11, 0x22, 0x33, 0x44];

impl Client {
    /// Opens `path` with the handshake a browser sends.
    async fn open(addr: SocketAddr, path: &str) -> Client {
        let (status, client) = Client::handshake(addr, path, "13").await;
        assert_eq!(status, 101);
        client
    }

    async fn handshake(addr: SocketAddr, path: &str, version: &str) -> (u16, Client) {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: {version}\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut b = [0; 1];
            timeout(READ, stream.read_exact(&mut b))
                .await
                .expect("response in time")
                .expect("response");
            head.push(b[0]);
        }
        let head = String::from_utf8(head).unwrap();
        let status = head[9..12].parse().unwrap();
        if status == 101 {
            assert!(
                head.to_ascii_lowercase()
                    .contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
                "{head}"
            );
        }
        (status, Client { stream })
    }

    async fn send_frame(&mut self, fin: bool, opcode: u8, payload: &[u8]) {
        let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
        }
        out.extend_from_slice(&MASK);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
        self.stream.write_all(&out).await.unwrap();
    }

    async fn send_text(&mut self, text: &str) {
        self.send_frame(true, 1, text.as_bytes()).await;
    }

    /// The next frame; panics on a closed connection or after [`READ`].
    async fn recv(&mut self) -> Frame {
        timeout(READ, async {
            let mut h = [0; 2];
            self.stream.read_exact(&mut h).await.expect("a frame");
            assert_eq!(h[1] & 0x80, 0, "server frames are not masked");
            let len = match h[1] & 0x7F {
                126 => {
                    let mut l = [0; 2];
                    self.stream.read_exact(&mut l).await.unwrap();
                    u16::from_be_bytes(l) as usize
                }
                127 => {
                    let mut l = [0; 8];
                    self.stream.read_exact(&mut l).await.unwrap();
                    u64::from_be_bytes(l) as usize
                }
                n => n as usize,
            };
            let mut payload = vec![0; len];
            self.stream.read_exact(&mut payload).await.unwrap();
            Frame {
                fin: h[0] & 0x80 != 0,
                opcode: h[0] & 0x0F,
                payload,
            }
        })
        .await
        .expect("a frame in time")
    }

    /// The next frame that is neither a ping nor a heartbeat.
    async fn recv_data(&mut self) -> Frame {
        loop {
            let f = self.recv().await;
            if f.opcode != 9 && f.payload != b"h" {
                return f;
            }
        }
    }

    /// Whether the server closed the TCP connection (after anything still unread).
    async fn closed(&mut self) -> bool {
        let mut rest = Vec::new();
        matches!(
            timeout(READ, self.stream.read_to_end(&mut rest)).await,
            Ok(Ok(_))
        )
    }
}

fn serve() -> SocketAddr {
    support::serve(Options::default())
}

#[tokio::test]
async fn framed_sessions_echo_in_array_frames_and_close_with_a_frame() {
    let addr = serve();
    let mut c = Client::open(addr, "/echo/000/a1/websocket").await;
    assert_eq!(c.recv().await.text(), "o");
    c.send_text(r#"["a","\u2028"]"#).await;
    let mut all = c.recv().await.text().to_owned();
    if all == r#"a["a"]"# {
        all.push_str(c.recv().await.text());
    }
    assert!(
        all == r#"a["a","\u2028"]"# || all == r#"a["a"]a["\u2028"]"#,
        "{all}"
    );

    let mut c = Client::open(addr, "/close/000/a2/websocket").await;
    assert_eq!(c.recv().await.text(), "o");
    assert_eq!(c.recv().await.text(), r#"c[3000,"Go away!"]"#);
    let close = c.recv().await;
    assert_eq!(close.close_code(), 3000);
    assert_eq!(&close.payload[2..], b"Go away!");
    // The client answers; the server then ends the connection.
    c.send_frame(true, 8, &3000u16.to_be_bytes()).await;
    assert!(c.closed().await);
}

#[tokio::test]
async fn raw_sessions_echo_plain_text_and_close_without_a_frame() {
    let addr = serve();
    let mut c = Client::open(addr, "/echo/websocket").await;
    c.send_text("Hello world!\u{ffff}").await;
    assert_eq!(c.recv().await.text(), "Hello world!\u{ffff}");
    let mut c = Client::open(addr, "/close/websocket").await;
    assert_eq!(c.recv().await.close_code(), 3000);
}

#[tokio::test]
async fn broken_json_drops_the_session_without_a_sockjs_frame() {
    let addr = serve();
    let mut c = Client::open(addr, "/echo/000/b1/websocket").await;
    assert_eq!(c.recv().await.text(), "o");
    c.send_text("").await;
    c.send_text("[]").await;
    c.send_text(r#"["a"#).await;
    assert_eq!(c.recv().await.close_code(), 3010);
}

#[tokio::test]
async fn fragments_pings_and_closes_are_answered_as_the_rfc_says() {
    let addr = serve();
    let mut c = Client::open(addr, "/echo/websocket").await;
    // A message in three fragments, with a ping among them.
    c.send_frame(false, 1, "frag".as_bytes()).await;
    c.send_frame(true, 9, b"are you there").await;
    c.send_frame(false, 0, "men".as_bytes()).await;
    c.send_frame(true, 0, "té".as_bytes()).await;
    let pong = c.recv().await;
    assert_eq!(
        (pong.opcode, &pong.payload[..]),
        (10, &b"are you there"[..])
    );
    let echo = c.recv().await;
    assert!(echo.fin);
    assert_eq!(echo.text(), "fragmenté");
    // Binary and pong frames carry nothing and are ignored.
    c.send_frame(true, 2, &[1, 2, 3]).await;
    c.send_frame(true, 10, b"").await;
    c.send_text("still here").await;
    assert_eq!(c.recv().await.text(), "still here");
    // A client close is answered with its code.
    c.send_frame(true, 8, &[0x0f, 0xa0, b'b', b'y', b'e']).await;
    assert_eq!(c.recv().await.close_code(), 4000);
    assert!(c.closed().await);
}

#[tokio::test]
async fn frames_that_break_the_protocol_close_with_its_codes() {
    let addr = serve();
    // Unmasked.
    let mut c = Client::open(addr, "/echo/000/p1/websocket").await;
    assert_eq!(c.recv().await.text(), "o");
    c.stream.write_all(&[0x81, 0x01, b'a']).await.unwrap();
    assert_eq!(c.recv().await.close_code(), 1002);
    // Not UTF-8.
    let mut c = Client::open(addr, "/echo/websocket").await;
    c.send_frame(true, 1, &[b'a', 0xff]).await;
    assert_eq!(c.recv().await.close_code(), 1007);
    // A continuation of nothing.
    let mut c = Client::open(addr, "/echo/websocket").await;
    c.send_frame(true, 0, b"a").await;
    assert_eq!(c.recv().await.close_code(), 1002);
}

#[tokio::test]
async fn oversized_messages_close_the_session_as_too_big() {
    let options = Options {
        max_message_bytes: 1000,
        max_request_bytes: 4096,
        ..Options::default()
    };
    // Room for one message of 1000 control characters, each escaped in six bytes.
    assert_eq!(options.max_batch_bytes(), 6004);
    let addr = support::serve(options);
    let mut c = Client::open(addr, "/custom/000/m1/websocket").await;
    assert_eq!(c.recv().await.text(), "o");
    // The limit is the message's, once decoded: 1000 quotes take 2004 bytes in their frame.
    let quotes = format!(r#"["{}"]"#, "\\\"".repeat(1000));
    c.send_text(&quotes).await;
    assert_eq!(c.recv().await.text(), format!("a{quotes}"));
    let controls = format!(r#"["{}"]"#, "\\u0001".repeat(1000));
    c.send_text(&controls).await;
    assert_eq!(c.recv().await.text(), format!("a{controls}"));
    // A message longer once decoded closes the session.
    c.send_text(&format!(r#"["{}"]"#, "x".repeat(1001))).await;
    assert_eq!(c.recv().await.text(), r#"c[3009,"Message too big"]"#);
    assert_eq!(c.recv().await.close_code(), 3009);
    // A frame past the batch bound: only its header is sent, and its length alone refuses it.
    let mut c = Client::open(addr, "/custom/000/m2/websocket").await;
    assert_eq!(c.recv().await.text(), "o");
    c.stream.write_all(&[0x81, 0xFE, 0x17, 0x75]).await.unwrap();
    assert_eq!(c.recv().await.text(), r#"c[3009,"Message too big"]"#);
    assert_eq!(c.recv().await.close_code(), 3009);
}

#[tokio::test]
async fn silent_peers_get_heartbeats_and_pings() {
    let addr = support::serve(Options {
        heartbeat_interval: Duration::from_millis(100),
        ..Options::default()
    });
    let mut c = Client::open(addr, "/custom/000/h1/websocket").await;
    assert_eq!(c.recv().await.text(), "o");
    assert_eq!(c.recv().await.text(), "h");
    assert_eq!(c.recv().await.opcode, 9, "a ping follows the heartbeat");
    // Nothing answered: the next heartbeat finds the peer unresponsive and ends it.
    assert!(c.closed().await);

    // A peer that answers pings stays.
    let mut c = Client::open(addr, "/custom/000/h2/websocket").await;
    assert_eq!(c.recv().await.text(), "o");
    for _ in 0..3 {
        assert_eq!(c.recv().await.text(), "h");
        assert_eq!(c.recv().await.opcode, 9);
        c.send_frame(true, 10, b"").await;
    }
    c.send_text(r#"["alive"]"#).await;
    assert_eq!(c.recv_data().await.text(), r#"a["alive"]"#);
}

#[tokio::test]
async fn the_heartbeat_waits_for_an_interval_without_writes() {
    let addr = support::serve(Options {
        heartbeat_interval: Duration::from_millis(400),
        ..Options::default()
    });
    let mut c = Client::open(addr, "/custom/000/h3/websocket").await;
    assert_eq!(c.recv().await.text(), "o");
    // An echo every 100 ms: the session writes far more often than the interval.
    for i in 0..12 {
        c.send_text(&format!(r#"["{i}"]"#)).await;
        let f = c.recv().await;
        assert_eq!(
            f.text(),
            format!(r#"a["{i}"]"#),
            "no heartbeat while writing"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Then silence: the heartbeat comes an interval after the last write.
    let quiet = std::time::Instant::now();
    assert_eq!(c.recv().await.text(), "h");
    assert!(
        quiet.elapsed() >= Duration::from_millis(250),
        "{:?}",
        quiet.elapsed()
    );
}

#[tokio::test]
async fn handshakes_the_server_cannot_take_are_refused() {
    let addr = serve();
    let (status, _) = Client::handshake(addr, "/echo/000/v1/websocket", "8").await;
    assert_eq!(status, 426);
    let r = support::request(
        addr,
        "GET",
        "/echo/000/v2/websocket",
        &[
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Version", "13"),
        ],
        b"",
    )
    .await;
    assert_eq!(r.status, 400);
}
