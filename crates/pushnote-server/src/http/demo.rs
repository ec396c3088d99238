//! The demo page (`--demo`): a page at `/` that connects with pushnote.js over the stock
//! SockJS client, subscribes with a token pasted into it, joins channels, and shows
//! notifications, channel events and reconnections as they come.

use warp::filters::BoxedFilter;
use warp::http::{header, HeaderValue};
use warp::reply::Response;
use warp::{Filter, Reply};

const PAGE: &str = include_str!("demo.html");

/// The page with the SockJS client URL and the route filled in, each escaped for where it
/// stands: an HTML attribute, or a JavaScript string inside a script element.
pub fn page(sockjs_url: &str, route: &str) -> String {
    let attr = |s: &str| {
        s.replace('&', "&amp;")
            .replace('"', "&quot;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    // A JSON string is a JavaScript string literal; `<` escaped keeps `</script>` out.
    let js = |s: &str| {
        serde_json::Value::from(s)
            .to_string()
            .replace('<', "\\u003c")
    };
    let library = format!("{}/pushnote.js", route.trim_end_matches('/'));
    PAGE.replace("{{SOCKJS_URL_ATTR}}", &attr(sockjs_url))
        .replace("{{LIBRARY_URL_ATTR}}", &attr(&library))
        .replace("{{SOCKJS_URL_JS}}", &js(sockjs_url))
        .replace("{{ROUTE_JS}}", &js(route))
}

/// `GET /`: the page when `sockjs_url` is set (the demo is on), else not found.
pub fn route(sockjs_url: Option<String>, route: String) -> BoxedFilter<(Response,)> {
    let html = sockjs_url.map(|url| page(&url, &route));
    warp::path::end()
        .and(warp::get())
        .and_then(move || {
            let html = html.clone();
            async move {
                let html = html.ok_or_else(warp::reject::not_found)?;
                let mut r = warp::http::Response::new(html).into_response();
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/html; charset=UTF-8"),
                );
                Ok::<_, warp::Rejection>(r)
            }
        })
        .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped_for_their_context() {
        let html = page("/s.js?a=1&b=\"x\"", "/push</script><script>alert(1)//");
        assert!(html.contains(r#"<script src="/s.js?a=1&amp;b=&quot;x&quot;"></script>"#));
        assert!(html.contains(r#"var route = "/push\u003c/script>\u003cscript>alert(1)//";"#));
        assert!(html.contains(
            r#"<script src="/push&lt;/script&gt;&lt;script&gt;alert(1)/pushnote.js"></script>"#
        ));
        assert!(!html.contains("</script><script>alert"));
        assert!(!html.contains("{{"));
    }
}
