//! The document of a session, and the updates that change it.
//!
//! ```text
//! { _id: "<64 hex digits of the session key>", format: 1, version: <int64>,
//!   createdAt: <date>, accessedAt: <date>, idleTimeoutMs: <int64>,
//!   absoluteLifetimeMs: <int64, absent when none>, principal: <string, absent when none>,
//!   expireAt: <date: the deadline>, attributes: { <encoded name>: <binary value>, … } }
//! ```
//!
//! Attribute names are free text, but MongoDB reads `.` in an update's field path as nesting
//! and `$` as an operator: names are stored percent-encoded (`%`, `.` and `$`, and control
//! characters, which sessions refuse anyway), so `a.b` is `a%2Eb` and cannot meet the nested
//! `a` → `b`, nor collide with a name that was `a%2Eb` (stored `a%252Eb`).
//!
//! Reading is lenient where MongoDB itself is: a whole number may come back as int32 or int64.
//! Anything else unexpected (a missing field, another type, an unknown `format`, a name that
//! does not decode) makes the document undecodable.

use std::borrow::Cow;
use std::sync::Arc;

use mongodb::bson::raw::{RawBsonRef, RawDocument};
use mongodb::bson::spec::BinarySubtype;
use mongodb::bson::{doc, Binary, Bson, DateTime, Document};
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, CONTROLS};
use session_core::raw::{Attributes, SessionDelta, SessionRecord, UndecodableRecord};
use session_core::{Bytes, SessionKey};

pub(crate) const ID: &str = "_id";
pub(crate) const FORMAT: &str = "format";
pub(crate) const VERSION: &str = "version";
pub(crate) const CREATED: &str = "createdAt";
pub(crate) const ACCESSED: &str = "accessedAt";
pub(crate) const IDLE: &str = "idleTimeoutMs";
pub(crate) const LIFETIME: &str = "absoluteLifetimeMs";
pub(crate) const PRINCIPAL: &str = "principal";
pub(crate) const EXPIRE_AT: &str = "expireAt";
pub(crate) const ATTRIBUTES: &str = "attributes";

/// The layout described above. A document of another format is undecodable.
const FORMAT_V1: i32 = 1;

/// Characters of an attribute name that are stored percent-encoded.
const ESCAPED: &AsciiSet = &CONTROLS.add(b'%').add(b'.').add(b'$');

/// Bytes BSON spends on one attribute beyond its encoded name and value: type byte, name
/// terminator, binary length and subtype.
const ATTRIBUTE_BSON_OVERHEAD: usize = 7;
/// Generous bound on the bytes of everything but the attributes.
const METADATA_BSON_BOUND: usize = 1024;

/// The `_id` of the session of `key`.
pub(crate) fn id_of(key: &SessionKey) -> String {
    key.to_hex()
}

/// The stored form of an attribute name.
pub(crate) fn encode_name(name: &str) -> Cow<'_, str> {
    utf8_percent_encode(name, ESCAPED).into()
}

fn decode_name(stored: &str) -> Option<Cow<'_, str>> {
    percent_decode_str(stored).decode_utf8().ok()
}

/// A time in epoch ms as a BSON date (clamped: no session lives until the year 292 million).
pub(crate) fn date(ms: u64) -> DateTime {
    DateTime::from_millis(i64::try_from(ms).unwrap_or(i64::MAX))
}

fn int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// The whole document of a new session.
pub(crate) fn to_document(key: &SessionKey, record: &SessionRecord) -> Document {
    let attributes: Document = record
        .attributes
        .iter()
        .map(|(name, value)| (encode_name(name).into_owned(), binary(value)))
        .collect();
    let mut document = doc! {
        ID: id_of(key),
        FORMAT: FORMAT_V1,
        VERSION: int(record.version),
        CREATED: date(record.created_at_ms),
        ACCESSED: date(record.last_accessed_at_ms),
        IDLE: int(record.idle_timeout_ms),
        EXPIRE_AT: date(record.deadline_ms()),
        ATTRIBUTES: attributes,
    };
    if let Some(lifetime) = record.absolute_lifetime_ms {
        document.insert(LIFETIME, int(lifetime));
    }
    if let Some(principal) = &record.principal {
        document.insert(PRINCIPAL, principal.as_str());
    }
    document
}

fn binary(value: &[u8]) -> Bson {
    Bson::Binary(Binary {
        subtype: BinarySubtype::Generic,
        bytes: value.to_vec(),
    })
}

/// An upper bound of the BSON size of `record`'s document, to refuse a session MongoDB would
/// refuse (16 MiB) before sending it.
pub(crate) fn document_size_bound(record: &SessionRecord) -> usize {
    let attributes: usize = record
        .attributes
        .iter()
        .map(|(name, value)| encode_name(name).len() + value.len() + ATTRIBUTE_BSON_OVERHEAD)
        .sum();
    let principal = record.principal.as_ref().map_or(0, String::len);
    attributes + principal + METADATA_BSON_BOUND
}

