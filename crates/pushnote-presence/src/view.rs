//! Every presence channel's members as one server (or the forwarder) knows them: for each
//! member, the servers that hold it and the info each gives. Each server's messages are applied
//! in the order of their numbers; a server whose numbers skip is asked for its whole state and
//! its changes ignored until it comes; a server not heard from for the timeout is forgotten.
//!
//! Every server applies the same messages, so every server's view converges to the same
//! members; a member's info is the one of the server with the lowest id that holds it, so they
//! agree on that too.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::message::{Message, ServerId, FORWARDER};
use crate::pending::{Changes, Pending};
use crate::Info;

/// How often a server that is behind is asked again at most.
const ASK_EVERY: Duration = Duration::from_secs(1);

/// What the view asks of its owner after a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Ask this server for its whole state (a [`Message::Query`] to it).
    Ask(ServerId),
    /// Send this server's whole state: someone asked.
    Dump,
}

#[derive(Debug)]
struct Peer {
    /// The last number applied.
    last: u64,
    /// Whether its messages are applied: false from a skip until its reset.
    synced: bool,
    heard: Instant,
    asked: Option<Instant>,
    /// After a reset: what it held before, until its state has come (the heartbeat after
    /// it), so that a member it still holds never leaves meanwhile.
    stale: Vec<(Arc<str>, Arc<str>)>,
}

type Holders = Vec<(ServerId, Info)>;

/// The members of every presence channel, across servers.
#[derive(Debug)]
pub struct View {
    me: ServerId,
    peers: HashMap<ServerId, Peer>,
    channels: HashMap<Arc<str>, HashMap<Arc<str>, Holders>>,
    /// Holders kept, of every channel and server.
    known: usize,
    max_known: usize,
    dropped: u64,
    /// Changes for pages, where the owner has pages.
    pending: Option<Pending>,
}

impl View {
    /// The view of server `me` (the forwarder's: [`FORWARDER`]), keeping at most `max_known`
    /// holders of other servers; `pages` keeps the changes for pages ([`View::take_changes`]).
    pub fn new(me: ServerId, max_known: usize, pages: bool) -> View {
        View {
            me,
            peers: HashMap::new(),
            channels: HashMap::new(),
            known: 0,
            max_known,
            dropped: 0,
            pending: pages.then(Pending::default),
        }
    }

    /// The member `user` of `channel`: its info, if it is one.
    pub fn info(&self, channel: &str, user: &str) -> Option<Info> {
        let holders = self.channels.get(channel)?.get(user)?;
        holders.first().map(|(_, info)| info.clone())
    }

    /// How many members `channel` has.
    pub fn count(&self, channel: &str) -> usize {
        self.channels.get(channel).map_or(0, HashMap::len)
    }

    /// `channel`'s members (user, info), by user id.
    pub fn members(&self, channel: &str) -> Vec<(Arc<str>, Info)> {
        let mut members = self.snapshot(channel);
        members.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        members
    }

    /// `channel`'s members (user, info), in no order: a copy of what they share, quick to
    /// take under a lock and to put in order or encode after it.
    pub fn snapshot(&self, channel: &str) -> Vec<(Arc<str>, Info)> {
        let Some(users) = self.channels.get(channel) else {
            return Vec::new();
        };
        users
            .iter()
            .filter_map(|(user, h)| h.first().map(|(_, info)| (user.clone(), info.clone())))
            .collect()
    }

    /// Holders kept, of every channel and server.
    pub fn known(&self) -> usize {
        self.known
    }

    /// Channels with members.
    pub fn channels(&self) -> usize {
        self.channels.len()
    }

    /// Other servers known.
    pub fn servers(&self) -> usize {
        self.peers.len()
    }

    /// Holders other servers announced past `max_known`, not kept.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Sets what `server` holds of `user` in `channel`: its info, or `None` for nothing.
    pub fn set(&mut self, server: ServerId, channel: &str, user: &str, info: Option<Info>) {
        let before = self.info(channel, user);
        let changed = match info {
            Some(info) => self.hold(server, channel, user, info),
            None => self.release(server, channel, user),
        };
        if !changed {
            return;
        }
        if let Some(pending) = &mut self.pending {
            let after = self
                .channels
                .get(channel)
                .and_then(|users| users.get(user))
                .and_then(|h| h.first())
                .map(|(_, info)| info);
            if after != before.as_ref() {
                pending.note(&Arc::from(channel), &Arc::from(user), before.as_ref());
            }
        }
    }

