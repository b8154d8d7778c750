//! A session's attributes: encoded values by name, in name order.
//!
//! Two parts. The *base* is an attribute map as a store read it: the buffer it arrived in, and
//! where each name and value lies in it. Reading a map allocates twice whatever its number of
//! attributes and creates no handle per attribute.
//! The *changes* are what was set or removed since (every attribute,
//! for attributes built in memory): a copy-on-write sorted list of shared names and values, so
//! that a clone costs two reference counts and changing one attribute of a loaded session
//! copies nothing of the base.
//!
//! The list of handles it replaced cost, per attribute read, a reference count on a name shared
//! by every thread (its cache line moving between cores) and one on the buffer, and the same
//! again to drop them. With this layout, the memcached store's client time over its raw loop
//! for a read of 50 × 400 B fell from 4.5–5.2 µs to 2.6–2.9 µs (session-bench, old and new
//! binaries taking turns).

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Per-name overhead counted in a session's size, so that many tiny attributes cannot slip
/// past [`Limits::max_session_bytes`](crate::Limits).
const ATTRIBUTE_OVERHEAD: usize = 8;

/// The bytes an attribute counts against [`Limits::max_session_bytes`](crate::Limits): its
/// name, its encoded value and a fixed overhead.
pub(crate) fn attribute_size(name: &str, value: &[u8]) -> usize {
    attribute_size_of(name.len(), value.len())
}

/// [`attribute_size`] from the lengths.
pub(crate) fn attribute_size_of(name_len: usize, value_len: usize) -> usize {
    name_len + value_len + ATTRIBUTE_OVERHEAD
}

/// A changed attribute: its value, or `None` where a name of the base was removed.
type Change = (Arc<str>, Option<Bytes>);

/// The attributes of a session: encoded values by name, in name order.
///
/// Cloning costs two reference counts; a changed clone copies its list of changes (names and
/// values are shared, never copied). A session loaded from a store and changed in one
/// attribute keeps the map it was read from as it is, plus that one change. The size of the
/// attributes ([`Attributes::size`]) is kept as they change, so limits are checked without
/// walking them.
#[derive(Clone, Default)]
pub struct Attributes {
    base: Option<Arc<Packed>>,
    /// In strictly increasing name order; a `None` only for a name the base holds. `None`
    /// until the first change: a map read and not changed allocates nothing for it.
    changes: Option<Arc<Vec<Change>>>,
    size: usize,
    len: usize,
}

/// An attribute map as it was read: names and values stay in the buffer.
pub(crate) struct Packed {
    buffer: Bytes,
    slots: Vec<Slot>,
}

/// Where one attribute of a [`Packed`] map lies in its buffer.
#[derive(Clone, Copy)]
pub(crate) struct Slot {
    pub(crate) name: u32,
    pub(crate) name_len: u32,
    pub(crate) value: u32,
    pub(crate) value_len: u32,
}

impl Packed {
    /// A map read from `buffer`: its names UTF-8, in strictly increasing order, names and
    /// values within the buffer, written with the headers the encoder writes (so that
    /// unchanged runs can be copied as they are; see [`Attributes::entries`]). The reader
    /// checked all of it.
    pub(crate) fn new(buffer: Bytes, slots: Vec<Slot>) -> Self {
        debug_assert!(slots.iter().all(|slot| {
            (slot.name as usize + slot.name_len as usize) <= buffer.len()
                && (slot.value as usize + slot.value_len as usize) <= buffer.len()
        }));
        Packed { buffer, slots }
    }

    fn name_bytes(&self, at: usize) -> &[u8] {
        let slot = self.slots[at];
        &self.buffer[slot.name as usize..slot.name as usize + slot.name_len as usize]
    }

    fn name(&self, at: usize) -> &str {
        // The reader checked every name: this cannot fall back.
        std::str::from_utf8(self.name_bytes(at)).unwrap_or_default()
    }

