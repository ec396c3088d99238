//! pushnote: publish notifications and mint tokens from the shell, through the client crate.
//!
//! Channel and event names, and the user id of a channel token, are checked as the flags are
//! parsed, with the crate's own rules and messages, before anything connects or is signed.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args as ClapArgs, Parser, Subcommand};
use pushnote::{wire, Publisher, Signer};
use pushnote_cli as cli;

/// Publishes notifications to pushnote-server and mints tokens for browsers.
#[derive(Parser, Debug)]
#[command(name = "pushnote", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Send DATA to every connected browser.
    NotifyAll {
        #[command(flatten)]
        data: Data,
        #[command(flatten)]
        bus: Bus,
    },
    /// Send DATA to every session of the given users, or of the pages that subscribed with
    /// the given tokens.
    Notify {
        /// A recipient user id; repeat for several.
        #[arg(short, long = "user", required_unless_present = "tokens")]
        users: Vec<String>,
        /// A token pages subscribed with: one the app made itself (an opaque token, which a
        /// server started with --opaque-tokens takes) or a signed one; repeat for several.
        /// "-" reads them from standard input, one a line: command lines are visible to other
        /// local users. Needs the servers' secret and salt (PUSHNOTE_SECRET, PUSHNOTE_SALT);
        /// only a keyed hash of each token is sent.
        #[arg(
            long = "opaque-token",
            value_name = "TOKEN",
            allow_hyphen_values = true
        )]
        tokens: Vec<String>,
        #[command(flatten)]
        keys: OptionalKeys,
        #[command(flatten)]
        data: Data,
        #[command(flatten)]
        bus: Bus,
    },
    /// Send DATA as EVENT to every browser subscribed to CHANNEL.
    ///
    /// Pages receive {"channel": CHANNEL, "event": EVENT, "data": DATA}.
    Publish {
        /// The channel: 1 to 164 bytes of ASCII letters, digits and _-=@,.;
        /// (names starting with "private-" need a channel token to subscribe).
        #[arg(short, long, value_parser = channel_name)]
        channel: String,
        /// The event's name: 1 to 200 bytes with no control characters.
        #[arg(short, long, value_parser = event_name)]
        event: String,
        #[command(flatten)]
        data: Data,
        #[command(flatten)]
        bus: Bus,
    },
    /// Print the token a page hands to its browser for USER.
    Token {
        /// The user id the token proves.
        user: String,
        #[command(flatten)]
        keys: Keys,
    },
    /// Print the token that lets a page subscribe to CHANNEL (a private one, for instance).
    ChannelToken {
        /// The channel the token grants.
        #[arg(value_parser = channel_name)]
        channel: String,
        /// Grant the channel only to sessions subscribed as this user id; without it, to any
        /// session holding the token.
        #[arg(short, long, value_parser = user_id)]
        user: Option<String>,
        #[command(flatten)]
        keys: Keys,
    },
    /// Print the token that lets a page join presence channel CHANNEL (presence-…) as USER,
    /// whom the channel's other members see with the info INFO.
    PresenceToken {
        /// The presence channel the token grants (its name starts with "presence-").
        #[arg(value_parser = presence_channel_name)]
        channel: String,
        /// The member's user id: the page joins as this user.
        #[arg(short, long, value_parser = user_id)]
        user: String,
        /// What the other members see of the member: JSON text (an object, a string, …),
        /// passed on as written, without its white space. Without it, null.
        #[arg(long, value_name = "JSON", value_parser = json_text)]
        info: Option<String>,
        #[command(flatten)]
        keys: Keys,
    },
    /// Print the members of presence channel CHANNEL, as the forwarder or a server knows them.
    ///
    /// One member a line, as JSON: {"user":"42","info":{"name":"Ann"}} (info as the member's
    /// token gave it); nothing for a channel nobody is in. Asks GET /presence at --url with
    /// the API key, and waits at most 5 s.
    Presence {
        /// The presence channel (its name starts with "presence-").
        #[arg(value_parser = presence_channel_name)]
        channel: String,
        /// The HTTP port to ask: the forwarder's --http, or a --single server's (or a Redis
        /// deployment's server's) own, started with --api-key: http://HOST:PORT.
        #[arg(long, env = "PUSHNOTE_HTTP_URL")]
        url: String,
        /// The API key of that forwarder or server (prefer the environment variable: command
        /// lines are visible to other local users).
        #[arg(long, env = "PUSHNOTE_API_KEY", hide_env_values = true)]
        api_key: String,
    },
    /// Check a token and print its user id.
    Verify {
        /// The token to check.
        token: String,
        /// The oldest token accepted, in seconds. 0 accepts any age.
        #[arg(long, env = "PUSHNOTE_TOKEN_MAX_AGE", default_value_t = 86_400)]
        max_age: u64,
        #[command(flatten)]
        keys: Keys,
    },
}

