//! Session store on memcached: one server or several (rendezvous hashing), one item per
//! session, compare-and-swap merges of concurrent saves, an add that never overwrites.
//!
//! ```no_run
//! use session_core::{SessionRepository, SessionRepositoryExt, SessionSettings};
//! use session_memcached::{Config, MemcachedStore};
//!
//! # async fn demo() -> session_core::Result<()> {
//! let config = Config::from_url("memcache://10.0.0.1:11211,10.0.0.2:11211?session_prefix=app:")?;
//! let store = MemcachedStore::open(config, SessionSettings::default()).await?;
//! let mut session = store.new_session();
//! session.insert("user", "morris")?;
//! store.create(&mut session).await?;
//! # Ok(()) }
//! ```
//!
//! The expiry strategy, and what memcached cannot promise (eviction, restarts), are in the
//! `store` module docs and the crate README.
#![deny(missing_docs)]

mod config;
mod error;
mod pool;
mod ring;
mod store;
#[cfg(feature = "testing")]
mod testing;

pub use async_memcached;
pub use config::Config;
pub use store::MemcachedStore;
