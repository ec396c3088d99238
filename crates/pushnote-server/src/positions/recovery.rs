//! Positions and recovery: every message's place in its topic, each topic's recent messages,
//! and what a session missed given back to it in order.
//!
//! One lock orders it all. The bus thread numbers, keeps and hands on each message while
//! holding it ([`Recovery::publish`]); a session's request that joins a topic, or asks what it
//! missed of one, holds it too ([`Recovery::join`]). So a message published before the request
//! is in the history the request reads, and one published after is handed on to the session
//! as it is to any other, never both and never neither. What the request sends (the missed
//! messages, then its reply) goes through the fan-out ([`Fanout::send_in_order`]), which puts
//! it after the broadcasts handed on before and before anything handed on after.
//!
//! Broadcasts are the one topic every session is in from the start: a session that asks what
//! it missed of them is given, from the history, every broadcast after its position up to the
//! reply, none of the broadcasts on their way to it are given again, and the page ignores the
//! bare broadcasts that came before the reply (docs/PROTOCOL.md §6).

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use pushnote_history::{History, Limits, Position, Weigh};
use sockjs::{Message, Session};

use crate::fanout::{Fanout, InOrder};
use crate::metrics::Metrics;
use crate::protocol::{Outcome, Why};

/// What a message in both its forms costs beyond their JSON text, by estimate: two shared
/// allocations, their frames once written, and their headers.
const KEPT_MESSAGE_OVERHEAD: usize = 2 * 96;

/// What a message's second form (with its position) adds to its first, at most: the kind,
/// the position and their keys.
const SECOND_FORM_EXTRA: usize = 96;

/// A kept message, in both forms (the second made when first taken).
pub struct Kept(Message);

impl Weigh for Kept {
    fn weight(&self) -> usize {
        // Each form's text, and its WebSocket frame once a session has written it alone, and
        // what makes the second form (a channel's data and names again, at most). The second
        // form is counted whether it was made yet or not, so the weight never changes.
        let first = self.0.queued_len();
        3 * first + 2 * (first + SECOND_FORM_EXTRA) + KEPT_MESSAGE_OVERHEAD
    }
}

/// Each topic's positions and recent messages, and the fan-out that delivers in their order.
pub struct Recovery {
    history: Mutex<History<Kept>>,
    fanout: Arc<Fanout>,
    metrics: Arc<Metrics>,
}

impl Recovery {
    pub fn new(limits: Limits, fanout: Arc<Fanout>, metrics: Arc<Metrics>) -> Recovery {
        Recovery {
            history: Mutex::new(History::new(limits, Instant::now())),
            fanout,
            metrics,
        }
    }

    fn lock(&self) -> MutexGuard<'_, History<Kept>> {
        // Every critical section leaves the history consistent, so a poisoned lock is safe.
        self.history.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Numbers the next message of `topic`, made by `make` from its position, keeps it, and
    /// hands it on with `deliver`, all under the lock.
    pub fn publish(
        &self,
        topic: &[u8],
        make: impl FnOnce(Position) -> Message,
        deliver: impl FnOnce(&Fanout, &Message),
    ) {
        let mut history = self.lock();
        let mut made = None;
        history.append(
            topic,
            |position| {
                let message = make(position);
                made = Some(message.clone());
                Kept(message)
            },
            Instant::now(),
        );
        if let Some(message) = made {
            deliver(&self.fanout, &message);
        }
        self.gauges(&history);
    }

    /// Runs `join` (which puts the session in `topic`, or refuses) under the lock; then gives
    /// the session, in order, the messages of `topic` after `since` (if given, and the
    /// history reaches back to it) and the reply `reply` makes of what `join` returned and the
    /// outcome.
    ///
    /// With `start` (a session's `positions` request), the session is in the broadcasts'
    /// topic already, and takes messages in their second form (with their positions) from
    /// here on: from the first of what this gives it, after the broadcasts on their way to it
    /// (or, where the history gives them, instead of them).
    pub fn join<T, E>(
        &self,
        session: &Session,
        topic: &[u8],
        since: Option<Position>,
        start: bool,
        join: impl FnOnce() -> Result<T, E>,
        reply: impl FnOnce(T, Outcome) -> Message,
    ) -> Result<(), E> {
        let mut history = self.lock();
        let joined = join()?;
        let now = Instant::now();
        let mut messages = Vec::new();
        let position = history.position(topic, now);
        let mut take = |missed: &mut dyn Iterator<Item = (Position, &Kept)>| {
            messages.extend(missed.map(|(_, kept)| kept.0.clone()));
        };
        let recovered = since.map(|since| {
            // Another epoch's page (a restart) is given what this run kept from its first
            // message on, and told what it may have lost.
            let (recovered, from) = history.resume(topic, since, now);
            if let Some(Ok(mut kept)) = from.map(|from| history.after(topic, from, now)) {
                take(&mut kept);
            }
            recovered.map_err(Why::from)
        });
        if let Some(Err(why)) = recovered {
            tracing::debug!(session = session.id(), ?why, "not recovered");
        }
        self.metrics
            .count_recovery(recovered, messages.len(), now.elapsed());
        messages.push(reply(
            joined,
            Outcome {
                position,
                recovered,
            },
        ));
        // Where the history gives broadcasts, those on their way are not given again; without
        // them, those on their way are the session's to have.
        self.fanout
            .send_in_order(session, messages, InOrder::of(start, recovered));
        self.gauges(&history);
        Ok(())
    }

    fn gauges(&self, history: &History<Kept>) {
        self.metrics.history.store(history);
    }
}
