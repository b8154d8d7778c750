//! The Memcached store.
//!
//! # Expiry strategy
//!
//! One item per session, under `<prefix><hex of the session key>` (64 hex digits: within
//! memcached's 250-byte key limit and free of spaces whatever the id), on the one server that
//! rendezvous hashing picks for the key. The value is the encoded [`SessionRecord`] — the
//! deadline is computed from its metadata, to the millisecond, by every read: a session is
//! absent from its deadline on. memcached counts expiry in whole seconds, so the item's
//! exptime is the deadline rounded up plus one second: the server drops the item at most two
//! seconds after the session ended, never before (a relative TTL up to 30 days, an absolute
//! unix time beyond, as memcached reads any larger number as a date).
//!
//! Writes are compare-and-swap on the item (`mg … c`, then `ms … C<cas>`): a save merges its
//! delta into the latest record with [`SessionRecord::apply`] and writes it only if nobody
//! wrote since it read, else reads again (bounded, with backoff); an item that is gone is
//! `NotFound` and never re-added. A save of a copy this instance loaded skips the read: `find`
//! attaches the CAS token it saw to the session it returns, and when nobody wrote or touched
//! the item since, the loaded copy with its changes *is* the merge, written with that token in
//! one round trip (a lost race falls back to the loop). Writers of one session in this process take turns (a striped
//! lock), so CAS retries only happen between processes. A create is an add (`ME`), which never
//! overwrites.
//!
//! A touch moves the access time inside the record (so that the deadline `find` computes
//! moves) and the item's exptime with it; both need the stored timeouts, so a touch is one read
//! and one compare-and-swap write — two round trips, where a server with scripts (Redis) or
//! statements (SQL) needs one. memcached has no conditional update of a value's part.
//!
//! What memcached cannot promise: an item may be evicted before its exptime when the server
//! needs memory, and a restarted server has lost every session it held.

use std::sync::Arc;

use async_memcached::{MetaProtocol, Status};
use session_core::raw::time::now_millis;
use session_core::raw::{
    backoff, random_u64, report_undecodable, rotate_id, Creation, Rotation, Run, Runner,
    SessionInternals, SessionRecord, WriterTurns,
};
use session_core::{
    async_trait, Bytes, Capabilities, Error, Operation, Result, Session, SessionId, SessionKey,
    SessionRepository, SessionSettings,
};

use crate::config::{Config, MAX_KEY_LEN};
use crate::error::{map, status};
use crate::pool::Server;
use crate::ring::pick;

/// Compare-and-swap rounds a save or touch tries against other processes' writes.
const CAS_ATTEMPTS: usize = 16;
/// memcached reads an exptime above this many seconds as a unix time.
const RELATIVE_EXPTIME_MAX: u64 = 30 * 24 * 60 * 60;
/// Bytes memcached adds to an item beyond its key and value (header, CAS, suffix).
const ITEM_OVERHEAD: usize = 64;

/// What the server holds for a key.
enum Stored {
    Absent,
    Undecodable,
    Record { record: SessionRecord, cas: u64 },
}

/// How a write of a record went.
enum Written {
    Stored,
    /// Add: the key is taken. Compare-and-swap: the item changed since it was read.
    Refused,
    /// Compare-and-swap: the item is gone.
    Missing,
}

struct Inner {
    /// Tags the CAS tokens `find` attaches to the sessions it returns
    /// ([`SessionInternals::set_load_token`]): tokens are per server, so a session another
    /// store instance loaded must not be written with its token.
    instance: u64,
    servers: Vec<Server>,
    addresses: Vec<String>,
    config: Config,
    runner: Runner,
    item_size_max: usize,
    turns: WriterTurns,
}

/// Sessions in one or several memcached servers.
///
/// Cloning, or [`MemcachedStore::with_settings`], gives another handle on the same pools.
#[derive(Clone)]
pub struct MemcachedStore {
    inner: Arc<Inner>,
    settings: Arc<SessionSettings>,
}

