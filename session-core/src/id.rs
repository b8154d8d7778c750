//! Session ids (secret bearer tokens) and session keys (what a store keeps).
//!
//! The two are different types on purpose: a [`SessionId`] authenticates a request and must
//! never appear in a store, a log or a listing; a [`SessionKey`] is a one-way hash of it that
//! stores index by, that listings return, and that can revoke a session but never resume one.

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use sha2::{Digest, Sha256};

/// Random bytes in a session id: 256 bits, twice the 128-bit floor so that guessing stays
/// hopeless even with billions of live sessions.
const ID_BYTES: usize = 32;
/// Length of the text form: unpadded URL-safe base64 of 32 random bytes.
pub const SESSION_ID_LEN: usize = 43;
/// Characters of a session id shown by `Debug`/`Display`; enough to correlate log lines.
const REDACTED_PREFIX: usize = 6;

/// A session id: the secret bearer token carried by the cookie or header.
///
/// Generated from the operating system's CSPRNG (256 bits), written as 43 characters of
/// unpadded URL-safe base64. [`FromStr`] accepts exactly what a generator could have produced,
/// so hostile input (empty, huge, non-ASCII, SQL or glob metacharacters, CR/LF) is rejected before
/// any I/O.
///
/// `Debug` and `Display` print only a short prefix, so an id that slips into a log line cannot
/// be replayed. Use [`SessionId::expose_secret`] where the full token is really needed (the cookie).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SessionId {
    /// ASCII (URL-safe base64), held inline: every store's `find` clones the id into the
    /// session it returns, and a `String` made that an allocation, freed on whichever thread
    /// dropped the session.
    token: [u8; SESSION_ID_LEN],
    /// Computed once: every lookup needs it.
    key: SessionKey,
}

impl SessionId {
    /// A fresh id from the OS CSPRNG.
    ///
    /// # Panics
    /// Only if the operating system cannot provide random bytes at all, in which case no
    /// secure id can exist and continuing would be worse than stopping.
    #[allow(clippy::expect_used)]
    pub fn generate() -> Self {
        let mut bytes = [0u8; ID_BYTES];
        getrandom::fill(&mut bytes).expect("the OS random number generator is unavailable");
        let mut token = [0u8; SESSION_ID_LEN];
        let written = URL_SAFE_NO_PAD
            .encode_slice(bytes, &mut token)
            .expect("32 bytes encode to 43 characters");
        debug_assert_eq!(written, SESSION_ID_LEN);
        Self::from_token(token)
    }

    fn from_token(token: [u8; SESSION_ID_LEN]) -> Self {
        let key = SessionKey(Sha256::digest(token).into());
        SessionId { token, key }
    }

    /// The full token, for the cookie or header that carries it. Never log it.
    pub fn expose_secret(&self) -> &str {
        // Base64 characters only (checked or generated): this cannot fall back.
        std::str::from_utf8(&self.token).unwrap_or_default()
    }

    /// The key a store keeps for this id: SHA-256 of the token.
    pub fn key(&self) -> SessionKey {
        self.key
    }
}

impl FromStr for SessionId {
    type Err = InvalidSessionId;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.len() != SESSION_ID_LEN {
            return Err(InvalidSessionId::Length(text.len()));
        }
        if !text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(InvalidSessionId::Charset);
        }
        // Strict decode also rejects non-canonical trailing bits, so each id has one spelling.
        match URL_SAFE_NO_PAD.decode(text) {
            Ok(bytes) if bytes.len() == ID_BYTES => {
                let mut token = [0u8; SESSION_ID_LEN];
                token.copy_from_slice(text.as_bytes());
                Ok(Self::from_token(token))
            }
            _ => Err(InvalidSessionId::Encoding),
        }
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SessionId({}…)",
            &self.expose_secret()[..REDACTED_PREFIX]
        )
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}…", &self.expose_secret()[..REDACTED_PREFIX])
    }
}

