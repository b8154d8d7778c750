//! The save of a session of the string layout (the `strings` module): where the server has it,
//! one plain `SET key value IFDEQ <digest of the value read> PXAT deadline` (Redis 8.4 and
//! later) or `SET key value IFEQ <value read> PXAT deadline` (Valkey 8.1 and later), no script.
//! The server writes only if the stored value is still the one the saver computed from, and
//! answers `OK` or nothing, so the common reply is two bytes. Elsewhere a script compares the
//! stored header instead, and a large value is staged under a second key and renamed into
//! place (see [`RedisStore::set_if_equal`]).
//!
//! Why the digest where the server has it: `IFEQ` sends the value read back with the new one,
//! twice the bytes for the client to write and the server to read (40 KB for a 20 KB
//! session); `IFDEQ` sends the value's 64-bit XXH3 digest, 16 hex digits, and the server
//! hashes the stored value to compare. On Redis 8.6.3, session-bench's large cycle ran
//! 47.7–49.0k/s with `IFDEQ` and 40.7–41.2k/s with `IFEQ` (small cycles level), although a
//! build by Redis's own `make` hashes slowly (its bundled xxHash is compiled without
//! optimisation: 7.6 µs of server CPU per 20 KB `SET … IFDEQ`, 1.1–1.4 µs with `IFEQ`): the
//! client's CPU and the bytes on the wire weigh more. Two values with one digest would pass
//! for each other: for a save to be wrongly written, the value another writer stored since the
//! load must collide with the loaded one (a chance of 2^-64 per lost race; every stored value
//! carries a new version and access time).
//!
//! A save from a copy this store loaded writes that copy with its changes, compared with the
//! value it was loaded from ([`SessionInternals::load_value`]): one round trip. A save that
//! merged leaves no load value, so the copy's next save merges too (if others' changes were
//! merged, core refuses the copy's snapshot anyway). Any other save, and one that lost, reads
//! the stored session (`GET`), merges its delta into it with core's
//! [`SessionRecord::apply`](session_core::raw::SessionRecord::apply) (liveness, the optimistic
//! version check, the limits, per-attribute last-write-wins) and writes under the same
//! comparison; a lost write answers nothing, so the next attempt reads again. A key gone
//! meanwhile fails the comparison and is not written: no resurrection. The principal index is kept by the client, which knows the
//! stored principal and score from the value it compared with.

use std::sync::atomic::Ordering;

use session_core::raw::{backoff, SessionInternals};
use session_core::{Bytes, Error, Result, Session, SessionKey};

use crate::error::{is_wrong_type, map};
use crate::meta::index_score;
use crate::save::{next_score, SAVE_ATTEMPTS};
use crate::scripts;
use crate::store::{RedisStore, MERGED_STRING};
use crate::strings;

/// How a save of the string layout ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum StringSave {
    Saved,
    /// The key holds a hash: a session of the hash layout, which that layout's save writes.
    Hash,
}

/// How a save of a string-layout session makes sure the stored value is still the one it
/// computed from ([`RedisStore::comparison`]): the best the server has, found when the store
/// opens (whatever layout the store writes: a store of the hash layout saves the string
/// sessions it meets too).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
#[non_exhaustive]
pub enum Comparison {
    /// A script compares the stored value's header, then writes: a server without a
    /// conditional `SET` (Redis before 8.4, Valkey before 8.1).
    Script = 0,
    /// `SET … IFEQ <value read>`: Valkey 8.1 and later.
    Value = 1,
    /// `SET … IFDEQ <digest of the value read>`: Redis 8.4 and later.
    Digest = 2,
}

impl Comparison {
    fn from_u8(level: u8) -> Self {
        match level {
            2 => Comparison::Digest,
            1 => Comparison::Value,
            _ => Comparison::Script,
        }
    }

    /// The next one down, for a server that refused this one.
    fn lower(self) -> Self {
        match self {
            Comparison::Digest => Comparison::Value,
            _ => Comparison::Script,
        }
    }
}

