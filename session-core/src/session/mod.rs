//! The session: metadata, typed attributes and the bookkeeping a delta save needs.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::attributes::Attributes;
use crate::codec::{decode_value, encode_value};
use crate::error::{Error, Result};
use crate::id::{SessionId, SessionKey};
use crate::record::{check_size, SessionRecord};
use crate::settings::{SaveMode, SessionSettings};

mod internals;

use crate::raw::time::{deadline_millis, duration_millis, now_millis, system_time};
pub use internals::SessionInternals;

/// A server-side session.
///
/// Attributes are kept encoded, one value per name, so that a save can send exactly what
/// changed. Typed access goes through the repository's codec: [`Session::insert`] encodes,
/// [`Session::get`] decodes. The session remembers which names were set or removed and which
/// metadata moved since it was loaded; [`SessionRepository::save`](crate::SessionRepository::save)
/// writes that delta and nothing else (see [`SaveMode`]).
pub struct Session {
    id: SessionId,
    key: SessionKey,
    created_at_ms: u64,
    last_accessed_at_ms: u64,
    idle_timeout_ms: u64,
    absolute_lifetime_ms: Option<u64>,
    principal: Option<String>,
    version: u64,
    attributes: Attributes,
    changed: BTreeSet<String>,
    removed: BTreeSet<String>,
    /// Names read through `get`, written back by [`SaveMode::OnGet`].
    read: Mutex<BTreeSet<String>>,
    principal_changed: bool,
    idle_timeout_changed: bool,
    absolute_lifetime_changed: bool,
    persisted: bool,
    /// A save of this copy merged into a record that others had saved since: the copy lacks
    /// their changes, so [`SessionInternals::snapshot`](crate::raw::SessionInternals::snapshot)
    /// refuses it until the session is loaded again.
    behind_store: bool,
    /// See [`SessionInternals::load_token`](crate::raw::SessionInternals::load_token).
    load_token: Option<(u64, u64)>,
    /// See [`SessionInternals::load_value`](crate::raw::SessionInternals::load_value).
    load_value: Option<(u64, Bytes)>,
    settings: Arc<SessionSettings>,
}

impl Session {
    /// A new, not yet stored session with a fresh id and the timeouts of `settings`.
    pub fn new(settings: Arc<SessionSettings>) -> Self {
        Self::with_id(SessionId::generate(), settings)
    }

    /// A new session with a chosen id, for conformance tests of collision handling (feature
    /// `testing`). Applications must not pick ids; [`Session::new`] generates them.
    #[cfg(feature = "testing")]
    pub fn with_id_for_testing(id: SessionId, settings: Arc<SessionSettings>) -> Self {
        Self::with_id(id, settings)
    }

    fn with_id(id: SessionId, settings: Arc<SessionSettings>) -> Self {
        let now = now_millis();
        let record = SessionRecord {
            created_at_ms: now,
            last_accessed_at_ms: now,
            idle_timeout_ms: duration_millis(settings.idle_timeout),
            absolute_lifetime_ms: settings.absolute_lifetime.map(duration_millis),
            principal: None,
            version: 0,
            attributes: Attributes::default(),
        };
        Self::from_parts(id, record, settings, false)
    }

    fn from_parts(
        id: SessionId,
        record: SessionRecord,
        settings: Arc<SessionSettings>,
        persisted: bool,
    ) -> Self {
        Session {
            key: id.key(),
            id,
            created_at_ms: record.created_at_ms,
            last_accessed_at_ms: record.last_accessed_at_ms,
            idle_timeout_ms: record.idle_timeout_ms,
            absolute_lifetime_ms: record.absolute_lifetime_ms,
            principal: record.principal,
            version: record.version,
            attributes: record.attributes,
            changed: BTreeSet::new(),
            removed: BTreeSet::new(),
            read: Mutex::new(BTreeSet::new()),
            principal_changed: false,
            idle_timeout_changed: false,
            absolute_lifetime_changed: false,
            persisted,
            behind_store: false,
            load_token: None,
            load_value: None,
            settings,
        }
    }

    // ----- identity and metadata -------------------------------------------------------------

    /// The id (secret token). Changes on [`change_id`](crate::SessionRepository::change_id).
    pub fn id(&self) -> &SessionId {
        &self.id
    }

    /// The key the store keeps for this session.
    pub fn key(&self) -> SessionKey {
        self.key
    }

    /// `true` until the session has been created in a store.
    pub fn is_new(&self) -> bool {
        !self.persisted
    }

