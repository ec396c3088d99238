//! The broker interface: what the server asks of the engine that carries messages from apps
//! to servers, and what comes back.
//!
//! An engine has two sides. [`Broker`] is its handle, called from any thread: the hub
//! subscribes and unsubscribes topics through it (its [`Subscriptions`]), and a session's
//! request for a topic's position and what the topic holds since a position is handed
//! through it to the bus thread. [`Engine`] is its side on the bus thread, which waits on it,
//! asks it for a topic's position and history ([`Engine::ask`]), and takes in what comes:
//! topics' messages, the answers to history requests, the connection going and coming, and
//! the handle's commands. The bus thread is generic over it, so the per-message path has no
//! dynamic call.
//!
//! Two engines implement it (`zeromq.rs`): the ZeroMQ forwarder, which numbers each topic's
//! messages and keeps their history, and the in-process one of `--single`, a socket apps
//! publish into, whose history the server keeps itself (`recovery.rs`). An engine that keeps
//! history elsewhere (a store shared by servers) answers history requests as the forwarder
//! does, as parts taken in on the bus thread in order with the topic's messages.
//!
//! Publishing is the apps' side (the client crate's `Publisher`, `POST /publish` through it),
//! not the server's: it is not here.

use std::time::Duration;

use pushnote::recover::Part;
use pushnote_history::Position;

use crate::metrics::Metrics;
use crate::overload::Backlog;
use crate::subscriptions::Subscriptions;

/// A request for a topic's history: its position, and with `since`, what it holds after it.
#[derive(Clone, Copy, Debug)]
pub struct HistoryRequest<'a> {
    /// The server's number for the request, repeated in its answer's parts.
    pub id: u64,
    /// The last position the page saw; `None` asks for the topic's position alone. Epoch 0
    /// is no topic's: it asks for all of the topic's current epoch, from its first.
    pub since: Option<Position>,
    /// The most bytes of kept bodies the answer may bring: past it, the answer gives none and
    /// ends busy.
    pub max_bytes: u32,
    /// The topic, as the bus names it (NUL included).
    pub topic: &'a [u8],
}

/// The engine's handle: what the hub and the sessions' requests ask of it, from any thread.
pub trait Broker: Subscriptions {
    /// Tells the bus thread that a session's request waits for it under `ticket` (in
    /// `remote.rs`), after every subscription commanded before: the bus thread asks the
    /// engine ([`Engine::ask`]) after it has subscribed them.
    fn asked(&self, ticket: u64);

    /// Sends a presence message (PROTOCOL §2d) to every other server, after every command
    /// before it; an engine with no other servers (`--single`) drops it.
    fn share(&self, body: &[u8]);

    /// Stops the bus thread's side.
    fn stop(&self);
}

/// What the bus thread found ready after [`Engine::wait`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Ready {
    /// Messages (or answers) came in.
    pub messages: bool,
    /// The handle sent commands.
    pub commands: bool,
    /// The connection to the engine changed.
    pub connection: bool,
    /// Apps sent confirmed publishes (`--single --confirm`).
    pub confirms: bool,
}

/// A command of the handle, as the bus thread is told of it once the engine carried it out.
#[derive(Clone, Copy, Debug)]
pub enum Command<'a> {
    /// The server subscribed `topic`.
    Subscribed(&'a [u8]),
    /// The server unsubscribed `topic`.
    Unsubscribed(&'a [u8]),
    /// A session's request waits under a ticket ([`Broker::asked`]).
    Asked(u64),
    /// A presence message to send to every other server ([`Broker::share`]).
    Share(&'a [u8]),
}

/// One part of an answer to a history request, as the engine took it in.
#[derive(Clone, Copy, Debug)]
pub enum Answer<'f> {
    /// A well-formed part; a message's body with it (empty for an end).
    Part(Part, &'f [u8]),
    /// Not one the server can read.
    Malformed,
}

/// Why the engine's wait failed: the bus thread stops.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct EngineError(pub String);

/// The engine's side on the bus thread.
pub trait Engine: Send + 'static {
    /// Where the engine is, as bound or connected.
    fn endpoint(&self) -> &str;

    /// Whether the engine numbers each topic's messages itself, and gives their positions
    /// with them; otherwise the server numbers them in its own history.
    fn numbers_messages(&self) -> bool;

    /// Whether the engine carries presence messages between servers (PROTOCOL §2d): their
    /// topic is then presence's, not a page's.
    fn shares(&self) -> bool {
        false
    }

    /// Called on the bus thread before its first wait.
    fn start(&mut self, metrics: &Metrics);

    /// Waits until something is ready, or `timeout` passes (`None`: until something is).
    fn wait(&mut self, timeout: Option<Duration>) -> Result<Ready, EngineError>;

    /// Takes in the connection's changes (and sets the connected gauge); true when it came
    /// back after it was lost: what the engine accepted meanwhile went to no one here.
    fn take_connection(&mut self, metrics: &Metrics) -> bool;

    /// Carries out the handle's commands, telling `on` of each subscription change; false
    /// when told to stop.
    fn take_commands(&mut self, on: impl FnMut(Command<'_>)) -> bool;

    /// Reads what came in into `backlog`, as far as it has room, for a moment at most.
    fn read(&mut self, backlog: &mut Backlog);

    /// The part of an answer that `frames` are, or `None` for a topic's message.
    fn answer<'f>(&self, frames: &'f [Vec<u8>]) -> Option<Answer<'f>>;

    /// Asks for `request`'s topic's position and history, after every subscription and
    /// request sent before. The answer comes in ([`Engine::answer`]) after every message of
    /// the topic the engine handed on before it, and before every one after.
    fn ask(&mut self, request: &HistoryRequest<'_>);

    /// The confirmed publishes waiting, up to `most`: each the app's identity, then the
    /// request (PROTOCOL §2b). Only an engine that takes them where the server numbers the
    /// messages itself (`--single --confirm`) has any.
    fn confirm_requests(&mut self, _most: usize) -> Vec<Vec<Vec<u8>>> {
        Vec::new()
    }

    /// Sends the reply `[identity, id, status, detail]` of a confirmed publish; false if it
    /// was dropped (the app gone, or holding too many replies).
    fn confirm_reply(&mut self, _reply: [&[u8]; 4]) -> bool {
        false
    }
}