/// What a conditional `SET` answered.
enum SetIfEqual {
    Written,
    /// The stored value is another (or none).
    Lost,
    /// The key holds another type.
    WrongType,
}

impl SetIfEqual {
    /// The answer of the scripts that stand in for `SET … IFEQ`: 1 written, -1 another type,
    /// else lost.
    fn from_script(answer: i64) -> Self {
        match answer {
            1 => SetIfEqual::Written,
            -1 => SetIfEqual::WrongType,
            _ => SetIfEqual::Lost,
        }
    }
}

/// What the one-round-trip save did.
enum Snapshot {
    Saved,
    Hash,
    /// Someone wrote since the load.
    Lost,
    /// This save needs the merge (see [`RedisStore::save_snapshot`]).
    NotTried,
}

impl RedisStore {
    /// How this store's saves of the string layout compare the stored value now: what the
    /// server had when the store opened, lowered for good if a server refuses it later (a
    /// failover to an older version). Worth a look after a deployment: [`Comparison::Script`]
    /// costs the server about three times the CPU of a plain `SET` per save.
    pub fn comparison(&self) -> Comparison {
        Comparison::from_u8(self.inner.comparison.load(Ordering::Relaxed))
    }

    /// Makes this store (every handle on its connection) compare with `comparison` from now
    /// on, as if the server had offered it at open: a test of how a save copes with a server
    /// that refuses it (as an older node after a failover would).
    #[cfg(feature = "testing")]
    pub fn assume_comparison(&self, comparison: Comparison) {
        self.inner
            .comparison
            .store(comparison as u8, Ordering::Relaxed);
    }

    pub(crate) async fn save_string(&self, session: &mut Session, now: u64) -> Result<StringSave> {
        let key = session.key();
        let instance = self.inner.instance;
        let loaded = session
            .load_value()
            .filter(|(by, _)| *by == instance)
            .map(|(_, value)| value.clone());
        let read = match loaded {
            Some(loaded) => match self.save_snapshot(session, now, &loaded).await? {
                Snapshot::Saved => return Ok(StringSave::Saved),
                Snapshot::Hash => return Ok(StringSave::Hash),
                // Not the loaded value: a merge's errors (liveness, limits) must be the
                // stored session's, and the copy may be behind a touch.
                Snapshot::Lost | Snapshot::NotTried => self.read_string(&key).await?,
            },
            None => self.read_string(&key).await?,
        };
        let Some(mut current) = read else {
            return Ok(StringSave::Hash);
        };
        for attempt in 0..SAVE_ATTEMPTS {
            let Some(value) = current else {
                self.forget(&key);
                return Err(Error::NotFound);
            };
            let stored = match strings::parse(value) {
                Ok(stored) => stored,
                Err(error) => return Err(self.undecodable_in_save(&key, &error)),
            };
            let merged = self.merge_into(&key, session, &stored.record, now)?;
            let (score, index_again) = next_score(&stored.record, stored.index_score, &merged);
            let value = strings::encode(&merged, score)?;
            match self
                .set_if_equal(&key, &value, &stored.value, merged.deadline_ms())
                .await?
            {
                SetIfEqual::Written => {
                    session.mark_persisted(merged.version, now);
                    // No load value: the next save reads what to compare with.
                    session.set_load_token(instance, MERGED_STRING);
                    self.refresh_string(&key, &merged, &Bytes::from(value));
                    let old = stored.record.principal.as_deref();
                    self.reindex_merged(&key, old, &merged, score, index_again)
                        .await?;
                    return Ok(StringSave::Saved);
                }
                SetIfEqual::Lost => {
                    match self.read_string(&key).await? {
                        Some(value) => current = value,
                        None => return Ok(StringSave::Hash),
                    }
                    backoff(attempt).await;
                }
                SetIfEqual::WrongType => return Ok(StringSave::Hash),
            }
        }
        Err(Error::retries_exhausted(
            "a save kept losing its compare-and-set write to other processes",
            SAVE_ATTEMPTS,
        ))
    }

