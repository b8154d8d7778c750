//! A direct reader of the two MessagePack layouts this crate writes: a [`SessionRecord`] (an
//! array of its seven fields) and an attribute map (names to byte strings).
//!
//! Every store's read decodes one of them. Through serde each value asked a thread-local for
//! the buffer it may slice, and each name was UTF-8 checked and hashed to find its shared
//! copy. This reader walks the bytes once and leaves the attributes where they are: it checks
//! the map and notes where each name and value lies (see [`Attributes`]), copying nothing.
//! Measured with callgrind, decoding a record and an attribute map of 50 × 400 B took 74,000
//! instructions through serde and 25,000 with a reader that still built a handle per
//! attribute.
//!
//! It accepts only what the encoder writes (unsigned integers, `nil` for `None`, `str` names
//! in strictly increasing order, `bin` values, each attribute's headers in their shortest
//! form) and answers `None` for anything else, which the caller then hands to serde: serde
//! stays the authority on every other input, so the two paths cannot disagree on what a
//! stored value means (a test feeds both mutated records).

use std::ops::Range;

use bytes::Bytes;

use crate::attributes::{attribute_size_of, Attributes, Entry, Packed, Slot};
use crate::record::{SessionRecord, ATTRIBUTES_FORMAT_V1, RECORD_FORMAT_V1};

/// Reads `source` as [`SessionRecord::encode`] wrote it (its format byte, then the record).
/// The record comes back with no attributes and the map's [`Layout`] beside it: the caller
/// attaches the buffer that holds `source`'s bytes once reading is done.
pub(crate) fn record(source: &[u8]) -> Option<(SessionRecord, Layout)> {
    let mut reader = Reader::after_format(source, RECORD_FORMAT_V1)?;
    if reader.array_len()? != 7 {
        return None;
    }
    let record = SessionRecord {
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
        attributes: Attributes::new(),
    };
    Some((record, reader.attributes()?))
}

/// Reads `source` as [`encode_attributes`](crate::raw::encode_attributes) wrote it (see
/// [`record`]).
pub(crate) fn attributes(source: &[u8]) -> Option<Layout> {
    Reader::after_format(source, ATTRIBUTES_FORMAT_V1)?.attributes()
}

/// Where the names and values of a map the reader checked lie in its source. A map keeps the
/// buffer they lie in (see [`Attributes`]), and attaching it after the read lets a caller
/// that owns the source move it in: sharing it instead, while the reader still borrowed it,
/// cost an allocation per read for a `Bytes` made from a `Vec` (its first clone allocates).
pub(crate) struct Layout {
    slots: Vec<Slot>,
    size: usize,
}

impl Layout {
    /// The map, its names and values in `buffer()`, which must hold the source's bytes at the
    /// same offsets (the source itself, or a copy). An empty map does not call `buffer`.
    pub(crate) fn attach(self, buffer: impl FnOnce() -> Bytes) -> Attributes {
        if self.slots.is_empty() {
            return Attributes::new();
        }
        Attributes::from_packed(Packed::new(buffer(), self.slots), self.size)
    }
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
        let range = self.str_range()?;
        Some(&self.bytes[range])
    }

    /// Where the bytes of a `str` lie, not yet checked to be UTF-8.
    fn str_range(&mut self) -> Option<Range<usize>> {
        let len = match self.byte()? {
            small @ 0xa0..=0xbf => usize::from(small & 0x1f),
            0xd9 => self.len(1)?,
            0xda => self.len(2)?,
            0xdb => self.len(4)?,
            _ => return None,
        };
        self.span(len)
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

    /// The layout of the attribute map at the reader. Only the headers the encoder writes are
    /// accepted (the shortest form for each length), so that an unchanged run of attributes
    /// can later be written by copying its bytes.
    fn attributes(&mut self) -> Option<Layout> {
        let count = match self.byte()? {
            small @ 0x80..=0x8f => usize::from(small & 0x0f),
            0xde => self.len(2)?,
            0xdf => self.len(4)?,
            _ => return None,
        };
        if count == 0 {
            return Some(Layout {
                slots: Vec::new(),
                size: 0,
            });
        }
        // An entry takes at least two bytes, so a hostile count reserves no more than the
        // input could hold.
        let bytes = self.bytes;
        let mut slots = Vec::with_capacity(count.min((bytes.len() - self.at) / 2));
        let mut previous: &[u8] = &[];
        let mut size = 0;
        for _ in 0..count {
            let name = self.canonical_str()?;
            let name_bytes = &bytes[name.clone()];
            // Strictly increasing, as the encoder writes them (the first may be empty).
            if !slots.is_empty() && !precedes(previous, name_bytes) {
                return None;
            }
            // Names are almost always ASCII, which is checked inline; `from_utf8` is a call.
            if !name_bytes.is_ascii() {
                std::str::from_utf8(name_bytes).ok()?;
            }
            previous = name_bytes;
            let value = self.canonical_bin()?;
            size += attribute_size_of(name.len(), value.len());
            slots.push(Slot {
                name: u32::try_from(name.start).ok()?,
                name_len: u32::try_from(name.len()).ok()?,
                value: u32::try_from(value.start).ok()?,
                value_len: u32::try_from(value.len()).ok()?,
            });
        }
        Some(Layout { slots, size })
    }

    /// A `str`'s range, if its header is the one the encoder writes for its length.
    fn canonical_str(&mut self) -> Option<Range<usize>> {
        let start = self.at;
        let range = self.str_range()?;
        (range.start - start == STR.header_len(range.len())).then_some(range)
    }

    /// A `bin`'s range, if its header is the one the encoder writes for its length.
    fn canonical_bin(&mut self) -> Option<Range<usize>> {
        let start = self.at;
        let range = self.bin()?;
        (range.start - start == BIN.header_len(range.len())).then_some(range)
    }
}

