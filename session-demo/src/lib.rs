//! The two-instance demo as a library, so that the end-to-end test runs exactly what the
//! binary runs.

use std::net::SocketAddr;
use std::sync::Arc;

use argon2::password_hash::{PasswordHash, PasswordVerifier};
use argon2::Argon2;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use session_axum::{
    CookieConfig, IdTransport, LayerConfig, SessionError, SessionHandle, SessionLayer,
};
use session_core::{SessionKey, SessionRepository};

/// A built-in demo user. Only the argon2 hash of the password is kept.
struct User {
    username: &'static str,
    name: &'static str,
    roles: &'static [&'static str],
    password_hash: &'static str,
}

/// Demo users: morris/morris, alice/wonderland, bob/builder.
const USERS: &[User] = &[
    User {
        username: "morris",
        name: "Morris Moss",
        roles: &["user", "admin"],
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$bW9ycmlzLWRlbW8tc2FsdA$MG/3XU6UViPE8s23uj7vimiL006VmxCBkDgRZjCBr1Y",
    },
    User {
        username: "alice",
        name: "Alice Liddell",
        roles: &["user"],
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$YWxpY2UtZGVtby1zYWx0$QfybV5nVgwMJcq7dEfRZOWbF1j5cnzLsWS74WGo3KbI",
    },
    User {
        username: "bob",
        name: "Bob Builder",
        roles: &["user"],
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$Ym9iLWRlbW8tc2FsdC0x$hlwKP0M1ume+dq/hntcw5RqFmkNmcjUg2fCTbUzwvHg",
    },
];

/// How the demo instances carry the session id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// The `SESSION` cookie (with `Secure` off: the demo serves plain HTTP on loopback).
    Cookie,
    /// The `X-Auth-Token` header.
    Header,
    /// `Authorization: Bearer`, new ids in `X-Auth-Token`.
    Bearer,
}

impl Transport {
    fn layer_config(self) -> LayerConfig {
        let transport = match self {
            // Plain HTTP on loopback: a Secure cookie would never come back.
            Transport::Cookie => IdTransport::Cookie(CookieConfig::default().with_secure(false)),
            Transport::Header => {
                IdTransport::Header(axum::http::HeaderName::from_static("x-auth-token"))
            }
            Transport::Bearer => IdTransport::Bearer {
                response_header: axum::http::HeaderName::from_static("x-auth-token"),
            },
        };
        LayerConfig::default().with_transport(transport)
    }
}

#[derive(Clone)]
struct AppState {
    store: Arc<dyn SessionRepository>,
    instance: String,
}

#[derive(Deserialize)]
struct Login {
    username: String,
    password: String,
}

#[derive(Serialize)]
struct Profile {
    username: &'static str,
    name: &'static str,
    roles: &'static [&'static str],
    served_by: String,
}

#[derive(Serialize)]
struct Device {
    key: String,
    created_at_ms: u128,
    last_accessed_at_ms: u128,
    expires_at_ms: u128,
}

type Reply<T> = Result<T, (StatusCode, Json<serde_json::Value>)>;

fn problem(status: StatusCode, message: &str) -> (StatusCode, Json<serde_json::Value>) {
    (status, Json(serde_json::json!({ "error": message })))
}

fn session_problem(error: session_core::Error) -> (StatusCode, Json<serde_json::Value>) {
    // A store without the feature (no principal index on memcached) says so; other store
    // trouble stays vague to the client (the log has the cause).
    let message = match &error {
        session_core::Error::Unsupported(_) => error.to_string(),
        _ => "session store problem".to_owned(),
    };
    let status = axum::response::IntoResponse::into_response(SessionError(error)).status();
    problem(status, &message)
}

fn find_user(username: &str) -> Option<&'static User> {
    USERS.iter().find(|user| user.username == username)
}

async fn login(
    State(app): State<AppState>,
    session: SessionHandle,
    Json(login): Json<Login>,
) -> Reply<Json<Profile>> {
    let user = find_user(&login.username);
    // Verify even for unknown users (against a real hash) so timing does not reveal who exists.
    let hash = user.map_or(USERS[0].password_hash, |u| u.password_hash);
    let password = login.password;
    let valid = tokio::task::spawn_blocking(move || {
        PasswordHash::new(hash)
            .map(|parsed| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok()
            })
            .unwrap_or(false)
    })
    .await
    .unwrap_or(false);
    let user = match user {
        Some(user) if valid => user,
        _ => {
            return Err(problem(
                StatusCode::UNAUTHORIZED,
                "wrong username or password",
            ))
        }
    };
    session
        .set_principal(Some(user.username))
        .await
        .map_err(session_problem)?;
    session.cycle_id().await.map_err(session_problem)?;
    Ok(Json(profile(user, &app)))
}

