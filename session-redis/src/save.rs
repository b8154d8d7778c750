//! The save: a version-checked write of the record the client computed, which on a lost race
//! answers with the stored hash, so the client merges into it and tries again (the script is
//! in the `scripts` module).
//!
//! A save from a copy nobody wrote or touched since its load writes that copy with its changes
//! (`\1a` and `\1m`, one round trip), unless a previous save of the copy merged others' changes
//! (core then refuses its snapshot: the copy lacks them). Any other save
//! merges its delta into the stored session with [`SessionRecord::apply`], the contract's merge
//! that every store shares (liveness, the optimistic version check, the size limits, per-attribute
//! last-write-wins), and rewrites the hash under the same check; the stored hash comes back from
//! the first attempt that lost, or from one read when the save could not try the fast path. The
//! saves of one session in this process take turns
//! ([`WriterTurns`](session_core::raw::WriterTurns)), so only other processes can make an attempt
//! lose, and the attempts are bounded, with backoff.

use redis::Value;
use session_core::raw::time::now_millis;
use session_core::raw::{
    backoff, report_undecodable, SessionInternals, SessionRecord, UndecodableRecord,
};
use session_core::{Error, Result, Session, SessionKey};

use crate::error::map;
use crate::meta::{
    attributes_field, index_score, packed_attributes, parse_hash, push_metadata, words, Fields,
    Meta, INLINE_TOKEN,
};
use crate::save_string::StringSave;
use crate::scripts;
use crate::store::{RedisStore, LOADED_HASH, MERGED_STRING};

/// Attempts of a merging save before it gives up with a retryable error.
pub(crate) const SAVE_ATTEMPTS: usize = 16;

/// What a version-checked write answered.
enum Written {
    /// Stored with this metadata (its attributes token chosen by the write); the index needs
    /// the session again with this score (0: it does not).
    Stored { index_score: u64, meta: Meta },
    /// Not written: the stored hash (empty when the session is gone).
    Lost(Fields),
}

/// How a version-checked write replaces the stored hash.
#[derive(Clone, Copy)]
enum Mode {
    /// Writes the given fields over a packed hash (the saver's copy is what is stored).
    Over,
    /// Replaces the whole hash.
    Rewrite,
}

impl RedisStore {
    pub(crate) async fn save_now(&self, session: &mut Session) -> Result<()> {
        let now = now_millis();
        let key = session.key();
        let _turn = self.inner.turns.take(&key).await;
        // The layout the session was loaded from, else the store's (and the hash layout if the
        // key turns out to hold a hash).
        let instance = self.inner.instance;
        let token = session
            .load_token()
            .filter(|(by, _)| *by == instance)
            .map(|(_, token)| token);
        let from_string = session.load_value().is_some_and(|(by, _)| by == instance)
            || token == Some(MERGED_STRING);
        let from_hash = token == Some(LOADED_HASH);
        if (from_string || (self.inner.strings && !from_hash))
            && self.save_string(session, now).await? == StringSave::Saved
        {
            return Ok(());
        }
        let mut stored = match self.save_loaded(session, now).await? {
            Ok(()) => return Ok(()),
            Err(Some(stored)) => stored,
            Err(None) => self.read_hash(&key).await?,
        };
        for attempt in 0..SAVE_ATTEMPTS {
            if stored.is_empty() {
                self.forget(&key);
                return Err(Error::NotFound);
            }
            let stored_hash = match parse_hash(stored) {
                Ok(hash) => hash,
                Err(error) => return Err(self.undecodable_in_save(&key, &error)),
            };
            let merged = self.merge_into(&key, session, &stored_hash.record, now)?;
            let (score, index_again) =
                next_score(&stored_hash.record, stored_hash.index_score, &merged);
            match self
                .write(&key, &stored_hash.prefix, Mode::Rewrite, &merged, score)
                .await?
            {
                Written::Stored { meta, .. } => {
                    session.mark_persisted(merged.version, now);
                    session.set_load_token(self.inner.instance, LOADED_HASH);
                    self.refresh_as(&key, meta, &merged);
                    let old = stored_hash.record.principal.as_deref();
                    self.reindex_merged(&key, old, &merged, score, index_again)
                        .await?;
                    return Ok(());
                }
                Written::Lost(current) => {
                    stored = current;
                    backoff(attempt).await;
                }
            }
        }
        self.forget(&key);
        Err(Error::retries_exhausted(
            "a save kept losing its version-checked write to other processes",
            SAVE_ATTEMPTS,
        ))
    }

