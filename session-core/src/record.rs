//! The stored form of a session, and the merge rules every store must implement.
//!
//! Stores that keep a session as one value (memory, memcached) store [`SessionRecord::encode`]d
//! bytes. Stores with native per-field updates (Redis hashes, SQL rows, Mongo documents) keep
//! the same fields in their own layout but must follow the same rules as
//! [`SessionRecord::apply`] and [`SessionRecord::touch`]; the conformance suite checks that they do.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::attributes::{attribute_size, decode_sharing, Attributes};
use crate::error::{Error, Result};
use crate::id::SessionKey;
use crate::raw::time::{deadline_millis, system_time};
use crate::settings::Limits;
use crate::wire;

/// First byte of an encoded [`SessionRecord`]. A reader that meets another value treats the
/// record as undecodable (absent), so a future format can be introduced without misreads.
pub const RECORD_FORMAT_V1: u8 = 0x01;

/// First byte of attributes encoded by [`encode_attributes`], for stores that keep metadata in
/// their own columns and the attributes as one value.
pub const ATTRIBUTES_FORMAT_V1: u8 = 0x01;

/// A session as a store keeps it: metadata plus attributes already encoded by their codec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// When the session was created, epoch ms.
    pub created_at_ms: u64,
    /// Last save or touch, epoch ms.
    pub last_accessed_at_ms: u64,
    /// Sliding idle timeout, ms.
    pub idle_timeout_ms: u64,
    /// Cap on the total life from creation, ms.
    pub absolute_lifetime_ms: Option<u64>,
    /// The principal (user) the session belongs to, for the principal index.
    pub principal: Option<String>,
    /// Incremented by every save; compared by optimistic saves.
    pub version: u64,
    /// Attribute name → encoded value (format byte first). Cloning a record (an in-process
    /// store handing out a copy) copies no attribute bytes (see [`Attributes`]).
    pub attributes: Attributes,
}

/// What a save sends: the attributes that changed or were removed, metadata that moved, and
/// the version to compare in optimistic mode. Built by [`SessionInternals::delta`](crate::raw::SessionInternals::delta).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SessionDelta<'a> {
    /// Attributes to write (name, encoded value).
    pub upserts: Vec<(&'a str, Bytes)>,
    /// Attributes to delete. Disjoint from `upserts`.
    pub removals: Vec<&'a str>,
    /// `Some` when the principal changed (to `Some(name)` or to `None`).
    pub principal: Option<Option<&'a str>>,
    /// `Some` when the idle timeout changed.
    pub idle_timeout_ms: Option<u64>,
    /// `Some` when the absolute lifetime changed.
    pub absolute_lifetime_ms: Option<Option<u64>>,
    /// The access time this save records, epoch ms.
    pub accessed_at_ms: u64,
    /// `Some(version)` in optimistic mode: the version the session was loaded with.
    pub expected_version: Option<u64>,
}

impl SessionRecord {
    /// Epoch ms at which the session stops being visible.
    pub fn deadline_ms(&self) -> u64 {
        deadline_millis(
            self.created_at_ms,
            self.last_accessed_at_ms,
            self.idle_timeout_ms,
            self.absolute_lifetime_ms,
        )
    }

    /// Whether the session is visible at `now_ms` (strictly before its deadline).
    pub fn is_live_at(&self, now_ms: u64) -> bool {
        now_ms < self.deadline_ms()
    }

    /// Size counted against [`Limits::max_session_bytes`].
    pub fn attributes_size(&self) -> usize {
        self.attributes.size()
    }

    /// [`Error::TooLarge`] if the attributes exceed `limits` (count or size), as a save that
    /// merged into this record would report.
    pub fn check_limits(&self, limits: &Limits) -> Result<()> {
        check_size(self.attributes_size(), self.attributes.len(), limits)
    }

    /// Whether [`import`](crate::SessionRepository::import) may store this record at `now_ms`:
    /// [`Error::NotFound`] past its deadline, [`Error::TooLarge`] over `limits`. Stores call it
    /// before writing anything.
    pub fn check_importable(&self, now_ms: u64, limits: &Limits) -> Result<()> {
        if !self.is_live_at(now_ms) {
            return Err(Error::NotFound);
        }
        self.check_limits(limits)
    }

