//! The one list of cases. Everything else (the `CASES` table, the test macro) is generated from
//! it, so a case cannot be registered in one place and forgotten in another.

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
    /// `StoreFixture::can_write_raw`.
    RawWrites,
    /// `StoreFixture::raw_shapes` is not empty: the fixture can leave stored data of other
    /// shapes than a corrupt record (a foreign value type at the key, invalid UTF-8 in a text
    /// field).
    RawShapes,
}

/// Expands `$callback! { { $args } <the case list> }`. Internal: use
/// [`conformance_suite!`](crate::conformance_suite) or [`CASES`](crate::CASES).
#[doc(hidden)]
#[macro_export]
macro_rules! __with_cases {
    ($callback:path { $($args:tt)* }) => {
        $callback! { { $($args)* }
            /// A created session is found by its id with its attributes and metadata.
            create_then_find_round_trips: Nothing,
            /// Create marks the session stored and clears its pending changes.
            create_marks_session_persisted: Nothing,
            /// Create never overwrites: a taken id is replaced by a fresh one, the stored session stays.
            create_never_overwrites_existing: Nothing,
            /// Creating an already created session is InvalidInput and writes nothing.
            create_twice_is_invalid_input: Nothing,
            /// Find of an id that was never stored is None.
            find_missing_is_none: Nothing,
            /// Hostile id texts are rejected by parsing, before any I/O; unknown valid ids are None/NotFound/Ok.
            hostile_ids_are_rejected_before_io: Nothing,
            /// Find never writes: it does not extend the expiry.
            find_does_not_extend_expiry: Nothing,
            /// Typed attributes of many shapes round-trip exactly.
            attribute_types_round_trip: Nothing,
            /// Attribute names with SQL, glob and non-ASCII text are stored as opaque data.
            hostile_attribute_names_round_trip: Nothing,
            /// A stored attribute that is not the requested type is a Decode error; others still load.
            undecodable_attribute_is_a_decode_error: Nothing,
            /// Save writes set attributes and deletes removed ones.
            save_writes_sets_and_removals: Nothing,
            /// Save of a never-created session is NotFound and writes nothing.
            save_of_new_session_is_not_found: Nothing,
            /// Two copies changing different attributes both keep their change.
            save_merges_different_attributes: Nothing,
            /// Two copies changing the same attribute: the later save wins.
            save_same_attribute_later_wins: Nothing,
            /// A removal and a concurrent set of another attribute both apply.
            save_merges_removal_with_other_set: Nothing,
            /// Every save increments the stored version and the session's version.
            save_increments_version: Nothing,
            /// Optimistic save of a stale copy is Conflict and writes nothing.
            optimistic_save_of_stale_copy_conflicts: Nothing,
            /// Optimistic save of a current copy succeeds and increments the version.
            optimistic_save_of_current_copy_succeeds: Nothing,
            /// A touch does not change the version, so it never causes an optimistic conflict.
            touch_does_not_cause_optimistic_conflict: Nothing,
            /// Save of a deleted session is NotFound and does not resurrect it.
            save_after_delete_does_not_resurrect: Nothing,
            /// Save of an expired session is NotFound and does not resurrect it.
            save_after_expiry_does_not_resurrect: Nothing,
            /// Save refreshes the expiry.
            save_extends_expiry: Nothing,
            /// A save without changes still refreshes the expiry.
            save_without_changes_extends_expiry: Nothing,
            /// Save mode OnSet writes only attributes that were set, not ones merely read.
            save_mode_on_set_skips_read_attributes: Nothing,
            /// Save mode OnGet writes back attributes that were read.
            save_mode_on_get_writes_read_attributes: Nothing,
            /// Save mode Always writes every attribute of the copy.
            save_mode_always_writes_all_attributes: Nothing,
            /// Changed idle timeout and principal are stored by save.
            save_stores_metadata_changes: Nothing,
            /// Metadata changes of one copy survive a save of another copy that did not change them.
            save_keeps_metadata_it_did_not_change: Nothing,
            /// A session is live before its idle deadline and absent after it.
            idle_timeout_boundary: Nothing,
            /// The absolute lifetime ends a session however recently it was used.
            absolute_lifetime_caps_activity: Nothing,
            /// Touch extends the idle deadline.
            touch_extends_expiry: Nothing,
            /// Touch leaves attributes and version untouched.
            touch_does_not_rewrite_attributes: Nothing,
            /// Touch of a missing or expired session is NotFound and creates nothing.
            touch_of_missing_session_is_not_found: Nothing,
            /// The stored deadline is last access + idle timeout, as reported by expires_at.
            expires_at_reports_the_deadline: Nothing,
            /// Delete removes the session and any loaded copy can no longer save.
            delete_removes_session: Nothing,
            /// Delete is idempotent.
            delete_is_idempotent: Nothing,
            /// Delete by key removes the session; repeated, it is a no-op.
            delete_by_key_removes_session: Nothing,
            /// change_id moves the session to a new id; the old id stops working.
            change_id_moves_session: Nothing,
            /// change_id keeps pending changes pending; the next save writes them under the new id.
            change_id_keeps_pending_changes: Nothing,
            /// A copy still holding the old id cannot save after change_id.
            change_id_old_copy_cannot_save: Nothing,
            /// change_id of a never-created session only assigns a fresh id.
            change_id_of_new_session_is_local: Nothing,
            /// change_id of a deleted session is NotFound.
            change_id_of_deleted_session_is_not_found: Nothing,
            /// find_by_principal lists exactly the principal's live sessions, as keys and metadata.
            principal_lists_its_sessions: PrincipalIndex,
            /// delete_by_principal removes every session of the principal and no other.
            principal_delete_removes_all_its_sessions: PrincipalIndex,
            /// Expired sessions leave the principal index.
            principal_index_drops_expired_sessions: PrincipalIndex,
            /// A changed or cleared principal moves the session in the index.
            principal_change_moves_index_entry: PrincipalIndex,
            /// Deleted sessions leave the principal index.
            principal_index_drops_deleted_sessions: PrincipalIndex,
            /// After change_id the index lists the new key, not the old one.
            principal_index_follows_change_id: PrincipalIndex,
            /// Hostile principal names match nothing but themselves; bad ones are InvalidInput.
            hostile_principal_names_are_opaque: PrincipalIndex,
            /// A principal set or changed by a save is stored exactly as given (spaces, quotes, non-ASCII) and listed under that name only.
            principal_set_by_save_is_stored_exactly: PrincipalIndex,
            /// A store without a principal index says Unsupported.
            principal_index_unsupported_is_reported: NoPrincipalIndex,
            /// Too many attributes is TooLarge at insert and nothing is written.
            too_many_attributes_is_too_large: Nothing,
            /// An oversized value is TooLarge at insert and nothing is written.
            oversized_session_is_too_large: Nothing,
            /// A save whose merge with the stored session exceeds the size limit is TooLarge and writes nothing.
            merged_size_over_limit_is_too_large: Nothing,
            /// A merged save that removes what another copy does not need counts the removal: it fits the limit.
            merged_size_counts_removals: Nothing,
            /// Bad attribute and principal names are InvalidInput.
            invalid_names_are_invalid_input: Nothing,
            /// Undecodable stored bytes make the session absent, without error or panic.
            corrupt_record_is_absent: RawWrites,
            /// A corrupt record can be deleted, save over it is NotFound, touch does not make it readable, and the store keeps working.
            corrupt_record_does_not_break_the_store: RawWrites,
            /// A corrupt record is absent for find, touch, save and change_id (never a store failure), and delete removes it from the server.
            corrupt_record_is_absent_for_every_method: RawWrites,
            /// The principal listing leaves out what find cannot decode, and log-out-everywhere removes it from the server.
            corrupt_sessions_are_not_listed_and_are_logged_out: PrincipalIndex & RawWrites,
            /// Stored data of a foreign shape (another value type at the key, invalid UTF-8 in a text field) is absent for every method and delete removes it.
            foreign_shapes_are_absent_and_deletable: RawShapes,
            /// 100 tasks saving different attributes of one session lose none.
            concurrent_savers_lose_no_attribute: Nothing,
            /// Saves and touches racing a delete never bring the session back.
            concurrent_writers_never_resurrect_a_deleted_session: Nothing,
            /// Optimistic increments from many tasks with retry on Conflict count exactly.
            concurrent_optimistic_increments_are_exact: Nothing,
            /// Two repositories on one store (two service instances) see each other's writes.
            two_instances_share_sessions: Nothing,
            /// An instance on JSON reads and writes sessions of an instance on MessagePack.
            two_instances_with_different_codecs: Nothing,
            /// An instance that read a session sees another instance's later touch, save and delete.
            instance_sees_later_writes_of_another: Nothing,
            /// Create, change_id and delete emit Created, IdChanged and Deleted.
            lifecycle_events_are_emitted: LifecycleEvents,
            /// Every session past its deadline is reported as Expired.
            expiry_events_are_emitted: ExpiryEvents,
            /// A store without events says Unsupported.
            events_unsupported_is_reported: NoEvents,
        }
    };
}

/// Builds [`CASES`](crate::CASES) from the list.
#[doc(hidden)]
#[macro_export]
macro_rules! __case_table {
    ({} $( $(#[doc = $doc:literal])* $name:ident : $($needs:ident)&+, )*) => {
        /// Every conformance case, in registration order.
        pub static CASES: &[$crate::Case] = &[
            $( $crate::Case {
                name: stringify!($name),
                doc: concat!($($doc),*),
                needs: &[$($crate::Needs::$needs),+],
                run: |fixture| ::std::boxed::Box::pin($crate::cases::$name(fixture)),
            }, )*
        ];
    };
}
