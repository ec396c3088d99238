//! The topics a history remembers, each found by its name once and by a small id after.
//!
//! The queue of all messages keeps each message's topic as an [`Id`], not as its name: taking
//! the oldest message out looks its topic up in a table, with no hash of the name and no
//! comparison of it. An id names a slot and the slot's generation, which changes each time the
//! slot is given to another topic, so an id of a forgotten topic finds nothing.

use std::collections::HashMap;

use crate::name::Name;

/// A topic's place in the table, valid while the topic is remembered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Id {
    slot: u32,
    generation: u32,
}

/// The remembered topics, `T` each.
pub(crate) struct Topics<T> {
    by_name: HashMap<Name, Id>,
    slots: Vec<Slot<T>>,
    /// The slots no topic holds.
    free: Vec<u32>,
}

struct Slot<T> {
    generation: u32,
    topic: Option<T>,
}

/// How many slots no topic holds the table may keep, beyond a quarter of its topics, before it
/// is made dense again.
const SPARE_SLOTS: usize = 1024;

impl<T> Topics<T> {
    pub(crate) fn new() -> Topics<T> {
        Topics {
            by_name: HashMap::new(),
            slots: Vec::new(),
            free: Vec::new(),
        }
    }

    /// The id of the topic named `name`, if it is remembered.
    pub(crate) fn find(&self, name: &[u8]) -> Option<Id> {
        self.by_name.get(name).copied()
    }

    /// The topic named `name` and its id, if it is remembered.
    pub(crate) fn find_mut(&mut self, name: &[u8]) -> Option<(Id, &mut T)> {
        let id = self.find(name)?;
        Some((id, self.get_mut(id)?))
    }

    pub(crate) fn get(&self, id: Id) -> Option<&T> {
        let slot = self.slots.get(id.slot as usize)?;
        (slot.generation == id.generation)
            .then_some(slot.topic.as_ref())
            .flatten()
    }

    pub(crate) fn get_mut(&mut self, id: Id) -> Option<&mut T> {
        let slot = self.slots.get_mut(id.slot as usize)?;
        (slot.generation == id.generation)
            .then_some(slot.topic.as_mut())
            .flatten()
    }

    /// Remembers `topic` under `name`, which is not remembered yet; its id.
    pub(crate) fn insert(&mut self, name: &[u8], topic: T) -> Id {
        let id = match self.free.pop() {
            Some(slot) => {
                let s = &mut self.slots[slot as usize];
                s.generation = s.generation.wrapping_add(1);
                s.topic = Some(topic);
                Id {
                    slot,
                    generation: s.generation,
                }
            }
            None => {
                let slot = u32::try_from(self.slots.len()).expect("fewer than 2^32 topics");
                self.slots.push(Slot {
                    generation: 0,
                    topic: Some(topic),
                });
                Id {
                    slot,
                    generation: 0,
                }
            }
        };
        self.by_name.insert(Name::new(name), id);
        id
    }

    /// The topic named `name`, if it is remembered.
    pub(crate) fn named(&self, name: &[u8]) -> Option<&T> {
        self.get(self.find(name)?)
    }

    /// Forgets the topics `forget` picks; their names.
    pub(crate) fn forget(&mut self, mut forget: impl FnMut(Id, &T) -> bool) -> Vec<Name> {
        let mut gone = Vec::new();
        let (slots, free) = (&mut self.slots, &mut self.free);
        self.by_name.retain(|name, id| {
            let slot = &mut slots[id.slot as usize];
            let go = slot.topic.as_ref().is_some_and(|t| forget(*id, t));
            if go {
                slot.topic = None;
                free.push(id.slot);
                gone.push(name.clone());
            }
            !go
        });
        gone
    }

    /// How many slots the table has, held or not.
    #[cfg(test)]
    pub(crate) fn slots(&self) -> usize {
        self.slots.len()
    }

    /// How many topics are remembered.
    pub(crate) fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Whether the slots outnumber the topics by so much that the table should be made dense:
    /// the slots no topic holds are at most a quarter of the topics, and [`SPARE_SLOTS`].
    pub(crate) fn sparse(&self) -> bool {
        self.slots.len() > self.len() + self.len() / 4 + SPARE_SLOTS
    }

    /// Makes the table dense, giving up the memory of the slots no topic holds; returns what
    /// an id given before is now (`None` for an id of a topic no longer remembered). Ids
    /// given before are not valid after but through it.
    pub(crate) fn make_dense(&mut self) -> impl Fn(Id) -> Option<Id> {
        let old = std::mem::take(&mut self.slots);
        self.free = Vec::new();
        // Each old slot's new id, for the topics still held.
        let mut moved: Vec<Option<(u32, Id)>> = vec![None; old.len()];
        for (i, slot) in old.into_iter().enumerate() {
            if let Some(topic) = slot.topic {
                let id = Id {
                    slot: self.slots.len() as u32,
                    generation: 0,
                };
                moved[i] = Some((slot.generation, id));
                self.slots.push(Slot {
                    generation: 0,
                    topic: Some(topic),
                });
            }
        }
        self.slots.shrink_to_fit();
        for id in self.by_name.values_mut() {
            // A named topic is held: it moved.
            if let Some((_, new)) = moved[id.slot as usize] {
                *id = new;
            }
        }
        self.by_name.shrink_to_fit();
        move |id: Id| match moved.get(id.slot as usize).copied().flatten() {
            Some((generation, new)) if generation == id.generation => Some(new),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_finds_its_topic_until_it_is_forgotten_and_never_the_next_in_its_slot() {
        let mut t = Topics::new();
        let a = t.insert(b"a", 1);
        let b = t.insert(b"b", 2);
        assert_eq!((t.find(b"a"), t.get(b).copied()), (Some(a), Some(2)));
        assert_eq!(t.forget(|id, _| id == a), vec![Name::new(b"a")]);
        assert_eq!((t.find(b"a"), t.get(a), t.len()), (None, None, 1));
        // The slot a had is given to c: a's id still finds nothing.
        let c = t.insert(b"c", 3);
        assert_eq!(c.slot, a.slot);
        assert_eq!((t.get(a), t.get(c).copied()), (None, Some(3)));
        assert_eq!(t.named(b"c"), Some(&3));
    }

    #[test]
    fn made_dense_the_table_gives_up_its_free_slots_and_tells_where_each_topic_went() {
        let mut t = Topics::new();
        let n = 3 * SPARE_SLOTS;
        let ids: Vec<Id> = (0..n).map(|i| t.insert(&i.to_be_bytes(), i)).collect();
        t.forget(|_, &i| i % 3 != 0);
        let reused = t.insert(b"new", usize::MAX);
        let gone_then_reused = *ids.iter().find(|id| id.slot == reused.slot).unwrap();
        assert!(t.sparse());
        let moved = t.make_dense();
        assert!(!t.sparse());
        assert_eq!(t.slots.len(), n / 3 + 1);
        assert_eq!(t.slots.capacity(), t.slots.len());
        for (i, &id) in ids.iter().enumerate() {
            let now = moved(id);
            if i % 3 == 0 {
                assert_eq!(t.get(now.unwrap()), Some(&i));
                assert_eq!(t.find(&i.to_be_bytes()), now);
            } else {
                assert_eq!(now.and_then(|id| t.get(id)).copied(), None, "{i}");
            }
        }
        assert_eq!(moved(gone_then_reused), None);
        assert_eq!(t.get(moved(reused).unwrap()), Some(&usize::MAX));
        assert_eq!(t.named(b"new"), Some(&usize::MAX));
    }
}
