//! The `SessionRepository` contract.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;

use crate::error::{Error, Result};
use crate::event::EventSubscription;
use crate::id::{SessionId, SessionKey};
use crate::record::{SessionInfo, SessionRecord};
use crate::session::Session;
use crate::settings::SessionSettings;

/// What a store can do beyond the core contract. The conformance suite reads these flags to
/// decide which cases apply; it never branches on the store's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Capabilities {
    /// [`find_by_principal`](SessionRepository::find_by_principal) and
    /// [`delete_by_principal`](SessionRepository::delete_by_principal) work.
    pub principal_index: bool,
    /// [`subscribe`](SessionRepository::subscribe) delivers `Created`, `Deleted` and
    /// `IdChanged` for operations made through any handle on this store.
    pub lifecycle_events: bool,
    /// The subscription also delivers `Expired` when the store removes a session past its
    /// deadline, within a few seconds or the store's sweep interval. Stores that sweep from one
    /// instance at a time (SQL) deliver it to the subscribers of the instance that swept.
    pub expiry_events: bool,
    /// [`import`](SessionRepository::import) works: the store can be the new side of a
    /// [`Migrating`](crate::Migrating) pair.
    pub import: bool,
}

impl Capabilities {
    /// No optional capability.
    pub const fn none() -> Self {
        Capabilities {
            principal_index: false,
            lifecycle_events: false,
            expiry_events: false,
            import: false,
        }
    }

    /// Sets [`Capabilities::principal_index`].
    pub const fn with_principal_index(mut self, on: bool) -> Self {
        self.principal_index = on;
        self
    }

    /// Sets [`Capabilities::lifecycle_events`].
    pub const fn with_lifecycle_events(mut self, on: bool) -> Self {
        self.lifecycle_events = on;
        self
    }

    /// Sets [`Capabilities::expiry_events`].
    pub const fn with_expiry_events(mut self, on: bool) -> Self {
        self.expiry_events = on;
        self
    }

    /// Sets [`Capabilities::import`].
    pub const fn with_import(mut self, on: bool) -> Self {
        self.import = on;
        self
    }
}

