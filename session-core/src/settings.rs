//! Settings shared by a repository and the sessions it hands out.

use std::sync::Arc;
use std::time::Duration;

use crate::codec::{Codec, MessagePack};

/// Which attributes a [`save`](crate::SessionRepository::save) writes (Spring's "flush mode"
/// counterpart, named after Spring Session's `SaveMode`).
///
/// In configuration (serde): `on-set`, `on-get`, `always`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum SaveMode {
    /// Only attributes set or removed since the session was loaded. The default: it is what
    /// lets two requests that change different attributes both keep their change.
    #[default]
    OnSet,
    /// Also every attribute read with [`get`](crate::Session::get), for values that callers
    /// mutate after reading and expect to be stored without an explicit `insert`.
    OnGet,
    /// Every attribute of the session, on every save. The loaded copy wins wholesale.
    Always,
}

/// How concurrent saves of one session are reconciled.
///
/// In configuration (serde): `last-write-wins`, `optimistic`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Concurrency {
    /// Each save writes its delta; for every attribute the later save wins, attributes the save
    /// did not touch keep whatever is stored. The default.
    #[default]
    #[serde(rename = "last-write-wins")]
    LastWriteWinsPerAttribute,
    /// A save succeeds only if the stored version is still the one the session was loaded with;
    /// otherwise it writes nothing and returns [`Error::Conflict`](crate::Error::Conflict).
    Optimistic,
}

/// Size limits enforced by core for every store. Exceeding one is
/// [`Error::TooLarge`](crate::Error::TooLarge) or [`Error::InvalidInput`](crate::Error::InvalidInput),
/// and nothing is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Maximum encoded size of all attribute names and values of a session, in bytes.
    pub max_session_bytes: usize,
    /// Maximum number of attributes in a session.
    pub max_attributes: usize,
    /// Maximum length of an attribute name, in bytes.
    pub max_attribute_name_len: usize,
    /// Maximum length of a principal name, in bytes.
    pub max_principal_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            // Well below memcached's 1 MiB item limit and Redis' comfortable value sizes.
            max_session_bytes: 256 * 1024,
            max_attributes: 256,
            max_attribute_name_len: 256,
            max_principal_len: 256,
        }
    }
}

impl Limits {
    /// Sets [`Limits::max_session_bytes`].
    pub fn with_max_session_bytes(mut self, bytes: usize) -> Self {
        self.max_session_bytes = bytes;
        self
    }

    /// Sets [`Limits::max_attributes`].
    pub fn with_max_attributes(mut self, count: usize) -> Self {
        self.max_attributes = count;
        self
    }

    /// Sets [`Limits::max_attribute_name_len`].
    pub fn with_max_attribute_name_len(mut self, len: usize) -> Self {
        self.max_attribute_name_len = len;
        self
    }

    /// Sets [`Limits::max_principal_len`].
    pub fn with_max_principal_len(mut self, len: usize) -> Self {
        self.max_principal_len = len;
        self
    }
}

/// Everything a repository needs to know about the sessions it manages, apart from where they
/// live. Cheap to share: repositories keep it in an `Arc` and every session points to it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SessionSettings {
    /// Sliding idle timeout given to new sessions (Spring's `maxInactiveInterval`).
    pub idle_timeout: Duration,
    /// Optional cap on a session's total life, counted from its creation, whatever its activity.
    pub absolute_lifetime: Option<Duration>,
    /// Which attributes a save writes.
    pub save_mode: SaveMode,
    /// How concurrent saves are reconciled.
    pub concurrency: Concurrency,
    /// Size limits.
    pub limits: Limits,
    /// Codec for new attribute values. Values written by another built-in codec stay readable.
    pub codec: Arc<dyn Codec>,
}

impl Default for SessionSettings {
    fn default() -> Self {
        SessionSettings {
            idle_timeout: Duration::from_secs(30 * 60),
            absolute_lifetime: None,
            save_mode: SaveMode::default(),
            concurrency: Concurrency::default(),
            limits: Limits::default(),
            codec: Arc::new(MessagePack),
        }
    }
}

impl SessionSettings {
    /// Sets [`SessionSettings::idle_timeout`].
    pub fn with_idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// Sets [`SessionSettings::absolute_lifetime`].
    pub fn with_absolute_lifetime(mut self, lifetime: Option<Duration>) -> Self {
        self.absolute_lifetime = lifetime;
        self
    }

    /// Sets [`SessionSettings::save_mode`].
    pub fn with_save_mode(mut self, mode: SaveMode) -> Self {
        self.save_mode = mode;
        self
    }

    /// Sets [`SessionSettings::concurrency`].
    pub fn with_concurrency(mut self, concurrency: Concurrency) -> Self {
        self.concurrency = concurrency;
        self
    }

    /// Sets [`SessionSettings::limits`].
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Sets [`SessionSettings::codec`].
    pub fn with_codec(mut self, codec: impl Codec) -> Self {
        self.codec = Arc::new(codec);
        self
    }
}
