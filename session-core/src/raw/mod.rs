//! For store authors only: what a [`SessionRepository`](crate::SessionRepository)
//! implementation needs and an application never calls.
//!
//! Applications use the crate root (the repository traits, [`Session`](crate::Session)'s typed
//! attribute API, ids, settings, codecs, [`Error`](crate::Error)). A store is written against
//! this module:
//!
//! - the stored form: [`SessionRecord`], [`SessionDelta`], [`Attributes`], the attribute codec
//!   ([`encode_attributes`], [`decode_attributes`]) and [`report_undecodable`];
//! - [`SessionInternals`]: the methods of `Session` only stores call (load from a record, the
//!   record to create, the delta to save, mark it stored, give it another id);
//! - the contract's algorithms, so that a store supplies I/O and nothing else: [`Creation`]
//!   (create under a free id), [`rotate_id`] (change_id to a free id), [`list_principal`]
//!   and [`delete_principal`] (principal listing and log-out-everywhere), [`Runner`] (a timeout
//!   and the store's name on every operation);
//! - [`StoreUrl`] and [`SCHEMES`]: one URL reader and one table of schemes for every store;
//! - [`EventBus`], [`time`].
//!
//! A third-party store in a few lines (an in-process map, no expiry, for illustration):
//!
//! ```
//! use std::collections::HashMap;
//! use std::sync::{Arc, Mutex};
//! use session_core::raw::{Creation, SessionInternals, SessionRecord, rotate_id, Rotation};
//! use session_core::{async_trait, Error, Result, Session, SessionId, SessionKey,
//!     SessionRepository, SessionSettings, Capabilities};
//!
//! #[derive(Debug, Default)]
//! struct MapStore { map: Mutex<HashMap<SessionKey, SessionRecord>>, settings: Arc<SessionSettings> }
//!
//! #[async_trait]
//! impl SessionRepository for MapStore {
//!     fn settings(&self) -> &Arc<SessionSettings> { &self.settings }
//!     async fn create(&self, session: &mut Session) -> Result<()> {
//!         let creation = Creation::begin(session)?;
//!         let id = creation.insert_under_free_id(|key| {
//!             let mut map = self.map.lock().unwrap();
//!             let free = !map.contains_key(&key);
//!             if free { map.insert(key, creation.record().clone()); }
//!             std::future::ready(Ok(free))
//!         }).await?;
//!         creation.finish(session, id);
//!         Ok(())
//!     }
//!     async fn find(&self, id: &SessionId) -> Result<Option<Session>> {
//!         let record = self.map.lock().unwrap().get(&id.key()).cloned();
//!         Ok(record.map(|r| Session::from_record(id.clone(), r, self.settings.clone())))
//!     }
//!     async fn save(&self, session: &mut Session) -> Result<()> {
//!         let now = session_core::raw::time::now_millis();
//!         let delta = session.delta(now)?;
//!         let mut map = self.map.lock().unwrap();
//!         let record = map.get_mut(&session.key()).ok_or(Error::NotFound)?;
//!         record.apply(&delta, now, &self.settings.limits)?;
//!         let version = record.version;
//!         drop((delta, map));
//!         session.mark_persisted(version, now);
//!         Ok(())
//!     }
//!     async fn touch(&self, id: &SessionId) -> Result<()> {
//!         let now = session_core::raw::time::now_millis();
//!         let mut map = self.map.lock().unwrap();
//!         map.get_mut(&id.key()).ok_or(Error::NotFound)?.touch(now)
//!     }
//!     async fn delete_by_key(&self, key: &SessionKey) -> Result<()> {
//!         self.map.lock().unwrap().remove(key);
//!         Ok(())
//!     }
//!     async fn change_id(&self, session: &mut Session) -> Result<()> {
//!         rotate_id(session, |old, new| {
//!             let mut map = self.map.lock().unwrap();
//!             let outcome = match map.remove(&old) {
//!                 None => Rotation::Gone,
//!                 Some(record) => { map.insert(new, record); Rotation::Moved }
//!             };
//!             std::future::ready(Ok(outcome))
//!         }).await?;
//!         Ok(())
//!     }
//! }
//! # let _ = Capabilities::none();
//! ```
//!
//! An application that imports only the crate root cannot reach the store-only methods:
//!
//! ```compile_fail
//! use std::sync::Arc;
//! use session_core::{Session, SessionSettings};
//!
//! let mut session = Session::new(Arc::new(SessionSettings::default()));
//! session.mark_persisted(1, 0); // only through session_core::raw::SessionInternals
//! ```

mod create;
mod principal;
mod rotate;
mod runner;
pub mod time;
mod turns;
mod url;

pub use crate::attributes::Attributes;
pub use crate::error::with_timeout;
pub use crate::event::EventBus;
pub use crate::record::{
    decode_attributes, decode_attributes_shared, encode_attributes, report_undecodable,
    undecodable_records, SessionDelta, SessionRecord, UndecodableRecord, ATTRIBUTES_FORMAT_V1,
    RECORD_FORMAT_V1,
};
pub use crate::repository::StoreCall;
pub use crate::session::{validate_principal, SessionInternals};
pub use create::{Creation, CREATE_ID_ATTEMPTS};
pub use principal::{
    check_principal_query, delete_principal, list_principal, Lookup, PrincipalIndexIo,
};
pub use rotate::{rotate_id, Rotated, Rotation, ROTATE_ATTEMPTS};
pub use runner::{backoff, Run, Runner};
pub use turns::WriterTurns;
pub use url::{parse_flag, redact_url, scheme_of, Scheme, StoreUrl, SCHEMES};

/// A random 64-bit number from the OS CSPRNG, the source of session ids: for tags that tell
/// one store instance from another, and counters that must not start where another
/// process's do.
///
/// # Panics
/// Only if the operating system cannot provide random bytes at all, as
/// [`SessionId::generate`](crate::SessionId::generate).
#[allow(clippy::expect_used)]
pub fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).expect("the OS random number generator is unavailable");
    u64::from_le_bytes(bytes)
}