/// A shared store of sessions: the one contract every backend implements.
///
/// Object-safe: applications hold an `Arc<dyn SessionRepository>` and choose the store by
/// configuration. Helpers live in [`SessionRepositoryExt`].
///
/// # Behavior
///
/// Rules common to every method (each one has a conformance case):
///
/// - A session is *live* strictly before its deadline,
///   `min(last_accessed + idle_timeout, created + absolute_lifetime)`, computed from the stored
///   metadata. A session at or past its deadline is absent for every method, even if the
///   server has not evicted it yet; the server's own eviction is set to the same deadline.
/// - Stored bytes that cannot be decoded (corrupt, or a future format) make the session
///   absent: reported with [`report_undecodable`](crate::raw::report_undecodable), never a panic.
/// - Stores keep the [`SessionKey`] (a hash of the id), never the id itself.
/// - Transient trouble (server down, timeout) is [`Error::Unavailable`] or [`Error::Timeout`]
///   within the store's configured timeout, naming the store and the operation; the same repository works again once the server
///   is back.
/// - Two repositories opened on the same store (two service instances) see each other's
///   writes as soon as the writing call returns.
#[async_trait]
pub trait SessionRepository: Send + Sync + fmt::Debug + 'static {
    /// Settings of the sessions this repository creates and loads.
    fn settings(&self) -> &Arc<SessionSettings>;

    /// Optional features of this store; none unless the store says otherwise.
    fn capabilities(&self) -> Capabilities {
        Capabilities::none()
    }

    /// Stores a new session.
    ///
    /// # Behavior
    ///
    /// - Never overwrites a stored session: if the session's key is taken (a live, expired
    ///   but not yet evicted, or undecodable record), the session gets a fresh id and the store
    ///   tries again, so the existing record stays untouched.
    /// - Sets creation and access time to now; afterwards `session.is_new()` is `false` and
    ///   the session has no pending changes.
    /// - A session that was already created is [`Error::InvalidInput`]; nothing is written.
    /// - Attributes, principal and timeouts of the session are stored as they are.
    async fn create(&self, session: &mut Session) -> Result<()>;

    /// Loads a session by its id.
    ///
    /// # Behavior
    ///
    /// - `Ok(None)` when no session has this id, or it expired (idle or absolute), or its
    ///   stored bytes are undecodable.
    /// - Reads never write: `find` does not extend the expiry or change anything in the store
    ///   (sliding expiry is the caller's [`touch`](SessionRepository::touch) or save).
    /// - The returned session has no pending changes and carries the stored version.
    async fn find(&self, id: &SessionId) -> Result<Option<Session>>;

    /// Writes the changes of a loaded session and refreshes its expiry.
    ///
    /// # Behavior
    ///
    /// - Writes only the delta: attributes set or removed since the session was loaded (per
    ///   [`SaveMode`](crate::SaveMode)), and metadata that changed (principal, timeouts).
    ///   Attributes this save did not change keep their stored value, so two requests that
    ///   change different attributes of one session both keep their change; when both change the
    ///   same attribute, the later save wins.
    /// - Sets the access time to now, which moves the deadline (never past the absolute
    ///   lifetime). A save without changes still refreshes the expiry.
    /// - Increments the stored version and sets the session's version to it.
    /// - [`Concurrency::Optimistic`](crate::Concurrency): if the stored version differs from
    ///   the one the session was loaded with, returns [`Error::Conflict`] and writes nothing.
    /// - A session that is not live in the store (deleted, rotated away by `change_id`,
    ///   expired, or never created) is [`Error::NotFound`]; nothing is written and the session
    ///   is not resurrected.
    /// - If the merged session would exceed the [`Limits`](crate::Limits), returns
    ///   [`Error::TooLarge`] and writes nothing.
    /// - On success the session's pending changes are cleared; on error they are kept.
    async fn save(&self, session: &mut Session) -> Result<()>;

    /// Extends a session's expiry without rewriting its attributes.
    ///
    /// # Behavior
    ///
    /// - Sets the stored access time to now, so the deadline moves to
    ///   `min(now + idle_timeout, created + absolute_lifetime)` using the stored timeouts.
    /// - Changes no attribute and not the version (a touch never causes an optimistic
    ///   conflict).
    /// - A session that is not live is [`Error::NotFound`] and is not resurrected.
    /// - A touch does not read attributes, so for a session whose stored bytes are
    ///   undecodable it may return `Ok` or [`Error::NotFound`]; either way the session stays
    ///   absent for `find`.
    /// - One round trip where the server allows it.
    async fn touch(&self, id: &SessionId) -> Result<()>;

    /// Deletes the session with this id.
    ///
    /// # Behavior
    ///
    /// - Idempotent: deleting a missing or already deleted session is `Ok(())`.
    /// - Afterwards `find` returns `None`, saves and touches of any loaded copy are
    ///   [`Error::NotFound`], and the session leaves the principal index.
    async fn delete(&self, id: &SessionId) -> Result<()> {
        self.delete_by_key(&id.key()).await
    }

    /// Deletes the session with this key ("revoke that device" from a listing).
    ///
    /// # Behavior
    ///
    /// The same as [`delete`](SessionRepository::delete), addressed by key.
    async fn delete_by_key(&self, key: &SessionKey) -> Result<()>;

    /// Gives a stored session a new id (login, privilege change: prevents session fixation).
    ///
    /// # Behavior
    ///
    /// - The stored session moves to a fresh id; the old id stops working at once (`find`
    ///   returns `None`, saves of old copies are [`Error::NotFound`]).
    /// - Attributes, metadata and version move unchanged; the session's own pending changes
    ///   stay pending and are written by the next save.
    /// - The principal index lists the new key instead of the old one.
    /// - A session that was never created just gets a fresh id; nothing is written.
    /// - A created session that is no longer live is [`Error::NotFound`].
    /// - Works without `RENAME`-like operations (on a cluster the two keys may live on
    ///   different nodes). If the store fails between writing the new key and removing the old,
    ///   both may exist until the old one expires; the caller only ever learns the new id on
    ///   success.
    async fn change_id(&self, session: &mut Session) -> Result<()>;

    /// Lists the live sessions of a principal (keys and metadata, never ids).
    ///
    /// # Behavior
    ///
    /// - Every live session whose principal is exactly `principal`; expired and deleted
    ///   sessions never appear (the index does not leak).
    /// - Any text is treated as opaque data (no wildcards, no injection); an empty or
    ///   over-long name, or one with a control character, is [`Error::InvalidInput`].
    /// - [`Error::Unsupported`] without [`Capabilities::principal_index`] (the default body).
    async fn find_by_principal(&self, principal: &str) -> Result<Vec<SessionInfo>> {
        let _ = principal;
        Err(Error::Unsupported("principal index"))
    }

    /// Deletes every session of a principal ("log out everywhere"); returns how many.
    ///
    /// # Behavior
    ///
    /// - Afterwards no session of the principal is live; sessions of other principals are
    ///   untouched. Idempotent.
    /// - Stored sessions of the principal that cannot be decoded are removed from the server
    ///   too, and counted; `find_by_principal` does not list them.
    /// - Same input rules as [`find_by_principal`](SessionRepository::find_by_principal).
    /// - [`Error::Unsupported`] without [`Capabilities::principal_index`] (the default body).
    async fn delete_by_principal(&self, principal: &str) -> Result<u64> {
        let _ = principal;
        Err(Error::Unsupported("principal index"))
    }

    /// Stores a session exactly as another store held it: the way sessions move between
    /// stores ([`Migrating`](crate::Migrating)) or come back from a backup. Returns whether it
    /// was stored.
    ///
    /// # Behavior
    ///
    /// - Stores `record` under `id`'s key as it is: `find` then returns its creation and access
    ///   times, timeouts, principal, version and attributes, and its deadline is the record's.
    /// - Never overwrites: if the key is taken (a live, expired but not yet evicted, or
    ///   undecodable record), returns `Ok(false)` and writes nothing.
    /// - A record that is no longer live (at or past its deadline) is [`Error::NotFound`];
    ///   nothing is written.
    /// - A record over the [`Limits`](crate::Limits) is [`Error::TooLarge`]; nothing is
    ///   written.
    /// - With [`Capabilities::principal_index`], the principal index lists the session.
    /// - Emits no event: the session is not new, it moved.
    /// - [`Error::Unsupported`] without [`Capabilities::import`] (the default body).
    async fn import(&self, id: &SessionId, record: &SessionRecord) -> Result<bool> {
        let _ = (id, record);
        Err(Error::Unsupported("import"))
    }

    /// Subscribes to session events.
    ///
    /// # Behavior
    ///
    /// - With [`Capabilities::lifecycle_events`]: `Created`, `Deleted` and `IdChanged` for
    ///   each such operation after the subscription started.
    /// - With [`Capabilities::expiry_events`]: also `Expired` for sessions the store removed
    ///   past their deadline.
    /// - [`Error::Unsupported`] when the store emits no events (the default body).
    fn subscribe(&self) -> Result<EventSubscription> {
        Err(Error::Unsupported("events"))
    }
}