    fn value_range(&self, at: usize) -> Range<usize> {
        let slot = self.slots[at];
        slot.value as usize..slot.value as usize + slot.value_len as usize
    }

    fn value(&self, at: usize) -> &[u8] {
        &self.buffer[self.value_range(at)]
    }

    fn find(&self, name: &str) -> Result<usize, usize> {
        // The slots' names are not a slice of strings, so the search is written out.
        let (mut low, mut high) = (0, self.slots.len());
        while low < high {
            let middle = low + (high - low) / 2;
            match self.name_bytes(middle).cmp(name.as_bytes()) {
                Ordering::Less => low = middle + 1,
                Ordering::Greater => high = middle,
                Ordering::Equal => return Ok(middle),
            }
        }
        Err(low)
    }

    /// The bytes of attribute `at` as the encoder writes it: name header, name, value header,
    /// value.
    fn encoded_range(&self, at: usize) -> Range<usize> {
        let slot = self.slots[at];
        let start = slot.name as usize - crate::wire::STR.header_len(slot.name_len as usize);
        start..slot.value as usize + slot.value_len as usize
    }
}

/// One attribute of an [`Attributes`] walk: one of the base, or a changed one.
pub(crate) enum Entry<'a> {
    /// The attribute's bytes as encoded (see [`Packed::encoded_range`]) in the base's buffer.
    Encoded(&'a [u8], Range<usize>),
    /// Name and value.
    Own(&'a str, &'a [u8]),
}

impl Attributes {
    /// No attributes.
    pub fn new() -> Self {
        Self::default()
    }

    /// Attributes read from a stored map, of `len` attributes whose sizes add up to `size`.
    pub(crate) fn from_packed(packed: Packed, size: usize) -> Self {
        let len = packed.slots.len();
        if len == 0 {
            return Attributes::new();
        }
        Attributes {
            base: Some(Arc::new(packed)),
            changes: None,
            size,
            len,
        }
    }

    fn changes(&self) -> &[Change] {
        self.changes.as_deref().map_or(&[], Vec::as_slice)
    }

    fn changes_mut(&mut self) -> &mut Vec<Change> {
        Arc::make_mut(self.changes.get_or_insert_with(Arc::default))
    }

    fn changed(&self, name: &str) -> Result<usize, usize> {
        self.changes()
            .binary_search_by(|(changed, _)| (**changed).cmp(name))
    }

    fn in_base(&self, name: &str) -> bool {
        self.base
            .as_ref()
            .is_some_and(|base| base.find(name).is_ok())
    }

