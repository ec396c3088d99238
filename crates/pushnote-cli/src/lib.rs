//! What the pushnote binaries share: the logging flags and their set-up, the shutdown signal,
//! lines on standard output, and the HTTP layer both processes serve on: `connections.rs`
//! (idle and header timeouts, room made when descriptors run out) and `body.rs` (a request's
//! body read within bounds of size and time).
//!
//! Logs go to standard error: coloured text on a terminal, plain text anywhere else (a file, a
//! pipe, a service manager's journal), or one JSON object per line with `--log-format json`,
//! for log collectors.

#![forbid(unsafe_code)]

use std::io::IsTerminal;

pub mod body;
pub mod connections;

/// The default log filter.
pub const DEFAULT_LOG: &str = "info";

/// Libraries whose debug and trace logs would carry message contents.
const QUIET_LIBRARIES: [&str; 2] = ["hyper", "warp"];

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One line of text per event; coloured only when standard error is a terminal.
    #[default]
    Text,
    /// One JSON object per event, for log collectors.
    Json,
}

/// The logging flags every binary takes.
#[derive(clap::Args, Clone, Debug)]
pub struct LogFlags {
    /// Log filter: error, warn, info, debug or trace, optionally per module
    /// (pushnote_server=debug).
    #[arg(long, env = "PUSHNOTE_LOG", default_value = DEFAULT_LOG)]
    pub log: String,

    /// How log lines are written on standard error: text (coloured on a terminal only) or
    /// json (one object per line, for log collectors).
    #[arg(long, env = "PUSHNOTE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

impl LogFlags {
    /// Sets up logging as these flags say.
    pub fn init(&self) {
        init_logging(&self.log, self.log_format);
    }
}

/// The filter directives for `filter`: the libraries that log message contents stay at info
/// unless the filter names them.
fn directives(filter: &str) -> String {
    // The WebSocket and HTTP libraries log whole frames and headers at debug and trace, and
    // frames carry tokens.
    let mut directives = String::new();
    for library in QUIET_LIBRARIES {
        if !filter.contains(library) {
            directives.push_str(library);
            directives.push_str("=info,");
        }
    }
    directives.push_str(filter);
    directives
}

/// Logs to standard error, filtered by `filter` (`info`, `debug`, `pushnote_server=debug`, …)
/// and written as `format` says.
pub fn init_logging(filter: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_new(directives(filter))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().with_ansi(false).init(),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libraries_that_log_contents_stay_at_info_unless_named() {
        assert_eq!(directives("debug"), "hyper=info,warp=info,debug");
        assert_eq!(directives("warp=trace"), "hyper=info,warp=trace");
    }
}
