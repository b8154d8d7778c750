//! The MongoDB store.
//!
//! # Expiry strategy
//!
//! One document per session (layout in the `document` module) with an `expireAt` date: the
//! session's deadline, recomputed by every create, save and touch. A TTL index on `expireAt`
//! (`expireAfterSeconds: 0`) lets the server delete expired documents itself, but its monitor
//! runs about once a minute, so every read also filters on `expireAt > now`: a session is
//! absent from its deadline on, to the millisecond, whatever the monitor did.
//!
//! A save is one `update` with the delta (`$set` and `$unset` of the changed attributes and
//! metadata, `$max` of the access time, `$inc` of the version), filtered on the live document
//! *and the version the session was loaded with*: when nobody wrote since the load (the common
//! case) the stored document is the loaded copy, so the limits and the new deadline computed
//! from that copy are exact. When the filter matches nothing, the save reads the document once,
//! merges its delta with [`SessionRecord::apply`] (liveness, the optimistic version check,
//! limits — telling `Conflict` from `NotFound` without a second write) and writes the same kind
//! of update against the version it read, retrying if yet another save slipped in. Saves of
//! one session in this process take turns ([`WriterTurns`]), so only other processes can slip
//! in. No update upserts, so a save never recreates a deleted session.
//!
//! A touch is one update whose pipeline computes the new deadline on the server from the
//! stored timeouts. A create is an insert (a taken `_id` is a duplicate key: fresh id).

use std::sync::Arc;
use std::time::Duration;

use futures_util::TryStreamExt;
use mongodb::bson::{doc, Document, RawDocumentBuf};
use mongodb::error::ErrorKind;
use mongodb::options::{ClientOptions, IndexOptions};
use mongodb::{Client, Collection, IndexModel};
use session_core::raw::time::now_millis;
use session_core::raw::{
    backoff, check_principal_query, report_undecodable, rotate_id, Creation, Lookup, Run, Runner,
    SessionDelta, SessionInternals, SessionRecord, WriterTurns,
};
use session_core::{
    async_trait, Capabilities, Error, Operation, Result, Session, SessionId, SessionInfo,
    SessionKey, SessionRepository, SessionSettings,
};

use crate::config::Config;
use crate::document::{
    date, document_size_bound, from_document, id_of, key_of, live, save_update, to_document,
    touch_filter, touch_pipeline, EXPIRE_AT, ID, PRINCIPAL, VERSION,
};
use crate::error::{code, is_duplicate_key, map};

/// Version-checked writes a save tries against other processes' saves.
const MERGE_ATTEMPTS: usize = 16;
/// MongoDB's document limit when the server does not say (`maxBsonObjectSize`).
const DEFAULT_MAX_DOCUMENT: usize = 16 * 1024 * 1024;
/// Names of the indexes the store creates.
const TTL_INDEX: &str = "session_expire_at_ttl";
const PRINCIPAL_INDEX: &str = "session_principal";
/// `createIndexes` codes for an index that exists with other options or another name.
const INDEX_CONFLICT_CODES: &[i32] = &[85, 86];

pub(crate) struct Inner {
    pub(crate) client: Client,
    pub(crate) raw: Collection<RawDocumentBuf>,
    pub(crate) documents: Collection<Document>,
    runner: Runner,
    config: Config,
    max_document_size: usize,
    turns: WriterTurns,
    /// The deployment runs transactions (a replica set or a sharded cluster): `change_id`
    /// moves a session in one.
    pub(crate) transactions: bool,
}

/// Sessions in a MongoDB collection.
///
/// Cloning, or [`MongoStore::with_settings`], gives another handle on the same client.
#[derive(Clone)]
pub struct MongoStore {
    pub(crate) inner: Arc<Inner>,
    settings: Arc<SessionSettings>,
}

