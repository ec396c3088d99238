//! Reading a request's body with bounds on its size and its time.
//!
//! A route reads a body only once the request's headers have passed every check that needs no
//! body (the route exists, the key is right, `Content-Length` is within the limit); then the
//! body is read up to its limit and no further, and only for as long as `timeout` allows: a
//! client that trickles a body gets `408` instead of holding its connection and the memory read
//! so far. The SockJS send endpoints bound their bodies' time the same way, with the same
//! default ([`DEFAULT_BODY_TIMEOUT_SECS`]).

use std::time::Duration;

use futures_util::{Stream, StreamExt};
use hyper::body::Buf;

/// Seconds a request's body may take to arrive, from the end of its headers.
pub const DEFAULT_BODY_TIMEOUT_SECS: u64 = 10;

/// Why a body was not read whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// Longer than the limit (413).
    #[error("the body is over {0} bytes")]
    TooLarge(usize),
    /// Not all there within the time allowed (408).
    #[error("the body did not arrive within {0:?}")]
    TooSlow(Duration),
    /// The client stopped sending it (400).
    #[error("the body ended early")]
    Incomplete,
}

impl BodyError {
    /// The HTTP status the request is answered with.
    pub fn status(&self) -> u16 {
        match self {
            BodyError::TooLarge(_) => 413,
            BodyError::TooSlow(_) => 408,
            BodyError::Incomplete => 400,
        }
    }
}

/// Whether a request whose `Content-Length` header says `content_length` is over `limit` bytes:
/// then it is refused before its body is read.
pub fn declared_too_large(content_length: Option<&[u8]>, limit: usize) -> bool {
    content_length
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .is_some_and(|n| n > limit as u64)
}

/// Reads `body` whole: at most `limit` bytes, within `timeout`.
pub async fn read<S, B, E>(body: S, limit: usize, timeout: Duration) -> Result<Vec<u8>, BodyError>
where
    S: Stream<Item = Result<B, E>>,
    B: Buf,
{
    tokio::time::timeout(timeout, read_limited(body, limit))
        .await
        .unwrap_or(Err(BodyError::TooSlow(timeout)))
}

async fn read_limited<S, B, E>(body: S, limit: usize) -> Result<Vec<u8>, BodyError>
where
    S: Stream<Item = Result<B, E>>,
    B: Buf,
{
    let mut out = Vec::new();
    futures_util::pin_mut!(body);
    while let Some(chunk) = body.next().await {
        let mut chunk = chunk.map_err(|_| BodyError::Incomplete)?;
        if out.len() + chunk.remaining() > limit {
            return Err(BodyError::TooLarge(limit));
        }
        while chunk.has_remaining() {
            let part = chunk.chunk();
            out.extend_from_slice(part);
            let n = part.len();
            chunk.advance(n);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::body::Bytes;

    type Chunk = Result<Bytes, std::io::Error>;

    #[tokio::test]
    async fn a_body_is_read_up_to_its_limit_and_no_further() {
        let endless = futures_util::stream::iter(
            std::iter::repeat_with(|| Ok::<_, std::io::Error>(Bytes::from_static(&[b'x'; 1024])))
                .take(1_000_000),
        );
        let long = Duration::from_secs(60);
        assert_eq!(
            read(endless, 10 * 1024, long).await,
            Err(BodyError::TooLarge(10 * 1024))
        );
        let small = futures_util::stream::iter([Chunk::Ok(Bytes::from_static(b"[]"))]);
        assert_eq!(read(small, 10, long).await.unwrap(), b"[]");
        let broken = futures_util::stream::iter([Chunk::Err(std::io::ErrorKind::Other.into())]);
        assert_eq!(read(broken, 10, long).await, Err(BodyError::Incomplete));
    }

    #[tokio::test(start_paused = true)]
    async fn a_trickled_body_times_out() {
        let first = futures_util::stream::iter([Chunk::Ok(Bytes::from_static(b"["))]);
        let trickle = first.chain(futures_util::stream::pending());
        let timeout = Duration::from_secs(10);
        let e = read(trickle, 100, timeout).await.unwrap_err();
        assert_eq!((e, e.status()), (BodyError::TooSlow(timeout), 408));
    }

    #[test]
    fn a_declared_length_over_the_limit_is_refused_unread() {
        assert!(declared_too_large(Some(b"1048576"), 1024));
        assert!(!declared_too_large(Some(b"1024"), 1024));
        assert!(!declared_too_large(None, 1024));
        assert!(
            !declared_too_large(Some(b"x"), 1024),
            "hyper refuses it first"
        );
    }
}
