//! Attribute codecs: how a typed value becomes the bytes a store keeps.
//!
//! Every encoded attribute starts with one *format byte* naming the codec (and its format
//! version) that wrote it. A reader picks the codec from that byte, so an instance configured
//! for JSON still reads values written by an instance on MessagePack, and bytes of an unknown
//! format are reported as a decode error instead of being misread.
//!
//! Format bytes `0x01..=0x7f` are reserved for codecs of this crate; custom codecs use
//! `0x80..=0xff`.

use std::fmt;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::BoxError;

/// Format byte of [`MessagePack`].
pub const FORMAT_MESSAGEPACK: u8 = 0x01;
/// Format byte of [`Json`].
pub const FORMAT_JSON: u8 = 0x02;

/// A serialization format for attribute values.
///
/// Object-safe (values pass through `erased_serde`), so settings can hold any codec as
/// `Arc<dyn Codec>`.
pub trait Codec: Send + Sync + fmt::Debug + 'static {
    /// The format byte written before every value this codec encodes.
    fn format(&self) -> u8;

    /// Appends the encoding of `value` to `out`.
    fn encode_into(
        &self,
        value: &dyn erased_serde::Serialize,
        out: &mut Vec<u8>,
    ) -> Result<(), BoxError>;

    /// Runs `visit` with a deserializer over `bytes` (the payload after the format byte).
    fn decode_with<'de>(
        &self,
        bytes: &'de [u8],
        visit: &mut dyn FnMut(
            &mut dyn erased_serde::Deserializer<'de>,
        ) -> Result<(), erased_serde::Error>,
    ) -> Result<(), BoxError>;
}

/// MessagePack through `rmp-serde`, with struct fields written by name so that adding a field
/// to a stored type stays readable. The default codec: compact and fast.
#[derive(Debug, Clone, Copy, Default)]
pub struct MessagePack;

impl Codec for MessagePack {
    fn format(&self) -> u8 {
        FORMAT_MESSAGEPACK
    }

    fn encode_into(
        &self,
        value: &dyn erased_serde::Serialize,
        out: &mut Vec<u8>,
    ) -> Result<(), BoxError> {
        rmp_serde::encode::write_named(out, value)?;
        Ok(())
    }

    fn decode_with<'de>(
        &self,
        bytes: &'de [u8],
        visit: &mut dyn FnMut(
            &mut dyn erased_serde::Deserializer<'de>,
        ) -> Result<(), erased_serde::Error>,
    ) -> Result<(), BoxError> {
        let mut deserializer = rmp_serde::Deserializer::from_read_ref(bytes);
        visit(&mut <dyn erased_serde::Deserializer<'_>>::erase(
            &mut deserializer,
        ))?;
        Ok(())
    }
}

/// JSON through `serde_json`: readable in a store dump, larger and slower than MessagePack.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json;

impl Codec for Json {
    fn format(&self) -> u8 {
        FORMAT_JSON
    }

    fn encode_into(
        &self,
        value: &dyn erased_serde::Serialize,
        out: &mut Vec<u8>,
    ) -> Result<(), BoxError> {
        serde_json::to_writer(out, value)?;
        Ok(())
    }

    fn decode_with<'de>(
        &self,
        bytes: &'de [u8],
        visit: &mut dyn FnMut(
            &mut dyn erased_serde::Deserializer<'de>,
        ) -> Result<(), erased_serde::Error>,
    ) -> Result<(), BoxError> {
        let mut deserializer = serde_json::Deserializer::from_slice(bytes);
        visit(&mut <dyn erased_serde::Deserializer<'_>>::erase(
            &mut deserializer,
        ))?;
        deserializer.end()?;
        Ok(())
    }
}

/// Scratch space kept per thread by [`encode_value`] up to this many bytes.
const SCRATCH_KEPT: usize = 64 * 1024;

