//! The services the SockJS protocol suite (sockjs-protocol.py) expects, as one warp filter:
//! - `/echo`: sends every message back (response limit 4096 bytes);
//! - `/close`: closes every new session with 3000 "Go away!";
//! - `/disabled_websocket_echo`: echo without the WebSocket transports;
//! - `/cookie_needed_echo`: echo that sets the JSESSIONID cookie.
//!
//! Shared by `examples/echo.rs` (which the suite runs against) and the crate's own protocol
//! tests, so both serve exactly the same thing.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use hyper_util::rt::TokioIo;
use sockjs::{CloseCode, Handler, Message, Options, Session};
use warp::filters::BoxedFilter;
use warp::reply::Response;
use warp::Filter;

/// Sends every message back to its session.
pub struct Echo;

impl Handler for Echo {
    fn on_message(&self, session: &Session, message: String) {
        let _ = session.send(Message::text(&message));
    }
}

/// Closes every session as soon as it opens.
pub struct Close;

impl Handler for Close {
    fn on_open(&self, session: &Session) {
        session.close(CloseCode::NORMAL);
    }

    fn on_message(&self, _: &Session, _: String) {}
}

/// The four services, each under its own prefix.
pub fn routes() -> BoxedFilter<(Response,)> {
    let base = Options {
        sockjs_url: "http://127.0.0.1/sockjs.min.js".into(),
        ..Options::default()
    };
    let echo = sockjs::routes(
        "/echo",
        Options {
            response_limit: 4096,
            ..base.clone()
        },
        Arc::new(Echo),
    );
    let close = sockjs::routes("/close", base.clone(), Arc::new(Close));
    let disabled = sockjs::routes(
        "/disabled_websocket_echo",
        Options {
            websocket: false,
            ..base.clone()
        },
        Arc::new(Echo),
    );
    let cookie = sockjs::routes(
        "/cookie_needed_echo",
        Options {
            cookie_needed: true,
            ..base
        },
        Arc::new(Echo),
    );
    echo.or(close)
        .unify()
        .or(disabled)
        .unify()
        .or(cookie)
        .unify()
        .boxed()
}

/// Serves `routes` on 127.0.0.1:`port` (0 picks a free port), WebSocket upgrades included.
pub fn bind(routes: BoxedFilter<(Response,)>, port: u16) -> (SocketAddr, impl Future<Output = ()>) {
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).expect("bind");
    listener.set_nonblocking(true).expect("non-blocking");
    let addr = listener.local_addr().expect("bound address");
    let service = sockjs::with_upgrades(warp::service(routes));
    (addr, async move {
        let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    eprintln!("accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service.clone())
                .with_upgrades();
            // A client that drops its connection mid-request is no failure of the server.
            tokio::spawn(async move {
                let _ = connection.await;
            });
        }
    })
}