    /// The encoded value of `name`.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        match self.changed(name) {
            Ok(at) => self.changes()[at].1.as_deref(),
            Err(_) => {
                let base = self.base.as_ref()?;
                Some(base.value(base.find(name).ok()?))
            }
        }
    }

    /// The stored name and the encoded value of `name`, the value as a handle of its own (a
    /// reference count, no copy).
    pub fn get_shared(&self, name: &str) -> Option<(&str, Bytes)> {
        match self.changed(name) {
            Ok(at) => {
                let (name, value) = &self.changes()[at];
                Some((name, value.clone()?))
            }
            Err(_) => {
                let base = self.base.as_deref()?;
                let at = base.find(name).ok()?;
                Some((base.name(at), base.buffer.slice(base.value_range(at))))
            }
        }
    }

    /// Whether `name` is set.
    pub fn contains_key(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Sets `name` to `value`, replacing any previous value.
    pub fn insert(&mut self, name: Arc<str>, value: Bytes) {
        let at = self.changed(&name);
        let (size, len) = self.size_after(at, &name, &value);
        self.set(at, size, len, || name, value);
    }

    /// [`Attributes::insert`] of `name` only if `check` accepts the size and number of
    /// attributes that result; one lookup of the name for both.
    pub(crate) fn insert_checked<E>(
        &mut self,
        name: &str,
        value: Bytes,
        check: impl FnOnce(usize, usize) -> Result<(), E>,
    ) -> Result<(), E> {
        let at = self.changed(name);
        let (size, len) = self.size_after(at, name, &value);
        check(size, len)?;
        self.set(at, size, len, || Arc::from(name), value);
        Ok(())
    }

    /// The length of `name`'s value, if it is set; `at` is its place among the changes.
    fn value_len(&self, at: Result<usize, usize>, name: &str) -> Option<usize> {
        match at {
            Ok(at) => self.changes()[at].1.as_ref().map(Bytes::len),
            Err(_) => self.base.as_deref().and_then(|base| {
                let at = base.find(name).ok()?;
                Some(base.slots[at].value_len as usize)
            }),
        }
    }

    /// Size and number of attributes once `name` (at `at` of the changes) is set to `value`.
    fn size_after(&self, at: Result<usize, usize>, name: &str, value: &[u8]) -> (usize, usize) {
        let (size, len) = match self.value_len(at, name) {
            Some(old) => (self.size - attribute_size_of(name.len(), old), self.len - 1),
            None => (self.size, self.len),
        };
        (size + attribute_size(name, value), len + 1)
    }

    fn set(
        &mut self,
        at: Result<usize, usize>,
        size: usize,
        len: usize,
        name: impl FnOnce() -> Arc<str>,
        value: Bytes,
    ) {
        (self.size, self.len) = (size, len);
        let changes = self.changes_mut();
        match at {
            Ok(at) => changes[at].1 = Some(value),
            Err(at) => changes.insert(at, (name(), Some(value))),
        }
    }

    /// Removes `name`; `true` if it was set.
    pub fn remove(&mut self, name: &str) -> bool {
        let at = self.changed(name);
        let Some(old) = self.value_len(at, name) else {
            return false;
        };
        self.size -= attribute_size_of(name.len(), old);
        self.len -= 1;
        // A set name that is not among the changes is the base's.
        let in_base = at.is_err() || self.in_base(name);
        let changes = self.changes_mut();
        match (at, in_base) {
            (Ok(at), true) => changes[at].1 = None,
            (Ok(at), false) => {
                changes.remove(at);
            }
            (Err(at), _) => changes.insert(at, (Arc::from(name), None)),
        }
        true
    }

    /// Number of attributes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no attributes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Name length + value length + 8 bytes, summed over all attributes: what counts against
    /// [`Limits::max_session_bytes`](crate::Limits).
    pub fn size(&self) -> usize {
        self.size
    }

    /// Names and encoded values, in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> + '_ {
        self.walk().map(|item| match item {
            Walked::Base(base, at) => (base.name(at), base.value(at)),
            Walked::Changed(name, value) => (name, &value[..]),
        })
    }

    /// [`Attributes::iter`] with each value as a handle of its own (see
    /// [`Attributes::get_shared`]).
    pub(crate) fn iter_shared(&self) -> impl Iterator<Item = (&str, Bytes)> + '_ {
        self.walk().map(|item| match item {
            Walked::Base(base, at) => (base.name(at), base.buffer.slice(base.value_range(at))),
            Walked::Changed(name, value) => (name, value.clone()),
        })
    }

    /// Names, in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> + '_ {
        self.iter().map(|(name, _)| name)
    }

    /// The attributes for an encoder, in name order: the base's attributes as the bytes they
    /// were read as, so that a run of unchanged ones is copied at once.
    pub(crate) fn entries(&self) -> impl Iterator<Item = Entry<'_>> + '_ {
        self.walk().map(|item| match item {
            Walked::Base(base, at) => Entry::Encoded(&base.buffer, base.encoded_range(at)),
            Walked::Changed(name, value) => Entry::Own(name, value),
        })
    }

    fn walk(&self) -> Walk<'_> {
        Walk {
            packed: self.base.as_deref(),
            at: 0,
            changes: self.changes(),
        }
    }

    /// Attributes from pairs in any order, a later pair replacing an earlier one of the same
    /// name; pairs already in strictly increasing name order are taken as they are.
    fn from_pairs(mut pairs: Vec<(Arc<str>, Bytes)>) -> Self {
        let ordered = pairs.windows(2).all(|pair| pair[0].0 < pair[1].0);
        if !ordered {
            let mut attributes = Attributes::new();
            for (name, value) in pairs {
                attributes.insert(name, value);
            }
            return attributes;
        }
        pairs.shrink_to_fit();
        let size = pairs
            .iter()
            .map(|(name, value)| attribute_size(name, value))
            .sum();
        Attributes {
            base: None,
            len: pairs.len(),
            changes: Some(Arc::new(
                pairs
                    .into_iter()
                    .map(|(name, value)| (name, Some(value)))
                    .collect(),
            )),
            size,
        }
    }
}

