//! The demo page (`--demo`): a page at `/` that connects with the stock SockJS client,
//! subscribes with a token pasted into it, and shows notifications as they arrive.

use warp::filters::BoxedFilter;
use warp::http::{header, HeaderValue, Response};
use warp::hyper::Body;
use warp::Filter;

const PAGE: &str = include_str!("demo.html");

/// The page with the SockJS client URL and the route filled in.
pub fn page(sockjs_url: &str, route: &str) -> String {
    let attr = |s: &str| {
        s.replace('&', "&amp;")
            .replace('"', "&quot;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    PAGE.replace("{{SOCKJS_URL}}", &attr(sockjs_url))
        .replace("{{ROUTE}}", &attr(route))
}

/// `GET /`: the page when `sockjs_url` is set (the demo is on), else not found.
pub fn route(sockjs_url: Option<String>, route: String) -> BoxedFilter<(Response<Body>,)> {
    let html = sockjs_url.map(|url| page(&url, &route));
    warp::path::end()
        .and(warp::get())
        .and_then(move || {
            let html = html.clone();
            async move {
                let html = html.ok_or_else(warp::reject::not_found)?;
                let mut r = Response::new(Body::from(html));
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/html; charset=UTF-8"),
                );
                Ok::<_, warp::Rejection>(r)
            }
        })
        .boxed()
}
