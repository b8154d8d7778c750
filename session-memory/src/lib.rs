//! In-process session store on [moka]: the embedded default for a single instance, for tests
//! and for development.
//!
//! Bounded by bytes, per-session expiry at each session's own deadline, a principal index that
//! drops expired sessions, and `Created`/`Deleted`/`IdChanged`/`Expired`/`Evicted` events.
//! Concurrent saves of one session merge per attribute exactly as a remote store does.
//! Sessions live only as long as the process: instances behind a load balancer need a shared
//! store (Redis, SQL, ...), which is a configuration change, not a code change.
//!
//! ```
//! use session_core::{SessionRepository, SessionRepositoryExt};
//! use session_memory::MemoryStore;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> session_core::Result<()> {
//! let store = MemoryStore::new();
//! let mut session = store.new_session();
//! session.insert("user", "morris")?;
//! store.create(&mut session).await?;
//! let loaded = store.find(session.id()).await?.expect("just created");
//! assert_eq!(loaded.get::<String>("user")?.as_deref(), Some("morris"));
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

mod config;
mod entry;
mod index;
mod store;

pub use config::Config;
pub use moka;
pub use store::MemoryStore;

/// The root README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
