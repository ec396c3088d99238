//! This server's own members: for each presence channel, which sessions hold each member, and
//! the info the member shows (its earliest session's still there).

use std::collections::HashMap;
use std::sync::Arc;

use crate::Info;

/// A member's sessions here, each with the info it joined with, earliest first.
type Sessions = Vec<(u64, Info)>;

/// This server's members of every presence channel.
#[derive(Debug, Default)]
pub struct Local {
    channels: HashMap<Arc<str>, HashMap<Arc<str>, Sessions>>,
}

impl Local {
    /// The info `user` shows on `channel` from this server, if it is a member here.
    pub fn info(&self, channel: &str, user: &str) -> Option<Info> {
        let sessions = self.channels.get(channel)?.get(user)?;
        sessions.first().map(|(_, info)| info.clone())
    }

    /// Puts `session` in `channel` as `user` with `info` (a session already there keeps its
    /// info).
    pub fn join(&mut self, channel: &Arc<str>, user: &Arc<str>, session: u64, info: Info) {
        let users = self.channels.entry(channel.clone()).or_default();
        let sessions = users.entry(user.clone()).or_default();
        if !sessions.iter().any(|(s, _)| *s == session) {
            sessions.push((session, info));
        }
    }

    /// Takes `session` out of `channel` as `user`.
    pub fn leave(&mut self, channel: &str, user: &str, session: u64) {
        let Some(users) = self.channels.get_mut(channel) else {
            return;
        };
        if let Some(sessions) = users.get_mut(user) {
            sessions.retain(|(s, _)| *s != session);
            if sessions.is_empty() {
                users.remove(user);
            }
        }
        if users.is_empty() {
            self.channels.remove(channel);
        }
    }

    /// Every channel with members here, and its members (user, info).
    pub fn state(&self) -> impl Iterator<Item = (&Arc<str>, Vec<(String, String)>)> {
        self.channels.iter().map(|(channel, users)| {
            let members = users
                .iter()
                .filter_map(|(user, s)| s.first().map(|(_, i)| (user.to_string(), i.to_string())))
                .collect();
            (channel, members)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_is_there_while_any_of_its_sessions_is_with_its_earliest_sessions_info() {
        let mut l = Local::default();
        let (c, u) = (Arc::from("presence-x"), Arc::from("42"));
        l.join(&c, &u, 1, Arc::from("\"one\""));
        l.join(&c, &u, 2, Arc::from("\"two\""));
        l.join(&c, &u, 1, Arc::from("\"again\""));
        assert_eq!(l.info(&c, &u).as_deref(), Some("\"one\""));
        l.leave(&c, &u, 1);
        assert_eq!(l.info(&c, &u).as_deref(), Some("\"two\""));
        l.leave(&c, &u, 2);
        assert_eq!(l.info(&c, &u), None);
        assert_eq!(l.state().count(), 0, "an empty channel is forgotten");
    }
}