thread_local! {
    /// Where [`encode_value`] encodes before it copies the bytes out at their exact size.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Encodes `value` with `codec`, format byte first, into a vector of exactly its size.
///
/// The encoder grows its output as it goes; grown in the returned vector, a 400-byte value
/// cost three reallocations (a copy and a free each, under allocator locks the runtime's
/// threads share), and the vector kept up to twice the room it needed for as long as the
/// session held the value. Encoded into this thread's scratch vector, it costs one
/// allocation of the right size and one copy.
pub(crate) fn encode_value<T: Serialize + ?Sized>(
    codec: &dyn Codec,
    value: &T,
) -> Result<Vec<u8>, BoxError> {
    let encode = |out: &mut Vec<u8>| -> Result<(), BoxError> {
        out.push(codec.format());
        codec.encode_into(&value as &dyn erased_serde::Serialize, out)
    };
    SCRATCH.with(|scratch| {
        // A value whose serialization encodes another value on this thread finds the
        // scratch taken and encodes into a vector of its own.
        let Ok(mut scratch) = scratch.try_borrow_mut() else {
            let mut out = Vec::with_capacity(64);
            encode(&mut out)?;
            return Ok(out);
        };
        scratch.clear();
        let encoded = encode(&mut scratch).map(|()| scratch.to_vec());
        if scratch.capacity() > SCRATCH_KEPT {
            *scratch = Vec::new();
        }
        encoded
    })
}

/// Decodes bytes written by [`encode_value`], choosing the codec by the format byte: the
/// configured one if it matches, else a built-in one.
pub(crate) fn decode_value<T: DeserializeOwned>(
    configured: &dyn Codec,
    bytes: &[u8],
) -> Result<T, BoxError> {
    let (&format, payload) = bytes.split_first().ok_or("empty attribute value")?;
    let codec: &dyn Codec = if format == configured.format() {
        configured
    } else {
        match format {
            FORMAT_MESSAGEPACK => &MessagePack,
            FORMAT_JSON => &Json,
            other => return Err(format!("unknown attribute format byte {other:#04x}").into()),
        }
    };
    let mut decoded = None;
    codec.decode_with(payload, &mut |deserializer| {
        decoded = Some(erased_serde::deserialize::<T>(deserializer)?);
        Ok(())
    })?;
    decoded.ok_or_else(|| "codec produced no value".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Cart {
        items: Vec<String>,
        total_cents: u64,
    }

    fn cart() -> Cart {
        Cart {
            items: vec!["book".into(), "pen ✓".into()],
            total_cents: 1299,
        }
    }

    #[test]
    fn each_codec_round_trips_and_reads_the_other() {
        let packed = encode_value(&MessagePack, &cart()).unwrap();
        let json = encode_value(&Json, &cart()).unwrap();
        assert_eq!(packed[0], FORMAT_MESSAGEPACK);
        assert_eq!(json[0], FORMAT_JSON);
        for bytes in [&packed, &json] {
            assert_eq!(decode_value::<Cart>(&MessagePack, bytes).unwrap(), cart());
            assert_eq!(decode_value::<Cart>(&Json, bytes).unwrap(), cart());
        }
    }

    /// A value whose serialization encodes another value (the scratch is taken then).
    struct Nested;

    impl Serialize for Nested {
        fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            let inner = encode_value(&MessagePack, &cart()).map_err(serde::ser::Error::custom)?;
            serializer.serialize_bytes(&inner)
        }
    }

    #[test]
    fn encoded_values_are_exactly_sized_and_the_scratch_stays_small() {
        let long = "x".repeat(400);
        let bytes = encode_value(&MessagePack, &long).unwrap();
        assert_eq!(bytes.capacity(), bytes.len(), "no spare room kept");
        assert_eq!(decode_value::<String>(&MessagePack, &bytes).unwrap(), long);

        let nested = encode_value(&MessagePack, &Nested).unwrap();
        let inner: bytes::Bytes = decode_value(&MessagePack, &nested).unwrap();
        assert_eq!(decode_value::<Cart>(&MessagePack, &inner).unwrap(), cart());

        let huge = vec![7u8; SCRATCH_KEPT * 2];
        assert_eq!(encode_value(&Json, &huge).unwrap()[0], FORMAT_JSON);
        SCRATCH.with(|scratch| assert!(scratch.borrow().capacity() <= SCRATCH_KEPT));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bytes in [
            &[][..],
            &[0xff, 1, 2][..],
            &[FORMAT_MESSAGEPACK, 0xc1][..],
            &[FORMAT_JSON, b'{'][..],
        ] {
            assert!(decode_value::<Cart>(&MessagePack, bytes).is_err());
        }
        // Valid JSON followed by trailing garbage is rejected, not silently truncated.
        let mut json = encode_value(&Json, &cart()).unwrap();
        json.extend_from_slice(b"xyz");
        assert!(decode_value::<Cart>(&Json, &json).is_err());
    }
}