impl std::fmt::Debug for MongoStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MongoStore")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl MongoStore {
    /// Connects (failing within the timeout if no server answers), reads the server's document
    /// size limit, and creates the TTL index on `expireAt` and the index on `principal` if
    /// missing.
    ///
    /// An index that already exists on the same field with other options (say, a TTL index
    /// with `expireAfterSeconds: 3600` made by hand) is kept as it is, with a warning: the store
    /// stays correct, since every read filters on the deadline, but the server then deletes
    /// expired documents on that index's schedule.
    pub async fn open(config: Config, settings: SessionSettings) -> Result<Self> {
        config.validate()?;
        let runner = Runner::new("mongo", config.timeout);
        let client = runner.run(Operation::Open, client_for(&config)).await?;
        Self::open_with_client(client, config, settings).await
    }

    /// [`MongoStore::open`] on a client the application made: its own pool, monitoring or
    /// event handlers. `config.url` is not used then; its database, collection and timeout
    /// are (set the client's timeouts yourself).
    pub async fn open_with_client(
        client: Client,
        config: Config,
        settings: SessionSettings,
    ) -> Result<Self> {
        config.validate()?;
        let runner = Runner::new("mongo", config.timeout);
        let database = client.database(&config.database);
        let hello = runner
            .run(Operation::Open, async {
                database.run_command(doc! { "hello": 1 }).await.map_err(map)
            })
            .await?;
        let max_document_size = hello
            .get_i32("maxBsonObjectSize")
            .ok()
            .and_then(|size| usize::try_from(size).ok())
            .unwrap_or(DEFAULT_MAX_DOCUMENT);
        // A replica set member names its set; a mongos says `isdbgrid`. Both run transactions.
        let transactions = hello.get_str("setName").is_ok()
            || hello.get_str("msg").is_ok_and(|msg| msg == "isdbgrid");
        let documents = database.collection::<Document>(&config.collection);
        let indexes = [
            IndexModel::builder()
                .keys(doc! { EXPIRE_AT: 1 })
                .options(
                    IndexOptions::builder()
                        .name(TTL_INDEX.to_owned())
                        .expire_after(Duration::ZERO)
                        .build(),
                )
                .build(),
            IndexModel::builder()
                .keys(doc! { PRINCIPAL: 1 })
                .options(
                    IndexOptions::builder()
                        .name(PRINCIPAL_INDEX.to_owned())
                        .sparse(true)
                        .build(),
                )
                .build(),
        ];
        for index in indexes {
            let created = runner
                .run(Operation::Open, async {
                    match documents.create_index(index.clone()).await {
                        Ok(_) => Ok(None),
                        Err(error)
                            if code(&error).is_some_and(|c| INDEX_CONFLICT_CODES.contains(&c)) =>
                        {
                            Ok(Some(error))
                        }
                        Err(error) => Err(map(error)),
                    }
                })
                .await?;
            if let Some(conflict) = created {
                tracing::warn!(
                    collection = %config.collection,
                    index = ?index.keys,
                    "an index on this field exists with other options and is kept: the store \
                     stays correct (reads filter on the deadline), the server deletes expired \
                     documents on that index's schedule: {conflict}"
                );
            }
        }
        Ok(MongoStore {
            inner: Arc::new(Inner {
                raw: documents.clone_with_type(),
                documents,
                client,
                runner,
                max_document_size,
                config,
                turns: WriterTurns::new(),
                transactions,
            }),
            settings: Arc::new(settings),
        })
    }

    /// Another handle on the same client with other session settings.
    pub fn with_settings(&self, settings: SessionSettings) -> Self {
        MongoStore {
            inner: Arc::clone(&self.inner),
            settings: Arc::new(settings),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The driver's client (for monitoring, or an application's own use of the database).
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    /// The collection of sessions, as documents.
    pub fn collection(&self) -> &Collection<Document> {
        &self.inner.documents
    }

    /// Whether `change_id` moves sessions in a transaction: the server at open was a replica
    /// set member or a mongos.
    pub fn runs_transactions(&self) -> bool {
        self.inner.transactions
    }

    /// The largest document the server takes, read at open.
    pub fn max_document_size(&self) -> usize {
        self.inner.max_document_size
    }

    /// `future` under the store's timeout (see [`Runner::run`]; a plain function, so that the
    /// operation's future is not kept twice in an `async fn`'s state).
    pub(crate) fn run<F, T>(&self, operation: Operation, future: F) -> Run<F>
    where
        F: std::future::Future<Output = Result<T>>,
    {
        self.inner.runner.run(operation, future)
    }

    /// The live document of `key` at `now`, decoded.
    pub(crate) async fn fetch(&self, key: &SessionKey, now: u64) -> Result<Lookup> {
        let found = self.inner.raw.find_one(live(key, now)).await.map_err(map)?;
        Ok(match found {
            None => Lookup::Absent,
            Some(document) => match from_document(&document) {
                Ok(record) if record.is_live_at(now) => Lookup::Live(record),
                Ok(_) => Lookup::Absent,
                Err(error) => {
                    report_undecodable(key, &error);
                    Lookup::Undecodable
                }
            },
        })
    }

    fn check_document_size(&self, record: &SessionRecord) -> Result<()> {
        let size = document_size_bound(record);
        if size > self.inner.max_document_size {
            return Err(Error::TooLarge {
                what: "MongoDB document",
                actual: size,
                limit: self.inner.max_document_size,
            });
        }
        Ok(())
    }

    /// Inserts `record` under `key`; `false` if the key is taken.
    pub(crate) async fn insert(&self, key: &SessionKey, record: &SessionRecord) -> Result<bool> {
        self.check_document_size(record)?;
        match self
            .inner
            .documents
            .insert_one(to_document(key, record))
            .await
        {
            Ok(_) => Ok(true),
            Err(error) if is_duplicate_key(&error) => Ok(false),
            Err(error) => Err(map(error)),
        }
    }

    /// Writes `delta` to the live document of `key` if it is still at version `expected`;
    /// `merged` is the record the write leaves. Whether it matched.
    async fn update_at(
        &self,
        key: &SessionKey,
        expected: u64,
        delta: &SessionDelta<'_>,
        merged: &SessionRecord,
        now: u64,
    ) -> Result<bool> {
        self.check_document_size(merged)?;
        let mut filter = live(key, now);
        filter.insert(VERSION, i64::try_from(expected).unwrap_or(i64::MAX));
        let result = self
            .inner
            .documents
            .update_one(filter, save_update(delta, merged))
            .await
            .map_err(map)?;
        Ok(result.matched_count == 1)
    }

    /// The save; returns the stored version.
    async fn save_at(&self, session: &Session, now: u64) -> Result<u64> {
        let key = session.key();
        let limits = &self.settings.limits;
        let delta = session.delta(now)?;
        let _turn = self.inner.turns.take(&key).await;
        // Liveness is checked on the loaded copy: the snapshot's deadline is the new one.
        let snapshot = if session.deadline_ms() > now {
            session.snapshot(now)?
        } else {
            None
        };
        if let Some(mut merged) = snapshot {
            if merged.check_limits(limits).is_ok() {
                merged.version += 1;
                if self
                    .update_at(&key, session.version(), &delta, &merged, now)
                    .await?
                {
                    return Ok(merged.version);
                }
            }
        }
        for attempt in 0..MERGE_ATTEMPTS {
            let Lookup::Live(mut record) = self.fetch(&key, now).await? else {
                return Err(Error::NotFound);
            };
            let read_version = record.version;
            record.apply(&delta, now, limits)?;
            if self
                .update_at(&key, read_version, &delta, &record, now)
                .await?
            {
                return Ok(record.version);
            }
            backoff(attempt).await;
        }
        Err(Error::retries_exhausted(
            "a save kept losing its version check to other processes",
            MERGE_ATTEMPTS,
        ))
    }

    pub(crate) async fn remove(&self, key: &SessionKey) -> Result<()> {
        self.inner
            .documents
            .delete_one(doc! { ID: id_of(key) })
            .await
            .map_err(map)?;
        Ok(())
    }

    async fn list(&self, principal: &str) -> Result<Vec<SessionInfo>> {
        let now = now_millis();
        let filter = doc! { PRINCIPAL: principal, EXPIRE_AT: { "$gt": date(now) } };
        let documents: Vec<RawDocumentBuf> = self
            .inner
            .raw
            .find(filter)
            .await
            .map_err(map)?
            .try_collect()
            .await
            .map_err(map)?;
        let mut found = Vec::with_capacity(documents.len());
        for document in documents {
            let Some(key) = key_of(&document) else {
                continue;
            };
            match from_document(&document) {
                Ok(record) if record.is_live_at(now) => found.extend(record.info(key)),
                Ok(_) => {}
                Err(error) => report_undecodable(&key, &error),
            }
        }
        found.sort_by_key(|info| info.created_at);
        Ok(found)
    }

    async fn delete_all_of(&self, principal: &str) -> Result<u64> {
        let now = now_millis();
        // Counted: every document of the principal before its deadline, decodable or not.
        let live = doc! { PRINCIPAL: principal, EXPIRE_AT: { "$gt": date(now) } };
        let deleted = self
            .inner
            .documents
            .delete_many(live)
            .await
            .map_err(map)?
            .deleted_count;
        // Not counted: what is past its deadline and not yet swept, so that nothing is left.
        self.inner
            .documents
            .delete_many(doc! { PRINCIPAL: principal })
            .await
            .map_err(map)?;
        Ok(deleted)
    }
}

