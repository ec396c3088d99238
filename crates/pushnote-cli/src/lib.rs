//! What the binaries share: logging set-up and the shutdown signal.

/// Libraries whose debug and trace logs would carry message contents.
const QUIET_LIBRARIES: [&str; 2] = ["hyper", "warp"];

/// Logs to standard error, filtered by `filter` (`info`, `debug`, `pushnote_server=debug`, …).
pub fn init_logging(filter: &str) {
    // The WebSocket and HTTP libraries log whole frames and headers at debug and trace, and
    // frames carry tokens: they stay at info unless the filter names them.
    let mut directives = String::new();
    for library in QUIET_LIBRARIES {
        if !filter.contains(library) {
            directives.push_str(library);
            directives.push_str("=info,");
        }
    }
    directives.push_str(filter);
    let filter = tracing_subscriber::EnvFilter::try_new(&directives)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}

/// Prints one line on standard output, ignoring a closed stdout (a reader that went away must
/// not bring the process down, as `println!` would).
pub fn say(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_fmt(line).and_then(|()| out.write_all(b"\n"));
    let _ = out.flush();
}
