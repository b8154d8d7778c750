//! The signed-token (JWT) mode: forged, tampered, expired and revoked tokens, and refresh.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::routing::{get, post};
use axum::Router;
use session_axum::{
    IdTransport, LayerConfig, SessionError, SessionHandle, SessionLayer, TokenConfig,
};
use tower::ServiceExt as _;

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-demo-only";

async fn login(session: SessionHandle) -> Result<&'static str, SessionError> {
    session.set_principal(Some("morris")).await?;
    session.cycle_id().await?;
    Ok("ok")
}

async fn whoami(session: SessionHandle) -> Result<(StatusCode, String), SessionError> {
    Ok(match session.principal().await? {
        Some(user) => (StatusCode::OK, user),
        None => (StatusCode::UNAUTHORIZED, String::new()),
    })
}

async fn logout(session: SessionHandle) -> StatusCode {
    session.invalidate().await;
    StatusCode::NO_CONTENT
}

fn app(lifetime: Duration) -> Router {
    let token = TokenConfig::new(SECRET).with_lifetime(lifetime);
    Router::new()
        .route("/login", post(login))
        .route("/whoami", get(whoami))
        .route("/logout", post(logout))
        .layer(SessionLayer::new(
            Arc::new(session_memory::MemoryStore::new()),
            LayerConfig::default().with_transport(IdTransport::SignedToken(token)),
        ))
}

async fn call(
    app: &Router,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> (StatusCode, Option<String>) {
    let mut request = Request::builder().method(method).uri(path);
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let issued = response
        .headers()
        .get("x-auth-token")
        .map(|v| v.to_str().unwrap().to_owned());
    (response.status(), issued)
}

fn claims(token: &str) -> serde_json::Value {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

#[tokio::test]
async fn login_issues_a_token_that_carries_the_user() {
    let app = app(Duration::from_secs(600));
    let (status, token) = call(&app, "POST", "/login", None).await;
    assert_eq!(status, StatusCode::OK);
    let token = token.expect("a token");
    let claims = claims(&token);
    assert_eq!(claims["sub"], "morris");
    assert_eq!(claims["sid"].as_str().unwrap().len(), 43);
    assert_eq!(
        call(&app, "GET", "/whoami", Some(&token)).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn forged_and_tampered_tokens_are_no_session() {
    let app = app(Duration::from_secs(600));
    let token = call(&app, "POST", "/login", None).await.1.unwrap();
    // Signed with another key.
    let forged = {
        let claims = claims(&token);
        jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(b"not-the-server-secret"),
        )
        .unwrap()
    };
    // The right signature over a changed payload.
    let mut parts: Vec<&str> = token.split('.').collect();
    let tampered_payload = {
        use base64::Engine as _;
        let mut claims = claims(&token);
        claims["sub"] = "admin".into();
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(serde_json::to_vec(&claims).unwrap())
    };
    parts[1] = &tampered_payload;
    let tampered = parts.join(".");
    for bad in [forged.as_str(), tampered.as_str(), "not.a.jwt", ""] {
        assert_eq!(
            call(&app, "GET", "/whoami", Some(bad)).await.0,
            StatusCode::UNAUTHORIZED,
            "{bad}"
        );
    }
}

#[tokio::test]
async fn expired_tokens_are_no_session_even_if_the_session_lives() {
    let app = app(Duration::from_secs(1));
    let token = call(&app, "POST", "/login", None).await.1.unwrap();
    assert_eq!(
        call(&app, "GET", "/whoami", Some(&token)).await.0,
        StatusCode::OK
    );
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    assert_eq!(
        call(&app, "GET", "/whoami", Some(&token)).await.0,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn logout_revokes_an_unexpired_token() {
    let app = app(Duration::from_secs(600));
    let token = call(&app, "POST", "/login", None).await.1.unwrap();
    let (status, cleared) = call(&app, "POST", "/logout", Some(&token)).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(cleared.as_deref(), Some(""));
    assert_eq!(
        call(&app, "GET", "/whoami", Some(&token)).await.0,
        StatusCode::UNAUTHORIZED
    );
}

/// JWT times are whole seconds (`iat` is floored), so the waits below leave a full second of
/// margin on each side.
#[tokio::test]
async fn a_token_past_half_its_life_is_refreshed() {
    let app = app(Duration::from_secs(4));
    let token = call(&app, "POST", "/login", None).await.1.unwrap();
    let (_, fresh_early) = call(&app, "GET", "/whoami", Some(&token)).await;
    assert_eq!(fresh_early, None, "no refresh early in the token's life");
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    let (status, refreshed) = call(&app, "GET", "/whoami", Some(&token)).await;
    assert_eq!(status, StatusCode::OK);
    let refreshed = refreshed.expect("a refreshed token");
    assert!(claims(&refreshed)["exp"].as_u64() > claims(&token)["exp"].as_u64());
    assert_eq!(claims(&refreshed)["sid"], claims(&token)["sid"]);
    tokio::time::sleep(Duration::from_millis(3_100)).await;
    assert_eq!(
        call(&app, "GET", "/whoami", Some(&token)).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        call(&app, "GET", "/whoami", Some(&refreshed)).await.0,
        StatusCode::OK
    );
}
