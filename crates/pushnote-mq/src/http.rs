//! The forwarder's HTTP side: `/metrics` for Prometheus and `/health` for supervisors, on the
//! address `--metrics` names; `POST /publish` for apps that cannot link ZeroMQ (and
//! `/health`), on the address `--http` names. Both listeners are served by one
//! [`Connections`]: idle and header timeouts, and at most `--max-http-connections` between
//! them, so that HTTP clients cannot take the descriptors the bus needs.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyDataStream, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use pushnote::http_publish;
use pushnote_cli::body::{self, BodyError};
use pushnote_cli::connections::Connections;
use tokio::net::TcpListener;

use crate::metrics::Metrics;

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
    /// How long a body may take to arrive (then 408).
    pub body_timeout: Duration,
    pub publisher: Arc<pushnote::Publisher>,
    pub metrics: Arc<Metrics>,
    /// Presence channels' members, for `GET /presence`.
    pub presence: Arc<std::sync::Mutex<pushnote_presence::View>>,
}

/// A response's body: whole, as each of these answers is.
type Body = Full<Bytes>;

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
    let mut response = Response::new(Body::default());
    *response.status_mut() = code;
    response
}

async fn respond(serves: &Serves, request: Request<Incoming>) -> Response<Body> {
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
        (Serves::Publish(p), &Method::GET, "/presence") => presence(p, &request),
        (Serves::Metrics(_), _, "/metrics" | "/health")
        | (Serves::Publish(_), _, "/publish" | "/health" | "/presence") => {
            status(StatusCode::METHOD_NOT_ALLOWED)
        }
        _ => status(StatusCode::NOT_FOUND),
    }
}

/// `GET /presence?channel=C` with the key (PROTOCOL §2d): the channel's members.
fn presence(p: &Publishing, request: &Request<Incoming>) -> Response<Body> {
    let authorization = request.headers().get(AUTHORIZATION).map(|v| v.as_bytes());
    let query = request.uri().query().unwrap_or_default();
    let (status, body) = pushnote_presence::query::respond(authorization, &p.api_key, query, |c| {
        p.presence
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .snapshot(c)
    });
    let mut response = json(status, body);
    if status == 401 {
        response
            .headers_mut()
            .insert("www-authenticate", HeaderValue::from_static("Bearer"));
    }
    response
}

async fn publish(p: &Arc<Publishing>, request: Request<Incoming>) -> Response<Body> {
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

/// The key and the declared length checked on the headers, before any of the body is read;
/// then the body read within its bounds, and published.
async fn answer(p: &Arc<Publishing>, request: Request<Incoming>) -> http_publish::Answer {
    let headers = request.headers();
    let authorization = headers.get(AUTHORIZATION).map(|v| v.as_bytes());
    let length = headers.get(CONTENT_LENGTH).map(|v| v.as_bytes());
    let checked = http_publish::authorized(authorization, &p.api_key).and_then(|()| {
        if body::declared_too_large(length, p.max_body_bytes) {
            Err(refused(BodyError::TooLarge(p.max_body_bytes)))
        } else {
            Ok(())
        }
    });
    if let Err(r) = checked {
        p.metrics
            .http_refused_unread
            .fetch_add(1, Ordering::Relaxed);
        return r.into();
    }
    let stream = BodyDataStream::new(request.into_body());
    let body = match body::read(stream, p.max_body_bytes, p.body_timeout).await {
        Ok(body) => body,
        Err(e) => {
            if matches!(e, BodyError::TooSlow(_)) {
                p.metrics.http_body_timeouts.fetch_add(1, Ordering::Relaxed);
            }
            return refused(e).into();
        }
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

/// Why a body was not read, as the request is answered.
fn refused(e: BodyError) -> http_publish::Refused {
    let flag = match e {
        BodyError::TooLarge(_) => " (--max-message-bytes)",
        BodyError::TooSlow(_) => " (--body-timeout)",
        BodyError::Incomplete => "",
    };
    http_publish::Refused {
        status: e.status(),
        error: format!("{e}{flag}"),
        index: None,
    }
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

/// Serves every listener on `connections` until `shutdown` completes; then stops accepting,
/// and answers the requests in progress for up to a second.
pub async fn run(
    servers: Vec<(TcpListener, Serves)>,
    connections: Arc<Connections>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), String> {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    for (listener, serves) in servers {
        let service = service_fn(move |request| {
            let serves = serves.clone();
            async move { Ok::<_, Infallible>(respond(&serves, request).await) }
        });
        tokio::spawn(
            connections
                .clone()
                .serve(listener, service, stopped.clone()),
        );
    }
    shutdown.await;
    let _ = stop.send(true);
    let drained = async {
        while !connections.is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), drained).await;
    Ok(())
}
