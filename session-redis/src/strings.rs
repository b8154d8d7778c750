//! The string layout: one string per session. Where the server's `SET` can compare the value
//! it replaces (`SET … IFEQ`, Valkey 8.1 and later, Redis 8.4 and later) a save is one plain
//! command and no script; elsewhere a script compares the header (the `save_string` module).
//!
//! ```text
//! \1s<version> <created> <accessed> <idle> <absolute> <score> <principal length>\n<principal><attributes>
//! ```
//!
//! The header words are decimal and space-separated, like the hash layout's metadata field:
//! times in epoch ms, durations in ms, `absolute` is `-` without an absolute lifetime.
//! `accessed` and `score` are written with 16 digits, so that a touch (a script) rewrites them
//! in place with `SETRANGE` and leaves the rest of the value, attributes included, where it is.
//! `score` is the session's score in its principal index, as the hash layout's `\1x` field
//! (`-` for a session without a principal, whose principal length is `-` too). The attributes
//! follow the principal, packed by core's attribute encoding (format byte first).
//!
//! A save with `IFEQ` compares the whole value, so a match means the stored session is byte for
//! byte the one the saver merged into, touches included. The script compares the header, which
//! every save (a new version) and every touch (a new access time) rewrites: as strict.

use session_core::raw::{
    decode_attributes_shared, encode_attributes, SessionRecord, UndecodableRecord,
};
use session_core::{Bytes, Result};

/// The first bytes of every value of this layout.
pub(crate) const MAGIC: &[u8] = b"\x01s";

/// Digits of the words a touch rewrites in place.
const FIXED_DIGITS: usize = 16;

/// Bytes of the longest header, newline included (seven words of at most 20 digits), which
/// the scripts read with one `GETRANGE` (`0 148`).
pub(crate) const HEADER_MAX: usize = 2 + 7 * 21;

/// A session value as read: the record, its index score, and the value itself.
#[derive(Debug)]
pub(crate) struct StoredString {
    pub(crate) record: SessionRecord,
    pub(crate) index_score: Option<u64>,
    pub(crate) value: Bytes,
}

/// The value of `record`, with `index_score` for a session with a principal.
pub(crate) fn encode(record: &SessionRecord, index_score: u64) -> Result<Vec<u8>> {
    let attributes = encode_attributes(&record.attributes)?;
    let principal = record.principal.as_deref().unwrap_or_default();
    let mut out = Vec::with_capacity(HEADER_MAX + principal.len() + attributes.len());
    out.extend_from_slice(MAGIC);
    let mut digits = itoa::Buffer::new();
    let mut word = |out: &mut Vec<u8>, value: Option<u64>, fixed: bool| match value {
        Some(value) => {
            let text = digits.format(value);
            if fixed {
                out.extend(std::iter::repeat_n(
                    b'0',
                    FIXED_DIGITS.saturating_sub(text.len()),
                ));
            }
            out.extend_from_slice(text.as_bytes());
        }
        None => out.push(b'-'),
    };
    word(&mut out, Some(record.version), false);
    out.push(b' ');
    word(&mut out, Some(record.created_at_ms), false);
    out.push(b' ');
    word(&mut out, Some(record.last_accessed_at_ms), true);
    out.push(b' ');
    word(&mut out, Some(record.idle_timeout_ms), false);
    out.push(b' ');
    word(&mut out, record.absolute_lifetime_ms, false);
    out.push(b' ');
    let indexed = record.principal.is_some();
    word(&mut out, indexed.then_some(index_score), true);
    out.push(b' ');
    word(&mut out, indexed.then_some(principal.len() as u64), false);
    out.push(b'\n');
    out.extend_from_slice(principal.as_bytes());
    out.extend_from_slice(&attributes);
    Ok(out)
}

/// The header of a value of this layout.
struct Header {
    version: u64,
    created: u64,
    accessed: u64,
    idle: u64,
    absolute: Option<u64>,
    index_score: Option<u64>,
    principal_len: Option<u64>,
    /// Where the principal starts (after the newline).
    start: usize,
}

fn malformed() -> UndecodableRecord {
    UndecodableRecord::new("not a session value of the string layout")
}

