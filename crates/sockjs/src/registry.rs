//! The sessions of the HTTP transports.
//!
//! An HTTP session outlives the requests that carry it: a client receives on one request at
//! a time (a poll, or a streaming response that ends at the response limit) and sends on
//! others. The registry keys sessions by the id in the URL and enforces the protocol's rules:
//! - one receiving request at a time; a second one is told
//!   [`CloseCode::ANOTHER_CONNECTION`] and the first is left alone;
//! - a session without a receiving request for the disconnect delay is closed and forgotten,
//!   so clients that vanish are reaped;
//! - a closed session answers every later request with its close frame until it is
//!   forgotten, so the client learns why;
//! - a new session is admitted only within its client's bounds (`admission.rs`): the
//!   sessions its connection holds here, and its address's rate.
//!
//! WebSocket sessions live exactly as long as their connection and are not kept here.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Instant;

use tokio::task::AbortHandle;
use tokio::time::sleep;

use crate::admission::{Admission, Client};
use crate::{CloseCode, Handler, Options, Session};

/// One SockJS service: its options, its application and its HTTP sessions.
pub(crate) struct Service<H> {
    pub(crate) options: Options,
    pub(crate) handler: Arc<H>,
    sessions: Mutex<HashMap<String, Entry>>,
    /// Taken after `sessions` when both are held.
    admission: Mutex<Admission>,
}

struct Entry {
    session: Session,
    /// A request is receiving on this session now.
    receiving: bool,
    /// Counts attaches, so a stale detach or expiry is recognised.
    generation: u64,
    /// The task that will close the session after the disconnect delay.
    expiry: Option<AbortHandle>,
    /// The connection that opened it, counted against until it is forgotten.
    connection: Option<u64>,
}

/// What a receiving request gets.
pub(crate) enum Attach {
    /// A new session: send the open frame first.
    Opened(Session, Ticket),
    /// An existing session, now receiving on this request.
    Resumed(Session, Ticket),
    /// Another request is receiving on this session.
    Busy,
    /// The session is closed: send its close frame and nothing else.
    Closed(CloseCode),
    /// A new session the client may not open now: send this close frame and nothing else.
    Refused(CloseCode),
}

/// Proof that a request is the session's receiver; given back in [`Service::detach`].
pub(crate) struct Ticket {
    key: String,
    generation: u64,
}

/// What a sending request finds.
pub(crate) enum Lookup {
    Open(Session),
    /// No such session, or it is closed.
    Missing,
}

impl<H: Handler> Service<H> {
    pub(crate) fn new(options: Options, handler: Arc<H>) -> Arc<Service<H>> {
        Arc::new(Service {
            options,
            handler,
            sessions: Mutex::new(HashMap::new()),
            admission: Mutex::new(Admission::default()),
        })
    }

    fn admission(&self) -> MutexGuard<'_, Admission> {
        self.admission.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits a new WebSocket session of `client`, or says why not (the application is told).
    pub(crate) fn admit_websocket(&self, client: &Client) -> Result<(), CloseCode> {
        let admitted = self
            .admission()
            .admit(client, &self.options, false, Instant::now());
        admitted.map_err(|why| {
            self.handler.on_refused(why);
            CloseCode::TOO_MANY_SESSIONS
        })
    }

    fn sessions(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        // Every critical section is a few map and field updates: a poisoned lock is consistent.
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The number of HTTP sessions held, open or closed but not yet forgotten.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.sessions().len()
    }

    /// How many sessions the map has room for without growing.
    #[cfg(test)]
    fn room(&self) -> usize {
        self.sessions().capacity()
    }