#[derive(ClapArgs, Debug)]
struct Data {
    /// The notification: JSON text (an object, array, number, …), delivered as that value.
    data: String,
    /// Send DATA as a plain string instead of parsing it as JSON.
    #[arg(long)]
    text: bool,
}

#[derive(ClapArgs, Debug)]
struct Bus {
    /// Where apps publish: the forwarder's app-facing endpoint, or a --single server's; or
    /// the Redis of servers started with --broker (redis://[:password@]host[:port][/db]),
    /// through which every publish is confirmed: each message's position is printed as with
    /// --confirm.
    #[arg(long, env = "PUSHNOTE_PUBLISH", default_value = pushnote::DEFAULT_PUBLISH_ENDPOINT)]
    bus: String,
    /// Seconds to wait for the forwarder or server to be connected (for Redis, to connect).
    #[arg(long, default_value_t = 2.0)]
    timeout: f64,
    /// Publish confirmed, through the forwarder's --confirm ENDPOINT, and print each message's
    /// position once the forwarder holds it, one JSON object a line ({"epoch": E, "offset":
    /// O}; one per user, in order). Without a confirmation within 5 s, fails saying the message
    /// may or may not have been published. Not for a Redis --bus, which confirms every publish.
    #[arg(long, env = "PUSHNOTE_CONFIRM", value_name = "ENDPOINT")]
    confirm: Option<String>,
    /// The prefix of pushnote's keys and channels in a Redis --bus: the servers'
    /// --broker-prefix.
    #[arg(
        long,
        env = "PUSHNOTE_BROKER_PREFIX",
        default_value = pushnote::redis_script::DEFAULT_PREFIX
    )]
    broker_prefix: String,
    /// With a Redis --bus: how many of Redis' replicas must hold a publish before it counts as
    /// published (Redis' WAIT); fewer fails, saying the message was published but a failover
    /// may lose it.
    #[arg(long, env = "PUSHNOTE_BROKER_REPLICAS", default_value_t = 0)]
    replicas: u32,
}

#[derive(ClapArgs, Debug)]
struct Keys {
    /// The secret tokens are signed with (the same as pushnote-server's).
    #[arg(long, env = "PUSHNOTE_SECRET", hide_env_values = true)]
    secret: String,
    /// The salt tokens are signed with (the same as pushnote-server's).
    #[arg(long, env = "PUSHNOTE_SALT", default_value = pushnote::DEFAULT_SALT)]
    salt: String,
}

/// The secret and salt, needed by some uses of a command only.
#[derive(ClapArgs, Debug)]
struct OptionalKeys {
    /// The secret tokens are signed with (the same as pushnote-server's); needed with
    /// --opaque-token.
    #[arg(long, env = "PUSHNOTE_SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// The salt tokens are signed with (the same as pushnote-server's).
    #[arg(long, env = "PUSHNOTE_SALT", default_value = pushnote::DEFAULT_SALT)]
    salt: String,
}

impl OptionalKeys {
    fn signer(&self) -> Result<Signer, String> {
        let secret = self
            .secret
            .as_deref()
            .ok_or("--opaque-token needs the servers' secret: set PUSHNOTE_SECRET (or --secret)")?;
        Signer::with_salt(secret, &self.salt, std::iter::empty::<&str>())
            .map_err(|e| format!("--secret: {e}"))
    }
}

/// `tokens`, with each "-" replaced by the lines of standard input.
fn read_tokens(tokens: Vec<String>) -> Result<Vec<String>, String> {
    let mut all = Vec::with_capacity(tokens.len());
    for token in tokens {
        if token != "-" {
            all.push(token);
            continue;
        }
        for line in std::io::stdin().lines() {
            let line = line.map_err(|e| format!("cannot read tokens from standard input: {e}"))?;
            if !line.is_empty() {
                all.push(line);
            }
        }
    }
    Ok(all)
}

/// A channel name the crate accepts, or its reason why not.
fn channel_name(name: &str) -> Result<String, wire::WireError> {
    wire::check_channel(name).map(|()| name.to_owned())
}

/// A presence channel's name (`presence-…`) the crate accepts, or its reason why not.
fn presence_channel_name(name: &str) -> Result<String, String> {
    wire::check_channel(name).map_err(|e| e.to_string())?;
    if !wire::is_presence(name) {
        return Err(format!(
            "not a presence channel: its name must start with {:?}",
            wire::PRESENCE_CHANNEL_PREFIX
        ));
    }
    Ok(name.to_owned())
}

/// JSON text, or why it is not.
fn json_text(text: &str) -> Result<String, String> {
    serde_json::from_str::<Box<serde_json::value::RawValue>>(text)
        .map(|_| text.to_owned())
        .map_err(|e| format!("not JSON ({e}); a string is written in quotes: '\"Ann\"'"))
}

/// An event name the crate accepts, or its reason why not.
fn event_name(name: &str) -> Result<String, wire::WireError> {
    wire::check_event(name).map(|()| name.to_owned())
}