/// A merge of the base's slots and the changes, in name order, a change replacing or removing
/// the base's attribute of its name.
struct Walk<'a> {
    packed: Option<&'a Packed>,
    /// The next slot of the base.
    at: usize,
    changes: &'a [Change],
}

enum Walked<'a> {
    Base(&'a Packed, usize),
    Changed(&'a str, &'a Bytes),
}

impl<'a> Iterator for Walk<'a> {
    type Item = Walked<'a>;

    fn next(&mut self) -> Option<Walked<'a>> {
        loop {
            let base = match self.packed {
                Some(packed) if self.at < packed.slots.len() => {
                    Some((packed, packed.name_bytes(self.at)))
                }
                _ => None,
            };
            let Some(((name, value), rest)) = self.changes.split_first() else {
                let (packed, _) = base?;
                self.at += 1;
                return Some(Walked::Base(packed, self.at - 1));
            };
            match base.map(|(packed, base)| (packed, base.cmp(name.as_bytes()))) {
                Some((packed, Ordering::Less)) => {
                    self.at += 1;
                    return Some(Walked::Base(packed, self.at - 1));
                }
                Some((_, Ordering::Equal)) => self.at += 1,
                _ => {}
            }
            self.changes = rest;
            if let Some(value) = value {
                return Some(Walked::Changed(name, value));
            }
        }
    }
}

impl PartialEq for Attributes {
    fn eq(&self, other: &Self) -> bool {
        self.size == other.size && self.len == other.len && self.iter().eq(other.iter())
    }
}

impl Eq for Attributes {}

impl fmt::Debug for Attributes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.iter().map(|(name, value)| (name, Escaped(value))))
            .finish()
    }
}

/// Bytes shown as a byte string literal.
struct Escaped<'a>(&'a [u8]);

impl fmt::Debug for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "b\"{}\"", self.0.escape_ascii())
    }
}

impl FromIterator<(Arc<str>, Bytes)> for Attributes {
    fn from_iter<I: IntoIterator<Item = (Arc<str>, Bytes)>>(iter: I) -> Self {
        Attributes::from_pairs(iter.into_iter().collect())
    }
}

impl From<BTreeMap<Arc<str>, Bytes>> for Attributes {
    fn from(map: BTreeMap<Arc<str>, Bytes>) -> Self {
        map.into_iter().collect()
    }
}

/// A map of names to byte strings, as `BTreeMap<Arc<str>, Bytes>` serializes: stored records
/// are byte-for-byte what they were before this type.
impl Serialize for Attributes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.iter().map(|(name, value)| (name, Bin(value))))
    }
}

/// A value serialized as a byte string (serde writes a plain `&[u8]` as a sequence).
struct Bin<'a>(&'a [u8]);

impl Serialize for Bin<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self.0)
    }
}