    /// `session`'s delta at `now` merged into `stored` by core's [`SessionRecord::apply`], the
    /// merge of both layouts' saves. A failure other than a limit also drops the near-cache
    /// copy (the session is gone, expired or changed).
    pub(crate) fn merge_into(
        &self,
        key: &SessionKey,
        session: &Session,
        stored: &SessionRecord,
        now: u64,
    ) -> Result<SessionRecord> {
        let delta = session.delta(now)?;
        let mut merged = stored.clone();
        if let Err(error) = merged.apply(&delta, now, &self.settings.limits) {
            if !matches!(error, Error::TooLarge { .. }) {
                self.forget(key);
            }
            return Err(error);
        }
        Ok(merged)
    }

    /// What a save answers for stored data it cannot decode: reported, and absent, since a
    /// save never recreates a session.
    pub(crate) fn undecodable_in_save(&self, key: &SessionKey, error: &UndecodableRecord) -> Error {
        report_undecodable(key, error);
        self.forget(key);
        Error::NotFound
    }

    /// The principal index after a merged write of either layout: the session leaves the old
    /// principal's index when the principal changed (`old` is the stored one), and is added
    /// to the new one's with `score` when `index_again` (see [`next_score`]).
    pub(crate) async fn reindex_merged(
        &self,
        key: &SessionKey,
        old: Option<&str>,
        merged: &SessionRecord,
        score: u64,
        index_again: bool,
    ) -> Result<()> {
        if old != merged.principal.as_deref() {
            if let Some(old) = old {
                self.index_remove(old, key).await?;
            }
        }
        if let (Some(principal), true) = (&merged.principal, index_again) {
            self.index_add(principal, key, score).await?;
        }
        Ok(())
    }

    /// The one-round-trip save of a copy nobody wrote or touched since its load: writes the
    /// copy with its changes under the loaded `version created accessed`. `Err(Some(hash))`
    /// when someone did (the stored hash, to merge into), `Err(None)` when this save cannot be
    /// written from the copy alone: a principal change needs the old principal's index entry,
    /// a timeout change or an expired copy the stored timeouts, a copy over a limit the stored
    /// attributes (the merge may fit), a copy behind the store (no snapshot) the others'
    /// changes.
    async fn save_loaded(
        &self,
        session: &mut Session,
        now: u64,
    ) -> Result<std::result::Result<(), Option<Fields>>> {
        let fast = !session.principal_changed() && !session.timeouts_changed();
        if !fast || session.deadline_ms() <= now {
            return Ok(Err(None));
        }
        let Some(mut saved) = session.snapshot(now)? else {
            return Ok(Err(None));
        };
        if saved.check_limits(&self.settings.limits).is_err() {
            return Ok(Err(None));
        }
        saved.version += 1;
        let mut prefix = String::with_capacity(48);
        words(
            &mut prefix,
            &[
                Some(session.version()),
                Some(session.created_at_ms()),
                Some(session.last_accessed_at_ms()),
            ],
        );
        prefix.push(' ');
        let key = session.key();
        let score = index_score(&saved);
        match self
            .write(&key, prefix.as_bytes(), Mode::Over, &saved, score)
            .await?
        {
            Written::Stored { index_score, meta } => {
                session.mark_persisted(saved.version, now);
                session.set_load_token(self.inner.instance, LOADED_HASH);
                self.refresh_as(&key, meta, &saved);
                if let (Some(principal), 1..) = (&saved.principal, index_score) {
                    self.index_add(principal, &key, index_score).await?;
                }
                Ok(Ok(()))
            }
            Written::Lost(stored) => Ok(Err(Some(stored))),
        }
    }

