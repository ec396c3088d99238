//! The forwarder's HTTP side: `/metrics` for Prometheus and `/health` for supervisors, on the
//! address `--metrics` names; `POST /publish` for apps that cannot link ZeroMQ (and
//! `/health`), on the address `--http` names.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::HttpBody;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use hyper::service::{make_service_fn, service_fn};
use hyper::{Body, Method, Request, Response, StatusCode};
use pushnote::http_publish;
use tokio::net::{TcpListener, TcpStream};

use crate::metrics::Metrics;

/// How long a client may take to send a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// What one listener serves.
#[derive(Clone)]
pub enum Serves {
    /// `/metrics` and `/health` (`--metrics`).
    Metrics(Arc<Metrics>),
    /// `POST /publish` and `/health` (`--http`).
    Publish(Arc<Publishing>),
}

/// Publishing over HTTP: the key requests must carry, the largest body, and the publisher
/// (connected to the forwarder's own app side) the messages go through.
pub struct Publishing {
    pub api_key: String,
    pub max_body_bytes: usize,
    pub publisher: Arc<pushnote::Publisher>,
    pub metrics: Arc<Metrics>,
}

/// Serves `serves` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    serves: Serves,
    shutdown: impl Future<Output = ()>,
) -> hyper::Result<()> {
    let incoming = hyper::server::accept::from_stream(connections(listener));
    let make = make_service_fn(move |_| {
        let serves = serves.clone();
        async move {
            Ok::<_, Infallible>(service_fn(move |request| {
                let serves = serves.clone();
                async move { Ok::<_, Infallible>(respond(&serves, request).await) }
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

fn json(status: u16, body: String) -> Response<Body> {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn health(metrics: &Metrics) -> Response<Body> {
    if metrics.running.load(Ordering::Relaxed) == 1 {
        json(200, r#"{"status":"ready"}"#.into())
    } else {
        json(503, r#"{"status":"stopped"}"#.into())
    }
}

fn status(code: StatusCode) -> Response<Body> {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = code;
    response
}

async fn respond(serves: &Serves, request: Request<Body>) -> Response<Body> {
    let path = request.uri().path().to_owned();
    match (serves, request.method(), path.as_str()) {
        (Serves::Metrics(metrics), &Method::GET, "/metrics") => {
            let mut response = Response::new(Body::from(metrics.render()));
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        }
        (Serves::Metrics(metrics), &Method::GET, "/health") => health(metrics),
        (Serves::Publish(p), &Method::GET, "/health") => health(&p.metrics),
        (Serves::Publish(p), &Method::POST, "/publish") => publish(p, request).await,
        (Serves::Metrics(_), _, "/metrics" | "/health")
        | (Serves::Publish(_), _, "/publish" | "/health") => status(StatusCode::METHOD_NOT_ALLOWED),
        _ => status(StatusCode::NOT_FOUND),
    }
}

async fn publish(p: &Arc<Publishing>, request: Request<Body>) -> Response<Body> {
    let answer = answer(p, request).await;
    let m = &p.metrics;
    m.http_published
        .fetch_add(answer.published as u64, Ordering::Relaxed);
    if answer.status != 200 {
        m.http_refused.fetch_add(1, Ordering::Relaxed);
    }
    let mut response = json(answer.status, answer.body);
    if answer.status == 401 {
        response
            .headers_mut()
            .insert("www-authenticate", HeaderValue::from_static("Bearer"));
    }
    response
}

/// The key checked before the body is read, then the body published.
async fn answer(p: &Arc<Publishing>, request: Request<Body>) -> http_publish::Answer {
    let authorization = request.headers().get(AUTHORIZATION).map(|v| v.as_bytes());
    if let Err(r) = http_publish::authorized(authorization, &p.api_key) {
        return r.into();
    }
    let body = match read_body(request.into_body(), p.max_body_bytes).await {
        Ok(body) => body,
        Err(r) => return r.into(),
    };
    let publishing = p.clone();
    tokio::task::spawn_blocking(move || http_publish::answer(&publishing.publisher, &body))
        .await
        .unwrap_or_else(|e| {
            let error = format!("publishing failed: {e}");
            let (status, index) = (500, None);
            http_publish::Refused {
                status,
                error,
                index,
            }
            .into()
        })
}

/// The request's body, or 413 past `limit` bytes.
async fn read_body(mut body: Body, limit: usize) -> Result<Vec<u8>, http_publish::Refused> {
    let too_large = || http_publish::Refused {
        status: 413,
        error: format!("the body is over {limit} bytes (--max-message-bytes)"),
        index: None,
    };
    if body.size_hint().lower() > limit as u64 {
        return Err(too_large());
    }
    let mut out = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(|e| http_publish::Refused {
            status: 400,
            error: format!("reading the body: {e}"),
            index: None,
        })?;
        if out.len() + chunk.len() > limit {
            return Err(too_large());
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// A listener bound at `address` for `flag`, announced with the URL of `path`.
pub async fn listen(
    address: SocketAddr,
    flag: &str,
    path: &str,
    serves: Serves,
) -> Result<(TcpListener, Serves), String> {
    let listener = TcpListener::bind(address)
        .await
        .map_err(|e| format!("{flag} {address}: {e}"))?;
    let local = listener
        .local_addr()
        .map_err(|e| format!("{flag} {address}: {e}"))?;
    let url = format!("http://{local}{path}");
    pushnote_cli::announce(
        "pushnote-mq",
        format_args!("{path} at {url}"),
        &[("url", &url)],
    );
    Ok((listener, serves))
}

/// Serves every listener until `shutdown` completes.
pub async fn run(
    servers: Vec<(TcpListener, Serves)>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), String> {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let tasks: Vec<_> = servers
        .into_iter()
        .map(|(listener, serves)| {
            let mut stopped = stopped.clone();
            tokio::spawn(serve(listener, serves, async move {
                let _ = stopped.wait_for(|s| *s).await;
            }))
        })
        .collect();
    shutdown.await;
    let _ = stop.send(true);
    for task in tasks {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(format!("HTTP server failed: {e}")),
            Err(e) => return Err(format!("HTTP server failed: {e}")),
        }
    }
    Ok(())
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
