//! pushnote.js, the browser library, served at `<route>/pushnote.js` for pages to load after
//! the SockJS client.

use warp::filters::BoxedFilter;
use warp::http::{header, HeaderValue};
use warp::reply::Response;
use warp::{Filter, Reply};

/// The library's source, as served.
pub const SOURCE: &str = include_str!("pushnote.js");

/// How long browsers and proxies may reuse the file: a server upgraded within the hour may
/// serve pages the older library, which speaks the same protocol.
const CACHE_CONTROL: &str = "public, max-age=3600";

/// `GET <route>/pushnote.js`.
pub fn route(route: &str) -> BoxedFilter<(Response,)> {
    let path = format!("{}/pushnote.js", route.trim_end_matches('/'));
    // The path first: any other path is not found, whatever its method.
    warp::path::full()
        .and_then(move |full: warp::path::FullPath| {
            let found = full.as_str() == path;
            async move {
                if found {
                    Ok(())
                } else {
                    Err(warp::reject::not_found())
                }
            }
        })
        .untuple_one()
        .and(warp::get())
        .map(|| {
            let mut r = warp::http::Response::new(SOURCE).into_response();
            let headers = r.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/javascript; charset=UTF-8"),
            );
            headers.insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static(CACHE_CONTROL),
            );
            r
        })
        .boxed()
}
