//! Session store on MongoDB: one document per session, a TTL index on the deadline, saves as
//! one version-checked `$set`/`$unset` update of the delta, a principal index.
//!
//! ```no_run
//! use session_core::{SessionRepository, SessionRepositoryExt, SessionSettings};
//! use session_mongo::{Config, MongoStore};
//!
//! # async fn demo() -> session_core::Result<()> {
//! let config = Config::from_url("mongodb://db.internal:27017/app?session_collection=sessions")?;
//! let store = MongoStore::open(config, SessionSettings::default()).await?;
//! let mut session = store.new_session();
//! session.insert("user", "morris")?;
//! store.create(&mut session).await?;
//! # Ok(()) }
//! ```
//!
//! The expiry strategy is in the `store` module docs, the document layout in the `document`
//! module docs, and both in the crate README.
#![deny(missing_docs)]

mod config;
mod document;
mod error;
mod rotate;
mod store;
#[cfg(feature = "testing")]
mod testing;

pub use config::Config;
pub use mongodb;
pub use store::MongoStore;
