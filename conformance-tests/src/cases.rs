//! The conformance cases. Each is a `pub async fn` that panics when the store breaks the rule
//! named in its doc line; the list in `registry.rs` registers them.

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

// ----- create and find ------------------------------------------------------------------------

/// A created session is found by its id with its attributes and metadata.
pub async fn create_then_find_round_trips(fixture: &dyn StoreFixture) {
    let repo = open(fixture, SessionSettings::default()).await;
    let mut session = repo.new_session();
    session.insert("user", "morris").unwrap();
    session.insert("count", &42u64).unwrap();
    session.set_principal(Some("morris")).unwrap();
    session.set_idle_timeout(Duration::from_secs(600));
    repo.create(&mut session).await.unwrap();

    let loaded = load(&*repo, session.id()).await;
    assert_eq!(text(&loaded, "user").as_deref(), Some("morris"));
    assert_eq!(loaded.get::<u64>("count").unwrap(), Some(42));
    assert_eq!(loaded.principal(), Some("morris"));
    assert_eq!(loaded.idle_timeout(), Duration::from_secs(600));
    assert_eq!(loaded.created_at(), session.created_at());
    assert_eq!(loaded.version(), session.version());
    assert_eq!(loaded.key(), session.key());
    assert!(!loaded.is_new() && !loaded.is_modified());
    assert_eq!(
        loaded.attribute_names().collect::<Vec<_>>(),
        ["count", "user"]
    );
}

/// Create marks the session stored and clears its pending changes.
pub async fn create_marks_session_persisted(fixture: &dyn StoreFixture) {
    let repo = open(fixture, SessionSettings::default()).await;
    let mut session = repo.new_session();
    session.insert("a", "1").unwrap();
    assert!(session.is_new() && session.is_modified());
    repo.create(&mut session).await.unwrap();
    assert!(!session.is_new());
    assert!(!session.is_modified());
}

/// Create never overwrites: a taken id is replaced by a fresh one, the stored session stays.
pub async fn create_never_overwrites_existing(fixture: &dyn StoreFixture) {
    let repo = open(fixture, SessionSettings::default()).await;
    let first = create_with(&*repo, &[("owner", "first")]).await;

    let mut second = Session::with_id_for_testing(first.id().clone(), Arc::clone(repo.settings()));
    second.insert("owner", "second").unwrap();
    repo.create(&mut second).await.unwrap();

    assert_ne!(
        second.id(),
        first.id(),
        "a colliding create must get a fresh id"
    );
    assert_eq!(
        text(&load(&*repo, first.id()).await, "owner").as_deref(),
        Some("first")
    );
    assert_eq!(
        text(&load(&*repo, second.id()).await, "owner").as_deref(),
        Some("second")
    );
}

/// Creating an already created session is InvalidInput and writes nothing.
pub async fn create_twice_is_invalid_input(fixture: &dyn StoreFixture) {
    let repo = open(fixture, SessionSettings::default()).await;
    let mut session = create_with(&*repo, &[("a", "1")]).await;
    let id = session.id().clone();
    session.insert("a", "2").unwrap();
    assert_err!(repo.create(&mut session).await, Error::InvalidInput(_));
    assert_eq!(session.id(), &id);
    assert_eq!(text(&load(&*repo, &id).await, "a").as_deref(), Some("1"));
}

/// Find of an id that was never stored is None.
pub async fn find_missing_is_none(fixture: &dyn StoreFixture) {
    let repo = open(fixture, SessionSettings::default()).await;
    assert!(repo.find(&SessionId::generate()).await.unwrap().is_none());
}

/// Hostile id texts are rejected by parsing, before any I/O; unknown valid ids are None/NotFound/Ok.
pub async fn hostile_ids_are_rejected_before_io(fixture: &dyn StoreFixture) {
    let repo = open(fixture, SessionSettings::default()).await;
    let session = create_with(&*repo, &[("a", "1")]).await;
    let ten_kb = "A".repeat(10 * 1024);
    let almost = format!("{}*", &session.id().expose_secret()[..42]);
    let hostile = [
        "",
        ten_kb.as_str(),
        "ünïcödé-ünïcödé-ünïcödé-ünïcödé-ünïcödé",
        "' OR 1=1 --",
        "*",
        "\r\n",
        "%",
        "../../etc/passwd",
        almost.as_str(),
    ];
    for text in hostile {
        assert!(
            text.parse::<SessionId>().is_err(),
            "{text:?} parsed as a session id"
        );
    }
    let unknown = SessionId::generate();
    assert!(repo.find(&unknown).await.unwrap().is_none());
    assert_err!(repo.touch(&unknown).await, Error::NotFound);
    repo.delete(&unknown).await.unwrap();
    assert!(
        exists(&*repo, session.id()).await,
        "other sessions are untouched"
    );
}

