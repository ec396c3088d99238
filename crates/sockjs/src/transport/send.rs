//! The sending side of the HTTP transports: `POST …/xhr_send` and `POST …/jsonp_send`.
//!
//! The body is a JSON array of strings (jsonp_send may also carry it URL-encoded in a form
//! field `d`). It is read up to [`Options::max_batch_bytes`] and no further, so an endless body
//! costs nothing; each message, once decoded, must be within [`Options::max_message_bytes`],
//! and is handed to the application in order.

use futures_util::{Stream, StreamExt};
use hyper::body::Buf;

use crate::frame;
use crate::registry::{Lookup, Service};
use crate::{CloseCode, Handler, Options};

/// Why a send request was refused. Each maps to the status and text the protocol gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SendFailure {
    /// No open session has this id.
    #[error("No such session.")]
    NoSession,
    /// The body was empty.
    #[error("Payload expected.")]
    Empty,
    /// The body is not a JSON array of strings.
    #[error("Broken JSON encoding.")]
    BrokenJson,
    /// The body, or one message in it, is larger than allowed: the session is closed.
    #[error("Payload too large.")]
    TooLarge,
    /// The client stopped sending the body.
    #[error("Request body incomplete.")]
    Incomplete,
    /// The body did not arrive in time.
    #[error("Request body too slow.")]
    TooSlow,
}

/// Reads a request body, refusing it once it passes `max_batch_bytes`, or when it has not
/// all arrived within `body_timeout` (a client trickling a body holds a connection).
pub(crate) async fn read_body<S, B>(body: S, options: &Options) -> Result<Vec<u8>, SendFailure>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    tokio::time::timeout(
        options.body_timeout,
        read_limited(body, options.max_batch_bytes()),
    )
    .await
    .unwrap_or(Err(SendFailure::TooSlow))
}

async fn read_limited<S, B>(body: S, limit: usize) -> Result<Vec<u8>, SendFailure>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    let mut out = Vec::new();
    futures_util::pin_mut!(body);
    while let Some(chunk) = body.next().await {
        let mut chunk = chunk.map_err(|_| SendFailure::Incomplete)?;
        if out.len() + chunk.remaining() > limit {
            return Err(SendFailure::TooLarge);
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

/// Hands the messages in `payload` to session `key`'s application, in order.
pub(crate) fn deliver<H: Handler>(
    service: &Service<H>,
    key: &str,
    payload: Result<&[u8], SendFailure>,
) -> Result<(), SendFailure> {
    let Lookup::Open(session) = service.lookup(key) else {
        return Err(SendFailure::NoSession);
    };
    let payload = match payload {
        Err(SendFailure::TooLarge) => {
            session.close(CloseCode::MESSAGE_TOO_BIG);
            return Err(SendFailure::TooLarge);
        }
        other => other?,
    };
    if payload.is_empty() {
        return Err(SendFailure::Empty);
    }
    let text = std::str::from_utf8(payload).map_err(|_| SendFailure::BrokenJson)?;
    let messages = frame::decode_messages(text).map_err(|_| SendFailure::BrokenJson)?;
    let limit = service.options.max_message_bytes;
    if messages.iter().any(|m| m.len() > limit) {
        session.close(CloseCode::MESSAGE_TOO_BIG);
        return Err(SendFailure::TooLarge);
    }
    for message in messages {
        if session.is_closed() {
            break;
        }
        service.handler.on_message(&session, message);
    }
    Ok(())
}

/// The JSON payload of a `jsonp_send` body: the form field `d` of a URL-encoded form, or
/// the body itself under any other content type (not URL-decoded).
pub(crate) fn jsonp_payload(content_type: Option<&str>, body: &[u8]) -> Vec<u8> {
    let form = content_type.is_some_and(|t| {
        t.split(';').next().is_some_and(|t| {
            t.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
    });
    if !form {
        return body.to_vec();
    }
    form_urlencoded::parse(body)
        .find(|(k, _)| k == "d")
        .map(|(_, v)| v.into_owned().into_bytes())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonp_payloads_come_from_the_form_field_or_the_raw_body() {
        let form = Some("application/x-www-form-urlencoded; charset=UTF-8");
        assert_eq!(jsonp_payload(form, b"d=%5B%22x%22%5D"), br#"["x"]"#);
        assert_eq!(jsonp_payload(form, b"p=p"), b"");
        assert_eq!(
            jsonp_payload(Some("text/plain"), br#"["%61bc"]"#),
            br#"["%61bc"]"#
        );
        assert_eq!(jsonp_payload(None, br#"["a"]"#), br#"["a"]"#);
    }

    #[tokio::test]
    async fn bodies_past_the_limit_are_refused_without_reading_on() {
        let chunks = futures_util::stream::iter(
            std::iter::repeat_with(|| Ok(hyper::body::Bytes::from_static(&[b'x'; 1024])))
                .take(1_000_000),
        );
        assert_eq!(
            read_limited(chunks, 10 * 1024).await,
            Err(SendFailure::TooLarge)
        );
        let small = futures_util::stream::iter([Ok(hyper::body::Bytes::from_static(b"[]"))]);
        assert_eq!(read_limited(small, 10).await.unwrap(), b"[]");
    }
}
