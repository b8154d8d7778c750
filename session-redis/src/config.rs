//! Configuration of the Redis store.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use session_core::raw::{redact_url as redact, StoreUrl};
use session_core::{Error, Result};

const DEFAULT_NEAR_CACHE_BYTES: u64 = 32 << 20;

/// Settings of a [`RedisStore`](crate::RedisStore). `Debug` hides passwords.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Config {
    /// Node URLs (`redis://` or `rediss://`). One URL: a standalone server. Several, or
    /// [`Config::cluster`] set: the seed nodes of a Redis Cluster.
    pub nodes: Vec<String>,
    /// Connect as a cluster client even with one seed node.
    pub cluster: bool,
    /// Prefix of every key this store writes (namespaces applications and tests).
    pub prefix: String,
    /// Bound on every operation and on each connection attempt.
    pub timeout: Duration,
    /// Memory for the near cache: decoded copies of the sessions this instance read or wrote,
    /// revalidated against the server's metadata (the hash layout's metadata field, the string
    /// layout's header) on every read, so that a read of an unchanged session moves tens of
    /// bytes instead of the whole session. `0` turns it off
    /// (every read fetches the hash). Default 32 MiB.
    pub near_cache_bytes: u64,
    /// For `rediss://`: a PEM file with the CA certificate(s) to trust instead of the system's
    /// trust store (a private CA, a self-signed server). Needs the `tls` feature.
    pub tls_ca_file: Option<PathBuf>,
    /// How new sessions are stored. Default [`Layout::Auto`].
    pub layout: Layout,
}

/// How a [`RedisStore`](crate::RedisStore) stores the sessions it creates. Whatever the
/// choice, every store reads, saves, touches and deletes sessions of both layouts, so
/// instances with different choices can share a server, and sessions written before a change
/// of layout keep theirs until they end.
///
/// An instance of an earlier version of this crate reads only hashes: while such instances
/// share the server (a rolling upgrade from one), choose [`Layout::Hash`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Layout {
    /// The layout this version of the crate recommends, today [`Layout::String`] on every
    /// server (it was measured faster than the hash layout on Redis 7.0 too, on every row of
    /// `session-bench`).
    #[default]
    Auto,
    /// One hash per session, written by server-side scripts: the layout of earlier versions of
    /// this crate.
    Hash,
    /// One string per session. Where the server's `SET` has `IFDEQ` (Redis 8.4 and later) or
    /// `IFEQ` (Valkey 8.1 and later; found out when the store opens, by trying them), a save is
    /// one plain `SET` that compares the stored value's digest or the value, without a script
    /// ([`Comparison`](crate::Comparison)). Elsewhere a script compares the stored header and
    /// writes; a value over 2 KiB is staged under a second key of the session's slot and
    /// renamed into place, so that it never passes through Lua.
    String,
}

impl std::str::FromStr for Layout {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        match text {
            "auto" => Ok(Layout::Auto),
            "hash" => Ok(Layout::Hash),
            "string" => Ok(Layout::String),
            other => Err(Error::Config(format!(
                "session_layout must be auto, hash or string, not {other:?}"
            ))),
        }
    }
}

