//! The layout of a session hash: the metadata field, the packed attributes, the principal and
//! index-score fields (described in the `scripts` module), and the reading of hashes written
//! by earlier versions (one field per attribute).

use session_core::raw::{
    decode_attributes_shared, encode_attributes, Attributes, SessionRecord, UndecodableRecord,
};
use session_core::{Bytes, Result};

/// Stored values of one session hash, as HGETALL returns them.
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
    /// The attributes are packed in the field `\1a<token>` ([`attributes_field`]), named in
    /// the metadata's last word `p<token>`; `None` for a hash written by an earlier version,
    /// with a field per attribute.
    pub(crate) attributes: Option<u64>,
}

impl Meta {
    pub(crate) const FIELD: &'static [u8] = b"\x01m";
    pub(crate) const ATTRIBUTES: &'static [u8] = b"\x01a";
    pub(crate) const PRINCIPAL: &'static [u8] = b"\x01p";
    pub(crate) const INDEX_SCORE: &'static [u8] = b"\x01x";

    /// The metadata of `record` as this version stores it, packed under `token`.
    pub(crate) fn of(record: &SessionRecord, token: u64) -> Self {
        Meta {
            version: record.version,
            created: record.created_at_ms,
            accessed: record.last_accessed_at_ms,
            idle: record.idle_timeout_ms,
            absolute: record.absolute_lifetime_ms,
            size: record.attributes_size() as u64,
            count: record.attributes.len() as u64,
            attributes: Some(token),
        }
    }