    /// The version-checked write (the save script, after staging the packed attributes when
    /// they are too large to travel inline): `record` replaces the stored session if its
    /// metadata still starts with `prefix`. The write picks the token of the metadata it
    /// stores (and answers with): [`INLINE_TOKEN`] when they travel in the script's arguments (a save
    /// after an inline save then rewrites the field in place, and the script spares an
    /// `HDEL`), a fresh one when they are staged.
    async fn write(
        &self,
        key: &SessionKey,
        prefix: &[u8],
        mode: Mode,
        record: &SessionRecord,
        score: u64,
    ) -> Result<Written> {
        let redis_key = self.session_key(key);
        let packed = packed_attributes(record)?;
        let staging = !scripts::travels_inline(&packed);
        let token = if staging {
            self.next_token()
        } else {
            INLINE_TOKEN
        };
        let meta = Meta::of(record, token);
        let field = attributes_field(token);
        let inline = scripts::inline_bytes(&field, &packed);
        let mut cmd = scripts::call_sized(&scripts::SAVE, &redis_key, 14, 512 + inline);
        cmd.arg(prefix).arg(match mode {
            Mode::Over => "w",
            Mode::Rewrite => "r",
        });
        cmd.arg(record.deadline_ms());
        match mode {
            Mode::Over => {
                // The principal and its index score stay as stored; the script compares the
                // score and says whether the index needs the session again.
                match record.principal {
                    Some(_) => cmd.arg(score),
                    None => cmd.arg(""),
                };
                cmd.arg(&field)
                    .arg(if staging { "s" } else { "" })
                    .arg(Meta::FIELD)
                    .arg(meta.to_field());
            }
            Mode::Rewrite => {
                cmd.arg("").arg(&field).arg(if staging { "s" } else { "" });
                push_metadata(&mut cmd, record, meta, score);
            }
        }
        let reply = scripts::run_staged(
            &scripts::SAVE,
            &redis_key,
            &field,
            &packed,
            cmd,
            &mut self.connection(),
        )
        .await
        .map_err(map)?;
        match reply {
            Value::Int(score) => Ok(Written::Stored {
                index_score: u64::try_from(score).unwrap_or(0),
                meta,
            }),
            reply @ Value::Array(_) => redis::from_redis_value::<Fields>(reply)
                .map(Written::Lost)
                .map_err(|error| {
                    Error::backend(format!("unexpected reply from the save script: {error}"))
                }),
            other => Err(Error::backend(format!(
                "unexpected reply from the save script: {other:?}"
            ))),
        }
    }

    /// The whole stored hash of `key` (empty when absent or of another type).
    async fn read_hash(&self, key: &SessionKey) -> Result<Fields> {
        match redis::cmd("HGETALL")
            .arg(self.session_key(key))
            .query_async(&mut self.connection())
            .await
        {
            Ok(fields) => Ok(fields),
            Err(error) if crate::error::is_wrong_type(&error) => Ok(Fields::new()),
            Err(error) => Err(map(error)),
        }
    }
}

/// The index score to store with `merged`, merged into `stored` (stored with `stored_score`),
/// and whether the principal's index needs the session again: when the principal changed, or
/// the new deadline passed the stored score.
pub(crate) fn next_score(
    stored: &SessionRecord,
    stored_score: Option<u64>,
    merged: &SessionRecord,
) -> (u64, bool) {
    let kept = stored_score
        .filter(|score| stored.principal == merged.principal && merged.deadline_ms() <= *score);
    match kept {
        Some(score) => (score, false),
        None => (index_score(merged), merged.principal.is_some()),
    }
}