    /// Applies a save to this record, following the contract:
    ///
    /// 1. a record past its deadline at `now_ms` is absent: [`Error::NotFound`];
    /// 2. in optimistic mode a different stored version is [`Error::Conflict`];
    /// 3. the merged attributes must stay within `limits`, else [`Error::TooLarge`];
    /// 4. removals, then upserts, then changed metadata; the access time moves forward only;
    ///    the version increments.
    ///
    /// On error the record is unchanged.
    pub fn apply(&mut self, delta: &SessionDelta<'_>, now_ms: u64, limits: &Limits) -> Result<()> {
        if !self.is_live_at(now_ms) {
            return Err(Error::NotFound);
        }
        if let Some(expected) = delta.expected_version {
            if expected != self.version {
                return Err(Error::Conflict {
                    expected,
                    actual: self.version,
                });
            }
        }
        let (mut size, mut count) = (self.attributes_size(), self.attributes.len());
        for name in &delta.removals {
            if let Some(old) = self.attributes.get(name) {
                size -= attribute_size(name, old);
                count -= 1;
            }
        }
        for (name, value) in &delta.upserts {
            if let Some(old) = self.attributes.get(name) {
                size -= attribute_size(name, old);
                count -= 1;
            }
            size += attribute_size(name, value);
            count += 1;
        }
        check_size(size, count, limits)?;

        for name in &delta.removals {
            self.attributes.remove(name);
        }
        for (name, value) in &delta.upserts {
            self.attributes.insert((*name).into(), Bytes::clone(value));
        }
        if let Some(principal) = delta.principal {
            self.principal = principal.map(str::to_owned);
        }
        if let Some(idle) = delta.idle_timeout_ms {
            self.idle_timeout_ms = idle;
        }
        if let Some(lifetime) = delta.absolute_lifetime_ms {
            self.absolute_lifetime_ms = lifetime;
        }
        self.last_accessed_at_ms = self.last_accessed_at_ms.max(delta.accessed_at_ms);
        self.version += 1;
        Ok(())
    }

    /// Records an access at `now_ms` without touching attributes or the version.
    /// A record past its deadline is absent: [`Error::NotFound`].
    pub fn touch(&mut self, now_ms: u64) -> Result<()> {
        if !self.is_live_at(now_ms) {
            return Err(Error::NotFound);
        }
        self.last_accessed_at_ms = self.last_accessed_at_ms.max(now_ms);
        Ok(())
    }

    /// Metadata for listings, if the session has a principal.
    pub fn info(&self, key: SessionKey) -> Option<SessionInfo> {
        Some(SessionInfo::new(
            key,
            self.principal.clone()?,
            system_time(self.created_at_ms),
            system_time(self.last_accessed_at_ms),
            system_time(self.deadline_ms()),
        ))
    }

    /// `RECORD_FORMAT_V1` followed by MessagePack of the record.
    pub fn encode(&self) -> Result<Vec<u8>> {
        encode_with(RECORD_FORMAT_V1, self.attributes_size(), |out| {
            wire::write_record(self, out)
        })
    }

    /// Parses bytes written by [`SessionRecord::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Self, UndecodableRecord> {
        match wire::record(bytes) {
            Some((mut record, layout)) => {
                record.attributes = layout.attach(|| Bytes::copy_from_slice(bytes));
                Ok(record)
            }
            None => decode_versioned(RECORD_FORMAT_V1, bytes, "record"),
        }
    }

    /// [`SessionRecord::decode`] of a buffer the record keeps: attribute values stay slices
    /// of `bytes` instead of copies, which saves a store that owns what it read an
    /// allocation and a copy per attribute. Pass the buffer itself, not a clone of one the
    /// store keeps: the first clone of a `Bytes` made from a `Vec` allocates.
    pub fn decode_shared(bytes: Bytes) -> Result<Self, UndecodableRecord> {
        match wire::record(&bytes) {
            Some((mut record, layout)) => {
                record.attributes = layout.attach(|| bytes);
                Ok(record)
            }
            // Serde's path alone: the reader has declined these bytes already.
            None => decode_sharing(&bytes, |bytes| {
                decode_versioned(RECORD_FORMAT_V1, bytes, "record")
            }),
        }
    }
}

/// `ATTRIBUTES_FORMAT_V1` followed by MessagePack of the attribute map.
pub fn encode_attributes(attributes: &Attributes) -> Result<Vec<u8>> {
    encode_with(ATTRIBUTES_FORMAT_V1, attributes.size(), |out| {
        wire::write_attributes(attributes, out)
    })
}

/// Parses bytes written by [`encode_attributes`].
pub fn decode_attributes(bytes: &[u8]) -> Result<Attributes, UndecodableRecord> {
    match wire::attributes(bytes) {
        Some(layout) => Ok(layout.attach(|| Bytes::copy_from_slice(bytes))),
        None => decode_versioned(ATTRIBUTES_FORMAT_V1, bytes, "attributes"),
    }
}

/// [`decode_attributes`] whose values are slices of `bytes`, which the map keeps (see
/// [`SessionRecord::decode_shared`]).
pub fn decode_attributes_shared(bytes: Bytes) -> Result<Attributes, UndecodableRecord> {
    match wire::attributes(&bytes) {
        Some(layout) => Ok(layout.attach(|| bytes)),
        None => decode_sharing(&bytes, |bytes| {
            decode_versioned(ATTRIBUTES_FORMAT_V1, bytes, "attributes")
        }),
    }
}

/// `format` byte, then the MessagePack `write` appends (the `wire` module's writers, which
/// produce what serde would; they fail only on a length past 32 bits, which no limit allows).
fn encode_with(
    format: u8,
    size_hint: usize,
    write: impl FnOnce(&mut Vec<u8>) -> Option<()>,
) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(64 + size_hint);
    out.push(format);
    write(&mut out).ok_or_else(|| Error::backend("a value is too long for MessagePack"))?;
    Ok(out)
}

