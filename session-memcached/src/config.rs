//! Configuration of the Memcached store.

use std::time::Duration;

use session_core::raw::StoreUrl;
use session_core::{Error, Result};

/// memcached refuses keys over 250 bytes; the store's keys are the prefix and 64 hex digits.
pub(crate) const MAX_PREFIX_LEN: usize = MAX_KEY_LEN - 64;
/// memcached's longest key.
pub(crate) const MAX_KEY_LEN: usize = 250;

/// Settings of a [`MemcachedStore`](crate::MemcachedStore).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Config {
    /// `host:port` of each server. Sessions are spread over them by rendezvous hashing of the
    /// session key; a session lives on one server only.
    pub servers: Vec<String>,
    /// Prefix of every key this store writes: printable ASCII without spaces, at most 186
    /// bytes, so that every key stays within memcached's 250-byte limit.
    pub prefix: String,
    /// Bound on every operation, connecting included.
    pub timeout: Duration,
    /// Connections per server.
    pub pool_size: usize,
    /// The largest item the servers store, when they cannot be asked (`stats settings`).
    pub item_size_max: usize,
}

impl Config {
    /// A config for these servers with the defaults: prefix `session:`, 2 s timeout, 8
    /// connections per server.
    pub fn new(servers: Vec<String>) -> Self {
        Config {
            servers,
            prefix: "session:".into(),
            timeout: Duration::from_secs(2),
            pool_size: 8,
            item_size_max: 1024 * 1024,
        }
    }

    /// `memcache://host:port[,host:port...]` (or `memcached://`) with the options
    /// `session_prefix`, `session_timeout_ms`, `session_pool_size` and
    /// `session_item_size_max`, read by core's URL reader: an unknown option is
    /// [`Error::Config`] naming the known ones.
    pub fn from_url(url: &str) -> Result<Self> {
        let mut parsed = StoreUrl::parse(url)?;
        if !matches!(parsed.scheme(), "memcache" | "memcached") {
            return Err(Error::Config(format!(
                "not a memcached URL (memcache://host:port): scheme `{}`",
                parsed.scheme()
            )));
        }
        let servers: Vec<String> = parsed
            .targets()
            .iter()
            .map(|target| target.trim_end_matches('/').to_owned())
            .collect();
        let mut config = Config::new(servers);
        if let Some(prefix) = parsed.take_str("session_prefix") {
            config.prefix = prefix;
        }
        if let Some(timeout) = parsed.take_millis("session_timeout_ms")? {
            config.timeout = timeout;
        }
        if let Some(size) = parsed.take_u64("session_pool_size")? {
            config.pool_size = usize::try_from(size).unwrap_or(usize::MAX);
        }
        if let Some(size) = parsed.take_u64("session_item_size_max")? {
            config.item_size_max = usize::try_from(size).unwrap_or(usize::MAX);
        }
        parsed.finish("memcached")?;
        config.validate()?;
        Ok(config)
    }

    /// Sets [`Config::prefix`].
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Sets [`Config::timeout`].
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Checks servers, prefix and numbers.
    pub fn validate(&self) -> Result<()> {
        if self.servers.is_empty() {
            return Err(Error::Config("no memcached server in the URL".into()));
        }
        for server in &self.servers {
            let valid = server
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !valid {
                return Err(Error::Config(format!(
                    "memcached server `{server}` is not host:port"
                )));
            }
        }
        if self.prefix.len() > MAX_PREFIX_LEN || !self.prefix.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(Error::Config(format!(
                "memcached key prefix {:?} must be printable ASCII without spaces, at most \
                 {MAX_PREFIX_LEN} bytes",
                self.prefix
            )));
        }
        if self.pool_size == 0 {
            return Err(Error::Config("session_pool_size must be at least 1".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let config = Config::from_url(
            "memcache://a:11211,b:11212?session_prefix=app:&session_timeout_ms=250",
        )
        .unwrap();
        assert_eq!(config.servers, ["a:11211", "b:11212"]);
        assert_eq!(config.prefix, "app:");
        assert_eq!(config.timeout, Duration::from_millis(250));
        assert_eq!(
            Config::from_url("memcached://h:1").unwrap().servers,
            ["h:1"]
        );
        let unknown = Config::from_url("memcache://h:1?session_prefx=a").unwrap_err();
        assert!(unknown.to_string().contains("session_prefix"), "{unknown}");
        for bad in [
            "memcache://",
            "memcache://h",
            "memcache://h:x",
            "redis://h:1",
            "memcache://h:1?session_prefix=a%20b",
            "memcache://h:1?session_prefix=a%0Ab",
            "memcache://h:1?session_pool_size=0",
        ] {
            assert!(
                matches!(Config::from_url(bad), Err(Error::Config(_))),
                "{bad}"
            );
        }
        let long = format!("memcache://h:1?session_prefix={}", "p".repeat(187));
        assert!(Config::from_url(&long).is_err());
    }
}
