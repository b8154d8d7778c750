//! The Redis store.
//!
//! # Expiry strategy
//!
//! One hash per session, key `<prefix>s:{<key hex>}`; the braces are a hash tag, so every key
//! of a session stays in one Cluster slot. The key's own expiry is set to the session's deadline
//! (PEXPIREAT) by every create, save and touch, so Redis evicts it exactly then; reads also
//! compare the stored deadline, so a session is hidden at its deadline even before Redis gets
//! to it. Create, save (delta merge, size limits, optimistic version check), touch and delete
//! are single server-side scripts: one atomic round trip each. A save from a copy nobody wrote
//! or touched since its load (the stored metadata still starts with the version and times it
//! was loaded with) only writes what the client computed; any other save merges on the
//! server. A read is one HGET of the
//! metadata field when the near cache holds a copy that the field confirms, else one HGETALL.
//! The principal index is one sorted set per principal, scored by each session's deadline plus
//! a slack and expiring with its highest score; it lives in its own slot, so it is updated
//! after the session script when that script says the session outgrew its score, and checked
//! against the sessions on every read, where dead members are pruned: it cannot leak,
//! keyspace notifications or not.

use std::sync::Arc;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};
use session_core::time::now_millis;
use session_core::{
    async_trait, check_principal_query, insert_under_free_id, report_undecodable, with_timeout,
    Attributes, Bytes, Capabilities, Error, EventBus, EventSubscription, Result, Session,
    SessionId, SessionInfo, SessionKey, SessionRecord, SessionRepository, SessionSettings,
    UndecodableRecord,
};
use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::error::map;
use crate::listener::{event_channel, listen, node_client};
use crate::scripts;

/// Rounds `change_id` tries while saves race its copy or the fresh id is taken.
const ID_ATTEMPTS: usize = 4;

/// A standalone connection (multiplexed, reconnecting) or a cluster connection.
#[derive(Clone)]
enum Connection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Single(c) => c.req_packed_command(cmd),
            Connection::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Single(c) => c.req_packed_commands(cmd, offset, count),
            Connection::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Single(c) => c.get_db(),
            Connection::Cluster(c) => c.get_db(),
        }
    }
}

/// Decoded records this instance read or wrote, by session key. An entry is only a candidate:
/// every read checks it against the server's metadata field (see [`RedisStore::load`]).
///
/// quick_cache rather than moka: a lookup here is on every read, and moka's (a lock-free table
/// plus a read log replayed into its LRU lists) cost a fifth of a cached read's client time;
/// quick_cache's is a shard read lock and a reference bit.
type NearCache = quick_cache::sync::Cache<SessionKey, Arc<Cached>, CachedWeight>;

/// Weighs a near-cache entry by the bytes it holds.
#[derive(Debug, Clone, Copy)]
struct CachedWeight;

impl quick_cache::Weighter<SessionKey, Arc<Cached>> for CachedWeight {
    fn weight(&self, _: &SessionKey, cached: &Arc<Cached>) -> u64 {
        let principal = cached.record.principal.as_ref().map_or(0, String::len);
        128 + cached.meta.size + u64::try_from(principal).unwrap_or(u64::MAX)
    }
}

/// Average entry weight assumed to size the near cache's table up front.
const TYPICAL_ENTRY_BYTES: u64 = 2048;

/// A near-cache entry: the record and its metadata field as stored.
struct Cached {
    meta: Meta,
    record: SessionRecord,
}

struct Inner {
    connection: Connection,
    near_cache: Option<NearCache>,
    config: Config,
    /// Events received by this instance's listeners (see [`listen`]).
    events: EventBus,
    /// Whether keyspace notifications for expired keys are on, on every master (see [`listen`]).
    expiry_events: bool,
    /// Dropped with the store, which stops the listener tasks.
    _stop_listeners: tokio::sync::watch::Sender<()>,
}

