//! The bridge into Redis (`--broker redis://…`): what apps publish over ZeroMQ, on the app
//! socket and the confirm socket, is published into Redis through pushnote's script
//! (`docs/PROTOCOL.md` §2c) instead of to servers, so that apps written for a forwarder keep
//! working unchanged with servers on the Redis engine.
//!
//! The forwarder's thread hands each checked message to the bridge's thread through a bounded
//! queue ([`QUEUE`] messages; a message that finds it full is dropped and counted `busy`). The
//! bridge's thread takes what is waiting, up to [`MAX_IN_FLIGHT`] messages, sends them all
//! (EVALSHA after EVALSHA, without waiting), then reads their replies in order: several
//! publishes in flight, bounded. A confirmed publish's positions go back to the forwarder's
//! thread over an inproc socket, which replies to the app; one not published gets no reply,
//! and the app's confirmation times out (`Unconfirmed`). Every message not published is
//! counted by reason ([`Unpublished`]) and logged at most once a second.
//!
//! Redis not reachable: the messages are not published (`not_connected`); the connection is
//! tried again at most every [`RETRY_EVERY`], so the bridge publishes again as soon as Redis is
//! back.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use pushnote::confirm;
use pushnote::redis_connection::{Connection, RedisError};
use pushnote::redis_endpoint::RedisEndpoint;
use pushnote::redis_script::{self, Keys};
use pushnote::resp::{Limits, Value};

use crate::metrics::{Metrics, Unpublished};

/// Messages waiting for the bridge's thread at most; past it, new ones are dropped (`busy`).
pub const QUEUE: usize = 1024;

/// Publishes sent to Redis before their replies are read, at most.
pub const MAX_IN_FLIGHT: usize = 256;

/// How often the bridge tries to connect to a Redis it could not reach, at most.
pub const RETRY_EVERY: Duration = Duration::from_millis(100);

/// How long connecting to Redis, and each reply, may take.
const TIMEOUT: Duration = pushnote::DEFAULT_CONFIRM_TIMEOUT;

/// How often messages not published are logged, at most.
const LOG_EVERY: Duration = Duration::from_secs(1);

/// How long the bridge's thread waits for a message before it logs what it must.
const TICK: Duration = Duration::from_millis(100);

