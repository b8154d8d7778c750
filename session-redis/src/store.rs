//! The Redis store.
//!
//! # Expiry strategy
//!
//! One hash per session, key `<prefix>s:{<key hex>}`; the braces are a hash tag, so every key
//! of a session stays in one Cluster slot. The key's own expiry is set to the session's deadline
//! (PEXPIREAT) by every create, save and touch, so Redis evicts it exactly then; reads also
//! compare the stored deadline, so a session is hidden at its deadline even before Redis gets
//! to it. A session is four fields at most: metadata, the attributes packed in one value,
//! principal, index score (layout in the `scripts` module), so a read parses a few values
//! whatever the number of attributes. Create, touch and delete are single server-side scripts:
//! one atomic round trip each. A save is a version-checked write of the record the client
//! computed: from a copy nobody wrote or touched since its load, one round trip; otherwise the
//! script answers with the stored hash, the client merges its delta into it with core's merge
//! and writes again (see the `save` module). A read is one HGET of the metadata field when the
//! near cache holds a copy that the field confirms, else one HGETALL.
//!
//! A store may write the string layout instead (the `strings` module; [`Layout`], the
//! default): one string per session at the same key, its expiry at the deadline; a read is one
//! `GET`, a save one `SET … IFDEQ` (Redis 8.4+) or `SET … IFEQ` (Valkey 8.1+) comparing the
//! value the saver loaded, or a script where the server has neither (the `save_string`
//! module). Every store reads, saves, touches and deletes sessions of both layouts: the touch
//! and delete scripts look at the key's type, and a read that meets the other type reads it as
//! the other layout.
//!
//! The principal index is one sorted set per principal, scored by each session's deadline plus
//! a slack and expiring with its highest score; it lives in its own slot, so it is updated
//! after the session script when that script says the session outgrew its score, and checked
//! against the sessions on every read, where dead members are pruned: it cannot leak,
//! keyspace notifications or not.

use std::sync::Arc;

use redis::{Cmd, Value};
use session_core::raw::time::now_millis;
use session_core::raw::{
    delete_principal, list_principal, random_u64, report_undecodable, rotate_id, Creation,
    EventBus, Lookup, Rotated, Rotation, Run, Runner, SessionInternals, SessionRecord, WriterTurns,
};
use session_core::Bytes;
use session_core::{
    async_trait, Capabilities, Error, EventSubscription, Operation, Result, Session, SessionEvent,
    SessionId, SessionInfo, SessionKey, SessionRepository, SessionSettings,
};

use crate::cache::NearCache;
use crate::config::{Config, Layout};
use crate::connection::{connect, trusted_ca, Connection};
use crate::error::{is_wrong_type, map};
use crate::listener::{event_channel, listen};
use crate::meta::{
    attributes_field, index_score, packed_attributes, parse_hash, push_metadata, Fields, Meta,
    INLINE_TOKEN,
};
use crate::save_string::Comparison;
use crate::scripts;
use crate::strings;

pub(crate) struct Inner {
    /// Timeout and store name of every operation.
    runner: Runner,
    connection: Connection,
    pub(crate) near_cache: Option<NearCache>,
    pub(crate) config: Config,
    /// Events received by this instance's listeners (see [`listen`]).
    events: EventBus,
    /// Whether keyspace notifications for expired keys are on, on every master (see [`listen`]).
    expiry_events: bool,
    /// Whether this store writes new sessions in the string layout (see [`Layout`]).
    pub(crate) strings: bool,
    /// Tags what this store attaches to the sessions it loads (see [`LOADED_HASH`]).
    pub(crate) instance: u64,
    /// How string saves compare the stored value, a [`Comparison`] found when the store opened
    /// and lowered when a server refuses it (see the `save_string` module).
    pub(crate) comparison: std::sync::atomic::AtomicU8,
    /// The next packed-attributes token (see [`RedisStore::next_token`]).
    tokens: std::sync::atomic::AtomicU64,
    /// Saves of one session in this process take turns (see the `save` module).
    pub(crate) turns: WriterTurns,
    /// Dropped with the store, which stops the listener tasks.
    _stop_listeners: tokio::sync::watch::Sender<()>,
}

