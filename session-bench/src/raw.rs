//! Raw baselines: the driver of each store moving the same bytes with no codec or contract work.

use std::sync::Arc;

use async_trait::async_trait;
use moka::future::Cache;
use session_core::{Result, SessionKey};

/// The cheapest way the store's own client can read and write a session's bytes.
#[async_trait]
pub trait RawDriver: Send + Sync {
    /// Reads the bytes stored under `key`.
    async fn get(&self, key: &SessionKey) -> Result<Option<Arc<Vec<u8>>>>;
    /// Writes `bytes` under `key`.
    async fn put(&self, key: &SessionKey, bytes: Vec<u8>) -> Result<()>;
    /// Whether [`RawDriver::put_if_unchanged`] is there (the bench then runs a `raw-cas` row:
    /// for a store whose save compares, the raw row it can approach).
    fn compares(&self) -> bool {
        false
    }
    /// Writes `bytes` under `key` only if it still holds `read`, compared the way the store's
    /// saves compare on this server; `false` if it did not.
    async fn put_if_unchanged(
        &self,
        key: &SessionKey,
        read: &[u8],
        bytes: Vec<u8>,
    ) -> Result<bool> {
        let _ = (key, read, bytes);
        Err(session_core::Error::backend(
            "this raw driver has no compare-and-set",
        ))
    }
}

/// A moka future cache of encoded bytes, built like the memory store's cache minus expiry and
/// weighing: the limit the memory store can approach.
pub struct MokaRaw(Cache<SessionKey, Arc<Vec<u8>>>);

impl MokaRaw {
    pub fn new() -> Self {
        MokaRaw(Cache::builder().max_capacity(1 << 20).build())
    }
}

#[async_trait]
impl RawDriver for MokaRaw {
    async fn get(&self, key: &SessionKey) -> Result<Option<Arc<Vec<u8>>>> {
        Ok(self.0.get(key).await)
    }

    async fn put(&self, key: &SessionKey, bytes: Vec<u8>) -> Result<()> {
        self.0.insert(*key, Arc::new(bytes)).await;
        Ok(())
    }
}

/// One SELECT and one UPDATE of a bytes row, on the connections the store's own find and
/// save use: the limit a SQL store can approach.
pub struct SqlRaw {
    store: session_sql::SqlStore,
    pool: sqlx::AnyPool,
    select: String,
    update: String,
    insert: String,
}

impl SqlRaw {
    /// Creates `<table>_raw` beside the store's table.
    pub async fn new(store: &session_sql::SqlStore) -> Result<Self> {
        use session_sql::Dialect;
        let dialect = store.dialect();
        let table = format!("{}_raw", store.config().table);
        let (key_type, value_type) = match dialect {
            Dialect::Postgres => ("BYTEA", "BYTEA"),
            Dialect::MySql => ("BINARY(32)", "LONGBLOB"),
            Dialect::Sqlite => ("BLOB", "BLOB"),
        };
        sqlx::query(&format!(
            "CREATE TABLE IF NOT EXISTS {table} (k {key_type} NOT NULL PRIMARY KEY, v {value_type} NOT NULL)"
        ))
        .execute(store.pool())
        .await
        .map_err(session_core::Error::backend)?;
        let p = |n: usize| {
            if dialect == Dialect::Postgres {
                format!("${n}")
            } else {
                "?".into()
            }
        };
        Ok(SqlRaw {
            store: store.clone(),
            pool: store.pool().clone(),
            select: format!("SELECT v FROM {table} WHERE k = {}", p(1)),
            update: format!("UPDATE {table} SET v = {} WHERE k = {}", p(1), p(2)),
            insert: format!("INSERT INTO {table} (k, v) VALUES ({}, {})", p(1), p(2)),
        })
    }
}

#[async_trait]
impl RawDriver for SqlRaw {
    async fn get(&self, key: &SessionKey) -> Result<Option<Arc<Vec<u8>>>> {
        use sqlx::Row;
        let mut connection = self.store.statement_connection().await?;
        let row = sqlx::query(&self.select)
            .bind(key.as_bytes().to_vec())
            .fetch_optional(&mut *connection)
            .await
            .map_err(session_core::Error::backend);
        let row = connection.settle(row)?;
        row.map(|row| row.try_get::<Vec<u8>, _>(0).map(Arc::new))
            .transpose()
            .map_err(session_core::Error::backend)
    }

