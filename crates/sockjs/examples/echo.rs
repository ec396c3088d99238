//! The SockJS protocol suite's test server: `cargo run -p sockjs --example echo -- [PORT]`
//! serves on 127.0.0.1:PORT (default 8081; 0 picks a free one and prints it):
//! - `/echo`: sends every message back (response limit 4096 bytes);
//! - `/close`: closes every new session with 3000 "Go away!";
//! - `/disabled_websocket_echo`: echo without the WebSocket transports;
//! - `/cookie_needed_echo`: echo that sets the JSESSIONID cookie.
//!
//! The suite is sockjs-protocol.py from github.com/sockjs/sockjs-protocol; run it against
//! `http://127.0.0.1:PORT`.

use std::sync::Arc;

use sockjs::{CloseCode, Handler, Message, Options, Session};
use warp::Filter;

struct Echo;

impl Handler for Echo {
    fn on_message(&self, session: &Session, message: String) {
        let _ = session.send(Message::text(&message));
    }
}

struct Close;

impl Handler for Close {
    fn on_open(&self, session: &Session) {
        session.close(CloseCode::NORMAL);
    }

    fn on_message(&self, _: &Session, _: String) {}
}

#[tokio::main]
async fn main() {
    let port: u16 = match std::env::args().nth(1).map(|p| p.parse()) {
        None => 8081,
        Some(Ok(port)) => port,
        Some(Err(e)) => {
            eprintln!("echo: bad port: {e}");
            std::process::exit(2);
        }
    };
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
    let routes = echo
        .or(close)
        .unify()
        .or(disabled)
        .unify()
        .or(cookie)
        .unify();
    let (addr, server) = warp::serve(routes).bind_ephemeral(([127, 0, 0, 1], port));
    println!("echo: listening on http://{addr}");
    server.await;
}
