//! Rows to records and records to statement parameters.

use session_core::raw::{
    decode_attributes_shared, report_undecodable, SessionRecord, UndecodableRecord,
};
use session_core::{Bytes, Result, SessionKey};
use sqlx::any::AnyRow;
use sqlx::Row;

use crate::dialect::{MAX_STEP_MS, STEP_DIVISOR};
use crate::error::map;

pub(crate) fn ms(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

pub(crate) fn unsigned(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// The stored record of `key` from a row of `find`/`find_for_merge`, or `None` if its bytes
/// cannot be decoded (reported).
pub(crate) fn record_from_row(key: &SessionKey, row: &AnyRow) -> Result<Option<SessionRecord>> {
    // The statements select the principal as hex text (see `Statements::new`).
    let principal_hex: Option<String> = row.try_get(4).map_err(map)?;
    let principal = match principal_hex.map(|text| {
        hex::decode(text)
            .map_err(|error| error.to_string())
            .and_then(|bytes| String::from_utf8(bytes).map_err(|error| error.to_string()))
    }) {
        None => None,
        Some(Ok(principal)) => Some(principal),
        Some(Err(error)) => {
            report_undecodable(key, &UndecodableRecord::new(format!("principal: {error}")));
            return Ok(None);
        }
    };
    let attributes: Vec<u8> = row.try_get(6).map_err(map)?;
    // The attributes keep the column's buffer: their values are slices of it, not copies.
    let attributes = match decode_attributes_shared(Bytes::from(attributes)) {
        Ok(attributes) => attributes,
        Err(error) => {
            report_undecodable(key, &error);
            return Ok(None);
        }
    };
    Ok(Some(SessionRecord {
        created_at_ms: unsigned(row.try_get(0).map_err(map)?),
        last_accessed_at_ms: unsigned(row.try_get(1).map_err(map)?),
        idle_timeout_ms: unsigned(row.try_get(2).map_err(map)?),
        absolute_lifetime_ms: row.try_get::<Option<i64>, _>(3).map_err(map)?.map(unsigned),
        principal,
        version: unsigned(row.try_get(5).map_err(map)?),
        attributes,
    }))
}

pub(crate) type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;

/// The `expires_at` a write stores: the deadline rounded up to a step of a sixteenth of the
/// idle timeout (at most a minute). Consecutive saves of a session then mostly store the same
/// value, so they change no indexed column (see the `store` module); the touch statement
/// computes the same value in SQL ([`Dialect`](crate::dialect::Dialect)'s `purge_bound`).
pub(crate) fn purge_bound(record: &SessionRecord) -> u64 {
    let step = (record.idle_timeout_ms / STEP_DIVISOR).clamp(1, MAX_STEP_MS);
    record.deadline_ms().div_ceil(step).saturating_mul(step)
}

/// Binds the columns every write of a whole record sets, in the order the statements of
/// `dialect.rs` list them: last access, idle timeout, absolute lifetime, purge bound, principal,
/// version, attributes.
///
/// The attributes are bound borrowed: sqlx copies a bound `Vec` once more when it encodes it,
/// and a large session's attributes are tens of kilobytes.
pub(crate) fn bind_record<'q>(
    query: AnyQuery<'q>,
    record: &SessionRecord,
    attributes: &'q [u8],
) -> AnyQuery<'q> {
    query
        .bind(ms(record.last_accessed_at_ms))
        .bind(ms(record.idle_timeout_ms))
        .bind(record.absolute_lifetime_ms.map(ms))
        .bind(ms(purge_bound(record)))
        .bind(record.principal.as_ref().map(|p| p.as_bytes().to_vec()))
        .bind(ms(record.version))
        .bind(attributes)
}