/// Find never writes: it does not extend the expiry.
pub async fn find_does_not_extend_expiry(fixture: &dyn StoreFixture) {
    let repo = open(fixture, short_lived()).await;
    let session = create_with(&*repo, &[("a", "1")]).await;
    let deadline = session.expires_at();
    sleep(SHORT_IDLE / 2).await;
    let loaded = load(&*repo, session.id()).await;
    assert_eq!(loaded.expires_at(), deadline, "find moved the deadline");
    assert_eq!(loaded.version(), session.version());
    sleep(SHORT_IDLE / 2 + MARGIN).await;
    assert!(
        !exists(&*repo, session.id()).await,
        "reads kept the session alive"
    );
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Profile {
    name: String,
    roles: Vec<String>,
    age: Option<u8>,
    scores: BTreeMap<String, f64>,
}

/// Typed attributes of many shapes round-trip exactly.
pub async fn attribute_types_round_trip(fixture: &dyn StoreFixture) {
    let repo = open(fixture, SessionSettings::default()).await;
    let profile = Profile {
        name: "Zoë 🙂 漢字".into(),
        roles: vec!["admin".into(), "".into()],
        age: None,
        scores: BTreeMap::from([("x".into(), 1.5), ("y".into(), -0.0)]),
    };
    let bytes: Vec<u8> = (0..=255).collect();
    let mut session = repo.new_session();
    session.insert("profile", &profile).unwrap();
    session.insert("bytes", &bytes).unwrap();
    session.insert("max", &u64::MAX).unwrap();
    session.insert("neg", &i64::MIN).unwrap();
    session.insert("flag", &true).unwrap();
    session.insert("empty", "").unwrap();
    session.insert("unit", &()).unwrap();
    repo.create(&mut session).await.unwrap();

    let loaded = load(&*repo, session.id()).await;
    assert_eq!(loaded.get::<Profile>("profile").unwrap(), Some(profile));
    assert_eq!(loaded.get::<Vec<u8>>("bytes").unwrap(), Some(bytes));
    assert_eq!(loaded.get::<u64>("max").unwrap(), Some(u64::MAX));
    assert_eq!(loaded.get::<i64>("neg").unwrap(), Some(i64::MIN));
    assert_eq!(loaded.get::<bool>("flag").unwrap(), Some(true));
    assert_eq!(text(&loaded, "empty").as_deref(), Some(""));
    assert_eq!(loaded.get::<()>("unit").unwrap(), Some(()));
    for name in session.attribute_names() {
        assert_eq!(
            loaded.raw_attribute(name),
            session.raw_attribute(name),
            "bytes of {name}"
        );
    }
}

/// Attribute names with SQL, glob and non-ASCII text are stored as opaque data.
pub async fn hostile_attribute_names_round_trip(fixture: &dyn StoreFixture) {
    let repo = open(fixture, SessionSettings::default()).await;
    let names = [
        "' OR 1=1 --",
        "*",
        "%",
        "_",
        "a:b",
        "{tag}",
        "ключ 🙂",
        "\"quoted\"",
        "back\\slash",
        " ",
    ];
    let mut session = repo.new_session();
    for (i, name) in names.iter().enumerate() {
        session.insert(name, &i).unwrap();
    }
    repo.create(&mut session).await.unwrap();
    let mut loaded = load(&*repo, session.id()).await;
    for (i, name) in names.iter().enumerate() {
        assert_eq!(
            loaded.get::<usize>(name).unwrap(),
            Some(i),
            "attribute {name:?}"
        );
    }
    loaded.remove("*");
    loaded.insert("%", &99usize).unwrap();
    repo.save(&mut loaded).await.unwrap();
    let reloaded = load(&*repo, session.id()).await;
    assert!(!reloaded.contains("*"));
    assert_eq!(reloaded.get::<usize>("%").unwrap(), Some(99));
    assert_eq!(
        reloaded.len(),
        names.len() - 1,
        "a removal matched more than its own name"
    );
}

/// A stored attribute that is not the requested type is a Decode error; others still load.
pub async fn undecodable_attribute_is_a_decode_error(fixture: &dyn StoreFixture) {
    let repo = open(fixture, SessionSettings::default()).await;
    let mut session = repo.new_session();
    session
        .insert_encoded("garbage", vec![0xee, 0x01, 0x02])
        .unwrap();
    session
        .insert_encoded("truncated", vec![session_core::FORMAT_MESSAGEPACK, 0xdb])
        .unwrap();
    session.insert("good", "fine").unwrap();
    repo.create(&mut session).await.unwrap();
    let loaded = load(&*repo, session.id()).await;
    assert_err!(loaded.get::<String>("garbage"), Error::Decode { .. });
    assert_err!(loaded.get::<String>("truncated"), Error::Decode { .. });
    assert_err!(loaded.get::<u32>("good"), Error::Decode { .. });
    assert_eq!(text(&loaded, "good").as_deref(), Some("fine"));
}

// ----- save -----------------------------------------------------------------------------------

/// Save writes set attributes and deletes removed ones.
pub async fn save_writes_sets_and_removals(fixture: &dyn StoreFixture) {
    let repo = open(fixture, SessionSettings::default()).await;
    let session = create_with(&*repo, &[("keep", "k"), ("drop", "d"), ("change", "old")]).await;
    let mut loaded = load(&*repo, session.id()).await;
    assert!(loaded.remove("drop"));
    loaded.insert("change", "new").unwrap();
    loaded.insert("add", "a").unwrap();
    repo.save(&mut loaded).await.unwrap();
    assert!(!loaded.is_modified());

    let reloaded = load(&*repo, session.id()).await;
    assert_eq!(
        reloaded.attribute_names().collect::<Vec<_>>(),
        ["add", "change", "keep"]
    );
    assert_eq!(text(&reloaded, "change").as_deref(), Some("new"));
    assert_eq!(text(&reloaded, "keep").as_deref(), Some("k"));
}

/// Save of a never-created session is NotFound and writes nothing.
pub async fn save_of_new_session_is_not_found(fixture: &dyn StoreFixture) {
    let repo = open(fixture, SessionSettings::default()).await;
    let mut session = repo.new_session();
    session.insert("a", "1").unwrap();
    assert_err!(repo.save(&mut session).await, Error::NotFound);
    assert!(!exists(&*repo, session.id()).await);
    assert!(session.is_modified(), "pending changes are kept on error");
}

/// Two copies changing different attributes both keep their change.
pub async fn save_merges_different_attributes(fixture: &dyn StoreFixture) {
    let repo = open(fixture, SessionSettings::default()).await;
    let session = create_with(&*repo, &[("base", "b")]).await;
    let mut a = load(&*repo, session.id()).await;
    let mut b = load(&*repo, session.id()).await;
    a.insert("cart", "book").unwrap();
    b.insert("theme", "dark").unwrap();
    repo.save(&mut a).await.unwrap();
    repo.save(&mut b).await.unwrap();
    let merged = load(&*repo, session.id()).await;
    assert_eq!(text(&merged, "cart").as_deref(), Some("book"));
    assert_eq!(text(&merged, "theme").as_deref(), Some("dark"));
    assert_eq!(text(&merged, "base").as_deref(), Some("b"));
}

/// Two copies changing the same attribute: the later save wins.
pub async fn save_same_attribute_later_wins(fixture: &dyn StoreFixture) {
    let repo = open(fixture, SessionSettings::default()).await;
    let session = create_with(&*repo, &[("cart", "empty")]).await;
    let mut a = load(&*repo, session.id()).await;
    let mut b = load(&*repo, session.id()).await;
    a.insert("cart", "from a").unwrap();
    b.insert("cart", "from b").unwrap();
    repo.save(&mut a).await.unwrap();
    repo.save(&mut b).await.unwrap();
    assert_eq!(
        text(&load(&*repo, session.id()).await, "cart").as_deref(),
        Some("from b")
    );
}

/// A removal and a concurrent set of another attribute both apply.
pub async fn save_merges_removal_with_other_set(fixture: &dyn StoreFixture) {
    let repo = open(fixture, SessionSettings::default()).await;
    let session = create_with(&*repo, &[("x", "1"), ("y", "1")]).await;
    let mut a = load(&*repo, session.id()).await;
    let mut b = load(&*repo, session.id()).await;
    a.remove("x");
    b.insert("y", "2").unwrap();
    b.insert("z", "3").unwrap();
    repo.save(&mut a).await.unwrap();
    repo.save(&mut b).await.unwrap();
    let merged = load(&*repo, session.id()).await;
    assert!(
        !merged.contains("x"),
        "b's save resurrected an attribute it never changed"
    );
    assert_eq!(text(&merged, "y").as_deref(), Some("2"));
    assert_eq!(text(&merged, "z").as_deref(), Some("3"));
}

/// Every save increments the stored version and the session's version.
pub async fn save_increments_version(fixture: &dyn StoreFixture) {
    let repo = open(fixture, SessionSettings::default()).await;
    let mut session = create_with(&*repo, &[]).await;
    let v0 = session.version();
    session.insert("a", "1").unwrap();
    repo.save(&mut session).await.unwrap();
    assert_eq!(session.version(), v0 + 1);
    repo.save(&mut session).await.unwrap();
    assert_eq!(session.version(), v0 + 2);
    let mut other = load(&*repo, session.id()).await;
    assert_eq!(other.version(), v0 + 2);
    other.insert("b", "2").unwrap();
    repo.save(&mut other).await.unwrap();
    assert_eq!(load(&*repo, session.id()).await.version(), v0 + 3);
}

/// Optimistic save of a stale copy is Conflict and writes nothing.
pub async fn optimistic_save_of_stale_copy_conflicts(fixture: &dyn StoreFixture) {
    let settings = SessionSettings::default().with_concurrency(Concurrency::Optimistic);
    let repo = open(fixture, settings).await;
    let session = create_with(&*repo, &[("x", "0")]).await;
    let mut a = load(&*repo, session.id()).await;
    let mut b = load(&*repo, session.id()).await;
    a.insert("x", "a").unwrap();
    repo.save(&mut a).await.unwrap();
    b.insert("x", "b").unwrap();
    b.insert("only_b", "b").unwrap();
    b.set_principal(Some("mallory")).unwrap();
    match repo.save(&mut b).await {
        Err(Error::Conflict { expected, actual }) => {
            assert_eq!(expected, session.version());
            assert_eq!(actual, a.version());
        }
        other => panic!("expected Conflict, got {other:?}"),
    }
    let stored = load(&*repo, session.id()).await;
    assert_eq!(text(&stored, "x").as_deref(), Some("a"));
    assert!(
        !stored.contains("only_b"),
        "a conflicting save wrote an attribute"
    );
    assert_eq!(
        stored.principal(),
        None,
        "a conflicting save wrote metadata"
    );
    assert_eq!(stored.version(), a.version());
    assert!(
        b.is_modified(),
        "the losing copy keeps its changes for a retry"
    );
}

/// Optimistic save of a current copy succeeds and increments the version.
pub async fn optimistic_save_of_current_copy_succeeds(fixture: &dyn StoreFixture) {
    let settings = SessionSettings::default().with_concurrency(Concurrency::Optimistic);
    let repo = open(fixture, settings).await;
    let session = create_with(&*repo, &[("x", "0")]).await;
    let mut a = load(&*repo, session.id()).await;
    let before = a.version();
    a.insert("x", "1").unwrap();
    repo.save(&mut a).await.unwrap();
    assert_eq!(a.version(), before + 1);
    a.insert("x", "2").unwrap();
    repo.save(&mut a).await.unwrap();
    let stored = load(&*repo, session.id()).await;
    assert_eq!(stored.version(), before + 2);
    assert_eq!(text(&stored, "x").as_deref(), Some("2"));
}

/// A touch does not change the version, so it never causes an optimistic conflict.
pub async fn touch_does_not_cause_optimistic_conflict(fixture: &dyn StoreFixture) {
    let settings = SessionSettings::default().with_concurrency(Concurrency::Optimistic);
    let repo = open(fixture, settings).await;
    let session = create_with(&*repo, &[]).await;
    let mut copy = load(&*repo, session.id()).await;
    repo.touch(session.id()).await.unwrap();
    copy.insert("a", "1").unwrap();
    repo.save(&mut copy).await.unwrap();
}

/// Save of a deleted session is NotFound and does not resurrect it.
pub async fn save_after_delete_does_not_resurrect(fixture: &dyn StoreFixture) {
    let repo = open(fixture, SessionSettings::default()).await;
    let session = create_with(&*repo, &[("a", "1")]).await;
    let mut copy = load(&*repo, session.id()).await;
    repo.delete(session.id()).await.unwrap();
    copy.insert("b", "2").unwrap();
    assert_err!(repo.save(&mut copy).await, Error::NotFound);
    let mut unchanged = load_or_none(&*repo, session.id()).await;
    assert!(
        unchanged.take().is_none(),
        "save resurrected a deleted session"
    );
}

/// Save of an expired session is NotFound and does not resurrect it.
pub async fn save_after_expiry_does_not_resurrect(fixture: &dyn StoreFixture) {
    let repo = open(fixture, short_lived()).await;
    let session = create_with(&*repo, &[("a", "1")]).await;
    let mut copy = load(&*repo, session.id()).await;
    sleep(SHORT_IDLE + MARGIN).await;
    copy.insert("b", "2").unwrap();
    assert_err!(repo.save(&mut copy).await, Error::NotFound);
    assert!(
        !exists(&*repo, session.id()).await,
        "save resurrected an expired session"
    );
}

/// Save refreshes the expiry.
pub async fn save_extends_expiry(fixture: &dyn StoreFixture) {
    let repo = open(fixture, short_lived()).await;
    let mut session = create_with(&*repo, &[]).await;
    sleep(SHORT_IDLE * 6 / 10).await;
    session.insert("a", "1").unwrap();
    repo.save(&mut session).await.unwrap();
    sleep(SHORT_IDLE * 6 / 10).await;
    assert!(
        exists(&*repo, session.id()).await,
        "save did not move the deadline"
    );
    sleep(SHORT_IDLE * 4 / 10 + MARGIN).await;
    assert!(!exists(&*repo, session.id()).await);
}

/// A save without changes still refreshes the expiry.
pub async fn save_without_changes_extends_expiry(fixture: &dyn StoreFixture) {
    let repo = open(fixture, short_lived()).await;
    let mut session = create_with(&*repo, &[]).await;
    sleep(SHORT_IDLE * 6 / 10).await;
    assert!(!session.is_modified());
    repo.save(&mut session).await.unwrap();
    sleep(SHORT_IDLE * 6 / 10).await;
    assert!(
        exists(&*repo, session.id()).await,
        "an empty save did not move the deadline"
    );
}

/// Save mode OnSet writes only attributes that were set, not ones merely read.
pub async fn save_mode_on_set_skips_read_attributes(fixture: &dyn StoreFixture) {
    let repo = open(
        fixture,
        SessionSettings::default().with_save_mode(SaveMode::OnSet),
    )
    .await;
    let session = create_with(&*repo, &[("x", "1")]).await;
    let mut a = load(&*repo, session.id()).await;
    let mut b = load(&*repo, session.id()).await;
    b.insert("x", "2").unwrap();
    repo.save(&mut b).await.unwrap();
    assert_eq!(text(&a, "x").as_deref(), Some("1"));
    a.insert("y", "1").unwrap();
    repo.save(&mut a).await.unwrap();
    assert_eq!(
        text(&load(&*repo, session.id()).await, "x").as_deref(),
        Some("2")
    );
}

/// Save mode OnGet writes back attributes that were read.
pub async fn save_mode_on_get_writes_read_attributes(fixture: &dyn StoreFixture) {
    let repo = open(
        fixture,
        SessionSettings::default().with_save_mode(SaveMode::OnGet),
    )
    .await;
    let session = create_with(&*repo, &[("x", "1"), ("untouched", "u")]).await;
    let mut a = load(&*repo, session.id()).await;
    let mut b = load(&*repo, session.id()).await;
    b.insert("x", "2").unwrap();
    b.insert("untouched", "from b").unwrap();
    repo.save(&mut b).await.unwrap();
    assert_eq!(text(&a, "x").as_deref(), Some("1"));
    assert!(a.is_modified(), "a read attribute is pending in OnGet mode");
    repo.save(&mut a).await.unwrap();
    let stored = load(&*repo, session.id()).await;
    assert_eq!(
        text(&stored, "x").as_deref(),
        Some("1"),
        "OnGet did not write back a read attribute"
    );
    assert_eq!(
        text(&stored, "untouched").as_deref(),
        Some("from b"),
        "OnGet wrote an unread attribute"
    );
}

/// Save mode Always writes every attribute of the copy.
pub async fn save_mode_always_writes_all_attributes(fixture: &dyn StoreFixture) {
    let repo = open(
        fixture,
        SessionSettings::default().with_save_mode(SaveMode::Always),
    )
    .await;
    let session = create_with(&*repo, &[("x", "1"), ("y", "1")]).await;
    let mut a = load(&*repo, session.id()).await;
    let mut b = load(&*repo, session.id()).await;
    b.insert("x", "2").unwrap();
    b.insert("z", "3").unwrap();
    repo.save(&mut b).await.unwrap();
    repo.save(&mut a).await.unwrap();
    let stored = load(&*repo, session.id()).await;
    assert_eq!(
        text(&stored, "x").as_deref(),
        Some("1"),
        "Always did not write every attribute"
    );
    assert_eq!(
        text(&stored, "z").as_deref(),
        Some("3"),
        "Always must not delete attributes it never had"
    );
}

/// Changed idle timeout and principal are stored by save.
pub async fn save_stores_metadata_changes(fixture: &dyn StoreFixture) {
    let repo = open(fixture, SessionSettings::default()).await;
    let mut session = create_with(&*repo, &[]).await;
    session.set_principal(Some("morris")).unwrap();
    session.set_idle_timeout(Duration::from_secs(123));
    session.set_absolute_lifetime(Some(Duration::from_secs(3600)));
    repo.save(&mut session).await.unwrap();
    let stored = load(&*repo, session.id()).await;
    assert_eq!(stored.principal(), Some("morris"));
    assert_eq!(stored.idle_timeout(), Duration::from_secs(123));
    assert_eq!(stored.absolute_lifetime(), Some(Duration::from_secs(3600)));

    let mut cleared = stored;
    cleared.set_principal(None).unwrap();
    cleared.set_absolute_lifetime(None);
    repo.save(&mut cleared).await.unwrap();
    let stored = load(&*repo, session.id()).await;
    assert_eq!(stored.principal(), None);
    assert_eq!(stored.absolute_lifetime(), None);
}

/// Metadata changes of one copy survive a save of another copy that did not change them.
pub async fn save_keeps_metadata_it_did_not_change(fixture: &dyn StoreFixture) {
    let repo = open(fixture, SessionSettings::default()).await;
    let session = create_with(&*repo, &[]).await;
    let mut login = load(&*repo, session.id()).await;
    let mut other = load(&*repo, session.id()).await;
    login.set_principal(Some("morris")).unwrap();
    login.set_idle_timeout(Duration::from_secs(77));
    repo.save(&mut login).await.unwrap();
    other.insert("theme", "dark").unwrap();
    repo.save(&mut other).await.unwrap();
    let stored = load(&*repo, session.id()).await;
    assert_eq!(
        stored.principal(),
        Some("morris"),
        "a stale copy overwrote the principal"
    );
    assert_eq!(stored.idle_timeout(), Duration::from_secs(77));
    assert_eq!(text(&stored, "theme").as_deref(), Some("dark"));
}

// ----- expiry ---------------------------------------------------------------------------------

/// A session is live before its idle deadline and absent after it.
pub async fn idle_timeout_boundary(fixture: &dyn StoreFixture) {
    let repo = open(fixture, short_lived()).await;
    let session = create_with(&*repo, &[]).await;
    sleep(SHORT_IDLE - MARGIN).await;
    assert!(
        exists(&*repo, session.id()).await,
        "expired before its deadline"
    );
    sleep(MARGIN * 2).await;
    assert!(
        !exists(&*repo, session.id()).await,
        "still visible after its deadline"
    );
}

/// The absolute lifetime ends a session however recently it was used.
pub async fn absolute_lifetime_caps_activity(fixture: &dyn StoreFixture) {
    let settings = short_lived().with_absolute_lifetime(Some(SHORT_IDLE * 3 / 2));
    let repo = open(fixture, settings).await;
    let mut session = create_with(&*repo, &[]).await;
    sleep(SHORT_IDLE * 7 / 10).await;
    repo.touch(session.id()).await.unwrap();
    let touched = load(&*repo, session.id()).await;
    let cap = touched.created_at() + SHORT_IDLE * 3 / 2;
    assert_eq!(
        touched.expires_at(),
        cap,
        "the deadline must be capped by the absolute lifetime"
    );
    sleep(SHORT_IDLE * 6 / 10).await;
    session.insert("a", "1").unwrap();
    repo.save(&mut session).await.unwrap();
    sleep(SHORT_IDLE * 2 / 10 + MARGIN).await;
    assert!(
        !exists(&*repo, session.id()).await,
        "activity extended a session past its absolute lifetime"
    );
    assert_err!(repo.touch(session.id()).await, Error::NotFound);
}

/// Touch extends the idle deadline.
pub async fn touch_extends_expiry(fixture: &dyn StoreFixture) {
    let repo = open(fixture, short_lived()).await;
    let session = create_with(&*repo, &[]).await;
    for _ in 0..3 {
        sleep(SHORT_IDLE * 6 / 10).await;
        repo.touch(session.id()).await.unwrap();
    }
    assert!(
        exists(&*repo, session.id()).await,
        "touch did not extend the session"
    );
    sleep(SHORT_IDLE + MARGIN).await;
    assert!(!exists(&*repo, session.id()).await);
}

/// Touch leaves attributes and version untouched.
pub async fn touch_does_not_rewrite_attributes(fixture: &dyn StoreFixture) {
    let repo = open(fixture, SessionSettings::default()).await;
    let session = create_with(&*repo, &[("x", "1")]).await;
    let mut other = load(&*repo, session.id()).await;
    other.insert("x", "2").unwrap();
    repo.save(&mut other).await.unwrap();
    repo.touch(session.id()).await.unwrap();
    let stored = load(&*repo, session.id()).await;
    assert_eq!(text(&stored, "x").as_deref(), Some("2"));
    assert_eq!(stored.version(), other.version());
    assert!(stored.last_accessed_at() >= other.last_accessed_at());
}

/// Touch of a missing or expired session is NotFound and creates nothing.
pub async fn touch_of_missing_session_is_not_found(fixture: &dyn StoreFixture) {
    let repo = open(fixture, short_lived()).await;
    let missing = SessionId::generate();
    assert_err!(repo.touch(&missing).await, Error::NotFound);
    assert!(!exists(&*repo, &missing).await);
    let session = create_with(&*repo, &[]).await;
    sleep(SHORT_IDLE + MARGIN).await;
    assert_err!(repo.touch(session.id()).await, Error::NotFound);
    assert!(
        !exists(&*repo, session.id()).await,
        "touch resurrected an expired session"
    );
}

/// The stored deadline is last access + idle timeout, as reported by expires_at.
pub async fn expires_at_reports_the_deadline(fixture: &dyn StoreFixture) {
    let repo = open(fixture, SessionSettings::default()).await;
    let session = create_with(&*repo, &[]).await;
    let before = SystemTime::now();
    repo.touch(session.id()).await.unwrap();
    let after = SystemTime::now();
    let stored = load(&*repo, session.id()).await;
    let idle = SessionSettings::default().idle_timeout;
    let slack = Duration::from_millis(2);
    assert!(
        stored.expires_at() + slack >= before + idle,
        "deadline earlier than touch + idle"
    );
    assert!(
        stored.expires_at() <= after + idle + slack,
        "deadline later than touch + idle"
    );
    assert_eq!(stored.expires_at(), stored.last_accessed_at() + idle);
}

// ----- delete ---------------------------------------------------------------------------------

/// Delete removes the session and any loaded copy can no longer save.
pub async fn delete_removes_session(fixture: &dyn StoreFixture) {
    let repo = open(fixture, SessionSettings::default()).await;
    let session = create_with(&*repo, &[("a", "1")]).await;
    let other = create_with(&*repo, &[("a", "2")]).await;
    let mut copy = load(&*repo, session.id()).await;
    repo.delete(session.id()).await.unwrap();
    assert!(!exists(&*repo, session.id()).await);
    assert!(
        exists(&*repo, other.id()).await,
        "delete removed another session"
    );
    assert_err!(repo.save(&mut copy).await, Error::NotFound);
    assert_err!(repo.touch(session.id()).await, Error::NotFound);
}

/// Delete is idempotent.
pub async fn delete_is_idempotent(fixture: &dyn StoreFixture) {
    let repo = open(fixture, SessionSettings::default()).await;
    let session = create_with(&*repo, &[]).await;
    repo.delete(session.id()).await.unwrap();
    repo.delete(session.id()).await.unwrap();
    repo.delete(&SessionId::generate()).await.unwrap();
}

/// Delete by key removes the session; repeated, it is a no-op.
pub async fn delete_by_key_removes_session(fixture: &dyn StoreFixture) {
    let repo = open(fixture, SessionSettings::default()).await;
    let session = create_with(&*repo, &[]).await;
    repo.delete_by_key(&session.key()).await.unwrap();
    assert!(!exists(&*repo, session.id()).await);
    repo.delete_by_key(&session.key()).await.unwrap();
}

// ----- change_id ------------------------------------------------------------------------------

/// change_id moves the session to a new id; the old id stops working.
pub async fn change_id_moves_session(fixture: &dyn StoreFixture) {
    let repo = open(fixture, SessionSettings::default()).await;
    let mut session = create_with(&*repo, &[("cart", "book")]).await;
    session.set_principal(Some("morris")).unwrap();
    repo.save(&mut session).await.unwrap();
    let old_id = session.id().clone();
    let old_key = session.key();
    let version = session.version();
    repo.change_id(&mut session).await.unwrap();
    assert_ne!(session.id(), &old_id);
    assert_ne!(session.key(), old_key);
    assert_eq!(session.key(), session.id().key());
    assert!(!exists(&*repo, &old_id).await, "the old id still works");
    let moved = load(&*repo, session.id()).await;
    assert_eq!(text(&moved, "cart").as_deref(), Some("book"));
    assert_eq!(moved.principal(), Some("morris"));
    assert_eq!(moved.version(), version);
    assert_eq!(moved.created_at(), session.created_at());
    assert_err!(repo.touch(&old_id).await, Error::NotFound);
}

/// change_id keeps pending changes pending; the next save writes them under the new id.
pub async fn change_id_keeps_pending_changes(fixture: &dyn StoreFixture) {
    let repo = open(fixture, SessionSettings::default()).await;
    let mut session = create_with(&*repo, &[("a", "1")]).await;
    session.insert("b", "2").unwrap();
    repo.change_id(&mut session).await.unwrap();
    assert!(session.is_modified());
    assert!(!load(&*repo, session.id()).await.contains("b"));
    repo.save(&mut session).await.unwrap();
    let stored = load(&*repo, session.id()).await;
    assert_eq!(text(&stored, "a").as_deref(), Some("1"));
    assert_eq!(text(&stored, "b").as_deref(), Some("2"));
}

/// A copy still holding the old id cannot save after change_id.
pub async fn change_id_old_copy_cannot_save(fixture: &dyn StoreFixture) {
    let repo = open(fixture, SessionSettings::default()).await;
    let mut session = create_with(&*repo, &[("a", "1")]).await;
    let mut stale = load(&*repo, session.id()).await;
    let old_id = session.id().clone();
    repo.change_id(&mut session).await.unwrap();
    stale.insert("a", "stale").unwrap();
    assert_err!(repo.save(&mut stale).await, Error::NotFound);
    assert!(
        !exists(&*repo, &old_id).await,
        "a stale save resurrected the old id"
    );
    assert_eq!(
        text(&load(&*repo, session.id()).await, "a").as_deref(),
        Some("1")
    );
}

/// change_id of a never-created session only assigns a fresh id.
pub async fn change_id_of_new_session_is_local(fixture: &dyn StoreFixture) {
    let repo = open(fixture, SessionSettings::default()).await;
    let mut session = repo.new_session();
    let old = session.id().clone();
    repo.change_id(&mut session).await.unwrap();
    assert_ne!(session.id(), &old);
    assert!(session.is_new());
    assert!(
        !exists(&*repo, session.id()).await,
        "change_id of a new session wrote it"
    );
}

/// change_id of a deleted session is NotFound.
pub async fn change_id_of_deleted_session_is_not_found(fixture: &dyn StoreFixture) {
    let repo = open(fixture, SessionSettings::default()).await;
    let mut session = create_with(&*repo, &[]).await;
    repo.delete(session.id()).await.unwrap();
    let id = session.id().clone();
    assert_err!(repo.change_id(&mut session).await, Error::NotFound);
    assert_eq!(
        session.id(),
        &id,
        "a failed change_id must not change the id"
    );
}

// ----- principal index ------------------------------------------------------------------------

async fn create_for(repo: &dyn SessionRepository, principal: &str) -> Session {
    let mut session = repo.new_session();
    session.set_principal(Some(principal)).unwrap();
    session.insert("device", principal).unwrap();
    repo.create(&mut session).await.unwrap();
    session
}

/// find_by_principal lists exactly the principal's live sessions, as keys and metadata.
pub async fn principal_lists_its_sessions(fixture: &dyn StoreFixture) {
    let repo = open(fixture, SessionSettings::default()).await;
    let laptop = create_for(&*repo, "morris").await;
    let phone = create_for(&*repo, "morris").await;
    let _other = create_for(&*repo, "alice").await;
    let _anonymous = create_with(&*repo, &[]).await;
    let mut listed = repo.find_by_principal("morris").await.unwrap();
    listed.sort_by_key(|info| info.key);
    let mut expected = vec![laptop.key(), phone.key()];
    expected.sort();
    assert_eq!(
        listed.iter().map(|info| info.key).collect::<Vec<_>>(),
        expected
    );
    for info in &listed {
        assert_eq!(info.principal, "morris");
        assert!(info.expires_at > SystemTime::now());
        assert!(info.created_at <= info.last_accessed_at);
    }
    assert!(repo.find_by_principal("nobody").await.unwrap().is_empty());
}

/// delete_by_principal removes every session of the principal and no other.
pub async fn principal_delete_removes_all_its_sessions(fixture: &dyn StoreFixture) {
    let repo = open(fixture, SessionSettings::default()).await;
    let a = create_for(&*repo, "morris").await;
    let b = create_for(&*repo, "morris").await;
    let other = create_for(&*repo, "alice").await;
    assert_eq!(repo.delete_by_principal("morris").await.unwrap(), 2);
    assert!(!exists(&*repo, a.id()).await && !exists(&*repo, b.id()).await);
    assert!(exists(&*repo, other.id()).await);
    assert!(repo.find_by_principal("morris").await.unwrap().is_empty());
    assert_eq!(repo.delete_by_principal("morris").await.unwrap(), 0);
}

/// Expired sessions leave the principal index.
pub async fn principal_index_drops_expired_sessions(fixture: &dyn StoreFixture) {
    let repo = open(fixture, short_lived()).await;
    let long_repo = open(fixture, SessionSettings::default()).await;
    let _short = create_for(&*repo, "morris").await;
    let long = create_for(&*long_repo, "morris").await;
    assert_eq!(repo.find_by_principal("morris").await.unwrap().len(), 2);
    sleep(SHORT_IDLE + MARGIN).await;
    let listed = repo.find_by_principal("morris").await.unwrap();
    assert_eq!(
        listed.iter().map(|i| i.key).collect::<Vec<_>>(),
        [long.key()],
        "an expired session is still listed"
    );
    assert_eq!(repo.delete_by_principal("morris").await.unwrap(), 1);
}

/// A changed or cleared principal moves the session in the index.
pub async fn principal_change_moves_index_entry(fixture: &dyn StoreFixture) {
    let repo = open(fixture, SessionSettings::default()).await;
    let mut session = create_for(&*repo, "alice").await;
    session.set_principal(Some("bob")).unwrap();
    repo.save(&mut session).await.unwrap();
    assert!(repo.find_by_principal("alice").await.unwrap().is_empty());
    assert_eq!(repo.find_by_principal("bob").await.unwrap().len(), 1);
    session.set_principal(None).unwrap();
    repo.save(&mut session).await.unwrap();
    assert!(repo.find_by_principal("bob").await.unwrap().is_empty());
    assert_eq!(repo.delete_by_principal("alice").await.unwrap(), 0);
    assert!(exists(&*repo, session.id()).await);
}

/// Deleted sessions leave the principal index.
pub async fn principal_index_drops_deleted_sessions(fixture: &dyn StoreFixture) {
    let repo = open(fixture, SessionSettings::default()).await;
    let a = create_for(&*repo, "morris").await;
    let b = create_for(&*repo, "morris").await;
    repo.delete(a.id()).await.unwrap();
    repo.delete_by_key(&b.key()).await.unwrap();
    assert!(repo.find_by_principal("morris").await.unwrap().is_empty());
}

/// After change_id the index lists the new key, not the old one.
pub async fn principal_index_follows_change_id(fixture: &dyn StoreFixture) {
    let repo = open(fixture, SessionSettings::default()).await;
    let mut session = create_for(&*repo, "morris").await;
    repo.change_id(&mut session).await.unwrap();
    let listed = repo.find_by_principal("morris").await.unwrap();
    assert_eq!(
        listed.iter().map(|i| i.key).collect::<Vec<_>>(),
        [session.key()]
    );
    assert_eq!(repo.delete_by_principal("morris").await.unwrap(), 1);
    assert!(!exists(&*repo, session.id()).await);
}

/// Hostile principal names match nothing but themselves; bad ones are InvalidInput.
pub async fn hostile_principal_names_are_opaque(fixture: &dyn StoreFixture) {
    let repo = open(fixture, SessionSettings::default()).await;
    let alice = create_for(&*repo, "alice").await;
    let injected = create_for(&*repo, "' OR 1=1 --").await;
    for name in [
        "' OR 1=1 --",
        "*",
        "%",
        "_",
        "alice*",
        "ali%",
        "a?ice",
        "[a]lice",
        "ALICE",
        "älice 漢字🙂",
        "alice ",
    ] {
        let listed = repo.find_by_principal(name).await.unwrap();
        let expected = if name == "' OR 1=1 --" {
            vec![injected.key()]
        } else {
            vec![]
        };
        assert_eq!(
            listed.iter().map(|i| i.key).collect::<Vec<_>>(),
            expected,
            "principal {name:?}"
        );
    }
    for name in ["*", "%", "alice*", "ALICE"] {
        assert_eq!(
            repo.delete_by_principal(name).await.unwrap(),
            0,
            "principal {name:?}"
        );
    }
    let ten_kb = "x".repeat(10 * 1024);
    for bad in ["", ten_kb.as_str(), "\r\n", "a\0b"] {
        assert_err!(repo.find_by_principal(bad).await, Error::InvalidInput(_));
        assert_err!(repo.delete_by_principal(bad).await, Error::InvalidInput(_));
    }
    assert!(exists(&*repo, alice.id()).await);
    assert_eq!(repo.find_by_principal("alice").await.unwrap().len(), 1);
}

/// A principal set or changed by a save is stored exactly as given (spaces, quotes, non-ASCII) and listed under that name only.
pub async fn principal_set_by_save_is_stored_exactly(fixture: &dyn StoreFixture) {
    let repo = open(fixture, SessionSettings::default()).await;
    let session = create_with(&*repo, &[("cart", "3")]).await;
    for principal in ["  älice 'o' \"漢字\" 1 2  ", "1 -", "-"] {
        let mut login = load(&*repo, session.id()).await;
        login.set_principal(Some(principal)).unwrap();
        login.insert("cart", principal).unwrap();
        repo.save(&mut login).await.unwrap();
        let stored = load(&*repo, session.id()).await;
        assert_eq!(stored.principal(), Some(principal));
        assert_eq!(text(&stored, "cart").as_deref(), Some(principal));
        let listed = repo.find_by_principal(principal).await.unwrap();
        assert_eq!(
            listed.iter().map(|info| info.key).collect::<Vec<_>>(),
            [session.key()],
            "principal {principal:?}"
        );
        assert_eq!(listed[0].principal, principal);
        if principal.trim() != principal {
            assert!(
                repo.find_by_principal(principal.trim())
                    .await
                    .unwrap()
                    .is_empty(),
                "the index trimmed {principal:?}"
            );
        }
    }
}

/// A store without a principal index says Unsupported.
pub async fn principal_index_unsupported_is_reported(fixture: &dyn StoreFixture) {
    let repo = open(fixture, SessionSettings::default()).await;
    assert_err!(
        repo.find_by_principal("morris").await,
        Error::Unsupported(_)
    );
    assert_err!(
        repo.delete_by_principal("morris").await,
        Error::Unsupported(_)
    );
}

// ----- limits ---------------------------------------------------------------------------------

/// Too many attributes is TooLarge at insert and nothing is written.
pub async fn too_many_attributes_is_too_large(fixture: &dyn StoreFixture) {
    let settings = SessionSettings::default().with_limits(Limits::default().with_max_attributes(3));
    let repo = open(fixture, settings).await;
    let mut session = create_with(&*repo, &[("a", "1"), ("b", "2"), ("c", "3")]).await;
    assert_err!(session.insert("d", "4"), Error::TooLarge { .. });
    session.insert("c", "replaced").unwrap();
    repo.save(&mut session).await.unwrap();
    let stored = load(&*repo, session.id()).await;
    assert_eq!(stored.len(), 3);
    assert_eq!(text(&stored, "c").as_deref(), Some("replaced"));
}

/// An oversized value is TooLarge at insert and nothing is written.
pub async fn oversized_session_is_too_large(fixture: &dyn StoreFixture) {
    let settings =
        SessionSettings::default().with_limits(Limits::default().with_max_session_bytes(4096));
    let repo = open(fixture, settings).await;
    let mut session = create_with(&*repo, &[("small", "s")]).await;
    assert_err!(
        session.insert("big", &"x".repeat(8192)),
        Error::TooLarge { .. }
    );
    assert!(!session.contains("big"));
    repo.save(&mut session).await.unwrap();
    assert!(!load(&*repo, session.id()).await.contains("big"));
}

/// A save whose merge with the stored session exceeds the size limit is TooLarge and writes nothing.
pub async fn merged_size_over_limit_is_too_large(fixture: &dyn StoreFixture) {
    let settings =
        SessionSettings::default().with_limits(Limits::default().with_max_session_bytes(4096));
    let repo = open(fixture, settings).await;
    let session = create_with(&*repo, &[]).await;
    let mut a = load(&*repo, session.id()).await;
    let mut b = load(&*repo, session.id()).await;
    a.insert("first", &"a".repeat(2500)).unwrap();
    repo.save(&mut a).await.unwrap();
    // Either value alone would fit beside `first`: a store that leaves one out of the merged
    // size lets the save through.
    b.insert("second", &"b".repeat(1300)).unwrap();
    b.insert("third", &"c".repeat(1300)).unwrap();
    assert_err!(repo.save(&mut b).await, Error::TooLarge { .. });
    let stored = load(&*repo, session.id()).await;
    assert!(stored.contains("first"));
    assert!(
        !stored.contains("second") && !stored.contains("third"),
        "a rejected save wrote part of its delta"
    );
    assert_eq!(stored.version(), a.version());
}

/// A merged save that removes what another copy does not need counts the removal: it fits the limit.
pub async fn merged_size_counts_removals(fixture: &dyn StoreFixture) {
    let settings =
        SessionSettings::default().with_limits(Limits::default().with_max_session_bytes(4096));
    let repo = open(fixture, settings).await;
    let session = create_with(&*repo, &[("draft", &"d".repeat(2000))]).await;
    let mut a = load(&*repo, session.id()).await;
    let mut b = load(&*repo, session.id()).await;
    a.insert("first", &"a".repeat(1500)).unwrap();
    repo.save(&mut a).await.unwrap();
    b.remove("draft");
    b.insert("second", &"b".repeat(1500)).unwrap();
    repo.save(&mut b).await.unwrap();
    let stored = load(&*repo, session.id()).await;
    assert!(!stored.contains("draft"));
    assert_eq!(text(&stored, "first").map(|v| v.len()), Some(1500));
    assert_eq!(text(&stored, "second").map(|v| v.len()), Some(1500));
}

/// Bad attribute and principal names are InvalidInput.
pub async fn invalid_names_are_invalid_input(fixture: &dyn StoreFixture) {
    let settings =
        SessionSettings::default().with_limits(Limits::default().with_max_attribute_name_len(16));
    let repo = open(fixture, settings).await;
    let mut session = repo.new_session();
    for bad in ["", "seventeen-chars!!", "line\nbreak", "nul\0"] {
        assert_err!(session.insert(bad, "v"), Error::InvalidInput(_));
    }
    for bad in ["", "tab\there"] {
        assert_err!(session.set_principal(Some(bad)), Error::InvalidInput(_));
    }
    assert!(session.is_empty());
    repo.create(&mut session).await.unwrap();
    assert!(load(&*repo, session.id()).await.is_empty());
}

// ----- corrupt data ---------------------------------------------------------------------------

fn corrupt_payloads() -> Vec<(&'static str, Vec<u8>)> {
    let valid = SessionRecord {
        created_at_ms: now_millis(),
        last_accessed_at_ms: now_millis(),
        idle_timeout_ms: 60_000,
        absolute_lifetime_ms: None,
        principal: None,
        version: 0,
        attributes: Default::default(),
    }
    .encode()
    .unwrap();
    let mut future_format = valid.clone();
    future_format[0] = 0x7f;
    let truncated = valid[..valid.len() / 2].to_vec();
    vec![
        ("empty", Vec::new()),
        ("one byte", vec![0xff]),
        ("future format", future_format),
        ("truncated", truncated),
        ("bad msgpack", vec![RECORD_FORMAT_V1, 0xc1, 0xc1, 0xc1]),
        ("text", b"' OR 1=1 --\r\n*".to_vec()),
        (
            "noise",
            (0..200u32)
                .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
                .collect(),
        ),
    ]
}

/// Undecodable stored bytes make the session absent, without error or panic.
pub async fn corrupt_record_is_absent(fixture: &dyn StoreFixture) {
    let repo = open(fixture, SessionSettings::default()).await;
    for (what, bytes) in corrupt_payloads() {
        let session = create_with(&*repo, &[("a", "1")]).await;
        fixture.write_raw(&session.key(), &bytes).await.unwrap();
        match repo.find(session.id()).await {
            Ok(None) => {}
            other => panic!("a {what} record must read as absent, got {other:?}"),
        }
    }
}

/// A corrupt record can be deleted, save over it is NotFound, touch does not make it readable, and the store keeps working.
pub async fn corrupt_record_does_not_break_the_store(fixture: &dyn StoreFixture) {
    let repo = open(fixture, SessionSettings::default()).await;
    for (what, bytes) in corrupt_payloads() {
        let mut session = create_with(&*repo, &[("a", "1")]).await;
        fixture.write_raw(&session.key(), &bytes).await.unwrap();
        session.insert("b", "2").unwrap();
        assert!(
            matches!(repo.save(&mut session).await, Err(Error::NotFound)),
            "save over a {what} record must be NotFound"
        );
        // A touch does not read attributes: Ok or NotFound, but it must not make it readable.
        assert!(
            matches!(
                repo.touch(session.id()).await,
                Ok(()) | Err(Error::NotFound)
            ),
            "touch of a {what} record must be Ok or NotFound"
        );
        assert!(repo.find(session.id()).await.unwrap().is_none());
        repo.delete(session.id()).await.unwrap();
        let fresh = create_with(&*repo, &[("ok", "yes")]).await;
        assert_eq!(
            text(&load(&*repo, fresh.id()).await, "ok").as_deref(),
            Some("yes")
        );
    }
}

// ----- concurrency and instances --------------------------------------------------------------

/// 100 tasks saving different attributes of one session lose none.
pub async fn concurrent_savers_lose_no_attribute(fixture: &dyn StoreFixture) {
    let repo = open(fixture, SessionSettings::default()).await;
    let session = create_with(&*repo, &[]).await;
    let start = session.version();
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..100u32 {
        let repo = Arc::clone(&repo);
        let id = session.id().clone();
        tasks.spawn(async move {
            let mut copy = load(&*repo, &id).await;
            copy.insert(&format!("task{task}"), &task).unwrap();
            repo.save(&mut copy).await.unwrap();
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.unwrap();
    }
    let stored = load(&*repo, session.id()).await;
    assert_eq!(stored.len(), 100, "lost attributes under concurrent saves");
    for task in 0..100u32 {
        assert_eq!(
            stored.get::<u32>(&format!("task{task}")).unwrap(),
            Some(task)
        );
    }
    assert_eq!(stored.version(), start + 100);
}

/// Saves and touches racing a delete never bring the session back.
pub async fn concurrent_writers_never_resurrect_a_deleted_session(fixture: &dyn StoreFixture) {
    let repo = open(fixture, SessionSettings::default()).await;
    for round in 0..20u32 {
        let session = create_with(&*repo, &[("round", "r")]).await;
        let mut writers = tokio::task::JoinSet::new();
        for writer in 0..8u32 {
            let repo = Arc::clone(&repo);
            let id = session.id().clone();
            writers.spawn(async move {
                // Bounded, so that a store that resurrects fails the assertion below, not the timeout.
                for step in 0..500u32 {
                    let Some(mut copy) = repo.find(&id).await.unwrap() else {
                        return;
                    };
                    copy.insert(&format!("w{writer}"), &step).unwrap();
                    match repo.save(&mut copy).await {
                        Ok(()) => {}
                        Err(Error::NotFound) => return,
                        Err(other) => panic!("save failed: {other:?}"),
                    }
                    match repo.touch(&id).await {
                        Ok(()) | Err(Error::NotFound) => {}
                        Err(other) => panic!("touch failed: {other:?}"),
                    }
                }
            });
        }
        sleep(Duration::from_millis(u64::from(round % 5) + 1)).await;
        repo.delete(session.id()).await.unwrap();
        while let Some(joined) = writers.join_next().await {
            joined.unwrap();
        }
        assert!(
            !exists(&*repo, session.id()).await,
            "round {round}: a racing writer resurrected a deleted session"
        );
    }
}

/// Optimistic increments from many tasks with retry on Conflict count exactly.
pub async fn concurrent_optimistic_increments_are_exact(fixture: &dyn StoreFixture) {
    const TASKS: u64 = 20;
    const INCREMENTS: u64 = 5;
    let settings = SessionSettings::default().with_concurrency(Concurrency::Optimistic);
    let repo = open(fixture, settings).await;
    let mut session = repo.new_session();
    session.insert("counter", &0u64).unwrap();
    repo.create(&mut session).await.unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..TASKS {
        let repo = Arc::clone(&repo);
        let id = session.id().clone();
        tasks.spawn(async move {
            let mut conflicts = 0u64;
            for _ in 0..INCREMENTS {
                loop {
                    let mut copy = load(&*repo, &id).await;
                    let value: u64 = copy.get("counter").unwrap().unwrap();
                    copy.insert("counter", &(value + 1)).unwrap();
                    match repo.save(&mut copy).await {
                        Ok(()) => break,
                        Err(Error::Conflict { .. }) => conflicts += 1,
                        Err(other) => panic!("optimistic save failed: {other:?}"),
                    }
                    assert!(conflicts < 10_000, "no progress under contention");
                }
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.unwrap();
    }
    let stored = load(&*repo, session.id()).await;
    assert_eq!(
        stored.get::<u64>("counter").unwrap(),
        Some(TASKS * INCREMENTS),
        "lost updates"
    );
    assert_eq!(stored.version(), session.version() + TASKS * INCREMENTS);
}

/// Two repositories on one store (two service instances) see each other's writes.
pub async fn two_instances_share_sessions(fixture: &dyn StoreFixture) {
    let first = open(fixture, SessionSettings::default()).await;
    let second = open(fixture, SessionSettings::default()).await;
    let mut session = create_with(&*first, &[("user", "morris")]).await;
    let mut seen = load(&*second, session.id()).await;
    assert_eq!(text(&seen, "user").as_deref(), Some("morris"));
    seen.insert("cart", "book").unwrap();
    second.save(&mut seen).await.unwrap();
    assert_eq!(
        text(&load(&*first, session.id()).await, "cart").as_deref(),
        Some("book")
    );
    first.change_id(&mut session).await.unwrap();
    assert!(!exists(&*second, seen.id()).await);
    assert!(exists(&*second, session.id()).await);
    second.delete(session.id()).await.unwrap();
    assert!(!exists(&*first, session.id()).await);
}

/// An instance on JSON reads and writes sessions of an instance on MessagePack.
pub async fn two_instances_with_different_codecs(fixture: &dyn StoreFixture) {
    let packed = open(fixture, SessionSettings::default()).await;
    let json = open(fixture, SessionSettings::default().with_codec(Json)).await;
    let session = create_with(&*packed, &[("from", "msgpack")]).await;
    let mut seen = load(&*json, session.id()).await;
    assert_eq!(text(&seen, "from").as_deref(), Some("msgpack"));
    seen.insert("reply", &vec![1u8, 2, 3]).unwrap();
    json.save(&mut seen).await.unwrap();
    let back = load(&*packed, session.id()).await;
    assert_eq!(back.get::<Vec<u8>>("reply").unwrap(), Some(vec![1, 2, 3]));
    assert_eq!(
        back.raw_attribute("reply").map(|b| b[0]),
        Some(session_core::FORMAT_JSON)
    );
}

/// An instance that read a session sees another instance's later touch, save and delete (a
/// store that keeps copies of what it read must revalidate them).
pub async fn instance_sees_later_writes_of_another(fixture: &dyn StoreFixture) {
    let first = open(fixture, SessionSettings::default()).await;
    let second = open(fixture, SessionSettings::default()).await;
    let session = create_with(&*first, &[("step", "1")]).await;
    let before = load(&*first, session.id()).await;
    sleep(Duration::from_millis(20)).await;
    second.touch(session.id()).await.unwrap();
    let touched = load(&*first, session.id()).await;
    assert!(
        touched.last_accessed_at() > before.last_accessed_at(),
        "the other instance's touch is not visible"
    );
    assert_eq!(touched.version(), before.version());
    let mut other = load(&*second, session.id()).await;
    other.insert("step", "2").unwrap();
    second.save(&mut other).await.unwrap();
    let saved = load(&*first, session.id()).await;
    assert_eq!(text(&saved, "step").as_deref(), Some("2"));
    assert_eq!(saved.version(), other.version());
    second.delete(session.id()).await.unwrap();
    assert!(!exists(&*first, session.id()).await);
}

// ----- events ---------------------------------------------------------------------------------

async fn expect_event(
    events: &mut session_core::EventSubscription,
    wanted: &SessionEvent,
    within: Duration,
) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Ok(event)) if &event == wanted => return,
            Ok(Ok(_)) | Ok(Err(session_core::EventError::Lagged(_))) => {}
            Ok(Err(error)) => panic!("event stream ended: {error}"),
            Err(_) => panic!("no {wanted:?} within {within:?}"),
        }
    }
}

/// Create, change_id and delete emit Created, IdChanged and Deleted.
pub async fn lifecycle_events_are_emitted(fixture: &dyn StoreFixture) {
    let repo = open(fixture, SessionSettings::default()).await;
    let other_instance = open(fixture, SessionSettings::default()).await;
    let mut events = repo.subscribe().unwrap();
    let within = Duration::from_secs(2);
    let mut session = create_with(&*other_instance, &[]).await;
    expect_event(&mut events, &SessionEvent::Created(session.key()), within).await;
    let old = session.key();
    other_instance.change_id(&mut session).await.unwrap();
    expect_event(
        &mut events,
        &SessionEvent::IdChanged {
            old,
            new: session.key(),
        },
        within,
    )
    .await;
    other_instance.delete(session.id()).await.unwrap();
    expect_event(&mut events, &SessionEvent::Deleted(session.key()), within).await;
}

/// Every session past its deadline is reported as Expired.
pub async fn expiry_events_are_emitted(fixture: &dyn StoreFixture) {
    let repo = open(fixture, short_lived()).await;
    let mut events = repo.subscribe().unwrap();
    // Several sessions: on a sharded store they spread over the shards, so a store that
    // listens to only some of them misses some (with three shards, six sessions all land on
    // one in under 0.5% of runs).
    let mut sessions = Vec::new();
    for _ in 0..6 {
        sessions.push(create_with(&*repo, &[]).await);
    }
    let mut unheard: Vec<_> = sessions.iter().map(Session::key).collect();
    let within = SHORT_IDLE + Duration::from_secs(5);
    let deadline = tokio::time::Instant::now() + within;
    while !unheard.is_empty() {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Ok(SessionEvent::Expired(key))) => unheard.retain(|k| *k != key),
            Ok(Ok(_)) | Ok(Err(session_core::EventError::Lagged(_))) => {}
            Ok(Err(error)) => panic!("event stream ended: {error}"),
            Err(_) => panic!(
                "{} of {} expiries not reported within {within:?}",
                unheard.len(),
                sessions.len()
            ),
        }
    }
    for session in &sessions {
        assert!(!exists(&*repo, session.id()).await);
    }
}

/// A store without events says Unsupported.
pub async fn events_unsupported_is_reported(fixture: &dyn StoreFixture) {
    let repo = open(fixture, SessionSettings::default()).await;
    assert_err!(repo.subscribe(), Error::Unsupported(_));
}

// ----- helpers used above ----------------------------------------------------------------------

async fn load_or_none(repo: &dyn SessionRepository, id: &SessionId) -> Option<Session> {
    repo.find(id).await.unwrap()
}