impl<'de> Deserialize<'de> for Attributes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct AttributesVisitor;

        impl<'de> Visitor<'de> for AttributesVisitor {
            type Value = Attributes;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of attribute names to encoded values")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Attributes, A::Error> {
                // The size hint comes from stored data: bounded, so a hostile count cannot
                // reserve memory the input does not hold.
                let mut pairs = Vec::with_capacity(access.size_hint().unwrap_or(0).min(256));
                while let Some((name, value)) = access.next_entry::<Name, Value>()? {
                    pairs.push((name.0, value.0));
                }
                Ok(Attributes::from_pairs(pairs))
            }
        }

        deserializer.deserialize_map(AttributesVisitor)
    }
}

/// An attribute name being decoded, shared with the names this thread decoded before.
struct Name(Arc<str>);

/// Names longer than this are not interned (an application's attribute names are short).
pub(crate) const INTERNED_NAME_BYTES: usize = 64;
/// Interned names per thread; the table is emptied when it is full, so names read from
/// hostile stored data cannot grow it without bound.
const INTERNED_NAMES: usize = 1024;

thread_local! {
    /// Names this thread decoded lately. The same few names come back in every session a
    /// store reads, and a fresh `Arc<str>` per name per read (an allocation for the string, one
    /// for the `Arc`, a copy) was more than half the time of decoding a small session.
    static NAMES: std::cell::RefCell<std::collections::HashSet<Arc<str>>> =
        std::cell::RefCell::new(std::collections::HashSet::new());
}

/// `name` as an `Arc<str>` shared with earlier decodes of the same name on this thread.
pub(crate) fn intern(name: &str) -> Arc<str> {
    if name.len() > INTERNED_NAME_BYTES {
        return Arc::from(name);
    }
    NAMES.with(|names| {
        let mut names = names.borrow_mut();
        if let Some(interned) = names.get(name) {
            return Arc::clone(interned);
        }
        if names.len() >= INTERNED_NAMES {
            names.clear();
        }
        let interned: Arc<str> = Arc::from(name);
        names.insert(Arc::clone(&interned));
        interned
    })
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NameVisitor;

        impl Visitor<'_> for NameVisitor {
            type Value = Name;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an attribute name (a string)")
            }

            fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<Name, E> {
                Ok(Name(intern(name)))
            }
        }

        deserializer.deserialize_str(NameVisitor)
    }
}

thread_local! {
    /// The buffer [`decode_sharing`] is decoding, whose slices values can share.
    static SOURCE: std::cell::RefCell<Option<Bytes>> = const { std::cell::RefCell::new(None) };
}

/// Runs `decode` with `source` as the buffer that decoded values may share instead of
/// copying: a value the deserializer lends from inside `source` becomes a slice of it (no
/// allocation, no copy); anything else is copied as usual.
pub(crate) fn decode_sharing<T>(source: &Bytes, decode: impl FnOnce(&[u8]) -> T) -> T {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            SOURCE.with(|cell| cell.borrow_mut().take());
        }
    }
    SOURCE.with(|cell| *cell.borrow_mut() = Some(source.clone()));
    let _reset = Reset;
    decode(source)
}

