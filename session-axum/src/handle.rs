//! The per-request session handle and its extractor.

use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::FromRequestParts;
use axum::response::{IntoResponse, Response};
use http::request::Parts;
use http::StatusCode;
use serde::de::DeserializeOwned;
use serde::Serialize;
use session_core::{Error, SessionId, SessionRepository, SessionRepositoryExt};
use tokio::sync::Mutex;

/// The session of the current request, loaded from the store on first use.
///
/// Cheap to clone; every clone is the same session. Changes are written once, when the
/// response is ready (see [`SessionLayer`](crate::SessionLayer)).
#[derive(Clone)]
pub struct SessionHandle {
    repository: Arc<dyn SessionRepository>,
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for SessionHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionHandle").finish_non_exhaustive()
    }
}

pub(crate) struct State {
    /// The id the request carried, if it parsed.
    pub(crate) incoming: Option<SessionId>,
    /// When the presented signed token was issued (epoch seconds), in token mode.
    pub(crate) token_issued_at: Option<u64>,
    /// `None` until loaded; then the stored session, or a new one once something was written.
    pub(crate) session: Option<Option<session_core::Session>>,
    pub(crate) cycle: bool,
    pub(crate) invalidate: bool,
}

impl SessionHandle {
    pub(crate) fn new(
        repository: Arc<dyn SessionRepository>,
        incoming: Option<SessionId>,
        token_issued_at: Option<u64>,
    ) -> Self {
        SessionHandle {
            repository,
            state: Arc::new(Mutex::new(State {
                incoming,
                token_issued_at,
                session: None,
                cycle: false,
                invalidate: false,
            })),
        }
    }

    pub(crate) fn state(&self) -> &Arc<Mutex<State>> {
        &self.state
    }

    pub(crate) fn repository(&self) -> &Arc<dyn SessionRepository> {
        &self.repository
    }

    /// Runs `f` on the loaded session (`None` if the request has none); loads it first.
    pub async fn read<R>(
        &self,
        f: impl FnOnce(Option<&session_core::Session>) -> R,
    ) -> Result<R, Error> {
        let mut state = self.state.lock().await;
        load(&self.repository, &mut state).await?;
        Ok(f(state.session.as_ref().and_then(Option::as_ref)))
    }

    /// Runs `f` on the session, creating a new one (stored at the end of the request) if the
    /// request has none.
    pub async fn write<R>(
        &self,
        f: impl FnOnce(&mut session_core::Session) -> R,
    ) -> Result<R, Error> {
        let mut state = self.state.lock().await;
        load(&self.repository, &mut state).await?;
        state.invalidate = false;
        let session = state
            .session
            .get_or_insert(None)
            .get_or_insert_with(|| self.repository.new_session());
        Ok(f(session))
    }

    /// Whether the request carries a live session.
    pub async fn exists(&self) -> Result<bool, Error> {
        self.read(|session| session.is_some_and(|s| !s.is_new()))
            .await
    }

    /// Decodes attribute `name`.
    pub async fn get<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, Error> {
        self.read(|session| session.map_or(Ok(None), |s| s.get(name)))
            .await?
    }

    /// Sets attribute `name`.
    pub async fn insert<T: Serialize + ?Sized>(&self, name: &str, value: &T) -> Result<(), Error> {
        self.write(|session| session.insert(name, value)).await?
    }

    /// Removes attribute `name`; whether it was there.
    pub async fn remove(&self, name: &str) -> Result<bool, Error> {
        let present = self
            .read(|session| session.is_some_and(|s| s.contains(name)))
            .await?;
        if present {
            self.write(|session| session.remove(name)).await?;
        }
        Ok(present)
    }

    /// The principal (user) of the session.
    pub async fn principal(&self) -> Result<Option<String>, Error> {
        self.read(|session| session.and_then(|s| s.principal().map(str::to_owned)))
            .await
    }

    /// Sets the principal, e.g. at login (indexed for "my devices" and "log out everywhere").
    pub async fn set_principal(&self, principal: Option<&str>) -> Result<(), Error> {
        self.write(|session| session.set_principal(principal))
            .await?
    }

    /// When the session expires unless used again, if there is one.
    pub async fn expires_at(&self) -> Result<Option<SystemTime>, Error> {
        self.read(|session| session.map(|s| s.expires_at())).await
    }

    /// Gives the session a new id at the end of the request: call it at login and on any
    /// privilege change, so that an id planted before login is worth nothing (session
    /// fixation).
    pub async fn cycle_id(&self) -> Result<(), Error> {
        self.write(|_| ()).await?;
        self.state.lock().await.cycle = true;
        Ok(())
    }

    /// Ends the session (logout): it is deleted at the end of the request and the client is
    /// told to drop its id.
    pub async fn invalidate(&self) {
        let mut state = self.state.lock().await;
        state.invalidate = true;
    }
}

async fn load(repository: &Arc<dyn SessionRepository>, state: &mut State) -> Result<(), Error> {
    if state.session.is_none() {
        state.session = Some(match &state.incoming {
            Some(id) => repository.find(id).await?,
            None => None,
        });
    }
    Ok(())
}

/// The handle is put into the request by [`SessionLayer`](crate::SessionLayer); without the
/// layer the extractor fails with 500.
impl<S: Send + Sync> FromRequestParts<S> for SessionHandle {
    type Rejection = (StatusCode, &'static str);

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<SessionHandle>().cloned().ok_or((
            StatusCode::INTERNAL_SERVER_ERROR,
            "SessionLayer is not installed",
        ))
    }
}

/// A session error as a response, by the table in [`status_for`](crate::status_for): 503 with
/// `Retry-After` when the store is unavailable, 413 when the session would be too large, 400
/// for invalid input, 409 for an optimistic conflict, 501 for a feature the store lacks, 500
/// otherwise. Handlers can return
/// `Result<_, SessionError>` and use `?` on the handle's methods.
#[derive(Debug)]
pub struct SessionError(pub Error);

impl From<Error> for SessionError {
    fn from(error: Error) -> Self {
        SessionError(error)
    }
}

impl IntoResponse for SessionError {
    fn into_response(self) -> Response {
        crate::status::error_response(&self.0, StatusCode::SERVICE_UNAVAILABLE, "in a handler")
    }
}
