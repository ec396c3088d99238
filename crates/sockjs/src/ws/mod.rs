//! The WebSocket protocol (RFC 6455), server side, sized for many idle connections: the opening
//! handshake, the wire format (`codec.rs`) and a connection that holds no buffer while nothing
//! is arriving or leaving.
//!
//! A general-purpose WebSocket library keeps a read buffer of several KiB per connection from
//! the start (tungstenite 0.21, which warp 0.3's WebSocket filter used, 8 KiB). A push server's connections are idle
//! nearly all the time and its clients send a few small messages, so here the read buffer
//! exists only while a frame is partly received, and each write is one frame, or a few, built
//! in place and handed to the socket whole.
//!
//! The upgrade itself needs hyper's `OnUpgrade`, which warp keeps to its own WebSocket filter.
//! [`with_upgrades`] wraps the service that serves the routes (warp's, a tower service) into a
//! hyper service and puts the upgrade where the routes can take it.

pub(crate) mod codec;

use std::convert::Infallible;
use std::io;
use std::mem::MaybeUninit;
use std::sync::{Arc, Mutex};
use std::task::{ready, Poll};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hyper::service::Service;
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use sha1::{Digest, Sha1};
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use warp::http::{header, HeaderMap, HeaderValue, Request, StatusCode};
use warp::Filter;

use crate::http::Resp;

use codec::{Fault, Incoming, Reader};

/// Wraps the service that serves [`crate::routes`] (`warp::service(routes)`) into a hyper
/// service whose WebSocket URLs can upgrade: serve `sockjs::with_upgrades(warp::service(routes))`
/// on hyper's HTTP/1 connections `with_upgrades()`. Without it, WebSocket handshakes get
/// `500 Internal Server Error`.
///
/// An upgraded connection is read and written directly (no copy through hyper) when the
/// connection served is a [`TokioIo`]`<`[`tokio::net::TcpStream`]`>`.
pub fn with_upgrades<S>(inner: S) -> WithUpgrades<S> {
    WithUpgrades(TowerToHyperService::new(inner))
}

/// The service [`with_upgrades`] makes.
#[derive(Clone, Debug)]
pub struct WithUpgrades<S>(TowerToHyperService<S>);

impl<S, B> Service<Request<B>> for WithUpgrades<S>
where
    TowerToHyperService<S>: Service<Request<B>>,
{
    type Response = <TowerToHyperService<S> as Service<Request<B>>>::Response;
    type Error = <TowerToHyperService<S> as Service<Request<B>>>::Error;
    type Future = <TowerToHyperService<S> as Service<Request<B>>>::Future;

    fn call(&self, mut request: Request<B>) -> Self::Future {
        if request.headers().contains_key(header::UPGRADE) {
            if let Some(on_upgrade) = request.extensions_mut().remove::<OnUpgrade>() {
                let slot = UpgradeSlot(Arc::new(Mutex::new(Some(on_upgrade))));
                request.extensions_mut().insert(slot);
            }
        }
        self.0.call(request)
    }
}

/// hyper's `OnUpgrade`, in the clonable form warp's extension filters need.
#[derive(Clone)]
pub(crate) struct UpgradeSlot(Arc<Mutex<Option<OnUpgrade>>>);

impl UpgradeSlot {
    fn take(&self) -> Option<OnUpgrade> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// The request's upgrade, if [`with_upgrades`] exposed one.
pub(crate) fn upgrade_slot(
) -> impl Filter<Extract = (Option<UpgradeSlot>,), Error = Infallible> + Clone {
    warp::ext::optional::<UpgradeSlot>()
}

/// Why a request is not a WebSocket handshake this server takes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum NotHandshake {
    /// No `Upgrade: websocket` with `Connection: Upgrade`.
    NotUpgrade,
    /// A WebSocket version other than 13.
    Version,
    /// No usable `Sec-WebSocket-Key`.
    Key,
}