    /// Makes the calling request the receiver of session `key`, opening it if it is new and
    /// `client` may open one.
    pub(crate) fn attach(&self, key: &str, client: &Client) -> Attach {
        let mut sessions = self.sessions();
        let opened = match sessions.get_mut(key) {
            Some(entry) => {
                if entry.session.is_finished() {
                    let code = entry.session.close_code().unwrap_or(CloseCode::INTERRUPTED);
                    return Attach::Closed(code);
                }
                if entry.receiving {
                    return Attach::Busy;
                }
                entry.receiving = true;
                entry.generation += 1;
                if let Some(expiry) = entry.expiry.take() {
                    expiry.abort();
                }
                let ticket = Ticket {
                    key: key.to_owned(),
                    generation: entry.generation,
                };
                return Attach::Resumed(entry.session.clone(), ticket);
            }
            None => {
                let admitted = self
                    .admission()
                    .admit(client, &self.options, true, Instant::now());
                if let Err(why) = admitted {
                    drop(sessions);
                    self.handler.on_refused(why);
                    return Attach::Refused(CloseCode::TOO_MANY_SESSIONS);
                }
                let session = Session::new(self.options.queue);
                sessions.insert(
                    key.to_owned(),
                    Entry {
                        session: session.clone(),
                        receiving: true,
                        generation: 0,
                        expiry: None,
                        connection: client.connection,
                    },
                );
                session
            }
        };
        drop(sessions);
        self.handler.on_open(&opened);
        let ticket = Ticket {
            key: key.to_owned(),
            generation: 0,
        };
        Attach::Opened(opened, ticket)
    }

    /// The receiving request is over. `interrupted` means the client went away in the middle
    /// of it: the session is closed with [`CloseCode::INTERRUPTED`]. The disconnect delay
    /// starts either way.
    pub(crate) fn detach(self: &Arc<Self>, ticket: Ticket, interrupted: bool) {
        let mut sessions = self.sessions();
        let Some(entry) = sessions.get_mut(&ticket.key) else {
            return;
        };
        if entry.generation != ticket.generation {
            return;
        }
        entry.receiving = false;
        let session = entry.session.clone();
        if interrupted {
            session.close(CloseCode::INTERRUPTED);
        }
        let weak = Arc::downgrade(self);
        let task = tokio::spawn(expire_later(weak, ticket, session));
        entry.expiry = Some(task.abort_handle());
    }

    /// The open session `key`, for a sending request.
    pub(crate) fn lookup(&self, key: &str) -> Lookup {
        match self.sessions().get(key) {
            Some(entry) if !entry.session.is_closed() => Lookup::Open(entry.session.clone()),
            _ => Lookup::Missing,
        }
    }

    /// Closes and forgets the session if it is still without a receiver since `ticket`.
    fn expire(&self, ticket: &Ticket) {
        let mut sessions = self.sessions();
        let stale = match sessions.get(&ticket.key) {
            Some(entry) => entry.generation != ticket.generation || entry.receiving,
            None => true,
        };
        if stale {
            return;
        }
        let Some(entry) = sessions.remove(&ticket.key) else {
            return;
        };
        release_spare_room(&mut sessions);
        if let Some(connection) = entry.connection {
            self.admission().release(connection);
        }
        drop(sessions);
        if entry.session.mark_closed() {
            self.handler.on_close(&entry.session);
        }
    }
}

/// Below this much room for sessions the map is left as it is: too little to be worth giving
/// back.
const MIN_ROOM: usize = 1024;

/// Gives back most of the map's room once it holds under a quarter of what it has room for.
/// A map never shrinks by itself, so a burst of sessions (a reconnect storm, a client opening
/// sessions in a loop) would otherwise hold its peak for the life of the process: about 7 MB
/// after 100,000 sessions. Shrinking to twice what is left rehashes each remaining session
/// once per halving of their number, so it costs each removal a constant on average.
fn release_spare_room(sessions: &mut HashMap<String, Entry>) {
    if sessions.capacity() > MIN_ROOM && sessions.len() < sessions.capacity() / 4 {
        sessions.shrink_to(sessions.len() * 2);
    }
}

