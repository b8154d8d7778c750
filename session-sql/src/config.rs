//! Configuration of the SQL store.

use std::fmt;
use std::time::Duration;

use session_core::raw::{redact_url as redact, StoreUrl};
use session_core::{Error, Result};

use crate::dialect::Dialect;

/// Settings of a [`SqlStore`](crate::SqlStore).
///
/// `Debug` shows the URL with its password replaced by `***`.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Config {
    /// Database URL as sqlx takes it: `postgres://`, `mysql://` (MariaDB too; `mariadb://` is
    /// accepted as an alias) or `sqlite://path` (created if missing).
    pub url: String,
    /// Name of the sessions table; the migrations table is `<table>_migrations`. ASCII letters,
    /// digits and `_`, starting with a letter or `_`, at most 48 characters.
    pub table: String,
    /// Pool size: of the pool that runs find and save on PostgreSQL and MySQL, and of sqlx's
    /// pool beside it, which runs transactions, the purge and migrations (and everything on
    /// SQLite) and mostly sits idle.
    pub max_connections: u32,
    /// Bound on every operation, connection acquisition included.
    pub timeout: Duration,
    /// How often this instance tries to purge expired rows (`None`: never; call
    /// [`SqlStore::purge_expired`](crate::SqlStore::purge_expired) yourself). Only one instance
    /// purges at a time.
    pub cleanup_interval: Option<Duration>,
    /// Rows deleted per purge statement, so that a purge never holds many locks at once.
    pub cleanup_batch: u32,
}

impl Config {
    /// Defaults for `url`: table `sessions`, 10 connections, 5 s timeout, purge every minute.
    ///
    /// Store options may ride along in the query string and are removed before the URL goes
    /// to the driver: `session_table`, `session_max_connections`, `session_timeout_ms`,
    /// `session_cleanup_ms` (0 disables), `session_cleanup_batch`.
    ///
    /// Read by core's URL reader: an unknown `session_*` option is [`Error::Config`] naming the
    /// known ones; every other option is the driver's and stays in the URL sqlx gets.
    pub fn from_url(url: &str) -> Result<Self> {
        let dialect = Dialect::of_url(url)?;
        let mut parsed = StoreUrl::parse(url)?;
        let base = match parsed.base().split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("mariadb") => {
                format!("mysql://{rest}")
            }
            _ => parsed.base().to_owned(),
        };
        let mut config = Config {
            url: base.clone(),
            table: "sessions".into(),
            max_connections: 10,
            timeout: Duration::from_secs(5),
            cleanup_interval: Some(Duration::from_secs(60)),
            cleanup_batch: 500,
        };
        if let Some(table) = parsed.take_str("session_table") {
            config.table = table;
        }
        if let Some(connections) = parsed.take_u64("session_max_connections")? {
            config.max_connections = u32::try_from(connections).unwrap_or(u32::MAX);
        }
        if let Some(timeout) = parsed.take_millis("session_timeout_ms")? {
            config.timeout = timeout;
        }
        if let Some(cleanup) = parsed.take_millis("session_cleanup_ms")? {
            config.cleanup_interval = (!cleanup.is_zero()).then_some(cleanup);
        }
        if let Some(batch) = parsed.take_u64("session_cleanup_batch")? {
            config.cleanup_batch = u32::try_from(batch).unwrap_or(u32::MAX).max(1);
        }
        let store = dialect.feature();
        let passed = parsed.finish_passing_driver_options(store)?;
        if !passed.is_empty() {
            config.url = format!("{base}?{}", passed.join("&"));
        }
        config.validate()?;
        Ok(config)
    }

    /// Sets [`Config::table`].
    pub fn with_table(mut self, table: impl Into<String>) -> Self {
        self.table = table.into();
        self
    }

    /// Sets [`Config::max_connections`].
    pub fn with_max_connections(mut self, connections: u32) -> Self {
        self.max_connections = connections;
        self
    }

    /// Sets [`Config::timeout`].
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets [`Config::cleanup_interval`].
    pub fn with_cleanup_interval(mut self, interval: Option<Duration>) -> Self {
        self.cleanup_interval = interval;
        self
    }

    /// Checks the table name (it is spliced into SQL, so it must be a plain identifier) and
    /// the numbers.
    pub fn validate(&self) -> Result<()> {
        let mut chars = self.table.chars();
        let valid = matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
            && self.table.len() <= 48;
        if !valid {
            return Err(Error::Config(format!(
                "table name {:?} is not a plain SQL identifier (letters, digits, _; at most 48)",
                self.table
            )));
        }
        if self.max_connections == 0 {
            return Err(Error::Config("max_connections must be at least 1".into()));
        }
        Ok(())
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("url", &redact(&self.url))
            .field("table", &self.table)
            .field("max_connections", &self.max_connections)
            .field("timeout", &self.timeout)
            .field("cleanup_interval", &self.cleanup_interval)
            .field("cleanup_batch", &self.cleanup_batch)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_taken_out_of_the_url() {
        let config = Config::from_url(
            "postgres://app:s3cret@db:5432/app?sslmode=disable&session_table=web_sessions&session_cleanup_ms=0",
        )
        .unwrap();
        assert_eq!(
            config.url,
            "postgres://app:s3cret@db:5432/app?sslmode=disable"
        );
        assert_eq!(config.table, "web_sessions");
        assert_eq!(config.cleanup_interval, None);
        let shown = format!("{config:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("app:***@db:5432"), "{shown}");
    }

    #[test]
    fn aliases_and_bad_input() {
        assert_eq!(
            Config::from_url("mariadb://root@h/db").unwrap().url,
            "mysql://root@h/db"
        );
        assert!(Config::from_url("redis://h").is_err());
        let unknown = Config::from_url("sqlite://s.db?session_tabel=x").unwrap_err();
        assert!(matches!(unknown, Error::Config(_)), "{unknown}");
        assert!(unknown.to_string().contains("session_table"), "{unknown}");
        for bad in ["x; DROP TABLE y", "1abc", "", "a-b", &"a".repeat(49)] {
            let url = format!("sqlite://s.db?session_table={bad}");
            assert!(Config::from_url(&url).is_err(), "{bad:?}");
        }
    }
}