/// Sessions in Redis or Redis Cluster.
///
/// Cloning, or [`RedisStore::with_settings`], gives another handle on the same connection.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
    settings: Arc<SessionSettings>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// Stored values of one session hash, split into metadata and attributes.
type Fields = Vec<(Vec<u8>, Vec<u8>)>;

/// The `\1m` field of a session hash (layout in the `scripts` module).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Meta {
    version: u64,
    created: u64,
    accessed: u64,
    idle: u64,
    absolute: Option<u64>,
    size: u64,
    count: u64,
}

impl Meta {
    const FIELD: &'static [u8] = b"\x01m";
    const PRINCIPAL: &'static [u8] = b"\x01p";
    const INDEX_SCORE: &'static [u8] = b"\x01x";

    fn of(record: &SessionRecord) -> Self {
        Meta {
            version: record.version,
            created: record.created_at_ms,
            accessed: record.last_accessed_at_ms,
            idle: record.idle_timeout_ms,
            absolute: record.absolute_lifetime_ms,
            size: record.attributes_size() as u64,
            count: record.attributes.len() as u64,
        }
    }

    fn parse(bytes: &[u8]) -> Option<Self> {
        let mut words = std::str::from_utf8(bytes).ok()?.split(' ');
        // A missing word becomes "", which no field accepts.
        let [version, created, accessed, idle, absolute, size, count] =
            std::array::from_fn(|_| words.next().unwrap_or(""));
        if words.next().is_some() {
            return None;
        }
        let number = |word: &str| word.parse::<u64>().ok();
        Some(Meta {
            version: number(version)?,
            created: number(created)?,
            accessed: number(accessed)?,
            idle: number(idle)?,
            absolute: match absolute {
                "-" => None,
                word => Some(number(word)?),
            },
            size: number(size)?,
            count: number(count)?,
        })
    }

    fn to_field(self) -> String {
        let mut field = String::with_capacity(96);
        words(
            &mut field,
            &[
                Some(self.version),
                Some(self.created),
                Some(self.accessed),
                Some(self.idle),
                self.absolute,
                Some(self.size),
                Some(self.count),
            ],
        );
        field
    }

    /// Whether this is `other` apart from the last access time.
    fn same_but_access(&self, other: &Meta) -> bool {
        Meta {
            accessed: other.accessed,
            ..*self
        } == *other
    }
}

impl RedisStore {
    /// Connects (standalone or cluster, see [`Config::from_url`]).
    pub async fn open(config: Config, settings: SessionSettings) -> Result<Self> {
        let timeout = config.timeout;
        let ca = trusted_ca(&config).await?;
        let connection = with_timeout(timeout, async {
            if config.cluster {
                let builder = redis::cluster::ClusterClient::builder(config.nodes.clone())
                    .connection_timeout(timeout)
                    .response_timeout(timeout)
                    .retries(2);
                #[cfg(feature = "tls")]
                let builder = match &ca {
                    Some(pem) => builder.certs(redis::TlsCertificates {
                        client_tls: None,
                        root_cert: Some(pem.clone()),
                    }),
                    None => builder,
                };
                let client = builder.build().map_err(map)?;
                Ok(Connection::Cluster(
                    client.get_async_connection().await.map_err(map)?,
                ))
            } else {
                let client = node_client(config.nodes[0].as_str(), false, ca.as_deref())?;
                let manager = client
                    .get_connection_manager_with_config(
                        ConnectionManagerConfig::new()
                            .set_connection_timeout(Some(timeout))
                            .set_response_timeout(Some(timeout))
                            .set_number_of_retries(1),
                    )
                    .await
                    .map_err(map)?;
                Ok(Connection::Single(manager))
            }
        })
        .await?;
        let events = EventBus::default();
        let (stop, stopped) = tokio::sync::watch::channel(());
        let expiry_events =
            with_timeout(timeout, listen(&config, ca.as_deref(), &events, stopped)).await?;
        let near_cache = (config.near_cache_bytes > 0).then(|| {
            let entries = usize::try_from(config.near_cache_bytes / TYPICAL_ENTRY_BYTES)
                .unwrap_or(usize::MAX)
                .max(16);
            NearCache::with_weighter(entries, config.near_cache_bytes, CachedWeight)
        });
        Ok(RedisStore {
            inner: Arc::new(Inner {
                connection,
                near_cache,
                config,
                events,
                expiry_events,
                _stop_listeners: stop,
            }),
            settings: Arc::new(settings),
        })
    }

