//! A session's attributes: encoded values by name, in a copy-on-write sorted list.

use std::collections::BTreeMap;
use std::fmt;
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
    name.len() + value.len() + ATTRIBUTE_OVERHEAD
}

/// The attributes of a session: encoded values by name, in name order.
///
/// A copy-on-write sorted list: a clone costs a reference count, and changing a clone copies
/// the list of (name, value) handles, never the names' or values' bytes, which stay shared. A
/// session loaded from a cache and changed in one attribute therefore shares every attribute
/// with the cached copy. Decoding builds it in one allocation (stored maps come in name
/// order), and dropping it is one free: the persistent tree it replaced cost a node
/// allocation per attribute to build and a free per node to drop, a quarter of a small
/// session's read. The list also keeps the [size](Attributes::size) of its attributes, so
/// limits are checked without walking them.
#[derive(Clone, Default)]
pub struct Attributes {
    entries: Arc<Vec<(Arc<str>, Bytes)>>,
    size: usize,
}

impl Attributes {
    /// No attributes.
    pub fn new() -> Self {
        Self::default()
    }

    fn position(&self, name: &str) -> Result<usize, usize> {
        self.entries
            .binary_search_by(|(stored, _)| (**stored).cmp(name))
    }

    /// The encoded value of `name`.
    pub fn get(&self, name: &str) -> Option<&Bytes> {
        self.get_key_value(name).map(|(_, value)| value)
    }

    /// The stored name and encoded value of `name`.
    pub fn get_key_value(&self, name: &str) -> Option<(&Arc<str>, &Bytes)> {
        let at = self.position(name).ok()?;
        let (name, value) = &self.entries[at];
        Some((name, value))
    }

    /// Whether `name` is set.
    pub fn contains_key(&self, name: &str) -> bool {
        self.position(name).is_ok()
    }

    /// Sets `name` to `value`, replacing any previous value.
    pub fn insert(&mut self, name: Arc<str>, value: Bytes) {
        self.size += attribute_size(&name, &value);
        match self.position(&name) {
            Ok(at) => {
                let entry = &mut Arc::make_mut(&mut self.entries)[at];
                self.size -= attribute_size(&entry.0, &entry.1);
                entry.1 = value;
            }
            Err(at) => Arc::make_mut(&mut self.entries).insert(at, (name, value)),
        }
    }

    /// Removes `name`; `true` if it was set.
    pub fn remove(&mut self, name: &str) -> bool {
        match self.position(name) {
            Ok(at) => {
                let (name, value) = Arc::make_mut(&mut self.entries).remove(at);
                self.size -= attribute_size(&name, &value);
                true
            }
            Err(_) => false,
        }
    }

    /// Number of attributes.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no attributes.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Name length + value length + 8 bytes, summed over all attributes: what counts against
    /// [`Limits::max_session_bytes`](crate::Limits).
    pub fn size(&self) -> usize {
        self.size
    }

    /// Names and encoded values, in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&Arc<str>, &Bytes)> + '_ {
        self.entries.iter().map(|(name, value)| (name, value))
    }

    /// Names, in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> + '_ {
        self.entries.iter().map(|(name, _)| &**name)
    }

    /// Attributes from pairs in strictly increasing name order whose sizes add up to `size`
    /// (the caller checked both).
    pub(crate) fn from_sorted(pairs: Vec<(Arc<str>, Bytes)>, size: usize) -> Self {
        debug_assert!(pairs.windows(2).all(|pair| pair[0].0 < pair[1].0));
        Attributes {
            entries: Arc::new(pairs),
            size,
        }
    }

    /// Attributes from pairs in any order, a later pair replacing an earlier one of the same
    /// name; pairs already in strictly increasing name order (what every encoder writes) are
    /// taken as they are.
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
            entries: Arc::new(pairs),
            size,
        }
    }
}

impl PartialEq for Attributes {
    fn eq(&self, other: &Self) -> bool {
        self.size == other.size && self.entries == other.entries
    }
}

impl Eq for Attributes {}

impl fmt::Debug for Attributes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
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
        serializer.collect_map(self.iter())
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
    fn decoded_names_are_shared_and_long_or_many_names_still_decode() {
        let long = "n".repeat(INTERNED_NAME_BYTES + 1);
        let original = attributes(&[("user", "1"), (&long, "2")]);
        let bytes = crate::record::encode_attributes(&original).unwrap();
        let first = crate::record::decode_attributes(&bytes).unwrap();
        let second = crate::record::decode_attributes(&bytes).unwrap();
        assert_eq!(first, original);
        let (a, _) = first.get_key_value("user").unwrap();
        let (b, _) = second.get_key_value("user").unwrap();
        assert!(Arc::ptr_eq(a, b), "a short name is interned");
        let (a, _) = first.get_key_value(&long).unwrap();
        let (b, _) = second.get_key_value(&long).unwrap();
        assert!(!Arc::ptr_eq(a, b), "a long name is not");
        // More distinct names than the table holds: it starts over, and every name decodes.
        let many: Attributes = (0..INTERNED_NAMES + 10)
            .map(|i| (Arc::from(format!("name{i}")), Bytes::from_static(b"v")))
            .collect();
        let bytes = crate::record::encode_attributes(&many).unwrap();
        assert_eq!(crate::record::decode_attributes(&bytes).unwrap(), many);
        NAMES.with(|names| assert!(names.borrow().len() <= INTERNED_NAMES));
    }

    #[test]
    fn pairs_in_any_order_keep_the_last_of_each_name() {
        let map = attributes(&[("b", "1"), ("a", "2"), ("b", "33")]);
        assert_eq!(map.keys().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(map.get("b").map(|value| &value[..]), Some(&b"33"[..]));
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
        assert_eq!(original.get("a").map(|v| &v[..]), Some(&b"1"[..]));
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
