//! Session lifecycle events.
//!
//! Delivery is at-least-once in spirit and best-effort in fact: a subscriber that falls more
//! than the channel capacity behind is told how many events it missed
//! ([`EventError::Lagged`]) and continues with newer ones. Which kinds a store emits is in its
//! [`Capabilities`](crate::Capabilities).

use tokio::sync::broadcast;

use crate::id::SessionKey;

/// Something that happened to a stored session. Events carry keys, never tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionEvent {
    /// A session was created.
    Created(SessionKey),
    /// A session was deleted (by id, key or principal).
    Deleted(SessionKey),
    /// A session reached its deadline and was removed by the store.
    Expired(SessionKey),
    /// A session was removed by the store to stay within its capacity.
    Evicted(SessionKey),
    /// A session moved to a new id (`change_id`); the old key no longer exists.
    IdChanged {
        /// Key before the change.
        old: SessionKey,
        /// Key after the change.
        new: SessionKey,
    },
}

/// Why [`EventSubscription::recv`] returned no event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EventError {
    /// The subscriber fell behind and this many events were dropped; later events follow.
    #[error("subscriber fell behind; {0} events were dropped")]
    Lagged(u64),
    /// The store was dropped; no more events will come.
    #[error("the store is gone")]
    Closed,
}

/// A fan-out channel stores use to publish events.
#[derive(Debug, Clone)]
pub struct EventBus {
    sender: broadcast::Sender<SessionEvent>,
}

impl EventBus {
    /// A bus that buffers up to `capacity` events per slow subscriber.
    pub fn new(capacity: usize) -> Self {
        EventBus {
            sender: broadcast::channel(capacity.max(1)).0,
        }
    }

    /// Sends `event` to every current subscriber; without subscribers it is dropped.
    pub fn publish(&self, event: SessionEvent) {
        // An error only means nobody listens right now.
        let _ = self.sender.send(event);
    }

    /// A new subscription that sees events published from now on.
    pub fn subscribe(&self) -> EventSubscription {
        EventSubscription {
            receiver: self.sender.subscribe(),
        }
    }
}

impl Default for EventBus {
    fn default() -> Self {
        EventBus::new(1024)
    }
}

/// A stream of [`SessionEvent`]s from one store.
#[derive(Debug)]
pub struct EventSubscription {
    receiver: broadcast::Receiver<SessionEvent>,
}

impl EventSubscription {
    /// The next event.
    pub async fn recv(&mut self) -> Result<SessionEvent, EventError> {
        self.receiver.recv().await.map_err(|error| match error {
            broadcast::error::RecvError::Lagged(missed) => EventError::Lagged(missed),
            broadcast::error::RecvError::Closed => EventError::Closed,
        })
    }
}
