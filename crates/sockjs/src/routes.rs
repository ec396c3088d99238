//! The route table of a SockJS service mounted under a prefix.
//!
//! | method | path | what |
//! |---|---|---|
//! | GET | `<prefix>`, `<prefix>/` | greeting |
//! | GET, OPTIONS | `<prefix>/info` | transport information, CORS preflight |
//! | GET (upgrade) | `<prefix>/<server>/<session>/websocket` | SockJS over WebSocket |
//! | GET (upgrade) | `<prefix>/websocket` | raw WebSocket, no SockJS framing |

use std::sync::Arc;

use warp::filters::BoxedFilter;
use warp::http::{Response, StatusCode};
use warp::hyper::Body;
use warp::{Filter, Reply};

use crate::http;
use crate::transport::websocket::{self, Framing};
use crate::{Handler, Options};

type Resp = Response<Body>;

/// The warp filter serving a SockJS service under `prefix` (for example `/sockjs`), with
/// `handler` as its application. Requests outside the prefix are rejected (not found), so the
/// filter combines with others through `or`.
pub fn routes<H: Handler>(prefix: &str, options: Options, handler: Arc<H>) -> BoxedFilter<(Resp,)> {
    let options = Arc::new(options);
    let base = prefix
        .split('/')
        .filter(|s| !s.is_empty())
        .fold(warp::any().boxed(), |f, segment| {
            f.and(warp::path(segment.to_owned())).boxed()
        });
    let origin = warp::header::optional::<String>("origin");

    let greeting = base
        .clone()
        .and(warp::path::end())
        .and(warp::get())
        .map(http::greeting);

    let info_options = options.clone();
    let info = base
        .clone()
        .and(warp::path("info"))
        .and(warp::path::end())
        .and(warp::get())
        .and(origin)
        .map(move |origin: Option<String>| http::info(&info_options, origin.as_deref()));
    let info_preflight = base
        .clone()
        .and(warp::path("info"))
        .and(warp::path::end())
        .and(warp::options())
        .and(origin)
        .and(warp::header::optional::<String>(
            "access-control-request-headers",
        ))
        .map(|origin: Option<String>, headers: Option<String>| {
            http::preflight("OPTIONS, GET", origin.as_deref(), headers.as_deref())
        });

    let ws_state = with_state(options.clone(), handler.clone());
    let raw_websocket = base
        .clone()
        .and(warp::path("websocket"))
        .and(warp::path::end())
        .and(warp::get())
        .and(warp::ws())
        .and(ws_state.clone())
        .map(move |ws, (options, handler)| upgrade(ws, Framing::Raw, options, handler));

    let sockjs_websocket = base
        .and(session_segment())
        .and(session_segment())
        .and(warp::path("websocket"))
        .and(warp::path::end())
        .and(warp::get())
        .and(warp::ws())
        .and(ws_state)
        .map(move |_server, _session, ws, (options, handler)| {
            upgrade(ws, Framing::SockJs, options, handler)
        });

    greeting
        .or(info)
        .unify()
        .or(info_preflight)
        .unify()
        .or(raw_websocket)
        .unify()
        .or(sockjs_websocket)
        .unify()
        .boxed()
}

fn with_state<H: Handler>(
    options: Arc<Options>,
    handler: Arc<H>,
) -> impl Filter<Extract = ((Arc<Options>, Arc<H>),), Error = std::convert::Infallible> + Clone {
    warp::any().map(move || (options.clone(), handler.clone()))
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

fn upgrade<H: Handler>(
    ws: warp::ws::Ws,
    framing: Framing,
    options: Arc<Options>,
    handler: Arc<H>,
) -> Resp {
    if !options.websocket {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::NOT_FOUND;
        return r;
    }
    // The WebSocket library refuses larger messages before buffering them; the transport
    // turns that refusal into a close with MESSAGE_TOO_BIG.
    let limit = options.max_message_bytes;
    ws.max_message_size(limit)
        .max_frame_size(limit)
        .on_upgrade(move |socket| websocket::serve(socket, framing, options, handler))
        .into_response()
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