/// The driver's client for `config`: the server selection and connect timeouts are the
/// store's timeout unless the URL sets them. Parsing a `mongodb+srv://` URL resolves DNS.
async fn client_for(config: &Config) -> Result<Client> {
    let mut options =
        ClientOptions::parse(&config.url)
            .await
            .map_err(|error| match *error.kind {
                ErrorKind::InvalidArgument { .. } => Error::Config(format!("MongoDB URL: {error}")),
                _ => map(error),
            })?;
    options
        .server_selection_timeout
        .get_or_insert(config.timeout);
    options.connect_timeout.get_or_insert(config.timeout);
    options
        .app_name
        .get_or_insert_with(|| "session-mongo".to_owned());
    Client::with_options(options).map_err(map)
}

#[async_trait]
impl SessionRepository for MongoStore {
    fn settings(&self) -> &Arc<SessionSettings> {
        &self.settings
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::none()
            .with_principal_index(true)
            .with_import(true)
    }

    async fn import(&self, id: &SessionId, record: &SessionRecord) -> Result<bool> {
        record.check_importable(now_millis(), &self.settings.limits)?;
        let key = id.key();
        self.run(Operation::Import, self.insert(&key, record)).await
    }

    async fn create(&self, session: &mut Session) -> Result<()> {
        let creation = Creation::begin(session)?;
        let record = creation.record();
        let inserted =
            creation.insert_under_free_id(|key| async move { self.insert(&key, record).await });
        let id = self.run(Operation::Create, inserted).await?;
        creation.finish(session, id);
        Ok(())
    }