    pub(crate) fn parse(bytes: &[u8]) -> Option<Self> {
        let mut words = std::str::from_utf8(bytes).ok()?.split(' ');
        // A missing word becomes "", which no field accepts.
        let [version, created, accessed, idle, absolute, size, count] =
            std::array::from_fn(|_| words.next().unwrap_or(""));
        let attributes = match words.next() {
            None => None,
            Some(word) => Some(parse_token(word.strip_prefix('p')?)?),
        };
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
            attributes,
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
        if let Some(token) = self.attributes {
            field.push_str(" p");
            push_token(&mut field, token);
        }
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

/// A session hash as read: the record, and what a version-checked write of it compares.
#[derive(Debug)]
pub(crate) struct StoredHash {
    pub(crate) record: SessionRecord,
    pub(crate) meta: Meta,
    /// The metadata field up to and including its third space (`version created accessed `),
    /// as stored: the save script writes only while the stored field still starts with it.
    pub(crate) prefix: Vec<u8>,
    /// The `\1x` field, if any and numeric.
    pub(crate) index_score: Option<u64>,
}

/// Parses a session hash; `Err` if anything is missing or malformed.
///
/// A hash of this version has its attributes in the `\1a<token>` field its metadata names
/// (another `\1a…` field is a write that never committed, and is ignored). A hash written by
/// an earlier version has one field per attribute, and the first save rewrites it packed. A
/// hash with both (an earlier version's instance wrote attributes into a packed hash during a
/// rolling upgrade) keeps both, the per-field ones winning, and is read as the earlier layout,
/// so that its next save rewrites it.
pub(crate) fn parse_hash(mut fields: Fields) -> Result<StoredHash, UndecodableRecord> {
    let malformed = || UndecodableRecord::new("session metadata is missing or malformed");
    // The metadata first: it names the packed field, which the other fields are then
    // compared with in place (no list of candidates, no name built).
    let at = fields
        .iter()
        .position(|(name, _)| name == Meta::FIELD)
        .ok_or_else(malformed)?;
    let (_, meta_field) = fields.swap_remove(at);
    let mut meta = Meta::parse(&meta_field).ok_or_else(malformed)?;
    let packed_name = meta.attributes.map(attributes_field_bytes);
    let mut principal = None;
    let mut index_score = None;
    let mut packed = None;
    let mut loose = Vec::new();
    for (name, value) in fields {
        if name.starts_with(Meta::ATTRIBUTES) {
            if packed_name.is_some_and(|packed_name| name == packed_name) {
                packed = Some(value);
            }
        } else if name == Meta::PRINCIPAL {
            principal = Some(
                String::from_utf8(value)
                    .map_err(|_| UndecodableRecord::new("principal is not UTF-8"))?,
            );
        } else if name == Meta::INDEX_SCORE {
            index_score = std::str::from_utf8(&value)
                .ok()
                .and_then(|score| score.parse().ok());
        } else if name.first() == Some(&1) {
            // Metadata of a later layout: not an attribute.
        } else {
            loose.push((name, value));
        }
    }
    let mut attributes = match packed_name {
        Some(_) => {
            let value = packed
                .ok_or_else(|| UndecodableRecord::new("the packed attributes are missing"))?;
            decode_attributes_shared(Bytes::from(value))?
        }
        None => Attributes::new(),
    };
    if !loose.is_empty() {
        meta.attributes = None;
    }
    for (name, value) in loose {
        let name = String::from_utf8(name)
            .map_err(|_| UndecodableRecord::new("attribute name is not UTF-8"))?;
        attributes.insert(name.into(), Bytes::from(value));
    }
    let prefix_len = meta_field
        .iter()
        .enumerate()
        .filter(|(_, byte)| **byte == b' ')
        .nth(2)
        .map_or(meta_field.len(), |(at, _)| at + 1);
    let mut prefix = meta_field;
    prefix.truncate(prefix_len);
    Ok(StoredHash {
        record: SessionRecord {
            created_at_ms: meta.created,
            last_accessed_at_ms: meta.accessed,
            idle_timeout_ms: meta.idle,
            absolute_lifetime_ms: meta.absolute,
            principal,
            version: meta.version,
            attributes,
        },
        meta,
        prefix,
        index_score,
    })
}

/// The token of attributes a save passes to its script inline (see `scripts::run_staged`):
/// one field name for every such write, so that a save after an inline save rewrites the field
/// in place and its script spares the `HDEL` of the previous field (under callgrind, the
/// server's instructions per small save beyond an empty script with the same arguments went
/// from ~30,700 to ~26,700). Staged attributes, and creates, which the script
/// could not tell from an inline write of the same name, always get a fresh token
/// ([`next_token`](crate::store::RedisStore::next_token) never returns this one). Every write
/// still increments the version, which is what the near cache compares.
pub(crate) const INLINE_TOKEN: u64 = 0;

/// The name of the field that holds the attributes packed under `token`: `\1a` and the token
/// in 16 hex digits. Every write packs under a fresh token (see the `save` module).
pub(crate) fn attributes_field(token: u64) -> Vec<u8> {
    attributes_field_bytes(token).to_vec()
}

/// [`attributes_field`] without an allocation.
fn attributes_field_bytes(token: u64) -> [u8; 18] {
    let mut name = [0; 18];
    name[..2].copy_from_slice(Meta::ATTRIBUTES);
    // Eight bytes always fill the sixteen digits: it cannot fail.
    let encoded = hex::encode_to_slice(token.to_be_bytes(), &mut name[2..]);
    debug_assert!(encoded.is_ok());
    name
}

fn push_token(out: &mut String, token: u64) {
    use std::fmt::Write as _;
    let _ = write!(out, "{token:016x}");
}

fn parse_token(hex: &str) -> Option<u64> {
    if hex.is_empty() || hex.len() > 16 || !hex.bytes().all(|byte| byte.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

/// Appends the field/value pairs of a whole record but its attributes (which are staged, see
/// the `scripts` module) to `cmd`: metadata, and for a session with a principal the principal
/// and `index_score`.
pub(crate) fn push_metadata(
    cmd: &mut redis::Cmd,
    record: &SessionRecord,
    meta: Meta,
    index_score: u64,
) {
    cmd.arg(Meta::FIELD).arg(meta.to_field());
    if let Some(principal) = &record.principal {
        cmd.arg(Meta::PRINCIPAL)
            .arg(principal.as_str())
            .arg(Meta::INDEX_SCORE)
            .arg(index_score);
    }
}

/// The packed attributes of `record`.
pub(crate) fn packed_attributes(record: &SessionRecord) -> Result<Vec<u8>> {
    encode_attributes(&record.attributes)
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
    use super::{attributes_field, push_token, Meta};

    #[test]
    fn the_packed_field_name_is_the_token_in_sixteen_hex_digits() {
        for token in [0, 1, 0x00ab_cdef_0123_4567, u64::MAX] {
            let mut expected = String::from("\x01a");
            push_token(&mut expected, token);
            assert_eq!(attributes_field(token), expected.into_bytes());
        }
    }

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
            attributes: Some(0x00ab_cdef_0123_4567),
        };
        assert_eq!(Meta::parse(meta.to_field().as_bytes()), Some(meta));
        let capped = Meta {
            absolute: Some(3_600_000),
            ..meta
        };
        assert_eq!(Meta::parse(capped.to_field().as_bytes()), Some(capped));
        assert!(meta.to_field().ends_with(" 10 p00abcdef01234567"));
        let earlier = Meta {
            attributes: None,
            ..meta
        };
        assert_eq!(
            earlier.to_field(),
            "7 1795300000000 1795300001000 1800000 - 1100 10"
        );
        assert_eq!(Meta::parse(earlier.to_field().as_bytes()), Some(earlier));
        for bad in [
            &b""[..],
            b"7 1 2 3 - 4",
            b"7 1 2 3 - 4 5 6",
            b"7 1 2 3 - 4 5 p p",
            b"7 1 2 3 - 4 5 p",
            b"7 1 2 3 - 4 5 pxyz",
            b"7 1 2 3 - 4 5 p00000000000000001",
            b"7 1 2 3 x 4 5",
            b"7 1 2 3  4 5",
            b"7 1 2 3 - 4 \xff",
        ] {
            assert_eq!(Meta::parse(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
