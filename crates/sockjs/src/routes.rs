//! The route table of a SockJS service mounted under a prefix.
//!
//! | method | path | what |
//! |---|---|---|
//! | GET | `<prefix>`, `<prefix>/` | greeting |
//! | GET, OPTIONS | `<prefix>/info` | transport information, CORS preflight |
//! | GET | `<prefix>/iframe.html`, `<prefix>/iframe-<version>.html` | the iframe transports' page |
//! | GET (upgrade) | `<prefix>/websocket` | raw WebSocket, no SockJS framing |
//! | GET (upgrade) | `<prefix>/<server>/<session>/websocket` | SockJS over WebSocket |
//! | POST, OPTIONS | `<prefix>/<server>/<session>/xhr_streaming` | XHR streaming |
//! | POST, OPTIONS | `<prefix>/<server>/<session>/xhr` | XHR polling |
//! | POST, OPTIONS | `<prefix>/<server>/<session>/xhr_send` | what XHR clients send |
//! | GET | `<prefix>/<server>/<session>/eventsource` | EventSource |
//! | GET | `<prefix>/<server>/<session>/htmlfile?c=<callback>` | htmlfile |
//! | GET | `<prefix>/<server>/<session>/jsonp?c=<callback>` | JSONP polling |
//! | POST | `<prefix>/<server>/<session>/jsonp_send` | what JSONP clients send |
//!
//! `<server>` and `<session>` are any non-empty segments without a dot, of at most
//! [`MAX_ID_BYTES`] bytes; the session is keyed by `<session>` alone. Anything else under the
//! prefix is not found.

use std::sync::Arc;

use futures_util::Stream;
use hyper::body::Buf;
use warp::filters::BoxedFilter;
use warp::http::{header, HeaderMap, Method, StatusCode};
use warp::Filter;

use crate::admission::{Client, Peer};
use crate::http::{self, Iframe, Resp};
use crate::registry::Service;
use crate::transport::eventsource::EventSource;
use crate::transport::htmlfile::HtmlFile;
use crate::transport::jsonp::Jsonp;
use crate::transport::receive;
use crate::transport::send::{self, SendFailure};
use crate::transport::websocket::{self, Framing};
use crate::transport::xhr::{XhrPolling, XhrStreaming};
use crate::transport::{callback, CallbackError};
use crate::{ws, Handler, Options};

