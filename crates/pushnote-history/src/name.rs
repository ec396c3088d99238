//! A topic's name as a map's key, kept in the key itself when it is short.
//!
//! Looking a name up in a map compares it with the key found: a key that points to its bytes
//! elsewhere costs a read of memory nothing else touches, which for a random user's topic is a
//! cache miss per message. Names up to [`INLINE`] bytes (`user:` and an id of up to 24 bytes,
//! and its end) are compared where the map keeps the key.

use std::borrow::Borrow;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;

/// The longest name kept in the key itself.
pub const INLINE: usize = 30;

/// A topic's name: hashes and compares as its bytes (`[u8]`), so maps keyed by it are looked
/// up with a `&[u8]`.
#[derive(Clone)]
pub enum Name {
    Inline { len: u8, bytes: [u8; INLINE] },
    Heap(Box<[u8]>),
}

impl Name {
    pub fn new(name: &[u8]) -> Name {
        if name.len() <= INLINE {
            let mut bytes = [0; INLINE];
            bytes[..name.len()].copy_from_slice(name);
            Name::Inline {
                len: name.len() as u8,
                bytes,
            }
        } else {
            Name::Heap(name.into())
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Name::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Name::Heap(bytes) => bytes,
        }
    }
}

impl From<&[u8]> for Name {
    fn from(name: &[u8]) -> Name {
        Name::new(name)
    }
}

impl Deref for Name {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl Borrow<[u8]> for Name {
    fn borrow(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl Hash for Name {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // As the bytes hash: a map keyed by names is looked up by bytes.
        self.as_bytes().hash(state);
    }
}

impl PartialEq for Name {
    fn eq(&self, other: &Name) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for Name {}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn a_name_is_its_bytes_whether_kept_inline_or_not() {
        let short = b"user:42\0".as_slice();
        let edge = [b'x'; INLINE];
        let long = [b'y'; INLINE + 1];
        let mut map = HashMap::new();
        for (i, name) in [short, &edge[..], &long[..], b""].into_iter().enumerate() {
            let key = Name::new(name);
            assert_eq!(matches!(key, Name::Inline { .. }), name.len() <= INLINE);
            assert_eq!(&*key, name);
            map.insert(key, i);
        }
        assert_eq!(map.get(short), Some(&0));
        assert_eq!(map.get(&edge[..]), Some(&1));
        assert_eq!(map.get(&long[..]), Some(&2));
        assert_eq!(map.get(b"".as_slice()), Some(&3));
        assert_eq!(map.get(b"user:4".as_slice()), None);
        assert_eq!(map.get(&long[..INLINE]), None);
        assert!(std::mem::size_of::<Name>() <= 32);
    }
}