/// The update a save writes: the delta's attributes set and unset, changed metadata, the
/// access time moved forward, the deadline of `merged` (the record as the save leaves it),
/// and the version incremented.
pub(crate) fn save_update(delta: &SessionDelta<'_>, merged: &SessionRecord) -> Document {
    let mut set = Document::new();
    let mut unset = Document::new();
    for (name, value) in &delta.upserts {
        set.insert(format!("{ATTRIBUTES}.{}", encode_name(name)), binary(value));
    }
    for name in &delta.removals {
        unset.insert(format!("{ATTRIBUTES}.{}", encode_name(name)), "");
    }
    match delta.principal {
        Some(Some(principal)) => {
            set.insert(PRINCIPAL, principal);
        }
        Some(None) => {
            unset.insert(PRINCIPAL, "");
        }
        None => {}
    }
    if let Some(idle) = delta.idle_timeout_ms {
        set.insert(IDLE, int(idle));
    }
    match delta.absolute_lifetime_ms {
        Some(Some(lifetime)) => {
            set.insert(LIFETIME, int(lifetime));
        }
        Some(None) => {
            unset.insert(LIFETIME, "");
        }
        None => {}
    }
    set.insert(EXPIRE_AT, date(merged.deadline_ms()));
    let mut update = doc! {
        "$set": set,
        "$max": { ACCESSED: date(merged.last_accessed_at_ms) },
        "$inc": { VERSION: 1_i64 },
    };
    if !unset.is_empty() {
        update.insert("$unset", unset);
    }
    update
}

/// The touch, as an update pipeline the server evaluates on the stored document: the access
/// time moves to `now` (never back) and the deadline follows from the *stored* timeouts, so
/// a touch needs no read first.
pub(crate) fn touch_pipeline(now_ms: u64) -> Vec<Document> {
    let accessed = doc! { "$max": [format!("${ACCESSED}"), date(now_ms)] };
    let idle_deadline = doc! { "$add": [accessed.clone(), format!("${IDLE}")] };
    // Missing when the session has no absolute lifetime: `$min` ignores it then.
    let absolute_deadline = doc! { "$add": [format!("${CREATED}"), format!("${LIFETIME}")] };
    vec![doc! {
        "$set": {
            ACCESSED: accessed,
            EXPIRE_AT: { "$min": [idle_deadline, absolute_deadline] },
        }
    }]
}

/// The filter of a touch: the live document of `key` whose fields have the types the
/// pipeline computes with (another shape is undecodable, and a touch of it is `NotFound`).
pub(crate) fn touch_filter(key: &SessionKey, now_ms: u64) -> Document {
    doc! {
        ID: id_of(key),
        EXPIRE_AT: { "$gt": date(now_ms) },
        CREATED: { "$type": "date" },
        ACCESSED: { "$type": "date" },
        IDLE: { "$type": ["int", "long"] },
        "$or": [
            { LIFETIME: { "$exists": false } },
            { LIFETIME: { "$type": ["int", "long"] } },
        ],
    }
}

/// The filter of every read: the document of `key` before its deadline.
pub(crate) fn live(key: &SessionKey, now_ms: u64) -> Document {
    doc! { ID: id_of(key), EXPIRE_AT: { "$gt": date(now_ms) } }
}

/// Decodes a stored document.
pub(crate) fn from_document(document: &RawDocument) -> Result<SessionRecord, UndecodableRecord> {
    let format = integer(document, FORMAT)?;
    if format != i64::from(FORMAT_V1) {
        return Err(UndecodableRecord::new(format!(
            "document format {format}, this store reads {FORMAT_V1}"
        )));
    }
    let absolute_lifetime_ms = match field(document, LIFETIME)? {
        None | Some(RawBsonRef::Null) => None,
        Some(_) => Some(unsigned(document, LIFETIME)?),
    };
    let principal = match field(document, PRINCIPAL)? {
        None | Some(RawBsonRef::Null) => None,
        Some(RawBsonRef::String(principal)) => Some(principal.to_owned()),
        Some(other) => return Err(wrong_type(PRINCIPAL, other)),
    };
    Ok(SessionRecord {
        created_at_ms: time(document, CREATED)?,
        last_accessed_at_ms: time(document, ACCESSED)?,
        idle_timeout_ms: unsigned(document, IDLE)?,
        absolute_lifetime_ms,
        principal,
        version: unsigned(document, VERSION)?,
        attributes: attributes(document)?,
    })
}

/// The session key of a stored `_id`, if it is one.
pub(crate) fn key_of(document: &RawDocument) -> Option<SessionKey> {
    match document.get(ID) {
        Ok(Some(RawBsonRef::String(hex))) => SessionKey::from_hex(hex),
        _ => None,
    }
}