/// The warp filter serving a SockJS service under `prefix` (for example `/sockjs`), with
/// `handler` as its application. Requests outside the prefix are rejected (not found), so the
/// filter combines with others through `or`.
pub fn routes<H: Handler>(prefix: &str, options: Options, handler: Arc<H>) -> BoxedFilter<(Resp,)> {
    let iframe = Arc::new(Iframe::new(&options.sockjs_url));
    let service = Service::new(options, handler);
    let state = warp::any().map(move || service.clone());
    let base = prefix
        .split('/')
        .filter(|s| !s.is_empty())
        .fold(warp::any().boxed(), |f, segment| {
            f.and(warp::path(segment.to_owned())).boxed()
        });
    let headers = warp::header::headers_cloned();
    let client = warp::ext::optional::<Peer>()
        .and(warp::addr::remote())
        .and(headers)
        .and(state.clone())
        .map(
            |peer: Option<Peer>, remote, headers: HeaderMap, service: Arc<Service<H>>| {
                Client::of(peer, remote, &headers, &service.options.trusted_proxies)
            },
        );

    let greeting = base
        .clone()
        .and(warp::path::end())
        .and(warp::get())
        .map(http::greeting);

    let info = base
        .clone()
        .and(warp::path("info"))
        .and(warp::path::end())
        .and(warp::method())
        .and(headers)
        .and(state.clone())
        .map(
            |method: Method, headers: HeaderMap, service: Arc<Service<H>>| {
                if !http::origin_allowed(&service.options, &headers) {
                    return http::forbidden_origin();
                }
                match method {
                    Method::GET => http::info(&service.options, &headers),
                    Method::OPTIONS => http::preflight("OPTIONS, GET", &headers),
                    _ => http::method_not_allowed("OPTIONS, GET"),
                }
            },
        );

    let iframe_page = base
        .clone()
        .and(warp::path::param::<String>())
        .and(warp::path::end())
        .and_then(|page: String| async move {
            if http::is_iframe_page(&page) {
                Ok(())
            } else {
                Err(warp::reject::not_found())
            }
        })
        .untuple_one()
        .and(warp::get())
        .and(headers)
        .map(move |headers: HeaderMap| iframe.respond(&headers));

    let raw_websocket = base
        .clone()
        .and(warp::path("websocket"))
        .and(warp::path::end())
        .and(warp::method())
        .and(headers)
        .and(client.clone())
        .and(ws::upgrade_slot())
        .and(state.clone())
        .map(|method, headers, client, slot, service| {
            websocket_upgrade(Framing::Raw, method, &headers, client, slot, service)
        });

    let session_url = base.and(session_segment()).and(session_segment());

    let sockjs_websocket = session_url
        .clone()
        .and(warp::path("websocket"))
        .and(warp::path::end())
        .and(warp::method())
        .and(headers)
        .and(client.clone())
        .and(ws::upgrade_slot())
        .and(state.clone())
        .map(
            |_server, _session, method, headers, client, slot, service| {
                websocket_upgrade(Framing::SockJs, method, &headers, client, slot, service)
            },
        );

    let http_transports = session_url
        .and(warp::path::param::<String>())
        .and(warp::path::end())
        .and(warp::method())
        .and(headers)
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and(client)
        .and(warp::body::stream())
        .and(state)
        .and_then(
            |_server: String,
             session: String,
             transport: String,
             method: Method,
             headers: HeaderMap,
             query: String,
             client: Client,
             body,
             service: Arc<Service<H>>| async move {
                let request = Request {
                    session,
                    method,
                    headers,
                    query,
                    client,
                };
                http_transport(service, &transport, request, body)
                    .await
                    .ok_or_else(warp::reject::not_found)
            },
        );

    greeting
        .or(info)
        .unify()
        .or(raw_websocket)
        .unify()
        .or(iframe_page)
        .unify()
        .or(sockjs_websocket)
        .unify()
        .or(http_transports)
        .unify()
        .boxed()
}

/// The longest `<server>` or `<session>` segment of a session URL, in bytes as the URL carries
/// them (they are not percent-decoded); a longer one is not found, as any path outside the
/// protocol is.
///
/// An HTTP session keeps its id as long as it lives (the registry's key, each receiving
/// request's ticket), so without a bound the client chose what each session costs: 60 KB ids
/// cost over 120 KB a session. The stock sockjs-client (1.6.1) sends a 3-digit server id and an
/// 8-character session id; clients that pick their own use UUIDs (36 characters). 64 leaves
/// room for those and for 32 random bytes in hex.
pub const MAX_ID_BYTES: usize = 64;

/// A `<server>` or `<session>` path segment: not empty, at most [`MAX_ID_BYTES`] long, and
/// without a dot.
fn session_segment() -> impl Filter<Extract = (String,), Error = warp::Rejection> + Clone {
    warp::path::param::<String>().and_then(|s: String| async move {
        if s.is_empty() || s.len() > MAX_ID_BYTES || s.contains('.') {
            Err(warp::reject::not_found())
        } else {
            Ok(s)
        }
    })
}