fn profile(user: &'static User, app: &AppState) -> Profile {
    Profile {
        username: user.username,
        name: user.name,
        roles: user.roles,
        served_by: app.instance.clone(),
    }
}

async fn current_user(session: &SessionHandle) -> Reply<&'static User> {
    let principal = session.principal().await.map_err(session_problem)?;
    principal
        .as_deref()
        .and_then(find_user)
        .ok_or_else(|| problem(StatusCode::UNAUTHORIZED, "not logged in"))
}

async fn get_profile(State(app): State<AppState>, session: SessionHandle) -> Reply<Json<Profile>> {
    Ok(Json(profile(current_user(&session).await?, &app)))
}

async fn logout(session: SessionHandle) -> StatusCode {
    session.invalidate().await;
    StatusCode::NO_CONTENT
}

fn millis(time: std::time::SystemTime) -> u128 {
    time.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

async fn sessions(State(app): State<AppState>, session: SessionHandle) -> Reply<Json<Vec<Device>>> {
    let user = current_user(&session).await?;
    let devices = app
        .store
        .find_by_principal(user.username)
        .await
        .map_err(session_problem)?;
    Ok(Json(
        devices
            .into_iter()
            .map(|info| Device {
                key: info.key.to_hex(),
                created_at_ms: millis(info.created_at),
                last_accessed_at_ms: millis(info.last_accessed_at),
                expires_at_ms: millis(info.expires_at),
            })
            .collect(),
    ))
}

async fn revoke(
    State(app): State<AppState>,
    session: SessionHandle,
    Json(key): Json<String>,
) -> Reply<StatusCode> {
    let user = current_user(&session).await?;
    let key = SessionKey::from_hex(&key)
        .ok_or_else(|| problem(StatusCode::BAD_REQUEST, "not a session key"))?;
    let devices = app
        .store
        .find_by_principal(user.username)
        .await
        .map_err(session_problem)?;
    if !devices.iter().any(|device| device.key == key) {
        return Err(problem(StatusCode::NOT_FOUND, "no such session of yours"));
    }
    app.store
        .delete_by_key(&key)
        .await
        .map_err(session_problem)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn logout_everywhere(
    State(app): State<AppState>,
    session: SessionHandle,
) -> Reply<Json<serde_json::Value>> {
    let user = current_user(&session).await?;
    let ended = app
        .store
        .delete_by_principal(user.username)
        .await
        .map_err(session_problem)?;
    session.invalidate().await;
    Ok(Json(serde_json::json!({ "ended_sessions": ended })))
}

/// One service instance: the demo's routes behind the session layer.
pub fn router(store: Arc<dyn SessionRepository>, transport: Transport, instance: &str) -> Router {
    let state = AppState {
        store: Arc::clone(&store),
        instance: instance.to_owned(),
    };
    Router::new()
        .route("/login", post(login))
        .route("/profile", get(get_profile))
        .route("/logout", post(logout))
        .route("/sessions", get(sessions))
        .route("/sessions/revoke", post(revoke))
        .route("/logout-everywhere", post(logout_everywhere))
        .with_state(state)
        .layer(SessionLayer::new(store, transport.layer_config()))
}

/// Serves one instance on `listener` until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, router: Router) -> std::io::Result<()> {
    axum::serve(listener, router).await
}

/// `router` with `GET /metrics`: the process's metrics in Prometheus text (outside the session
/// layer).
pub fn with_metrics(
    router: Router,
    metrics: metrics_exporter_prometheus::PrometheusHandle,
) -> Router {
    router.route(
        "/metrics",
        get(move || {
            let metrics = metrics.clone();
            async move { metrics.render() }
        }),
    )
}

/// Binds `addr` and opens the store again for this instance (as a separate process would),
/// instrumented: a span and metrics per store call.
pub async fn instance(
    addr: SocketAddr,
    store_url: &str,
    transport: Transport,
) -> Result<(tokio::net::TcpListener, Router), Box<dyn std::error::Error + Send + Sync>> {
    instance_with(addr, session_store::StoreConfig::new(store_url), transport).await
}

/// [`instance`] on the store `config` describes (e.g. a migration between two stores); the store
/// is always instrumented.
pub async fn instance_with(
    addr: SocketAddr,
    config: session_store::StoreConfig,
    transport: Transport,
) -> Result<(tokio::net::TcpListener, Router), Box<dyn std::error::Error + Send + Sync>> {
    let store = session_store::open_with(&config.with_instrument(true)).await?;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let name = format!("instance on :{}", listener.local_addr()?.port());
    Ok((listener, router(store, transport, &name)))
}