fn attributes(document: &RawDocument) -> Result<Attributes, UndecodableRecord> {
    let stored = match field(document, ATTRIBUTES)? {
        Some(RawBsonRef::Document(stored)) => stored,
        Some(other) => return Err(wrong_type(ATTRIBUTES, other)),
        None => return Err(missing(ATTRIBUTES)),
    };
    let mut attributes = Attributes::new();
    for element in stored.iter() {
        let (name, value) = element.map_err(malformed)?;
        let name = name.as_str();
        let decoded = decode_name(name).ok_or_else(|| {
            UndecodableRecord::new(format!("attribute name {name:?} does not decode"))
        })?;
        let RawBsonRef::Binary(value) = value else {
            return Err(wrong_type("an attribute", value));
        };
        attributes.insert(Arc::from(decoded), Bytes::copy_from_slice(value.bytes));
    }
    Ok(attributes)
}

fn field<'a>(
    document: &'a RawDocument,
    name: &str,
) -> Result<Option<RawBsonRef<'a>>, UndecodableRecord> {
    document.get(name).map_err(malformed)
}

fn integer(document: &RawDocument, name: &str) -> Result<i64, UndecodableRecord> {
    match field(document, name)? {
        Some(RawBsonRef::Int64(value)) => Ok(value),
        Some(RawBsonRef::Int32(value)) => Ok(i64::from(value)),
        Some(other) => Err(wrong_type(name, other)),
        None => Err(missing(name)),
    }
}

fn unsigned(document: &RawDocument, name: &str) -> Result<u64, UndecodableRecord> {
    let value = integer(document, name)?;
    u64::try_from(value)
        .map_err(|_| UndecodableRecord::new(format!("`{name}` is negative: {value}")))
}

fn time(document: &RawDocument, name: &str) -> Result<u64, UndecodableRecord> {
    match field(document, name)? {
        Some(RawBsonRef::DateTime(at)) => u64::try_from(at.timestamp_millis())
            .map_err(|_| UndecodableRecord::new(format!("`{name}` is before 1970"))),
        Some(other) => Err(wrong_type(name, other)),
        None => Err(missing(name)),
    }
}

fn missing(name: &str) -> UndecodableRecord {
    UndecodableRecord::new(format!("no `{name}` field"))
}

fn wrong_type(name: &str, value: RawBsonRef<'_>) -> UndecodableRecord {
    UndecodableRecord::new(format!("`{name}` is a BSON {:?}", value.element_type()))
}

fn malformed(error: mongodb::bson::error::Error) -> UndecodableRecord {
    UndecodableRecord::new(format!("malformed BSON: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::RawDocumentBuf;

    fn record() -> SessionRecord {
        let mut attributes = Attributes::new();
        for (name, value) in [("a.b", "1"), ("$where", "2"), ("a%2Eb", "3"), ("ü", "4")] {
            attributes.insert(Arc::from(name), Bytes::from(value));
        }
        SessionRecord {
            created_at_ms: 1_795_800_000_123,
            last_accessed_at_ms: 1_795_800_000_456,
            idle_timeout_ms: 1_800_000,
            absolute_lifetime_ms: Some(86_400_000),
            principal: Some("alice".into()),
            version: 7,
            attributes,
        }
    }

    #[test]
    fn a_record_survives_its_document_and_names_cannot_collide() {
        let key = SessionKey::from_bytes([7; 32]);
        let document = to_document(&key, &record());
        let stored: Vec<&str> = document
            .get_document(ATTRIBUTES)
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert!(
            stored.iter().all(|name| !name.contains(['.', '$'])),
            "{stored:?}"
        );
        assert_eq!(stored.len(), 4, "no two names met: {stored:?}");
        let raw = RawDocumentBuf::try_from(&document).unwrap();
        assert_eq!(from_document(&raw).unwrap(), record());
        assert_eq!(key_of(&raw), Some(key));
    }

    #[test]
    fn int32_reads_as_int64_and_other_shapes_are_undecodable() {
        let key = SessionKey::from_bytes([1; 32]);
        let mut document = to_document(&key, &record());
        document.insert(VERSION, 7_i32);
        let raw = RawDocumentBuf::try_from(&document).unwrap();
        assert_eq!(from_document(&raw).unwrap().version, 7);
        for (field, value) in [
            (VERSION, Bson::String("7".into())),
            (VERSION, Bson::Int64(-1)),
            (FORMAT, Bson::Int32(2)),
            (CREATED, Bson::Int64(5)),
            (
                ATTRIBUTES,
                Bson::Binary(Binary {
                    subtype: BinarySubtype::Generic,
                    bytes: vec![1],
                }),
            ),
            (PRINCIPAL, Bson::Int32(42)),
        ] {
            let mut spoiled = document.clone();
            spoiled.insert(field, value.clone());
            let raw = RawDocumentBuf::try_from(&spoiled).unwrap();
            assert!(from_document(&raw).is_err(), "{field} = {value:?}");
        }
        let mut no_name = document.clone();
        no_name.insert(ATTRIBUTES, doc! { "%FF": binary(b"x") });
        let raw = RawDocumentBuf::try_from(&no_name).unwrap();
        assert!(
            from_document(&raw).is_err(),
            "a name that is not UTF-8 once decoded"
        );
    }
}