/// Sessions in Redis or Redis Cluster.
///
/// Cloning, or [`RedisStore::with_settings`], gives another handle on the same connection.
#[derive(Clone)]
pub struct RedisStore {
    pub(crate) inner: Arc<Inner>,
    pub(crate) settings: Arc<SessionSettings>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connects (standalone or cluster, see [`Config::from_url`]).
    pub async fn open(config: Config, settings: SessionSettings) -> Result<Self> {
        let store = if config.cluster {
            "redis-cluster"
        } else {
            "redis"
        };
        let runner = Runner::new(store, config.timeout);
        let ca = trusted_ca(&config).await?;
        let connection = runner
            .run(Operation::Open, connect(&config, ca.as_deref()))
            .await?;
        let events = EventBus::default();
        let (stop, stopped) = tokio::sync::watch::channel(());
        let expiry_events = runner
            .run(
                Operation::Open,
                listen(&config, ca.as_deref(), &events, stopped),
            )
            .await?;
        // Strings are saved by `SET … IFDEQ` or `IFEQ` where the server has it, else by a
        // script; a store of the hash layout saves the string sessions it meets the same way.
        let strings = config.layout != Layout::Hash;
        let comparison = runner
            .run(Operation::Open, server_comparison(&connection, &config))
            .await?;
        let near_cache =
            (config.near_cache_bytes > 0).then(|| NearCache::new(config.near_cache_bytes));
        Ok(RedisStore {
            inner: Arc::new(Inner {
                runner,
                connection,
                near_cache,
                config,
                events,
                expiry_events,
                strings,
                instance: random_u64(),
                comparison: std::sync::atomic::AtomicU8::new(comparison as u8),
                tokens: std::sync::atomic::AtomicU64::new(random_u64()),
                turns: WriterTurns::with_stripes(4096),
                _stop_listeners: stop,
            }),
            settings: Arc::new(settings),
        })
    }

