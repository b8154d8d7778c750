//! `change_id` to a free id: the loop every store's rotation shares.

use std::future::Future;

use crate::error::{Error, Result};
use crate::id::{SessionId, SessionKey};
use crate::session::{Session, SessionInternals};

/// Rounds a rotation tries while the fresh id is taken or a save races the copy.
pub const ROTATE_ATTEMPTS: usize = 4;

/// What one attempt of a store's rotation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rotation {
    /// The session now lives under the new key only.
    Moved,
    /// The new key was taken; nothing changed. Tried again with another id.
    IdTaken,
    /// A concurrent save changed the session between the copy and the removal of the old key;
    /// the attempt was undone. Tried again.
    Raced,
    /// The old key holds no live session (deleted, rotated, expired or undecodable).
    Gone,
}

/// What [`rotate_id`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rotated {
    /// The session was never created: it only got a fresh id, nothing was written.
    Local,
    /// The stored session moved from `old` to `new`, and the session now has the new id.
    Moved {
        /// The key before.
        old: SessionKey,
        /// The key after.
        new: SessionKey,
    },
}

/// `change_id` by the contract: a new session only gets a fresh id; a stored one is moved by
/// `attempt(old, new)` to fresh keys until it reports [`Rotation::Moved`]. The session gets
/// the new id only after the move succeeded, so the caller never holds an id that is not
/// stored; announce the change (events) after this returns, best-effort.
///
/// [`Rotation::Gone`] is [`Error::NotFound`]; running out of attempts is
/// [`Error::Unavailable`] (see `Error`'s "Exhausted retries").
pub async fn rotate_id<F, Fut>(session: &mut Session, mut attempt: F) -> Result<Rotated>
where
    F: FnMut(SessionKey, SessionKey) -> Fut,
    Fut: Future<Output = Result<Rotation>>,
{
    if session.is_new() {
        session.assign_id(SessionId::generate());
        return Ok(Rotated::Local);
    }
    let old = session.key();
    for _ in 0..ROTATE_ATTEMPTS {
        let new_id = SessionId::generate();
        let new = new_id.key();
        match attempt(old, new).await? {
            Rotation::Moved => {
                session.assign_id(new_id);
                return Ok(Rotated::Moved { old, new });
            }
            Rotation::IdTaken | Rotation::Raced => continue,
            Rotation::Gone => return Err(Error::NotFound),
        }
    }
    Err(Error::retries_exhausted(
        "change_id kept meeting taken ids or concurrent saves",
        ROTATE_ATTEMPTS,
    ))
}