/// Reads what [`encode_with`] wrote with the same `format` byte; any other first byte
/// (a future format, or garbage) is undecodable rather than misread.
fn decode_versioned<T: serde::de::DeserializeOwned>(
    format: u8,
    bytes: &[u8],
    what: &str,
) -> Result<T, UndecodableRecord> {
    match bytes.split_first() {
        Some((&found, body)) if found == format => {
            rmp_serde::from_slice(body).map_err(|e| UndecodableRecord(e.to_string()))
        }
        Some((other, _)) => Err(UndecodableRecord(format!(
            "unknown {what} format byte {other:#04x}"
        ))),
        None => Err(UndecodableRecord(format!("empty {what}"))),
    }
}

/// Enforces the size and count limits on a session's attributes.
pub(crate) fn check_size(size: usize, count: usize, limits: &Limits) -> Result<()> {
    if count > limits.max_attributes {
        return Err(Error::TooLarge {
            what: "attribute count",
            actual: count,
            limit: limits.max_attributes,
        });
    }
    if size > limits.max_session_bytes {
        return Err(Error::TooLarge {
            what: "encoded session size",
            actual: size,
            limit: limits.max_session_bytes,
        });
    }
    Ok(())
}

/// Stored bytes that are not a session record this version can read (corrupt, truncated or
/// written by a future format).
#[derive(Debug, Clone, thiserror::Error)]
#[error("undecodable session record: {0}")]
pub struct UndecodableRecord(String);

impl UndecodableRecord {
    /// An error with this description.
    pub fn new(description: impl Into<String>) -> Self {
        UndecodableRecord(description.into())
    }
}

static UNDECODABLE_RECORDS: AtomicU64 = AtomicU64::new(0);

/// Counts and logs a stored session that could not be decoded; the caller then treats it as
/// absent. The first occurrence in a process is logged at `warn`, later ones at `debug`, so a
/// corrupt store cannot flood the log.
pub fn report_undecodable(key: &SessionKey, error: &dyn std::error::Error) {
    if UNDECODABLE_RECORDS.fetch_add(1, Ordering::Relaxed) == 0 {
        tracing::warn!(%key, %error, "undecodable session record treated as absent (further ones are logged at debug)");
    } else {
        tracing::debug!(%key, %error, "undecodable session record treated as absent");
    }
}

/// How many undecodable records this process has met (see [`report_undecodable`]).
pub fn undecodable_records() -> u64 {
    UNDECODABLE_RECORDS.load(Ordering::Relaxed)
}

/// Metadata of a session for listings ("my devices"): never the token, never attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionInfo {
    /// Key of the session; [`delete_by_key`](crate::SessionRepository::delete_by_key) revokes it.
    pub key: SessionKey,
    /// The principal the session belongs to.
    pub principal: String,
    /// Creation time.
    pub created_at: SystemTime,
    /// Last save or touch.
    pub last_accessed_at: SystemTime,
    /// When the session expires unless touched.
    pub expires_at: SystemTime,
}

impl SessionInfo {
    /// Metadata from its parts.
    pub fn new(
        key: SessionKey,
        principal: String,
        created_at: SystemTime,
        last_accessed_at: SystemTime,
        expires_at: SystemTime,
    ) -> Self {
        SessionInfo {
            key,
            principal,
            created_at,
            last_accessed_at,
            expires_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shared_decode_slices_the_buffer_and_equals_a_copying_one() {
        let mut attributes = Attributes::new();
        attributes.insert("a".into(), Bytes::from_static(b"\x01value a"));
        attributes.insert("b".into(), Bytes::from(vec![7u8; 300]));
        let record = SessionRecord {
            created_at_ms: 1,
            last_accessed_at_ms: 2,
            idle_timeout_ms: 3,
            absolute_lifetime_ms: None,
            principal: Some("p".into()),
            version: 4,
            attributes,
        };
        let buffer = Bytes::from(record.encode().unwrap());
        let shared = SessionRecord::decode_shared(buffer.clone()).unwrap();
        assert_eq!(shared, SessionRecord::decode(&buffer).unwrap());
        assert_eq!(shared, record);
        let value = shared.attributes.get("b").unwrap();
        let (base, start) = (buffer.as_ptr() as usize, value.as_ptr() as usize);
        assert!(
            start >= base && start + value.len() <= base + buffer.len(),
            "not a slice"
        );
        // Outside a shared decode, values are copies.
        let copied = SessionRecord::decode(&buffer).unwrap();
        let value = copied.attributes.get("b").unwrap();
        let start = value.as_ptr() as usize;
        assert!(start < base || start >= base + buffer.len());
        // Garbage still fails cleanly.
        assert!(SessionRecord::decode_shared(Bytes::from_static(b"\x01\xc1")).is_err());
    }
}
