//! The HTTP connections of a process: accepting them, serving HTTP/1.1 on each, and closing
//! those that carry nothing.
//!
//! A connection is *idle* while no request is in progress on it: from its accept until its
//! first request, and between the end of one response and the next request (keep-alive). A
//! request is in progress from the moment its headers are read until its response body is
//! done, so a polling request waiting for messages and a streaming response are never idle;
//! a WebSocket leaves this module once upgraded. An idle connection is closed after
//! `idle_timeout`, and a client that trickles a request's headers after `header_timeout`.
//!
//! When the process runs out of file descriptors, accepting fails; then the connections idle
//! the longest are closed at once, so that connections which carry no session cannot keep
//! clients that want one out. A request that came with a body counts as idle for this until it
//! is answered: a client sending a body, or trickling one, holds no session (the route bounds
//! the body's time, see [`crate::body`]). With [`Connections::new`]'s `max`, the same room is
//! made before the descriptors run out: past `max` open connections, the one idle the longest
//! is closed for the new one, or, with none idle, the new one is closed at once (refused), so
//! that what the process needs its other descriptors for (the forwarder's bus) keeps them.
//! HTTP/2 is not served: a client that opens with its preface gets an error and the connection
//! is closed, like any other malformed request.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper::service::Service;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};

use crate::metrics::Figures;

/// Seconds a client may take to send a request's headers.
pub const DEFAULT_HEADER_TIMEOUT_SECS: u64 = 10;
/// Seconds a connection may stay open with no request in progress (keep-alive between
/// requests). Clients of the polling transports send their next request at once.
pub const DEFAULT_IDLE_TIMEOUT_SECS: u64 = 20;

/// How long connections take to be served and when they count as idle.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// How long a client may take to send a request's headers.
    pub header: Duration,
    /// How long a connection may stay open with no request in progress.
    pub idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts {
            header: Duration::from_secs(DEFAULT_HEADER_TIMEOUT_SECS),
            idle: Duration::from_secs(DEFAULT_IDLE_TIMEOUT_SECS),
        }
    }
}

/// The most idle connections closed at once when descriptors run out.
const EVICT_AT_ONCE: usize = 64;
/// How often running out of descriptors, or refusing connections, is logged at most.
const LOG_EVERY: Duration = Duration::from_secs(1);
/// How long accepting waits for a connection told to close to give its descriptor back.
const ROOM_WAIT: Duration = Duration::from_millis(100);

/// What the connections of a process did, for its `/metrics`.
#[derive(Default, Debug)]
pub struct Stats {
    /// Connections open now.
    pub open: AtomicU64,
    /// Connections closed after `idle_timeout` with no request in progress.
    pub closed_idle: AtomicU64,
    /// Connections closed to make room: descriptors ran out, or `max` was reached.
    pub evicted: AtomicU64,
    /// Connections closed as soon as accepted: `max` reached, and none idle to close instead.
    pub refused: AtomicU64,
    /// Connections closed because a request's headers did not arrive within `header_timeout`.
    pub header_timeouts: AtomicU64,
}

impl Stats {
    /// Writes these figures, named `{prefix}…` (for example `pushnote_http_connections`).
    pub fn encode(&self, prefix: &str, figures: &mut Figures) -> std::fmt::Result {
        let load = |figure: &AtomicU64| figure.load(Ordering::Relaxed);
        figures.gauge(prefix, "HTTP connections open now.", load(&self.open))?;
        figures.counter(
            &format!("{prefix}_closed_idle_total"),
            "HTTP connections closed after --idle-timeout with no request in progress.",
            load(&self.closed_idle),
        )?;
        figures.counter(
            &format!("{prefix}_evicted_total"),
            "HTTP connections closed to make room for new ones (descriptors ran out, or the \
             most connections were open): the idle ones, or those sending a request body, \
             longest first.",
            load(&self.evicted),
        )?;
        figures.counter(
            &format!("{prefix}_refused_total"),
            "HTTP connections closed as soon as accepted: the most connections were open and \
             none could give way.",
            load(&self.refused),
        )?;
        figures.counter(
            &format!("{prefix}_header_timeouts_total"),
            "HTTP connections closed because a request's headers took longer than \
             --header-timeout.",
            load(&self.header_timeouts),
        )
    }
}

