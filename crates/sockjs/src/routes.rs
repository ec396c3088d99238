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
