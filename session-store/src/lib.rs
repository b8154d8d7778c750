//! Open any session store from configuration, so that swapping stores is a configuration
//! change, not a code change.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> session_core::Result<()> {
//! use session_core::SessionRepositoryExt;
//!
//! let store = session_store::open("memory://").await?; // or redis://…, postgres://…, sqlite://…
//! let mut session = store.new_session();
//! store.create(&mut session).await?;
//! # Ok(()) }
//! ```
//!
//! | scheme | store | cargo feature |
//! |---|---|---|
//! | `memory://` | [`session_memory`] | `memory` (default) |
//! | `sqlite://path` | `session_sql` | `sqlite` (default) |
//! | `postgres://`, `postgresql://` | `session_sql` | `postgres` |
//! | `mysql://`, `mariadb://` | `session_sql` | `mysql` |
//! | `redis://`, `rediss://`, `redis+cluster://`, comma-separated nodes | `session_redis` | `redis` |
//! | `memcache://`, `memcached://`, comma-separated servers | `session_memcached` | `memcached` |
//! | `mongodb://`, `mongodb+srv://` | `session_mongo` | `mongo` |
//!
//! **Changing stores** without logging anyone out: set [`StoreConfig::migrate_from`] (or
//! `SESSION_STORE_MIGRATE_FROM` beside `SESSION_STORE_URL`) to the old store's URL; sessions
//! then move to the new store as they are used ([`Migrating`]).
//!
//! The schemes come from core's one table ([`session_core::raw::SCHEMES`]). A URL whose store
//! is not compiled in is [`Error::Config`] naming the feature to enable; an unknown scheme
//! lists the known ones; an unknown option is [`Error::Config`] naming the store's options.
#![deny(missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use session_core::raw::{parse_flag, scheme_of};
use session_core::{
    Concurrency, Error, Json, MessagePack, Migrating, Result, SaveMode, SessionRepository,
    SessionSettings,
};

/// The codec of new sessions' attributes, as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum CodecName {
    /// MessagePack (the default).
    #[default]
    #[serde(alias = "messagepack")]
    Msgpack,
    /// JSON.
    Json,
}

/// Where sessions live and how they behave, as it comes from a file or the environment.
///
/// ```
/// let config: session_store::StoreConfig = serde_json::from_str(
///     r#"{ "url": "redis://cache:6379", "idle_timeout_secs": 1800, "codec": "json" }"#,
/// ).unwrap();
/// assert_eq!(config.url, "redis://cache:6379");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct StoreConfig {
    /// The store URL (see the crate docs for the schemes).
    pub url: String,
    /// Sliding idle timeout of new sessions, in seconds (default 1800).
    #[serde(default)]
    pub idle_timeout_secs: Option<u64>,
    /// Absolute lifetime cap of new sessions, in seconds (default none).
    #[serde(default)]
    pub absolute_lifetime_secs: Option<u64>,
    /// `msgpack` (default) or `json`.
    #[serde(default)]
    pub codec: CodecName,
    /// `on-set` (default), `on-get` or `always`.
    #[serde(default)]
    pub save_mode: SaveMode,
    /// `last-write-wins` (default) or `optimistic`.
    #[serde(default)]
    pub concurrency: Concurrency,
    /// Wrap the store in `session_instrument::Instrumented`: a tracing span and metrics per
    /// call (default off; needs the `instrument` feature).
    #[serde(default)]
    pub instrument: bool,
    /// With [`StoreConfig::instrument`]: metrics as well as spans (default `true`). `false`
    /// keeps the spans only, which cost nothing while no subscriber wants them.
    #[serde(default = "yes")]
    pub metrics: bool,
    /// A store to move sessions from (a URL): the store opened is then a
    /// [`Migrating`] pair, reading `url` then this one, moving each
    /// session to `url` on its next save or touch. See `Migrating` for the rollout rules.
    #[serde(default)]
    pub migrate_from: Option<String>,
}

impl StoreConfig {
    /// A config with only a URL; everything else default.
    pub fn new(url: impl Into<String>) -> Self {
        StoreConfig {
            url: url.into(),
            idle_timeout_secs: None,
            absolute_lifetime_secs: None,
            codec: CodecName::default(),
            save_mode: SaveMode::default(),
            concurrency: Concurrency::default(),
            instrument: false,
            metrics: true,
            migrate_from: None,
        }
    }

    /// Sets [`StoreConfig::migrate_from`].
    pub fn with_migrate_from(mut self, url: Option<String>) -> Self {
        self.migrate_from = url;
        self
    }

    /// Sets [`StoreConfig::instrument`].
    pub fn with_instrument(mut self, on: bool) -> Self {
        self.instrument = on;
        self
    }