    async fn put(&self, key: &SessionKey, bytes: Vec<u8>) -> Result<()> {
        let mut connection = self.store.statement_connection().await?;
        let updated = sqlx::query(&self.update)
            .bind(bytes.clone())
            .bind(key.as_bytes().to_vec())
            .execute(&mut *connection)
            .await
            .map_err(session_core::Error::backend);
        let updated = connection.settle(updated)?;
        if updated.rows_affected() == 0 {
            // Only while the bench fills the table.
            sqlx::query(&self.insert)
                .bind(key.as_bytes().to_vec())
                .bind(bytes)
                .execute(&self.pool)
                .await
                .map_err(session_core::Error::backend)?;
        }
        Ok(())
    }
}

/// GET and SET EX of the same bytes with the redis crate's own connection types: the limit the
/// Redis store can approach. Its compare-and-set ([`RawDriver::put_if_unchanged`]) is the
/// conditional write the store's saves use on this server (see [`RedisRaw::connect`]): the
/// limit of any store that keeps a concurrent writer's change on it.
pub struct RedisRaw {
    link: RedisLink,
    comparison: session_redis::Comparison,
}

/// The connections of a [`RedisRaw`].
enum RedisLink {
    /// Standalone: a multiplexed connection manager.
    Single(session_redis::redis::aio::ConnectionManager),
    /// Cluster: a multiplexed connection to each master, each command sent to the master of
    /// its key's slot, as the store's direct lanes do (redis-rs's cluster client, which the
    /// store sends only what a lane cannot take, costs twice the client CPU per command).
    Cluster {
        slots: std::collections::HashMap<session_redis::redis::cluster_routing::Slot, usize>,
        masters: Vec<session_redis::redis::aio::MultiplexedConnection>,
    },
}

impl RedisRaw {
    /// Connects to the nodes of `config`; its compare-and-set compares as `comparison` says
    /// (the store's [`session_redis::RedisStore::comparison`] on the same server).
    pub async fn connect(
        config: &session_redis::Config,
        comparison: session_redis::Comparison,
    ) -> Result<Self> {
        use session_redis::{redis, Comparison};
        let backend = session_core::Error::backend;
        let link = if config.cluster {
            let client =
                redis::cluster::ClusterClient::new(config.nodes.clone()).map_err(backend)?;
            let mut cluster = client.get_async_connection().await.map_err(backend)?;
            let reply: Vec<redis::Value> = redis::cmd("CLUSTER")
                .arg("SLOTS")
                .query_async(&mut cluster)
                .await
                .map_err(backend)?;
            let mut slots = std::collections::HashMap::new();
            let mut masters = Vec::new();
            for range in reply {
                // [first slot, last slot, [master host, master port, id, ...], replicas...]
                let redis::Value::Array(range) = range else {
                    continue;
                };
                let (Some(redis::Value::Int(first)), Some(redis::Value::Int(last))) =
                    (range.first(), range.get(1))
                else {
                    continue;
                };
                let Some(redis::Value::Array(master)) = range.get(2) else {
                    continue;
                };
                let (Some(redis::Value::BulkString(host)), Some(redis::Value::Int(port))) =
                    (master.first(), master.get(1))
                else {
                    continue;
                };
                let url = format!("redis://{}:{port}", String::from_utf8_lossy(host));
                let connection = redis::Client::open(url)
                    .map_err(backend)?
                    .get_multiplexed_async_connection()
                    .await
                    .map_err(backend)?;
                masters.push(connection);
                for slot in *first..=*last {
                    let slot = u16::try_from(slot)
                        .ok()
                        .and_then(redis::cluster_routing::Slot::new)
                        .ok_or_else(|| {
                            session_core::Error::backend("CLUSTER SLOTS: a slot out of range")
                        })?;
                    slots.insert(slot, masters.len() - 1);
                }
            }
            RedisLink::Cluster { slots, masters }
        } else {
            let client = match &config.tls_ca_file {
                // The same private CA the store trusts (`rediss://` with a throwaway CA).
                Some(ca) => {
                    let root_cert = std::fs::read(ca).map_err(session_core::Error::backend)?;
                    redis::Client::build_with_tls(
                        config.nodes[0].as_str(),
                        redis::TlsCertificates {
                            client_tls: None,
                            root_cert: Some(root_cert),
                        },
                    )
                }
                None => redis::Client::open(config.nodes[0].as_str()),
            }
            .map_err(backend)?;
            RedisLink::Single(client.get_connection_manager().await.map_err(backend)?)
        };
        if !matches!(comparison, Comparison::Digest | Comparison::Value) {
            // Loaded once here, so that the loop's EVALSHA never meets NOSCRIPT.
            for script in [COMPARE_AND_SET_LUA, STAGED_COMPARE_AND_SET_LUA] {
                let mut load = redis::cmd("SCRIPT");
                load.arg("LOAD").arg(script);
                match &link {
                    RedisLink::Single(c) => {
                        load.query_async::<String>(&mut c.clone())
                            .await
                            .map_err(backend)?;
                    }
                    RedisLink::Cluster { masters, .. } => {
                        for master in masters {
                            load.query_async::<String>(&mut master.clone())
                                .await
                                .map_err(backend)?;
                        }
                    }
                }
            }
        }
        Ok(RedisRaw { link, comparison })
    }

