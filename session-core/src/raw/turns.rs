//! Turns for the writers of one session within a process.

use tokio::sync::{Mutex, MutexGuard};

use crate::id::SessionKey;

/// Striped locks by session key: the writers of one session in this process take turns, so a
/// store's compare-and-swap or version-checked write only ever loses to *other processes*.
/// Without it, a hundred concurrent saves of one session in one process make a hundred-way
/// race that each round only one wins (quadratic work on the server, and bounded retries run
/// out). Sessions that share a stripe wait for each other too, which at 256 stripes is rare.
#[derive(Debug)]
pub struct WriterTurns {
    stripes: Vec<Mutex<()>>,
}

impl WriterTurns {
    /// 256 stripes.
    pub fn new() -> Self {
        WriterTurns {
            stripes: (0..256).map(|_| Mutex::new(())).collect(),
        }
    }

    /// `stripes` stripes (at least one): more make two sessions' writers wait for each other
    /// less often, for a tokio mutex (a few dozen bytes) each.
    pub fn with_stripes(stripes: usize) -> Self {
        WriterTurns {
            stripes: (0..stripes.max(1)).map(|_| Mutex::new(())).collect(),
        }
    }

    /// Waits for the turn of `key`'s writers; the turn lasts as long as the guard.
    pub async fn take(&self, key: &SessionKey) -> MutexGuard<'_, ()> {
        let bytes = key.as_bytes();
        let index = usize::from(u16::from_be_bytes([bytes[0], bytes[1]])) % self.stripes.len();
        self.stripes[index].lock().await
    }
}

impl Default for WriterTurns {
    fn default() -> Self {
        Self::new()
    }
}
