//! Configuration of the MongoDB store.

use std::time::Duration;

use percent_encoding::percent_decode_str;
use session_core::raw::{redact_url, StoreUrl};
use session_core::{Error, Result};

/// Settings of a [`MongoStore`](crate::MongoStore).
///
/// `Debug` shows the URL with its password replaced by `***`.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Config {
    /// The driver's connection string (`mongodb://` or `mongodb+srv://`), with the driver's
    /// own options and without the store's `session_*` ones.
    pub url: String,
    /// The database, from the URL's path.
    pub database: String,
    /// The collection of sessions (default `sessions`).
    pub collection: String,
    /// Bound on every operation. Also the driver's server selection and connect timeouts
    /// unless the URL sets them (the driver's defaults wait 30 s and 10 s).
    pub timeout: Duration,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("url", &redact_url(&self.url))
            .field("database", &self.database)
            .field("collection", &self.collection)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Config {
    /// `mongodb://[user:password@]host[:port][,host…]/database[?options]` (or
    /// `mongodb+srv://`), read by core's URL reader. The store's options:
    /// `session_collection` (default `sessions`) and `session_timeout_ms` (default 5000); an
    /// unknown `session_*` option is [`Error::Config`] naming the known ones, every other
    /// option goes to the driver as written (`maxPoolSize`, `replicaSet`, `tls`, …).
    pub fn from_url(url: &str) -> Result<Self> {
        let mut parsed = StoreUrl::parse(url)?;
        if !matches!(parsed.scheme(), "mongodb" | "mongodb+srv") {
            return Err(Error::Config(format!(
                "not a MongoDB URL (mongodb://host/database): scheme `{}`",
                parsed.scheme()
            )));
        }
        let base = parsed.base().to_owned();
        let database = database_of(&base)?;
        let collection = parsed
            .take_str("session_collection")
            .unwrap_or_else(|| "sessions".into());
        let timeout = parsed
            .take_millis("session_timeout_ms")?
            .unwrap_or(Duration::from_secs(5));
        let passed = parsed.finish_passing_driver_options("mongo")?;
        let url = if passed.is_empty() {
            base
        } else {
            format!("{base}?{}", passed.join("&"))
        };
        let config = Config {
            url,
            database,
            collection,
            timeout,
        };
        config.validate()?;
        Ok(config)
    }

    /// Sets [`Config::collection`].
    pub fn with_collection(mut self, collection: impl Into<String>) -> Self {
        self.collection = collection.into();
        self
    }

    /// Sets [`Config::timeout`].
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Checks the database and collection names against MongoDB's rules.
    pub fn validate(&self) -> Result<()> {
        let bad_database = self.database.is_empty()
            || self.database.len() > 63
            || self
                .database
                .chars()
                .any(|c| "/\\. \"$*<>:|?".contains(c) || c.is_control());
        if bad_database {
            return Err(Error::Config(format!(
                "MongoDB database name {:?} is empty, longer than 63 bytes, or has one of \
                 / \\ . space \" $ * < > : | ?",
                self.database
            )));
        }
        let bad_collection = self.collection.is_empty()
            || self.collection.len() > 120
            || self.collection.starts_with("system.")
            || self.collection.contains('$')
            || self.collection.chars().any(char::is_control);
        if bad_collection {
            return Err(Error::Config(format!(
                "MongoDB collection name {:?} is empty, too long, starts with `system.` or has \
                 `$` or a control character",
                self.collection
            )));
        }
        if self.timeout.is_zero() {
            return Err(Error::Config("session_timeout_ms must be positive".into()));
        }
        Ok(())
    }
}

/// The database named by the path of a connection string (before `?`): `/db` after the last
/// `@` (a password may hold any character once percent-encoded, a host list holds no `/`).
fn database_of(base: &str) -> Result<String> {
    let rest = base.split_once("://").map_or(base, |(_, rest)| rest);
    let hosts_and_path = rest.rsplit_once('@').map_or(rest, |(_, after)| after);
    let path = hosts_and_path
        .split_once('/')
        .map(|(_, path)| path)
        .unwrap_or_default();
    if path.is_empty() {
        return Err(Error::Config(
            "the MongoDB URL names no database: mongodb://host/<database>".into(),
        ));
    }
    percent_decode_str(path)
        .decode_utf8()
        .map(|name| name.into_owned())
        .map_err(|_| Error::Config("the MongoDB database name is not UTF-8".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let config = Config::from_url(
            "mongodb://u:p%2Fw@a:27017,b:27018/app?session_collection=web_sessions&\
             session_timeout_ms=250&replicaSet=rs0&maxPoolSize=20",
        )
        .unwrap();
        assert_eq!(config.database, "app");
        assert_eq!(config.collection, "web_sessions");
        assert_eq!(config.timeout, Duration::from_millis(250));
        assert_eq!(
            config.url,
            "mongodb://u:p%2Fw@a:27017,b:27018/app?replicaSet=rs0&maxPoolSize=20"
        );
        assert!(!format!("{config:?}").contains("p%2Fw"), "{config:?}");

        let srv = Config::from_url("mongodb+srv://cluster.example.com/sessions_db").unwrap();
        assert_eq!(srv.database, "sessions_db");
        assert_eq!(srv.collection, "sessions");
        assert_eq!(srv.url, "mongodb+srv://cluster.example.com/sessions_db");

        let unknown = Config::from_url("mongodb://h/db?session_colection=x").unwrap_err();
        assert!(
            unknown.to_string().contains("session_collection"),
            "{unknown}"
        );
        for bad in [
            "mongodb://h",
            "mongodb://h/",
            "mongodb://h/?session_collection=x",
            "mongodb://h/a.b",
            "mongodb://h/db?session_collection=system.x",
            "mongodb://h/db?session_collection=a$b",
            "mongodb://h/db?session_collection=",
            "mongodb://h/db?session_timeout_ms=0",
            "mongodb://h/db?session_timeout_ms=soon",
            "redis://h/db",
        ] {
            assert!(
                matches!(Config::from_url(bad), Err(Error::Config(_))),
                "{bad}"
            );
        }
    }
}