    /// Sets [`StoreConfig::metrics`].
    pub fn with_metrics(mut self, on: bool) -> Self {
        self.metrics = on;
        self
    }

    /// Reads `<PREFIX>URL`, `<PREFIX>IDLE_TIMEOUT_SECS`, `<PREFIX>ABSOLUTE_LIFETIME_SECS`,
    /// `<PREFIX>CODEC`, `<PREFIX>SAVE_MODE`, `<PREFIX>CONCURRENCY`, `<PREFIX>INSTRUMENT` and
    /// `<PREFIX>METRICS` (`true`/`false`) and `<PREFIX>MIGRATE_FROM` (a URL) from the environment,
    /// e.g. with prefix `SESSION_STORE_`. `Ok(None)` when the URL variable is not set.
    pub fn from_env(prefix: &str) -> Result<Option<Self>> {
        let var = |name: &str| {
            std::env::var(format!("{prefix}{name}"))
                .ok()
                .filter(|v| !v.is_empty())
        };
        let Some(url) = var("URL") else {
            return Ok(None);
        };
        let number = |name: &str| -> Result<Option<u64>> {
            var(name)
                .map(|value| {
                    value.parse().map_err(|_| {
                        Error::Config(format!("{prefix}{name} must be a whole number of seconds"))
                    })
                })
                .transpose()
        };
        Ok(Some(StoreConfig {
            url,
            idle_timeout_secs: number("IDLE_TIMEOUT_SECS")?,
            absolute_lifetime_secs: number("ABSOLUTE_LIFETIME_SECS")?,
            codec: enum_var(prefix, "CODEC", var("CODEC"))?,
            save_mode: enum_var(prefix, "SAVE_MODE", var("SAVE_MODE"))?,
            concurrency: enum_var(prefix, "CONCURRENCY", var("CONCURRENCY"))?,
            instrument: flag(prefix, "INSTRUMENT", var("INSTRUMENT"))?.unwrap_or(false),
            metrics: flag(prefix, "METRICS", var("METRICS"))?.unwrap_or(true),
            migrate_from: var("MIGRATE_FROM"),
        }))
    }

    /// The session settings this config describes.
    pub fn settings(&self) -> Result<SessionSettings> {
        let mut settings = SessionSettings::default();
        if let Some(secs) = self.idle_timeout_secs {
            settings = settings.with_idle_timeout(Duration::from_secs(secs));
        }
        settings =
            settings.with_absolute_lifetime(self.absolute_lifetime_secs.map(Duration::from_secs));
        settings = match self.codec {
            CodecName::Msgpack => settings.with_codec(MessagePack),
            CodecName::Json => settings.with_codec(Json),
        };
        Ok(settings
            .with_save_mode(self.save_mode)
            .with_concurrency(self.concurrency))
    }
}

/// Reads an enum-valued variable the way a config file is read, so that a wrong value gets the
/// same error, listing the accepted ones.
fn enum_var<T: serde::de::DeserializeOwned + Default>(
    prefix: &str,
    name: &str,
    value: Option<String>,
) -> Result<T> {
    use serde::de::IntoDeserializer;
    let Some(value) = value else {
        return Ok(T::default());
    };
    T::deserialize(value.into_deserializer())
        .map_err(|error: serde::de::value::Error| Error::Config(format!("{prefix}{name}: {error}")))
}

fn yes() -> bool {
    true
}

/// A `true`/`false` (or `1`/`0`) environment variable.
fn flag(prefix: &str, name: &str, value: Option<String>) -> Result<Option<bool>> {
    value
        .map(|value| {
            parse_flag(&value).ok_or_else(|| {
                Error::Config(format!(
                    "{prefix}{name} must be true or false, not {value:?}"
                ))
            })
        })
        .transpose()
}

/// Opens the store a URL names, with default session settings.
pub async fn open(url: &str) -> Result<Arc<dyn SessionRepository>> {
    open_with(&StoreConfig::new(url)).await
}

/// Opens the store `config` describes: with [`StoreConfig::migrate_from`], a
/// [`Migrating`] pair whose stores are each instrumented under their own kind when
/// [`StoreConfig::instrument`] is on (so the old store's traffic shows the migration's progress).
pub async fn open_with(config: &StoreConfig) -> Result<Arc<dyn SessionRepository>> {
    let settings = config.settings()?;
    let instrument = config.instrument.then_some(config.metrics);
    let new = open_one(config.url.trim(), settings.clone(), instrument).await?;
    let Some(old_url) = config.migrate_from.as_deref().map(str::trim) else {
        return Ok(new);
    };
    if old_url == config.url.trim() {
        return Err(Error::Config(
            "migrate_from names the store sessions migrate to".into(),
        ));
    }
    let old = open_one(old_url, settings, instrument).await?;
    Ok(Arc::new(Migrating::new(new, old)?))
}