/// An attribute value being decoded: a slice of the [`decode_sharing`] buffer when the bytes
/// lie in it, else a copy.
struct Value(Bytes);

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ValueVisitor;

        impl<'de> Visitor<'de> for ValueVisitor {
            type Value = Value;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an encoded attribute value (bytes)")
            }

            fn visit_borrowed_bytes<E: serde::de::Error>(self, v: &'de [u8]) -> Result<Value, E> {
                let shared = SOURCE.with(|cell| {
                    let source = cell.borrow();
                    let source = source.as_ref()?;
                    let (base, start) = (source.as_ptr() as usize, v.as_ptr() as usize);
                    let inside = start >= base && start + v.len() <= base + source.len();
                    inside.then(|| source.slice_ref(v))
                });
                Ok(Value(shared.unwrap_or_else(|| Bytes::copy_from_slice(v))))
            }

            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Value, E> {
                Ok(Value(Bytes::copy_from_slice(v)))
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Value, E> {
                Ok(Value(Bytes::copy_from_slice(v.as_bytes())))
            }

            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Value, E> {
                Ok(Value(Bytes::from(v)))
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Value, A::Error> {
                let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0));
                while let Some(byte) = seq.next_element::<u8>()? {
                    bytes.push(byte);
                }
                Ok(Value(Bytes::from(bytes)))
            }
        }

        deserializer.deserialize_byte_buf(ValueVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attributes(pairs: &[(&str, &str)]) -> Attributes {
        pairs
            .iter()
            .map(|(name, value)| (Arc::from(*name), Bytes::from(value.to_string())))
            .collect()
    }

    #[test]
    fn names_decoded_through_serde_are_shared_and_long_or_many_names_still_decode() {
        // Serde reads what the direct reader declines; a map with a name in a longer header
        // than the encoder's takes that path.
        let through_serde = |name: &str, value: &[u8]| {
            let mut bytes = vec![crate::record::ATTRIBUTES_FORMAT_V1, 0x81, 0xdb];
            bytes.extend_from_slice(&(name.len() as u32).to_be_bytes());
            bytes.extend_from_slice(name.as_bytes());
            bytes.extend_from_slice(&[0xc4, value.len() as u8]);
            bytes.extend_from_slice(value);
            crate::record::decode_attributes(&bytes).unwrap()
        };
        let name_of = |attributes: &Attributes| Arc::clone(&attributes.changes()[0].0);
        let (first, second) = (through_serde("user", b"1"), through_serde("user", b"1"));
        assert_eq!(first, attributes(&[("user", "1")]));
        assert!(Arc::ptr_eq(&name_of(&first), &name_of(&second)), "interned");
        let long = "n".repeat(INTERNED_NAME_BYTES + 1);
        let (first, second) = (through_serde(&long, b"2"), through_serde(&long, b"2"));
        assert!(
            !Arc::ptr_eq(&name_of(&first), &name_of(&second)),
            "too long"
        );
        // More distinct names than the table holds: it starts over, and every name decodes.
        for i in 0..INTERNED_NAMES + 10 {
            let name = format!("name{i}");
            assert_eq!(
                through_serde(&name, b"v").keys().collect::<Vec<_>>(),
                [name]
            );
        }
        NAMES.with(|names| assert!(names.borrow().len() <= INTERNED_NAMES));
    }

    /// xorshift64*: a repeatable stream of changes without a dependency.
    fn next(state: &mut u64) -> u64 {
        *state ^= *state >> 12;
        *state ^= *state << 25;
        *state ^= *state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    #[test]
    fn a_read_map_changed_at_random_behaves_like_an_ordered_map() {
        let mut state = 0x5eed_u64;
        for round in 0..300 {
            let names: Vec<String> = (0..12).map(|n| format!("k{n:02}")).collect();
            let mut model: BTreeMap<String, Vec<u8>> = BTreeMap::new();
            for name in &names {
                if next(&mut state).is_multiple_of(2) {
                    let len = [0, 5, 300][(next(&mut state) % 3) as usize];
                    model.insert(name.clone(), vec![round as u8; len]);
                }
            }
            let built: Attributes = model
                .iter()
                .map(|(name, value)| (Arc::from(name.as_str()), Bytes::from(value.clone())))
                .collect();
            let stored = Bytes::from(crate::record::encode_attributes(&built).unwrap());
            let mut read = crate::record::decode_attributes_shared(stored.clone()).unwrap();
            assert_eq!(read, built);
            let clone = read.clone();
            for step in 0..(next(&mut state) % 8) {
                let name = &names[(next(&mut state) % 12) as usize];
                if next(&mut state).is_multiple_of(3) {
                    assert_eq!(read.remove(name), model.remove(name).is_some());
                } else {
                    let value = vec![step as u8; (next(&mut state) % 40) as usize];
                    read.insert(Arc::from(name.as_str()), Bytes::from(value.clone()));
                    model.insert(name.clone(), value);
                }
                let size: usize = model.iter().map(|(n, v)| attribute_size(n, v)).sum();
                assert_eq!((read.len(), read.size()), (model.len(), size));
                for name in &names {
                    assert_eq!(read.get(name), model.get(name).map(Vec::as_slice));
                    assert_eq!(
                        read.get_shared(name).map(|(_, v)| v.to_vec()),
                        model.get(name).cloned()
                    );
                }
                let expected: Vec<(&str, &[u8])> = model
                    .iter()
                    .map(|(n, v)| (n.as_str(), v.as_slice()))
                    .collect();
                assert_eq!(read.iter().collect::<Vec<_>>(), expected);
                let shared: Vec<(&str, Bytes)> = read.iter_shared().collect();
                assert!(shared
                    .iter()
                    .map(|(n, v)| (*n, &v[..]))
                    .eq(expected.iter().copied()));
                // Written (unchanged runs copied) exactly as serde writes the same map.
                let map: BTreeMap<&str, Bytes> = model
                    .iter()
                    .map(|(n, v)| (n.as_str(), Bytes::from(v.clone())))
                    .collect();
                let mut expected_bytes = vec![crate::record::ATTRIBUTES_FORMAT_V1];
                expected_bytes.extend(rmp_serde::to_vec(&map).unwrap());
                let written = crate::record::encode_attributes(&read).unwrap();
                assert_eq!(written, expected_bytes);
                assert_eq!(crate::record::decode_attributes(&written).unwrap(), read);
            }
            // The clone taken before the changes still reads as it was stored.
            assert_eq!(clone, built);
        }
    }

    #[test]
    fn pairs_in_any_order_keep_the_last_of_each_name() {
        let map = attributes(&[("b", "1"), ("a", "2"), ("b", "33")]);
        assert_eq!(map.keys().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(map.get("b"), Some(&b"33"[..]));
        assert_eq!(
            map.size(),
            attribute_size("a", b"2") + attribute_size("b", b"33")
        );
        assert_eq!(map, attributes(&[("a", "2"), ("b", "33")]));
    }

    #[test]
    fn size_follows_inserts_replacements_and_removals() {
        let mut map = attributes(&[("a", "123"), ("bb", "4")]);
        assert_eq!(map.size(), (1 + 3 + 8) + (2 + 1 + 8));
        map.insert(Arc::from("a"), Bytes::from_static(b"1"));
        assert_eq!(map.size(), (1 + 1 + 8) + (2 + 1 + 8));
        assert!(map.remove("bb"));
        assert!(!map.remove("bb"));
        assert_eq!(map.size(), 1 + 1 + 8);
        assert_eq!(map.len(), 1);
    }

    #[test]
    fn a_changed_clone_leaves_the_original_alone() {
        let original = attributes(&[("a", "1"), ("b", "2")]);
        let mut copy = original.clone();
        copy.insert(Arc::from("a"), Bytes::from_static(b"9"));
        copy.remove("b");
        assert_eq!(original.get("a"), Some(&b"1"[..]));
        assert!(original.contains_key("b"));
        assert_ne!(original, copy);
    }

    #[test]
    fn encodes_like_the_ordered_map_it_replaced() {
        let pairs = [("b", "2"), ("a", "1"), ("c", "3")];
        let map: BTreeMap<Arc<str>, Bytes> = pairs
            .iter()
            .map(|(name, value)| (Arc::from(*name), Bytes::from(value.to_string())))
            .collect();
        let ours = attributes(&pairs);
        let bytes = rmp_serde::to_vec(&ours).expect("encode");
        assert_eq!(bytes, rmp_serde::to_vec(&map).expect("encode"));
        let back: Attributes = rmp_serde::from_slice(&bytes).expect("decode");
        assert_eq!(back, ours);
        assert_eq!(back.keys().collect::<Vec<_>>(), ["a", "b", "c"]);
    }
}
