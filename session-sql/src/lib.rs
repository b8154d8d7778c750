//! Session store on SQL databases through [sqlx]: PostgreSQL, MySQL/MariaDB and SQLite, one
//! cargo feature each (`postgres`, `mysql`, `sqlite`; SQLite is the default and the embedded
//! store several processes on one host can share).
//!
//! ```no_run
//! use session_core::{SessionRepository, SessionRepositoryExt, SessionSettings};
//! use session_sql::{Config, SqlStore};
//!
//! # async fn demo() -> session_core::Result<()> {
//! let config = Config::from_url("sqlite://sessions.db")?;
//! let store = SqlStore::open(config, SessionSettings::default()).await?;
//! let mut session = store.new_session();
//! session.insert("user", "morris")?;
//! store.create(&mut session).await?;
//! # Ok(()) }
//! ```
//!
//! The expiry strategy and the one-round-trip save are explained in the `store` module docs
//! and the crate README.
#![deny(missing_docs)]

mod checkpoint;
mod config;
mod dialect;
mod error;
mod lane;
mod purge;
mod row;
mod save;
mod schema;
mod store;
#[cfg(feature = "testing")]
mod testing;
mod writer;

pub use config::Config;
pub use dialect::Dialect;
pub use lane::StatementConnection;
pub use sqlx;
pub use store::SqlStore;
