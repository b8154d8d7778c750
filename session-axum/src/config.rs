//! How the layer carries the id and finishes a request.

use std::time::Duration;

use http::{HeaderName, StatusCode};

/// `SameSite` attribute of the session cookie.
pub use cookie::SameSite;

/// Where the session id travels.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum IdTransport {
    /// A cookie (the default), see [`CookieConfig`].
    Cookie(CookieConfig),
    /// A request header carrying the bare id; new ids are sent back in the same response
    /// header (Spring's `X-Auth-Token` style, for clients that are not browsers).
    Header(HeaderName),
    /// `Authorization: Bearer <id>` on requests; new ids are sent back in `response_header`.
    Bearer {
        /// Response header that carries a new or rotated id.
        response_header: HeaderName,
    },
    /// `Authorization: Bearer <JWT>`: the id travels inside a signed token with the user's
    /// claims (see [`TokenConfig`]). The server still loads the session, so logout revokes a
    /// token before it expires.
    SignedToken(TokenConfig),
}

/// The signed-token (JWT, HS256) mode.
///
/// The token's claims are `sid` (the session id), `sub` (the principal, if any), `iat` and
/// `exp`. A token that is forged, tampered with or expired is no session. A new token is sent
/// in `response_header` whenever the id is new or rotated, and when the presented token is past
/// half its lifetime (refresh), as long as the session lives.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TokenConfig {
    /// HMAC secret (at least 32 random bytes).
    pub secret: Vec<u8>,
    /// How long a token is valid.
    pub lifetime: Duration,
    /// Response header that carries new tokens.
    pub response_header: HeaderName,
}

impl TokenConfig {
    /// A config with `secret`, 15-minute tokens, sent back in `x-auth-token`.
    pub fn new(secret: impl Into<Vec<u8>>) -> Self {
        TokenConfig {
            secret: secret.into(),
            lifetime: Duration::from_secs(15 * 60),
            response_header: HeaderName::from_static("x-auth-token"),
        }
    }

    /// Sets [`TokenConfig::lifetime`].
    pub fn with_lifetime(mut self, lifetime: Duration) -> Self {
        self.lifetime = lifetime;
        self
    }
}

impl std::fmt::Debug for TokenConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenConfig")
            .field("secret", &"***")
            .field("lifetime", &self.lifetime)
            .field("response_header", &self.response_header)
            .finish()
    }
}

/// How long the browser keeps the session cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CookieLifetime {
    /// No `Max-Age`: the browser drops the cookie when it closes (the session itself still
    /// expires on the server).
    BrowserSession,
    /// `Max-Age` equal to the session's idle timeout, refreshed whenever the cookie is sent.
    IdleTimeout,
}

/// The session cookie. Defaults: name `SESSION`, `HttpOnly`, `Secure`, `SameSite=Lax`,
/// `Path=/`, no domain, browser-session lifetime.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CookieConfig {
    /// Cookie name.
    pub name: String,
    /// `HttpOnly`: scripts cannot read the token.
    pub http_only: bool,
    /// `Secure`: sent over HTTPS only. Turn off only for plain-HTTP development.
    pub secure: bool,
    /// `SameSite` policy.
    pub same_site: SameSite,
    /// `Path`.
    pub path: String,
    /// `Domain`, if the cookie must reach sibling hosts.
    pub domain: Option<String>,
    /// `Max-Age` policy.
    pub lifetime: CookieLifetime,
}

impl Default for CookieConfig {
    fn default() -> Self {
        CookieConfig {
            name: "SESSION".into(),
            http_only: true,
            secure: true,
            same_site: SameSite::Lax,
            path: "/".into(),
            domain: None,
            lifetime: CookieLifetime::BrowserSession,
        }
    }
}

impl CookieConfig {
    /// Sets [`CookieConfig::name`].
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Sets [`CookieConfig::secure`].
    pub fn with_secure(mut self, secure: bool) -> Self {
        self.secure = secure;
        self
    }

    /// Sets [`CookieConfig::same_site`].
    pub fn with_same_site(mut self, same_site: SameSite) -> Self {
        self.same_site = same_site;
        self
    }

    /// Sets [`CookieConfig::domain`].
    pub fn with_domain(mut self, domain: Option<String>) -> Self {
        self.domain = domain;
        self
    }

    /// Sets [`CookieConfig::lifetime`].
    pub fn with_lifetime(mut self, lifetime: CookieLifetime) -> Self {
        self.lifetime = lifetime;
        self
    }
}

/// Settings of a [`SessionLayer`](crate::SessionLayer).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct LayerConfig {
    /// Where the id travels.
    pub transport: IdTransport,
    /// An unchanged session is touched only once more than this share of its idle timeout has
    /// passed since its last access, so most reads cost one round trip, not two.
    pub touch_after: f64,
    /// Status answered when the store fails while finishing a request.
    pub error_status: StatusCode,
}

impl Default for LayerConfig {
    fn default() -> Self {
        LayerConfig {
            transport: IdTransport::Cookie(CookieConfig::default()),
            touch_after: 0.25,
            error_status: StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl LayerConfig {
    /// Sets [`LayerConfig::transport`].
    pub fn with_transport(mut self, transport: IdTransport) -> Self {
        self.transport = transport;
        self
    }

    /// Sets [`LayerConfig::touch_after`] (clamped to `0.0..=1.0`).
    pub fn with_touch_after(mut self, share: f64) -> Self {
        self.touch_after = share.clamp(0.0, 1.0);
        self
    }

    /// Sets [`LayerConfig::error_status`].
    pub fn with_error_status(mut self, status: StatusCode) -> Self {
        self.error_status = status;
        self
    }
}
