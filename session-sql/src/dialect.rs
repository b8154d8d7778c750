//! The SQL each database needs, built once per store with the configured table name.
//!
//! Statements are written once with PostgreSQL's `$n` placeholders, each used once and in
//! ascending order, and rewritten to `?` for MySQL and SQLite.

use session_core::{Error, Result};

/// Which database a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// PostgreSQL.
    Postgres,
    /// MySQL or MariaDB.
    MySql,
    /// SQLite.
    Sqlite,
}

impl Dialect {
    /// The dialect of a database URL; [`Error::InvalidInput`] for other schemes.
    pub fn of_url(url: &str) -> Result<Self> {
        match session_core::raw::scheme_of(url)?.kind {
            "postgres" => Ok(Dialect::Postgres),
            "mysql" => Ok(Dialect::MySql),
            "sqlite" => Ok(Dialect::Sqlite),
            other => Err(Error::Config(format!(
                "not a SQL store URL (postgres://, mysql://, mariadb://, sqlite://) but a {other} one"
            ))),
        }
    }

    /// The cargo feature that compiles this dialect's driver in.
    pub fn feature(self) -> &'static str {
        match self {
            Dialect::Postgres => "postgres",
            Dialect::MySql => "mysql",
            Dialect::Sqlite => "sqlite",
        }
    }

    fn placeholders(self, sql: &str) -> String {
        if self == Dialect::Postgres {
            return sql.to_owned();
        }
        let mut out = String::with_capacity(sql.len());
        let mut chars = sql.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '$' && chars.peek().is_some_and(char::is_ascii_digit) {
                while chars.peek().is_some_and(char::is_ascii_digit) {
                    chars.next();
                }
                out.push('?');
            } else {
                out.push(c);
            }
        }
        out
    }

    fn least(self) -> &'static str {
        match self {
            Dialect::Sqlite => "min",
            _ => "LEAST",
        }
    }

    fn greatest(self) -> &'static str {
        match self {
            Dialect::Sqlite => "max",
            _ => "GREATEST",
        }
    }

    /// Integer division (MySQL's `/` is decimal).
    fn div(self) -> &'static str {
        match self {
            Dialect::MySql => "DIV",
            _ => "/",
        }
    }

    /// The session's exact deadline, from the columns: what every read compares with `now`.
    fn deadline(self) -> String {
        let least = self.least();
        format!(
            "{least}(last_accessed_at + idle_timeout, \
             COALESCE(created_at + absolute_lifetime, last_accessed_at + idle_timeout))"
        )
    }

    /// `deadline` (an expression) rounded up to the purge step of the row's idle timeout: the
    /// `expires_at` a touch stores, the same value as [`crate::row::purge_bound`] computes.
    fn purge_bound(self, deadline: &str) -> String {
        let (least, greatest, div) = (self.least(), self.greatest(), self.div());
        let step =
            format!("{greatest}(1, {least}(idle_timeout {div} {STEP_DIVISOR}, {MAX_STEP_MS}))");
        format!("((({deadline}) + {step} - 1) {div} {step}) * {step}")
    }
}

/// The purge step is this fraction of the idle timeout…
pub(crate) const STEP_DIVISOR: u64 = 16;
/// …and at most this long (ms).
pub(crate) const MAX_STEP_MS: u64 = 60_000;

/// Every statement the store runs, for one dialect and table.
#[derive(Debug)]
pub(crate) struct Statements {
    pub insert: String,
    pub find: String,
    pub find_for_merge: String,
    pub find_for_update: Option<String>,
    pub save_if_version: String,
    pub touch: String,
    pub exists: String,
    pub delete: String,
    pub lock_for_change: Option<String>,
    pub copy_to_new_key: String,
    pub by_principal: String,
    pub delete_by_principal: String,
    pub purge_batch: String,
    /// Whether `purge_batch` returns the hex keys it deleted.
    pub purge_returns_keys: bool,
    /// Replaces a row's attributes, for raw writes (feature `testing`).
    #[cfg_attr(not(feature = "testing"), allow(dead_code))]
    pub write_raw: String,
    /// Replaces a row's principal, for raw shapes (feature `testing`).
    #[cfg_attr(not(feature = "testing"), allow(dead_code))]
    pub write_raw_principal: String,
}

const COLUMNS: &str = "session_key, created_at, last_accessed_at, idle_timeout, absolute_lifetime, expires_at, principal, version, attributes";