/// Whether `a` sorts before `b`. Attribute names are short and differ late ("cart_1",
/// "cart_2"): a loop over their bytes costs less than the call to `memcmp` that comparing the
/// slices makes, once per attribute of every read.
fn precedes(a: &[u8], b: &[u8]) -> bool {
    if a.len() > 32 {
        return a < b;
    }
    for (x, y) in a.iter().zip(b) {
        if x != y {
            return x < y;
        }
    }
    a.len() < b.len()
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

/// Appends `attributes` as serde's MessagePack of a map of names to byte strings. A run of
/// attributes unchanged since they were read is copied as the bytes they were read as (which
/// are what this function writes: the reader takes no other form).
pub(crate) fn write_attributes(attributes: &Attributes, out: &mut Vec<u8>) -> Option<()> {
    MAP.write(out, attributes.len())?;
    let mut run: Option<(&[u8], Range<usize>)> = None;
    for entry in attributes.entries() {
        match entry {
            Entry::Encoded(buffer, range) => match &mut run {
                Some((_, pending)) if pending.end == range.start => pending.end = range.end,
                _ => {
                    if let Some((buffer, pending)) = run.replace((buffer, range)) {
                        out.extend_from_slice(&buffer[pending]);
                    }
                }
            },
            Entry::Own(name, value) => {
                if let Some((buffer, pending)) = run.take() {
                    out.extend_from_slice(&buffer[pending]);
                }
                write_str(out, name)?;
                BIN.write(out, value.len())?;
                out.extend_from_slice(value);
            }
        }
    }
    if let Some((buffer, pending)) = run {
        out.extend_from_slice(&buffer[pending]);
    }
    Some(())
}

fn write_str(out: &mut Vec<u8>, text: &str) -> Option<()> {
    STR.write(out, text.len())?;
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

/// How MessagePack writes the length of one kind of value: `markers` are the fix form
/// (whose limit is `fix`, 0 for none), then the 8-, 16- and 32-bit forms (0 for a form the
/// kind lacks). The shortest form that holds the length is the one written.
pub(crate) struct LengthForms {
    markers: [u8; 4],
    fix: usize,
}

const MAP: LengthForms = LengthForms {
    markers: [0x80, 0, 0xde, 0xdf],
    fix: 16,
};
/// Strings (attribute names, the principal).
pub(crate) const STR: LengthForms = LengthForms {
    markers: [0xa0, 0xd9, 0xda, 0xdb],
    fix: 32,
};
/// Byte strings (attribute values).
pub(crate) const BIN: LengthForms = LengthForms {
    markers: [0, 0xc4, 0xc5, 0xc6],
    fix: 0,
};

impl LengthForms {
    /// The bytes of the header (marker and length) written for `len`: what the reader checks
    /// a stored header against, and what the writer writes.
    pub(crate) fn header_len(&self, len: usize) -> usize {
        if len < self.fix {
            1
        } else if self.markers[1] != 0 && len <= 0xff {
            2
        } else if len <= 0xffff {
            3
        } else {
            5
        }
    }

    /// Appends the header for `len`; `None` past 32 bits.
    fn write(&self, out: &mut Vec<u8>, len: usize) -> Option<()> {
        let [fixed, one, two, four] = self.markers;
        match self.header_len(len) {
            1 => out.push(fixed | len as u8),
            2 => out.extend_from_slice(&[one, len as u8]),
            3 => {
                out.push(two);
                out.extend_from_slice(&(len as u16).to_be_bytes());
            }
            _ => {
                out.push(four);
                out.extend_from_slice(&u32::try_from(len).ok()?.to_be_bytes());
            }
        }
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::attributes::INTERNED_NAME_BYTES;

    /// [`record`] with `buffer()` attached.
    fn read_record(source: &[u8], buffer: impl FnOnce() -> Bytes) -> Option<SessionRecord> {
        let (mut record, layout) = record(source)?;
        record.attributes = layout.attach(buffer);
        Some(record)
    }

    /// [`attributes`] with `buffer()` attached.
    fn read_attributes(source: &[u8], buffer: impl FnOnce() -> Bytes) -> Option<Attributes> {
        Some(attributes(source)?.attach(buffer))
    }

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
            let copied = read_record(&bytes, || Bytes::copy_from_slice(&bytes));
            assert_eq!(copied.as_ref(), Some(&record));
            let shared = Bytes::from(bytes.clone());
            assert_eq!(
                read_record(&shared, || shared.clone()),
                Some(record.clone())
            );
            let map = crate::record::encode_attributes(&record.attributes).unwrap();
            let read = read_attributes(&map, || Bytes::copy_from_slice(&map));
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
    fn values_stay_in_the_buffer_and_names_are_checked_one_by_one() {
        let attributes: Attributes = [("a", 3), ("bb", 300), ("c", 0)]
            .iter()
            .map(|(name, len)| (Arc::from(*name), Bytes::from(vec![7; *len])))
            .collect();
        let map = Bytes::from(crate::record::encode_attributes(&attributes).unwrap());
        let read = read_attributes(&map, || map.clone()).unwrap();
        assert_eq!(read, attributes);
        let value = read.get("bb").unwrap();
        let (base, start) = (map.as_ptr() as usize, value.as_ptr() as usize);
        assert!(start >= base && start + value.len() <= base + map.len());
        assert_eq!(read.get_shared("bb").unwrap().1.as_ptr(), value.as_ptr());

        // Two names that are not UTF-8 alone but are when joined ("a\xc3" and "\xa9b", in
        // order): declined here, and serde rejects them too.
        let mut joined = vec![ATTRIBUTES_FORMAT_V1, 0x82];
        for name in [&b"a\xc3"[..], &b"\xa9b"[..]] {
            joined.push(0xa0 | name.len() as u8);
            joined.extend_from_slice(name);
            joined.extend_from_slice(&[0xc4, 1, 9]);
        }
        assert!(read_attributes(&joined, || Bytes::copy_from_slice(&joined)).is_none());
        assert!(crate::record::decode_attributes(&joined).is_err());

        // A count far beyond the input reserves only what the input could hold.
        let hostile = [
            ATTRIBUTES_FORMAT_V1,
            0xdf,
            0xff,
            0xff,
            0xff,
            0xff,
            0xa1,
            b'a',
            0xc4,
            0,
        ];
        assert!(read_attributes(&hostile, || Bytes::copy_from_slice(&hostile)).is_none());
    }

    #[test]
    fn longer_headers_than_the_encoders_are_left_to_serde() {
        // {"a": [1]} with the name in a str8 and the value in a bin16: valid MessagePack, but
        // a run of such attributes could not be copied as the encoder writes it.
        for body in [
            &[0x81, 0xd9, 1, b'a', 0xc4, 1, 1][..],
            &[0x81, 0xa1, b'a', 0xc5, 0, 1, 1][..],
            &[0x81, 0xa1, b'a', 0xc6, 0, 0, 0, 1, 1][..],
        ] {
            let bytes = [&[ATTRIBUTES_FORMAT_V1][..], body].concat();
            assert!(read_attributes(&bytes, || Bytes::copy_from_slice(&bytes)).is_none());
            let read = crate::record::decode_attributes(&bytes).unwrap();
            assert_eq!(read.get("a"), Some(&[1][..]));
            // Written back in the encoder's form.
            let written = crate::record::encode_attributes(&read).unwrap();
            assert_eq!(
                written,
                [ATTRIBUTES_FORMAT_V1, 0x81, 0xa1, b'a', 0xc4, 1, 1]
            );
        }
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
                let fast = read_record(&bytes, || Bytes::copy_from_slice(&bytes));
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
