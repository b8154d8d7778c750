//! [`Migrating`]: moving every session from one store to another while the service runs.

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;

use crate::error::{Error, Result};
use crate::id::{SessionId, SessionKey};
use crate::raw::time::now_millis;
use crate::raw::SessionInternals;
use crate::record::SessionInfo;
use crate::repository::{Capabilities, SessionRepository};
use crate::session::Session;
use crate::settings::SessionSettings;

/// How often a move that raced with another instance's move starts over before giving up.
const MOVE_ATTEMPTS: usize = 3;

/// A repository over a new and an old store, for changing stores without logging anyone out.
///
/// Sessions move one by one, when they are used: a session found only in the old store is
/// written to the new one ([`import`](SessionRepository::import), keeping its id, times,
/// version and attributes) on its next save or touch, and then deleted from the old one.
/// Sessions nobody uses again simply expire in the old store.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> session_core::Result<()> {
/// # use std::sync::Arc;
/// # use session_core::{Migrating, SessionRepository};
/// # fn open(_: &str) -> Arc<dyn SessionRepository> { unimplemented!() }
/// # if false {
/// let store = Migrating::new(open("postgres://db/app"), open("redis://cache"))?;
/// # }
/// # Ok(()) }
/// ```
///
/// # Behavior
///
/// - `find` looks in the new store, then in the old one (and once more in the new one when both
///   miss, in case another instance moved the session in between).
/// - `create` writes to the new store only.
/// - `save` and `touch` of a session that is only in the old store copy it to the new store
///   (as the old store holds it, merged with the save's changes under the usual rules:
///   per-attribute last-write-wins, optimistic versions, no resurrection) and delete it from
///   the old store. A move races safely with the same move on another instance: the copy never
///   overwrites, so the loser merges its save into the winner's copy.
/// - `delete`, `delete_by_key`, `delete_by_principal` and `change_id` act on both stores;
///   `find_by_principal` lists both (a session in both is listed once, as the new store has it).
/// - Capabilities: the principal index when both stores have one. No import (whether the old
///   store holds undecodable bytes under a key cannot be asked). **No events**: moving a
///   session deletes it from the old store, which that store reports as `Deleted` to every
///   subscriber, indistinguishable from a log-out.
///
/// # The migration window
///
/// 1. Open both stores with the same [`SessionSettings`]. The new store must support
///    [`import`](SessionRepository::import) ([`Capabilities::import`]).
/// 2. Roll every instance over to `Migrating`. While the rollout runs, an instance still on
///    the old configuration reads the old store only: it does not see sessions created by a
///    migrating instance or already moved (for it, that user is logged out until the next
///    request lands on a migrating instance), and its writes to a session that a migrating
///    instance moves at the same moment can be lost. Roll out quickly, or route a user to one
///    configuration during the window.
/// 3. Once every instance migrates, keep it so for the sessions' absolute lifetime (or idle
///    timeout if there is none); the old store then holds no live session and can go.
///
/// A move costs a few round trips once per session: a save of a session that is not in the new
/// store is a failed save there, two reads and a delete in the old one, an import and the save
/// in the new one. A delete racing with a move on another instance wins: deletes go to the old
/// store first, and a move checks the old copy is still there after its import.
#[derive(Debug, Clone)]
pub struct Migrating<N, O> {
    new: N,
    old: O,
}

impl<N: SessionRepository, O: SessionRepository> Migrating<N, O> {
    /// Sessions move from `old` to `new`. [`Error::Config`] if `new` cannot
    /// [`import`](SessionRepository::import).
    pub fn new(new: N, old: O) -> Result<Self> {
        if !new.capabilities().import {
            return Err(Error::Config(
                "the new store of a migration must support import".into(),
            ));
        }
        Ok(Migrating { new, old })
    }

    /// The store sessions move to.
    pub fn new_store(&self) -> &N {
        &self.new
    }

    /// The store sessions move from.
    pub fn old_store(&self) -> &O {
        &self.old
    }

    /// Moves the session of `id` from the old store to the new one, accessed at `accessed_at`
    /// (`None`: as stored). `Ok(true)` when the session is in the new store afterwards (moved
    /// here or by another instance), `Ok(false)` when neither store has it.
    async fn move_to_new(&self, id: &SessionId, accessed_at: Option<u64>) -> Result<bool> {
        let Some(stored) = self.old.find(id).await? else {
            // Gone from the old store: never there, deleted, or moved by another instance
            // a moment ago (its import, then its delete of the old copy) — only the new store
            // tells the last apart.
            return Ok(self.new.find(id).await?.is_some());
        };
        let accessed_at = accessed_at.unwrap_or(stored.last_accessed_at_ms());
        // A copy just found has saved nothing, so it always has a snapshot.
        let Some(record) = stored.snapshot(accessed_at)? else {
            return Err(Error::backend("a session just found had no snapshot"));
        };
        let key = stored.key();
        // `false`: another instance moved it first; the session is in the new store either way,
        // and that instance finishes the move.
        if self.new.import(id, &record).await? {
            // A delete (old store first, then new) that ran since the read above must win: if
            // the old copy is gone, so is the one just imported. Either the delete removed the
            // old copy before this check, or its removal from the new store comes after the
            // import.
            if self.old.find(id).await?.is_none() {
                self.new.delete_by_key(&key).await?;
                return Ok(false);
            }
            self.forget_old(&key).await;
        }
        Ok(true)
    }

