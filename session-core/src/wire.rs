//! A direct reader of the two MessagePack layouts this crate writes: a [`SessionRecord`] (an
//! array of its seven fields) and an attribute map (names to byte strings).
//!
//! Every store's read decodes one of them. Through serde each value asked a thread-local for
//! the buffer it may slice, and each name was UTF-8 checked and hashed to find its shared
//! copy. This reader walks the bytes once with the buffer in hand, and shares each name with
//! the one this thread read at the same position of the map before (sessions of one
//! application carry the same names in the same order), so a name that matches costs one
//! comparison. Measured with callgrind, decoding a record and an attribute map of 50 × 400 B
//! took 74,000 instructions through serde and 25,000 here; of 10 × 100 B, 16,000 and 5,900.
//!
//! It accepts only what the encoder writes (unsigned integers, `nil` for `None`, `str` names
//! in strictly increasing order, `bin` values) and answers `None` for anything else, which
//! the caller then hands to serde: serde stays the authority on every other input, so the two
//! paths cannot disagree on what a stored value means (a test feeds both mutated records).

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;

use crate::attributes::{attribute_size, intern, Attributes, INTERNED_NAME_BYTES};
use crate::record::{SessionRecord, ATTRIBUTES_FORMAT_V1, RECORD_FORMAT_V1};

/// Reads `source` as [`SessionRecord::encode`] wrote it (its format byte, then the record);
/// values come from `value(range of source)`.
pub(crate) fn record(
    source: &[u8],
    value: &dyn Fn(Range<usize>) -> Bytes,
) -> Option<SessionRecord> {
    let mut reader = Reader::after_format(source, RECORD_FORMAT_V1)?;
    if reader.array_len()? != 7 {
        return None;
    }
    Some(SessionRecord {
        created_at_ms: reader.uint()?,
        last_accessed_at_ms: reader.uint()?,
        idle_timeout_ms: reader.uint()?,
        absolute_lifetime_ms: match reader.nil()? {
            true => None,
            false => Some(reader.uint()?),
        },
        principal: match reader.nil()? {
            true => None,
            false => Some(reader.str()?.to_owned()),
        },
        version: reader.uint()?,
        attributes: reader.attributes(value)?,
    })
}

/// Reads `source` as [`encode_attributes`](crate::raw::encode_attributes) wrote it (see
/// [`record`]).
pub(crate) fn attributes(
    source: &[u8],
    value: &dyn Fn(Range<usize>) -> Bytes,
) -> Option<Attributes> {
    Reader::after_format(source, ATTRIBUTES_FORMAT_V1)?.attributes(value)
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    /// A reader past `source`'s first byte, if that is `format`.
    fn after_format(source: &'a [u8], format: u8) -> Option<Self> {
        (source.first() == Some(&format)).then_some(Reader {
            bytes: source,
            at: 1,
        })
    }

    fn byte(&mut self) -> Option<u8> {
        let byte = *self.bytes.get(self.at)?;
        self.at += 1;
        Some(byte)
    }

    /// The next `n` bytes' range, if the input holds them.
    fn span(&mut self, n: usize) -> Option<Range<usize>> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len())?;
        let range = self.at..end;
        self.at = end;
        Some(range)
    }

    fn be(&mut self, n: usize) -> Option<u64> {
        let range = self.span(n)?;
        Some(
            self.bytes[range]
                .iter()
                .fold(0, |acc, &b| (acc << 8) | u64::from(b)),
        )
    }

    fn uint(&mut self) -> Option<u64> {
        match self.byte()? {
            small @ 0x00..=0x7f => Some(u64::from(small)),
            0xcc => self.be(1),
            0xcd => self.be(2),
            0xce => self.be(4),
            0xcf => self.be(8),
            _ => None,
        }
    }

    /// Consumes a `nil` and says so, or leaves anything else to be read.
    fn nil(&mut self) -> Option<bool> {
        let is_nil = *self.bytes.get(self.at)? == 0xc0;
        self.at += usize::from(is_nil);
        Some(is_nil)
    }

    fn len(&mut self, n: usize) -> Option<usize> {
        usize::try_from(self.be(n)?).ok()
    }

    fn array_len(&mut self) -> Option<usize> {
        match self.byte()? {
            small @ 0x90..=0x9f => Some(usize::from(small & 0x0f)),
            0xdc => self.len(2),
            0xdd => self.len(4),
            _ => None,
        }
    }

    fn str(&mut self) -> Option<&'a str> {
        std::str::from_utf8(self.str_bytes()?).ok()
    }

    /// The bytes of a `str`, not yet checked to be UTF-8.
    fn str_bytes(&mut self) -> Option<&'a [u8]> {
        let len = match self.byte()? {
            small @ 0xa0..=0xbf => usize::from(small & 0x1f),
            0xd9 => self.len(1)?,
            0xda => self.len(2)?,
            0xdb => self.len(4)?,
            _ => return None,
        };
        let range = self.span(len)?;
        Some(&self.bytes[range])
    }

    fn bin(&mut self) -> Option<Range<usize>> {
        let len = match self.byte()? {
            0xc4 => self.len(1)?,
            0xc5 => self.len(2)?,
            0xc6 => self.len(4)?,
            _ => return None,
        };
        self.span(len)
    }

    fn attributes(&mut self, value: &dyn Fn(Range<usize>) -> Bytes) -> Option<Attributes> {
        BY_POSITION.with(|cell| self.attributes_naming(&mut cell.borrow_mut(), value))
    }

    /// [`Reader::attributes`] with the names this thread last read by position.
    fn attributes_naming(
        &mut self,
        known: &mut Vec<Arc<str>>,
        value: &dyn Fn(Range<usize>) -> Bytes,
    ) -> Option<Attributes> {
        let count = match self.byte()? {
            small @ 0x80..=0x8f => usize::from(small & 0x0f),
            0xde => self.len(2)?,
            0xdf => self.len(4)?,
            _ => return None,
        };
        // An entry takes at least two bytes, so a hostile count reserves no more than the
        // input could hold.
        let mut pairs: Vec<(Arc<str>, Bytes)> =
            Vec::with_capacity(count.min((self.bytes.len() - self.at) / 2));
        let mut size = 0;
        for position in 0..count {
            let name = self.str_bytes()?;
            if pairs
                .last()
                .is_some_and(|(last, _)| last.as_bytes() >= name)
            {
                return None;
            }
            let name = name_at(known, position, name)?;
            let range = self.bin()?;
            size += attribute_size(&name, &self.bytes[range.clone()]);
            pairs.push((name, value(range)));
        }
        Some(Attributes::from_sorted(pairs, size))
    }
}

