//! A store written the way a third party would write one: only `session_core`'s crate root and
//! its `raw` module (no workspace store), run through the whole suite. If the kit lacked
//! something a store needs, this file could not be this short.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use session_conformance::{conformance_suite, StoreFixture};
use session_core::raw::time::now_millis;
use session_core::raw::{
    report_undecodable, rotate_id, Creation, Rotation, SessionInternals, SessionRecord,
};
use session_core::{
    async_trait, Error, Result, Session, SessionId, SessionKey, SessionRepository, SessionSettings,
};

/// Encoded records in a map, as a key-value server would hold them.
type Shared = Arc<Mutex<HashMap<SessionKey, Vec<u8>>>>;

#[derive(Debug)]
struct ToyStore {
    map: Shared,
    settings: Arc<SessionSettings>,
}

impl ToyStore {
    fn map(&self) -> MutexGuard<'_, HashMap<SessionKey, Vec<u8>>> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The live, decodable record of `key` in `map`.
fn live(map: &HashMap<SessionKey, Vec<u8>>, key: &SessionKey, now: u64) -> Option<SessionRecord> {
    let record = match SessionRecord::decode(map.get(key)?) {
        Ok(record) => record,
        Err(error) => {
            report_undecodable(key, &error);
            return None;
        }
    };
    record.is_live_at(now).then_some(record)
}

#[async_trait]
impl SessionRepository for ToyStore {
    fn settings(&self) -> &Arc<SessionSettings> {
        &self.settings
    }

    async fn create(&self, session: &mut Session) -> Result<()> {
        let creation = Creation::begin(session)?;
        let bytes = creation.record().encode()?;
        let id = creation
            .insert_under_free_id(|key| {
                let mut map = self.map();
                let free = !map.contains_key(&key);
                if free {
                    map.insert(key, bytes.clone());
                }
                std::future::ready(Ok(free))
            })
            .await?;
        creation.finish(session, id);
        Ok(())
    }

    async fn find(&self, id: &SessionId) -> Result<Option<Session>> {
        let record = live(&self.map(), &id.key(), now_millis());
        Ok(record.map(|record| Session::from_record(id.clone(), record, self.settings.clone())))
    }

    async fn save(&self, session: &mut Session) -> Result<()> {
        let now = now_millis();
        let version = {
            let delta = session.delta(now)?;
            let mut map = self.map();
            let mut record = live(&map, &session.key(), now).ok_or(Error::NotFound)?;
            record.apply(&delta, now, &self.settings.limits)?;
            map.insert(session.key(), record.encode()?);
            record.version
        };
        session.mark_persisted(version, now);
        Ok(())
    }

    async fn touch(&self, id: &SessionId) -> Result<()> {
        let now = now_millis();
        let mut map = self.map();
        let mut record = live(&map, &id.key(), now).ok_or(Error::NotFound)?;
        record.touch(now)?;
        map.insert(id.key(), record.encode()?);
        Ok(())
    }

    async fn delete_by_key(&self, key: &SessionKey) -> Result<()> {
        self.map().remove(key);
        Ok(())
    }

    async fn change_id(&self, session: &mut Session) -> Result<()> {
        rotate_id(session, |old, new| {
            let mut map = self.map();
            let outcome = if map.contains_key(&new) {
                Rotation::IdTaken
            } else {
                match live(&map, &old, now_millis()) {
                    None => Rotation::Gone,
                    Some(_) => {
                        let bytes = map.remove(&old).expect("live above");
                        map.insert(new, bytes);
                        Rotation::Moved
                    }
                }
            };
            std::future::ready(Ok(outcome))
        })
        .await?;
        Ok(())
    }
}

struct ToyFixture(Shared);

#[async_trait]
impl StoreFixture for ToyFixture {
    fn name(&self) -> &str {
        "toy"
    }

    async fn open(&self, settings: SessionSettings) -> Result<Arc<dyn SessionRepository>> {
        Ok(Arc::new(ToyStore {
            map: Arc::clone(&self.0),
            settings: Arc::new(settings),
        }))
    }

    fn can_write_raw(&self) -> bool {
        true
    }

    async fn write_raw(&self, key: &SessionKey, bytes: &[u8]) -> Result<()> {
        self.0.lock().unwrap().insert(*key, bytes.to_vec());
        Ok(())
    }
}

async fn toy() -> Option<ToyFixture> {
    Some(ToyFixture(Shared::default()))
}

conformance_suite!(toy);