fn parse_header(value: &[u8]) -> Result<Header, UndecodableRecord> {
    let rest = value.strip_prefix(MAGIC).ok_or_else(malformed)?;
    let end = rest
        .iter()
        .take(HEADER_MAX - MAGIC.len())
        .position(|byte| *byte == b'\n')
        .ok_or_else(malformed)?;
    let mut words = std::str::from_utf8(&rest[..end])
        .map_err(|_| malformed())?
        .split(' ');
    let mut next = || words.next().ok_or_else(malformed);
    let number = |word: &str| {
        if word.is_empty() || !word.bytes().all(|byte| byte.is_ascii_digit()) {
            return Err(malformed());
        }
        word.parse::<u64>().map_err(|_| malformed())
    };
    let optional = |word: &str| match word {
        "-" => Ok(None),
        word => number(word).map(Some),
    };
    // The touch script rewrites the fixed words in place, and refuses a value where they are
    // not fixed: so does the reader.
    fn fixed(word: &str) -> Result<&str, UndecodableRecord> {
        if word.len() == FIXED_DIGITS || word == "-" {
            Ok(word)
        } else {
            Err(malformed())
        }
    }
    let header = Header {
        version: number(next()?)?,
        created: number(next()?)?,
        accessed: number(fixed(next()?)?)?,
        idle: number(next()?)?,
        absolute: optional(next()?)?,
        index_score: optional(fixed(next()?)?)?,
        principal_len: optional(next()?)?,
        start: MAGIC.len() + end + 1,
    };
    if words.next().is_some() || header.index_score.is_some() != header.principal_len.is_some() {
        return Err(malformed());
    }
    Ok(header)
}

/// The index score in a value of this layout (`None` without a principal); `Err` if it is not
/// one. Reads the header only.
pub(crate) fn index_score(value: &[u8]) -> Result<Option<u64>, UndecodableRecord> {
    parse_header(value).map(|header| header.index_score)
}

/// For a near-cache copy of a session stored as `cached`: whether `fetched`, the first bytes of
/// the value stored now (at least its header), is the same session apart from what a touch
/// rewrites (access time, index score). Then the access time stored now, and the value stored
/// now: `cached` under the fetched header.
pub(crate) fn revalidate(cached: &Bytes, fetched: &[u8]) -> Option<(u64, Bytes)> {
    let old = parse_header(cached).ok()?;
    let new = parse_header(fetched).ok()?;
    let same = |header: &Header| {
        (
            header.version,
            header.created,
            header.idle,
            header.absolute,
            header.principal_len,
        )
    };
    if same(&old) != same(&new) {
        return None;
    }
    let current = if cached[..old.start] == fetched[..new.start] {
        cached.clone()
    } else {
        let mut current = Vec::with_capacity(new.start + cached.len() - old.start);
        current.extend_from_slice(&fetched[..new.start]);
        current.extend_from_slice(&cached[old.start..]);
        Bytes::from(current)
    };
    Some((new.accessed, current))
}