/// Positions remembered; a session with more attributes shares the rest through [`intern`].
const REMEMBERED_POSITIONS: usize = 256;

thread_local! {
    /// The names this thread last read at each position of an attribute map.
    static BY_POSITION: std::cell::RefCell<Vec<Arc<str>>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// The name whose bytes were read at `position` of a map: shared with the name `known` holds
/// there (the one last read at that position) when the bytes are equal, which costs one
/// comparison (no UTF-8 check, since they equal a valid name, and no hashing); else checked
/// and shared through [`intern`]. `None` if the bytes are not UTF-8.
fn name_at(known: &mut Vec<Arc<str>>, position: usize, bytes: &[u8]) -> Option<Arc<str>> {
    if let Some(name) = known.get(position) {
        if name.as_bytes() == bytes {
            return Some(Arc::clone(name));
        }
    }
    let name = std::str::from_utf8(bytes).ok()?;
    let shared = intern(name);
    // Long names are not kept: hostile stored data could pin large strings per thread.
    if position < REMEMBERED_POSITIONS && name.len() <= INTERNED_NAME_BYTES {
        if position < known.len() {
            known[position] = Arc::clone(&shared);
        } else if position == known.len() {
            known.push(Arc::clone(&shared));
        }
    }
    Some(shared)
}

/// Appends `record` as serde's MessagePack of it (an array of its fields), byte for byte.
pub(crate) fn write_record(record: &SessionRecord, out: &mut Vec<u8>) -> Option<()> {
    out.push(0x97);
    write_uint(out, record.created_at_ms);
    write_uint(out, record.last_accessed_at_ms);
    write_uint(out, record.idle_timeout_ms);
    match record.absolute_lifetime_ms {
        Some(lifetime) => write_uint(out, lifetime),
        None => out.push(0xc0),
    }
    match &record.principal {
        Some(principal) => write_str(out, principal)?,
        None => out.push(0xc0),
    }
    write_uint(out, record.version);
    write_attributes(&record.attributes, out)
}

/// Appends `attributes` as serde's MessagePack of a map of names to byte strings.
pub(crate) fn write_attributes(attributes: &Attributes, out: &mut Vec<u8>) -> Option<()> {
    write_len(out, attributes.len(), [0x80, 0, 0xde, 0xdf], 16)?;
    for (name, value) in attributes.iter() {
        write_str(out, name)?;
        write_len(out, value.len(), [0, 0xc4, 0xc5, 0xc6], 0)?;
        out.extend_from_slice(value);
    }
    Some(())
}

fn write_str(out: &mut Vec<u8>, text: &str) -> Option<()> {
    write_len(out, text.len(), [0xa0, 0xd9, 0xda, 0xdb], 32)?;
    out.extend_from_slice(text.as_bytes());
    Some(())
}

/// The most compact unsigned integer, as rmp writes it.
fn write_uint(out: &mut Vec<u8>, n: u64) {
    match n {
        0..=0x7f => out.push(n as u8),
        0x80..=0xff => out.extend_from_slice(&[0xcc, n as u8]),
        0x100..=0xffff => {
            out.push(0xcd);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            out.push(0xce);
            out.extend_from_slice(&(n as u32).to_be_bytes());
        }
        _ => {
            out.push(0xcf);
            out.extend_from_slice(&n.to_be_bytes());
        }
    }
}

/// A length header: `markers` are the fix form (whose limit is `fix`, 0 for none), then the
/// 8-, 16- and 32-bit forms (0 for a form the type lacks); `None` past 32 bits.
fn write_len(out: &mut Vec<u8>, len: usize, markers: [u8; 4], fix: usize) -> Option<()> {
    let [fixed, one, two, four] = markers;
    if len < fix {
        out.push(fixed | len as u8);
    } else if one != 0 && len <= 0xff {
        out.extend_from_slice(&[one, len as u8]);
    } else if len <= 0xffff {
        out.push(two);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(four);
        out.extend_from_slice(&u32::try_from(len).ok()?.to_be_bytes());
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift64*: a repeatable stream of mutations without a dependency.
    struct Random(u64);

    impl Random {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    fn records() -> Vec<SessionRecord> {
        let long_name = "n".repeat(INTERNED_NAME_BYTES + 3);
        let shapes: [&[(&str, usize)]; 5] = [
            &[],
            &[("user", 3)],
            &[("a", 0), ("b", 31), ("c", 255), ("d", 256), ("e", 70_000)],
            &[("cart", 40), (&long_name, 2), ("zz", 1)],
            &[("x", 1); 0],
        ];
        let mut out = Vec::new();
        for (i, shape) in shapes.iter().enumerate() {
            let mut attributes = Attributes::new();
            for (name, len) in shape.iter() {
                attributes.insert(Arc::from(*name), Bytes::from(vec![i as u8 + 1; *len]));
            }
            out.push(SessionRecord {
                created_at_ms: [0, 127, 128, 70_000, u64::MAX][i],
                last_accessed_at_ms: [1, 255, 65_535, 1 << 33, 5][i],
                idle_timeout_ms: 1_800_000,
                absolute_lifetime_ms: [None, Some(0), Some(u64::MAX), None, Some(300)][i],
                principal: [None, Some("ü"), None, Some(""), Some("alice")][i].map(Into::into),
                version: [0, 1, 200, 1 << 20, 7][i],
                attributes,
            });
        }
        // Many attributes: a map16, and positions past the remembered ones.
        let attributes = (0..300)
            .map(|n| (Arc::from(format!("k{n:04}")), Bytes::from(vec![9; n % 7])))
            .collect();
        out.push(SessionRecord {
            attributes,
            ..out[1].clone()
        });
        out
    }

    fn serde_record(bytes: &[u8]) -> Option<SessionRecord> {
        match bytes.split_first() {
            Some((&crate::record::RECORD_FORMAT_V1, body)) => rmp_serde::from_slice(body).ok(),
            _ => None,
        }
    }

    #[test]
    fn reads_every_record_the_encoder_writes_as_serde_does() {
        for record in records() {
            let bytes = record.encode().unwrap();
            let copied = super::record(&bytes, &|r| Bytes::copy_from_slice(&bytes[r]));
            assert_eq!(copied.as_ref(), Some(&record));
            let shared = Bytes::from(bytes.clone());
            assert_eq!(
                super::record(&shared, &|r| shared.slice(r)),
                Some(record.clone())
            );
            let map = crate::record::encode_attributes(&record.attributes).unwrap();
            let read = super::attributes(&map, &|r| Bytes::copy_from_slice(&map[r]));
            assert_eq!(read.as_ref(), Some(&record.attributes));
            assert_eq!(read.unwrap().size(), record.attributes.size());
        }
    }

    #[test]
    fn writes_what_serde_writes_byte_for_byte() {
        let mut random = Random(7);
        let mut all = records();
        for _ in 0..200 {
            let mut record = all[random.below(all.len())].clone();
            let mut pick = |widths: &[u64]| widths[random.below(widths.len())];
            let ends = [
                0,
                127,
                128,
                255,
                256,
                65_535,
                65_536,
                u32::MAX as u64,
                1 << 32,
                u64::MAX,
            ];
            record.created_at_ms = pick(&ends);
            record.version = pick(&ends);
            record.absolute_lifetime_ms = Some(pick(&ends)).filter(|n| n % 3 != 0);
            let len = pick(&[0, 31, 32, 255, 256, 65_536]) as usize;
            record.principal = Some("p".repeat(len)).filter(|_| len != 31);
            let count = pick(&[0, 15, 16, 17]) as usize;
            for n in 0..count {
                let name = "m".repeat(pick(&[1, 31, 32, 300]) as usize) + &n.to_string();
                let value = vec![n as u8; pick(&[0, 255, 256, 65_536]) as usize];
                record
                    .attributes
                    .insert(Arc::from(name), Bytes::from(value));
            }
            all.push(record);
        }
        for record in all {
            let mut ours = Vec::new();
            write_record(&record, &mut ours).unwrap();
            assert_eq!(ours, rmp_serde::to_vec(&record).unwrap());
            let mut map = Vec::new();
            write_attributes(&record.attributes, &mut map).unwrap();
            assert_eq!(map, rmp_serde::to_vec(&record.attributes).unwrap());
        }
    }

    #[test]
    fn names_are_shared_by_position_and_a_different_name_there_is_read_as_itself() {
        let map = |names: &[&str]| -> Vec<u8> {
            let attributes: Attributes = names
                .iter()
                .map(|name| (Arc::from(*name), Bytes::from(name.to_string())))
                .collect();
            crate::record::encode_attributes(&attributes).unwrap()
        };
        let read = |bytes: &[u8]| {
            super::attributes(bytes, &|r| Bytes::copy_from_slice(&bytes[r])).unwrap()
        };
        let (first, other) = (map(&["a", "b", "c"]), map(&["a", "bb", "c"]));
        let one = read(&first);
        let two = read(&other);
        let three = read(&first);
        assert_eq!(two.keys().collect::<Vec<_>>(), ["a", "bb", "c"]);
        assert_eq!(two.get("bb").map(|v| &v[..]), Some(&b"bb"[..]));
        assert_eq!(three, one);
        let shared = |x: &Attributes, y: &Attributes, name| {
            Arc::ptr_eq(
                x.get_key_value(name).unwrap().0,
                y.get_key_value(name).unwrap().0,
            )
        };
        assert!(shared(&one, &two, "a") && shared(&one, &three, "b"));
        // Not UTF-8 where a known name stood: declined, and serde rejects it too.
        let mut broken = first.clone();
        let at = 1 + broken.windows(2).position(|w| w == [0xa1, b'b']).unwrap();
        broken[at] = 0xff;
        assert!(super::attributes(&broken, &|r| Bytes::copy_from_slice(&broken[r])).is_none());
        assert!(crate::record::decode_attributes(&broken).is_err());
    }

    #[test]
    fn never_accepts_what_serde_reads_otherwise_or_rejects() {
        let mut random = Random(0x9e37_79b9_7f4a_7c15);
        let mut accepted = 0;
        for record in records() {
            let original = record.encode().unwrap();
            for _ in 0..4000 {
                let mut bytes = original.clone();
                match random.below(4) {
                    0 => {
                        let at = random.below(bytes.len());
                        bytes[at] = random.next() as u8;
                    }
                    1 => bytes.truncate(random.below(bytes.len())),
                    2 => {
                        let at = random.below(bytes.len() + 1);
                        bytes.insert(at, random.next() as u8);
                    }
                    _ => {
                        let at = random.below(bytes.len());
                        bytes[at] ^= 1 << random.below(8);
                    }
                }
                let fast = super::record(&bytes, &|r| Bytes::copy_from_slice(&bytes[r]));
                if let Some(fast) = fast {
                    accepted += 1;
                    let serde = bytes
                        .get(1..)
                        .and_then(|body| rmp_serde::from_slice(body).ok());
                    assert_eq!(Some(fast), serde, "input {bytes:02x?}");
                }
                // Whatever path answers, the public decode agrees with serde.
                assert_eq!(SessionRecord::decode(&bytes).ok(), serde_record(&bytes));
            }
        }
        assert!(accepted > 1000, "mutations the reader accepted: {accepted}");
    }
}