    /// Sends `cmd`, whose key is its first argument.
    async fn query<T: session_redis::redis::FromRedisValue>(
        &self,
        cmd: &session_redis::redis::Cmd,
    ) -> Result<T> {
        let key = cmd
            .args_iter()
            .nth(1)
            .and_then(|arg| match arg {
                session_redis::redis::Arg::Simple(key) => Some(key),
                _ => None,
            })
            .unwrap_or_default();
        self.query_at(cmd, key).await
    }

    /// Sends `cmd` to the master of `key`'s slot (a script names its key after the script).
    async fn query_at<T: session_redis::redis::FromRedisValue>(
        &self,
        cmd: &session_redis::redis::Cmd,
        key: &[u8],
    ) -> Result<T> {
        let result = match &self.link {
            RedisLink::Single(c) => cmd.query_async(&mut c.clone()).await,
            RedisLink::Cluster { slots, masters } => {
                cmd.query_async(&mut Self::master(slots, masters, key)?.clone())
                    .await
            }
        };
        result.map_err(session_core::Error::backend)
    }

    /// [`RedisRaw::query`] for a transaction on `key`'s slot.
    async fn query_pipeline<T: session_redis::redis::FromRedisValue>(
        &self,
        pipe: &session_redis::redis::Pipeline,
        key: &str,
    ) -> Result<T> {
        let result = match &self.link {
            RedisLink::Single(c) => pipe.query_async(&mut c.clone()).await,
            RedisLink::Cluster { slots, masters } => {
                pipe.query_async(&mut Self::master(slots, masters, key.as_bytes())?.clone())
                    .await
            }
        };
        result.map_err(session_core::Error::backend)
    }

    /// The connection to the master of `key`'s slot.
    fn master<'a>(
        slots: &std::collections::HashMap<session_redis::redis::cluster_routing::Slot, usize>,
        masters: &'a [session_redis::redis::aio::MultiplexedConnection],
        key: &[u8],
    ) -> Result<&'a session_redis::redis::aio::MultiplexedConnection> {
        let slot = session_redis::redis::cluster_routing::Slot::for_key(key);
        slots
            .get(&slot)
            .and_then(|index| masters.get(*index))
            .ok_or_else(|| session_core::Error::backend("a slot with no master"))
    }
}

fn raw_key(key: &SessionKey) -> String {
    format!("bench-raw:{{{}}}", key.to_hex())
}

#[async_trait]
impl RawDriver for RedisRaw {
    async fn get(&self, key: &SessionKey) -> Result<Option<Arc<Vec<u8>>>> {
        let value: Option<Vec<u8>> = self
            .query(session_redis::redis::cmd("GET").arg(raw_key(key)))
            .await?;
        Ok(value.map(Arc::new))
    }

    async fn put(&self, key: &SessionKey, bytes: Vec<u8>) -> Result<()> {
        self.query::<()>(
            session_redis::redis::cmd("SET")
                .arg(raw_key(key))
                .arg(bytes)
                .arg("EX")
                .arg(1800),
        )
        .await
    }