async fn open_one(
    url: &str,
    settings: SessionSettings,
    instrument_with_metrics: Option<bool>,
) -> Result<Arc<dyn SessionRepository>> {
    let scheme = scheme_of(url)?;
    let store = open_kind(url, scheme, settings).await?;
    if let Some(metrics) = instrument_with_metrics {
        return instrument(store, scheme.kind, metrics);
    }
    Ok(store)
}

#[cfg(feature = "instrument")]
fn instrument(
    store: Arc<dyn SessionRepository>,
    kind: &'static str,
    metrics: bool,
) -> Result<Arc<dyn SessionRepository>> {
    let instrumented = session_instrument::Instrumented::new(store, kind);
    Ok(Arc::new(if metrics {
        instrumented
    } else {
        instrumented.without_metrics()
    }))
}

#[cfg(not(feature = "instrument"))]
fn instrument(
    _: Arc<dyn SessionRepository>,
    _: &'static str,
    _: bool,
) -> Result<Arc<dyn SessionRepository>> {
    Err(Error::Config(
        "instrument = true needs the `instrument` feature of session-store".into(),
    ))
}

async fn open_kind(
    url: &str,
    scheme: &'static session_core::raw::Scheme,
    settings: SessionSettings,
) -> Result<Arc<dyn SessionRepository>> {
    match scheme.kind {
        "memory" => open_memory(url, settings),
        "sqlite" | "postgres" | "mysql" => open_sql(url, scheme.kind, settings).await,
        "redis" => open_redis(url, settings).await,
        "memcached" => open_memcached(url, settings).await,
        "mongo" => open_mongo(url, settings).await,
        other => Err(missing(other, scheme.scheme)),
    }
}

fn missing(feature: &str, scheme: &str) -> Error {
    Error::Config(format!(
        "a {scheme}:// store needs the `{feature}` feature of session-store"
    ))
}

#[cfg(feature = "memory")]
fn open_memory(url: &str, settings: SessionSettings) -> Result<Arc<dyn SessionRepository>> {
    let config = session_memory::Config::from_url(url)?;
    Ok(Arc::new(session_memory::MemoryStore::open(
        config, settings,
    )))
}

#[cfg(not(feature = "memory"))]
fn open_memory(_: &str, _: SessionSettings) -> Result<Arc<dyn SessionRepository>> {
    Err(missing("memory", "memory"))
}

async fn open_sql(
    url: &str,
    feature: &str,
    settings: SessionSettings,
) -> Result<Arc<dyn SessionRepository>> {
    let compiled = match feature {
        "sqlite" => cfg!(feature = "sqlite"),
        "mysql" => cfg!(feature = "mysql"),
        _ => cfg!(feature = "postgres"),
    };
    if !compiled {
        return Err(missing(feature, feature));
    }
    #[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
    {
        let config = session_sql::Config::from_url(url)?;
        Ok(Arc::new(
            session_sql::SqlStore::open(config, settings).await?,
        ))
    }
    #[cfg(not(any(feature = "sqlite", feature = "postgres", feature = "mysql")))]
    {
        let _ = (url, settings);
        Err(missing(feature, feature))
    }
}

#[cfg(feature = "redis")]
async fn open_redis(url: &str, settings: SessionSettings) -> Result<Arc<dyn SessionRepository>> {
    let config = session_redis::Config::from_url(url)?;
    Ok(Arc::new(
        session_redis::RedisStore::open(config, settings).await?,
    ))
}

#[cfg(not(feature = "redis"))]
async fn open_redis(_: &str, _: SessionSettings) -> Result<Arc<dyn SessionRepository>> {
    Err(missing("redis", "redis"))
}

#[cfg(feature = "memcached")]
async fn open_memcached(
    url: &str,
    settings: SessionSettings,
) -> Result<Arc<dyn SessionRepository>> {
    let config = session_memcached::Config::from_url(url)?;
    Ok(Arc::new(
        session_memcached::MemcachedStore::open(config, settings).await?,
    ))
}

#[cfg(not(feature = "memcached"))]
async fn open_memcached(_: &str, _: SessionSettings) -> Result<Arc<dyn SessionRepository>> {
    Err(missing("memcached", "memcache"))
}

#[cfg(feature = "mongo")]
async fn open_mongo(url: &str, settings: SessionSettings) -> Result<Arc<dyn SessionRepository>> {
    let config = session_mongo::Config::from_url(url)?;
    Ok(Arc::new(
        session_mongo::MongoStore::open(config, settings).await?,
    ))
}

#[cfg(not(feature = "mongo"))]
async fn open_mongo(_: &str, _: SessionSettings) -> Result<Arc<dyn SessionRepository>> {
    Err(missing("mongo", "mongodb"))
}
