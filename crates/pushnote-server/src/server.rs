//! The server: bus, hub and SockJS routes wired together, served on a bound listener until a
//! shutdown signal.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use std::convert::Infallible;

use futures_util::Stream;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use warp::http::{header, HeaderValue, Response};
use warp::hyper::server::{accept, Server as HyperServer};
use warp::hyper::service::make_service_fn;
use warp::hyper::Body;
use warp::Filter;

use crate::bus::{Bus, BusControl, BusError, BusMode};
use crate::client::{ClientHandler, Limits, TokenPolicy};
use crate::demo;
use crate::hub::Hub;
use crate::metrics::Metrics;

/// Everything a server is configured with.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// The path SockJS is served under, for example `/sockjs`.
    pub route: String,
    /// The bus endpoint: the forwarder's PUB side, or in single mode where to bind.
    pub bus_endpoint: String,
    /// Connect to a forwarder, or bind the bus (`--single`).
    pub bus_mode: BusMode,
    /// Messages the bus socket holds before ZeroMQ drops new ones.
    pub bus_high_water_mark: i32,
    /// The largest bus message accepted, in bytes; larger ones are dropped and counted.
    pub max_bus_message_bytes: usize,
    /// How tokens are checked; `None` serves broadcasts only.
    pub tokens: Option<TokenPolicy>,
    /// Sessions per server and per user, subscribe requests per session.
    pub limits: Limits,
    /// SockJS settings: heartbeats, limits, queues.
    pub sockjs: sockjs::Options,
    /// Serve the demo page at `/`, loading the SockJS client from this URL.
    pub demo_sockjs_url: Option<String>,
    /// Serve Prometheus metrics at `/metrics`.
    pub metrics: bool,
    /// How long shutdown waits for sessions to take their close frames.
    pub shutdown_grace: Duration,
    /// How long a client may take to send a request's headers before its connection is
    /// closed (slow-loris clients hold connections open by trickling headers).
    pub header_timeout: Duration,
}

impl ServerConfig {
    /// A configuration with the defaults of `pushnote-server`'s flags.
    pub fn new(bus_endpoint: &str, bus_mode: BusMode) -> ServerConfig {
        ServerConfig {
            route: "/sockjs".into(),
            bus_endpoint: bus_endpoint.into(),
            bus_mode,
            bus_high_water_mark: 100_000,
            max_bus_message_bytes: 1024 * 1024,
            tokens: None,
            limits: Limits::default(),
            sockjs: sockjs::Options::default(),
            demo_sockjs_url: None,
            metrics: false,
            shutdown_grace: Duration::from_secs(5),
            header_timeout: Duration::from_secs(10),
        }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The bus could not be opened.
    #[error(transparent)]
    Bus(#[from] BusError),
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
        let (bus, control) = Bus::open(
            &config.bus_endpoint,
            config.bus_mode,
            config.bus_high_water_mark,
            config.max_bus_message_bytes,
        )?;
        Ok(Server {
            config,
            bus,
            control,
            metrics: Arc::new(Metrics::default()),
        })
    }

    /// The bus endpoint as bound or connected (a `*` port resolved).
    pub fn bus_endpoint(&self) -> &str {
        self.bus.endpoint()
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
        let hub = Arc::new(Hub::new(control.clone(), metrics.clone()));
        let bus_thread = bus.spawn(control, hub.clone(), metrics.clone())?;
        let handler = Arc::new(ClientHandler::new(
            hub.clone(),
            config.tokens.clone(),
            config.limits,
            metrics.clone(),
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
        let demo_route = demo::route(config.demo_sockjs_url.clone(), config.route.clone());
        let routes = sockjs.or(metrics_route).unify().or(demo_route).unify();

        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let service = sockjs::with_upgrades(warp::service(routes));
        let make_service = make_service_fn(move |_| {
            let service = service.clone();
            async move { Ok::<_, Infallible>(service) }
        });
        let serving = HyperServer::builder(accept::from_stream(connections(listener)))
            .http1_header_read_timeout(config.header_timeout)
            .serve(make_service)
            .with_graceful_shutdown(async move {
                let _ = stop_rx.await;
            });
        let serving = tokio::spawn(async move {
            if let Err(e) = serving.await {
                tracing::error!(error = %e, "http server failed");
            }
        });

        shutdown.await;
        tracing::info!(sessions = hub.session_count(), "shutting down");
        let _ = stop_tx.send(());
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
        tokio::task::spawn_blocking(move || bus_thread.stop())
            .await
            .ok();
        Ok(())
    }
}

/// A listener on `address` with room for `backlog` connections the kernel has completed but
/// the server not yet accepted (capped by the kernel at `net.core.somaxconn`). The standard
/// library binds with 128, which a burst of connects overflows: each connect past it is dropped
/// and retried by its client a second later.
pub fn listen(address: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = match address {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(backlog.max(1))
}

/// The connections `listener` accepts. A failed accept (out of descriptors, say) is logged
/// and retried after a pause instead of ending the server, and every connection gets
/// `TCP_NODELAY`, so small frames leave at once.
fn connections(listener: TcpListener) -> impl Stream<Item = Result<TcpStream, Infallible>> {
    futures_util::stream::unfold(listener, |listener| async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    return Some((Ok(stream), listener));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    })
}

fn metrics_response(body: String) -> Response<Body> {
    let mut r = Response::new(Body::from(body));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_burst_of_connects_beyond_128_completes_before_any_is_accepted() {
        // Within the kernel's own cap, which is 4096 on current kernels.
        let somaxconn = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
            .unwrap_or(4096);
        let burst = 250.min(somaxconn.saturating_sub(8));
        let listener = listen("127.0.0.1:0".parse().unwrap(), 300).unwrap();
        let address = listener.local_addr().unwrap();
        // Nothing accepts: every connect completes only if the kernel has room to hold it.
        let mut held = Vec::with_capacity(burst);
        let all = async {
            for _ in 0..burst {
                held.push(TcpStream::connect(address).await.unwrap());
            }
        };
        tokio::time::timeout(Duration::from_secs(5), all)
            .await
            .expect("connects past the backlog wait for a SYN retransmission");
        assert_eq!(held.len(), burst);
        drop(listener);
    }
}