    fn compares(&self) -> bool {
        true
    }

    async fn put_if_unchanged(
        &self,
        key: &SessionKey,
        read: &[u8],
        bytes: Vec<u8>,
    ) -> Result<bool> {
        use session_redis::{redis, Comparison};
        let session = raw_key(key);
        if matches!(self.comparison, Comparison::Digest | Comparison::Value) {
            let mut cmd = redis::cmd("SET");
            cmd.arg(&session).arg(bytes);
            if self.comparison == Comparison::Digest {
                // As the store's: 16 lowercase hex digits, formatted without an allocation.
                let mut digest = [0u8; 16];
                let _ = hex::encode_to_slice(
                    xxhash_rust::xxh3::xxh3_64(read).to_be_bytes(),
                    &mut digest,
                );
                cmd.arg("IFDEQ").arg(&digest[..]);
            } else {
                cmd.arg("IFEQ").arg(read);
            }
            let written: Option<String> = self.query(cmd.arg("EX").arg(1800)).await?;
            return Ok(written.is_some());
        }
        let header = &read[..read.len().min(COMPARED_BYTES)];
        let written: i64 = if bytes.len() > STAGED_FROM {
            // Over 2 KiB the store stages the value rather than pass it through Lua (which
            // costs the server about a nanosecond a byte), and so does this loop: a plain SET
            // writes it to a staging key, and the script renames that over the session.
            let stage = format!("bench-raw-stage:{{{}}}", key.to_hex());
            let mut pipe = redis::pipe();
            pipe.atomic()
                .cmd("SET")
                .arg(&stage)
                .arg(bytes)
                .arg("EX")
                .arg(1800)
                .ignore()
                .cmd("EVALSHA")
                .arg(STAGED_COMPARE_AND_SET.get_hash())
                .arg(2)
                .arg(&session)
                .arg(&stage)
                .arg(header);
            let (written,): (i64,) = self.query_pipeline(&pipe, &session).await?;
            written
        } else {
            let mut cmd = redis::cmd("EVALSHA");
            cmd.arg(COMPARE_AND_SET.get_hash())
                .arg(1)
                .arg(&session)
                .arg(bytes)
                .arg(header);
            self.query_at(&cmd, session.as_bytes()).await?
        };
        Ok(written == 1)
    }
}

/// How many of the stored bytes the scripts compare: about the store's header line.
const COMPARED_BYTES: usize = 64;

/// The size from which the store stages a value instead of passing it to its script.
const STAGED_FROM: usize = 2048;

/// The raw compare-and-set of a server without a conditional `SET` (Redis before 8.4, Valkey
/// before 8.1): the least a script can do, as the store's does (compare the stored value's
/// first bytes, then write).
static COMPARE_AND_SET: std::sync::LazyLock<session_redis::redis::Script> =
    std::sync::LazyLock::new(|| session_redis::redis::Script::new(COMPARE_AND_SET_LUA));