/// Helpers on top of [`SessionRepository`].
#[async_trait]
pub trait SessionRepositoryExt: SessionRepository {
    /// A new, not yet stored session with this repository's settings.
    fn new_session(&self) -> Session {
        Session::new(Arc::clone(self.settings()))
    }

    /// Creates the session if it is new, saves it otherwise.
    async fn persist(&self, session: &mut Session) -> Result<()> {
        if session.is_new() {
            self.create(session).await
        } else {
            self.save(session).await
        }
    }
}

impl<R: SessionRepository + ?Sized> SessionRepositoryExt for R {}

/// The future a [`SessionRepository`] method returns (what `#[async_trait]` makes of an
/// `async fn`): for a decorator that hands back its inner store's future instead of wrapping it
/// in one more.
pub type StoreCall<'a, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'a>>;

/// A shared repository is a repository: `Arc<dyn SessionRepository>` (what `session-store`
/// opens) can be wrapped by decorators that take any `R: SessionRepository`. Each call hands
/// back the shared store's own future, so the `Arc` adds no allocation or poll of its own.
impl<R: SessionRepository + ?Sized> SessionRepository for Arc<R> {
    fn settings(&self) -> &Arc<SessionSettings> {
        (**self).settings()
    }

    fn capabilities(&self) -> Capabilities {
        (**self).capabilities()
    }

    fn create<'a, 'b, 'c>(&'a self, session: &'b mut Session) -> StoreCall<'c, ()>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        (**self).create(session)
    }

    fn find<'a, 'b, 'c>(&'a self, id: &'b SessionId) -> StoreCall<'c, Option<Session>>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        (**self).find(id)
    }

    fn save<'a, 'b, 'c>(&'a self, session: &'b mut Session) -> StoreCall<'c, ()>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        (**self).save(session)
    }

    fn touch<'a, 'b, 'c>(&'a self, id: &'b SessionId) -> StoreCall<'c, ()>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        (**self).touch(id)
    }

    fn delete<'a, 'b, 'c>(&'a self, id: &'b SessionId) -> StoreCall<'c, ()>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        (**self).delete(id)
    }

    fn delete_by_key<'a, 'b, 'c>(&'a self, key: &'b SessionKey) -> StoreCall<'c, ()>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        (**self).delete_by_key(key)
    }

    fn change_id<'a, 'b, 'c>(&'a self, session: &'b mut Session) -> StoreCall<'c, ()>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        (**self).change_id(session)
    }

    fn find_by_principal<'a, 'b, 'c>(
        &'a self,
        principal: &'b str,
    ) -> StoreCall<'c, Vec<SessionInfo>>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        (**self).find_by_principal(principal)
    }

    fn delete_by_principal<'a, 'b, 'c>(&'a self, principal: &'b str) -> StoreCall<'c, u64>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        (**self).delete_by_principal(principal)
    }

    fn import<'a, 'b, 'c, 'd>(
        &'a self,
        id: &'b SessionId,
        record: &'c SessionRecord,
    ) -> StoreCall<'d, bool>
    where
        'a: 'd,
        'b: 'd,
        'c: 'd,
        Self: 'd,
    {
        (**self).import(id, record)
    }

    fn subscribe(&self) -> Result<EventSubscription> {
        (**self).subscribe()
    }
}
