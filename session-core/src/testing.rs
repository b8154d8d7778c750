//! Hooks for tests only (feature `testing`): the conformance suite's corrupt-data cases and
//! chosen-id collisions. Never enabled by an application.

use async_trait::async_trait;

use crate::error::Result;
use crate::id::SessionKey;

/// Writes bytes where a store keeps a session, through the store's own client and without
/// any encoding or check, as a foreign or broken writer would. Stores implement it behind
/// their own `testing` feature.
#[async_trait]
pub trait WriteRaw {
    /// Replaces what the store holds for `key` (its record, or the part of its layout where
    /// the metadata lives) by `bytes`. The session's server-side expiry, if the store sets
    /// one, is at least a minute away.
    async fn write_raw(&self, key: &SessionKey, bytes: &[u8]) -> Result<()>;
}

/// Foreign stored data beyond a corrupt record, for the suite's "undecodable is absent" cases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RawShape {
    /// The key holds a value of another type than the store writes (a Redis string where a
    /// hash belongs).
    ForeignType,
    /// The principal, a text field, holds bytes that are not UTF-8.
    InvalidUtf8Principal,
}

/// Writes [`RawShape`]s, for stores whose server can hold them.
#[async_trait]
pub trait WriteRawShape {
    /// Leaves data of `shape` where the session of `key` (which exists) is kept.
    async fn write_raw_shape(&self, key: &SessionKey, shape: RawShape) -> Result<()>;
}