/// Parses a value of this layout; `Err` if it is not one (another writer's string).
pub(crate) fn parse(value: Bytes) -> Result<StoredString, UndecodableRecord> {
    let header = parse_header(&value)?;
    let principal_len =
        usize::try_from(header.principal_len.unwrap_or(0)).map_err(|_| malformed())?;
    let body = header
        .start
        .checked_add(principal_len)
        .filter(|body| *body <= value.len())
        .ok_or_else(malformed)?;
    let principal = match header.principal_len {
        None => None,
        Some(_) => Some(
            std::str::from_utf8(&value[header.start..body])
                .map_err(|_| UndecodableRecord::new("principal is not UTF-8"))?
                .to_owned(),
        ),
    };
    let attributes = decode_attributes_shared(value.slice(body..))?;
    Ok(StoredString {
        record: SessionRecord {
            created_at_ms: header.created,
            last_accessed_at_ms: header.accessed,
            idle_timeout_ms: header.idle,
            absolute_lifetime_ms: header.absolute,
            principal,
            version: header.version,
            attributes,
        },
        index_score: header.index_score,
        value,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use session_core::raw::{Attributes, SessionRecord};
    use session_core::Bytes;

    use super::{encode, parse};

    fn record(principal: Option<&str>, absolute: Option<u64>) -> SessionRecord {
        let mut attributes = Attributes::new();
        attributes.insert(Arc::from("cart"), Bytes::from_static(b"\x01\x92\x01\x02"));
        attributes.insert(Arc::from("user"), Bytes::from_static(b"\x01\xa5morris"));
        SessionRecord {
            created_at_ms: 1_795_300_000_000,
            last_accessed_at_ms: 1_795_300_001_000,
            idle_timeout_ms: 1_800_000,
            absolute_lifetime_ms: absolute,
            principal: principal.map(Into::into),
            version: 7,
            attributes,
        }
    }

    #[test]
    fn values_round_trip_with_and_without_principal() {
        for (principal, absolute) in [
            (None, None),
            (Some("alice"), Some(3_600_000)),
            (Some(""), None),
            (Some("ü\n "), None),
        ] {
            let record = record(principal, absolute);
            let value = encode(&record, 1_795_300_451_000).unwrap();
            let stored = parse(Bytes::from(value.clone())).unwrap();
            assert_eq!(stored.record, record);
            assert_eq!(stored.index_score, principal.map(|_| 1_795_300_451_000));
            assert_eq!(&stored.value[..], &value[..]);
        }
    }

    #[test]
    fn the_words_a_touch_rewrites_have_a_fixed_width() {
        let value = encode(&record(Some("alice"), None), 1_795_300_451_000).unwrap();
        let header =
            String::from_utf8_lossy(&value[..value.iter().position(|b| *b == b'\n').unwrap()])
                .into_owned();
        assert_eq!(
            header,
            "\x01s7 1795300000000 0001795300001000 1800000 - 0001795300451000 5"
        );
        let empty = SessionRecord {
            attributes: Attributes::new(),
            version: 0,
            ..record(None, None)
        };
        let value = encode(&empty, 0).unwrap();
        assert!(value.starts_with(b"\x01s0 1795300000000 0001795300001000 1800000 - - -\n"));
        assert_eq!(parse(Bytes::from(value)).unwrap().record, empty);
    }

    #[test]
    fn a_cached_value_is_the_stored_one_under_a_touched_header() {
        let record = record(Some("alice"), None);
        let cached = Bytes::from(encode(&record, 1_795_300_451_000).unwrap());
        let same = super::revalidate(&cached, &cached[..super::HEADER_MAX.min(cached.len())]);
        assert_eq!(same, Some((record.last_accessed_at_ms, cached.clone())));

        let touched_record = SessionRecord {
            last_accessed_at_ms: record.last_accessed_at_ms + 5_000,
            ..record.clone()
        };
        let touched = encode(&touched_record, 1_795_300_999_000).unwrap();
        let (accessed, current) = super::revalidate(
            &cached,
            &touched[..40.max(touched.iter().position(|b| *b == b'\n').unwrap() + 1)],
        )
        .unwrap();
        assert_eq!(accessed, touched_record.last_accessed_at_ms);
        assert_eq!(
            &current[..],
            &touched[..],
            "the stored bytes, for the save's comparison"
        );

        let saved = SessionRecord {
            version: record.version + 1,
            ..record.clone()
        };
        let saved = encode(&saved, 1_795_300_451_000).unwrap();
        assert_eq!(super::revalidate(&cached, &saved), None, "another version");
        assert_eq!(
            super::revalidate(&cached, b"\x01s7 1"),
            None,
            "a cut header"
        );
    }

    #[test]
    fn foreign_and_damaged_values_are_undecodable() {
        let good = encode(&record(Some("alice"), None), 9).unwrap();
        let newline = good.iter().position(|b| *b == b'\n').unwrap();
        let mut cases: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"a foreign writer's string".to_vec(),
            b"\x01s".to_vec(),
            b"\x01s1 2 3 4 - - -".to_vec(),
            b"\x01s1 2 3 4 - - - 5\n".to_vec(),
            b"\x01s1 2 3 4 - - 5\nabcde".to_vec(),
            b"\x01s1 2 3 4 - 9 99\nab".to_vec(),
            b"\x01s1 +2 3 4 - - -\n".to_vec(),
            b"\x01s1 2 0000000000000003 4 - 0000000000000009 18446744073709551616\nab".to_vec(),
            b"\x01s1 2 3 4 - - -\n\x01\x80".to_vec(),
            good[..newline + 3].to_vec(),
            good[..good.len() - 1].to_vec(),
        ];
        let mut bad_utf8 = good.clone();
        bad_utf8[newline + 1] = 0xff;
        cases.push(bad_utf8);
        for case in cases {
            assert!(
                parse(Bytes::from(case.clone())).is_err(),
                "{:?}",
                String::from_utf8_lossy(&case)
            );
        }
    }
}
