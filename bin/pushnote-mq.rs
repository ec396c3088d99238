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
        let mut servers = Vec::new();
        if let Some(address) = flags.metrics {
            let serves = http::Serves::Metrics(forwarder.metrics());
            servers.push(http::listen(address, "--metrics", "/metrics", serves).await?);
        }
        if let (Some(address), Some(api_key)) = (flags.http, &flags.api_key) {
            let endpoint = pushnote::http_publish::loopback(forwarder.sub_endpoint());
            let publisher = pushnote::Publisher::builder(&endpoint)
                .max_message_bytes(config.max_message_bytes)
                .connect()
                .map_err(|e| format!("--http: {e}"))?;
            let serves = http::Serves::Publish(std::sync::Arc::new(http::Publishing {
                api_key: api_key.clone(),
                max_body_bytes: config.max_message_bytes,
                body_timeout: config.http.body_timeout,
                publisher: std::sync::Arc::new(publisher),
                metrics: forwarder.metrics(),
            }));
            servers.push(http::listen(address, "--http", "/publish", serves).await?);
        }
        let connections = pushnote_cli::connections::Connections::new(
            config.http.timeouts,
            Some(config.http.max_connections),
            forwarder.metrics().http_connections.clone(),
        );
        http::run(servers, connections, pushnote_cli::shutdown_signal()).await
    })?;
    let forwarded = forwarder.stop();
    tracing::info!(forwarded, "stopped");
    Ok(())
}
