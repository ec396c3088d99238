//! pushnote-server: the SockJS server browsers connect to.

use std::process::ExitCode;

use pushnote_cli::{announce, fail};
use pushnote_server::{BusMode, Flags, Server};

const PROGRAM: &str = "pushnote-server";

fn main() -> ExitCode {
    let flags: Flags = pushnote_cli::parse_flags(PROGRAM);
    flags.log.init();
    if let Err(e) = flags.check_keys() {
        fail(PROGRAM, &e);
        return ExitCode::from(pushnote_cli::EXIT_WEAK_KEY);
    }
    match run(&flags) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            fail(PROGRAM, &e);
            ExitCode::from(pushnote_cli::EXIT_FAILURE)
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
        let bus = server.bus_endpoint().to_owned();
        let confirm = server.confirm_endpoint().map(str::to_owned);
        match mode {
            BusMode::Bind => announce(PROGRAM, format_args!("apps publish to {bus}"), &[("bus", &bus)]),
            BusMode::Connect => announce(PROGRAM, format_args!("bus at {bus}"), &[("bus", &bus)]),
            BusMode::Redis => announce(PROGRAM, format_args!("bus through Redis at {bus}"), &[("bus", &bus)]),
        }
        let url = format!("http://{local}{route}");
        announce(PROGRAM, format_args!("listening on {url}"), &[("url", &url)]);
        if let Some(confirm) = confirm.as_deref() {
            announce(
                PROGRAM,
                format_args!("confirmed publishes at {confirm}"),
                &[("confirm", confirm)],
            );
        }
        if demo {
            let page = format!("http://{local}/");
            announce(PROGRAM, format_args!("demo page at {page}"), &[("demo", &page)]);
        }
        server
            .run(listener, pushnote_cli::shutdown_signal())
            .await
            .map_err(|e| e.to_string())
    })
}
