//! The plain HTTP endpoints of a SockJS service (greeting, `/info`, `/iframe.html`,
//! preflights, errors) and the headers every response shares (caching, CORS, cookie).

use std::hash::{Hash, Hasher};

use hyper::body::Bytes;
use warp::http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use warp::Reply;

use crate::Options;

/// `Cache-Control` for every response that must never be cached.
pub(crate) const NO_CACHE: &str = "no-store, no-cache, no-transform, must-revalidate, max-age=0";
/// `Cache-Control` for what never changes while the server runs (one year).
const CACHE_FOREVER: &str = "public, max-age=31536000";
const ONE_YEAR: std::time::Duration = std::time::Duration::from_secs(31_536_000);
const TEXT: &str = "text/plain; charset=UTF-8";

/// A response, as warp serves it.
pub(crate) type Resp = warp::reply::Response;

/// A response whose body is `body`, whole (sent with its `Content-Length`).
pub(crate) fn whole(body: impl Into<Bytes>) -> Resp {
    Response::new(body.into()).into_response()
}

/// A response with a plain-text body.
pub(crate) fn text(status: StatusCode, body: impl Into<String>) -> Resp {
    let mut r = whole(body.into());
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(TEXT));
    r
}

/// `GET <prefix>` and `<prefix>/`: the greeting.
pub(crate) fn greeting() -> Resp {
    text(StatusCode::OK, "Welcome to SockJS!\n")
}

/// 404, for paths under the prefix that are not part of the protocol.
pub(crate) fn not_found() -> Resp {
    text(StatusCode::NOT_FOUND, "404 Error: Page not found\n")
}

/// 405 with the methods the URL takes, and no body.
pub(crate) fn method_not_allowed(allow: &'static str) -> Resp {
    let mut r = Resp::default();
    *r.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    r
}

/// 403 for a browser page whose origin is not allowed.
pub(crate) fn forbidden_origin() -> Resp {
    text(StatusCode::FORBIDDEN, "Origin not allowed.\n")
}

/// `GET <prefix>/info`: what the client needs to pick a transport.
pub(crate) fn info(options: &Options, request: &HeaderMap) -> Resp {
    let body = serde_json::json!({
        "websocket": options.websocket,
        "cookie_needed": options.cookie_needed,
        "origins": ["*:*"],
        "entropy": rand::random::<u32>(),
    });
    let mut r = whole(body.to_string());
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=UTF-8"),
    );
    no_cache(h);
    cors(h, request);
    r
}

/// `OPTIONS` on an endpoint: the CORS preflight answer, allowing `methods`.
pub(crate) fn preflight(methods: &'static str, request: &HeaderMap) -> Resp {
    let mut r = Resp::default();
    *r.status_mut() = StatusCode::NO_CONTENT;
    let h = r.headers_mut();
    cache_forever(h);
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from(ONE_YEAR.as_secs()),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(methods),
    );
    if let Some(v) = request
        .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .filter(|v| !v.is_empty())
    {
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v.clone());
    }
    cors(h, request);
    r
}

/// The page `/iframe.html` (and `/iframe-<version>.html`): the iframe transports load it from
/// the server's origin, and it runs the SockJS client from `sockjs_url` inside it.
pub(crate) struct Iframe {
    /// Shared by every response: each one takes a reference, not a copy.
    body: Bytes,
    etag: HeaderValue,
}

impl Iframe {
    pub(crate) fn new(sockjs_url: &str) -> Iframe {
        let src = html_attribute(sockjs_url);
        let body = format!(
            r#"<!DOCTYPE html>
<html>
<head>
  <meta http-equiv="X-UA-Compatible" content="IE=edge" />
  <meta http-equiv="Content-Type" content="text/html; charset=UTF-8" />
  <script src="{src}"></script>
  <script>
    document.domain = document.domain;
    SockJS.bootstrap_iframe();
  </script>
</head>
<body>
  <h2>Don't panic!</h2>
  <p>This is a SockJS hidden iframe. It's used for cross domain magic.</p>
</body>
</html>"#
        );
        // The ETag only has to change when the page does; SipHash with fixed keys is stable.
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        body.hash(&mut hasher);
        let etag = HeaderValue::from_str(&format!("\"{:016x}\"", hasher.finish()))
            .expect("hex digits in quotes are a valid header value");
        Iframe {
            body: Bytes::from(body),
            etag,
        }
    }

