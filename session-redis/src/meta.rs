//! The layout of a session hash: the metadata field, the principal and index-score fields, and
//! the attributes (described in the `scripts` module).

use std::sync::Arc;

use session_core::raw::{Attributes, SessionRecord, UndecodableRecord};
use session_core::Bytes;

/// Stored values of one session hash, split into metadata and attributes.
pub(crate) type Fields = Vec<(Vec<u8>, Vec<u8>)>;

/// The `\1m` field of a session hash (layout in the `scripts` module).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Meta {
    pub(crate) version: u64,
    pub(crate) created: u64,
    pub(crate) accessed: u64,
    pub(crate) idle: u64,
    pub(crate) absolute: Option<u64>,
    pub(crate) size: u64,
    pub(crate) count: u64,
}

impl Meta {
    pub(crate) const FIELD: &'static [u8] = b"\x01m";
    pub(crate) const PRINCIPAL: &'static [u8] = b"\x01p";
    pub(crate) const INDEX_SCORE: &'static [u8] = b"\x01x";

    pub(crate) fn of(record: &SessionRecord) -> Self {
        Meta {
            version: record.version,
            created: record.created_at_ms,
            accessed: record.last_accessed_at_ms,
            idle: record.idle_timeout_ms,
            absolute: record.absolute_lifetime_ms,
            size: record.attributes_size() as u64,
            count: record.attributes.len() as u64,
        }
    }

    pub(crate) fn parse(bytes: &[u8]) -> Option<Self> {
        let mut words = std::str::from_utf8(bytes).ok()?.split(' ');
        // A missing word becomes "", which no field accepts.
        let [version, created, accessed, idle, absolute, size, count] =
            std::array::from_fn(|_| words.next().unwrap_or(""));
        if words.next().is_some() {
            return None;
        }
        let number = |word: &str| word.parse::<u64>().ok();
        Some(Meta {
            version: number(version)?,
            created: number(created)?,
            accessed: number(accessed)?,
            idle: number(idle)?,
            absolute: match absolute {
                "-" => None,
                word => Some(number(word)?),
            },
            size: number(size)?,
            count: number(count)?,
        })
    }

    pub(crate) fn to_field(self) -> String {
        let mut field = String::with_capacity(96);
        words(
            &mut field,
            &[
                Some(self.version),
                Some(self.created),
                Some(self.accessed),
                Some(self.idle),
                self.absolute,
                Some(self.size),
                Some(self.count),
            ],
        );
        field
    }

    /// Whether this is `other` apart from the last access time.
    pub(crate) fn same_but_access(&self, other: &Meta) -> bool {
        Meta {
            accessed: other.accessed,
            ..*self
        } == *other
    }
}

/// Parses a session hash; `Err` if anything is missing or malformed.
pub(crate) fn parse_hash(fields: Fields) -> Result<SessionRecord, UndecodableRecord> {
    let mut meta = None;
    let mut principal = None;
    let mut attributes = Attributes::new();
    for (name, value) in fields {
        if name == Meta::FIELD {
            meta = Some(value);
        } else if name == Meta::PRINCIPAL {
            principal = Some(
                String::from_utf8(value)
                    .map_err(|_| UndecodableRecord::new("principal is not UTF-8"))?,
            );
        } else if name.first() == Some(&1) {
            // Metadata of a later layout: not an attribute.
        } else {
            let name = String::from_utf8(name)
                .map_err(|_| UndecodableRecord::new("attribute name is not UTF-8"))?;
            attributes.insert(Arc::<str>::from(name), Bytes::from(value));
        }
    }
    let meta = meta
        .as_deref()
        .and_then(Meta::parse)
        .ok_or_else(|| UndecodableRecord::new("session metadata is missing or malformed"))?;
    Ok(SessionRecord {
        created_at_ms: meta.created,
        last_accessed_at_ms: meta.accessed,
        idle_timeout_ms: meta.idle,
        absolute_lifetime_ms: meta.absolute,
        principal,
        version: meta.version,
        attributes,
    })
}

/// The hash fields of a whole record, metadata first.
pub(crate) fn record_fields(record: &SessionRecord) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut fields = vec![(
        Meta::FIELD.to_vec(),
        Meta::of(record).to_field().into_bytes(),
    )];
    if let Some(principal) = &record.principal {
        fields.push((Meta::PRINCIPAL.to_vec(), principal.as_bytes().to_vec()));
        fields.push((
            Meta::INDEX_SCORE.to_vec(),
            index_score(record).to_string().into_bytes(),
        ));
    }
    for (name, value) in record.attributes.iter() {
        fields.push((name.as_bytes().to_vec(), value.to_vec()));
    }
    fields
}

/// Appends `values` to `out` as space-separated decimals, `-` for `None`: the metadata field and
/// the save script's packed arguments. Written with `itoa`, not `format!`, which showed in the
/// client's profile at a few per save.
pub(crate) fn words(out: &mut String, values: &[Option<u64>]) {
    let mut digits = itoa::Buffer::new();
    for (i, value) in values.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        match value {
            Some(value) => out.push_str(digits.format(*value)),
            None => out.push('-'),
        }
    }
}

/// The score of a session in its principal index (the `\x01x` field, see the `scripts`
/// module): its deadline plus a quarter of its idle timeout, so that saves and touches need
/// to re-add it only once the deadline has moved past that.
pub(crate) fn index_score(record: &SessionRecord) -> u64 {
    record.deadline_ms() + record.idle_timeout_ms / 4
}

#[cfg(test)]
mod tests {
    use super::Meta;

    #[test]
    fn metadata_field_round_trips_and_refuses_malformed_text() {
        let meta = Meta {
            version: 7,
            created: 1_795_300_000_000,
            accessed: 1_795_300_001_000,
            idle: 1_800_000,
            absolute: None,
            size: 1_100,
            count: 10,
        };
        assert_eq!(Meta::parse(meta.to_field().as_bytes()), Some(meta));
        let capped = Meta {
            absolute: Some(3_600_000),
            ..meta
        };
        assert_eq!(Meta::parse(capped.to_field().as_bytes()), Some(capped));
        for bad in [
            &b""[..],
            b"7 1 2 3 - 4",
            b"7 1 2 3 - 4 5 6",
            b"7 1 2 3 x 4 5",
            b"7 1 2 3  4 5",
            b"7 1 2 3 - 4 \xff",
        ] {
            assert_eq!(Meta::parse(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