impl Statements {
    /// `returning`: the server supports `DELETE ... RETURNING` (PostgreSQL, SQLite, MariaDB;
    /// not MySQL), so a purge can report the keys it removed.
    pub(crate) fn new(dialect: Dialect, table: &str, returning: bool) -> Self {
        let t = table;
        let key_hex = match dialect {
            Dialect::Postgres => "encode(session_key, 'hex')",
            Dialect::MySql | Dialect::Sqlite => "lower(hex(session_key))",
        };
        let returning_keys = if returning {
            format!(" RETURNING {key_hex}")
        } else {
            String::new()
        };
        // The principal as hex text too: the Any driver may hand a MySQL VARBINARY over as
        // text, which would mangle or refuse bytes that are not UTF-8; hex keeps them exact,
        // so that such a principal is read as undecodable, the same on every database.
        let principal_hex = match dialect {
            Dialect::Postgres => "encode(principal, 'hex')",
            Dialect::MySql | Dialect::Sqlite => {
                "CASE WHEN principal IS NULL THEN NULL ELSE lower(hex(principal)) END"
            }
        };
        let least = dialect.least();
        // Reads compare the exact deadline; `expires_at` is only the purge's bound (see the
        // `store` module).
        let live = format!("{} > ", dialect.deadline());
        let touched_bound = dialect.purge_bound(&format!(
            "{least}($2 + idle_timeout, COALESCE(created_at + absolute_lifetime, $3 + idle_timeout))"
        ));
        let sql = |text: String| dialect.placeholders(&text);
        Statements {
            insert: sql(format!(
                "INSERT INTO {t} ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
            )),
            find: sql(format!(
                "SELECT created_at, last_accessed_at, idle_timeout, absolute_lifetime, {principal_hex}, version, attributes \
                 FROM {t} WHERE session_key = $1 AND {live}$2"
            )),
            find_for_merge: sql(format!(
                "SELECT created_at, last_accessed_at, idle_timeout, absolute_lifetime, {principal_hex}, version, attributes \
                 FROM {t} WHERE session_key = $1"
            )),
            find_for_update: (dialect != Dialect::Sqlite).then(|| {
                sql(format!(
                    "SELECT created_at, last_accessed_at, idle_timeout, absolute_lifetime, {principal_hex}, version, attributes \
                     FROM {t} WHERE session_key = $1 FOR UPDATE"
                ))
            }),
            // The compare-and-set every save ends with: it writes only over the version it read.
            save_if_version: sql(format!(
                "UPDATE {t} SET last_accessed_at = $1, idle_timeout = $2, absolute_lifetime = $3, \
                 expires_at = $4, principal = $5, version = $6, attributes = $7 \
                 WHERE session_key = $8 AND version = $9 AND {live}$10"
            )),
            touch: sql(format!(
                "UPDATE {t} SET last_accessed_at = $1, expires_at = {touched_bound} \
                 WHERE session_key = $4 AND {live}$5"
            )),
            exists: sql(format!(
                "SELECT version FROM {t} WHERE session_key = $1 AND {live}$2"
            )),
            delete: sql(format!("DELETE FROM {t} WHERE session_key = $1")),
            // Reads the row a rotation moves (decoded: an undecodable session is absent and
            // is not moved), locking it where the database can.
            lock_for_change: (dialect != Dialect::Sqlite).then(|| {
                sql(format!(
                    "SELECT created_at, last_accessed_at, idle_timeout, absolute_lifetime, {principal_hex}, version, attributes \
                     FROM {t} WHERE session_key = $1 AND {live}$2 FOR UPDATE"
                ))
            }),
            copy_to_new_key: sql(format!(
                "INSERT INTO {t} ({COLUMNS}) SELECT $1, created_at, last_accessed_at, idle_timeout, \
                 absolute_lifetime, expires_at, principal, version, attributes \
                 FROM {t} WHERE session_key = $2 AND {live}$3"
            )),
            // Keys as hex text: the Any driver hands MySQL's BINARY columns over as text. The
            // attributes come along so that the listing leaves out what `find` cannot decode.
            by_principal: sql(format!(
                "SELECT {key_hex}, created_at, last_accessed_at, {deadline}, attributes FROM {t} \
                 WHERE principal = $1 AND {live}$2 ORDER BY created_at",
                deadline = dialect.deadline()
            )),
            delete_by_principal: sql(format!(
                "DELETE FROM {t} WHERE principal = $1 AND {live}$2"
            )),
            purge_batch: sql(match dialect {
                // SKIP LOCKED: rows a save holds are left for the next round, never waited on.
                Dialect::Postgres => format!(
                    "DELETE FROM {t} WHERE session_key IN (SELECT session_key FROM {t} \
                     WHERE expires_at <= $1 ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED){returning_keys}"
                ),
                Dialect::MySql => format!(
                    "DELETE FROM {t} WHERE expires_at <= $1 ORDER BY expires_at LIMIT $2{returning_keys}"
                ),
                Dialect::Sqlite => format!(
                    "DELETE FROM {t} WHERE session_key IN (SELECT session_key FROM {t} \
                     WHERE expires_at <= $1 LIMIT $2){returning_keys}"
                ),
            }),
            purge_returns_keys: returning,
            write_raw: sql(format!(
                "UPDATE {t} SET attributes = $1, version = version + 1 WHERE session_key = $2"
            )),
            write_raw_principal: sql(format!(
                "UPDATE {t} SET principal = $1, version = version + 1 WHERE session_key = $2"
            )),
        }
    }
}

