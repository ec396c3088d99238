//! The forwarder's HTTP side, on the address `--metrics` names: `/metrics` for Prometheus, and
//! `/health` for supervisors and load balancers.

use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::service::{make_service_fn, service_fn};
use hyper::{Body, Method, Request, Response, StatusCode};
use tokio::net::{TcpListener, TcpStream};

use crate::metrics::Metrics;

/// How long a client may take to send a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `metrics` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) -> hyper::Result<()> {
    let incoming = hyper::server::accept::from_stream(connections(listener));
    let make = make_service_fn(move |_| {
        let metrics = metrics.clone();
        async move {
            Ok::<_, Infallible>(service_fn(move |request| {
                let response = respond(&metrics, &request);
                async move { Ok::<_, Infallible>(response) }
            }))
        }
    });
    hyper::Server::builder(incoming)
        .http1_only(true)
        .http1_header_read_timeout(HEADER_TIMEOUT)
        .serve(make)
        .with_graceful_shutdown(shutdown)
        .await
}

fn respond(metrics: &Metrics, request: &Request<Body>) -> Response<Body> {
    let mut response = Response::new(Body::empty());
    match (request.method(), request.uri().path()) {
        (&Method::GET, "/metrics") => {
            *response.body_mut() = Body::from(metrics.render());
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
        }
        (&Method::GET, "/health") => {
            let running = metrics.running.load(Ordering::Relaxed) == 1;
            let status = if running { "ready" } else { "stopped" };
            *response.body_mut() = Body::from(format!(r#"{{"status":"{status}"}}"#));
            if !running {
                *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            }
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        (_, "/metrics" | "/health") => *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED,
        _ => *response.status_mut() = StatusCode::NOT_FOUND,
    }
    response
}

/// The connections `listener` accepts; a failed accept (out of descriptors, say) is logged
/// and retried after a pause instead of ending the server.
fn connections(
    listener: TcpListener,
) -> impl futures_util::Stream<Item = Result<TcpStream, Infallible>> {
    futures_util::stream::unfold(listener, |listener| async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => return Some((Ok(stream), listener)),
                Err(e) => {
                    tracing::warn!(error = %e, "metrics: accept failed; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    })
}
