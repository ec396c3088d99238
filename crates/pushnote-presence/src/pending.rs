//! Changes to members put together between the moments they go out: for each member that
//! changed, what it was when they last went out, so that what goes out is the difference, and
//! a member who left and came back meanwhile (a reload) is no change at all.

use std::collections::HashMap;
use std::sync::Arc;

use crate::Info;

/// The members that changed since the last [`Pending::take`], with what each was then.
#[derive(Debug, Default)]
pub struct Pending {
    before: HashMap<Arc<str>, HashMap<Arc<str>, Option<Info>>>,
}

/// What changed in one channel: members who came (or whose info changed), and users who left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changes {
    /// The channel.
    pub channel: Arc<str>,
    /// Members who came or whose info changed: user, info.
    pub added: Vec<(Arc<str>, Info)>,
    /// Users who left.
    pub removed: Vec<Arc<str>>,
}

impl Pending {
    /// Notes that `user` of `channel`, which was `before` (its info, or `None` if not a
    /// member), is about to change; only the first note since the last take counts.
    pub fn note(&mut self, channel: &Arc<str>, user: &Arc<str>, before: Option<&Info>) {
        let users = match self.before.get_mut(&**channel) {
            Some(users) => users,
            None => self.before.entry(channel.clone()).or_default(),
        };
        if !users.contains_key(&**user) {
            users.insert(user.clone(), before.cloned());
        }
    }

    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.before.is_empty()
    }

    /// The changes since the last take, `now` telling each member's info now; channels where
    /// nothing changed in the end are left out.
    pub fn take(&mut self, now: impl Fn(&str, &str) -> Option<Info>) -> Vec<Changes> {
        let mut out = Vec::new();
        for (channel, users) in std::mem::take(&mut self.before) {
            let mut changes = Changes {
                channel: channel.clone(),
                added: Vec::new(),
                removed: Vec::new(),
            };
            for (user, before) in users {
                match (before, now(&channel, &user)) {
                    (Some(b), Some(a)) if b == a => {}
                    (_, Some(a)) => changes.added.push((user, a)),
                    (Some(_), None) => changes.removed.push(user),
                    (None, None) => {}
                }
            }
            if !changes.added.is_empty() || !changes.removed.is_empty() {
                changes.added.sort();
                changes.removed.sort();
                out.push(changes);
            }
        }
        out.sort_by(|a, b| a.channel.cmp(&b.channel));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_difference_since_the_last_take_goes_out() {
        let mut p = Pending::default();
        let (c, a, b, r) = (
            Arc::from("presence-x"),
            Arc::from("a"),
            Arc::from("b"),
            Arc::from("r"),
        );
        let info: Info = Arc::from("1");
        // a came; b left and came back (a reload); r left.
        p.note(&c, &a, None);
        p.note(&c, &b, Some(&info));
        p.note(&c, &b, None);
        p.note(&c, &r, Some(&info));
        let now = |_: &str, user: &str| (user != "r").then(|| Arc::from("1"));
        let changes = p.take(now);
        assert_eq!(
            changes,
            vec![Changes {
                channel: c.clone(),
                added: vec![(a, info.clone())],
                removed: vec![r],
            }]
        );
        assert!(p.is_empty() && p.take(now).is_empty());
    }
}
