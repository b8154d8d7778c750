//! Hooks for tests (feature `testing`): raw writes of what a foreign or broken writer could
//! leave where a session is kept.

use mongodb::bson::spec::BinarySubtype;
use mongodb::bson::{doc, Binary, Document};
use session_core::testing::{RawShape, WriteRaw, WriteRawShape};
use session_core::{async_trait, Error, Operation, Result, SessionKey};

use crate::document::{id_of, ATTRIBUTES, CREATED, IDLE, VERSION};
use crate::error::map;
use crate::store::MongoStore;

#[async_trait]
impl WriteRaw for MongoStore {
    /// Replaces the attributes of `key`'s document by `bytes` (a binary where a sub-document
    /// belongs), as a foreign writer would; the version moves, the deadline stays.
    async fn write_raw(&self, key: &SessionKey, bytes: &[u8]) -> Result<()> {
        let attributes = Binary {
            subtype: BinarySubtype::Generic,
            bytes: bytes.to_vec(),
        };
        let update = doc! { "$set": { ATTRIBUTES: attributes }, "$inc": { VERSION: 1_i64 } };
        self.raw_update(key, update).await
    }
}

#[async_trait]
impl WriteRawShape for MongoStore {
    /// [`RawShape::ForeignType`]: the document's metadata fields hold other BSON types (the
    /// version a string, the creation time a boolean, the idle timeout a document); the
    /// principal and the deadline stay, so listings and log-out-everywhere still meet it.
    async fn write_raw_shape(&self, key: &SessionKey, shape: RawShape) -> Result<()> {
        if shape != RawShape::ForeignType {
            return Err(Error::Unsupported("this raw shape on MongoDB"));
        }
        let update = doc! {
            "$set": { VERSION: "seven", CREATED: true, IDLE: { "minutes": 30 } },
        };
        self.raw_update(key, update).await
    }
}

impl MongoStore {
    /// Applies `update` to the document of `key` as it is, without any check.
    async fn raw_update(&self, key: &SessionKey, update: Document) -> Result<()> {
        self.run(Operation::Save, async {
            self.collection()
                .update_one(doc! { "_id": id_of(key) }, update)
                .await
                .map_err(map)?;
            Ok(())
        })
        .await
    }
}
