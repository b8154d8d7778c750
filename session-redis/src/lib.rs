//! Session store on Redis and Redis Cluster through the [redis] crate.
//!
//! One string per session with the key's expiry at the session's deadline, read with one `GET`
//! and saved with one conditional `SET` where the server has it (`IFDEQ` on Redis 8.4+, `IFEQ`
//! on Valkey 8.1+; [`Comparison`]), else by a server-side script; or, by configuration, one
//! hash per session written by scripts, the layout of earlier versions ([`Layout`]). Keys
//! hash-tagged so a session lives in one Cluster slot, and on a Cluster the hot commands sent
//! straight to the slot's master; a near cache that every read revalidates with the stored
//! metadata alone; a principal index that cannot leak. See the `store` module docs and the
//! README.
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
mod cache_tier;
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
pub use save_string::Comparison;
pub use store::RedisStore;
