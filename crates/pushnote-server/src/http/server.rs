//! The server: bus, hub and SockJS routes wired together, served on a bound listener until a
//! shutdown signal.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::service::Service;
use tokio::net::TcpListener;
use warp::http::{header, HeaderMap, HeaderValue, Request};
use warp::reply::Response;
use warp::{Filter, Reply};

use crate::bus::Bus;
use crate::client::{ClientHandler, Positions};
use crate::config::BusMode;
use crate::config::{Listen, ServerConfig};
use crate::control::BusControl;
use crate::demo;
use crate::fanout::Fanout;
use crate::hub::Hub;
use crate::library;
use crate::metrics::Metrics;
use crate::presence::Presence;
use crate::recovery::Recovery;
use crate::remote::{Recovering, Remote};
use crate::zeromq::BusError;
use pushnote_cli::body::{self, BodyError};
use pushnote_cli::connections::{Connections, Origin, Timeouts};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The bus could not be opened.
    #[error(transparent)]
    Bus(#[from] BusError),
    /// The publisher of `POST /publish` could not connect to the server's own bus.
    #[error("POST /publish: {0}")]
    Publish(String),
}

/// A server whose bus is open, ready to serve.
pub struct Server {
    config: ServerConfig,
    bus: Bus,
    control: Arc<BusControl>,
    metrics: Arc<Metrics>,
}

impl Server {
    /// Opens the bus (binding it in single mode), so that apps can connect before the first
    /// browser does.
    pub fn new(config: ServerConfig) -> Result<Server, ServerError> {
        let metrics = Arc::new(Metrics::default());
        let (bus, control) = Bus::open(&config, &metrics)?;
        Ok(Server {
            config,
            bus,
            control,
            metrics,
        })
    }

    /// The bus endpoint as bound or connected (a `*` port resolved).
    pub fn bus_endpoint(&self) -> &str {
        self.bus.endpoint()
    }

    /// Where confirmed publishes are taken, as bound (`--single --confirm`).
    pub fn confirm_endpoint(&self) -> Option<&str> {
        self.bus.confirm_endpoint()
    }

