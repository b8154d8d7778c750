//! Configuration of the in-memory store.

use std::time::Duration;

use session_core::raw::StoreUrl;
use session_core::{Error, Result};

/// Settings of a [`MemoryStore`](crate::MemoryStore).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Config {
    /// Upper bound on the stored bytes (encoded sessions plus a per-entry overhead). When full,
    /// the least valuable sessions are evicted (moka's TinyLFU) and reported as `Evicted`.
    pub capacity_bytes: u64,
    /// How often expired entries are swept (which is when `Expired` events fire). Reads never
    /// see an expired session whatever this is.
    pub sweep_interval: Duration,
    /// Events buffered per slow subscriber.
    pub event_capacity: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            capacity_bytes: 256 * 1024 * 1024,
            sweep_interval: Duration::from_secs(1),
            event_capacity: 1024,
        }
    }
}

impl Config {
    /// Sets [`Config::capacity_bytes`].
    pub fn with_capacity_bytes(mut self, bytes: u64) -> Self {
        self.capacity_bytes = bytes;
        self
    }

    /// Sets [`Config::sweep_interval`].
    pub fn with_sweep_interval(mut self, interval: Duration) -> Self {
        self.sweep_interval = interval;
        self
    }

    /// Sets [`Config::event_capacity`].
    pub fn with_event_capacity(mut self, capacity: usize) -> Self {
        self.event_capacity = capacity;
        self
    }

    /// Parses `memory://` with optional options `session_capacity_bytes`, `session_sweep_ms`
    /// and `session_event_capacity`, e.g. `memory://?session_capacity_bytes=1048576`, through
    /// core's URL reader: an unknown option is [`Error::Config`] naming the known ones.
    pub fn from_url(url: &str) -> Result<Self> {
        let mut url = StoreUrl::parse(url)?;
        if url.scheme() != "memory" {
            return Err(Error::Config(
                "a memory store URL starts with memory://".into(),
            ));
        }
        if url.targets().iter().any(|target| !target.is_empty()) {
            return Err(Error::Config(
                "a memory store URL has no host or path: memory://?option=value".into(),
            ));
        }
        let mut config = Config::default();
        if let Some(bytes) = url.take_u64("session_capacity_bytes")? {
            config.capacity_bytes = bytes;
        }
        if let Some(interval) = url.take_millis("session_sweep_ms")? {
            config.sweep_interval = interval.max(Duration::from_millis(1));
        }
        if let Some(capacity) = url.take_u64("session_event_capacity")? {
            config.event_capacity = usize::try_from(capacity).unwrap_or(usize::MAX);
        }
        url.finish("memory")?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse() {
        assert_eq!(Config::from_url("memory://").unwrap(), Config::default());
        let config =
            Config::from_url("memory://?session_capacity_bytes=1024&session_sweep_ms=50").unwrap();
        assert_eq!(config.capacity_bytes, 1024);
        assert_eq!(config.sweep_interval, Duration::from_millis(50));
        for bad in [
            "redis://x",
            "memory://host",
            "memory://?session_capacity_bytes=x",
            "memory://?nope=1",
            "memory://?capacity_bytes=1",
        ] {
            assert!(Config::from_url(bad).is_err(), "{bad}");
        }
    }
}