    /// `true` if a save would write attributes or metadata (not just refresh the expiry).
    pub fn is_modified(&self) -> bool {
        !self.changed.is_empty()
            || !self.removed.is_empty()
            || self.principal_changed
            || self.idle_timeout_changed
            || self.absolute_lifetime_changed
            || (self.settings.save_mode == SaveMode::Always && !self.attributes.is_empty())
            || (self.settings.save_mode == SaveMode::OnGet && !self.read_names().is_empty())
    }

    /// Creation time.
    pub fn created_at(&self) -> SystemTime {
        system_time(self.created_at_ms)
    }

    /// Last save or touch, as of when this copy was loaded or saved.
    pub fn last_accessed_at(&self) -> SystemTime {
        system_time(self.last_accessed_at_ms)
    }

    /// When this copy expires: `min(last_accessed + idle_timeout, created + absolute_lifetime)`.
    pub fn expires_at(&self) -> SystemTime {
        system_time(self.deadline())
    }

    fn deadline(&self) -> u64 {
        deadline_millis(
            self.created_at_ms,
            self.last_accessed_at_ms,
            self.idle_timeout_ms,
            self.absolute_lifetime_ms,
        )
    }

    /// Sliding idle timeout of this session.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }

    /// Changes the idle timeout of this session (stored by the next save).
    pub fn set_idle_timeout(&mut self, timeout: Duration) {
        self.idle_timeout_ms = duration_millis(timeout);
        self.idle_timeout_changed = true;
    }

    /// Cap on the total life of this session, from its creation.
    pub fn absolute_lifetime(&self) -> Option<Duration> {
        self.absolute_lifetime_ms.map(Duration::from_millis)
    }

    /// Changes the absolute lifetime of this session (stored by the next save).
    pub fn set_absolute_lifetime(&mut self, lifetime: Option<Duration>) {
        self.absolute_lifetime_ms = lifetime.map(duration_millis);
        self.absolute_lifetime_changed = true;
    }

    /// The principal (user name) the session belongs to, if any.
    pub fn principal(&self) -> Option<&str> {
        self.principal.as_deref()
    }

    /// Sets or clears the principal (stored by the next save, indexed for
    /// [`find_by_principal`](crate::SessionRepository::find_by_principal)).
    ///
    /// An empty name, one longer than [`Limits::max_principal_len`](crate::Limits) or one with
    /// a control character is [`Error::InvalidInput`]. Any other text is accepted and treated as
    /// opaque data.
    pub fn set_principal(&mut self, principal: Option<&str>) -> Result<()> {
        if let Some(name) = principal {
            validate_principal(name, self.settings.limits.max_principal_len)?;
        }
        self.principal = principal.map(str::to_owned);
        self.principal_changed = true;
        Ok(())
    }

    /// Version of this copy: the stored version when loaded, advanced by each save.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The settings (codec, limits, modes) this session follows.
    pub fn settings(&self) -> &Arc<SessionSettings> {
        &self.settings
    }

    // ----- attributes --------------------------------------------------------------------------

    /// Decodes attribute `name` as `T`; `Ok(None)` if absent, [`Error::Decode`] if the stored
    /// bytes are not a `T` (or not in a known format).
    pub fn get<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>> {
        let Some(bytes) = self.attributes.get(name) else {
            return Ok(None);
        };
        if self.settings.save_mode == SaveMode::OnGet {
            self.read
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(name.to_owned());
        }
        decode_value(self.settings.codec.as_ref(), bytes)
            .map(Some)
            .map_err(|source| Error::Decode {
                name: name.to_owned(),
                source,
            })
    }

    /// Encodes `value` and sets it as attribute `name`.
    ///
    /// Fails without changing the session if the name is empty, too long or contains a control
    /// character ([`Error::InvalidInput`]), the value cannot be encoded ([`Error::Encode`]), or the
    /// session would exceed its attribute count or size limit ([`Error::TooLarge`]).
    pub fn insert<T: Serialize + ?Sized>(&mut self, name: &str, value: &T) -> Result<()> {
        let bytes =
            encode_value(self.settings.codec.as_ref(), value).map_err(|source| Error::Encode {
                name: name.to_owned(),
                source,
            })?;
        self.insert_encoded(name, bytes)
    }

    /// Sets attribute `name` to already encoded bytes (format byte first), with the same checks
    /// as [`Session::insert`].
    pub fn insert_encoded(&mut self, name: &str, bytes: Vec<u8>) -> Result<()> {
        let limits = &self.settings.limits;
        if name.is_empty() {
            return Err(Error::InvalidInput("attribute name is empty".into()));
        }
        if name.len() > limits.max_attribute_name_len {
            return Err(Error::InvalidInput(format!(
                "attribute name is {} bytes, over the limit of {}",
                name.len(),
                limits.max_attribute_name_len
            )));
        }
        reject_control_characters("attribute name", name)?;
        self.attributes
            .insert_checked(name, Bytes::from(bytes), |size, count| {
                check_size(size, count, limits)
            })?;
        self.removed.remove(name);
        self.changed.insert(name.to_owned());
        Ok(())
    }

