//! The conformance cases, one file per topic. Each is a `pub async fn` that panics when the
//! store breaks the rule named in its doc line; the list in `registry.rs` registers them.
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use session_core::raw::time::now_millis;
use session_core::raw::{SessionRecord, RECORD_FORMAT_V1};
use session_core::{
    Concurrency, Error, Json, Limits, SaveMode, Session, SessionEvent, SessionId,
    SessionRepository, SessionRepositoryExt, SessionSettings,
};

use crate::assert_err;
use crate::fixture::StoreFixture;
use crate::support::{
    create_with, exists, load, open, short_lived, sleep, text, MARGIN, SHORT_IDLE,
};

mod change_id;
mod concurrency;
mod corrupt;
mod create_find;
mod delete;
mod events;
mod expiry;
mod limits;
mod principal;
mod save;

pub use change_id::*;
pub use concurrency::*;
pub use corrupt::*;
pub use create_find::*;
pub use delete::*;
pub use events::*;
pub use expiry::*;
pub use limits::*;
pub use principal::*;
pub use save::*;

// ----- helpers shared by the cases --------------------------------------------------------------

pub(crate) async fn load_or_none(repo: &dyn SessionRepository, id: &SessionId) -> Option<Session> {
    repo.find(id).await.unwrap()
}