    /// Deletes the old copy of a moved session. A failure leaves a stale copy that is harmless
    /// (reads, deletes and principal queries look at the new store first or at both), so it is
    /// logged, not returned: the save or touch that moved the session succeeded.
    async fn forget_old(&self, key: &SessionKey) {
        if let Err(error) = self.old.delete_by_key(key).await {
            tracing::warn!(session = %key, %error, "a moved session stays in the old store until it expires");
        }
    }
}

/// What `save` and `change_id` answer when the session kept leaving the new store while they
/// moved it there.
fn moves_exhausted() -> Error {
    Error::retries_exhausted(
        "the session left the new store while it was being moved there",
        MOVE_ATTEMPTS,
    )
}

#[async_trait]
impl<N: SessionRepository, O: SessionRepository> SessionRepository for Migrating<N, O> {
    fn settings(&self) -> &Arc<SessionSettings> {
        self.new.settings()
    }

    fn capabilities(&self) -> Capabilities {
        let (new, old) = (self.new.capabilities(), self.old.capabilities());
        Capabilities::none().with_principal_index(new.principal_index && old.principal_index)
    }

    async fn create(&self, session: &mut Session) -> Result<()> {
        self.new.create(session).await
    }

    async fn find(&self, id: &SessionId) -> Result<Option<Session>> {
        if let Some(session) = self.new.find(id).await? {
            return Ok(Some(session));
        }
        if let Some(session) = self.old.find(id).await? {
            return Ok(Some(session));
        }
        // Another instance may have moved it between the two reads (import into the new
        // store, then delete from the old): the move's import came before that delete, so a
        // second look at the new store sees it.
        self.new.find(id).await
    }

    async fn save(&self, session: &mut Session) -> Result<()> {
        for _ in 0..MOVE_ATTEMPTS {
            match self.new.save(session).await {
                Err(Error::NotFound) => {}
                done => return done,
            }
            if !self.move_to_new(session.id(), None).await? {
                return Err(Error::NotFound);
            }
        }
        Err(moves_exhausted())
    }

    async fn touch(&self, id: &SessionId) -> Result<()> {
        match self.new.touch(id).await {
            Err(Error::NotFound) => {}
            done => return done,
        }
        if !self.move_to_new(id, Some(now_millis())).await? {
            return Err(Error::NotFound);
        }
        // Imported with the new access time, or moved by someone else just now: touch that.
        self.new.touch(id).await
    }

    async fn delete(&self, id: &SessionId) -> Result<()> {
        self.delete_by_key(&id.key()).await
    }

    async fn delete_by_key(&self, key: &SessionKey) -> Result<()> {
        // Old first: a move running at the same time then fails to find it, instead of
        // copying it into the new store after the new store's delete.
        self.old.delete_by_key(key).await?;
        self.new.delete_by_key(key).await
    }

    async fn change_id(&self, session: &mut Session) -> Result<()> {
        if session.is_new() {
            return self.new.change_id(session).await;
        }
        let old_key = session.key();
        for _ in 0..MOVE_ATTEMPTS {
            match self.new.change_id(session).await {
                Ok(()) => {
                    // A stale copy under the old id must not outlive the rotation.
                    return self.old.delete_by_key(&old_key).await;
                }
                Err(Error::NotFound) => {}
                Err(error) => return Err(error),
            }
            if !self.move_to_new(session.id(), None).await? {
                return Err(Error::NotFound);
            }
        }
        Err(moves_exhausted())
    }

    async fn find_by_principal(&self, principal: &str) -> Result<Vec<SessionInfo>> {
        let mut listed = self.new.find_by_principal(principal).await?;
        let seen: HashSet<SessionKey> = listed.iter().map(|info| info.key).collect();
        let old = self.old.find_by_principal(principal).await?;
        listed.extend(old.into_iter().filter(|info| !seen.contains(&info.key)));
        Ok(listed)
    }

    async fn delete_by_principal(&self, principal: &str) -> Result<u64> {
        // Old first, for the same reason as `delete_by_key`.
        let old = self.old.delete_by_principal(principal).await?;
        Ok(old + self.new.delete_by_principal(principal).await?)
    }
}