/// The connections of a process, over all its listeners: their timeouts, the most that may be
/// open at once, and what they did.
pub struct Connections {
    open: Open,
    timeouts: Timeouts,
    max: Option<usize>,
    stats: Arc<Stats>,
    /// Woken when a connection closes.
    room: Notify,
    refused_logged: Mutex<Option<Instant>>,
}

impl Connections {
    /// Connections served with `timeouts`; at most `max` open at once over every listener
    /// served (`None`: as many as descriptors allow); counted in `stats`.
    pub fn new(timeouts: Timeouts, max: Option<usize>, stats: Arc<Stats>) -> Arc<Connections> {
        Arc::new(Connections {
            open: Open::default(),
            timeouts,
            max: max.map(|m| m.max(1)),
            stats,
            room: Notify::new(),
            refused_logged: Mutex::new(None),
        })
    }

    /// Connections open now.
    pub fn len(&self) -> usize {
        self.open.len()
    }

    /// Whether no connection is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Serves `service` on every connection `listener` accepts until `stop` turns true; then
    /// stops accepting and closes each connection once its request in progress, if any, is
    /// done.
    ///
    /// Each connection is served as a [`TokioIo`]`<`[`TcpStream`]`>`: a service that upgrades
    /// (a WebSocket) gets that back from [`hyper::upgrade::Upgraded::downcast`].
    pub async fn serve<S, B>(
        self: Arc<Self>,
        listener: TcpListener,
        service: S,
        mut stop: watch::Receiver<bool>,
    ) where
        S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
            + Clone
            + Send
            + 'static,
        S::Future: Send + 'static,
        B: Body + Unpin + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let mut http = http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(self.timeouts.header);
        let http = Arc::new(http);
        let mut exhausted_logged: Option<Instant> = None;
        let mut full_logged: Option<Instant> = None;
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = stop.wait_for(|s| *s) => return,
            };
            let (stream, from) = match accepted {
                Ok(accepted) => accepted,
                Err(e) if out_of_descriptors(&e) => {
                    let closed = self.open.evict(EVICT_AT_ONCE);
                    if exhausted_logged.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
                        exhausted_logged = Some(Instant::now());
                        tracing::warn!(
                            connections = self.open.len(),
                            closed_idle = closed,
                            "out of file descriptors: closing the connections idle the longest \
                             to make room; raise the limit (ulimit -n, LimitNOFILE) or lower \
                             --idle-timeout"
                        );
                    }
                    // Let the closed connections' tasks run and give their descriptors back.
                    let pause = if closed > 0 { 5 } else { 100 };
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            // At the most connections, the one idle the longest is closed for the new one, and
            // the next is accepted once its descriptor is back (new clients wait in the listen
            // backlog meanwhile); with none idle, the new one is closed at once.
            let mut room = None;
            if let Some(max) = self.max.filter(|max| self.open.len() >= *max) {
                let notified = self.room.notified();
                if self.open.evict(1) == 0 {
                    self.refuse(max);
                    continue;
                }
                if full_logged.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
                    full_logged = Some(Instant::now());
                    tracing::warn!(
                        max,
                        evicted = self.stats.evicted.load(Ordering::Relaxed),
                        "HTTP connections at their most: closing the one idle the longest for \
                         each new one"
                    );
                }
                room = Some(notified);
            }
            let _ = stream.set_nodelay(true);
            let conn = self.open.add();
            self.stats.open.fetch_add(1, Ordering::Relaxed);
            let origin = Origin {
                connection: conn.id,
                address: from,
            };
            tokio::spawn(self.clone().serve_one(
                stream,
                service.clone(),
                origin,
                http.clone(),
                conn,
                stop.clone(),
            ));
            if let Some(room) = room {
                let _ = tokio::time::timeout(ROOM_WAIT, room).await;
            }
        }
    }

    /// Counts and logs (at most once a second) a connection closed as soon as accepted.
    fn refuse(&self, max: usize) {
        self.stats.refused.fetch_add(1, Ordering::Relaxed);
        let mut logged = lock(&self.refused_logged);
        if logged.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
            *logged = Some(Instant::now());
            tracing::warn!(
                max,
                refused = self.stats.refused.load(Ordering::Relaxed),
                "HTTP connections at their most, none idle: closing new ones at once"
            );
        }
    }

    async fn serve_one<S, B>(
        self: Arc<Self>,
        stream: TcpStream,
        service: S,
        origin: Origin,
        http: Arc<http1::Builder>,
        conn: Arc<Conn>,
        mut stop: watch::Receiver<bool>,
    ) where
        S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible> + Send + 'static,
        S::Future: Send + 'static,
        B: Body + Unpin + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let idle_timeout = self.timeouts.idle;
        let tracked = Tracked {
            inner: service,
            conn: conn.clone(),
            origin,
        };
        // The connection is closed (dropped) at the end of this block, before it is counted
        // out, so that its descriptor is free when room is made.
        {
            let connection = http
                .serve_connection(TokioIo::new(stream), tracked)
                .with_upgrades();
            tokio::pin!(connection);
            let mut stopping = false;
            // An idle connection is dropped, which closes it: no request is in progress on it.
            // One with a request in progress is shut down gracefully at stop: closed once it is
            // answered.
            loop {
                // While a request is in progress, look again one idle period later.
                let wake = conn.idle_since().unwrap_or_else(Instant::now) + idle_timeout;
                // The connection first: a request already received is read (and the connection
                // no longer idle) before a timer that ran out meanwhile is looked at.
                tokio::select! {
                    biased;
                    result = &mut connection => {
                        if let Err(e) = result {
                            if e.is_timeout() {
                                self.stats.header_timeouts.fetch_add(1, Ordering::Relaxed);
                            }
                            tracing::debug!(error = %e, "connection ended with an error");
                        }
                        break;
                    }
                    _ = tokio::time::sleep_until(wake.into()) => {
                        if conn.idle_since().is_some_and(|t| t.elapsed() >= idle_timeout) {
                            self.stats.closed_idle.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                    }
                    _ = conn.evict.notified() => {
                        if conn.evictable_since().is_some() {
                            self.stats.evicted.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                    }
                    _ = stop.wait_for(|s| *s), if !stopping => {
                        if conn.idle_since().is_some() {
                            break;
                        }
                        connection.as_mut().graceful_shutdown();
                        stopping = true;
                    }
                }
            }
        }
        self.open.remove(conn.id);
        self.stats.open.fetch_sub(1, Ordering::Relaxed);
        self.room.notify_waiters();
    }
}

