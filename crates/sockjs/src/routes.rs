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
//! `<server>` and `<session>` are any non-empty segments without a dot; the session is keyed
//! by `<session>` alone. Anything else under the prefix is not found.

use std::sync::Arc;

use futures_util::Stream;
use warp::filters::BoxedFilter;
use warp::http::{header, HeaderMap, Method, Response, StatusCode};
use warp::hyper::body::Buf;
use warp::hyper::Body;
use warp::{Filter, Reply};

use crate::http::{self, Iframe};
use crate::registry::Service;
use crate::transport::eventsource::EventSource;
use crate::transport::htmlfile::HtmlFile;
use crate::transport::jsonp::Jsonp;
use crate::transport::receive;
use crate::transport::send::{self, SendFailure};
use crate::transport::websocket::{self, Framing};
use crate::transport::xhr::{XhrPolling, XhrStreaming};
use crate::transport::{callback, CallbackError};
use crate::{Handler, Options};

type Resp = Response<Body>;

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
        .and(optional_ws())
        .and(state.clone())
        .map(|method, headers, ws, service| {
            websocket_upgrade(Framing::Raw, method, &headers, ws, service)
        });

    let session_url = base.and(session_segment()).and(session_segment());

    let sockjs_websocket = session_url
        .clone()
        .and(warp::path("websocket"))
        .and(warp::path::end())
        .and(warp::method())
        .and(headers)
        .and(optional_ws())
        .and(state.clone())
        .map(|_server, _session, method, headers, ws, service| {
            websocket_upgrade(Framing::SockJs, method, &headers, ws, service)
        });

    let http_transports = session_url
        .and(warp::path::param::<String>())
        .and(warp::path::end())
        .and(warp::method())
        .and(headers)
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and(warp::body::stream())
        .and(state)
        .and_then(
            |_server: String,
             session: String,
             transport: String,
             method: Method,
             headers: HeaderMap,
             query: String,
             body,
             service: Arc<Service<H>>| async move {
                let request = Request {
                    session,
                    method,
                    headers,
                    query,
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

/// A `<server>` or `<session>` path segment: not empty, and without a dot.
fn session_segment() -> impl Filter<Extract = (String,), Error = warp::Rejection> + Clone {
    warp::path::param::<String>().and_then(|s: String| async move {
        if s.is_empty() || s.contains('.') {
            Err(warp::reject::not_found())
        } else {
            Ok(s)
        }
    })
}

/// The WebSocket handshake if the request is one, so that other requests get the protocol's
/// answers (405, 400) rather than a generic rejection.
fn optional_ws(
) -> impl Filter<Extract = (Option<warp::ws::Ws>,), Error = std::convert::Infallible> + Clone {
    warp::ws().map(Some).or(warp::any().map(|| None)).unify()
}

fn websocket_upgrade<H: Handler>(
    framing: Framing,
    method: Method,
    headers: &HeaderMap,
    ws: Option<warp::ws::Ws>,
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
    let Some(ws) = ws else {
        return http::text(
            StatusCode::BAD_REQUEST,
            "Not a valid websocket request: \"Upgrade: websocket\" and \"Connection: Upgrade\" expected.\n",
        );
    };
    // The WebSocket library refuses larger messages before buffering them; the transport
    // turns that refusal into a close with MESSAGE_TOO_BIG.
    let limit = service.options.max_message_bytes;
    ws.max_message_size(limit)
        .max_frame_size(limit)
        .on_upgrade(move |socket| websocket::serve(socket, framing, service))
        .into_response()
}

/// A request to one of the HTTP transports' session URLs.
struct Request {
    session: String,
    method: Method,
    headers: HeaderMap,
    query: String,
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
    } = request;
    let response = match (transport, method) {
        ("xhr" | "xhr_streaming" | "xhr_send", M::OPTIONS) => {
            http::preflight("OPTIONS, POST", &headers)
        }
        ("xhr", M::POST) => receive::respond(service.clone(), key, XhrPolling, &headers),
        ("xhr_streaming", M::POST) => {
            receive::respond(service.clone(), key, XhrStreaming, &headers)
        }
        ("eventsource", M::GET) => receive::respond(service.clone(), key, EventSource, &headers),
        ("htmlfile", M::GET) => match callback(&query) {
            Ok(callback) => receive::respond(service.clone(), key, HtmlFile { callback }, &headers),
            Err(e) => callback_error(e),
        },
        ("jsonp", M::GET) => match callback(&query) {
            Ok(callback) => receive::respond(service.clone(), key, Jsonp { callback }, &headers),
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

    /// A framed WebSocket session on `f`, past its open frame.
    async fn open_framed(f: BoxedFilter<(Resp,)>) -> warp::test::WsClient {
        let mut ws = warp::test::ws()
            .path("/echo/svc/000/abc/websocket")
            .handshake(f)
            .await
            .expect("handshake");
        assert_eq!(ws.recv().await.unwrap().to_str().unwrap(), "o");
        ws
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
    async fn framed_websocket_echoes_in_frames_and_closes_with_a_frame() {
        let f = service(Options::default());
        let mut ws = open_framed(f).await;
        ws.send_text(r#"["a","\u2028"]"#).await;
        let echoed = ws.recv().await.unwrap();
        let echoed = echoed.to_str().unwrap().to_owned();
        // Both messages came in one frame, or one frame each; either way, escaped.
        let mut all = echoed.clone();
        if echoed == r#"a["a"]"# {
            all.push_str(ws.recv().await.unwrap().to_str().unwrap());
        }
        assert!(
            all == r#"a["a","\u2028"]"# || all == r#"a["a"]a["\u2028"]"#,
            "{all}"
        );
        ws.send_text(r#""close""#).await;
        assert_eq!(
            ws.recv().await.unwrap().to_str().unwrap(),
            r#"c[3000,"Go away!"]"#
        );
        // warp's test client hides close frames; the end-to-end tests read their codes.
        assert!(ws.recv_closed().await.is_ok());
    }

    #[tokio::test]
    async fn framed_websocket_drops_broken_json() {
        let f = service(Options::default());
        let mut ws = open_framed(f).await;
        ws.send_text("").await;
        ws.send_text("[]").await;
        ws.send_text(r#"["a"#).await;
        assert!(
            ws.recv_closed().await.is_ok(),
            "broken JSON closes the connection"
        );
    }

    #[tokio::test]
    async fn raw_websocket_echoes_plain_text() {
        let f = service(Options::default());
        let mut ws = warp::test::ws()
            .path("/echo/svc/websocket")
            .handshake(f)
            .await
            .expect("handshake");
        ws.send_text("Hello world!\u{ffff}").await;
        assert_eq!(
            ws.recv().await.unwrap().to_str().unwrap(),
            "Hello world!\u{ffff}"
        );
        ws.send_text("close").await;
        assert!(ws.recv_closed().await.is_ok(), "no frame before the close");
    }

    #[tokio::test]
    async fn heartbeats_follow_idle_time() {
        let options = Options {
            heartbeat_interval: std::time::Duration::from_millis(50),
            ..Options::default()
        };
        let mut ws = open_framed(service(options)).await;
        assert_eq!(ws.recv().await.unwrap().to_str().unwrap(), "h");
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
        let shake = warp::test::ws()
            .path("/echo/svc/000/abc/websocket")
            .handshake(f)
            .await;
        assert!(shake.is_err());
    }
}
