//! The conformance cases, one file per topic. Each case is written once, in its topic's
//! `cases!` block: its doc line (the rule), its requirements (`#[needs(...)]`, several joined
//! by `&`) and its body, a `pub async fn` that panics when the store breaks the rule. The
//! block also makes the topic's list, and [`CASES`] joins the lists in topic order.
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
    create_with, exists, load, open, short_lived, sleep, sleep_until, text, MARGIN, SHORT_IDLE,
};

/// Defines the cases of a topic file, each written once — doc line, requirements, body — and
/// the file's list of them, `CASES`, in order.
macro_rules! cases {
    ($(
        $(#[doc = $doc:literal])*
        #[needs($($need:ident)&+)]
        pub async fn $name:ident($fixture:ident: &dyn StoreFixture) $body:block
    )*) => {
        $(
            $(#[doc = $doc])*
            pub async fn $name($fixture: &dyn StoreFixture) $body
        )*

        /// The cases of this file, in order.
        pub(crate) const CASES: &[$crate::Case] = &[
            $( $crate::Case {
                name: stringify!($name),
                doc: concat!($($doc),*),
                needs: &[$($crate::Needs::$need),+],
                run: |fixture| ::std::boxed::Box::pin($name(fixture)),
            }, )*
        ];
    };
}

pub mod change_id;
pub mod concurrency;
pub mod corrupt;
pub mod create_find;
pub mod delete;
pub mod events;
pub mod expiry;
pub mod import;
pub mod limits;
pub mod principal;
pub mod save;

/// Every conformance case, topic by topic ([`create_find`], [`save`], [`expiry`], [`delete`],
/// [`change_id`], [`principal`], [`limits`], [`corrupt`], [`concurrency`], [`events`],
/// [`import`]).
pub static CASES: std::sync::LazyLock<Vec<crate::Case>> = std::sync::LazyLock::new(|| {
    [
        create_find::CASES,
        save::CASES,
        expiry::CASES,
        delete::CASES,
        change_id::CASES,
        principal::CASES,
        limits::CASES,
        corrupt::CASES,
        concurrency::CASES,
        events::CASES,
        import::CASES,
    ]
    .concat()
});

// ----- helpers shared by the cases --------------------------------------------------------------

pub(crate) async fn load_or_none(repo: &dyn SessionRepository, id: &SessionId) -> Option<Session> {
    repo.find(id).await.unwrap()
}