    /// The one-round-trip save of a copy loaded from `loaded`: the copy with its changes,
    /// written if the stored value is still `loaded`. Not tried when the save needs the stored
    /// session to merge into (the same rules as the hash layout's, see the `save` module): a
    /// changed principal or timeout, an expired copy, a copy over a limit, a copy behind the
    /// store.
    async fn save_snapshot(
        &self,
        session: &mut Session,
        now: u64,
        loaded: &Bytes,
    ) -> Result<Snapshot> {
        if session.principal_changed() || session.timeouts_changed() || session.deadline_ms() <= now
        {
            return Ok(Snapshot::NotTried);
        }
        let Ok(stored_score) = strings::index_score(loaded) else {
            return Ok(Snapshot::NotTried);
        };
        let Some(mut saved) = session.snapshot(now)? else {
            return Ok(Snapshot::NotTried);
        };
        if saved.check_limits(&self.settings.limits).is_err() {
            return Ok(Snapshot::NotTried);
        }
        saved.version += 1;
        let (score, index_again) = match (&saved.principal, stored_score) {
            (None, _) => (0, false),
            (Some(_), Some(score)) if saved.deadline_ms() <= score => (score, false),
            (Some(_), _) => (index_score(&saved), true),
        };
        let value = strings::encode(&saved, score)?;
        let key = session.key();
        match self
            .set_if_equal(&key, &value, loaded, saved.deadline_ms())
            .await?
        {
            SetIfEqual::Written => {
                session.mark_persisted(saved.version, now);
                let value = Bytes::from(value);
                self.refresh_string(&key, &saved, &value);
                session.set_load_value(self.inner.instance, value);
                if let (Some(principal), true) = (&saved.principal, index_again) {
                    self.index_add(principal, &key, score).await?;
                }
                Ok(Snapshot::Saved)
            }
            SetIfEqual::Lost => Ok(Snapshot::Lost),
            SetIfEqual::WrongType => Ok(Snapshot::Hash),
        }
    }

    /// `SET key value IFDEQ digest(expected) PXAT deadline` or `SET key value IFEQ expected
    /// PXAT deadline`; the same in a script where the server has neither: a server found without
    /// them at open (Redis 7), or one that refuses them later (a Cluster node of an older
    /// version, an older replica promoted by a failover; the store uses the next comparison
    /// down from then on, until it is opened again). The script compares the stored header
    /// with `expected`'s (see `scripts::SET_IF_EQUAL`); a value too large to pass to it is
    /// staged ([`RedisStore::set_staged_if_equal`]).
    async fn set_if_equal(
        &self,
        key: &SessionKey,
        value: &[u8],
        expected: &[u8],
        deadline: u64,
    ) -> Result<SetIfEqual> {
        let redis_key = self.session_key(key);
        loop {
            let comparison = self.comparison();
            let (condition, operand): (&str, &[u8]) = match comparison {
                Comparison::Script => break,
                Comparison::Value => ("IFEQ", expected),
                Comparison::Digest => ("IFDEQ", &digest(expected)),
            };
            // Sized up front: a command buffer grown argument by argument reallocates.
            let mut cmd =
                redis::Cmd::with_capacity(7, 48 + redis_key.len() + value.len() + operand.len());
            cmd.arg("SET")
                .arg(&redis_key)
                .arg(value)
                .arg(condition)
                .arg(operand)
                .arg("PXAT")
                .arg(deadline);
            match cmd
                .query_async::<redis::Value>(&mut self.connection())
                .await
            {
                Ok(redis::Value::Okay) => return Ok(SetIfEqual::Written),
                Ok(redis::Value::Nil) => return Ok(SetIfEqual::Lost),
                Ok(other) => {
                    return Err(Error::backend(format!(
                        "unexpected reply to SET … {condition}: {other:?}"
                    )))
                }
                Err(error) if is_wrong_type(&error) => return Ok(SetIfEqual::WrongType),
                Err(error) if refuses_syntax(&error) => {
                    tracing::warn!(
                        error = %error,
                        "the server refused SET … {condition}; saves of the string layout compare otherwise from now on"
                    );
                    // Only down from the level that was refused: a concurrent save may have
                    // lowered it already.
                    let _ = self.inner.comparison.compare_exchange(
                        comparison as u8,
                        comparison.lower() as u8,
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    );
                }
                Err(error) => return Err(map(error)),
            }
        }
        // A value without a header (not of this layout) is compared whole, and cannot match.
        let header = expected
            .iter()
            .position(|&byte| byte == b'\n')
            .map_or(expected, |end| &expected[..=end]);
        if !scripts::travels_inline(value) {
            return self
                .set_staged_if_equal(key, &redis_key, value, header, deadline)
                .await;
        }
        let mut cmd = scripts::call_sized(
            &scripts::SET_IF_EQUAL,
            &redis_key,
            3,
            32 + value.len() + header.len(),
        );
        cmd.arg(value).arg(header).arg(deadline);
        let written: i64 = scripts::run(&scripts::SET_IF_EQUAL, &cmd, &mut self.connection())
            .await
            .map_err(map)?;
        Ok(SetIfEqual::from_script(written))
    }