/// The versioned schema changes, oldest first. Applied in order by [`crate::schema`]; never
/// edit a released step, add one.
pub(crate) fn migrations(dialect: Dialect, table: &str) -> Vec<(i64, &'static str, Vec<String>)> {
    let t = table;
    let v1 = match dialect {
        Dialect::Postgres => vec![
            format!(
                "CREATE TABLE IF NOT EXISTS {t} (\
                 session_key BYTEA PRIMARY KEY, created_at BIGINT NOT NULL, \
                 last_accessed_at BIGINT NOT NULL, idle_timeout BIGINT NOT NULL, \
                 absolute_lifetime BIGINT, expires_at BIGINT NOT NULL, principal BYTEA, \
                 version BIGINT NOT NULL, attributes BYTEA NOT NULL)"
            ),
            format!("CREATE INDEX IF NOT EXISTS {t}_expires_at ON {t} (expires_at)"),
            format!("CREATE INDEX IF NOT EXISTS {t}_principal ON {t} (principal)"),
        ],
        // Binary principal: exact bytes, no case folding, no trailing-space padding.
        Dialect::MySql => vec![format!(
            "CREATE TABLE IF NOT EXISTS {t} (\
             session_key BINARY(32) NOT NULL PRIMARY KEY, created_at BIGINT NOT NULL, \
             last_accessed_at BIGINT NOT NULL, idle_timeout BIGINT NOT NULL, \
             absolute_lifetime BIGINT NULL, expires_at BIGINT NOT NULL, principal VARBINARY(1024) NULL, \
             version BIGINT NOT NULL, attributes LONGBLOB NOT NULL, \
             INDEX {t}_expires_at (expires_at), INDEX {t}_principal (principal)) ENGINE=InnoDB"
        )],
        Dialect::Sqlite => vec![
            format!(
                "CREATE TABLE IF NOT EXISTS {t} (\
                 session_key BLOB PRIMARY KEY, created_at INTEGER NOT NULL, \
                 last_accessed_at INTEGER NOT NULL, idle_timeout INTEGER NOT NULL, \
                 absolute_lifetime INTEGER, expires_at INTEGER NOT NULL, principal BLOB, \
                 version INTEGER NOT NULL, attributes BLOB NOT NULL)"
            ),
            format!("CREATE INDEX IF NOT EXISTS {t}_expires_at ON {t} (expires_at)"),
            format!("CREATE INDEX IF NOT EXISTS {t}_principal ON {t} (principal)"),
            format!(
                "CREATE TABLE IF NOT EXISTS {t}_lease (\
                 name TEXT PRIMARY KEY, holder TEXT NOT NULL, until INTEGER NOT NULL)"
            ),
        ],
    };
    let mut steps = vec![(1, "sessions table, expiry and principal indexes", v1)];
    if dialect == Dialect::Postgres {
        // Every save rewrites its row. A page filled to the brim has no room for the new
        // version, so the update goes to another page and writes an entry in each of the three
        // indexes; with a fifth of each page kept free it stays on its page as a HOT update,
        // which touches no index (measured: 1% of a session-bench run's saves were HOT before,
        // 99% after). Takes effect for pages filled from now on; a lock that blocks neither
        // reads nor writes.
        steps.push((
            2,
            "fillfactor 80: saves update rows in place (HOT)",
            vec![format!("ALTER TABLE {t} SET (fillfactor = 80)")],
        ));
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_rewritten_for_question_mark_dialects() {
        assert_eq!(
            Dialect::MySql.placeholders("a = $1 AND b = $12"),
            "a = ? AND b = ?"
        );
        assert_eq!(Dialect::Postgres.placeholders("a = $1"), "a = $1");
        let statements = Statements::new(Dialect::Sqlite, "s", true);
        assert!(!statements.touch.contains('$'));
        assert!(statements.touch.contains("min("));
    }
}