    /// Whether another holder may be kept: this server's always, others' up to the bound.
    fn room(&mut self, server: ServerId) -> bool {
        if server != self.me && self.known >= self.max_known {
            self.dropped += 1;
            return false;
        }
        true
    }

    fn hold(&mut self, server: ServerId, channel: &str, user: &str, info: Info) -> bool {
        if let Some(Ok(i)) = self
            .channels
            .get(channel)
            .and_then(|users| users.get(user))
            .map(|h| h.binary_search_by_key(&server, |h| h.0))
        {
            let holders = self.channels.get_mut(channel).and_then(|u| u.get_mut(user));
            let holder = &mut holders.expect("found above")[i];
            let changed = holder.1 != info;
            holder.1 = info;
            return changed;
        }
        if !self.room(server) {
            return false;
        }
        if !self.channels.contains_key(channel) {
            self.channels.insert(Arc::from(channel), HashMap::new());
        }
        let users = self.channels.get_mut(channel).expect("inserted above");
        match users.get_mut(user) {
            Some(holders) => {
                let i = holders.partition_point(|h| h.0 < server);
                holders.insert(i, (server, info));
            }
            None => {
                users.insert(Arc::from(user), vec![(server, info)]);
            }
        }
        self.known += 1;
        true
    }

    fn release(&mut self, server: ServerId, channel: &str, user: &str) -> bool {
        let Some(users) = self.channels.get_mut(channel) else {
            return false;
        };
        let Some(holders) = users.get_mut(user) else {
            return false;
        };
        let Ok(i) = holders.binary_search_by_key(&server, |h| h.0) else {
            return false;
        };
        holders.remove(i);
        self.known -= 1;
        if holders.is_empty() {
            users.remove(user);
            if users.is_empty() {
                self.channels.remove(channel);
            }
        }
        true
    }

    /// Every member `server` holds: channel, user.
    fn held_by(&self, server: ServerId) -> Vec<(Arc<str>, Arc<str>)> {
        self.channels
            .iter()
            .flat_map(|(channel, users)| {
                users
                    .iter()
                    .filter(|(_, h)| h.iter().any(|(s, _)| *s == server))
                    .map(|(user, _)| (channel.clone(), user.clone()))
            })
            .collect()
    }

    /// Forgets everything `server` holds.
    fn forget(&mut self, server: ServerId) {
        for (channel, user) in self.held_by(server) {
            self.set(server, &channel, &user, None);
        }
    }

    /// Counts every server as heard from at `now`: this one's connection to them came back,
    /// and they are given the timeout again to be heard.
    pub fn heard_all(&mut self, now: Instant) {
        for peer in self.peers.values_mut() {
            peer.heard = now;
        }
    }

    /// Applies `message`, received at `now`; what to do next, if anything.
    pub fn receive(&mut self, message: Message, now: Instant) -> Option<Action> {
        let server = message.server();
        if server == self.me {
            return None;
        }
        if let Message::Query { to, .. } = &message {
            let for_me = match to {
                None => true,
                Some(to) => *to == self.me,
            };
            if for_me && self.me != FORWARDER {
                // Answered whatever else the query's number says.
                let dump = Some(Action::Dump);
                if server == FORWARDER {
                    return dump;
                }
                let ask = self.follow(server, &message, now);
                return ask.or(dump);
            }
        }
        if server == FORWARDER {
            return None;
        }
        self.follow(server, &message, now)
    }

