//! Configuration of the in-memory store.

use std::time::Duration;

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

    /// Parses `memory://` with optional query parameters `capacity_bytes`, `sweep_ms` and
    /// `event_capacity`, e.g. `memory://?capacity_bytes=1048576`.
    pub fn from_url(url: &str) -> Result<Self> {
        let rest = url.strip_prefix("memory://").ok_or_else(|| {
            Error::InvalidInput("a memory store URL starts with memory://".into())
        })?;
        let query = match rest.split_once('?') {
            Some(("", query)) => query,
            None if rest.is_empty() => "",
            _ => {
                return Err(Error::InvalidInput(
                    "a memory store URL has no host or path: memory://?option=value".into(),
                ))
            }
        };
        let mut config = Config::default();
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let number = value.parse::<u64>().map_err(|_| {
                Error::InvalidInput(format!("memory store option `{name}` needs a whole number"))
            })?;
            match name {
                "capacity_bytes" => config.capacity_bytes = number,
                "sweep_ms" => config.sweep_interval = Duration::from_millis(number.max(1)),
                "event_capacity" => {
                    config.event_capacity = usize::try_from(number).unwrap_or(usize::MAX)
                }
                other => {
                    return Err(Error::InvalidInput(format!(
                        "unknown memory store option `{other}`"
                    )))
                }
            }
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse() {
        assert_eq!(Config::from_url("memory://").unwrap(), Config::default());
        let config = Config::from_url("memory://?capacity_bytes=1024&sweep_ms=50").unwrap();
        assert_eq!(config.capacity_bytes, 1024);
        assert_eq!(config.sweep_interval, Duration::from_millis(50));
        for bad in [
            "redis://x",
            "memory://host",
            "memory://?capacity_bytes=x",
            "memory://?nope=1",
        ] {
            assert!(Config::from_url(bad).is_err(), "{bad}");
        }
    }
}