/// A user id the crate accepts, or its reason why not.
fn user_id(user: &str) -> Result<String, wire::WireError> {
    wire::check_user_id(user).map(|()| user.to_owned())
}

impl Data {
    fn value(&self) -> Result<serde_json::Value, String> {
        if self.text {
            return Ok(serde_json::Value::String(self.data.clone()));
        }
        serde_json::from_str(&self.data)
            .map_err(|e| format!("DATA is not JSON ({e}); pass --text to send it as a string"))
    }
}

impl Bus {
    fn connect(&self) -> Result<Publisher, String> {
        let timeout = Duration::try_from_secs_f64(self.timeout)
            .map_err(|_| "--timeout must be a number of seconds".to_owned())?;
        let mut builder = Publisher::builder(&self.bus)
            .ready_timeout(timeout)
            .broker_prefix(&self.broker_prefix)
            .replicas(self.replicas);
        if let Some(confirm) = &self.confirm {
            if pushnote::redis_endpoint::is_redis(&self.bus) {
                return Err(
                    "--confirm is a forwarder's confirm socket: through Redis (--bus redis://…) \
                     every publish is confirmed, and its positions printed, without it"
                        .to_owned(),
                );
            }
            builder = builder.confirm(confirm);
        }
        builder.connect().map_err(|e| e.to_string())
    }
}

/// Prints the positions of a confirmed publish, one a line.
fn print_positions(positions: &[pushnote::Position]) {
    for p in positions {
        cli::say(format_args!(
            "{}",
            serde_json::json!({"epoch": p.epoch, "offset": p.offset})
        ));
    }
}

impl Keys {
    fn signer(&self) -> Result<Signer, String> {
        Signer::with_salt(&self.secret, &self.salt, std::iter::empty::<&str>())
            .map_err(|e| format!("--secret: {e}"))
    }
}

fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Command::NotifyAll { data, bus } => {
            let value = data.value()?;
            let publisher = bus.connect()?;
            if publisher.confirms() {
                let position = publisher
                    .notify_all_confirmed(&value)
                    .map_err(|e| e.to_string())?;
                print_positions(&[position]);
                return Ok(());
            }
            publisher.notify_all(&value).map_err(|e| e.to_string())
        }
        Command::Notify {
            users,
            tokens,
            keys,
            data,
            bus,
        } => {
            let value = data.value()?;
            // Checked before anything is sent, so that a bad token sends nothing.
            let tokens = read_tokens(tokens)?;
            let mut recipients = users;
            if !tokens.is_empty() {
                let signer = keys.signer()?;
                for token in &tokens {
                    // The error says why, never the token.
                    recipients.push(signer.user_of_token(token).map_err(|e| e.to_string())?);
                }
            }
            let publisher = bus.connect()?;
            if publisher.confirms() {
                let positions = publisher
                    .notify_confirmed(&value, &recipients)
                    .map_err(|e| e.to_string())?;
                print_positions(&positions);
                return Ok(());
            }
            publisher
                .notify(&value, &recipients)
                .map_err(|e| e.to_string())
        }
        Command::Publish {
            channel,
            event,
            data,
            bus,
        } => {
            let value = data.value()?;
            let publisher = bus.connect()?;
            if publisher.confirms() {
                let position = publisher
                    .publish_confirmed(&channel, &event, &value)
                    .map_err(|e| e.to_string())?;
                print_positions(&[position]);
                return Ok(());
            }
            publisher
                .publish(&channel, &event, &value)
                .map_err(|e| e.to_string())
        }
        Command::ChannelToken {
            channel,
            user,
            keys,
        } => {
            let token = keys
                .signer()?
                .channel_token(&channel, user.as_deref())
                .map_err(|e| e.to_string())?;
            cli::say(format_args!("{token}"));
            Ok(())
        }
        Command::PresenceToken {
            channel,
            user,
            info,
            keys,
        } => {
            let token = keys
                .signer()?
                .presence_token(&channel, &user, info.as_deref())
                .map_err(|e| e.to_string())?;
            cli::say(format_args!("{token}"));
            Ok(())
        }
        Command::Presence {
            channel,
            url,
            api_key,
        } => {
            let members =
                pushnote::presence::members(&url, &api_key, &channel).map_err(|e| e.to_string())?;
            for member in members {
                cli::say(format_args!("{}", member.to_json()));
            }
            Ok(())
        }
        Command::Token { user, keys } => {
            let token = keys.signer()?.tokenize(&user).map_err(|e| e.to_string())?;
            cli::say(format_args!("{token}"));
            Ok(())
        }
        Command::Verify {
            token,
            max_age,
            keys,
        } => {
            let max_age = (max_age > 0).then(|| Duration::from_secs(max_age));
            let user = keys
                .signer()?
                .verify(&token, max_age)
                .map_err(|e| e.to_string())?;
            cli::say(format_args!("{user}"));
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pushnote: {e}");
            ExitCode::FAILURE
        }
    }
}
