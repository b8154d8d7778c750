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