impl Config {
    /// `redis://[user:password@]host:port[/db]`, `rediss://...`, a comma-separated list of
    /// cluster nodes (`redis://a:7000,redis://b:7001`), or `redis+cluster://host:port[,...]`.
    /// Store options in the query string of the first URL: `session_prefix`,
    /// `session_timeout_ms`, `session_near_cache_bytes`, `session_tls_ca_file`, `session_layout`
    /// (`auto`, `hash` or `string`, see [`Layout`]).
    ///
    /// `rediss://` needs the `tls` feature (on by default); without it such a URL is
    /// [`Error::Config`] here rather than a connection error later.
    ///
    /// Read by core's URL reader: an unknown option is [`Error::Config`] naming the known ones.
    pub fn from_url(url: &str) -> Result<Self> {
        let mut parsed = StoreUrl::parse(url)?;
        let scheme = parsed.scheme().to_owned();
        if !matches!(scheme.as_str(), "redis" | "rediss" | "redis+cluster") {
            return Err(Error::Config(format!("not a Redis URL: {}", redact(url))));
        }
        let cluster_scheme = scheme == "redis+cluster";
        let node_scheme = if cluster_scheme {
            "redis"
        } else {
            scheme.as_str()
        };
        let nodes: Vec<String> = parsed
            .targets()
            .iter()
            .map(|target| format!("{node_scheme}://{target}"))
            .collect();
        if nodes.is_empty() {
            return Err(Error::Config("no Redis node in the URL".into()));
        }
        if node_scheme == "rediss" && !cfg!(feature = "tls") {
            return Err(Error::Config(
                "rediss:// needs the `tls` feature of session-redis".into(),
            ));
        }
        let mut config = Config {
            cluster: cluster_scheme || nodes.len() > 1,
            nodes,
            prefix: "session:".into(),
            timeout: Duration::from_secs(2),
            near_cache_bytes: DEFAULT_NEAR_CACHE_BYTES,
            tls_ca_file: None,
            layout: Layout::Auto,
        };
        if let Some(prefix) = parsed.take_str("session_prefix") {
            config.prefix = prefix;
        }
        if let Some(timeout) = parsed.take_millis("session_timeout_ms")? {
            config.timeout = timeout;
        }
        if let Some(bytes) = parsed.take_u64("session_near_cache_bytes")? {
            config.near_cache_bytes = bytes;
        }
        if let Some(path) = parsed.take_str("session_tls_ca_file") {
            config.tls_ca_file = Some(PathBuf::from(path));
        }
        if let Some(layout) = parsed.take_str("session_layout") {
            config.layout = layout.parse()?;
        }
        parsed.finish("redis")?;
        if config.tls_ca_file.is_some() && !cfg!(feature = "tls") {
            return Err(Error::Config(
                "session_tls_ca_file needs the `tls` feature of session-redis".into(),
            ));
        }
        Ok(config)
    }

    /// Sets [`Config::prefix`].
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Sets [`Config::near_cache_bytes`] (`0` turns the near cache off).
    pub fn with_near_cache_bytes(mut self, bytes: u64) -> Self {
        self.near_cache_bytes = bytes;
        self
    }

    /// Sets [`Config::tls_ca_file`].
    pub fn with_tls_ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.tls_ca_file = Some(path.into());
        self
    }

    /// Sets [`Config::layout`].
    pub fn with_layout(mut self, layout: Layout) -> Self {
        self.layout = layout;
        self
    }

    /// Sets [`Config::timeout`].
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field(
                "nodes",
                &self.nodes.iter().map(|n| redact(n)).collect::<Vec<_>>(),
            )
            .field("cluster", &self.cluster)
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .field("near_cache_bytes", &self.near_cache_bytes)
            .field("tls_ca_file", &self.tls_ca_file)
            .field("layout", &self.layout)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let one = Config::from_url("redis://:s3cret@h:6379/0?session_prefix=app:").unwrap();
        assert!(!one.cluster);
        assert_eq!(one.prefix, "app:");
        assert!(!format!("{one:?}").contains("s3cret"));
        let many = Config::from_url("redis://a:7000,redis://b:7001").unwrap();
        assert!(many.cluster);
        assert_eq!(many.nodes.len(), 2);
        assert!(Config::from_url("redis+cluster://a:7000").unwrap().cluster);
        assert!(Config::from_url("http://a").is_err());
        let unknown = Config::from_url("redis://a?nope=1").unwrap_err();
        assert!(matches!(unknown, Error::Config(_)), "{unknown}");
        assert!(unknown.to_string().contains("session_prefix"), "{unknown}");
        assert_eq!(one.near_cache_bytes, 32 << 20);
        let uncached = Config::from_url("redis://a?session_near_cache_bytes=0").unwrap();
        assert_eq!(uncached.near_cache_bytes, 0);
        assert!(Config::from_url("redis://a?session_near_cache_bytes=x").is_err());
        assert_eq!(one.layout, Layout::Auto);
        for (text, layout) in [
            ("auto", Layout::Auto),
            ("hash", Layout::Hash),
            ("string", Layout::String),
        ] {
            let config = Config::from_url(&format!("redis://a?session_layout={text}")).unwrap();
            assert_eq!(config.layout, layout);
        }
        assert!(Config::from_url("redis://a?session_layout=strings").is_err());
        let tls = Config::from_url("rediss://a:6380?session_tls_ca_file=/etc/ca.pem");
        if cfg!(feature = "tls") {
            let tls = tls.unwrap();
            assert_eq!(
                tls.tls_ca_file.as_deref(),
                Some(std::path::Path::new("/etc/ca.pem"))
            );
        } else {
            assert!(tls.is_err(), "rediss:// without the tls feature");
        }
    }
}