    /// Serves HTTP on `listener` until `shutdown` completes; then stops accepting, closes every
    /// session with the "going away" code, and returns once they are closed or the grace
    /// period has passed.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let Server {
            config,
            bus,
            control,
            metrics,
        } = self;
        let bus_endpoint = bus.endpoint().to_owned();
        let hub = Arc::new(
            Hub::new(control.clone(), metrics.clone())
                .with_max_channels(config.limits.max_server_channels),
        );
        let sweepers = std::thread::available_parallelism().map_or(1, |n| n.get());
        let fanout = Arc::new(Fanout::start(sweepers, metrics.clone()).map_err(BusError::from)?);
        // A single server keeps its own history; with a forwarder, the forwarder keeps it.
        let recovery = config
            .history
            .map(|limits| Arc::new(Recovery::new(limits, fanout.clone(), metrics.clone())));
        let remote = (config.bus_mode != BusMode::Bind)
            .then(|| Arc::new(Remote::new(control.clone(), hub.clone())));
        let recovering = remote.as_ref().map(|remote| {
            Recovering::new(
                remote.clone(),
                fanout.clone(),
                metrics.clone(),
                config.recovery_memory,
                config.sockjs.queue.max_bytes,
            )
        });
        let positions = match (&recovery, &remote) {
            (Some(recovery), _) => Some(Positions::Local(recovery.clone())),
            (None, Some(remote)) => Some(Positions::Remote(remote.clone())),
            (None, None) => None,
        };
        // With a forwarder or Redis, presence is shared with the other servers.
        let presence = Arc::new(Presence::new(
            config.presence,
            config.bus_mode != BusMode::Bind,
            control.clone(),
            metrics.clone(),
        ));
        let presence_thread = presence.spawn().map_err(BusError::from)?;
        let bus_thread = bus.spawn(
            control,
            hub.clone(),
            metrics.clone(),
            fanout,
            recovery,
            recovering,
            presence.clone(),
        )?;
        let handler = Arc::new(ClientHandler::new(
            hub.clone(),
            config.tokens.clone(),
            config.limits,
            metrics.clone(),
            positions,
            presence.clone(),
        ));

        let sockjs = sockjs::routes(&config.route, config.sockjs.clone(), handler);
        let metrics_route = {
            let enabled = config.metrics;
            let metrics = metrics.clone();
            warp::path("metrics")
                .and(warp::path::end())
                .and(warp::get())
                .and_then(move || {
                    let body = enabled.then(|| metrics.render());
                    async move {
                        body.map(metrics_response)
                            .ok_or_else(warp::reject::not_found)
                    }
                })
        };
        let stopping = Arc::new(AtomicBool::new(false));
        let health_route = {
            let (metrics, stopping) = (metrics.clone(), stopping.clone());
            let max_sessions = config.limits.max_sessions;
            warp::path("health")
                .and(warp::path::end())
                .and(warp::get())
                .map(move || health(&metrics, &stopping, max_sessions))
        };
        let publishing = match &config.api_key {
            None => None,
            Some(key) => {
                let builder = match &config.broker {
                    // Into Redis, as every app does: any server of it may be asked.
                    Some(broker) => {
                        pushnote::Publisher::builder(&broker.url).broker_prefix(&broker.prefix)
                    }
                    None => pushnote::Publisher::builder(&pushnote::http_publish::loopback(
                        &bus_endpoint,
                    )),
                };
                let publisher = builder
                    .max_message_bytes(config.max_bus_message_bytes)
                    .connect()
                    .map_err(|e| ServerError::Publish(e.to_string()))?;
                Some(Arc::new((key.clone(), publisher)))
            }
        };
        // The route and the key are checked on the headers, before any of the body is read.
        let publish_route = {
            let bounds = BodyBounds {
                limit: config.max_bus_message_bytes,
                timeout: config.body_timeout,
            };
            let metrics = metrics.clone();
            warp::path("publish")
                .and(warp::path::end())
                .and(warp::post())
                .and(warp::header::headers_cloned())
                .and(warp::body::stream())
                .and_then(move |headers: HeaderMap, body| {
                    let (publishing, metrics) = (publishing.clone(), metrics.clone());
                    async move {
                        let Some(publishing) = publishing else {
                            metrics
                                .publish_refused_unread
                                .fetch_add(1, Ordering::Relaxed);
                            return Err(warp::reject::not_found());
                        };
                        Ok::<_, warp::Rejection>(
                            http_publish(publishing, &metrics, bounds, headers, body).await,
                        )
                    }
                })
        };
        let presence_route = {
            let (key, presence) = (config.api_key.clone(), presence.clone());
            warp::path("presence")
                .and(warp::path::end())
                .and(warp::get())
                .and(warp::header::headers_cloned())
                .and(warp::query::raw().or(warp::any().map(String::new)).unify())
                .and_then(move |headers: HeaderMap, query: String| {
                    let answer = key
                        .as_deref()
                        .map(|key| presence_members(&presence, key, &headers, &query));
                    async move { answer.ok_or_else(warp::reject::not_found) }
                })
        };
        let demo_route = demo::route(config.demo_sockjs_url.clone(), config.route.clone());
        // Before the SockJS routes, which answer every other path under the route.
        let routes = library::route(&config.route)
            .or(sockjs)
            .unify()
            .or(metrics_route)
            .unify()
            .or(health_route)
            .unify()
            .or(publish_route)
            .unify()
            .or(presence_route)
            .unify()
            .or(demo_route)
            .unify();

        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let service = WithPeer(sockjs::with_upgrades(warp::service(routes)));
        let timeouts = Timeouts {
            header: config.header_timeout,
            idle: config.idle_timeout,
        };
        let connections = Connections::new(timeouts, None, metrics.connections.clone());
        let serving = tokio::spawn(connections.serve(listener, service, stop_rx));

        shutdown.await;
        stopping.store(true, Ordering::Relaxed);
        tracing::info!(sessions = hub.session_count(), "shutting down");
        let _ = stop_tx.send(true);
        hub.close_all(sockjs::CloseCode::GOING_AWAY);
        let drained = tokio::time::timeout(config.shutdown_grace, async {
            while hub.session_count() > 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                sessions = hub.session_count(),
                "shutdown grace period over; closing the remaining sessions abruptly"
            );
        }
        let _ = tokio::time::timeout(Duration::from_millis(200), serving).await;
        presence.stop();
        tokio::task::spawn_blocking(move || {
            bus_thread.stop();
            let _ = presence_thread.join();
        })
        .await
        .ok();
        Ok(())
    }
}

