//! The tower layer: Spring's `SessionRepositoryFilter` for axum.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use axum::response::Response;
use cookie::Cookie;
use http::header::{AUTHORIZATION, COOKIE, SET_COOKIE};
use http::{HeaderValue, Request};
use session_core::{Error, SessionId, SessionRepository};
use tower::{Layer, Service};

use crate::config::{CookieLifetime, IdTransport, LayerConfig, TokenConfig};
use crate::handle::SessionHandle;

/// Adds a [`SessionHandle`] to every request and finishes the session with the response.
///
/// - The id comes from the cookie (default), a header or `Authorization: Bearer`; a missing,
///   malformed, unknown or expired id is simply no session.
/// - The store is read only if the handler touches the session.
/// - At the end of the request: a session that was invalidated is deleted and the client told
///   to drop its id; a new session that got attributes is created; a changed session is saved
///   once (after rotating its id if [`SessionHandle::cycle_id`] was called); an unchanged one is
///   touched when more than [`LayerConfig::touch_after`] of its idle timeout has passed.
/// - A store error while finishing answers by the table of [`status_for`](crate::status_for)
///   ([`LayerConfig::error_status`], 503, with `Retry-After` when the store is unavailable),
///   never a panic. A session that ended while the request ran (its final save or touch is
///   `NotFound`: logged out elsewhere, expired) is no error: the response stands and the client
///   is told to drop its id.
#[derive(Clone)]
pub struct SessionLayer {
    repository: Arc<dyn SessionRepository>,
    config: Arc<LayerConfig>,
}

impl std::fmt::Debug for SessionLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionLayer")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl SessionLayer {
    /// A layer over `repository` with `config`.
    pub fn new(repository: Arc<dyn SessionRepository>, config: LayerConfig) -> Self {
        SessionLayer {
            repository,
            config: Arc::new(config),
        }
    }
}

impl<S> Layer<S> for SessionLayer {
    type Service = SessionService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SessionService {
            inner,
            repository: Arc::clone(&self.repository),
            config: Arc::clone(&self.config),
        }
    }
}

/// The service [`SessionLayer`] wraps around an inner service.
#[derive(Clone)]
pub struct SessionService<S> {
    inner: S,
    repository: Arc<dyn SessionRepository>,
    config: Arc<LayerConfig>,
}

impl<S> std::fmt::Debug for SessionService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionService").finish_non_exhaustive()
    }
}

impl<S, B> Service<Request<B>> for SessionService<S>
where
    S: Service<Request<B>, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let (incoming, token_issued_at) = match &self.config.transport {
            IdTransport::SignedToken(token) => match verified_claims(&request, token) {
                Some(claims) => (claims.sid.parse().ok(), Some(claims.iat)),
                None => (None, None),
            },
            transport => (resolve_id(&request, transport), None),
        };
        let handle = SessionHandle::new(Arc::clone(&self.repository), incoming, token_issued_at);
        request.extensions_mut().insert(handle.clone());
        // The clone that was made ready serves this call; a fresh clone waits for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let config = Arc::clone(&self.config);
        Box::pin(async move {
            let mut response = inner.call(request).await?;
            match finish(&handle, &config).await {
                Ok(Some(outcome)) => write_id(&mut response, &config, outcome),
                Ok(None) => {}
                Err(error) => {
                    response = crate::status::error_response(
                        &error,
                        config.error_status,
                        "while finishing a request",
                    );
                }
            }
            Ok(response)
        })
    }
}

/// What the client must be told about its id.
enum IdOutcome {
    /// Use this (new, rotated or refreshed) id, valid for this idle timeout, of this principal.
    Set(SessionId, Duration, Option<String>),
    /// Drop the id.
    Clear,
}

/// Claims of a signed session token.
#[derive(serde::Serialize, serde::Deserialize)]
struct Claims {
    /// The session id.
    sid: String,
    /// The principal, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sub: Option<String>,
    iat: u64,
    exp: u64,
}

fn token_validation() -> jsonwebtoken::Validation {
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    // Expired means expired: no grace period beyond the configured lifetime.
    validation.leeway = 0;
    validation.set_required_spec_claims(&["exp", "iat"]);
    validation
}

