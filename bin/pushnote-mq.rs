//! pushnote-mq: the ZeroMQ forwarder between publishing apps and pushnote-server instances.

use std::process::ExitCode;

use pushnote_cli::{announce, fail};
use pushnote_mq::{http, Flags, Forwarder};

const PROGRAM: &str = "pushnote-mq";

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
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start: {e}"))?;
    let forwarder = Forwarder::start(&config).map_err(|e| format!("cannot start: {e}"))?;
    let (sub, publish) = (forwarder.sub_endpoint(), forwarder.pub_endpoint());
    announce(
        PROGRAM,
        format_args!("apps publish to {sub}, servers subscribe at {publish}"),
        &[("sub", sub), ("pub", publish)],
    );
    if let Some(broker) = &config.broker {
        let broker = broker.to_string();
        announce(
            PROGRAM,
            format_args!("publishing into Redis at {broker}"),
            &[("broker", &broker)],
        );
    }
    if let Some(confirm) = forwarder.confirm_endpoint() {
        announce(
            PROGRAM,
            format_args!("confirmed publishes at {confirm}"),
            &[("confirm", confirm)],
        );
    }
    runtime.block_on(async {
        let mut servers = Vec::new();
        if let Some(address) = flags.metrics {
            let serves = http::Serves::Metrics(forwarder.metrics());
            servers.push(http::listen(address, "--metrics", "/metrics", serves).await?);
        }
        if let (Some(address), Some(api_key)) = (flags.http, &flags.api_key) {
            let endpoint = pushnote::http_publish::loopback(forwarder.sub_endpoint());
            let mut builder =
                pushnote::Publisher::builder(&endpoint).max_message_bytes(config.max_message_bytes);
            // With --confirm, POST /publish answers with the positions.
            if let Some(confirm) = forwarder.confirm_endpoint() {
                builder = builder.confirm(&pushnote::http_publish::loopback(confirm));
            }
            let publisher = builder.connect().map_err(|e| format!("--http: {e}"))?;
            let serves = http::Serves::Publish(std::sync::Arc::new(http::Publishing {
                api_key: api_key.clone(),
                max_body_bytes: config.max_message_bytes,
                body_timeout: config.http.body_timeout,
                publisher: std::sync::Arc::new(publisher),
                metrics: forwarder.metrics(),
                presence: forwarder.presence(),
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
