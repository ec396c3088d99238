//! pushnote-mq: the ZeroMQ forwarder between publishing apps and pushnote-server instances.

use std::process::ExitCode;

use clap::Parser;
use pushnote_cli::say;
use pushnote_mq::{http, Flags, Forwarder};

fn main() -> ExitCode {
    let flags = Flags::parse();
    flags.log.init();
    match run(&flags) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pushnote-mq: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(flags: &Flags) -> Result<(), String> {
    let config = flags.config()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start: {e}"))?;
    let forwarder = Forwarder::start(&config).map_err(|e| format!("cannot start: {e}"))?;
    say(format_args!(
        "pushnote-mq: apps publish to {}, servers subscribe at {}",
        forwarder.sub_endpoint(),
        forwarder.pub_endpoint()
    ));
    runtime.block_on(async {
        match flags.metrics {
            None => pushnote_cli::shutdown_signal().await,
            Some(address) => {
                let listener = tokio::net::TcpListener::bind(address)
                    .await
                    .map_err(|e| format!("--metrics {address}: {e}"))?;
                let local = listener
                    .local_addr()
                    .map_err(|e| format!("--metrics {address}: {e}"))?;
                say(format_args!(
                    "pushnote-mq: metrics at http://{local}/metrics"
                ));
                http::serve(
                    listener,
                    forwarder.metrics(),
                    pushnote_cli::shutdown_signal(),
                )
                .await
                .map_err(|e| format!("metrics server failed: {e}"))?;
            }
        }
        Ok::<_, String>(())
    })?;
    let forwarded = forwarder.stop();
    tracing::info!(forwarded, "stopped");
    Ok(())
}
