//! pushnote-server: the SockJS server browsers connect to.

use std::process::ExitCode;

use clap::Parser;
use pushnote_cli::say;
use pushnote_server::{BusMode, Flags, Server};

fn main() -> ExitCode {
    let flags = Flags::parse();
    flags.log.init();
    match run(&flags) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pushnote-server: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(flags: &Flags) -> Result<(), String> {
    let config = flags.config()?;
    let listen = flags.listen()?;
    let runtime = tokio::runtime::Runtime::new().map_err(|e| format!("cannot start: {e}"))?;
    runtime.block_on(async move {
        let address = listen.address();
        let listener = pushnote_server::server::listen(listen, flags.backlog)
            .map_err(|e| format!("cannot listen on {address}: {e}"))?;
        let local = listener
            .local_addr()
            .map_err(|e| format!("cannot listen on {address}: {e}"))?;
        if config.tokens.is_none() {
            tracing::warn!(
                "no token secret (--secret or PUSHNOTE_SECRET): serving broadcasts and public channels \
                 only, every subscribe with a token is refused"
            );
        }
        let route = config.route.clone();
        let mode = config.bus_mode;
        let demo = config.demo_sockjs_url.is_some();
        let server = Server::new(config).map_err(|e| format!("cannot open the bus: {e}"))?;
        match mode {
            BusMode::Bind => say(format_args!(
                "pushnote-server: apps publish to {}",
                server.bus_endpoint()
            )),
            BusMode::Connect => say(format_args!(
                "pushnote-server: bus at {}",
                server.bus_endpoint()
            )),
        }
        say(format_args!(
            "pushnote-server: listening on http://{local}{route}"
        ));
        if demo {
            say(format_args!(
                "pushnote-server: demo page at http://{local}/"
            ));
        }
        server
            .run(listener, pushnote_cli::shutdown_signal())
            .await
            .map_err(|e| e.to_string())
    })
}
