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

    /// How many offsets were skipped between `last` and this position's, across the wrap to 0;
    /// `None` when this offset is not after `last` (not within 2³¹ of it), which one epoch of a
    /// forwarder never sends.
    pub fn skipped_after(self, last: u32) -> Option<u32> {
        let step = self.offset.wrapping_sub(last);
        (step != 0 && step <= 1 << 31).then(|| step - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::Position;

    #[test]
    fn skipped_offsets_are_counted_across_the_wrap() {
        let at = |offset| Position { epoch: 1, offset };
        assert_eq!(at(8).skipped_after(7), Some(0));
        assert_eq!(at(10).skipped_after(7), Some(2));
        assert_eq!(at(0).skipped_after(u32::MAX), Some(0));
        assert_eq!(at(2).skipped_after(u32::MAX - 1), Some(3));
        assert_eq!(at(7).skipped_after(7), None);
        assert_eq!(at(6).skipped_after(7), None);
    }
}