fn websocket_upgrade<H: Handler>(
    framing: Framing,
    method: Method,
    headers: &HeaderMap,
    client: Client,
    slot: Option<ws::UpgradeSlot>,
    service: Arc<Service<H>>,
) -> Resp {
    if !service.options.websocket {
        return http::not_found();
    }
    if method != Method::GET {
        return http::method_not_allowed("GET");
    }
    if !http::origin_allowed(&service.options, headers) {
        return http::forbidden_origin();
    }
    let accept = match ws::check_handshake(headers) {
        Ok(accept) => accept,
        Err(ws::NotHandshake::Version) => {
            let mut r = http::text(
                StatusCode::UPGRADE_REQUIRED,
                "Unsupported WebSocket version: 13 expected.\n",
            );
            r.headers_mut().insert(
                warp::http::header::SEC_WEBSOCKET_VERSION,
                warp::http::HeaderValue::from_static("13"),
            );
            return r;
        }
        Err(ws::NotHandshake::Key) => {
            return http::text(StatusCode::BAD_REQUEST, "Missing Sec-WebSocket-Key.\n")
        }
        Err(ws::NotHandshake::NotUpgrade) => {
            return http::text(
                StatusCode::BAD_REQUEST,
                "Not a valid websocket request: \"Upgrade: websocket\" and \"Connection: Upgrade\" expected.\n",
            )
        }
    };
    let Some(slot) = slot else {
        tracing::error!("websocket handshake on a server without sockjs::with_upgrades");
        return http::text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "This server cannot upgrade to WebSocket.\n",
        );
    };
    // WebSocket messages larger than this are refused from their frame header, before being
    // buffered; the transport closes the session with MESSAGE_TOO_BIG. A SockJS-framed one is
    // a batch of escaped messages, each checked once decoded; a raw one is the message.
    let limit = match framing {
        Framing::SockJs => service.options.max_batch_bytes(),
        Framing::Raw => service.options.max_message_bytes,
    };
    ws::upgrade(slot, accept, limit, move |conn| {
        websocket::open(conn, framing, service, client)
    })
}

/// A request to one of the HTTP transports' session URLs.
struct Request {
    session: String,
    method: Method,
    headers: HeaderMap,
    query: String,
    client: Client,
}

/// Serves an HTTP transport's URL; `None` when `transport` names none.
async fn http_transport<H, S, B>(
    service: Arc<Service<H>>,
    transport: &str,
    request: Request,
    body: S,
) -> Option<Resp>
where
    H: Handler,
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    use Method as M;
    let known = matches!(
        transport,
        "xhr" | "xhr_streaming" | "xhr_send" | "eventsource" | "htmlfile" | "jsonp" | "jsonp_send"
    );
    if !known {
        return None;
    }
    if !http::origin_allowed(&service.options, &request.headers) {
        return Some(http::forbidden_origin());
    }
    let Request {
        session: key,
        method,
        headers,
        query,
        client,
    } = request;
    let response = match (transport, method) {
        ("xhr" | "xhr_streaming" | "xhr_send", M::OPTIONS) => {
            http::preflight("OPTIONS, POST", &headers)
        }
        ("xhr", M::POST) => receive::respond(service.clone(), key, client, XhrPolling, &headers),
        ("xhr_streaming", M::POST) => {
            receive::respond(service.clone(), key, client, XhrStreaming, &headers)
        }
        ("eventsource", M::GET) => {
            receive::respond(service.clone(), key, client, EventSource, &headers)
        }
        ("htmlfile", M::GET) => match callback(&query) {
            Ok(callback) => receive::respond(
                service.clone(),
                key,
                client,
                HtmlFile { callback },
                &headers,
            ),
            Err(e) => callback_error(e),
        },
        ("jsonp", M::GET) => match callback(&query) {
            Ok(callback) => {
                receive::respond(service.clone(), key, client, Jsonp { callback }, &headers)
            }
            Err(e) => callback_error(e),
        },
        ("xhr_send", M::POST) => {
            let body = send::read_body(body, &service.options).await;
            let result = send::deliver(&service, &key, body.as_deref().map_err(|e| *e));
            let mut r = match result {
                Ok(()) => http::text(StatusCode::NO_CONTENT, ""),
                Err(e) => send_error(e),
            };
            http::cors(r.headers_mut(), &headers);
            sent(r, &service.options, &headers)
        }
        ("jsonp_send", M::POST) => {
            let content_type = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok());
            let body = send::read_body(body, &service.options)
                .await
                .map(|b| send::jsonp_payload(content_type, &b));
            let r = match send::deliver(&service, &key, body.as_deref().map_err(|e| *e)) {
                Ok(()) => http::text(StatusCode::OK, "ok"),
                Err(e) => send_error(e),
            };
            sent(r, &service.options, &headers)
        }
        ("xhr" | "xhr_streaming" | "xhr_send", _) => http::method_not_allowed("OPTIONS, POST"),
        ("jsonp_send", _) => http::method_not_allowed("POST"),
        _ => http::method_not_allowed("GET"),
    };
    Some(response)
}

