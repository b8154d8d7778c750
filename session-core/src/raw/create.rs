//! `create` under a free id: the frame every store's create shares.

use std::future::Future;

use crate::error::{Error, Result};
use crate::id::{SessionId, SessionKey};
use crate::raw::time::now_millis;
use crate::record::SessionRecord;
use crate::session::{Session, SessionInternals};

/// How many ids a create tries before giving up: with 256-bit random ids a second collision
/// means something other than chance (a broken RNG, a store that reports every key as taken).
pub const CREATE_ID_ATTEMPTS: usize = 4;

/// One `create` in progress: the record to insert (creation and access time set to now), then
/// the insert under the session's key or fresh ones while the key is taken, then the session
/// marked stored under the id that was free.
///
/// ```text
/// let creation = Creation::begin(session)?;                        // InvalidInput if created
/// let id = creation.insert_under_free_id(|key| self.insert_if_absent(key, creation.record())).await?;
/// creation.finish(session, id);
/// ```
///
/// The session is changed only by `begin` (its times) and `finish`, so a create that failed
/// with a transient error can be retried with the same session.
#[derive(Debug)]
pub struct Creation {
    record: SessionRecord,
    now_ms: u64,
    first: SessionId,
}

impl Creation {
    /// Starts creating `session`; [`Error::InvalidInput`] if it was already created.
    pub fn begin(session: &mut Session) -> Result<Self> {
        let now_ms = now_millis();
        let record = session.record_for_create(now_ms)?;
        Ok(Creation {
            record,
            now_ms,
            first: session.id().clone(),
        })
    }

    /// The record to insert.
    pub fn record(&self) -> &SessionRecord {
        &self.record
    }

    /// The creation time, epoch ms.
    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// Runs `insert` (an insert that must never overwrite, answering whether it stored) with
    /// the session's key, then with fresh ids while the key is taken; returns the id it stored
    /// under. Running out of ids is [`Error::Unavailable`] (see `Error`'s "Exhausted retries").
    pub async fn insert_under_free_id<F, Fut>(&self, mut insert: F) -> Result<SessionId>
    where
        F: FnMut(SessionKey) -> Fut,
        Fut: Future<Output = Result<bool>>,
    {
        let mut id = self.first.clone();
        for _ in 0..CREATE_ID_ATTEMPTS {
            if insert(id.key()).await? {
                return Ok(id);
            }
            id = SessionId::generate();
        }
        Err(Error::retries_exhausted(
            "create found every fresh session id taken",
            CREATE_ID_ATTEMPTS,
        ))
    }

    /// The session is stored under `id`: assigns it and clears the pending changes. Returns
    /// the record as stored, for stores that keep a copy.
    pub fn finish(self, session: &mut Session, id: SessionId) -> SessionRecord {
        session.assign_id(id);
        session.mark_persisted(self.record.version, self.now_ms);
        self.record
    }
}