    fn channel(&self) -> String {
        event_channel(&self.inner.config)
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The layout this store writes new sessions in: [`Layout::Hash`] or [`Layout::String`]
    /// ([`Layout::Auto`] resolved when the store opened).
    pub fn layout(&self) -> Layout {
        if self.inner.strings {
            Layout::String
        } else {
            Layout::Hash
        }
    }

    /// Another handle on the same connection with other session settings.
    pub fn with_settings(&self, settings: SessionSettings) -> Self {
        RedisStore {
            inner: Arc::clone(&self.inner),
            settings: Arc::new(settings),
        }
    }

    /// The Redis key of a session.
    pub fn session_key(&self, key: &SessionKey) -> String {
        self.slot_key("s:{", key)
    }

    /// Where a large string-layout save stages its value on a server without `SET … IFEQ`
    /// (see the `save_string` module): in the session's slot, outside the names the listeners
    /// and readers take for sessions.
    pub(crate) fn staging_key(&self, key: &SessionKey) -> String {
        self.slot_key("w:{", key)
    }

    /// `<prefix><kind><hex of key>}`: `kind` opens the hash tag, so every key of one session
    /// lands in its slot.
    fn slot_key(&self, kind: &str, key: &SessionKey) -> String {
        let prefix = &self.inner.config.prefix;
        let mut out = String::with_capacity(prefix.len() + 68);
        out.push_str(prefix);
        out.push_str(kind);
        key.push_hex(&mut out);
        out.push('}');
        out
    }

    pub(crate) fn connection(&self) -> Connection {
        self.inner.connection.clone()
    }

    /// `future` under the store's timeout (see [`Runner::run`]; a plain function, so that the
    /// operation's future is not kept twice in an `async fn`'s state).
    fn run<F, T>(&self, operation: Operation, future: F) -> Run<F>
    where
        F: std::future::Future<Output = Result<T>>,
    {
        self.inner.runner.run(operation, future)
    }

    /// Loads the live record of `key`.
    ///
    /// With a near-cache entry for the key, the read fetches only the metadata field: if it
    /// matches the entry in everything but the access time, the entry is the stored session
    /// (every write of attributes, principal or timeouts increments the version), and only
    /// the access time, which touches move, is taken from the server. Otherwise, and without
    /// an entry, it fetches the whole hash and caches it.
    pub(crate) async fn load(&self, key: &SessionKey, now: u64) -> Result<Option<SessionRecord>> {
        Ok(self.lookup_record(key, now).await?.live())
    }

    /// [`RedisStore::load`], telling an absent session from undecodable data (reported) such as
    /// a malformed hash or a value of another type at the key.
    pub(crate) async fn lookup_record(&self, key: &SessionKey, now: u64) -> Result<Lookup> {
        Ok(self.lookup(key, now).await?.0)
    }

    /// [`RedisStore::lookup_record`] in either layout, the store's own first, with the value a
    /// session of the string layout was read from (its saves compare it).
    pub(crate) async fn lookup(
        &self,
        key: &SessionKey,
        now: u64,
    ) -> Result<(Lookup, Option<Bytes>)> {
        let found = if self.inner.strings {
            match self.lookup_string(key, now).await? {
                Some(found) => Some(found),
                None => self
                    .lookup_hash(key, now)
                    .await?
                    .map(|lookup| (lookup, None)),
            }
        } else {
            match self.lookup_hash(key, now).await? {
                Some(lookup) => Some((lookup, None)),
                None => self.lookup_string(key, now).await?,
            }
        };
        Ok(found.unwrap_or_else(|| {
            report_undecodable(
                key,
                &session_core::raw::UndecodableRecord::new(
                    "the session key holds a value that is neither a hash nor a string",
                ),
            );
            (Lookup::Undecodable, None)
        }))
    }

    /// A session of the string layout; `None` when the key holds another type (a hash).
    ///
    /// With a near-cache copy read from a string, the read fetches only the value's header
    /// (`GETRANGE`): if it matches the copy's in everything a touch does not rewrite, the copy
    /// is the stored session (every other write increments the version), with the access time
    /// and the header taken from the server. Otherwise, and without a copy, one `GET`.
    async fn lookup_string(
        &self,
        key: &SessionKey,
        now: u64,
    ) -> Result<Option<(Lookup, Option<Bytes>)>> {
        let cached = self.inner.near_cache.as_ref().and_then(|c| c.get(key));
        if let Some((cached, value)) = cached
            .as_ref()
            .and_then(|cached| Some((cached, cached.value.as_ref()?)))
        {
            let redis_key = self.session_key(key);
            let header: Vec<u8> = match Cmd::with_capacity(4, 24 + redis_key.len())
                .arg("GETRANGE")
                .arg(&redis_key)
                .arg(0)
                .arg(strings::HEADER_MAX - 1)
                .query_async(&mut self.connection())
                .await
            {
                Ok(header) => header,
                Err(error) => {
                    self.forget(key);
                    return none_if_wrong_type(error);
                }
            };
            if header.is_empty() {
                self.forget(key);
                return Ok(Some((Lookup::Absent, None)));
            }
            if let Some((accessed, current)) = strings::revalidate(value, &header) {
                return Ok(Some(match cached_copy(&cached.record, accessed, now) {
                    Some(record) => (Lookup::Live(record), Some(current)),
                    None => (Lookup::Absent, None),
                }));
            }
            self.forget(key);
        }
        let Some(value) = self.read_string(key).await? else {
            return Ok(None);
        };
        let Some(value) = value else {
            return Ok(Some((Lookup::Absent, None)));
        };
        Ok(Some(match strings::parse(value) {
            Ok(stored) if stored.record.is_live_at(now) => {
                self.remember_string(key, &stored.record, &stored.value);
                (Lookup::Live(stored.record), Some(stored.value))
            }
            Ok(_) => (Lookup::Absent, None),
            Err(error) => {
                report_undecodable(key, &error);
                (Lookup::Undecodable, None)
            }
        }))
    }

    /// The string at `key` (`Some(None)` when there is none); `None` when the key holds another
    /// type.
    pub(crate) async fn read_string(&self, key: &SessionKey) -> Result<Option<Option<Bytes>>> {
        let redis_key = self.session_key(key);
        match Cmd::with_capacity(2, 8 + redis_key.len())
            .arg("GET")
            .arg(&redis_key)
            .query_async::<Option<Vec<u8>>>(&mut self.connection())
            .await
        {
            Ok(value) => Ok(Some(value.map(Bytes::from))),
            Err(error) if is_wrong_type(&error) => Ok(None),
            Err(error) => Err(map(error)),
        }
    }

    /// A session of the hash layout; `None` when the key holds another type (a string).
    ///
    /// With a near-cache entry for the key, the read fetches only the metadata field: if it
    /// matches the entry in everything but the access time, the entry is the stored session
    /// (every write of attributes, principal or timeouts increments the version), and only
    /// the access time, which touches move, is taken from the server. Otherwise, and without
    /// an entry, it fetches the whole hash and caches it.
    async fn lookup_hash(&self, key: &SessionKey, now: u64) -> Result<Option<Lookup>> {
        let redis_key = self.session_key(key);
        // A copy read from a string is the other layout's (see `lookup_string`).
        let cached = self
            .inner
            .near_cache
            .as_ref()
            .and_then(|c| c.get(key))
            .filter(|cached| cached.value.is_none());
        if let Some(cached) = cached {
            // Sized up front: a command buffer grown argument by argument reallocates.
            let meta: Option<Vec<u8>> = match Cmd::with_capacity(3, 16 + redis_key.len())
                .arg("HGET")
                .arg(&redis_key)
                .arg(Meta::FIELD)
                .query_async(&mut self.connection())
                .await
            {
                Ok(meta) => meta,
                Err(error) => {
                    self.forget(key);
                    return none_if_wrong_type(error);
                }
            };
            let Some(meta) = meta else {
                self.forget(key);
                return Ok(Some(Lookup::Absent));
            };
            if let Some(meta) = Meta::parse(&meta).filter(|meta| meta.same_but_access(&cached.meta))
            {
                let copy = cached_copy(&cached.record, meta.accessed, now);
                return Ok(Some(copy.map_or(Lookup::Absent, Lookup::Live)));
            }
            self.forget(key);
        }
        let fields: Fields = match redis::cmd("HGETALL")
            .arg(&redis_key)
            .query_async(&mut self.connection())
            .await
        {
            Ok(fields) => fields,
            Err(error) => return none_if_wrong_type(error),
        };
        if fields.is_empty() {
            return Ok(Some(Lookup::Absent));
        }
        Ok(Some(match parse_hash(fields) {
            Ok(stored) if stored.record.is_live_at(now) => {
                self.remember_as(key, stored.meta, &stored.record);
                Lookup::Live(stored.record)
            }
            Ok(_) => Lookup::Absent,
            Err(error) => {
                report_undecodable(key, &error);
                Lookup::Undecodable
            }
        }))
    }

    /// Stores `record` under `key` unless the key holds a session (and keeps a near-cache copy
    /// of it); publishes `Created` if `announce`.
    async fn insert(
        &self,
        key: &SessionKey,
        record: &SessionRecord,
        announce: bool,
    ) -> Result<bool> {
        if self.inner.strings {
            let value = strings::encode(record, index_score(record))?;
            return self
                .insert_string(key, &value, record.deadline_ms(), announce)
                .await;
        }
        let redis_key = self.session_key(key);
        let meta = Meta::of(record, self.next_token());
        let staged = attributes_field(meta.attributes.unwrap_or_default());
        let packed = packed_attributes(record)?;
        let inline = scripts::inline_bytes(&staged, &packed);
        let mut cmd = scripts::call_sized(&scripts::CREATE, &redis_key, 12, 256 + inline);
        cmd.arg(&staged)
            .arg(record.deadline_ms())
            .arg(if announce {
                self.channel()
            } else {
                String::new()
            })
            .arg(key.to_hex());
        push_metadata(&mut cmd, record, meta, index_score(record));
        let reply = scripts::run_staged(
            &scripts::CREATE,
            &redis_key,
            &staged,
            &packed,
            cmd,
            &mut self.connection(),
        )
        .await
        .map_err(map)?;
        match reply {
            Value::Int(1) => {
                self.remember_as(key, meta, record);
                Ok(true)
            }
            Value::Int(_) => Ok(false),
            other => Err(Error::backend(format!(
                "unexpected reply from the create script: {other:?}"
            ))),
        }
    }

    /// Stores `value` (of the string layout) under `key` with its expiry at `deadline` unless
    /// the key holds anything; publishes `Created` if `announce`.
    async fn insert_string(
        &self,
        key: &SessionKey,
        value: &[u8],
        deadline: u64,
        announce: bool,
    ) -> Result<bool> {
        let redis_key = self.session_key(key);
        let mut cmd =
            scripts::call_sized(&scripts::CREATE_STRING, &redis_key, 4, 160 + value.len());
        cmd.arg(value)
            .arg(deadline)
            .arg(if announce {
                self.channel()
            } else {
                String::new()
            })
            .arg(key.to_hex());
        let created: i64 = scripts::run(&scripts::CREATE_STRING, &cmd, &mut self.connection())
            .await
            .map_err(map)?;
        Ok(created == 1)
    }

    /// A fresh token for the field of a write's packed attributes: unique within this store
    /// (a counter) and, with a random start, across the instances that share the server.
    pub(crate) fn next_token(&self) -> u64 {
        loop {
            let token = self
                .inner
                .tokens
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            // Reserved for inline saves, whose field a staged write must never name.
            if token != INLINE_TOKEN {
                return token;
            }
        }
    }

    /// Deletes `key` if its version is `expected` (any version when `None`), publishing
    /// `Deleted` if `announce`; returns `Some(principal)` when deleted, `None` when absent or
    /// changed.
    async fn delete_if(
        &self,
        key: &SessionKey,
        expected: Option<u64>,
        announce: bool,
    ) -> Result<Option<Option<String>>> {
        self.forget(key);
        let mut cmd = scripts::call(&scripts::DELETE, &self.session_key(key));
        cmd.arg(expected.map(|v| v.to_string()).unwrap_or_default())
            .arg(if announce {
                self.channel()
            } else {
                String::new()
            })
            .arg(key.to_hex());
        let reply: Vec<Value> = scripts::run(&scripts::DELETE, &cmd, &mut self.connection())
            .await
            .map_err(map)?;
        let deleted = matches!(reply.first(), Some(Value::Int(1)));
        if !deleted {
            return Ok(None);
        }
        let principal = match reply.get(1) {
            Some(Value::BulkString(bytes)) => String::from_utf8(bytes.clone()).ok(),
            _ => None,
        };
        if let Some(principal) = &principal {
            self.index_remove(principal, key).await?;
        }
        Ok(Some(principal))
    }

    /// One attempt of `change_id`: copy the live record to the new key, then delete the old
    /// key only if nobody saved it meanwhile (else undo the copy and report the race).
    async fn rotate(&self, old_key: SessionKey, new_key: SessionKey) -> Result<Rotation> {
        let Some(record) = self.load(&old_key, now_millis()).await? else {
            return Ok(Rotation::Gone);
        };
        if !self.insert(&new_key, &record, false).await? {
            return Ok(Rotation::IdTaken);
        }
        if let Some(principal) = &record.principal {
            self.index_add(principal, &new_key, index_score(&record))
                .await?;
        }
        if self
            .delete_if(&old_key, Some(record.version), false)
            .await?
            .is_some()
        {
            return Ok(Rotation::Moved);
        }
        // Saved (the next attempt copies the newer record) or deleted (it finds nothing).
        self.delete_if(&new_key, None, false).await?;
        Ok(Rotation::Raced)
    }

    /// Tells every instance's listeners that `old` became `new`. Best-effort: the rotation has
    /// happened and the caller holds the new id whatever becomes of the announcement.
    async fn announce_id_change(&self, old: SessionKey, new: SessionKey) {
        let published = redis::cmd("PUBLISH")
            .arg(self.channel())
            .arg(format!("i {} {}", old.to_hex(), new.to_hex()))
            .query_async::<i64>(&mut self.connection())
            .await;
        if let Err(error) = published {
            let error = map(error).during(self.inner.runner.store(), Operation::ChangeId);
            tracing::warn!(error = %error.report(), "the IdChanged event of a rotation was not published");
            // This instance's own subscribers still hear it.
            self.inner
                .events
                .publish(SessionEvent::IdChanged { old, new });
        }
    }
}

#[async_trait]
impl SessionRepository for RedisStore {
    fn settings(&self) -> &Arc<SessionSettings> {
        &self.settings
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::none()
            .with_principal_index(true)
            .with_lifecycle_events(true)
            .with_expiry_events(self.inner.expiry_events)
            .with_import(true)
    }

