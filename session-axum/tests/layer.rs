//! The layer over real stores (in-memory and Redis), driven through axum's router.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use session_axum::{
    CookieConfig, IdTransport, LayerConfig, SessionError, SessionHandle, SessionLayer,
};
use session_conformance::namespace;
use session_core::{SessionId, SessionRepository, SessionSettings};
use session_test_harness::{is_required, provision, Backend, ServerProcess};
use tower::ServiceExt as _;

async fn read_visits(session: SessionHandle) -> Result<String, SessionError> {
    Ok(session.get::<u64>("visits").await?.unwrap_or(0).to_string())
}

async fn add_visit(session: SessionHandle) -> Result<String, SessionError> {
    let visits = session.get::<u64>("visits").await?.unwrap_or(0) + 1;
    session.insert("visits", &visits).await?;
    Ok(visits.to_string())
}

async fn login(session: SessionHandle) -> Result<&'static str, SessionError> {
    session.set_principal(Some("morris")).await?;
    session.cycle_id().await?;
    Ok("ok")
}

async fn logout(session: SessionHandle) -> &'static str {
    session.invalidate().await;
    "bye"
}

async fn untouched() -> &'static str {
    "no session here"
}

fn app(store: Arc<dyn SessionRepository>, config: LayerConfig) -> Router {
    Router::new()
        .route("/visits", get(read_visits).post(add_visit))
        .route("/login", post(login))
        .route("/logout", post(logout))
        .route("/plain", get(untouched))
        .layer(SessionLayer::new(store, config))
}

async fn call(
    app: &Router,
    method: &str,
    path: &str,
    id: Option<&str>,
    transport: &IdTransport,
) -> Response {
    let mut request = Request::builder().method(method).uri(path);
    if let Some(id) = id {
        request = match transport {
            IdTransport::Cookie(cookie) => {
                request.header(header::COOKIE, format!("other=1; {}={id}", cookie.name))
            }
            IdTransport::Header(name) => request.header(name, id),
            IdTransport::Bearer { .. } => {
                request.header(header::AUTHORIZATION, format!("Bearer {id}"))
            }
            _ => unreachable!("transport"),
        };
    }
    app.clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap()
}

/// The id the response hands out: `Some("")` means "drop your id".
fn issued(response: &Response, transport: &IdTransport) -> Option<String> {
    match transport {
        IdTransport::Cookie(cookie) => response
            .headers()
            .get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|v| cookie::Cookie::parse(v.to_owned()).ok())
            .find(|c| c.name() == cookie.name)
            .map(|c| c.value().to_owned()),
        IdTransport::Header(name)
        | IdTransport::Bearer {
            response_header: name,
        } => response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned()),
        _ => unreachable!("transport"),
    }
}

