//! The SockJS protocol suite's test server: `cargo run -p sockjs --example echo -- [PORT]`
//! serves on 127.0.0.1:PORT (default 8081; 0 picks a free one and prints it):
//! - `/echo`: sends every message back (response limit 4096 bytes);
//! - `/close`: closes every new session with 3000 "Go away!";
//! - `/disabled_websocket_echo`: echo without the WebSocket transports;
//! - `/cookie_needed_echo`: echo that sets the JSESSIONID cookie.
//!
//! The suite is sockjs-protocol.py from github.com/sockjs/sockjs-protocol; run it against
//! `http://127.0.0.1:PORT`.

#[path = "../tests/support/suite.rs"]
mod suite;

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
    let (addr, server) = suite::bind(suite::routes(), port);
    println!("echo: listening on http://{addr}");
    server.await;
}