impl std::fmt::Debug for MemcachedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemcachedStore")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// The exptime memcached must get for a session whose deadline is `deadline_ms`, at `now_ms`:
/// the deadline rounded up to the second, plus one; relative when that fits in 30 days, an
/// absolute unix time beyond.
pub(crate) fn exptime(deadline_ms: u64, now_ms: u64) -> u64 {
    let relative = deadline_ms.saturating_sub(now_ms).div_ceil(1000) + 1;
    if relative > RELATIVE_EXPTIME_MAX {
        deadline_ms.div_ceil(1000) + 1
    } else {
        relative
    }
}

/// Room for a meta command flag with a number: its letter and the 20 digits of a `u64`.
const FLAG_BYTES: usize = 21;

/// `letter` followed by `n` in decimal, in `out`: the flags a write sends (exptime, CAS
/// token) without allocating, as `format!` did twice per save.
fn flag(out: &mut [u8; FLAG_BYTES], letter: u8, n: u64) -> &str {
    let mut digits = itoa::Buffer::new();
    let digits = digits.format(n).as_bytes();
    out[0] = letter;
    out[1..=digits.len()].copy_from_slice(digits);
    // ASCII digits and an ASCII letter: always UTF-8.
    std::str::from_utf8(&out[..=digits.len()]).unwrap_or_default()
}

/// A session's memcached key, on the stack: the prefix (checked at config time to leave room)
/// and the session key's 64 hex digits.
struct ItemKey {
    bytes: [u8; MAX_KEY_LEN],
    len: usize,
}

impl ItemKey {
    fn new(prefix: &str, key: &SessionKey) -> Self {
        let mut bytes = [0; MAX_KEY_LEN];
        let prefix = &prefix.as_bytes()[..prefix.len().min(MAX_KEY_LEN - 64)];
        bytes[..prefix.len()].copy_from_slice(prefix);
        bytes[prefix.len()..prefix.len() + 64].copy_from_slice(&key.hex_digits());
        ItemKey {
            bytes,
            len: prefix.len() + 64,
        }
    }
}