const COMPARE_AND_SET_LUA: &str = "
    local stored = redis.call('GETRANGE', KEYS[1], 0, #ARGV[2] - 1)
    if stored ~= ARGV[2] then return 0 end
    redis.call('SET', KEYS[1], ARGV[1], 'EX', 1800)
    return 1
";

/// [`COMPARE_AND_SET`] for a value staged under `KEYS[2]`: renames it over the session, or
/// drops it.
static STAGED_COMPARE_AND_SET: std::sync::LazyLock<session_redis::redis::Script> =
    std::sync::LazyLock::new(|| session_redis::redis::Script::new(STAGED_COMPARE_AND_SET_LUA));

const STAGED_COMPARE_AND_SET_LUA: &str = "
    local stored = redis.call('GETRANGE', KEYS[1], 0, #ARGV[1] - 1)
    if stored ~= ARGV[1] then
        redis.call('DEL', KEYS[2])
        return 0
    end
    redis.call('RENAME', KEYS[2], KEYS[1])
    return 1
";

/// Pooled async-memcached connections doing one `mg` and one `ms` of the bytes, the way the
/// store's own pool does (same client, same pool size): the limit the memcached store can
/// approach.
pub struct MemcachedRaw {
    pool: deadpool::managed::Pool<MemcachedConnector>,
    prefix: String,
}

pub struct MemcachedConnector(String);

impl deadpool::managed::Manager for MemcachedConnector {
    type Type = async_memcached::Client;
    type Error = async_memcached::Error;

    async fn create(&self) -> std::result::Result<Self::Type, Self::Error> {
        // Boxed like the store's (session-memcached's pool.rs): a smaller checkout future.
        Box::pin(async_memcached::Client::new(format!("tcp://{}", self.0))).await
    }

    async fn recycle(
        &self,
        client: &mut Self::Type,
        _: &deadpool::managed::Metrics,
    ) -> deadpool::managed::RecycleResult<Self::Error> {
        if client.is_closed() {
            Err(deadpool::managed::RecycleError::message("closed"))
        } else {
            Ok(())
        }
    }
}

impl MemcachedRaw {
    pub fn new(config: &session_memcached::Config) -> Result<Self> {
        let pool = deadpool::managed::Pool::builder(MemcachedConnector(config.servers[0].clone()))
            .max_size(config.pool_size)
            .runtime(deadpool::Runtime::Tokio1)
            .build()
            .map_err(|e| session_core::Error::backend(e.to_string()))?;
        Ok(MemcachedRaw {
            pool,
            prefix: format!("{}raw:", config.prefix),
        })
    }

    fn key(&self, key: &SessionKey) -> String {
        format!("{}{}", self.prefix, key.to_hex())
    }
}

#[async_trait]
impl RawDriver for MemcachedRaw {
    async fn get(&self, key: &SessionKey) -> Result<Option<Arc<Vec<u8>>>> {
        use async_memcached::MetaProtocol;
        let mut client = self
            .pool
            .get()
            .await
            .map_err(|e| session_core::Error::unavailable(e.to_string()))?;
        let item = client
            .meta_get(self.key(key), false, None, Some(&["v"]))
            .await
            .map_err(session_core::Error::unavailable)?;
        Ok(item.and_then(|item| item.data).map(Arc::new))
    }

    async fn put(&self, key: &SessionKey, bytes: Vec<u8>) -> Result<()> {
        use async_memcached::MetaProtocol;
        let mut client = self
            .pool
            .get()
            .await
            .map_err(|e| session_core::Error::unavailable(e.to_string()))?;
        client
            .meta_set(
                self.key(key),
                bytes.as_slice(),
                false,
                None,
                Some(&["T1800"]),
            )
            .await
            .map_err(session_core::Error::unavailable)?;
        Ok(())
    }
}

/// One `find` by `_id` and one `$set` update (upsert) of a binary field, on the store's own
/// client, in a collection beside the store's: the limit the MongoDB store can approach.
pub struct MongoRaw {
    collection: session_mongo::mongodb::Collection<session_mongo::mongodb::bson::Document>,
}

impl MongoRaw {
    pub fn new(store: &session_mongo::MongoStore) -> Self {
        let config = store.config();
        let collection = store
            .client()
            .database(&config.database)
            .collection(&format!("{}_raw", config.collection));
        MongoRaw { collection }
    }
}

#[async_trait]
impl RawDriver for MongoRaw {
    async fn get(&self, key: &SessionKey) -> Result<Option<Arc<Vec<u8>>>> {
        use session_mongo::mongodb::bson::doc;
        let found = self
            .collection
            .find_one(doc! { "_id": key.to_hex() })
            .await
            .map_err(session_core::Error::unavailable)?;
        Ok(found
            .and_then(|document| document.get_binary_generic("v").ok().cloned())
            .map(Arc::new))
    }

    async fn put(&self, key: &SessionKey, bytes: Vec<u8>) -> Result<()> {
        use session_mongo::mongodb::bson::spec::BinarySubtype;
        use session_mongo::mongodb::bson::{doc, Binary};
        let value = Binary {
            subtype: BinarySubtype::Generic,
            bytes,
        };
        self.collection
            .update_one(
                doc! { "_id": key.to_hex() },
                doc! { "$set": { "v": value } },
            )
            .upsert(true)
            .await
            .map_err(session_core::Error::unavailable)?;
        Ok(())
    }
}