    /// Tracks `server`'s numbers and applies its `message` in order.
    fn follow(&mut self, server: ServerId, message: &Message, now: Instant) -> Option<Action> {
        let held = matches!(message, Message::Reset { .. }).then(|| self.held_by(server));
        let peer = self.peers.entry(server).or_insert(Peer {
            last: 0,
            synced: false,
            heard: now,
            asked: None,
            stale: Vec::new(),
        });
        peer.heard = now;
        let n = match message {
            Message::Reset { n, .. } => {
                peer.last = *n;
                peer.synced = true;
                peer.asked = None;
                peer.stale = held.unwrap_or_default();
                return None;
            }
            Message::Heartbeat { n, .. } => *n,
            Message::Members { n, .. } | Message::Query { n, .. } => {
                if peer.synced && *n <= peer.last {
                    return None; // already had it
                }
                *n
            }
        };
        let in_order = match message {
            Message::Heartbeat { .. } => peer.synced && n <= peer.last,
            _ => peer.synced && n == peer.last + 1,
        };
        if !in_order {
            peer.synced = false;
            if peer
                .asked
                .is_some_and(|t| now.saturating_duration_since(t) < ASK_EVERY)
            {
                return None;
            }
            peer.asked = Some(now);
            return Some(Action::Ask(server));
        }
        match message {
            Message::Heartbeat { .. } => {
                // After a reset, its state came whole: what it no longer holds goes.
                for (channel, user) in std::mem::take(&mut peer.stale) {
                    self.set(server, &channel, &user, None);
                }
            }
            Message::Members {
                channel,
                added,
                removed,
                ..
            } => {
                peer.last = n;
                if !peer.stale.is_empty() {
                    peer.stale.retain(|(c, u)| {
                        **c != **channel || !added.iter().any(|(a, _)| **a == **u)
                    });
                }
                for (user, info) in added {
                    self.set(server, channel, user, Some(Arc::from(info.as_str())));
                }
                for user in removed {
                    self.set(server, channel, user, None);
                }
            }
            Message::Query { .. } => peer.last = n,
            Message::Reset { .. } => {}
        }
        None
    }

    /// Forgets the servers not heard from for `timeout` before `now`, and what they held;
    /// returns how many.
    pub fn expire(&mut self, now: Instant, timeout: Duration) -> usize {
        let silent: Vec<ServerId> = self
            .peers
            .iter()
            .filter(|(_, p)| now.saturating_duration_since(p.heard) >= timeout)
            .map(|(s, _)| *s)
            .collect();
        for server in &silent {
            self.peers.remove(server);
            self.forget(*server);
        }
        silent.len()
    }