impl AsRef<[u8]> for ItemKey {
    fn as_ref(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl MemcachedStore {
    /// Sets up the connection pools and reads the servers' item size limit (`stats settings`;
    /// the smallest over all servers, [`Config::item_size_max`] for a server that does not
    /// say). Fails if a server cannot be reached within the timeout.
    pub async fn open(config: Config, settings: SessionSettings) -> Result<Self> {
        config.validate()?;
        let runner = Runner::new("memcached", config.timeout);
        let mut servers = Vec::with_capacity(config.servers.len());
        let mut item_size_max = usize::MAX;
        for address in &config.servers {
            let server = Server::new(address, config.pool_size)?;
            let limit = runner
                .run(Operation::Open, server.item_size_max())
                .await?
                .unwrap_or(config.item_size_max);
            item_size_max = item_size_max.min(limit);
            servers.push(server);
        }
        Ok(MemcachedStore {
            inner: Arc::new(Inner {
                instance: random_u64(),
                addresses: config.servers.clone(),
                servers,
                runner,
                item_size_max,
                turns: WriterTurns::new(),
                config,
            }),
            settings: Arc::new(settings),
        })
    }

    /// Another handle on the same pools with other session settings.
    pub fn with_settings(&self, settings: SessionSettings) -> Self {
        MemcachedStore {
            inner: Arc::clone(&self.inner),
            settings: Arc::new(settings),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The largest item the servers take (bytes of key and value), read at open.
    pub fn item_size_max(&self) -> usize {
        self.inner.item_size_max
    }

    /// The address of the server that holds the session of `key`.
    pub fn server_of(&self, key: &SessionKey) -> &str {
        &self.inner.addresses[pick(&self.inner.addresses, key.as_bytes())]
    }

    /// The memcached key of a session.
    pub fn item_key(&self, key: &SessionKey) -> String {
        String::from_utf8_lossy(self.key_of(key).as_ref()).into_owned()
    }

    /// [`MemcachedStore::item_key`] without allocating: every operation builds one.
    fn key_of(&self, key: &SessionKey) -> ItemKey {
        ItemKey::new(&self.inner.config.prefix, key)
    }

    pub(crate) fn server(&self, key: &SessionKey) -> &Server {
        &self.inner.servers[pick(&self.inner.addresses, key.as_bytes())]
    }

    /// `future` under the store's timeout (see [`Runner::run`]; a plain function, so that the
    /// operation's future is not kept twice in an `async fn`'s state).
    pub(crate) fn run<F, T>(&self, operation: Operation, future: F) -> Run<F>
    where
        F: std::future::Future<Output = Result<T>>,
    {
        self.inner.runner.run(operation, future)
    }

    async fn fetch(&self, key: &SessionKey) -> Result<Stored> {
        let item_key = self.key_of(key);
        // The connection goes back to the pool as soon as the reply is in: with more tasks
        // than connections, one held through the decode makes the others wait for it.
        let item = {
            let mut connection = self.server(key).connection().await?;
            connection
                .meta_get(&item_key, false, None, Some(&["v", "c"]))
                .await
                .map_err(map)?
        };
        let Some(item) = item else {
            return Ok(Stored::Absent);
        };
        let (Some(data), Some(cas)) = (item.data, item.cas) else {
            return Ok(Stored::Absent);
        };
        // The record keeps the buffer: its values are slices of it, not copies.
        let data = Bytes::from(data);
        Ok(match SessionRecord::decode_shared(data) {
            Ok(record) => Stored::Record { record, cas },
            Err(error) => {
                report_undecodable(key, &error);
                Stored::Undecodable
            }
        })
    }

    /// Writes `record`: an add when `cas` is `None`, else a compare-and-swap.
    async fn write(
        &self,
        key: &SessionKey,
        record: &SessionRecord,
        cas: Option<u64>,
        now: u64,
    ) -> Result<Written> {
        let bytes = record.encode()?;
        let item_key = self.key_of(key);
        let size = bytes.len() + item_key.len + ITEM_OVERHEAD;
        if size > self.inner.item_size_max {
            return Err(Error::TooLarge {
                what: "memcached item",
                actual: size,
                limit: self.inner.item_size_max,
            });
        }
        let mut ttl = [0; FLAG_BYTES];
        let ttl = flag(&mut ttl, b'T', exptime(record.deadline_ms(), now));
        let mut mode = [0; FLAG_BYTES];
        let mode = match cas {
            Some(cas) => flag(&mut mode, b'C', cas),
            None => "ME",
        };
        let mut connection = self.server(key).connection().await?;
        let written = connection
            .meta_set(&item_key, bytes.as_slice(), false, None, Some(&[mode, ttl]))
            .await;
        match written {
            Ok(_) => Ok(Written::Stored),
            Err(error) => match status(&error) {
                Some(Status::NotStored | Status::Exists) => Ok(Written::Refused),
                Some(Status::NotFound) => Ok(Written::Missing),
                _ => Err(map(error)),
            },
        }
    }

    /// Deletes the item of `key` (only if still at `cas`, when given); whether it did.
    async fn remove(&self, key: &SessionKey, cas: Option<u64>) -> Result<bool> {
        let mut compare = [0; FLAG_BYTES];
        let compare = cas.map(|cas| flag(&mut compare, b'C', cas));
        let mut connection = self.server(key).connection().await?;
        let removed = connection
            .meta_delete(&self.key_of(key), false, None, Some(compare.as_slice()))
            .await;
        match removed {
            Ok(_) => Ok(true),
            Err(error) => match status(&error) {
                Some(Status::NotFound | Status::Exists) => Ok(false),
                _ => Err(map(error)),
            },
        }
    }

    /// Changes the live record of `key` with `change` and writes it back by compare-and-swap,
    /// reading again when another process wrote meanwhile. `NotFound` if not live.
    async fn update<T>(
        &self,
        key: &SessionKey,
        mut change: impl FnMut(&mut SessionRecord, u64) -> Result<T>,
    ) -> Result<T> {
        let _turn = self.inner.turns.take(key).await;
        for attempt in 0..CAS_ATTEMPTS {
            let now = now_millis();
            let Stored::Record { mut record, cas } = self.fetch(key).await? else {
                return Err(Error::NotFound);
            };
            let value = change(&mut record, now)?;
            match self.write(key, &record, Some(cas), now).await? {
                Written::Stored => return Ok(value),
                Written::Missing => return Err(Error::NotFound),
                Written::Refused => backoff(attempt).await,
            }
        }
        Err(Error::retries_exhausted(
            "a write kept losing its compare-and-swap to other processes",
            CAS_ATTEMPTS,
        ))
    }

    /// The one-round-trip save: if this instance loaded `session` and remembers the CAS token
    /// of that load, writes the loaded copy with its changes under that token. `Ok(None)` when
    /// it cannot (no token, or the item changed since): the caller merges.
    async fn save_loaded(&self, session: &Session, now: u64) -> Result<Option<u64>> {
        let key = session.key();
        // The token stands for the copy as loaded: saving or renaming the session clears it.
        let Some((instance, cas)) = session.load_token() else {
            return Ok(None);
        };
        if instance != self.inner.instance {
            return Ok(None);
        }
        // Timeout changes move the deadline the merge checks liveness against: merge those.
        if session.timeouts_changed() {
            return Ok(None);
        }
        // Nobody wrote since the load (the token says so), so the stored record is the loaded
        // one: live until the loaded copy's deadline, and the merge of this save's delta is the
        // loaded copy with its changes.
        if session.deadline_ms() <= now {
            return Err(Error::NotFound);
        }
        let Some(mut record) = session.snapshot(now)? else {
            return Ok(None);
        };
        record.version += 1;
        if record.check_limits(&self.settings.limits).is_err() {
            // Perhaps not once merged into what is stored: the merge reports it exactly.
            return Ok(None);
        }
        let _turn = self.inner.turns.take(&key).await;
        match self.write(&key, &record, Some(cas), now).await? {
            Written::Stored => Ok(Some(record.version)),
            Written::Missing => Err(Error::NotFound),
            Written::Refused => Ok(None),
        }
    }

    /// One attempt of `change_id`: add the live record under `new`, then delete `old` only if
    /// nobody wrote it since it was read (else undo the add and report the race). If the
    /// process stops between the two, both items exist until the old one expires; the caller
    /// never learned the new id, so the old one goes on working until then.
    async fn rotate(&self, old: SessionKey, new: SessionKey) -> Result<Rotation> {
        let now = now_millis();
        let Stored::Record { record, cas } = self.fetch(&old).await? else {
            return Ok(Rotation::Gone);
        };
        if !record.is_live_at(now) {
            return Ok(Rotation::Gone);
        }
        match self.write(&new, &record, None, now).await? {
            Written::Stored => {}
            Written::Refused | Written::Missing => return Ok(Rotation::IdTaken),
        }
        if self.remove(&old, Some(cas)).await? {
            return Ok(Rotation::Moved);
        }
        self.remove(&new, None).await?;
        Ok(Rotation::Raced)
    }
}

#[async_trait]
impl SessionRepository for MemcachedStore {
    fn settings(&self) -> &Arc<SessionSettings> {
        &self.settings
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::none().with_import(true)
    }

    async fn import(&self, id: &SessionId, record: &SessionRecord) -> Result<bool> {
        let now = now_millis();
        record.check_importable(now, &self.settings.limits)?;
        let key = id.key();
        let written = self.run(Operation::Import, self.write(&key, record, None, now));
        Ok(matches!(written.await?, Written::Stored))
    }

    async fn create(&self, session: &mut Session) -> Result<()> {
        let creation = Creation::begin(session)?;
        let record = creation.record();
        let inserted = creation.insert_under_free_id(|key| async move {
            let written = self.write(&key, record, None, now_millis()).await?;
            Ok(matches!(written, Written::Stored))
        });
        let id = self.run(Operation::Create, inserted).await?;
        creation.finish(session, id);
        Ok(())
    }

    async fn find(&self, id: &SessionId) -> Result<Option<Session>> {
        let key = id.key();
        let stored = self.run(Operation::Find, self.fetch(&key)).await?;
        Ok(match stored {
            Stored::Record { record, cas } if record.is_live_at(now_millis()) => {
                let mut session =
                    Session::from_record(id.clone(), record, Arc::clone(&self.settings));
                session.set_load_token(self.inner.instance, cas);
                Some(session)
            }
            _ => None,
        })
    }

    async fn save(&self, session: &mut Session) -> Result<()> {
        let now = now_millis();
        let key = session.key();
        let limits = self.settings.limits;
        if let Some(version) = self
            .run(Operation::Save, self.save_loaded(session, now))
            .await?
        {
            session.mark_persisted(version, now);
            return Ok(());
        }
        let version = {
            let delta = session.delta(now)?;
            let merged = self.update(&key, |record, now| {
                record.apply(&delta, now, &limits)?;
                Ok(record.version)
            });
            self.run(Operation::Save, merged).await?
        };
        session.mark_persisted(version, now);
        Ok(())
    }

    async fn touch(&self, id: &SessionId) -> Result<()> {
        let key = id.key();
        let touched = self.update(&key, |record, now| record.touch(now));
        self.run(Operation::Touch, touched).await
    }

    async fn delete_by_key(&self, key: &SessionKey) -> Result<()> {
        self.run(Operation::Delete, self.remove(key, None))
            .await
            .map(|_| ())
    }

    async fn change_id(&self, session: &mut Session) -> Result<()> {
        let rotation = rotate_id(session, |old, new| self.rotate(old, new));
        self.run(Operation::ChangeId, rotation).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::{exptime, flag, ItemKey, FLAG_BYTES, RELATIVE_EXPTIME_MAX};
    use crate::config::MAX_PREFIX_LEN;
    use session_core::SessionId;

    #[test]
    fn item_keys_are_the_prefix_and_the_hex_of_the_session_key() {
        let key = SessionId::generate().key();
        for prefix in ["", "session:", &"p".repeat(MAX_PREFIX_LEN)] {
            let item = ItemKey::new(prefix, &key);
            assert_eq!(
                item.as_ref(),
                format!("{prefix}{}", key.to_hex()).as_bytes()
            );
        }
    }

    #[test]
    fn flags_are_the_letter_and_the_number_in_decimal() {
        for n in [0, 7, 10, 1_799, u64::from(u32::MAX), u64::MAX] {
            let mut out = [0; FLAG_BYTES];
            assert_eq!(flag(&mut out, b'C', n), format!("C{n}"));
        }
    }

    #[test]
    fn exptime_is_relative_up_to_thirty_days_and_absolute_beyond() {
        let now = 1_795_800_000_123;
        // Rounded up to the second, plus one: never before the deadline.
        assert_eq!(exptime(now + 1, now), 2);
        assert_eq!(exptime(now + 1_000, now), 2);
        assert_eq!(exptime(now + 1_001, now), 3);
        assert_eq!(
            exptime(now - 5_000, now),
            1,
            "past deadlines expire at once"
        );
        // The last relative value: 30 days in seconds, exactly.
        let at_limit = now + (RELATIVE_EXPTIME_MAX - 1) * 1000;
        assert_eq!(exptime(at_limit, now), RELATIVE_EXPTIME_MAX);
        // One millisecond more and memcached would read the number as a date in 1970.
        let past_limit = at_limit + 1;
        let absolute = exptime(past_limit, now);
        assert_eq!(absolute, past_limit.div_ceil(1000) + 1);
        assert!(absolute > RELATIVE_EXPTIME_MAX);
        // An absolute time is the deadline's second plus one, like the relative form.
        let year = now + 365 * 24 * 3600 * 1000;
        assert_eq!(exptime(year, now), year.div_ceil(1000) + 1);
    }
}