/// The most file descriptors this process may have open (its soft `RLIMIT_NOFILE`, as
/// `ulimit -n` shows it); `None` where it cannot be read (no `/proc`) or is unlimited.
pub fn descriptor_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    soft_open_files(&limits)
}

fn soft_open_files(limits: &str) -> Option<usize> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Whether accepting failed because this process (EMFILE) or the system (ENFILE) has no file
/// descriptor left.
fn out_of_descriptors(e: &std::io::Error) -> bool {
    const ENFILE: i32 = 23;
    const EMFILE: i32 = 24;
    matches!(e.raw_os_error(), Some(ENFILE | EMFILE))
}

/// The connections open now.
#[derive(Default)]
struct Open {
    by_id: Mutex<HashMap<u64, Arc<Conn>>>,
    next: AtomicU64,
}

impl Open {
    fn add(&self) -> Arc<Conn> {
        let conn = Arc::new(Conn {
            id: self.next.fetch_add(1, Ordering::Relaxed),
            in_flight: AtomicUsize::new(0),
            unanswered: AtomicUsize::new(0),
            since: AtomicU64::new(millis_now()),
            evict: Notify::new(),
        });
        lock(&self.by_id).insert(conn.id, conn.clone());
        conn
    }

    fn remove(&self, id: u64) {
        lock(&self.by_id).remove(&id);
    }