    /// Removes attribute `name`; returns whether this copy had it. The removal is saved even
    /// if this copy did not have it, so that a value stored meanwhile by another request is
    /// removed too.
    pub fn remove(&mut self, name: &str) -> bool {
        self.changed.remove(name);
        self.read
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(name);
        self.removed.insert(name.to_owned());
        self.attributes.remove(name)
    }

    /// Whether this copy has attribute `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.attributes.contains_key(name)
    }

    /// Names of the attributes of this copy, sorted.
    pub fn attribute_names(&self) -> impl Iterator<Item = &str> {
        self.attributes.keys()
    }

    /// Encoded bytes of attribute `name` (format byte first).
    pub fn raw_attribute(&self, name: &str) -> Option<&[u8]> {
        self.attributes.get(name)
    }

    /// Number of attributes.
    pub fn len(&self) -> usize {
        self.attributes.len()
    }

    /// Whether the session has no attributes.
    pub fn is_empty(&self) -> bool {
        self.attributes.is_empty()
    }

    /// Encoded size of the attributes, as counted against
    /// [`Limits::max_session_bytes`](crate::Limits).
    pub fn size(&self) -> usize {
        self.attributes.size()
    }

    fn read_names(&self) -> BTreeSet<String> {
        self.read
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Checks a principal name against the contract: non-empty, at most `max_len` bytes.
pub fn validate_principal(name: &str, max_len: usize) -> Result<()> {
    if name.is_empty() {
        return Err(Error::InvalidInput("principal name is empty".into()));
    }
    if name.len() > max_len {
        return Err(Error::InvalidInput(format!(
            "principal name is {} bytes, over the limit of {max_len}",
            name.len()
        )));
    }
    reject_control_characters("principal name", name)
}

/// Names are opaque text to every store, but control characters (NUL above all) are not valid
/// in every store's text type, so they are refused the same way everywhere.
fn reject_control_characters(what: &str, name: &str) -> Result<()> {
    if name.chars().any(char::is_control) {
        return Err(Error::InvalidInput(format!(
            "{what} contains a control character"
        )));
    }
    Ok(())
}

impl Clone for Session {
    fn clone(&self) -> Self {
        Session {
            id: self.id.clone(),
            key: self.key,
            created_at_ms: self.created_at_ms,
            last_accessed_at_ms: self.last_accessed_at_ms,
            idle_timeout_ms: self.idle_timeout_ms,
            absolute_lifetime_ms: self.absolute_lifetime_ms,
            principal: self.principal.clone(),
            version: self.version,
            attributes: self.attributes.clone(),
            changed: self.changed.clone(),
            removed: self.removed.clone(),
            read: Mutex::new(self.read_names()),
            principal_changed: self.principal_changed,
            idle_timeout_changed: self.idle_timeout_changed,
            absolute_lifetime_changed: self.absolute_lifetime_changed,
            persisted: self.persisted,
            behind_store: self.behind_store,
            load_token: self.load_token,
            load_value: self.load_value.clone(),
            settings: Arc::clone(&self.settings),
        }
    }
}

/// Shows metadata and attribute names only: values may hold secrets, and the id is redacted.
impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.id)
            .field("principal", &self.principal)
            .field("version", &self.version)
            .field("expires_at", &self.expires_at())
            .field("attributes", &self.attributes.keys().collect::<Vec<_>>())
            .field("is_new", &self.is_new())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Limits;

    fn settings(mode: SaveMode) -> Arc<SessionSettings> {
        Arc::new(SessionSettings::default().with_save_mode(mode))
    }

    fn stored(mode: SaveMode) -> Session {
        let mut session = Session::new(settings(mode));
        session.insert("a", &1u32).unwrap();
        session.insert("b", "two").unwrap();
        let record = session.record_for_create(now_millis()).unwrap();
        Session::from_record(session.id().clone(), record, settings(mode))
    }

    #[test]
    fn typed_values_round_trip() {
        let session = stored(SaveMode::OnSet);
        assert_eq!(session.get::<u32>("a").unwrap(), Some(1));
        assert_eq!(session.get::<String>("b").unwrap().as_deref(), Some("two"));
        assert_eq!(session.get::<u32>("missing").unwrap(), None);
        assert!(matches!(session.get::<u32>("b"), Err(Error::Decode { .. })));
    }

    #[test]
    fn a_load_token_stands_for_the_copy_as_loaded() {
        let mut session = stored(SaveMode::OnSet);
        assert_eq!(session.load_token(), None);
        session.set_load_token(7, 42);
        assert_eq!(
            session.clone().load_token(),
            Some((7, 42)),
            "a clone is the same copy"
        );
        session.insert("c", &3u8).unwrap();
        assert_eq!(session.load_token(), Some((7, 42)), "changes keep it");
        session.mark_persisted(session.version() + 1, now_millis());
        assert_eq!(session.load_token(), None, "a save makes it stale");
        session.set_load_token(7, 43);
        session.assign_id(SessionId::generate());
        assert_eq!(session.load_token(), None, "another id, another item");
    }

    #[test]
    fn a_copy_saved_over_others_saves_has_no_snapshot() {
        let mut session = stored(SaveMode::OnSet);
        let loaded = session.version();
        assert!(session.snapshot(1).unwrap().is_some(), "as loaded");
        session.mark_persisted(loaded + 1, now_millis());
        assert!(
            session.snapshot(1).unwrap().is_some(),
            "the next version: nobody saved in between"
        );
        session.insert("c", &3u8).unwrap();
        session.mark_persisted(loaded + 3, now_millis());
        assert!(
            session.snapshot(1).unwrap().is_none(),
            "another save came in between: the stored record has its changes"
        );
        assert!(session.clone().snapshot(1).unwrap().is_none(), "clones too");
        session.mark_persisted(loaded + 4, now_millis());
        session.assign_id(SessionId::generate());
        assert!(
            session.snapshot(1).unwrap().is_none(),
            "later saves and a new id do not bring the changes back"
        );
        assert!(session.delta(1).is_ok(), "the merge's delta is still there");
    }

    #[test]
    fn a_load_value_stands_for_the_copy_as_loaded() {
        let mut session = stored(SaveMode::OnSet);
        assert!(session.load_value().is_none());
        let value = Bytes::from_static(b"stored");
        session.set_load_value(7, value.clone());
        assert_eq!(session.clone().load_value(), Some((7, &value)));
        session.insert("c", &3u8).unwrap();
        assert_eq!(session.load_value(), Some((7, &value)), "changes keep it");
        session.mark_persisted(session.version() + 1, now_millis());
        assert!(session.load_value().is_none(), "a save makes it stale");
        session.set_load_value(7, value);
        session.assign_id(SessionId::generate());
        assert!(session.load_value().is_none(), "another id, another key");
    }

    #[test]
    fn delta_follows_the_save_mode() {
        let mut on_set = stored(SaveMode::OnSet);
        let _ = on_set.get::<u32>("a");
        on_set.insert("c", &3u8).unwrap();
        on_set.remove("b");
        let delta = on_set.delta(1).unwrap();
        assert_eq!(delta.upserts.iter().map(|u| u.0).collect::<Vec<_>>(), ["c"]);
        assert_eq!(delta.removals, ["b"]);

        let on_get = stored(SaveMode::OnGet);
        let _ = on_get.get::<u32>("a");
        assert_eq!(on_get.delta(1).unwrap().upserts.len(), 1);
        assert!(on_get.is_modified());

        let always = stored(SaveMode::Always);
        assert_eq!(always.delta(1).unwrap().upserts.len(), 2);
    }

    #[test]
    fn limits_reject_without_changing_the_session() {
        let limits = Limits::default()
            .with_max_attributes(2)
            .with_max_session_bytes(200)
            .with_max_attribute_name_len(5);
        let mut session = Session::new(Arc::new(SessionSettings::default().with_limits(limits)));
        session.insert("a", &1u8).unwrap();
        assert!(matches!(
            session.insert("toolong", &1u8),
            Err(Error::InvalidInput(_))
        ));
        assert!(matches!(
            session.insert("", &1u8),
            Err(Error::InvalidInput(_))
        ));
        assert!(matches!(
            session.insert("big", &"x".repeat(300)),
            Err(Error::TooLarge { .. })
        ));
        session.insert("b", &2u8).unwrap();
        assert!(matches!(
            session.insert("c", &3u8),
            Err(Error::TooLarge { .. })
        ));
        // Replacing an existing name does not count as a new attribute.
        session.insert("b", &4u8).unwrap();
        assert_eq!(session.len(), 2);
    }

    #[test]
    fn debug_shows_no_values_and_no_token() {
        let mut session = Session::new(settings(SaveMode::OnSet));
        session.insert("password", "hunter2").unwrap();
        let shown = format!("{session:?}");
        assert!(!shown.contains("hunter2"));
        assert!(!shown.contains(session.id().expose_secret()));
    }
}