    async fn import(&self, id: &SessionId, record: &SessionRecord) -> Result<bool> {
        record.check_importable(now_millis(), &self.settings.limits)?;
        let key = id.key();
        let imported = self
            .run(Operation::Import, async {
                // Not announced: the session is not new, it moved from another store.
                let imported = self.insert(&key, record, false).await?;
                if let (true, Some(principal)) = (imported, &record.principal) {
                    self.index_add(principal, &key, index_score(record)).await?;
                }
                Ok(imported)
            })
            .await?;
        Ok(imported)
    }

    async fn create(&self, session: &mut Session) -> Result<()> {
        let creation = Creation::begin(session)?;
        let record = creation.record();
        let value = match self.inner.strings {
            true => Some(Bytes::from(strings::encode(record, index_score(record))?)),
            false => None,
        };
        let shared = value.as_ref();
        let id = self
            .run(Operation::Create, async {
                let id = creation
                    .insert_under_free_id(|key| async move {
                        match shared {
                            Some(value) => {
                                let created = self
                                    .insert_string(&key, value, record.deadline_ms(), true)
                                    .await?;
                                if created {
                                    self.remember_created_string(&key, record, value);
                                }
                                Ok(created)
                            }
                            None => self.insert(&key, record, true).await,
                        }
                    })
                    .await?;
                if let Some(principal) = &record.principal {
                    self.index_add(principal, &id.key(), index_score(record))
                        .await?;
                }
                Ok(id)
            })
            .await?;
        creation.finish(session, id);
        if let Some(value) = value {
            session.set_load_value(self.inner.instance, value);
        }
        Ok(())
    }

