//! A message's place in its topic.

/// Where a message stands in its topic: the topic's epoch, and the message's offset in it.
///
/// Offset 0 is "before the first message": a page that has seen none of an epoch's messages
/// stands at offset 0 of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Position {
    /// Changes whenever the topic's history may have been lost; never 0.
    pub epoch: u32,
    /// The message's number in the epoch, from 1.
    pub offset: u32,
}

impl Position {
    /// The start of this position's epoch: before its first message.
    pub fn start(self) -> Position {
        Position { offset: 0, ..self }
    }
}