    fn len(&self) -> usize {
        lock(&self.by_id).len()
    }

    /// Tells up to `most` of the connections that may give way (idle, or sending a request
    /// body) to close, those in that state the longest first; returns how many.
    fn evict(&self, most: usize) -> usize {
        let mut evictable: Vec<(u64, Arc<Conn>)> = lock(&self.by_id)
            .values()
            .filter_map(|c| c.evictable_millis().map(|since| (since, c.clone())))
            .collect();
        evictable.sort_unstable_by_key(|(since, _)| *since);
        evictable.truncate(most);
        for (_, conn) in &evictable {
            conn.evict.notify_one();
        }
        evictable.len()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One connection's state, shared by its task, its requests' bodies and [`Open`].
struct Conn {
    id: u64,
    /// Requests whose response body is not done yet.
    in_flight: AtomicUsize,
    /// Requests that came with a body and are not answered yet.
    unanswered: AtomicUsize,
    /// When the last request began or ended (or the connection was accepted), in
    /// [`millis_now`].
    since: AtomicU64,
    /// Tells the connection's task to close it.
    evict: Notify,
}

impl Conn {
    fn idle_millis(&self) -> Option<u64> {
        (self.in_flight.load(Ordering::Acquire) == 0).then(|| self.since.load(Ordering::Acquire))
    }

    /// Since when the connection has been idle; `None` while a request is in progress.
    fn idle_since(&self) -> Option<Instant> {
        self.idle_millis()
            .map(|ms| epoch() + Duration::from_millis(ms))
    }

    /// Since when the connection may give way to a new one: idle, or with a request whose
    /// body is still coming and that is not answered yet (such a client holds no session).
    fn evictable_millis(&self) -> Option<u64> {
        self.idle_millis().or_else(|| {
            (self.unanswered.load(Ordering::Acquire) > 0)
                .then(|| self.since.load(Ordering::Acquire))
        })
    }

    fn evictable_since(&self) -> Option<Instant> {
        self.evictable_millis()
            .map(|ms| epoch() + Duration::from_millis(ms))
    }
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn millis_now() -> u64 {
    epoch().elapsed().as_millis() as u64
}

/// A request in progress on `conn`, until dropped with its response's body.
struct InFlight(Arc<Conn>);

impl InFlight {
    fn new(conn: Arc<Conn>) -> InFlight {
        conn.since.store(millis_now(), Ordering::Release);
        conn.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(conn)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.since.store(millis_now(), Ordering::Release);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A request that came with a body, until it is answered.
struct Unanswered(Arc<Conn>);

impl Unanswered {
    fn new(conn: Arc<Conn>) -> Unanswered {
        conn.unanswered.fetch_add(1, Ordering::AcqRel);
        Unanswered(conn)
    }
}

impl Drop for Unanswered {
    fn drop(&mut self) {
        self.0.unanswered.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Which connection a request came on, in the extensions of each request: its number, unique
/// among the connections this process accepted, and the peer's address (the SockJS server
/// bounds the sessions one connection and one address open).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Origin {
    /// The connection's number.
    pub connection: u64,
    /// The address the connection came from.
    pub address: SocketAddr,
}

/// The service of one connection: counts its requests in progress, and those with a body
/// not answered yet, and tells each request its [`Origin`].
struct Tracked<S> {
    inner: S,
    conn: Arc<Conn>,
    origin: Origin,
}

impl<S, B> Service<Request<Incoming>> for Tracked<S>
where
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response<Guarded<B>>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<Guarded<B>>, Infallible>>;

    fn call(&self, mut request: Request<Incoming>) -> Self::Future {
        request.extensions_mut().insert(self.origin);
        let guard = InFlight::new(self.conn.clone());
        let unanswered =
            (!request.body().is_end_stream()).then(|| Unanswered::new(self.conn.clone()));
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            drop(unanswered);
            Ok(response.map(|body| Guarded {
                body,
                _in_flight: guard,
            }))
        })
    }
}

/// A response body that keeps its request counted as in progress until it is done.
pub struct Guarded<B> {
    body: B,
    _in_flight: InFlight,
}

impl<B: Body + Unpin> Body for Guarded<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_is_idle_only_with_no_request_in_progress() {
        let open = Open::default();
        let (a, b) = (open.add(), open.add());
        let request = InFlight::new(a.clone());
        assert!(a.idle_since().is_none());
        assert!(b.idle_since().is_some());
        assert_eq!(open.evict(10), 1, "only b is idle");
        drop(request);
        assert!(a.idle_since().is_some());
        assert_eq!(open.evict(1), 1, "at most as many as asked");
        open.remove(a.id);
        open.remove(b.id);
        assert_eq!(open.len(), 0);
    }

    #[test]
    fn a_request_sending_its_body_may_give_way_until_it_is_answered() {
        let open = Open::default();
        let a = open.add();
        let request = InFlight::new(a.clone());
        let body = Unanswered::new(a.clone());
        assert!(a.idle_since().is_none(), "not idle: no idle timeout");
        assert!(a.evictable_since().is_some());
        assert_eq!(open.evict(10), 1);
        drop(body);
        assert!(a.evictable_since().is_none(), "answered: in progress");
        assert_eq!(open.evict(10), 0);
        drop(request);
        assert_eq!(open.evict(10), 1);
    }

    /// Waits, up to 5 s, for `check` to hold.
    async fn eventually(mut check: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !check() {
            assert!(Instant::now() < deadline, "not in time");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Whether the peer closed `s` within 5 s.
    async fn closed(s: &mut TcpStream) -> bool {
        use tokio::io::AsyncReadExt;
        let mut chunk = [0u8; 64];
        let eof = async {
            while let Ok(n) = s.read(&mut chunk).await {
                if n == 0 {
                    return;
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(5), eof)
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn past_the_most_connections_the_idle_give_way_then_new_ones_are_refused() {
        use tokio::io::AsyncWriteExt;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let stats = Arc::new(Stats::default());
        let long = Duration::from_secs(60);
        let timeouts = Timeouts {
            header: long,
            idle: long,
        };
        let connections = Connections::new(timeouts, Some(1), stats.clone());
        // Every request stays in progress.
        let service = hyper::service::service_fn(|_: Request<Incoming>| async {
            std::future::pending::<()>().await;
            Ok::<_, Infallible>(Response::new(String::new()))
        });
        let (_stop, stop) = watch::channel(false);
        tokio::spawn(connections.clone().serve(listener, service, stop));
        let mut idle = TcpStream::connect(address).await.unwrap();
        eventually(|| connections.len() == 1).await;
        let mut busy = TcpStream::connect(address).await.unwrap();
        assert!(closed(&mut idle).await, "the idle one gave way");
        busy.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        eventually(|| {
            lock(&connections.open.by_id)
                .values()
                .all(|c| c.in_flight.load(Ordering::Acquire) == 1)
        })
        .await;
        let mut third = TcpStream::connect(address).await.unwrap();
        assert!(closed(&mut third).await, "refused");
        assert_eq!(stats.evicted.load(Ordering::Relaxed), 1);
        assert_eq!(stats.refused.load(Ordering::Relaxed), 1);
        assert_eq!(connections.len(), 1, "the request in progress stays");
    }

    #[test]
    fn the_descriptor_limit_is_the_soft_one() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max processes             127540               127540               processes \n\
                      Max open files            256                  524288               files     \n";
        assert_eq!(soft_open_files(limits), Some(256));
        assert_eq!(
            soft_open_files(
                "Max open files            unlimited            unlimited            files"
            ),
            None
        );
        assert!(descriptor_limit().is_some_and(|n| n > 0));
    }

    #[test]
    fn out_of_descriptors_is_emfile_or_enfile() {
        assert!(out_of_descriptors(&std::io::Error::from_raw_os_error(24)));
        assert!(out_of_descriptors(&std::io::Error::from_raw_os_error(23)));
        assert!(!out_of_descriptors(&std::io::Error::from_raw_os_error(104)));
    }
}