/// The answer to a send request, never cached, with the session cookie when needed.
fn sent(mut response: Resp, options: &Options, request: &HeaderMap) -> Resp {
    let h = response.headers_mut();
    http::no_cache(h);
    http::session_cookie(h, options, request);
    response
}

fn callback_error(e: CallbackError) -> Resp {
    let text = match e {
        CallbackError::Missing => "\"callback\" parameter required",
        CallbackError::Invalid => "invalid \"callback\" parameter",
    };
    http::text(StatusCode::INTERNAL_SERVER_ERROR, text)
}

fn send_error(e: SendFailure) -> Resp {
    let status = match e {
        SendFailure::NoSession => StatusCode::NOT_FOUND,
        SendFailure::Empty | SendFailure::BrokenJson => StatusCode::INTERNAL_SERVER_ERROR,
        SendFailure::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        SendFailure::Incomplete => StatusCode::BAD_REQUEST,
        SendFailure::TooSlow => StatusCode::REQUEST_TIMEOUT,
    };
    http::text(status, e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Message, Session};

    /// Echoes every message back; closes the session on "close".
    struct Echo;

    impl Handler for Echo {
        fn on_message(&self, session: &Session, message: String) {
            if message == "close" {
                session.close(crate::CloseCode::NORMAL);
            } else {
                let _ = session.send(Message::text(&message));
            }
        }
    }

    fn service(options: Options) -> BoxedFilter<(Resp,)> {
        routes("/echo/svc", options, Arc::new(Echo))
    }

    #[tokio::test]
    async fn greeting_info_and_not_found() {
        let f = service(Options::default());
        for path in ["/echo/svc", "/echo/svc/"] {
            let r = warp::test::request().path(path).reply(&f).await;
            assert_eq!(r.status(), 200);
            assert_eq!(r.body(), "Welcome to SockJS!\n");
            assert_eq!(r.headers()["content-type"], "text/plain; charset=UTF-8");
        }
        let r = warp::test::request()
            .path("/echo/svc/info")
            .header("origin", "http://example.com")
            .reply(&f)
            .await;
        assert_eq!(r.status(), 200);
        assert_eq!(
            r.headers()["access-control-allow-origin"],
            "http://example.com"
        );
        assert_eq!(r.headers()["access-control-allow-credentials"], "true");
        assert_eq!(r.headers()["cache-control"], http::NO_CACHE);
        let info: serde_json::Value = serde_json::from_slice(r.body()).unwrap();
        assert_eq!(info["websocket"], true);
        assert_eq!(info["cookie_needed"], false);
        let r = warp::test::request()
            .method("OPTIONS")
            .path("/echo/svc/info")
            .header("access-control-request-headers", "a, b")
            .reply(&f)
            .await;
        assert_eq!(r.status(), 204);
        assert_eq!(r.headers()["access-control-allow-methods"], "OPTIONS, GET");
        assert_eq!(r.headers()["access-control-allow-headers"], "a, b");
        assert_eq!(r.headers()["access-control-allow-origin"], "*");
        for path in ["/echo", "/echo/svc/a", "/echo/svc/a./b/websocket", "/other"] {
            let r = warp::test::request().path(path).reply(&f).await;
            assert_eq!(r.status(), 404, "{path}");
        }
    }

    #[tokio::test]
    async fn websocket_can_be_turned_off() {
        let options = Options {
            websocket: false,
            ..Options::default()
        };
        let f = service(options);
        let r = warp::test::request().path("/echo/svc/info").reply(&f).await;
        let info: serde_json::Value = serde_json::from_slice(r.body()).unwrap();
        assert_eq!(info["websocket"], false);
        let shake = warp::test::request()
            .path("/echo/svc/000/abc/websocket")
            .header("upgrade", "websocket")
            .header("connection", "upgrade")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .reply(&f)
            .await;
        assert_eq!(shake.status(), 404);
    }
}