/// Why a text is not a session id. Carries no part of the input, which may be hostile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidSessionId {
    /// Not the length of a generated id.
    #[error("a session id has {SESSION_ID_LEN} characters, got {0}")]
    Length(usize),
    /// A character outside `A-Z a-z 0-9 - _`.
    #[error("a session id contains only URL-safe base64 characters")]
    Charset,
    /// Right length and characters, but not the canonical encoding of 32 bytes.
    #[error("a session id is the canonical encoding of 32 random bytes")]
    Encoding,
}

/// What a store keeps and indexes by: SHA-256 of a [`SessionId`].
///
/// A dump of the store or a listing (principal index, events) holds only keys, which cannot be
/// turned back into working tokens. A key can delete a session ("revoke that device") but never
/// load or resume one: no method that reads a session accepts a key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionKey([u8; 32]);

impl SessionKey {
    /// The key from its 32 raw bytes (as stored by a binary column).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        SessionKey(bytes)
    }

    /// The 32 raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lower-case hex, 64 characters: the form stores use inside key names.
    pub fn to_hex(&self) -> String {
        let mut out = String::with_capacity(64);
        self.push_hex(&mut out);
        out
    }

    /// Appends [`SessionKey::to_hex`] to `out`, for stores that build key names on every
    /// operation (no allocation of its own; `hex::encode` collects char by char, which showed
    /// in store profiles).
    pub fn push_hex(&self, out: &mut String) {
        let digits = self.hex_digits();
        // Hex digits are ASCII: this cannot fail.
        if let Ok(text) = std::str::from_utf8(&digits) {
            out.push_str(text);
        }
    }

    /// [`SessionKey::to_hex`] as 64 ASCII bytes, for stores that build key names on the stack.
    pub fn hex_digits(&self) -> [u8; 64] {
        let mut digits = [0u8; 64];
        // 32 bytes always fit 64 digits.
        let _ = hex::encode_to_slice(self.0, &mut digits);
        digits
    }

    /// Parses the 64-character lower- or upper-case hex form.
    pub fn from_hex(text: &str) -> Option<Self> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(text, &mut out).ok()?;
        Some(SessionKey(out))
    }
}

impl fmt::Display for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionKey({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_parse_back_and_differ() {
        let a = SessionId::generate();
        let b = SessionId::generate();
        assert_ne!(a, b);
        assert_eq!(a.expose_secret().len(), SESSION_ID_LEN);
        assert_eq!(a.expose_secret().parse::<SessionId>(), Ok(a.clone()));
    }

    #[test]
    fn debug_and_display_hide_the_token() {
        let id = SessionId::generate();
        let secret = id.expose_secret();
        assert!(!format!("{id:?}").contains(secret));
        assert!(!format!("{id}").contains(secret));
        assert!(format!("{id}").starts_with(&secret[..REDACTED_PREFIX]));
    }

    #[test]
    fn hostile_texts_are_rejected() {
        let long = "a".repeat(10_000);
        let hostile = [
            "",
            long.as_str(),
            "' OR 1=1 --",
            "*",
            "\r\n",
            "ééééééééééééééééééééééé",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA*",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        ];
        for text in hostile {
            assert!(text.parse::<SessionId>().is_err(), "{text:?} was accepted");
        }
        // Right length and alphabet, but the last character carries non-zero padding bits.
        let non_canonical = format!("{}B", "A".repeat(42));
        assert_eq!(
            non_canonical.parse::<SessionId>(),
            Err(InvalidSessionId::Encoding)
        );
    }

    #[test]
    fn key_is_sha256_of_the_token_and_round_trips_as_hex() {
        let id = SessionId::generate();
        let key = id.key();
        assert_eq!(key, id.key());
        assert_ne!(key.to_hex(), id.expose_secret());
        assert_eq!(SessionKey::from_hex(&key.to_hex()), Some(key));
        assert_eq!(SessionKey::from_hex("zz"), None);
    }
}
