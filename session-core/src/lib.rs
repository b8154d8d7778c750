//! Core of the distributed session workspace: the [`Session`] model, the
//! [`SessionRepository`] contract every store implements, ids and keys, codecs, settings and
//! the one [`Error`] type.
//!
//! A service running as many instances keeps its sessions in a shared store; a request carries
//! the [`SessionId`] (a secret bearer token), and any instance can load the session with it.
//! Stores keep only the [`SessionKey`] (SHA-256 of the id), so a dump of the store holds no
//! working tokens.
//!
//! ```
//! use std::sync::Arc;
//! use session_core::{Session, SessionSettings};
//!
//! let mut session = Session::new(Arc::new(SessionSettings::default()));
//! session.insert("cart", &vec!["book", "pen"])?;
//! let cart: Option<Vec<String>> = session.get("cart")?;
//! assert_eq!(cart.unwrap().len(), 2);
//! # Ok::<(), session_core::Error>(())
//! ```
#![deny(missing_docs)]

mod attributes;
mod codec;
mod error;
mod event;
mod id;
mod migrating;
pub mod raw;
mod record;
mod repository;
mod session;
mod settings;
#[cfg(feature = "testing")]
pub mod testing;
mod wire;

pub use codec::{Codec, Json, MessagePack, FORMAT_JSON, FORMAT_MESSAGEPACK};
pub use error::{BoxError, Error, ErrorContext, ErrorReport, Operation, Result};
pub use event::{EventError, EventSubscription, SessionEvent};
pub use id::{InvalidSessionId, SessionId, SessionKey, SESSION_ID_LEN};
pub use migrating::Migrating;
pub use record::SessionInfo;
pub use repository::{Capabilities, SessionRepository, SessionRepositoryExt};
pub use session::Session;
pub use settings::{Concurrency, Limits, SaveMode, SessionSettings};

pub use async_trait::async_trait;
pub use bytes::Bytes;
pub use erased_serde;