/// The claims of a valid token in `Authorization: Bearer`, if any.
fn verified_claims<B>(request: &Request<B>, token: &TokenConfig) -> Option<Claims> {
    let bearer = request
        .headers()
        .get(AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")?
        .trim();
    let key = jsonwebtoken::DecodingKey::from_secret(&token.secret);
    jsonwebtoken::decode::<Claims>(bearer, &key, &token_validation())
        .ok()
        .map(|data| data.claims)
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn resolve_id<B>(request: &Request<B>, transport: &IdTransport) -> Option<SessionId> {
    let headers = request.headers();
    match transport {
        IdTransport::Cookie(cookie) => headers
            .get_all(COOKIE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(Cookie::split_parse)
            .filter_map(Result::ok)
            .find(|c| c.name() == cookie.name)
            .and_then(|c| c.value().parse().ok()),
        IdTransport::Header(name) => headers.get(name)?.to_str().ok()?.trim().parse().ok(),
        // Verified separately (see `verified_claims`).
        IdTransport::SignedToken(_) => None,
        IdTransport::Bearer { .. } => headers
            .get(AUTHORIZATION)?
            .to_str()
            .ok()?
            .strip_prefix("Bearer ")?
            .trim()
            .parse()
            .ok(),
    }
}

async fn finish(handle: &SessionHandle, config: &LayerConfig) -> Result<Option<IdOutcome>, Error> {
    let repository = handle.repository();
    let mut state = handle.state().lock().await;
    if state.invalidate {
        let id = match &state.session {
            Some(Some(session)) if !session.is_new() => Some(session.id().clone()),
            Some(_) => None,
            None => state.incoming.clone(),
        };
        if let Some(id) = id {
            repository.delete(&id).await?;
        }
        return Ok(state.incoming.is_some().then_some(IdOutcome::Clear));
    }
    let cycle = state.cycle;
    let incoming = state.incoming.clone();
    // Cookies with an idle-timeout lifetime and signed tokens past half their life are
    // re-issued even when nothing else changed.
    let refresh = match (&config.transport, state.token_issued_at) {
        (IdTransport::SignedToken(token), Some(issued)) => {
            now_secs().saturating_sub(issued) * 2 >= token.lifetime.as_secs()
        }
        (IdTransport::Cookie(cookie), _) => cookie.lifetime == CookieLifetime::IdleTimeout,
        _ => false,
    };
    let Some(Some(session)) = state.session.as_mut() else {
        // Never loaded, or the request's id led nowhere and nothing was written: an unknown
        // id the client keeps sending is dropped.
        return Ok(match (&state.session, incoming) {
            (Some(None), Some(_)) => Some(IdOutcome::Clear),
            _ => None,
        });
    };
    if session.is_new() {
        if !session.is_modified() && !cycle {
            return Ok(None);
        }
        repository.create(session).await?;
        return Ok(Some(set(session)));
    }
    let before = session.id().clone();
    let written = async {
        if cycle {
            repository.change_id(session).await?;
        }
        if session.is_modified() || cycle {
            repository.save(session).await.map(|()| true)
        } else if touch_due(session, config.touch_after) {
            repository.touch(session.id()).await.map(|()| true)
        } else {
            Ok(false)
        }
    };
    match written.await {
        Ok(true) => {}
        Ok(false) if !refresh => return Ok(None),
        Ok(false) => {}
        // The session ended while this request ran (logged out elsewhere, deleted, expired):
        // the store is fine and the handler's response stands; the client drops its id.
        Err(Error::NotFound) => {
            tracing::debug!(session = %before, "the session ended during the request; its id is dropped");
            return Ok(Some(IdOutcome::Clear));
        }
        Err(error) => return Err(error),
    }
    let changed = session.id() != &before;
    Ok((changed || refresh).then(|| set(session)))
}

fn set(session: &session_core::Session) -> IdOutcome {
    IdOutcome::Set(
        session.id().clone(),
        session.idle_timeout(),
        session.principal().map(str::to_owned),
    )
}

fn touch_due(session: &session_core::Session, share: f64) -> bool {
    let since = SystemTime::now()
        .duration_since(session.last_accessed_at())
        .unwrap_or_default();
    since.as_secs_f64() > session.idle_timeout().as_secs_f64() * share
}

fn write_id(response: &mut Response, config: &LayerConfig, outcome: IdOutcome) {
    let headers = response.headers_mut();
    match &config.transport {
        IdTransport::Cookie(settings) => {
            let (value, max_age) = match &outcome {
                IdOutcome::Set(id, idle, _) => (
                    id.expose_secret().to_owned(),
                    (settings.lifetime == CookieLifetime::IdleTimeout).then_some(*idle),
                ),
                IdOutcome::Clear => (String::new(), Some(Duration::ZERO)),
            };
            let mut cookie = Cookie::build((settings.name.clone(), value))
                .http_only(settings.http_only)
                .secure(settings.secure)
                .same_site(settings.same_site)
                .path(settings.path.clone());
            if let Some(domain) = &settings.domain {
                cookie = cookie.domain(domain.clone());
            }
            if let Some(age) = max_age {
                let seconds = i64::try_from(age.as_secs()).unwrap_or(i64::MAX);
                cookie = cookie.max_age(cookie::time::Duration::seconds(seconds));
            }
            if let Ok(value) = HeaderValue::from_str(&cookie.build().to_string()) {
                headers.append(SET_COOKIE, value);
            }
        }
        IdTransport::Header(name)
        | IdTransport::Bearer {
            response_header: name,
        } => {
            let value = match &outcome {
                IdOutcome::Set(id, _, _) => id.expose_secret().to_owned(),
                IdOutcome::Clear => String::new(),
            };
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.insert(name.clone(), value);
            }
        }
        IdTransport::SignedToken(token) => {
            let value = match outcome {
                IdOutcome::Set(id, _, principal) => {
                    let iat = now_secs();
                    let claims = Claims {
                        sid: id.expose_secret().to_owned(),
                        sub: principal,
                        iat,
                        exp: iat + token.lifetime.as_secs(),
                    };
                    let key = jsonwebtoken::EncodingKey::from_secret(&token.secret);
                    match jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key) {
                        Ok(jwt) => jwt,
                        Err(error) => {
                            tracing::warn!(%error, "cannot sign a session token");
                            return;
                        }
                    }
                }
                IdOutcome::Clear => String::new(),
            };
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.insert(token.response_header.clone(), value);
            }
        }
    }
}