    fn channel(&self) -> String {
        event_channel(&self.inner.config)
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
        let prefix = &self.inner.config.prefix;
        let mut out = String::with_capacity(prefix.len() + 68);
        out.push_str(prefix);
        out.push_str("s:{");
        key.push_hex(&mut out);
        out.push('}');
        out
    }

    fn index_key(&self, principal: &str) -> String {
        let digest = Sha256::digest(principal.as_bytes());
        let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
        format!("{}p:{{{hex}}}", self.inner.config.prefix)
    }

    fn connection(&self) -> Connection {
        self.inner.connection.clone()
    }

    async fn run<T>(&self, operation: impl std::future::Future<Output = Result<T>>) -> Result<T> {
        with_timeout(self.inner.config.timeout, operation).await
    }

    /// Replaces the session's metadata field with `bytes` (as a foreign writer could), for
    /// the conformance suite's corrupt-data cases.
    pub async fn write_raw(&self, key: &SessionKey, bytes: &[u8]) -> Result<()> {
        let redis_key = self.session_key(key);
        self.run(async {
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

    /// Parses a session hash; `Err` if anything is missing or malformed.
    fn parse(fields: Fields) -> Result<SessionRecord, UndecodableRecord> {
        let mut meta = None;
        let mut principal = None;
        let mut attributes = Attributes::new();
        for (name, value) in fields {
            if name == Meta::FIELD {
                meta = Some(value);
            } else if name == Meta::PRINCIPAL {
                principal = Some(
                    String::from_utf8(value)
                        .map_err(|_| UndecodableRecord::new("principal is not UTF-8"))?,
                );
            } else if name.first() == Some(&1) {
                // Metadata of a later layout: not an attribute.
            } else {
                let name = String::from_utf8(name)
                    .map_err(|_| UndecodableRecord::new("attribute name is not UTF-8"))?;
                attributes.insert(Arc::<str>::from(name), Bytes::from(value));
            }
        }
        let meta = meta
            .as_deref()
            .and_then(Meta::parse)
            .ok_or_else(|| UndecodableRecord::new("session metadata is missing or malformed"))?;
        Ok(SessionRecord {
            created_at_ms: meta.created,
            last_accessed_at_ms: meta.accessed,
            idle_timeout_ms: meta.idle,
            absolute_lifetime_ms: meta.absolute,
            principal,
            version: meta.version,
            attributes,
        })
    }

    /// Loads the live record of `key`.
    ///
    /// With a near-cache entry for the key, the read fetches only the metadata field: if it
    /// matches the entry in everything but the access time, the entry is the stored session
    /// (every write of attributes, principal or timeouts increments the version), and only
    /// the access time, which touches move, is taken from the server. Otherwise, and without
    /// an entry, it fetches the whole hash and caches it.
    async fn load(&self, key: &SessionKey, now: u64) -> Result<Option<SessionRecord>> {
        let redis_key = self.session_key(key);
        let cached = self.inner.near_cache.as_ref().and_then(|c| c.get(key));
        if let Some(cached) = cached {
            // Sized up front: a command buffer grown argument by argument reallocates.
            let meta: Option<Vec<u8>> = Cmd::with_capacity(3, 16 + redis_key.len())
                .arg("HGET")
                .arg(&redis_key)
                .arg(Meta::FIELD)
                .query_async(&mut self.connection())
                .await
                .map_err(map)?;
            let Some(meta) = meta else {
                self.forget(key);
                return Ok(None);
            };
            if let Some(meta) = Meta::parse(&meta).filter(|meta| meta.same_but_access(&cached.meta))
            {
                let mut record = cached.record.clone();
                record.last_accessed_at_ms = meta.accessed;
                return Ok(record.is_live_at(now).then_some(record));
            }
            self.forget(key);
        }
        let fields: Fields = redis::cmd("HGETALL")
            .arg(&redis_key)
            .query_async(&mut self.connection())
            .await
            .map_err(map)?;
        if fields.is_empty() {
            return Ok(None);
        }
        match Self::parse(fields) {
            Ok(record) if record.is_live_at(now) => {
                self.remember(key, &record);
                Ok(Some(record))
            }
            Ok(_) => Ok(None),
            Err(error) => {
                report_undecodable(key, &error);
                Ok(None)
            }
        }
    }

    /// Puts a copy of `record`, as stored now under `key`, in the near cache.
    fn remember(&self, key: &SessionKey, record: &SessionRecord) {
        if self.inner.near_cache.is_some() {
            self.remember_as(key, Meta::of(record), record);
        }
    }

    /// [`RedisStore::remember`] with the record's metadata already at hand.
    fn remember_as(&self, key: &SessionKey, meta: Meta, record: &SessionRecord) {
        if let Some(cache) = &self.inner.near_cache {
            let cached = Cached {
                meta,
                record: record.clone(),
            };
            cache.insert(*key, Arc::new(cached));
        }
    }

    /// Drops the near-cache entry of `key`.
    fn forget(&self, key: &SessionKey) {
        if let Some(cache) = &self.inner.near_cache {
            cache.remove(key);
        }
    }

    /// The hash fields of a whole record, metadata first.
    fn record_fields(record: &SessionRecord) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut fields = vec![(
            Meta::FIELD.to_vec(),
            Meta::of(record).to_field().into_bytes(),
        )];
        if let Some(principal) = &record.principal {
            fields.push((Meta::PRINCIPAL.to_vec(), principal.as_bytes().to_vec()));
            fields.push((
                Meta::INDEX_SCORE.to_vec(),
                index_score(record).to_string().into_bytes(),
            ));
        }
        for (name, value) in record.attributes.iter() {
            fields.push((name.as_bytes().to_vec(), value.to_vec()));
        }
        fields
    }

    /// Stores `record` under `key` unless the key exists; publishes `Created` if `announce`.
    async fn insert(
        &self,
        key: &SessionKey,
        record: &SessionRecord,
        announce: bool,
    ) -> Result<bool> {
        let mut cmd = scripts::call(&scripts::CREATE, &self.session_key(key));
        cmd.arg(record.deadline_ms())
            .arg(if announce {
                self.channel()
            } else {
                String::new()
            })
            .arg(key.to_hex());
        for (name, value) in Self::record_fields(record) {
            cmd.arg(name).arg(value);
        }
        let created: i64 = scripts::run(&scripts::CREATE, &cmd, &mut self.connection())
            .await
            .map_err(map)?;
        Ok(created == 1)
    }

    async fn index_add(&self, principal: &str, key: &SessionKey, deadline: u64) -> Result<()> {
        let mut cmd = scripts::call(&scripts::INDEX_ADD, &self.index_key(principal));
        cmd.arg(key.to_hex()).arg(deadline);
        scripts::run::<i64>(&scripts::INDEX_ADD, &cmd, &mut self.connection())
            .await
            .map_err(map)?;
        Ok(())
    }

    async fn index_remove(&self, principal: &str, key: &SessionKey) -> Result<()> {
        redis::cmd("ZREM")
            .arg(self.index_key(principal))
            .arg(key.to_hex())
            .query_async::<i64>(&mut self.connection())
            .await
            .map_err(map)?;
        Ok(())
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

    async fn save_now(&self, session: &mut Session) -> Result<()> {
        let now = now_millis();
        let key = session.key();
        let limits = &self.settings.limits;
        // The stored session after this save, if nobody wrote or touched it since this copy
        // was loaded: then the script takes the fast path and stores exactly this.
        let mut saved = session.snapshot(now)?;
        saved.version += 1;
        let meta = Meta::of(&saved);
        let delta = session.delta(now)?;
        // Principal changes need the old principal's index entry, timeout changes the old
        // timeouts for the liveness check: both take the merging path.
        let fast = delta.principal.is_none()
            && delta.idle_timeout_ms.is_none()
            && delta.absolute_lifetime_ms.is_none()
            && session.deadline_ms() > now
            && usize::try_from(meta.size).is_ok_and(|size| size <= limits.max_session_bytes)
            && usize::try_from(meta.count).is_ok_and(|count| count <= limits.max_attributes);
        let pairs: usize = delta
            .upserts
            .iter()
            .map(|(name, value)| name.len() + value.len())
            .sum();
        let removed: usize = delta.removals.iter().map(|name| name.len()).sum();
        let mut cmd = scripts::call_sized(
            &scripts::SAVE,
            &self.session_key(&key),
            7 + 2 * delta.upserts.len() + delta.removals.len(),
            256 + pairs + removed,
        );
        if fast {
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
            cmd.arg(prefix).arg(saved.deadline_ms());
            match saved.principal {
                Some(_) => cmd.arg(index_score(&saved)),
                None => cmd.arg(""),
            };
        } else {
            cmd.arg("").arg("").arg("");
        }
        cmd.arg(delta.removals.len());
        // The merging path's parameters, in one argument (see the script).
        let (absolute_op, absolute) = match delta.absolute_lifetime_ms {
            None => (None, None),
            Some(None) => (Some(0), None),
            Some(Some(lifetime)) => (Some(1), Some(lifetime)),
        };
        let mut merge = String::with_capacity(96);
        words(
            &mut merge,
            &[
                Some(now),
                delta.expected_version,
                u64::try_from(limits.max_session_bytes).ok(),
                u64::try_from(limits.max_attributes).ok(),
                delta.idle_timeout_ms,
                absolute_op,
                absolute,
            ],
        );
        match delta.principal {
            None => merge.push_str(" -"),
            Some(None) => merge.push_str(" 0"),
            Some(Some(principal)) => {
                merge.push_str(" 1 ");
                merge.push_str(principal);
            }
        }
        cmd.arg(merge);
        for name in &delta.removals {
            cmd.arg(*name);
        }
        for (name, value) in &delta.upserts {
            cmd.arg(*name).arg(&value[..]);
        }
        cmd.arg(Meta::FIELD).arg(meta.to_field());
        drop(delta);
        let reply: Value = scripts::run(&scripts::SAVE, &cmd, &mut self.connection())
            .await
            .map_err(map)?;
        let reply = match reply {
            Value::Int(score) => {
                session.mark_persisted(saved.version, now);
                self.remember_as(&key, meta, &saved);
                if let (Some(principal), Ok(score @ 1..)) = (&saved.principal, u64::try_from(score))
                {
                    self.index_add(principal, &key, score).await?;
                }
                return Ok(());
            }
            Value::Array(reply) => reply,
            other => {
                return Err(Error::backend(format!(
                    "unexpected reply from the save script: {other:?}"
                )))
            }
        };
        let int = |i: usize| match reply.get(i) {
            Some(Value::Int(n)) => Some(*n),
            _ => None,
        };
        let text = |i: usize| match reply.get(i) {
            Some(Value::BulkString(bytes)) => String::from_utf8(bytes.clone()).ok(),
            _ => None,
        };
        if matches!(int(0), Some(-1 | -2)) {
            self.forget(&key);
        }
        match int(0) {
            Some(-1) => Err(Error::NotFound),
            Some(-2) => Err(Error::Conflict {
                expected: session.version(),
                actual: int(1).and_then(|v| u64::try_from(v).ok()).unwrap_or(0),
            }),
            Some(-3) => {
                let count = int(2).and_then(|v| usize::try_from(v).ok()).unwrap_or(0);
                let size = int(1).and_then(|v| usize::try_from(v).ok()).unwrap_or(0);
                Err(if count > limits.max_attributes {
                    Error::TooLarge {
                        what: "attribute count",
                        actual: count,
                        limit: limits.max_attributes,
                    }
                } else {
                    Error::TooLarge {
                        what: "encoded session size",
                        actual: size,
                        limit: limits.max_session_bytes,
                    }
                })
            }
            Some(version) if version > 0 => {
                let (old, new) = (text(2), text(3));
                let version = u64::try_from(version).unwrap_or(0);
                // The stored session was the one this save started from exactly when the
                // version moved by one: the stored result is then `saved`, as on the fast path.
                if version == saved.version {
                    self.remember_as(&key, meta, &saved);
                } else {
                    self.forget(&key);
                }
                session.mark_persisted(version, now);
                if old != new {
                    if let Some(old) = &old {
                        self.index_remove(old, &key).await?;
                    }
                }
                let score = int(4).and_then(|v| u64::try_from(v).ok()).unwrap_or(0);
                if let (Some(new), true) = (&new, score > 0) {
                    self.index_add(new, &key, score).await?;
                }
                Ok(())
            }
            _ => Err(Error::backend(format!(
                "unexpected reply from the save script: {reply:?}"
            ))),
        }
    }

    async fn change_id_now(&self, session: &mut Session) -> Result<()> {
        let old_key = session.key();
        for _ in 0..ID_ATTEMPTS {
            let record = self
                .load(&old_key, now_millis())
                .await?
                .ok_or(Error::NotFound)?;
            // New key first, then the old one goes, only if nobody saved meanwhile.
            let new_id = SessionId::generate();
            let new_key = new_id.key();
            if !self.insert(&new_key, &record, false).await? {
                continue;
            }
            if let Some(principal) = &record.principal {
                self.index_add(principal, &new_key, index_score(&record))
                    .await?;
            }
            match self
                .delete_if(&old_key, Some(record.version), false)
                .await?
            {
                Some(_) => {
                    redis::cmd("PUBLISH")
                        .arg(self.channel())
                        .arg(format!("i {} {}", old_key.to_hex(), new_key.to_hex()))
                        .query_async::<i64>(&mut self.connection())
                        .await
                        .map_err(map)?;
                    session.assign_id(new_id);
                    return Ok(());
                }
                None => {
                    // Saved (retry with the newer record) or deleted (NotFound) meanwhile.
                    self.delete_if(&new_key, None, false).await?;
                }
            }
        }
        Err(Error::unavailable(
            "change_id kept racing with concurrent saves",
        ))
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
    }

    async fn create(&self, session: &mut Session) -> Result<()> {
        let now = now_millis();
        let record = session.record_for_create(now)?;
        let record = &record;
        let id = insert_under_free_id(session.id().clone(), |key| async move {
            self.run(self.insert(&key, record, true)).await
        })
        .await?;
        let key = id.key();
        if let Some(principal) = &record.principal {
            self.run(self.index_add(principal, &key, index_score(record)))
                .await?;
        }
        self.remember(&key, record);
        session.assign_id(id);
        session.mark_persisted(record.version, now);
        Ok(())
    }

    async fn find(&self, id: &SessionId) -> Result<Option<Session>> {
        let record = self.run(self.load(&id.key(), now_millis())).await?;
        Ok(record
            .map(|record| Session::from_record(id.clone(), record, Arc::clone(&self.settings))))
    }

    async fn save(&self, session: &mut Session) -> Result<()> {
        let timeout = self.inner.config.timeout;
        with_timeout(timeout, self.save_now(session)).await
    }

    async fn touch(&self, id: &SessionId) -> Result<()> {
        let key = id.key();
        self.run(async {
            let mut cmd = scripts::call(&scripts::TOUCH, &self.session_key(&key));
            cmd.arg(now_millis());
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
        self.run(self.delete_if(key, None, true)).await.map(|_| ())
    }

    async fn change_id(&self, session: &mut Session) -> Result<()> {
        if session.is_new() {
            session.assign_id(SessionId::generate());
            return Ok(());
        }
        let timeout = self.inner.config.timeout;
        with_timeout(timeout, self.change_id_now(session)).await
    }

    async fn find_by_principal(&self, principal: &str) -> Result<Vec<SessionInfo>> {
        check_principal_query(principal, &self.settings)?;
        self.run(async {
            let members: Vec<String> = redis::cmd("ZRANGE")
                .arg(self.index_key(principal))
                .arg(0)
                .arg(-1)
                .query_async(&mut self.connection())
                .await
                .map_err(map)?;
            let now = now_millis();
            let mut found = Vec::new();
            for member in members {
                let Some(key) = SessionKey::from_hex(&member) else {
                    self.index_remove(principal, &SessionKey::from_bytes([0; 32]))
                        .await
                        .ok();
                    continue;
                };
                match self.load(&key, now).await? {
                    Some(record) if record.principal.as_deref() == Some(principal) => {
                        found.extend(record.info(key));
                    }
                    // Gone, expired or moved to another principal: prune.
                    _ => self.index_remove(principal, &key).await?,
                }
            }
            found.sort_by_key(|info| info.created_at);
            Ok(found)
        })
        .await
    }

    async fn delete_by_principal(&self, principal: &str) -> Result<u64> {
        let mut deleted = 0;
        for info in self.find_by_principal(principal).await? {
            if self
                .run(self.delete_if(&info.key, None, true))
                .await?
                .is_some()
            {
                deleted += 1;
            }
        }
        Ok(deleted)
    }

    fn subscribe(&self) -> Result<EventSubscription> {
        Ok(self.inner.events.subscribe())
    }
}

/// Appends `values` to `out` as space-separated decimals, `-` for `None`: the metadata field and
/// the save script's packed arguments. Written with `itoa`, not `format!`, which showed in the
/// client's profile at a few per save.
fn words(out: &mut String, values: &[Option<u64>]) {
    let mut digits = itoa::Buffer::new();
    for (i, value) in values.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        match value {
            Some(value) => out.push_str(digits.format(*value)),
            None => out.push('-'),
        }
    }
}

/// The score of a session in its principal index (the `\x01x` field, see the `scripts`
/// module): its deadline plus a quarter of its idle timeout, so that saves and touches need
/// to re-add it only once the deadline has moved past that.
fn index_score(record: &SessionRecord) -> u64 {
    record.deadline_ms() + record.idle_timeout_ms / 4
}

/// The PEM bytes of [`Config::tls_ca_file`], if set.
async fn trusted_ca(config: &Config) -> Result<Option<Vec<u8>>> {
    let Some(path) = &config.tls_ca_file else {
        return Ok(None);
    };
    if !cfg!(feature = "tls") {
        return Err(Error::InvalidInput(
            "a TLS CA file needs the `tls` feature of session-redis".into(),
        ));
    }
    tokio::fs::read(path).await.map(Some).map_err(|error| {
        Error::InvalidInput(format!(
            "cannot read the TLS CA file {}: {error}",
            path.display()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::Meta;

    #[test]
    fn metadata_field_round_trips_and_refuses_malformed_text() {
        let meta = Meta {
            version: 7,
            created: 1_795_300_000_000,
            accessed: 1_795_300_001_000,
            idle: 1_800_000,
            absolute: None,
            size: 1_100,
            count: 10,
        };
        assert_eq!(Meta::parse(meta.to_field().as_bytes()), Some(meta));
        let capped = Meta {
            absolute: Some(3_600_000),
            ..meta
        };
        assert_eq!(Meta::parse(capped.to_field().as_bytes()), Some(capped));
        for bad in [
            &b""[..],
            b"7 1 2 3 - 4",
            b"7 1 2 3 - 4 5 6",
            b"7 1 2 3 x 4 5",
            b"7 1 2 3  4 5",
            b"7 1 2 3 - 4 \xff",
        ] {
            assert_eq!(Meta::parse(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
