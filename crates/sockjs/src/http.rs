//! The plain HTTP endpoints of a SockJS service, and the headers they share.

use warp::http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use warp::hyper::Body;

use crate::Options;

/// `Cache-Control` for every response that must never be cached.
pub(crate) const NO_CACHE: &str = "no-store, no-cache, no-transform, must-revalidate, max-age=0";
/// How long browsers may cache a CORS preflight answer (one year).
const PREFLIGHT_MAX_AGE: &str = "31536000";

/// `GET <prefix>` and `<prefix>/`: the greeting.
pub(crate) fn greeting() -> Response<Body> {
    let mut r = Response::new(Body::from("Welcome to SockJS!\n"));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=UTF-8"),
    );
    r
}

/// `GET <prefix>/info`: what the client needs to pick a transport.
pub(crate) fn info(options: &Options, origin: Option<&str>) -> Response<Body> {
    let body = serde_json::json!({
        "websocket": options.websocket,
        "cookie_needed": options.cookie_needed,
        "origins": ["*:*"],
        "entropy": rand::random::<u32>(),
    });
    let mut r = Response::new(Body::from(body.to_string()));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=UTF-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(NO_CACHE));
    cors(h, origin);
    r
}

/// `OPTIONS` on an endpoint: the CORS preflight answer, allowing `methods`.
pub(crate) fn preflight(
    methods: &'static str,
    origin: Option<&str>,
    request_headers: Option<&str>,
) -> Response<Body> {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::NO_CONTENT;
    let h = r.headers_mut();
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000"),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static(PREFLIGHT_MAX_AGE),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(methods),
    );
    if let Some(v) = request_headers
        .filter(|v| !v.is_empty())
        .and_then(|v| HeaderValue::from_str(v).ok())
    {
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v);
    }
    cors(h, origin);
    r
}

/// CORS headers: the request's origin echoed with credentials allowed, or `*` without.
pub(crate) fn cors(h: &mut HeaderMap, origin: Option<&str>) {
    match origin.and_then(|o| HeaderValue::from_str(o).ok()) {
        Some(o) => {
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, o);
            h.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        None => {
            h.insert(
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                HeaderValue::from_static("*"),
            );
        }
    }
}
