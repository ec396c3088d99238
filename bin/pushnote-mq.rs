//! pushnote-mq: the ZeroMQ forwarder between publishing apps and pushnote-server instances.

use std::process::ExitCode;

use clap::Parser;
use pushnote_server::{cli, Forwarder, ForwarderConfig};

/// Forwards notifications from apps to pushnote-server instances.
///
/// Apps publish into the SUB side; every server subscribes at the PUB side and receives the
/// broadcasts and the messages of the users connected to it. Both sides bind. Each topic's
/// messages are numbered on the way, so a server counts those ZeroMQ dropped before reaching
/// it (its pushnote_bus_messages_lost_total).
#[derive(Parser, Debug)]
#[command(name = "pushnote-mq", version)]
struct Args {
    /// Where apps publish (bound). A port of `*` picks a free one.
    #[arg(short = 's', long = "sub", env = "PUSHNOTE_MQ_SUB", default_value = pushnote::DEFAULT_PUBLISH_ENDPOINT)]
    sub: String,

    /// Where servers subscribe (bound). A port of `*` picks a free one.
    #[arg(short = 'p', long = "pub", env = "PUSHNOTE_MQ_PUB", default_value = pushnote::DEFAULT_SUBSCRIBE_ENDPOINT)]
    publish: String,

    /// Messages held per connected app or server before ZeroMQ drops new ones (a burst
    /// larger than this toward one slow server is lost for that server, which counts it).
    #[arg(long, env = "PUSHNOTE_MQ_HWM", default_value_t = 100_000)]
    hwm: i32,

    /// Log filter: error, warn, info, debug or trace, optionally per module.
    #[arg(long, env = "PUSHNOTE_LOG", default_value = "info")]
    log: String,
}

fn main() -> ExitCode {
    let args = Args::parse();
    cli::init_logging(&args.log);
    let config = ForwarderConfig {
        sub_endpoint: args.sub,
        pub_endpoint: args.publish,
        high_water_mark: args.hwm,
    };
    let forwarder = match Forwarder::start(&config) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("pushnote-mq: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    cli::say(format_args!(
        "pushnote-mq: apps publish to {}, servers subscribe at {}",
        forwarder.sub_endpoint(),
        forwarder.pub_endpoint()
    ));
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("pushnote-mq: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(cli::shutdown_signal());
    let forwarded = forwarder.stop();
    tracing::info!(forwarded, "stopped");
    ExitCode::SUCCESS
}
