//! What a case can need. The cases themselves, with their needs, are in [`cases`](crate::cases).

/// What a case needs beyond the core contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    /// Nothing: every store runs it.
    Nothing,
    /// `Capabilities::principal_index`.
    PrincipalIndex,
    /// No principal index: checks that the store says so.
    NoPrincipalIndex,
    /// `Capabilities::lifecycle_events`.
    LifecycleEvents,
    /// `Capabilities::expiry_events`.
    ExpiryEvents,
    /// No events at all: checks that the store says so.
    NoEvents,
    /// `Capabilities::import`.
    Import,
    /// No import: checks that the store says so.
    NoImport,
    /// `StoreFixture::can_write_raw`.
    RawWrites,
    /// `StoreFixture::raw_shapes` is not empty: the fixture can leave stored data of other
    /// shapes than a corrupt record (a foreign value type at the key, invalid UTF-8 in a text
    /// field).
    RawShapes,
}