/// The inproc endpoint confirmed publishes' replies come back on.
pub(crate) fn replies_endpoint() -> String {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    format!(
        "inproc://pushnote-mq-bridge-{}",
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// One message (or confirm request) to publish: its topics (each up to and including its
/// NUL), its body, and where its positions go if it was a confirmed publish.
pub(crate) struct Job {
    pub(crate) topics: Vec<Vec<u8>>,
    pub(crate) body: Vec<u8>,
    /// The app's identity on the confirm socket and its request id.
    pub(crate) reply: Option<(Vec<u8>, Vec<u8>)>,
}

/// The forwarder's side of the bridge.
pub(crate) struct Side {
    jobs: SyncSender<Job>,
    /// Confirmed publishes' replies: `[peer, id, status, detail]`.
    pub(crate) replies: zmq::Socket,
    metrics: Arc<Metrics>,
}

impl Side {
    /// Hands `job` to the bridge; a full queue drops it (counted).
    pub(crate) fn publish(&self, job: Job) {
        let n = job.topics.len() as u64;
        if self.jobs.try_send(job).is_err() {
            self.metrics.count_unpublished(Unpublished::Busy, n);
        }
    }
}

/// Starts the bridge's thread; the forwarder's side of it. The thread ends once the side is
/// dropped and the messages it holds are published.
pub(crate) fn start(
    ctx: &zmq::Context,
    endpoint: RedisEndpoint,
    prefix: &str,
    metrics: Arc<Metrics>,
) -> Result<(Side, JoinHandle<()>), String> {
    // An endpoint this build cannot reach is an error at start; a Redis not there yet is not.
    let mut connection = None;
    match open(&endpoint) {
        Ok(c) => connection = Some(c),
        Err(RedisError::Endpoint(why)) => return Err(why),
        Err(e) => tracing::warn!(error = %e, "--broker: Redis not reached yet; trying again"),
    }
    let address = replies_endpoint();
    let zmq_error = |e: zmq::Error| format!("--broker: {e}");
    let replies = ctx.socket(zmq::PAIR).map_err(zmq_error)?;
    replies.bind(&address).map_err(zmq_error)?;
    let back = ctx.socket(zmq::PAIR).map_err(zmq_error)?;
    back.set_linger(0).map_err(zmq_error)?;
    back.connect(&address).map_err(zmq_error)?;
    let (jobs, queue) = std::sync::mpsc::sync_channel(QUEUE);
    let mut bridge = Bridge {
        name: endpoint.to_string(),
        endpoint,
        keys: Keys::new(prefix),
        connection,
        tried: None,
        queue,
        back,
        metrics: metrics.clone(),
        log: Log::default(),
    };
    let thread = std::thread::Builder::new()
        .name("pushnote-mq-bridge".into())
        .spawn(move || bridge.run())
        .map_err(|e| format!("cannot start the bridge thread: {e}"))?;
    Ok((
        Side {
            jobs,
            replies,
            metrics,
        },
        thread,
    ))
}

fn open(endpoint: &RedisEndpoint) -> Result<Connection, RedisError> {
    let limits = Limits {
        string_bytes: 64 * 1024,
        elements: 1 << 20,
    };
    let mut c = Connection::open(endpoint, TIMEOUT, limits)?;
    c.set_timeout(TIMEOUT)?;
    Ok(c)
}

/// The bridge's thread and what it owns.
struct Bridge {
    endpoint: RedisEndpoint,
    /// The endpoint without its password.
    name: String,
    keys: Keys,
    connection: Option<Connection>,
    /// When a connection was last tried and failed.
    tried: Option<Instant>,
    queue: Receiver<Job>,
    back: zmq::Socket,
    metrics: Arc<Metrics>,
    log: Log,
}

/// What became of one message sent.
enum Outcome {
    Published(Vec<pushnote::Position>),
    Failed(Unpublished, String),
    /// Redis lost the script: sent again, alone, once the batch is read.
    NoScript,
}

impl Bridge {
    fn run(&mut self) {
        loop {
            let first = match self.queue.recv_timeout(TICK) {
                Ok(job) => job,
                Err(RecvTimeoutError::Timeout) => {
                    self.log.report(&self.metrics, Instant::now());
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => return,
            };
            let mut batch = vec![first];
            while batch.len() < MAX_IN_FLIGHT {
                match self.queue.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            self.publish(&batch);
            self.log.report(&self.metrics, Instant::now());
        }
    }

    /// The open connection, opened again if it was lost (at most every [`RETRY_EVERY`]).
    fn connection(&mut self) -> Result<&mut Connection, String> {
        if !self.connection.as_ref().is_some_and(Connection::is_open) {
            self.connection = None;
            let now = Instant::now();
            if self
                .tried
                .is_some_and(|t| now.saturating_duration_since(t) < RETRY_EVERY)
            {
                return Err(format!("{} not reachable", self.name));
            }
            match open(&self.endpoint) {
                Ok(c) => {
                    tracing::info!(redis = %self.name, "--broker: connected to Redis");
                    self.connection = Some(c);
                    self.tried = None;
                }
                Err(e) => {
                    self.tried = Some(now);
                    return Err(e.to_string());
                }
            }
        }
        self.connection
            .as_mut()
            .ok_or_else(|| "no connection".to_owned())
    }

    /// Publishes `batch`, pipelined, and counts and answers each message's outcome.
    fn publish(&mut self, batch: &[Job]) {
        let args: Vec<Vec<Vec<u8>>> = batch
            .iter()
            .map(|job| {
                let topics: Vec<&[u8]> = job.topics.iter().map(Vec::as_slice).collect();
                redis_script::publish_args(&self.keys, &job.body, &topics)
            })
            .collect();
        let counts: Vec<usize> = batch.iter().map(|job| job.topics.len()).collect();
        let mut outcomes = self.send_and_read(&args, &counts);
        for (i, outcome) in outcomes.iter_mut().enumerate() {
            if let Outcome::NoScript = outcome {
                *outcome = self.call(&args[i], batch[i].topics.len());
            }
        }
        for (job, outcome) in batch.iter().zip(outcomes) {
            self.settle(job, outcome);
        }
    }

    /// Sends every call of `args` (loading the script first if needed), then reads their
    /// replies; each one's outcome, in order.
    fn send_and_read(&mut self, args: &[Vec<Vec<u8>>], counts: &[usize]) -> Vec<Outcome> {
        let name = self.name.clone();
        let failed = |why: Unpublished, detail: String, n: usize| {
            (0..n)
                .map(|_| Outcome::Failed(why, detail.clone()))
                .collect::<Vec<_>>()
        };
        let c = match self.connection() {
            Ok(c) => c,
            Err(e) => return failed(Unpublished::NotConnected, e, args.len()),
        };
        let sha = match c.load_script() {
            Ok(sha) => sha,
            Err(e) => {
                self.connection = None;
                let why = match e {
                    RedisError::Refused { .. } => Unpublished::Refused,
                    _ => Unpublished::NotConnected,
                };
                return failed(why, e.to_string(), args.len());
            }
        };
        let mut sent = 0;
        let mut broken = None;
        for a in args {
            let mut call: Vec<&[u8]> = Vec::with_capacity(a.len() + 2);
            call.push(b"EVALSHA");
            call.push(&sha);
            call.extend(a.iter().map(Vec::as_slice));
            if let Err(e) = c.send(&call) {
                broken = Some(e.to_string());
                break;
            }
            sent += 1;
        }
        let mut outcomes = Vec::with_capacity(args.len());
        for &topics in &counts[..sent] {
            if broken.is_some() {
                break;
            }
            match c.receive() {
                Ok(reply) => outcomes.push(outcome(&reply, topics, &name)),
                Err(e) => broken = Some(e.to_string()),
            }
        }
        if let Some(e) = broken {
            // Those sent and not answered may or may not have run; those not sent did not.
            self.connection = None;
            let unanswered = sent - outcomes.len();
            outcomes.extend(failed(Unpublished::Unconfirmed, e.clone(), unanswered));
            outcomes.extend(failed(Unpublished::NotConnected, e, args.len() - sent));
        }
        outcomes
    }

    /// One call of the script, waiting for its reply (loading the script again if Redis lost
    /// it).
    fn call(&mut self, args: &[Vec<u8>], topics: usize) -> Outcome {
        let c = match self.connection() {
            Ok(c) => c,
            Err(e) => return Outcome::Failed(Unpublished::NotConnected, e),
        };
        match c.script(args) {
            Ok(reply) => match outcome(&reply, topics, &self.name) {
                Outcome::NoScript => {
                    Outcome::Failed(Unpublished::Refused, "the script is not loaded".into())
                }
                other => other,
            },
            Err(e) => {
                self.connection = None;
                Outcome::Failed(Unpublished::Unconfirmed, e.to_string())
            }
        }
    }

    /// Counts `outcome` and, for a confirmed publish published, replies with its positions.
    fn settle(&mut self, job: &Job, outcome: Outcome) {
        let n = job.topics.len() as u64;
        match outcome {
            Outcome::Published(positions) => {
                self.metrics
                    .broker_published
                    .fetch_add(n, Ordering::Relaxed);
                if let Some((peer, id)) = &job.reply {
                    let detail = confirm::encode_positions(&positions);
                    let sent = self.back.send_multipart(
                        [&peer[..], &id[..], confirm::OK, &detail[..]],
                        zmq::DONTWAIT,
                    );
                    if sent.is_err() {
                        self.metrics
                            .confirm_replies_dropped
                            .fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            Outcome::Failed(why, detail) => {
                self.metrics.count_unpublished(why, n);
                self.log.last = Some(detail);
            }
            Outcome::NoScript => {
                self.metrics.count_unpublished(Unpublished::Refused, n);
            }
        }
    }
}

/// What a reply to one publish means.
fn outcome(reply: &Value, topics: usize, name: &str) -> Outcome {
    match (redis_script::publish_reply(reply, topics), reply) {
        (Ok(positions), _) => Outcome::Published(positions),
        (Err(e), Value::Error(_)) if e.starts_with("NOSCRIPT") => Outcome::NoScript,
        (Err(e), Value::Error(_)) => Outcome::Failed(Unpublished::Refused, format!("{name}: {e}")),
        (Err(e), _) => Outcome::Failed(
            Unpublished::Unconfirmed,
            format!("{name}: a reply that is not positions: {e}"),
        ),
    }
}

/// Messages not published and not logged yet: a line a second at most, with the last reason
/// Redis or the connection gave.
#[derive(Default)]
struct Log {
    /// The counts already logged, by [`Unpublished`] reason.
    logged_counts: [u64; 4],
    logged: Option<Instant>,
    /// The last error met.
    last: Option<String>,
}

impl Log {
    fn report(&mut self, metrics: &Metrics, now: Instant) {
        if self
            .logged
            .is_some_and(|t| now.saturating_duration_since(t) < LOG_EVERY)
        {
            return;
        }
        let counts = Unpublished::ALL.map(|why| metrics.unpublished(why));
        if counts == self.logged_counts {
            return;
        }
        let new = |i: usize| counts[i] - self.logged_counts[i];
        tracing::warn!(
            not_connected = new(0),
            refused = new(1),
            unconfirmed = new(2),
            busy = new(3),
            last_error = self.last.take().unwrap_or_default(),
            "messages not published into Redis (--broker): Redis not reached, its error \
             reply, no reply in time (may or may not be published), or the bridge's queue full"
        );
        self.logged_counts = counts;
        self.logged = Some(now);
    }
}
