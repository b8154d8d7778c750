//! One URL reader and one table of schemes for every store.
//!
//! A store URL is `scheme://target[,target...][?option=value&...]`. Store options are named
//! `session_*`; a store either refuses every option it does not know ([`StoreUrl::finish`]) or,
//! if it documents that it passes driver options on, refuses unknown `session_*` options and
//! hands the rest to its driver ([`StoreUrl::finish_passing_driver_options`]).

use std::time::Duration;

use crate::error::{Error, Result};

/// A URL scheme and the store behind it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Scheme {
    /// The scheme as written before `://`.
    pub scheme: &'static str,
    /// The crate that implements the store.
    pub store_crate: &'static str,
    /// The store kind (`memory`, `sqlite`, `postgres`, `mysql`, `redis`, `memcached`, `mongo`),
    /// which is also the cargo feature of `session-store` that compiles it in.
    pub kind: &'static str,
}

const fn scheme(scheme: &'static str, store_crate: &'static str, kind: &'static str) -> Scheme {
    Scheme {
        scheme,
        store_crate,
        kind,
    }
}

/// Every scheme a store of this workspace reads.
pub const SCHEMES: &[Scheme] = &[
    scheme("memory", "session-memory", "memory"),
    scheme("sqlite", "session-sql", "sqlite"),
    scheme("postgres", "session-sql", "postgres"),
    scheme("postgresql", "session-sql", "postgres"),
    scheme("mysql", "session-sql", "mysql"),
    scheme("mariadb", "session-sql", "mysql"),
    scheme("redis", "session-redis", "redis"),
    scheme("rediss", "session-redis", "redis"),
    scheme("redis+cluster", "session-redis", "redis"),
    scheme("memcache", "session-memcached", "memcached"),
    scheme("memcached", "session-memcached", "memcached"),
    scheme("mongodb", "session-mongo", "mongo"),
    scheme("mongodb+srv", "session-mongo", "mongo"),
];

/// The scheme of `url` (of its first target); an unknown one is [`Error::Config`] listing the
/// known schemes.
pub fn scheme_of(url: &str) -> Result<&'static Scheme> {
    let first = url.trim().split([',', '?']).next().unwrap_or("");
    let name = first.split_once("://").map_or("", |(scheme, _)| scheme);
    SCHEMES
        .iter()
        .find(|s| s.scheme.eq_ignore_ascii_case(name))
        .ok_or_else(|| {
            let known: Vec<String> = SCHEMES.iter().map(|s| format!("{}://", s.scheme)).collect();
            Error::Config(format!(
                "unknown session store scheme `{name}` (known: {})",
                known.join(", ")
            ))
        })
}

/// A parsed store URL: scheme, targets, and the options a store takes one by one.
///
/// ```
/// use std::time::Duration;
/// use session_core::raw::StoreUrl;
///
/// let mut url = StoreUrl::parse("memcache://a:11211,b:11211?session_prefix=app&session_timeout_ms=250")?;
/// assert_eq!(url.scheme(), "memcache");
/// assert_eq!(url.targets(), ["a:11211", "b:11211"]);
/// assert_eq!(url.take_str("session_prefix").as_deref(), Some("app"));
/// assert_eq!(url.take_millis("session_timeout_ms")?, Some(Duration::from_millis(250)));
/// url.finish("memcached")?;
///
/// let mut url = StoreUrl::parse("memcache://a?session_prefx=app")?;
/// let _ = url.take_str("session_prefix");
/// let error = url.finish("memcached").unwrap_err().to_string();
/// assert!(error.contains("session_prefx") && error.contains("session_prefix"));
/// # Ok::<(), session_core::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct StoreUrl {
    scheme: String,
    base: String,
    targets: Vec<String>,
    options: Vec<UrlOption>,
    asked: Vec<&'static str>,
}

#[derive(Debug, Clone)]
struct UrlOption {
    name: String,
    raw: String,
    value: String,
    taken: bool,
}

