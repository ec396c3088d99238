//! The server's connections: accepting them, serving HTTP/1.1 on each, and closing those that
//! carry nothing.
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
//! clients that want one out. HTTP/2 is not served: a client that opens with its preface gets
//! an error and the connection is closed, like any other malformed request.

use std::collections::HashMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
use warp::http::{Request, Response};
use warp::hyper::body::{Bytes, HttpBody, SizeHint};
use warp::hyper::server::conn::Http;
use warp::hyper::service::Service;
use warp::hyper::{Body, HeaderMap};

/// How long connections take to be served and when they count as idle.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// How long a client may take to send a request's headers.
    pub header: Duration,
    /// How long a connection may stay open with no request in progress.
    pub idle: Duration,
}

/// The most idle connections closed at once when descriptors run out.
const EVICT_AT_ONCE: usize = 64;
/// How often running out of descriptors is logged at most.
const EXHAUSTED_LOG_EVERY: Duration = Duration::from_secs(1);

/// Serves `service` on every connection `listener` accepts until `stop` turns true; then stops
/// accepting and closes each connection once its request in progress, if any, is done.
pub async fn serve<S>(
    listener: TcpListener,
    service: S,
    timeouts: Timeouts,
    mut stop: watch::Receiver<bool>,
) where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let open = Arc::new(Open::default());
    let mut http = Http::new();
    http.http1_only(true)
        .http1_header_read_timeout(timeouts.header);
    let http = Arc::new(http);
    let mut exhausted_logged: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|s| *s) => return,
        };
        let (stream, from) = match accepted {
            Ok(accepted) => accepted,
            Err(e) if out_of_descriptors(&e) => {
                let closed = open.evict_idle(EVICT_AT_ONCE);
                if exhausted_logged.is_none_or(|t| t.elapsed() >= EXHAUSTED_LOG_EVERY) {
                    exhausted_logged = Some(Instant::now());
                    tracing::warn!(
                        connections = open.len(),
                        closed_idle = closed,
                        "out of file descriptors: closing the connections idle the longest to \
                         make room; raise the limit (ulimit -n, LimitNOFILE) or lower \
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
        let _ = stream.set_nodelay(true);
        let conn = open.add();
        let tracked = Tracked {
            inner: service.clone(),
            conn: conn.clone(),
            peer: sockjs::Peer::new(conn.id, from.ip()),
        };
        tokio::spawn(serve_one(
            stream,
            tracked,
            http.clone(),
            conn,
            open.clone(),
            timeouts.idle,
            stop.clone(),
        ));
    }
}

/// Whether accepting failed because this process (EMFILE) or the system (ENFILE) has no file
/// descriptor left.
fn out_of_descriptors(e: &std::io::Error) -> bool {
    const ENFILE: i32 = 23;
    const EMFILE: i32 = 24;
    matches!(e.raw_os_error(), Some(ENFILE | EMFILE))
}

async fn serve_one<S>(
    stream: TcpStream,
    tracked: Tracked<S>,
    http: Arc<Http>,
    conn: Arc<Conn>,
    open: Arc<Open>,
    idle_timeout: Duration,
    mut stop: watch::Receiver<bool>,
) where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
{
    let connection = http.serve_connection(stream, tracked).with_upgrades();
    tokio::pin!(connection);
    let mut stopping = false;
    // An idle connection is dropped, which closes it: no request is in progress on it. One
    // with a request in progress is shut down gracefully at stop: closed once it is answered.
    loop {
        // While a request is in progress, look again one idle period later.
        let wake = conn.idle_since().unwrap_or_else(Instant::now) + idle_timeout;
        tokio::select! {
            result = &mut connection => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                break;
            }
            _ = tokio::time::sleep_until(wake.into()) => {
                if conn.idle_since().is_some_and(|t| t.elapsed() >= idle_timeout) {
                    break;
                }
            }
            _ = conn.evict.notified() => {
                if conn.idle_since().is_some() {
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
    open.remove(conn.id);
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
            idle_since: AtomicU64::new(millis_now()),
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

    /// Tells up to `most` of the connections idle the longest to close; returns how many.
    fn evict_idle(&self, most: usize) -> usize {
        let mut idle: Vec<(u64, Arc<Conn>)> = lock(&self.by_id)
            .values()
            .filter_map(|c| c.idle_millis().map(|since| (since, c.clone())))
            .collect();
        idle.sort_unstable_by_key(|(since, _)| *since);
        idle.truncate(most);
        for (_, conn) in &idle {
            conn.evict.notify_one();
        }
        idle.len()
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
    /// When the last request ended (or the connection was accepted), in [`millis_now`].
    idle_since: AtomicU64,
    /// Tells the connection's task to close it.
    evict: Notify,
}

impl Conn {
    fn idle_millis(&self) -> Option<u64> {
        (self.in_flight.load(Ordering::Acquire) == 0)
            .then(|| self.idle_since.load(Ordering::Acquire))
    }

    /// Since when the connection has been idle; `None` while a request is in progress.
    fn idle_since(&self) -> Option<Instant> {
        self.idle_millis()
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
        conn.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(conn)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.idle_since.store(millis_now(), Ordering::Release);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The service of one connection: counts its requests in progress, and tells each which
/// connection it came on (SockJS bounds the sessions per connection and per address).
struct Tracked<S> {
    inner: S,
    conn: Arc<Conn>,
    peer: sockjs::Peer,
}

impl<S> Service<Request<Body>> for Tracked<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response<Guarded>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<Guarded>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        request.extensions_mut().insert(self.peer);
        let guard = InFlight::new(self.conn.clone());
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            Ok(response.map(|body| Guarded {
                body,
                _in_flight: guard,
            }))
        })
    }
}

/// A response body that keeps its request counted as in progress until it is done.
pub struct Guarded {
    body: Body,
    _in_flight: InFlight,
}

impl HttpBody for Guarded {
    type Data = Bytes;
    type Error = warp::hyper::Error;

    fn poll_data(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        Pin::new(&mut self.body).poll_data(cx)
    }

    fn poll_trailers(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<HeaderMap>, Self::Error>> {
        Pin::new(&mut self.body).poll_trailers(cx)
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
        assert_eq!(open.evict_idle(10), 1, "only b is idle");
        drop(request);
        assert!(a.idle_since().is_some());
        assert_eq!(open.evict_idle(1), 1, "at most as many as asked");
        open.remove(a.id);
        open.remove(b.id);
        assert_eq!(open.len(), 0);
    }

    #[test]
    fn out_of_descriptors_is_emfile_or_enfile() {
        assert!(out_of_descriptors(&std::io::Error::from_raw_os_error(24)));
        assert!(out_of_descriptors(&std::io::Error::from_raw_os_error(23)));
        assert!(!out_of_descriptors(&std::io::Error::from_raw_os_error(104)));
    }
}
