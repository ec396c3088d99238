//! A session: the application's handle on one client, whatever the transport.
//!
//! The application sends through [`Session::send`], which never blocks and never waits on the
//! network: it puts a shared [`Message`] on the session's bounded queue and wakes the
//! session's writer. The writer (the transport) takes everything queued since its last write
//! and sends it as one frame, so a busy session makes few large writes. A queue that reaches
//! its limit means the client is not reading: the session is closed with
//! [`CloseCode::SLOW`](crate::CloseCode::SLOW) and the application is told, so one slow client
//! never holds memory or time that belongs to the others.
//!
//! A WebSocket session can also be written at once, from the sender's thread:
//! [`Session::send_now`] hands the message's shared frame to the socket when nothing is queued
//! and the writer is not writing, and queues it as `send` does when the socket does not take it
//! whole. That saves waking the writer for every message when messages are few; under a burst,
//! `send` lets the writer coalesce. Several messages for many sessions are framed once as a
//! [`Burst`], which [`Session::send_burst_now`] writes or queues the same way.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::net::TcpStream;
use tokio::sync::Notify;

use crate::{Burst, CloseCode, Form, Message};

/// How much a session may have queued before it counts as too slow and is closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueLimits {
    /// Messages waiting to be written.
    pub max_messages: usize,
    /// Encoded bytes waiting to be written.
    pub max_bytes: usize,
}

impl Default for QueueLimits {
    fn default() -> Self {
        QueueLimits {
            max_messages: 1_000,
            max_bytes: 8 * 1024 * 1024,
        }
    }
}

/// Why [`Session::send`] did not queue a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The session is closed or closing; nothing more is sent on it.
    #[error("session closed")]
    Closed,
    /// The queue was full: the session is now being closed as too slow.
    #[error("session queue full: closed as slow")]
    Full,
}

/// A handle on one SockJS session. Cloning is cheap; all clones refer to the same session.
#[derive(Clone)]
pub struct Session(Arc<Inner>);

struct Inner {
    id: u64,
    limits: QueueLimits,
    state: Mutex<State>,
    /// Wakes the writer: something was queued, or the session is closing.
    wake: Notify,
    /// Wakes everyone waiting in [`Session::closing`].
    closing_signal: Notify,
    /// Whether the session takes messages in their second form; changed under `state`'s lock,
    /// so that a send sees either the form before a change or the one after.
    second_form: AtomicBool,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Message>,
    queued_bytes: usize,
    closing: Option<CloseCode>,
    /// The transport is done: the close frame is written, or the client is gone.
    closed: bool,
    /// The application has been told the session closed.
    told: bool,
    /// The socket [`Session::send_now`] writes to, for WebSocket sessions.
    direct: Option<Arc<TcpStream>>,
    /// The writer is writing (between taking a batch or claiming the socket and releasing it):
    /// a direct write now would land in the middle of its frames.
    writing: bool,
    /// The rest of a frame the socket took only partly from a direct write: the writer sends
    /// it before anything else.
    unsent: Option<Vec<u8>>,
}