    /// [`RedisStore::set_if_equal`] through the script, for a value too large to pass to it
    /// (Lua copies every argument: with 20 KB sessions, a read and a save cost Redis 7.0 47 µs
    /// of CPU that way, 18 staged): the value is written by a plain `SET` to a staging key in
    /// the session's slot, with the session's expiry, and the script, in the same transaction,
    /// renames it over the session or deletes it. A client that dies between the two leaves
    /// the staging key until that expiry; its expiry is no session's (the listeners ignore it).
    async fn set_staged_if_equal(
        &self,
        key: &SessionKey,
        redis_key: &str,
        value: &[u8],
        header: &[u8],
        deadline: u64,
    ) -> Result<SetIfEqual> {
        let stage_key = self.staging_key(key);
        let mut stage = redis::Cmd::with_capacity(5, 48 + stage_key.len() + value.len());
        stage
            .arg("SET")
            .arg(&stage_key)
            .arg(value)
            .arg("PXAT")
            .arg(deadline);
        let script = &scripts::SET_STAGED_IF_EQUAL;
        let mut cmd =
            redis::Cmd::with_capacity(6, 64 + redis_key.len() + stage_key.len() + header.len());
        cmd.arg("EVALSHA")
            .arg(script.get_hash())
            .arg(2)
            .arg(redis_key)
            .arg(&stage_key)
            .arg(header);
        let reply = scripts::run_after(script, redis_key, stage, cmd, &mut self.connection())
            .await
            .map_err(map)?;
        let written: i64 = redis::from_redis_value(reply).map_err(|error| {
            Error::backend(format!("unexpected reply to a staged save: {error}"))
        })?;
        Ok(SetIfEqual::from_script(written))
    }
}

/// The digest `SET … IFDEQ` compares with the stored value's: XXH3-64 in 16 lowercase hex
/// digits, as the server formats it (`DIGEST`).
fn digest(value: &[u8]) -> [u8; 16] {
    let mut hex = [0u8; 16];
    // Cannot fail: 8 bytes make 16 digits.
    let _ = hex::encode_to_slice(xxhash_rust::xxh3::xxh3_64(value).to_be_bytes(), &mut hex);
    hex
}

/// Whether the server refused a command's syntax (an option it does not know).
pub(crate) fn refuses_syntax(error: &redis::RedisError) -> bool {
    error.code() == Some("ERR")
        && error
            .detail()
            .is_some_and(|detail| detail.to_ascii_lowercase().contains("syntax"))
}

#[cfg(test)]
mod tests {
    use super::digest;

    /// The digests the server's `DIGEST` answered (the first is Redis's documented example).
    #[test]
    fn digest_is_the_servers() {
        assert_eq!(&digest(b"Hello world"), b"b6acb9d84a38ff74");
        assert_eq!(&digest(b"world"), b"d6476c25083d69be");
    }
}