    async fn find(&self, id: &SessionId) -> Result<Option<Session>> {
        let (lookup, value) = self
            .run(Operation::Find, self.lookup(&id.key(), now_millis()))
            .await?;
        Ok(lookup.live().map(|record| {
            let mut session = Session::from_record(id.clone(), record, Arc::clone(&self.settings));
            match value {
                Some(value) => session.set_load_value(self.inner.instance, value),
                None => session.set_load_token(self.inner.instance, LOADED_HASH),
            }
            session
        }))
    }

    async fn save(&self, session: &mut Session) -> Result<()> {
        self.run(Operation::Save, self.save_now(session)).await
    }

    async fn touch(&self, id: &SessionId) -> Result<()> {
        let key = id.key();
        self.run(Operation::Touch, async {
            let mut cmd = scripts::call(&scripts::TOUCH, &self.session_key(&key));
            let now = now_millis();
            cmd.arg(now).arg(format!("{now:016}"));
            let reply: Vec<Value> = scripts::run(&scripts::TOUCH, &cmd, &mut self.connection())
                .await
                .map_err(map)?;
            match (reply.first(), reply.get(1), reply.get(2)) {
                (Some(Value::Int(deadline)), principal, score) if *deadline > 0 => {
                    let score = match score {
                        Some(Value::Int(score)) => u64::try_from(*score).unwrap_or(0),
                        _ => 0,
                    };
                    if let (Some(Value::BulkString(principal)), true) = (principal, score > 0) {
                        if let Ok(principal) = std::str::from_utf8(principal) {
                            self.index_add(principal, &key, score).await?;
                        }
                    }
                    Ok(())
                }
                _ => Err(Error::NotFound),
            }
        })
        .await
    }