/// The frame that carries what [`Session::push`] is given, if one does.
enum Frame<'a> {
    None,
    /// One message's own frame, in the session's form.
    One(&'a Message),
    /// A burst's frame, if it is in the session's form.
    Burst(&'a Burst),
}

/// What a writer takes from the queue at once.
pub(crate) enum Batch {
    /// Messages to write, in order.
    Messages,
    /// The session is to be closed with this code, once what `Messages` returned is written.
    Close(CloseCode),
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl Session {
    /// A new open session with an empty queue. Transports make these; tests of applications
    /// can make them too and read what was sent with [`Session::drain`].
    pub fn new(limits: QueueLimits) -> Session {
        Session(Arc::new(Inner {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            limits,
            state: Mutex::new(State::default()),
            wake: Notify::new(),
            closing_signal: Notify::new(),
            second_form: AtomicBool::new(false),
        }))
    }

    /// A number unique to this session within the process, for the application's maps.
    pub fn id(&self) -> u64 {
        self.0.id
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock leaves the queue consistent (every critical section
        // is a few plain field updates), so a poisoned lock is still safe to use.
        self.0.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `message` for the client. Never blocks. When the queue is over its limits the
    /// session is closed with [`CloseCode::SLOW`] and the message is not queued.
    pub fn send(&self, message: Message) -> Result<(), SendError> {
        self.push(std::slice::from_ref(&message), Frame::None)
    }

    /// From now on, queues and writes every message in `form`: a message sent before this
    /// call is written as it was sent, and every one sent after it in `form`.
    pub fn set_form(&self, form: Form) {
        let _st = self.state();
        self.0
            .second_form
            .store(form == Form::Second, Ordering::Relaxed);
    }

    /// The form of messages this session takes.
    pub fn form(&self) -> Form {
        if self.0.second_form.load(Ordering::Relaxed) {
            Form::Second
        } else {
            Form::First
        }
    }

    /// Like [`Session::send`], but on a WebSocket session with nothing queued the message is
    /// written to the socket at once, on the caller's thread (one non-blocking system call),
    /// instead of waking the session's writer. Meant for senders with nothing else waiting:
    /// for a burst of messages, `send` lets the writer put them in fewer, larger frames.
    pub fn send_now(&self, message: Message) -> Result<(), SendError> {
        self.push(std::slice::from_ref(&message), Frame::One(&message))
    }

    /// Sends every message of `burst`, in order, as [`Session::send_now`] sends one: a WebSocket
    /// session with nothing queued is written the burst's shared frame at once; any other
    /// session queues the messages. The queue's limits count them all: a burst that does not
    /// fit closes the session as slow, and none of it is queued.
    pub fn send_burst_now(&self, burst: &Burst) -> Result<(), SendError> {
        match burst.messages() {
            [] => Ok(()),
            messages => self.push(messages, Frame::Burst(burst)),
        }
    }

    /// Queues `messages`, in order, as [`Session::send`] queues one; the limits count them all,
    /// as for [`Session::send_burst_now`].
    pub fn send_all(&self, messages: &[Message]) -> Result<(), SendError> {
        match messages {
            [] => Ok(()),
            messages => self.push(messages, Frame::None),
        }
    }

    /// Queues `messages` in the session's form, or writes `frame` (which carries them all)
    /// when it can be written now.
    fn push(&self, messages: &[Message], frame: Frame<'_>) -> Result<(), SendError> {
        let mut st = self.state();
        if st.closing.is_some() || st.closed {
            return Err(SendError::Closed);
        }
        let form = self.form();
        let frame = match frame {
            Frame::None => None,
            Frame::One(m) => Some(m.in_form(form).ws_frame()),
            Frame::Burst(b) => (b.form() == form).then(|| b.ws_frame()),
        };
        if let Some(frame) = frame {
            if st.queue.is_empty() && !st.writing && st.unsent.is_none() {
                if let Some(stream) = &st.direct {
                    match stream.try_write(frame) {
                        Ok(n) if n == frame.len() => return Ok(()),
                        Ok(n) if n > 0 => {
                            st.unsent = Some(frame[n..].to_vec());
                            drop(st);
                            self.0.wake.notify_one();
                            return Ok(());
                        }
                        // The socket is full (or failed): the writer takes them from the queue,
                        // and finds out.
                        _ => {}
                    }
                }
            }
        }
        let len: usize = messages.iter().map(|m| m.in_form(form).queued_len()).sum();
        if st.queue.len() + messages.len() > self.0.limits.max_messages
            || st.queued_bytes + len > self.0.limits.max_bytes
        {
            st.queue.clear();
            st.queued_bytes = 0;
            st.closing = Some(CloseCode::SLOW);
            drop(st);
            self.signal_closing();
            return Err(SendError::Full);
        }
        let was_empty = st.queue.is_empty();
        st.queued_bytes += len;
        st.queue
            .extend(messages.iter().map(|m| m.in_form(form).clone()));
        drop(st);
        if was_empty {
            self.0.wake.notify_one();
        }
        Ok(())
    }

    /// Closes the session with `code`: what is already queued is still written, then the close
    /// frame. Later sends fail. Closing twice keeps the first code.
    pub fn close(&self, code: CloseCode) {
        let mut st = self.state();
        if st.closing.is_none() && !st.closed {
            st.closing = Some(code);
            drop(st);
            self.signal_closing();
        }
    }

    fn signal_closing(&self) {
        self.0.wake.notify_one();
        self.0.closing_signal.notify_waiters();
    }

    /// The code the session is closing or closed with, if it was closed with one.
    pub fn close_code(&self) -> Option<CloseCode> {
        self.state().closing
    }

    /// Whether the session is closed or closing.
    pub fn is_closed(&self) -> bool {
        let st = self.state();
        st.closed || st.closing.is_some()
    }

    /// Takes what is queued without waiting, and the close code if the session is closing.
    /// For tests of applications that use sessions without a transport.
    pub fn drain(&self) -> (Vec<Message>, Option<CloseCode>) {
        let mut out = Vec::new();
        let close = match self.take(&mut out) {
            Some(Batch::Close(code)) => Some(code),
            _ => None,
        };
        (out, close)
    }

    fn take(&self, out: &mut Vec<Message>) -> Option<Batch> {
        let mut st = self.state();
        if !st.queue.is_empty() || st.unsent.is_some() {
            out.extend(st.queue.drain(..));
            st.queued_bytes = 0;
            st.writing = st.direct.is_some();
            return Some(Batch::Messages);
        }
        st.closing.map(Batch::Close)
    }

    /// Lets [`Session::send_now`] write to `stream` directly. The caller is the session's writer,
    /// which must then write only between [`Session::claim`] (or a batch) and
    /// [`Session::release`], and a batch may be empty when only unsent bytes are left.
    pub(crate) fn write_directly(&self, stream: Arc<TcpStream>) {
        self.state().direct = Some(stream);
    }

    /// Stops direct writes until [`Session::release`], and returns what the last direct write
    /// left unsent, which goes out first. A batch from [`Session::next_batch`] has claimed
    /// already; claiming again is harmless.
    pub(crate) fn claim(&self) -> Option<Vec<u8>> {
        let mut st = self.state();
        st.writing = st.direct.is_some();
        st.unsent.take()
    }

    /// The writer is done writing: direct writes may go on.
    pub(crate) fn release(&self) {
        self.state().writing = false;
    }

    /// Waits until there is something to write: queued messages (appended to `out`) or a close.
    pub(crate) async fn next_batch(&self, out: &mut Vec<Message>) -> Batch {
        loop {
            if let Some(batch) = self.take(out) {
                return batch;
            }
            self.0.wake.notified().await;
        }
    }

    /// Completes when the session is closing or closed.
    pub(crate) async fn closing(&self) {
        loop {
            let signal = self.0.closing_signal.notified();
            tokio::pin!(signal);
            signal.as_mut().enable();
            if self.is_closed() {
                return;
            }
            signal.await;
        }
    }

    /// Whether the transport is done with the session for good.
    pub(crate) fn is_finished(&self) -> bool {
        self.state().closed
    }

    /// Marks the session closed for good (the transport is gone). Returns true when the
    /// application has yet to be told, so it is told exactly once.
    pub(crate) fn mark_closed(&self) -> bool {
        let mut st = self.state();
        st.closed = true;
        st.queue.clear();
        st.queued_bytes = 0;
        st.direct = None;
        st.unsent = None;
        !std::mem::replace(&mut st.told, true)
    }

    /// Records that the application is being told the session closed, while the transport
    /// may still write what is queued. True the first time.
    pub(crate) fn tell_app(&self) -> bool {
        !std::mem::replace(&mut self.state().told, true)
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("id", &self.0.id).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> QueueLimits {
        QueueLimits {
            max_messages: 3,
            max_bytes: 100,
        }
    }

    #[test]
    fn queued_messages_come_out_in_order() {
        let s = Session::new(small());
        s.send(Message::text("a")).unwrap();
        s.send(Message::text("b")).unwrap();
        let (msgs, close) = s.drain();
        let texts: Vec<_> = msgs.iter().map(|m| m.as_raw().to_owned()).collect();
        assert_eq!(texts, ["a", "b"]);
        assert_eq!(close, None);
    }

    #[test]
    fn a_session_takes_each_message_in_its_form_from_the_moment_it_asks() {
        let s = Session::new(QueueLimits::default());
        let two = |i: u32| {
            Message::text(&format!("{i}")).with_second_form(Message::text(&format!("{i}+")))
        };
        s.send(two(1)).unwrap();
        s.set_form(Form::Second);
        s.send(two(2)).unwrap();
        s.send_all(&[two(3), Message::text("one form")]).unwrap();
        // A burst framed in the other form is queued message by message, in this one.
        s.send_burst_now(&Burst::new(vec![two(4)])).unwrap();
        s.send_burst_now(&Burst::in_form(vec![two(5)], Form::Second))
            .unwrap();
        let (msgs, _) = s.drain();
        let texts: Vec<_> = msgs.iter().map(|m| m.as_raw().to_owned()).collect();
        assert_eq!(texts, ["1", "2+", "3+", "one form", "4+", "5+"]);
        let m = two(6);
        assert_eq!(m.in_form(Form::First).as_raw(), "6");
        assert_eq!(m.in_form(Form::Second).as_raw(), "6+");
        assert_eq!(m.in_form(Form::Second).in_form(Form::Second).as_raw(), "6+");
    }

    #[test]
    fn a_full_queue_closes_the_session_as_slow() {
        let s = Session::new(small());
        for _ in 0..3 {
            s.send(Message::text("x")).unwrap();
        }
        assert_eq!(s.send(Message::text("x")), Err(SendError::Full));
        assert_eq!(s.send(Message::text("x")), Err(SendError::Closed));
        let (msgs, close) = s.drain();
        assert!(msgs.is_empty());
        assert_eq!(close, Some(CloseCode::SLOW));
    }

    #[test]
    fn the_byte_limit_counts_encoded_bytes() {
        let s = Session::new(small());
        let big = Message::text(&"x".repeat(60));
        s.send(big.clone()).unwrap();
        assert_eq!(s.send(big), Err(SendError::Full));
    }

    #[test]
    fn close_keeps_what_was_queued_and_the_first_code() {
        let s = Session::new(small());
        s.send(Message::text("last")).unwrap();
        s.close(CloseCode::GOING_AWAY);
        s.close(CloseCode::SLOW);
        assert!(s.is_closed());
        let (msgs, close) = s.drain();
        assert_eq!(msgs.len(), 1);
        assert_eq!(close, None, "the messages come first");
        assert_eq!(s.drain().1, Some(CloseCode::GOING_AWAY));
    }

    #[test]
    fn a_burst_is_queued_whole_or_closes_the_session_as_slow() {
        let s = Session::new(small());
        let burst = Burst::new(vec![Message::text("a"), Message::text("b")]);
        s.send_burst_now(&burst).unwrap();
        let texts: Vec<_> = s.drain().0.iter().map(|m| m.as_raw().to_owned()).collect();
        assert_eq!(texts, ["a", "b"]);
        s.send(Message::text("c")).unwrap();
        s.send(Message::text("d")).unwrap();
        assert_eq!(s.send_burst_now(&burst), Err(SendError::Full));
        let (msgs, close) = s.drain();
        assert!(msgs.is_empty());
        assert_eq!(close, Some(CloseCode::SLOW));
    }

    #[tokio::test]
    async fn next_batch_wakes_on_send_from_another_thread() {
        let s = Session::new(QueueLimits::default());
        let s2 = s.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(20));
            s2.send(Message::text("late")).unwrap();
        });
        let mut out = Vec::new();
        let batch = tokio::time::timeout(std::time::Duration::from_secs(5), s.next_batch(&mut out))
            .await
            .expect("woken");
        assert!(matches!(batch, Batch::Messages));
        assert_eq!(out[0].as_raw(), "late");
        t.join().unwrap();
    }
}
