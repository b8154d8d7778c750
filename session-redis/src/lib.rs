//! Session store on Redis and Redis Cluster through the [redis] crate.
//!
//! One hash per session with the key's expiry at the session's deadline; create, save, touch
//! and delete as single server-side scripts; on servers with `SET … IFEQ` (Valkey 8.1+), one
//! string per session saved by that single command instead ([`Layout`]); keys hash-tagged so
//! a session lives in one Cluster slot; a near cache that every read revalidates with the
//! stored metadata alone; a principal index that cannot leak. See the `store` module docs and the README.
//!
//! ```no_run
//! use session_core::{SessionRepository, SessionRepositoryExt, SessionSettings};
//! use session_redis::{Config, RedisStore};
//!
//! # async fn demo() -> session_core::Result<()> {
//! let store = RedisStore::open(Config::from_url("redis://127.0.0.1:6379")?, SessionSettings::default()).await?;
//! let mut session = store.new_session();
//! session.insert("user", "morris")?;
//! store.create(&mut session).await?;
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

mod cache;
mod config;
mod connection;
mod error;
mod index;
mod lanes;
mod listener;
mod meta;
mod save;
mod save_string;
mod scripts;
mod store;
mod strings;
mod topology;

pub use config::{Config, Layout};
pub use redis;
pub use store::RedisStore;