/// A listener where `listen` says, with room for `backlog` connections the kernel has
/// completed but the server not yet accepted (capped by the kernel at `net.core.somaxconn`).
/// The standard library binds with 128, which a burst of connects overflows: each connect past
/// it is dropped and retried by its client a second later.
///
/// `[::]` listens on IPv6 and IPv4 alike (one dual-stack socket, whatever the system's
/// `bindv6only`); every interface ([`Listen::Everywhere`]) falls back to `0.0.0.0` on a machine
/// without IPv6.
pub fn listen(listen: Listen, backlog: u32) -> std::io::Result<TcpListener> {
    match bind(listen.address(), backlog) {
        Err(e) if no_ipv6(&e) && listen.fallback().is_some() => {
            let fallback = listen.fallback().unwrap_or(listen.address());
            tracing::info!(error = %e, "no IPv6 here; listening on IPv4 only");
            bind(fallback, backlog)
        }
        bound => bound,
    }
}

fn bind(address: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(
        Domain::for_address(address),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    if address.is_ipv6() && address.ip().is_unspecified() {
        socket.set_only_v6(false)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&address.into())?;
    socket.listen(backlog.clamp(1, i32::MAX as u32) as i32)?;
    TcpListener::from_std(socket.into())
}

/// Whether `e` says the machine has no IPv6 (the address family, or `::`, is not available).
fn no_ipv6(e: &std::io::Error) -> bool {
    const EAFNOSUPPORT: i32 = 97;
    const EADDRNOTAVAIL: i32 = 99;
    matches!(e.raw_os_error(), Some(EAFNOSUPPORT | EADDRNOTAVAIL))
}

/// A service that tells each request its connection and peer in SockJS's terms
/// (`sockjs::Peer`, from the connection layer's `Origin`): SockJS bounds the sessions one
/// connection and one address open.
#[derive(Clone)]
struct WithPeer<S>(S);

impl<S, B> Service<Request<B>> for WithPeer<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn call(&self, mut request: Request<B>) -> S::Future {
        if let Some(origin) = request.extensions().get::<Origin>().copied() {
            let peer = sockjs::Peer::new(origin.connection, origin.address.ip());
            request.extensions_mut().insert(peer);
        }
        self.0.call(request)
    }
}

/// How much of a `POST /publish` body is read, and for how long.
#[derive(Clone, Copy)]
struct BodyBounds {
    limit: usize,
    timeout: Duration,
}