async fn text(response: Response) -> String {
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// The whole life of a session through the layer, on one store and one transport.
async fn life_cycle(store: Arc<dyn SessionRepository>, transport: IdTransport) {
    let app = app(
        Arc::clone(&store),
        LayerConfig::default().with_transport(transport.clone()),
    );

    // A request that never touches the session costs no store I/O and sets no id.
    let plain = call(&app, "GET", "/plain", None, &transport).await;
    assert_eq!(issued(&plain, &transport), None);

    // Reading without a session creates nothing.
    let read = call(&app, "GET", "/visits", None, &transport).await;
    assert_eq!(issued(&read, &transport), None);
    assert_eq!(text(read).await, "0");

    // The first write creates the session and hands out its id.
    let first = call(&app, "POST", "/visits", None, &transport).await;
    let id = issued(&first, &transport).expect("a new session id");
    assert!(id.parse::<SessionId>().is_ok());
    assert_eq!(text(first).await, "1");

    // The id brings the session back; an unchanged, recently used session sends no new id.
    let again = call(&app, "POST", "/visits", Some(&id), &transport).await;
    assert_eq!(text(again).await, "2");
    let read = call(&app, "GET", "/visits", Some(&id), &transport).await;
    assert_eq!(issued(&read, &transport), None);
    assert_eq!(text(read).await, "2");

    // Login rotates the id: the old one is worthless, the new one carries the session.
    let logged_in = call(&app, "POST", "/login", Some(&id), &transport).await;
    let rotated = issued(&logged_in, &transport).expect("a rotated id");
    assert_ne!(rotated, id);
    assert!(store.find(&id.parse().unwrap()).await.unwrap().is_none());
    assert_eq!(
        text(call(&app, "GET", "/visits", Some(&rotated), &transport).await).await,
        "2"
    );
    assert_eq!(store.find_by_principal("morris").await.unwrap().len(), 1);

    // Logout deletes the session and tells the client to drop the id.
    let bye = call(&app, "POST", "/logout", Some(&rotated), &transport).await;
    assert_eq!(issued(&bye, &transport).as_deref(), Some(""));
    assert!(store
        .find(&rotated.parse().unwrap())
        .await
        .unwrap()
        .is_none());

    // Unknown, expired or malformed ids are simply no session; a dead id is dropped.
    for stale in [rotated.as_str(), "not-a-session-id", "' OR 1=1 --"] {
        let response = call(&app, "GET", "/visits", Some(stale), &transport).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(text(response).await, "0");
    }
}

fn transports() -> Vec<IdTransport> {
    vec![
        IdTransport::Cookie(CookieConfig::default()),
        IdTransport::Header("x-auth-token".parse().unwrap()),
        IdTransport::Bearer {
            response_header: "x-auth-token".parse().unwrap(),
        },
    ]
}

#[tokio::test]
async fn memory_store_life_cycle_over_every_transport() {
    for transport in transports() {
        life_cycle(Arc::new(session_memory::MemoryStore::new()), transport).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_store_life_cycle_over_every_transport() {
    let Some(server) = provision(Backend::Redis).await else {
        return;
    };
    for transport in transports() {
        let config = session_redis::Config::from_url(&server.url)
            .unwrap()
            .with_prefix(format!("{}:", namespace("axum")));
        let store = session_redis::RedisStore::open(config, SessionSettings::default())
            .await
            .unwrap();
        life_cycle(Arc::new(store), transport).await;
    }
}

/// The session cookie carries the secure defaults.
#[tokio::test]
async fn cookie_defaults_are_secure() {
    let app = app(
        Arc::new(session_memory::MemoryStore::new()),
        LayerConfig::default(),
    );
    let response = call(
        &app,
        "POST",
        "/visits",
        None,
        &IdTransport::Cookie(CookieConfig::default()),
    )
    .await;
    let set_cookie = response
        .headers()
        .get(header::SET_COOKIE)
        .unwrap()
        .to_str()
        .unwrap();
    for attribute in ["SESSION=", "HttpOnly", "Secure", "SameSite=Lax", "Path=/"] {
        assert!(
            set_cookie.contains(attribute),
            "{set_cookie} lacks {attribute}"
        );
    }
}

/// Two service instances on one store: a login on one is visible on the other.
#[tokio::test]
async fn two_instances_share_a_login() {
    let store = Arc::new(session_memory::MemoryStore::new());
    let transport = IdTransport::Cookie(CookieConfig::default());
    let a = app(
        Arc::new(store.with_settings(SessionSettings::default())),
        LayerConfig::default(),
    );
    let b = app(
        Arc::new(store.with_settings(SessionSettings::default())),
        LayerConfig::default(),
    );
    let id = issued(
        &call(&a, "POST", "/visits", None, &transport).await,
        &transport,
    )
    .unwrap();
    assert_eq!(
        text(call(&b, "POST", "/visits", Some(&id), &transport).await).await,
        "2"
    );
    assert_eq!(
        text(call(&a, "GET", "/visits", Some(&id), &transport).await).await,
        "2"
    );
}

/// A Redis server owned by this test (so it can be killed) and a store on it with a short
/// timeout; `None` when Redis cannot be provisioned and is not required.
async fn dedicated_redis() -> Option<(Arc<ServerProcess>, session_redis::RedisStore)> {
    if provision(Backend::Redis).await.is_none() {
        assert!(!is_required(Backend::Redis));
        return None;
    }
    let server = ServerProcess::start(Backend::Redis.spec()).await.unwrap();
    let config = session_redis::Config::from_url(&server.url())
        .unwrap()
        .with_timeout(std::time::Duration::from_millis(500));
    let store = session_redis::RedisStore::open(config, SessionSettings::default())
        .await
        .unwrap();
    Some((server, store))
}

/// A store that dies under the layer answers 503, never a panic; once it is back, so is the
/// service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_failure_is_503_and_recovers() {
    let Some((server, store)) = dedicated_redis().await else {
        return;
    };
    let app = app(Arc::new(store), LayerConfig::default());
    let transport = IdTransport::Cookie(CookieConfig::default());
    let id = issued(
        &call(&app, "POST", "/visits", None, &transport).await,
        &transport,
    )
    .unwrap();

    server.stop();
    let failed = call(&app, "POST", "/visits", Some(&id), &transport).await;
    assert_eq!(failed.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        call(&app, "GET", "/plain", Some(&id), &transport)
            .await
            .status(),
        StatusCode::OK
    );

    server.restart().await.unwrap();
    let mut recovered = false;
    for _ in 0..40 {
        if call(&app, "POST", "/visits", None, &transport)
            .await
            .status()
            == StatusCode::OK
        {
            recovered = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    assert!(recovered, "the service did not recover with the store");
}

/// The store dies between the handler's read and the layer's save at the end of the request:
/// the layer answers 503 instead of the handler's 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_failure_while_finishing_is_503() {
    let Some((server, store)) = dedicated_redis().await else {
        return;
    };
    let killer = Arc::clone(&server);
    let app = Router::new()
        .route(
            "/write-then-crash",
            post(move |session: SessionHandle| {
                let server = Arc::clone(&killer);
                async move {
                    session.insert("x", &1u8).await.unwrap();
                    server.stop();
                    "handler done"
                }
            }),
        )
        .layer(SessionLayer::new(Arc::new(store), LayerConfig::default()));
    let response = call(
        &app,
        "POST",
        "/write-then-crash",
        None,
        &IdTransport::Cookie(CookieConfig::default()),
    )
    .await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        response.headers().get(header::SET_COOKIE).is_none(),
        "no id for a session that was not stored"
    );
}

/// A request that is still running when the same user logs out elsewhere: its final save
/// finds the session gone. The handler's response stands (no outage page: the store is fine),
/// the client is told to drop its id, and the session stays logged out.
async fn logout_during_a_slow_request(store: Arc<dyn SessionRepository>) {
    let started = Arc::new(tokio::sync::Notify::new());
    let release = Arc::new(tokio::sync::Notify::new());
    let (started_in, release_in) = (Arc::clone(&started), Arc::clone(&release));
    let app = Router::new()
        .route(
            "/slow",
            post(move |session: SessionHandle| {
                let (started, release) = (Arc::clone(&started_in), Arc::clone(&release_in));
                async move {
                    let visits = session.get::<u64>("visits").await?.unwrap_or(0);
                    started.notify_one();
                    release.notified().await;
                    session.insert("visits", &(visits + 1)).await?;
                    Ok::<_, SessionError>("slow done")
                }
            }),
        )
        .route("/visits", get(read_visits).post(add_visit))
        .route("/logout", post(logout))
        .layer(SessionLayer::new(
            Arc::clone(&store),
            LayerConfig::default(),
        ));
    let transport = IdTransport::Cookie(CookieConfig::default());
    let id = issued(
        &call(&app, "POST", "/visits", None, &transport).await,
        &transport,
    )
    .unwrap();

    let slow = {
        let (app, id, transport) = (app.clone(), id.clone(), transport.clone());
        tokio::spawn(async move { call(&app, "POST", "/slow", Some(&id), &transport).await })
    };
    started.notified().await;
    let logout = call(&app, "POST", "/logout", Some(&id), &transport).await;
    assert_eq!(logout.status(), StatusCode::OK);
    release.notify_one();
    let response = slow.await.unwrap();

    assert_eq!(
        response.status(),
        StatusCode::OK,
        "the handler's answer stands"
    );
    assert_eq!(
        issued(&response, &transport).as_deref(),
        Some(""),
        "the client is told the session ended"
    );
    assert_eq!(text(response).await, "slow done");
    assert!(
        store.find(&id.parse().unwrap()).await.unwrap().is_none(),
        "the session stays logged out"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_during_a_slow_request_on_memory() {
    logout_during_a_slow_request(Arc::new(session_memory::MemoryStore::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_during_a_slow_request_on_redis() {
    let Some(server) = provision(Backend::Redis).await else {
        return;
    };
    let config = session_redis::Config::from_url(&server.url)
        .unwrap()
        .with_prefix(format!("{}:", namespace("race")));
    let store = session_redis::RedisStore::open(config, SessionSettings::default())
        .await
        .unwrap();
    logout_during_a_slow_request(Arc::new(store)).await;
}