/// Checks the opening handshake (RFC 6455 §4.2.1) and returns the `Sec-WebSocket-Accept` value.
pub(crate) fn check_handshake(headers: &HeaderMap) -> Result<HeaderValue, NotHandshake> {
    let upgrade = headers
        .get_all(header::UPGRADE)
        .iter()
        .any(|v| has_token(v, "websocket"));
    let connection = headers
        .get_all(header::CONNECTION)
        .iter()
        .any(|v| has_token(v, "upgrade"));
    if !upgrade || !connection {
        return Err(NotHandshake::NotUpgrade);
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(|v| v.as_bytes())
        != Some(b"13")
    {
        return Err(NotHandshake::Version);
    }
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .map(|k| k.as_bytes().trim_ascii())
        .filter(|k| !k.is_empty())
        .ok_or(NotHandshake::Key)?;
    Ok(HeaderValue::from_str(&accept_key(key)).expect("base64 is a valid header value"))
}

/// Whether a comma-separated header value holds `token`, ignoring case.
fn has_token(value: &HeaderValue, token: &str) -> bool {
    value
        .to_str()
        .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key`: base64(SHA-1(key + GUID)).
fn accept_key(key: &[u8]) -> String {
    const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    let digest = Sha1::new().chain_update(key).chain_update(GUID).finalize();
    STANDARD.encode(digest)
}

/// The `101 Switching Protocols` answer to a handshake, and the connection it opens, handed to
/// `serve` once hyper has sent the answer.
pub(crate) fn upgrade<F, Fut>(
    slot: UpgradeSlot,
    accept: HeaderValue,
    limit: usize,
    serve: F,
) -> Resp
where
    F: FnOnce(Conn) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let Some(on_upgrade) = slot.take() else {
        return crate::http::text(StatusCode::BAD_REQUEST, "Upgrade already taken.\n");
    };
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(io) => serve(Conn::new(io, limit)).await,
            Err(e) => tracing::debug!(error = %e, "websocket upgrade failed"),
        }
    });
    let mut response = Resp::default();
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = response.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    response
}

/// How many bytes one read takes off the socket. They live on the stack for the duration of
/// the read only; a frame that is not whole after it is kept by the [`Reader`].
const READ_CHUNK: usize = 4096;

/// An upgraded connection: reads whole messages, writes whole frames.
pub(crate) struct Conn {
    io: Io,
    reader: Reader,
}

enum Io {
    /// A plain TCP connection, shared with the session so that it can be written directly.
    Tcp(Arc<TcpStream>),
    /// Anything else hyper serves.
    Other(TokioIo<Upgraded>),
}

/// What came off the connection.
pub(crate) enum Read {
    /// Bytes arrived; take the messages with [`Conn::next`].
    Data,
    /// The peer closed the connection, or it failed.
    Closed,
}

impl Conn {
    fn new(upgraded: Upgraded, limit: usize) -> Conn {
        let mut reader = Reader::new(limit);
        let io = match upgraded.downcast::<TokioIo<TcpStream>>() {
            Ok(parts) => {
                reader.push(&parts.read_buf);
                Io::Tcp(Arc::new(parts.io.into_inner()))
            }
            Err(upgraded) => Io::Other(TokioIo::new(upgraded)),
        };
        Conn { io, reader }
    }

    /// The TCP connection, when it is one.
    pub(crate) fn tcp(&self) -> Option<Arc<TcpStream>> {
        match &self.io {
            Io::Tcp(stream) => Some(stream.clone()),
            Io::Other(_) => None,
        }
    }

    /// Waits for bytes from the client. Cancel-safe: bytes are taken only when they are kept.
    pub(crate) async fn read(&mut self) -> Read {
        let Conn { io, reader } = self;
        std::future::poll_fn(|cx| match io {
            Io::Tcp(stream) => loop {
                if let Err(e) = ready!(stream.poll_read_ready(cx)) {
                    return Poll::Ready(closed(&e));
                }
                let mut chunk = [0; READ_CHUNK];
                match stream.try_read(&mut chunk) {
                    Ok(0) => return Poll::Ready(Read::Closed),
                    Ok(n) => {
                        reader.push(&chunk[..n]);
                        return Poll::Ready(Read::Data);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Poll::Ready(closed(&e)),
                }
            },
            Io::Other(upgraded) => {
                let mut chunk = [const { MaybeUninit::<u8>::uninit() }; READ_CHUNK];
                let mut buf = ReadBuf::uninit(&mut chunk);
                match ready!(std::pin::Pin::new(upgraded).poll_read(cx, &mut buf)) {
                    Ok(()) if buf.filled().is_empty() => Poll::Ready(Read::Closed),
                    Ok(()) => {
                        reader.push(buf.filled());
                        Poll::Ready(Read::Data)
                    }
                    Err(e) => Poll::Ready(closed(&e)),
                }
            }
        })
        .await
    }

    /// The next whole message or control frame among the bytes read so far.
    pub(crate) fn next(&mut self) -> Result<Option<Incoming>, Fault> {
        self.reader.next()
    }

    /// Writes what the socket takes of `bytes` at once, without waiting; returns how much
    /// that was (nothing on a connection that is not a plain TCP stream).
    pub(crate) fn write_now(&mut self, bytes: &[u8]) -> io::Result<usize> {
        match &self.io {
            Io::Tcp(stream) => match stream.try_write(bytes) {
                Ok(n) => Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
                Err(e) => Err(e),
            },
            Io::Other(_) => Ok(0),
        }
    }

    /// Writes `bytes` (whole frames) to the client.
    pub(crate) async fn write(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        match &mut self.io {
            Io::Tcp(stream) => {
                while !bytes.is_empty() {
                    stream.writable().await?;
                    match stream.try_write(bytes) {
                        Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                        Ok(n) => bytes = &bytes[n..],
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(())
            }
            Io::Other(upgraded) => {
                upgraded.write_all(bytes).await?;
                upgraded.flush().await
            }
        }
    }
}

fn closed(e: &io::Error) -> Read {
    tracing::debug!(error = %e, "websocket read failed");
    Read::Closed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_accept_key_is_the_rfc_example() {
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        // RFC 4648 §10: the standard alphabet, padded.
        assert_eq!(STANDARD.encode(b""), "");
        assert_eq!(STANDARD.encode(b"f"), "Zg==");
        assert_eq!(STANDARD.encode(b"fo"), "Zm8=");
        assert_eq!(STANDARD.encode(b"foobar"), "Zm9vYmFy");
        assert_eq!(STANDARD.encode([0xfb, 0xff]), "+/8=");
    }

    #[test]
    fn handshakes_are_checked_as_the_rfc_says() {
        let mut h = HeaderMap::new();
        h.insert(header::UPGRADE, HeaderValue::from_static("WebSocket"));
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        h.insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        h.insert(
            header::SEC_WEBSOCKET_KEY,
            HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="),
        );
        assert_eq!(check_handshake(&h).unwrap(), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        let mut old = h.clone();
        old.insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("8"));
        assert_eq!(check_handshake(&old), Err(NotHandshake::Version));
        let mut keyless = h.clone();
        keyless.remove(header::SEC_WEBSOCKET_KEY);
        assert_eq!(check_handshake(&keyless), Err(NotHandshake::Key));
        let mut plain = h;
        plain.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        assert_eq!(check_handshake(&plain), Err(NotHandshake::NotUpgrade));
    }

    /// Serves one connection as the connection layer does (`TokioIo<TcpStream>`), answering
    /// a handshake with [`upgrade`]; returns what `check` says of the upgraded connection.
    async fn upgraded<T: Send + 'static>(check: fn(&Conn) -> T) -> T {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let tx = Arc::new(Mutex::new(Some(tx)));
        let service = hyper::service::service_fn(move |mut request: Request<_>| {
            let tx = tx.clone();
            let on_upgrade = hyper::upgrade::on(&mut request);
            async move {
                let slot = UpgradeSlot(Arc::new(Mutex::new(Some(on_upgrade))));
                let accept = check_handshake(request.headers()).unwrap();
                Ok::<_, Infallible>(upgrade(slot, accept, 1024, move |conn| async move {
                    if let Some(tx) = tx.lock().unwrap().take() {
                        let _ = tx.send(check(&conn));
                    }
                }))
            }
        });
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await;
        });
        let mut client = TcpStream::connect(address).await.unwrap();
        client
            .write_all(
                b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                  Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
            )
            .await
            .unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8];
        while !head.ends_with(b"\r\n\r\n") {
            client.read_exact(&mut byte).await.unwrap();
            head.push(byte[0]);
        }
        assert!(head.starts_with(b"HTTP/1.1 101 "), "{head:?}");
        let checked = tokio::time::timeout(std::time::Duration::from_secs(5), rx).await;
        checked.expect("upgraded in time").unwrap()
    }

    #[tokio::test]
    async fn an_upgraded_tcp_connection_is_read_and_written_directly() {
        // Not through hyper's `Upgraded`, which would copy every write and make `write_now`
        // write nothing.
        assert!(upgraded(|conn| conn.tcp().is_some()).await);
    }
}