/// Waits out the disconnect delay of a session without a receiver, telling the application at
/// once if the session is closed meanwhile (what is queued waits for the client's next
/// request), then forgets it. Aborted when a request receives on the session again.
async fn expire_later<H: Handler>(service: Weak<Service<H>>, ticket: Ticket, session: Session) {
    let Some(delay) = service.upgrade().map(|s| s.options.disconnect_delay) else {
        return;
    };
    let expired = sleep(delay);
    tokio::pin!(expired);
    let mut told = false;
    loop {
        tokio::select! {
            () = &mut expired => break,
            () = session.closing(), if !told => {
                told = true;
                if session.tell_app() {
                    if let Some(service) = service.upgrade() {
                        service.handler.on_close(&session);
                    }
                }
            }
        }
    }
    if let Some(service) = service.upgrade() {
        service.expire(&ticket);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// A client without a known connection or address: no bound applies.
    const ANYONE: Client = Client {
        connection: None,
        address: None,
    };

    #[derive(Default)]
    struct Counting {
        opened: AtomicUsize,
        closed: AtomicUsize,
        refused: AtomicUsize,
    }

    impl Handler for Counting {
        fn on_open(&self, _: &Session) {
            self.opened.fetch_add(1, Ordering::SeqCst);
        }
        fn on_message(&self, _: &Session, _: String) {}
        fn on_close(&self, _: &Session) {
            self.closed.fetch_add(1, Ordering::SeqCst);
        }
        fn on_refused(&self, _: crate::Refused) {
            self.refused.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn service() -> (Arc<Service<Counting>>, Arc<Counting>) {
        let handler = Arc::new(Counting::default());
        let options = Options {
            disconnect_delay: Duration::from_secs(5),
            ..Options::default()
        };
        (Service::new(options, handler.clone()), handler)
    }

    fn ticket(a: Attach) -> (Session, Ticket) {
        match a {
            Attach::Opened(s, t) | Attach::Resumed(s, t) => (s, t),
            Attach::Busy => panic!("busy"),
            Attach::Closed(c) => panic!("closed {c:?}"),
            Attach::Refused(c) => panic!("refused {c:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn one_receiver_at_a_time() {
        let (svc, handler) = service();
        let (_, t) = ticket(svc.attach("s", &ANYONE));
        assert!(matches!(svc.attach("s", &ANYONE), Attach::Busy));
        svc.detach(t, false);
        assert!(matches!(svc.attach("s", &ANYONE), Attach::Resumed(..)));
        assert_eq!(handler.opened.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_session_without_receiver_expires_after_the_disconnect_delay() {
        let (svc, handler) = service();
        let (_, t) = ticket(svc.attach("s", &ANYONE));
        svc.detach(t, false);
        sleep(Duration::from_millis(4900)).await;
        let (_, t) = ticket(svc.attach("s", &ANYONE));
        svc.detach(t, false);
        sleep(Duration::from_millis(4900)).await;
        assert_eq!(svc.len(), 1, "each receiver restarts the delay");
        assert!(matches!(svc.lookup("s"), Lookup::Open(_)));
        sleep(Duration::from_millis(200)).await;
        assert_eq!(svc.len(), 0);
        assert_eq!(handler.closed.load(Ordering::SeqCst), 1);
        assert!(matches!(svc.lookup("s"), Lookup::Missing));
    }

    #[tokio::test(start_paused = true)]
    async fn closing_a_detached_session_tells_the_app_at_once_and_keeps_the_close_frame() {
        let (svc, handler) = service();
        let (session, t) = ticket(svc.attach("s", &ANYONE));
        svc.detach(t, false);
        session.close(CloseCode::GOING_AWAY);
        sleep(Duration::from_millis(10)).await;
        assert_eq!(handler.closed.load(Ordering::SeqCst), 1);
        // The next request still gets the close frame from the queue, then it is finished.
        let (s, t) = ticket(svc.attach("s", &ANYONE));
        assert_eq!(s.drain().1, Some(CloseCode::GOING_AWAY));
        assert!(!s.mark_closed(), "the app was told already");
        svc.detach(t, false);
        assert!(matches!(
            svc.attach("s", &ANYONE),
            Attach::Closed(CloseCode::GOING_AWAY)
        ));
        sleep(Duration::from_secs(6)).await;
        assert_eq!(svc.len(), 0);
        assert_eq!(handler.closed.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_room_of_a_burst_of_sessions_is_given_back_once_they_are_reaped() {
        let (svc, _) = service();
        for i in 0..10_000 {
            let (_, t) = ticket(svc.attach(&i.to_string(), &ANYONE));
            svc.detach(t, false);
        }
        assert!(svc.room() >= 10_000);
        let (_, t) = ticket(svc.attach("stays", &ANYONE));
        sleep(Duration::from_secs(6)).await;
        assert_eq!(svc.len(), 1);
        assert!(
            svc.room() <= MIN_ROOM,
            "room for {} sessions left",
            svc.room()
        );
        svc.detach(t, false);
    }

    #[tokio::test(start_paused = true)]
    async fn one_connection_holds_at_most_its_bound_of_sessions_until_they_are_forgotten() {
        let handler = Arc::new(Counting::default());
        let options = Options {
            max_sessions_per_connection: 3,
            sessions_per_address: None,
            ..Options::default()
        };
        let svc = Service::new(options, handler.clone());
        let pipelining = Client {
            connection: Some(1),
            address: Some("192.0.2.1".parse().unwrap()),
        };
        let other = Client {
            connection: Some(2),
            ..pipelining
        };
        for i in 0..100 {
            match svc.attach(&i.to_string(), &pipelining) {
                Attach::Opened(_, t) => svc.detach(t, false),
                Attach::Refused(code) => assert_eq!(code, CloseCode::TOO_MANY_SESSIONS),
                _ => panic!("a new id"),
            }
        }
        assert_eq!(handler.opened.load(Ordering::SeqCst), 3);
        assert_eq!(handler.refused.load(Ordering::SeqCst), 97);
        assert_eq!(svc.len(), 3, "a refused session is never held");
        // Its own sessions still resume; another connection still opens.
        assert!(matches!(svc.attach("0", &pipelining), Attach::Resumed(..)));
        let (_, t) = ticket(svc.attach("new", &other));
        svc.detach(t, false);
        // Once its sessions are forgotten, the connection may open again.
        sleep(Duration::from_secs(6)).await;
        assert_eq!(svc.len(), 1, "\"0\" is still received on");
        let (_, t) = ticket(svc.attach("again", &pipelining));
        svc.detach(t, false);
        assert_eq!(svc.admission().connections(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_websocket_counts_against_its_address_only() {
        let handler = Arc::new(Counting::default());
        let options = Options {
            max_sessions_per_connection: 1,
            sessions_per_address: Some(crate::Rate {
                per_second: 1,
                burst: 2,
            }),
            ..Options::default()
        };
        let svc = Service::new(options, handler.clone());
        let client = Client {
            connection: Some(1),
            address: Some("192.0.2.1".parse().unwrap()),
        };
        assert_eq!(svc.admit_websocket(&client), Ok(()));
        assert_eq!(svc.admit_websocket(&client), Ok(()));
        assert_eq!(
            svc.admit_websocket(&client),
            Err(CloseCode::TOO_MANY_SESSIONS)
        );
        assert!(matches!(
            svc.attach("s", &client),
            Attach::Refused(CloseCode::TOO_MANY_SESSIONS)
        ));
        assert_eq!(handler.refused.load(Ordering::SeqCst), 2);
        assert_eq!(handler.opened.load(Ordering::SeqCst), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn an_interrupted_receiver_closes_the_session() {
        let (svc, handler) = service();
        let (_, t) = ticket(svc.attach("s", &ANYONE));
        svc.detach(t, true);
        sleep(Duration::from_millis(10)).await;
        assert_eq!(handler.closed.load(Ordering::SeqCst), 1);
        assert!(matches!(svc.lookup("s"), Lookup::Missing));
    }
}