    async fn delete_by_key(&self, key: &SessionKey) -> Result<()> {
        self.run(Operation::Delete, self.delete_if(key, None, true))
            .await
            .map(|_| ())
    }

    async fn change_id(&self, session: &mut Session) -> Result<()> {
        let rotation = rotate_id(session, |old, new| self.rotate(old, new));
        if let Rotated::Moved { old, new } = self.run(Operation::ChangeId, rotation).await? {
            self.announce_id_change(old, new).await;
        }
        Ok(())
    }

    async fn find_by_principal(&self, principal: &str) -> Result<Vec<SessionInfo>> {
        self.run(
            Operation::FindByPrincipal,
            list_principal(self, principal, &self.settings),
        )
        .await
    }

    async fn delete_by_principal(&self, principal: &str) -> Result<u64> {
        let deleted = delete_principal(self, principal, &self.settings, |key| async move {
            Ok(self.delete_if(&key, None, true).await?.is_some())
        });
        self.run(Operation::DeleteByPrincipal, deleted).await
    }

    fn subscribe(&self) -> Result<EventSubscription> {
        Ok(self.inner.events.subscribe())
    }
}

/// The load token of a session this store read from a hash, or saved as a hash: its save takes
/// the hash layout's path without asking the key's type.
pub(crate) const LOADED_HASH: u64 = 1;

/// The load token of a session whose save merged into a string. Such a save attaches no load
/// value (core refuses the copy's snapshot, so there is nothing to compare it with), and this
/// says which layout the next save writes.
pub(crate) const MERGED_STRING: u64 = 2;

/// A near-cache copy the server confirmed, with the access time stored now (touches move it
/// without a new version); `None` if that leaves it past its deadline.
fn cached_copy(cached: &SessionRecord, accessed: u64, now: u64) -> Option<SessionRecord> {
    let mut record = cached.clone();
    record.last_accessed_at_ms = accessed;
    record.is_live_at(now).then_some(record)
}

/// `None` for a read that met a value of another type at a session key (the other layout, or
/// a foreign writer's); any other error is mapped.
fn none_if_wrong_type<T>(error: redis::RedisError) -> Result<Option<T>> {
    if is_wrong_type(&error) {
        Ok(None)
    } else {
        Err(map(error))
    }
}

/// The best comparison the server's `SET` has: `IFDEQ` (Redis 8.4 and later), `IFEQ` (Valkey
/// 8.1 and later too), else none. Asked with `SET`s that write nothing (the probe key is never
/// written, and neither condition creates a key); an older server refuses the syntax.
async fn server_comparison(connection: &Connection, config: &Config) -> Result<Comparison> {
    let probe_key = format!("{}layout-probe", config.prefix);
    for (comparison, condition, operand) in [
        (Comparison::Digest, "IFDEQ", "0000000000000000"),
        (Comparison::Value, "IFEQ", "\0 never stored"),
    ] {
        let probe = redis::cmd("SET")
            .arg(&probe_key)
            .arg("")
            .arg(condition)
            .arg(operand)
            .query_async::<Value>(&mut connection.clone())
            .await;
        match probe {
            Ok(_) => return Ok(comparison),
            Err(error) if is_wrong_type(&error) => return Ok(comparison),
            Err(error) if crate::save_string::refuses_syntax(&error) => {}
            Err(error) => return Err(map(error)),
        }
    }
    Ok(Comparison::Script)
}

#[cfg(feature = "testing")]
#[async_trait]
impl session_core::testing::WriteRaw for RedisStore {
    /// Replaces the session's metadata field with `bytes`, as a foreign writer could; in the
    /// string layout, the whole value.
    async fn write_raw(&self, key: &SessionKey, bytes: &[u8]) -> Result<()> {
        let redis_key = self.session_key(key);
        if self.inner.strings {
            return self
                .run(Operation::Save, async {
                    redis::cmd("SET")
                        .arg(&redis_key)
                        .arg(bytes)
                        .arg("PX")
                        .arg(60_000)
                        .query_async::<()>(&mut self.connection())
                        .await
                        .map_err(map)
                })
                .await;
        }
        self.run(Operation::Save, async {
            redis::cmd("HSET")
                .arg(&redis_key)
                .arg(Meta::FIELD)
                .arg(bytes)
                .query_async::<()>(&mut self.connection())
                .await
                .map_err(map)
        })
        .await
    }
}

#[cfg(feature = "testing")]
#[async_trait]
impl session_core::testing::WriteRawShape for RedisStore {
    /// [`RawShape::ForeignType`](session_core::testing::RawShape): a string that is not a
    /// session where the session's hash was, or a list where its string was, as a foreign
    /// writer sharing the prefix could leave.
    async fn write_raw_shape(
        &self,
        key: &SessionKey,
        shape: session_core::testing::RawShape,
    ) -> Result<()> {
        if shape != session_core::testing::RawShape::ForeignType {
            return Err(Error::Unsupported("this raw shape on Redis"));
        }
        let redis_key = self.session_key(key);
        let mut foreign = redis::pipe();
        foreign.atomic().cmd("DEL").arg(&redis_key).ignore();
        if self.inner.strings {
            foreign
                .cmd("RPUSH")
                .arg(&redis_key)
                .arg("a foreign writer's list");
        } else {
            foreign
                .cmd("SET")
                .arg(&redis_key)
                .arg("a foreign writer's string");
        }
        foreign
            .ignore()
            .cmd("PEXPIRE")
            .arg(&redis_key)
            .arg(60_000)
            .ignore();
        self.run(Operation::Save, async {
            foreign
                .query_async::<()>(&mut self.connection())
                .await
                .map_err(map)
        })
        .await
    }
}