    async fn find(&self, id: &SessionId) -> Result<Option<Session>> {
        let key = id.key();
        let found = self
            .run(Operation::Find, self.fetch(&key, now_millis()))
            .await?;
        Ok(found
            .live()
            .map(|record| Session::from_record(id.clone(), record, Arc::clone(&self.settings))))
    }

    async fn save(&self, session: &mut Session) -> Result<()> {
        let now = now_millis();
        let version = self
            .run(Operation::Save, self.save_at(session, now))
            .await?;
        session.mark_persisted(version, now);
        Ok(())
    }

    async fn touch(&self, id: &SessionId) -> Result<()> {
        let now = now_millis();
        let key = id.key();
        let touched = async {
            self.inner
                .documents
                .update_one(touch_filter(&key, now), touch_pipeline(now))
                .await
                .map_err(map)
        };
        let result = self.run(Operation::Touch, touched).await?;
        if result.matched_count == 1 {
            Ok(())
        } else {
            Err(Error::NotFound)
        }
    }

    async fn delete_by_key(&self, key: &SessionKey) -> Result<()> {
        self.run(Operation::Delete, self.remove(key)).await
    }

    async fn change_id(&self, session: &mut Session) -> Result<()> {
        let rotation = rotate_id(session, |old, new| async move {
            if self.inner.transactions {
                self.rotate_in_transaction(old, new).await
            } else {
                self.rotate_in_two_steps(old, new).await
            }
        });
        self.run(Operation::ChangeId, rotation).await.map(|_| ())
    }

    async fn find_by_principal(&self, principal: &str) -> Result<Vec<SessionInfo>> {
        check_principal_query(principal, &self.settings)?;
        self.run(Operation::FindByPrincipal, self.list(principal))
            .await
    }

    async fn delete_by_principal(&self, principal: &str) -> Result<u64> {
        check_principal_query(principal, &self.settings)?;
        self.run(Operation::DeleteByPrincipal, self.delete_all_of(principal))
            .await
    }
}