/// `POST /publish` on a single server: the key and the declared length checked on the
/// headers, the body read within its bounds and checked whole, then published into the
/// server's own bus.
async fn http_publish<S, B>(
    publishing: Arc<(String, pushnote::Publisher)>,
    metrics: &Metrics,
    bounds: BodyBounds,
    headers: HeaderMap,
    body: S,
) -> Response
where
    S: futures_util::Stream<Item = Result<B, warp::Error>>,
    B: warp::Buf,
{
    use pushnote::http_publish::{answer, authorized, Answer, Refused};
    let refused = |status: u16, error: String| {
        Answer::from(Refused {
            status,
            error,
            index: None,
        })
    };
    let authorization = headers.get(header::AUTHORIZATION).map(|v| v.as_bytes());
    let length = headers.get(header::CONTENT_LENGTH).map(|v| v.as_bytes());
    let checked = match authorized(authorization, &publishing.0) {
        Err(r) => Err(Answer::from(r)),
        Ok(()) if body::declared_too_large(length, bounds.limit) => Err(refused(
            413,
            format!(
                "the body is over {} bytes (--max-bus-message-bytes)",
                bounds.limit
            ),
        )),
        Ok(()) => Ok(()),
    };
    let answer = match checked {
        Err(answer) => {
            metrics
                .publish_refused_unread
                .fetch_add(1, Ordering::Relaxed);
            answer
        }
        Ok(()) => match body::read(body, bounds.limit, bounds.timeout).await {
            Err(e) => {
                if matches!(e, BodyError::TooSlow(_)) {
                    metrics
                        .publish_body_timeouts
                        .fetch_add(1, Ordering::Relaxed);
                }
                let flag = match e {
                    BodyError::TooLarge(_) => " (--max-bus-message-bytes)",
                    BodyError::TooSlow(_) => " (--body-timeout)",
                    BodyError::Incomplete => "",
                };
                refused(e.status(), format!("{e}{flag}"))
            }
            Ok(body) => tokio::task::spawn_blocking(move || answer(&publishing.1, &body))
                .await
                .unwrap_or_else(|e| {
                    let (status, error, index) = (500, e.to_string(), None);
                    Refused {
                        status,
                        error,
                        index,
                    }
                    .into()
                }),
        },
    };
    metrics
        .http_published
        .fetch_add(answer.published as u64, Ordering::Relaxed);
    if answer.status != 200 {
        metrics.http_refused.fetch_add(1, Ordering::Relaxed);
    }
    let mut r = warp::http::Response::new(answer.body).into_response();
    *r.status_mut() = warp::http::StatusCode::from_u16(answer.status).unwrap_or_default();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if answer.status == 401 {
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    r
}

/// Whether a server holding `sessions` of `max_sessions` counts as full: within 1 % of the
/// bound (at it, for bounds under 100), so that a load balancer stops sending it pages a
/// little before they would be closed with 3003.
pub fn is_full(sessions: u64, max_sessions: usize) -> bool {
    let max = max_sessions as u64;
    sessions >= max - max / 100
}

/// `/health`: 200 while the server takes sessions, its bus is connected and it keeps up with
/// it (a load balancer may send it pages); 503 while the bus is down, the server is
/// overloaded (behind the bus, shedding), full (at or within 1 % of --max-sessions) or
/// stopping.
fn health(metrics: &Metrics, stopping: &AtomicBool, max_sessions: usize) -> Response {
    let connected = metrics.bus_connected.load(Ordering::Relaxed) == 1;
    let overloaded = metrics.overloaded.load(Ordering::Relaxed) == 1;
    let full = is_full(metrics.sessions.load(Ordering::Relaxed), max_sessions);
    let (status, code) = match (stopping.load(Ordering::Relaxed), connected, overloaded) {
        (true, _, _) => ("stopping", 503),
        (false, false, _) => ("unavailable", 503),
        (false, true, true) => ("overloaded", 503),
        (false, true, false) if full => ("full", 503),
        (false, true, false) => ("ready", 200),
    };
    let body = serde_json::json!({
        "status": status,
        "bus": if connected { "connected" } else { "disconnected" },
        "lag": metrics.bus_lag_micros.load(Ordering::Relaxed) as f64 / 1e6,
        "sessions": metrics.sessions.load(Ordering::Relaxed),
    });
    let mut r = warp::http::Response::new(body.to_string()).into_response();
    *r.status_mut() = warp::http::StatusCode::from_u16(code).unwrap_or_default();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// `GET /presence?channel=C` with the API key (PROTOCOL §2d): the channel's members.
fn presence_members(presence: &Presence, key: &str, headers: &HeaderMap, query: &str) -> Response {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    let (status, body) =
        pushnote_presence::query::respond(authorization, key, query, |c| presence.members(c));
    let mut r = warp::http::Response::new(body).into_response();
    *r.status_mut() = warp::http::StatusCode::from_u16(status).unwrap_or_default();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if status == 401 {
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    r
}

fn metrics_response(body: String) -> Response {
    let mut r = warp::http::Response::new(body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_within_one_percent_of_the_bound() {
        assert!(!is_full(98_999, 100_000));
        assert!(is_full(99_000, 100_000));
        assert!(!is_full(4, 5));
        assert!(is_full(5, 5));
        assert!(is_full(0, 0));
    }

    #[tokio::test]
    async fn a_burst_of_connects_beyond_128_completes_before_any_is_accepted() {
        // Within the kernel's own cap, which is 4096 on current kernels.
        let somaxconn = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
            .unwrap_or(4096);
        let burst = 250.min(somaxconn.saturating_sub(8));
        let listener = listen(Listen::At("127.0.0.1:0".parse().unwrap()), 300).unwrap();
        let address = listener.local_addr().unwrap();
        // Nothing accepts: every connect completes only if the kernel has room to hold it.
        let mut held = Vec::with_capacity(burst);
        let all = async {
            for _ in 0..burst {
                held.push(tokio::net::TcpStream::connect(address).await.unwrap());
            }
        };
        tokio::time::timeout(Duration::from_secs(5), all)
            .await
            .expect("connects past the backlog wait for a SYN retransmission");
        assert_eq!(held.len(), burst);
        drop(listener);
    }
}
