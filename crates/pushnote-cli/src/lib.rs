//! What the pushnote binaries share: the logging flags and their set-up, the shutdown signal,
//! lines on standard output, exit codes, and the HTTP layer both processes serve on:
//! `connections.rs` (idle and header timeouts, room made when descriptors run out) and
//! `body.rs` (a request's body read within bounds of size and time); and `metrics.rs`, the
//! Prometheus text both serve at `/metrics`.
//!
//! Logs go to standard error: coloured text on a terminal, plain text anywhere else (a file, a
//! pipe, a service manager's journal), or one JSON object per line with `--log-format json`,
//! for log collectors. With `--log-format json` every line a binary writes is such an object:
//! its start-up lines on standard output ([`announce`], with what scripts read from them in a
//! field of their own), its logs, and the error it stops with ([`fail`]), flag errors included
//! ([`parse_flags`]).

#![forbid(unsafe_code)]

use std::io::IsTerminal;
use std::sync::OnceLock;

/// The exit code of a binary that refused its flags or could not start.
pub const EXIT_FAILURE: u8 = 1;
/// The exit code of a binary that refused a weak secret or API key: sysexits' `EX_CONFIG`, so
/// that a service manager can be told not to restart it (`RestartPreventExitStatus=78`).
pub const EXIT_WEAK_KEY: u8 = 78;

/// The format chosen by [`init_logging`]; text until then.
static FORMAT: OnceLock<LogFormat> = OnceLock::new();

fn format() -> LogFormat {
    FORMAT.get().copied().unwrap_or_default()
}

pub mod body;
pub mod connections;
pub mod metrics;

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
    /// json (one object per line, for log collectors; the start-up lines on standard output
    /// are objects too, with what they say in fields: url, bus, sub, pub).
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
    let _ = FORMAT.set(format);
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

/// One line in the JSON log format: `{"timestamp":…,"level":…,"fields":{"message":…,…},
/// "target":…}`, as the log lines are.
fn json_line(level: &str, target: &str, message: &str, fields: &[(&str, &str)]) -> String {
    use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
    let mut timestamp = String::new();
    let _ = SystemTime.format_time(&mut tracing_subscriber::fmt::format::Writer::new(
        &mut timestamp,
    ));
    let mut object = serde_json::Map::new();
    object.insert("message".into(), message.into());
    for (key, value) in fields {
        object.insert((*key).into(), (*value).into());
    }
    serde_json::json!({
        "timestamp": timestamp,
        "level": level,
        "fields": object,
        "target": target,
    })
    .to_string()
}

/// Prints a start-up line of `program` on standard output: `program: message` as text; in
/// the JSON format an object whose `fields` hold the message and `fields` (the address a
/// script reads, say).
pub fn announce(program: &str, message: std::fmt::Arguments<'_>, fields: &[(&str, &str)]) {
    match format() {
        LogFormat::Text => say(format_args!("{program}: {message}")),
        LogFormat::Json => {
            let target = program.replace('-', "_");
            let line = json_line("INFO", &target, &message.to_string(), fields);
            say(format_args!("{line}"));
        }
    }
}

/// Writes the error `program` stops with on standard error, in the chosen format.
pub fn fail(program: &str, error: &dyn std::fmt::Display) {
    use std::io::Write;
    let line = match format() {
        LogFormat::Text => format!("{program}: {error}"),
        LogFormat::Json => json_line("ERROR", &program.replace('-', "_"), &error.to_string(), &[]),
    };
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{line}");
}

/// Whether the command line or the environment asks for the JSON format, read without the
/// flag parser (for the parser's own errors).
fn json_asked() -> bool {
    let mut args = std::env::args_os().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--log-format" {
            return args.next().is_some_and(|v| v == "json");
        }
        if arg == "--log-format=json" {
            return true;
        }
        if arg == "--" {
            break;
        }
    }
    std::env::var_os("PUSHNOTE_LOG_FORMAT").is_some_and(|v| v == "json")
}

/// Parses the command line into `F`; on an error, says so in the format asked for and exits
/// with clap's code (help and version are printed as clap prints them).
pub fn parse_flags<F: clap::Parser>(program: &str) -> F {
    use clap::error::ErrorKind;
    match F::try_parse() {
        Ok(flags) => flags,
        Err(e) => {
            let shown = matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            );
            if shown || !json_asked() {
                e.exit();
            }
            let _ = FORMAT.set(LogFormat::Json);
            let text = e.to_string();
            let text = text.trim();
            fail(program, &text.strip_prefix("error: ").unwrap_or(text));
            std::process::exit(e.exit_code());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libraries_that_log_contents_stay_at_info_unless_named() {
        assert_eq!(directives("debug"), "hyper=info,warp=info,debug");
        assert_eq!(directives("warp=trace"), "hyper=info,warp=trace");
    }

    #[test]
    fn json_lines_carry_the_message_and_fields() {
        let line = json_line("INFO", "pushnote_server", "listening on x", &[("url", "x")]);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["fields"]["message"], "listening on x");
        assert_eq!(v["fields"]["url"], "x");
        assert_eq!(v["level"], "INFO");
        assert!(
            v["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')),
            "{line}"
        );
    }
}
