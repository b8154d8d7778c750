//! Distributed server-side sessions for axum: a tower [`SessionLayer`] and a
//! [`SessionHandle`] extractor, over any [`SessionRepository`](session_core::SessionRepository).
//!
//! ```no_run
//! use std::sync::Arc;
//! use axum::{routing::get, Router};
//! use session_axum::{LayerConfig, SessionError, SessionHandle, SessionLayer};
//!
//! async fn visits(session: SessionHandle) -> Result<String, SessionError> {
//!     let count: u64 = session.get("visits").await?.unwrap_or(0) + 1;
//!     session.insert("visits", &count).await?;
//!     Ok(format!("visit number {count}"))
//! }
//!
//! # async fn build() -> session_core::Result<()> {
//! let store = Arc::new(session_memory::MemoryStore::new());
//! let app: Router = Router::new()
//!     .route("/", get(visits))
//!     .layer(SessionLayer::new(store, LayerConfig::default()));
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

mod config;
mod handle;
mod layer;
mod status;

pub use config::{CookieConfig, CookieLifetime, IdTransport, LayerConfig, SameSite, TokenConfig};
pub use handle::{SessionError, SessionHandle};
pub use layer::{SessionLayer, SessionService};
pub use status::status_for;