impl StoreUrl {
    /// Splits `url` into scheme, comma-separated targets (each without its `scheme://`; a
    /// target may repeat the scheme) and `name=value` options (values percent-decoded).
    pub fn parse(url: &str) -> Result<Self> {
        let url = url.trim();
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let Some((scheme, _)) = base.split_once("://") else {
            return Err(Error::Config(format!(
                "not a store URL (scheme://...): {}",
                redact_url(base)
            )));
        };
        let mut targets = Vec::new();
        for target in base.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let rest = match target.split_once("://") {
                Some((s, rest)) if s.eq_ignore_ascii_case(scheme) => rest,
                Some((other, _)) => {
                    return Err(Error::Config(format!(
                        "a store URL mixes the schemes `{scheme}` and `{other}`"
                    )))
                }
                None => target,
            };
            targets.push(rest.to_owned());
        }
        let mut options = Vec::new();
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let (name, raw) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_encoding::percent_decode_str(raw)
                .decode_utf8()
                .map_err(|_| Error::Config(format!("store URL option `{name}` is not UTF-8 text")))?
                .into_owned();
            options.push(UrlOption {
                name: name.to_owned(),
                raw: raw.to_owned(),
                value,
                taken: false,
            });
        }
        Ok(StoreUrl {
            scheme: scheme.to_ascii_lowercase(),
            base: base.to_owned(),
            targets,
            options,
            asked: Vec::new(),
        })
    }

    /// The scheme, lower-case.
    pub fn scheme(&self) -> &str {
        &self.scheme
    }

    /// The targets between `scheme://` and `?`, comma-separated in the URL (hosts, paths,
    /// credentials as written).
    pub fn targets(&self) -> &[String] {
        &self.targets
    }

    /// The URL before `?`, as written.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The value of option `name`, taking it (a repeated option: the last one).
    pub fn take_str(&mut self, name: &'static str) -> Option<String> {
        self.asked.push(name);
        let mut found = None;
        for option in self.options.iter_mut().filter(|o| o.name == name) {
            option.taken = true;
            found = Some(option.value.clone());
        }
        found
    }

    /// Option `name` as a whole number; anything else is [`Error::Config`].
    pub fn take_u64(&mut self, name: &'static str) -> Result<Option<u64>> {
        self.take_str(name)
            .map(|value| {
                value.parse::<u64>().map_err(|_| {
                    Error::Config(format!(
                        "store URL option `{name}` needs a whole number, not `{value}`"
                    ))
                })
            })
            .transpose()
    }

    /// Option `name` as a whole number of milliseconds.
    pub fn take_millis(&mut self, name: &'static str) -> Result<Option<Duration>> {
        Ok(self.take_u64(name)?.map(Duration::from_millis))
    }

    /// Option `name` as `true`/`false` (also `1`/`0`).
    pub fn take_bool(&mut self, name: &'static str) -> Result<Option<bool>> {
        self.take_str(name)
            .map(|value| {
                parse_flag(&value).ok_or_else(|| {
                    Error::Config(format!(
                        "store URL option `{name}` needs true or false, not `{value}`"
                    ))
                })
            })
            .transpose()
    }

    /// Ends reading for a store that takes no other options: an option nobody took is
    /// [`Error::Config`] naming it and the options the store asked for.
    pub fn finish(self, store: &str) -> Result<()> {
        match self.options.iter().find(|o| !o.taken) {
            Some(option) => Err(self.unknown(store, &option.name)),
            None => Ok(()),
        }
    }

    /// Ends reading for a store that passes its driver's options on: an unknown `session_*`
    /// option is [`Error::Config`] as in [`StoreUrl::finish`]; every other option is returned
    /// as `name=value` (as written), for the driver's URL.
    pub fn finish_passing_driver_options(self, store: &str) -> Result<Vec<String>> {
        if let Some(option) = self
            .options
            .iter()
            .find(|o| !o.taken && o.name.starts_with("session_"))
        {
            return Err(self.unknown(store, &option.name));
        }
        Ok(self
            .options
            .iter()
            .filter(|o| !o.taken)
            .map(|o| format!("{}={}", o.name, o.raw))
            .collect())
    }

    fn unknown(&self, store: &str, name: &str) -> Error {
        let mut known = self.asked.clone();
        known.sort_unstable();
        known.dedup();
        Error::Config(format!(
            "unknown {store} store option `{name}` (known: {})",
            known.join(", ")
        ))
    }
}

/// A switch as a store URL option or a setting reads it: `true`/`false`, also `1`/`0`.
pub fn parse_flag(value: &str) -> Option<bool> {
    match value {
        "true" | "1" => Some(true),
        "false" | "0" => Some(false),
        _ => None,
    }
}

/// `scheme://user:***@host/...`: the URL with its password hidden, for `Debug` and log lines of
/// store configurations. URLs without a password are returned as they are.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => match rest[..at].split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***{}", &rest[at..]),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_are_hidden_and_nothing_else_changes() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db:5432/app"),
            "postgres://app:***@db:5432/app"
        );
        assert_eq!(
            redact_url("redis://:s3cret@h:6379/0"),
            "redis://:***@h:6379/0"
        );
        assert_eq!(redact_url("redis://h:6379"), "redis://h:6379");
        assert_eq!(redact_url("sqlite://a@b.db"), "sqlite://a@b.db");
        assert_eq!(redact_url("not a url"), "not a url");
    }
}