    pub(crate) fn respond(&self, request: &HeaderMap) -> Resp {
        if request.get(header::IF_NONE_MATCH) == Some(&self.etag) {
            let mut r = Resp::default();
            *r.status_mut() = StatusCode::NOT_MODIFIED;
            return r;
        }
        let mut r = whole(self.body.clone());
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=UTF-8"),
        );
        h.insert(header::ETAG, self.etag.clone());
        cache_forever(h);
        r
    }
}

/// Whether a path segment names the iframe page: `iframe.html` or `iframe-<version>.html`,
/// where the client puts its version (letters, digits, `.`, `-`, `_`).
pub(crate) fn is_iframe_page(segment: &str) -> bool {
    segment
        .strip_prefix("iframe")
        .and_then(|s| s.strip_suffix(".html"))
        .is_some_and(|v| {
            v.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_')
            })
        })
}

fn html_attribute(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

pub(crate) fn no_cache(h: &mut HeaderMap) {
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(NO_CACHE));
}

fn cache_forever(h: &mut HeaderMap) {
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(CACHE_FOREVER),
    );
    let expires = std::time::SystemTime::now() + ONE_YEAR;
    if let Ok(v) = HeaderValue::from_str(&httpdate(expires)) {
        h.insert(header::EXPIRES, v);
    }
}

/// CORS headers: the request's origin echoed with credentials allowed, or `*` without.
/// Only called once the origin has passed the allow-list.
pub(crate) fn cors(h: &mut HeaderMap, request: &HeaderMap) {
    match request.get(header::ORIGIN) {
        Some(origin) => {
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
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

/// Sets the `JSESSIONID` cookie on session responses when the service needs one (load
/// balancers route by it): the client's own value if it sent one, else `dummy`.
pub(crate) fn session_cookie(h: &mut HeaderMap, options: &Options, request: &HeaderMap) {
    if !options.cookie_needed {
        return;
    }
    let value = request
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == "JSESSIONID")
        .map(|(_, v)| v)
        .filter(|v| {
            !v.is_empty()
                && v.bytes()
                    .all(|b| b.is_ascii_graphic() && !matches!(b, b';' | b',' | b'"' | b'\\'))
        })
        .unwrap_or("dummy");
    if let Ok(v) = HeaderValue::from_str(&format!("JSESSIONID={value}; path=/")) {
        h.insert(header::SET_COOKIE, v);
    }
}

/// Whether the request's origin may use the service.
pub(crate) fn origin_allowed(options: &Options, request: &HeaderMap) -> bool {
    let get = |name| {
        request
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    options
        .origins
        .allows(get(header::ORIGIN), get(header::HOST))
}

/// An HTTP date (RFC 7231 IMF-fixdate) for `Expires`.
fn httpdate(t: std::time::SystemTime) -> String {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let days = secs / 86_400;
    let (h, m, s) = (secs % 86_400 / 3600, secs % 3600 / 60, secs % 60);
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        WEEKDAYS[(days % 7) as usize],
        day,
        MONTHS[(month - 1) as usize],
        year,
        h,
        m,
        s
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates_are_imf_fixdate() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        assert_eq!(httpdate(t), "Tue, 14 Nov 2023 22:13:20 GMT");
        let leap = std::time::UNIX_EPOCH + std::time::Duration::from_secs(951_782_400);
        assert_eq!(httpdate(leap), "Tue, 29 Feb 2000 00:00:00 GMT");
    }

    #[test]
    fn iframe_page_names() {
        for ok in [
            "iframe.html",
            "iframe-a.html",
            "iframe-.html",
            "iframe-0.1.2.html",
            "iframe-0.1.2abc-dirty.2144.html",
        ] {
            assert!(is_iframe_page(ok), "{ok}");
        }
        for bad in [
            "iframe.htm",
            "iframe",
            "IFRAME.HTML",
            "iframe.HTML",
            "iframe.xml",
        ] {
            assert!(!is_iframe_page(bad), "{bad}");
        }
    }

    #[test]
    fn the_session_cookie_echoes_a_sane_client_value() {
        let options = Options {
            cookie_needed: true,
            ..Options::default()
        };
        let mut req = HeaderMap::new();
        let mut h = HeaderMap::new();
        session_cookie(&mut h, &options, &req);
        assert_eq!(h[header::SET_COOKIE], "JSESSIONID=dummy; path=/");
        req.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; JSESSIONID=abcdef"),
        );
        session_cookie(&mut h, &options, &req);
        assert_eq!(h[header::SET_COOKIE], "JSESSIONID=abcdef; path=/");
        req.insert(header::COOKIE, HeaderValue::from_static("JSESSIONID=\"x\""));
        session_cookie(&mut h, &options, &req);
        assert_eq!(h[header::SET_COOKIE], "JSESSIONID=dummy; path=/");
    }
}
