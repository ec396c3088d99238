//! Giving back the room of maps that emptied out. A hash map never shrinks by itself, so a
//! burst of topics (a page joining thousands of channels, sessions in distinct rooms that all
//! left) would hold its peak for the life of the process.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;

/// Below this much room a map is left as it is: too little to be worth giving back.
pub(crate) const MIN_ROOM: usize = 1024;

/// A map or set whose spare room can be given back.
pub(crate) trait Room {
    fn len(&self) -> usize;
    fn capacity(&self) -> usize;
    fn shrink_to(&mut self, min: usize);
}

impl<K: Hash + Eq, V> Room for HashMap<K, V> {
    fn len(&self) -> usize {
        HashMap::len(self)
    }
    fn capacity(&self) -> usize {
        HashMap::capacity(self)
    }
    fn shrink_to(&mut self, min: usize) {
        HashMap::shrink_to(self, min);
    }
}

impl<K: Hash + Eq> Room for HashSet<K> {
    fn len(&self) -> usize {
        HashSet::len(self)
    }
    fn capacity(&self) -> usize {
        HashSet::capacity(self)
    }
    fn shrink_to(&mut self, min: usize) {
        HashSet::shrink_to(self, min);
    }
}

/// Gives back most of `map`'s room once it holds under a quarter of it, after a removal.
/// Shrinking to twice what is left rehashes each remaining entry once per halving of their
/// number, so it costs each removal a constant on average.
pub(crate) fn give_back(map: &mut impl Room) {
    if map.capacity() > MIN_ROOM && map.len() < map.capacity() / 4 {
        map.shrink_to(map.len() * 2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_room_of_a_burst_goes_back_as_it_empties_out() {
        let mut set: HashSet<u32> = (0..100_000).collect();
        for i in 1..100_000 {
            set.remove(&i);
            give_back(&mut set);
        }
        assert!(set.capacity() <= MIN_ROOM, "room for {}", set.capacity());
        let mut small: HashMap<u32, u32> = (0..500).map(|i| (i, i)).collect();
        small.clear();
        let room = small.capacity();
        give_back(&mut small);
        assert_eq!(small.capacity(), room, "small maps are left alone");
    }
}
