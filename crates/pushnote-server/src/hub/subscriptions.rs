//! What the hub tells the bus: which topics this server wants.
//!
//! The hub calls [`Subscriptions::subscribe`] when a topic gains its first session here and
//! [`Subscriptions::unsubscribe`] when it loses its last, so the forwarder sends a topic's
//! messages only to the servers that hold one of its sessions. The bus implements it with its
//! ZeroMQ subscriptions; tests record the calls.

/// Where the hub's subscription changes go. Called under the hub's lock of the topic, so the
/// calls for one topic arrive in the order its first session came and its last one went.
pub trait Subscriptions: Send + Sync {
    /// `topic` (as the bus names it, NUL included) has its first session here.
    fn subscribe(&self, topic: &[u8]);
    /// `topic` has lost its last session here.
    fn unsubscribe(&self, topic: &[u8]);
}
