//! `change_id`: the session's document moves to a new `_id` (MongoDB cannot change an `_id`).
//!
//! On a replica set or a sharded cluster the move is one transaction: read the old document,
//! insert it under the new key, delete the old one, commit. A concurrent save of the old
//! document makes the transaction fail with a transient error; the attempt reports a race and
//! [`rotate_id`](session_core::raw::rotate_id) tries again.
//!
//! A standalone server has no transactions, so the move is two steps: insert under the new key,
//! then delete the old document only if nobody saved or touched it since it was read (else the
//! insert is undone and the attempt reports a race). If the process stops between the two
//! steps, both documents exist until the old one expires; the caller never learned the new id,
//! so the old one goes on working until then.

use mongodb::bson::doc;
use session_core::raw::time::now_millis;
use session_core::raw::{report_undecodable, Lookup, Rotation};
use session_core::{Result, SessionKey};

use crate::document::{date, from_document, id_of, live, to_document, ACCESSED, ID, VERSION};
use crate::error::{is_duplicate_key, map};
use crate::store::MongoStore;

/// The label of a transaction that failed for a reason that passes (a write conflict, an
/// election): running it again may succeed.
const TRANSIENT: &str = "TransientTransactionError";

impl MongoStore {
    /// One attempt of `change_id` without transactions (see the module docs).
    pub(crate) async fn rotate_in_two_steps(
        &self,
        old: SessionKey,
        new: SessionKey,
    ) -> Result<Rotation> {
        let now = now_millis();
        let Lookup::Live(record) = self.fetch(&old, now).await? else {
            return Ok(Rotation::Gone);
        };
        if !self.insert(&new, &record).await? {
            return Ok(Rotation::IdTaken);
        }
        let unchanged = doc! {
            ID: id_of(&old),
            VERSION: i64::try_from(record.version).unwrap_or(i64::MAX),
            ACCESSED: date(record.last_accessed_at_ms),
        };
        let removed = self
            .inner
            .documents
            .delete_one(unchanged)
            .await
            .map_err(map)?;
        if removed.deleted_count == 1 {
            return Ok(Rotation::Moved);
        }
        self.remove(&new).await?;
        Ok(Rotation::Raced)
    }

    /// One attempt of `change_id` in a transaction (see the module docs). Dropping the
    /// client session on an early return aborts the transaction.
    pub(crate) async fn rotate_in_transaction(
        &self,
        old: SessionKey,
        new: SessionKey,
    ) -> Result<Rotation> {
        let now = now_millis();
        let mut session = self.inner.client.start_session().await.map_err(map)?;
        session.start_transaction().await.map_err(map)?;
        let found = self
            .inner
            .raw
            .find_one(live(&old, now))
            .session(&mut session)
            .await;
        let record = match found {
            Ok(Some(document)) => match from_document(&document) {
                Ok(record) if record.is_live_at(now) => record,
                Ok(_) => return Ok(Rotation::Gone),
                Err(error) => {
                    report_undecodable(&old, &error);
                    return Ok(Rotation::Gone);
                }
            },
            Ok(None) => return Ok(Rotation::Gone),
            Err(error) if error.contains_label(TRANSIENT) => return Ok(Rotation::Raced),
            Err(error) => return Err(map(error)),
        };
        let inserted = self
            .inner
            .documents
            .insert_one(to_document(&new, &record))
            .session(&mut session)
            .await;
        match inserted {
            Ok(_) => {}
            Err(error) if is_duplicate_key(&error) => return Ok(Rotation::IdTaken),
            Err(error) if error.contains_label(TRANSIENT) => return Ok(Rotation::Raced),
            Err(error) => return Err(map(error)),
        }
        let removed = self
            .inner
            .documents
            .delete_one(doc! { ID: id_of(&old) })
            .session(&mut session)
            .await;
        match removed {
            Ok(_) => {}
            Err(error) if error.contains_label(TRANSIENT) => return Ok(Rotation::Raced),
            Err(error) => return Err(map(error)),
        }
        match session.commit_transaction().await {
            Ok(()) => Ok(Rotation::Moved),
            Err(error) if error.contains_label(TRANSIENT) => Ok(Rotation::Raced),
            Err(error) => Err(map(error)),
        }
    }
}