    /// What changed for pages since the last call.
    pub fn take_changes(&mut self) -> Vec<Changes> {
        let Some(mut pending) = self.pending.take() else {
            return Vec::new();
        };
        let changes = pending.take(|channel, user| self.info(channel, user));
        self.pending = Some(pending);
        changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(server: ServerId, n: u64, added: &[&str], removed: &[&str]) -> Message {
        Message::Members {
            server,
            n,
            channel: "presence-x".into(),
            added: added
                .iter()
                .map(|u| (u.to_string(), format!("\"{u}@{server}\"")))
                .collect(),
            removed: removed.iter().map(|u| u.to_string()).collect(),
        }
    }

    fn users(v: &View) -> Vec<String> {
        v.members("presence-x")
            .iter()
            .map(|(u, _)| u.to_string())
            .collect()
    }

    #[test]
    fn a_member_on_several_servers_is_one_and_leaves_with_its_last_holder() {
        let now = Instant::now();
        let mut v = View::new(1, 100, true);
        v.set(1, "presence-x", "a", Some(Arc::from("\"mine\"")));
        assert_eq!(v.receive(Message::Reset { server: 2, n: 1 }, now), None);
        assert_eq!(v.receive(members(2, 2, &["a", "b"], &[]), now), None);
        assert_eq!(users(&v), ["a", "b"]);
        assert_eq!(
            v.info("presence-x", "a").as_deref(),
            Some("\"mine\""),
            "the lowest id's info"
        );
        let c = v.take_changes();
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].added.len(), 2);
        v.set(1, "presence-x", "a", None);
        assert_eq!(v.info("presence-x", "a").as_deref(), Some("\"a@2\""));
        v.receive(members(2, 3, &[], &["a"]), now);
        assert_eq!(users(&v), ["b"]);
        let c = v.take_changes();
        assert_eq!(c[0].removed, vec![Arc::from("a")]);
        assert_eq!(v.known(), 1);
    }

    #[test]
    fn a_skipped_number_asks_for_the_state_and_ignores_changes_until_the_reset() {
        let now = Instant::now();
        let mut v = View::new(1, 100, false);
        // An unknown server's first message is not its reset: ask it.
        assert_eq!(
            v.receive(members(2, 5, &["a"], &[]), now),
            Some(Action::Ask(2))
        );
        assert_eq!(
            v.receive(members(2, 6, &["b"], &[]), now),
            None,
            "asked once a second"
        );
        assert!(users(&v).is_empty());
        v.receive(Message::Reset { server: 2, n: 7 }, now);
        v.receive(members(2, 8, &["a"], &[]), now);
        assert_eq!(users(&v), ["a"]);
        // Lost: 9. A heartbeat says 9 was sent.
        let later = now + Duration::from_secs(2);
        assert_eq!(
            v.receive(Message::Heartbeat { server: 2, n: 9 }, later),
            Some(Action::Ask(2))
        );
        v.receive(members(2, 10, &["z"], &[]), later);
        assert_eq!(users(&v), ["a"], "not applied out of order");
        v.receive(Message::Reset { server: 2, n: 11 }, later);
        v.receive(members(2, 12, &["b"], &[]), later);
        assert_eq!(users(&v), ["a", "b"], "a stays until the state is whole");
        v.receive(Message::Heartbeat { server: 2, n: 12 }, later);
        assert_eq!(users(&v), ["b"], "the reset forgot a");
        // Queries are answered; this server's own messages ignored.
        let q = Message::Query {
            server: 2,
            n: 13,
            to: None,
        };
        assert_eq!(v.receive(q, later), Some(Action::Dump));
        let q = Message::Query {
            server: 2,
            n: 14,
            to: Some(3),
        };
        assert_eq!(v.receive(q, later), None);
        let q = Message::Query {
            server: FORWARDER,
            n: 0,
            to: Some(1),
        };
        assert_eq!(v.receive(q, later), Some(Action::Dump));
        assert_eq!(v.receive(members(1, 1, &["me"], &[]), later), None);
        assert_eq!(users(&v), ["b"]);
    }

    #[test]
    fn a_member_a_server_still_holds_after_its_reset_never_leaves() {
        let now = Instant::now();
        let mut v = View::new(1, 100, true);
        v.receive(Message::Reset { server: 2, n: 1 }, now);
        v.receive(members(2, 2, &["a", "b"], &[]), now);
        v.take_changes();
        v.receive(Message::Reset { server: 2, n: 3 }, now);
        assert!(v.take_changes().is_empty(), "nothing leaves at the reset");
        v.receive(members(2, 4, &["a"], &[]), now);
        v.receive(Message::Heartbeat { server: 2, n: 4 }, now);
        let c = v.take_changes();
        assert_eq!((c[0].added.len(), c[0].removed.len()), (0, 1), "{c:?}");
        assert_eq!(users(&v), ["a"]);
    }

    #[test]
    fn a_silent_server_is_forgotten_with_its_members() {
        let now = Instant::now();
        let mut v = View::new(1, 100, false);
        v.receive(Message::Reset { server: 2, n: 1 }, now);
        v.receive(members(2, 2, &["a"], &[]), now);
        let t = Duration::from_secs(5);
        assert_eq!(v.expire(now + Duration::from_secs(4), t), 0);
        v.receive(
            Message::Heartbeat { server: 2, n: 2 },
            now + Duration::from_secs(4),
        );
        assert_eq!(v.expire(now + Duration::from_secs(8), t), 0);
        assert_eq!(v.expire(now + Duration::from_secs(9), t), 1);
        assert!(users(&v).is_empty());
        assert_eq!((v.servers(), v.known(), v.channels()), (0, 0, 0));
    }

    #[test]
    fn what_other_servers_announce_past_the_bound_is_dropped() {
        let now = Instant::now();
        let mut v = View::new(1, 2, false);
        v.receive(Message::Reset { server: 2, n: 1 }, now);
        v.receive(members(2, 2, &["a", "b", "c"], &[]), now);
        assert_eq!((v.known(), v.dropped()), (2, 1));
        v.set(1, "presence-x", "mine", Some(Arc::from("1")));
        assert_eq!(v.known(), 3, "this server's own members are always kept");
    }
}
