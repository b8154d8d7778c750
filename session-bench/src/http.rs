//! The request cycle through the HTTP layer.
//!
//! Two measurements per store:
//! - over HTTP: the layer served on TCP, 32 keep-alive clients that log in once and then
//!   `GET /profile` as fast as they can; prints requests/s and the share of the time spent in
//!   the store (a timing wrapper around the real store);
//! - in process (tower `oneshot`, no network): `GET /profile` through the layer against the
//!   same route whose handler reads the cookie and calls `find` on the repository itself —
//!   the difference is what the layer costs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::routing::{get, post};
use axum::Router;
use session_axum::{
    CookieConfig, IdTransport, LayerConfig, SessionError, SessionHandle, SessionLayer,
};
use session_core::{
    async_trait, Capabilities, Error, EventSubscription, Result, Session, SessionId, SessionInfo,
    SessionKey, SessionRepository, SessionSettings,
};
use tower::ServiceExt as _;

use crate::{measure, print_row, Options, Workload};

/// A repository that delegates to a real store and adds up the time spent in it.
#[derive(Debug)]
pub struct Timed {
    inner: Arc<dyn SessionRepository>,
    nanos: AtomicU64,
}

impl Timed {
    pub fn new(inner: Arc<dyn SessionRepository>) -> Self {
        Timed {
            inner,
            nanos: AtomicU64::new(0),
        }
    }

    fn add(&self, since: Instant) {
        self.nanos.fetch_add(
            u64::try_from(since.elapsed().as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    fn take(&self) -> Duration {
        Duration::from_nanos(self.nanos.swap(0, Ordering::Relaxed))
    }
}

#[async_trait]
impl SessionRepository for Timed {
    fn settings(&self) -> &Arc<SessionSettings> {
        self.inner.settings()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn create(&self, session: &mut Session) -> Result<()> {
        let t = Instant::now();
        let r = self.inner.create(session).await;
        self.add(t);
        r
    }
    async fn find(&self, id: &SessionId) -> Result<Option<Session>> {
        let t = Instant::now();
        let r = self.inner.find(id).await;
        self.add(t);
        r
    }
    async fn save(&self, session: &mut Session) -> Result<()> {
        let t = Instant::now();
        let r = self.inner.save(session).await;
        self.add(t);
        r
    }
    async fn touch(&self, id: &SessionId) -> Result<()> {
        let t = Instant::now();
        let r = self.inner.touch(id).await;
        self.add(t);
        r
    }
    async fn delete_by_key(&self, key: &SessionKey) -> Result<()> {
        self.inner.delete_by_key(key).await
    }
    async fn change_id(&self, session: &mut Session) -> Result<()> {
        let t = Instant::now();
        let r = self.inner.change_id(session).await;
        self.add(t);
        r
    }
    async fn find_by_principal(&self, principal: &str) -> Result<Vec<SessionInfo>> {
        self.inner.find_by_principal(principal).await
    }
    async fn delete_by_principal(&self, principal: &str) -> Result<u64> {
        self.inner.delete_by_principal(principal).await
    }
    fn subscribe(&self) -> Result<EventSubscription> {
        self.inner.subscribe()
    }
}

async fn login(session: SessionHandle) -> std::result::Result<&'static str, SessionError> {
    session.set_principal(Some("morris")).await?;
    session.cycle_id().await?;
    Ok("ok")
}

async fn profile(
    session: SessionHandle,
) -> std::result::Result<(StatusCode, String), SessionError> {
    Ok(match session.principal().await? {
        Some(user) => (StatusCode::OK, user),
        None => (StatusCode::UNAUTHORIZED, String::new()),
    })
}

/// The same answer without the layer: the handler reads the cookie and calls the repository
/// itself. The difference to the layered route is what the layer costs.
async fn profile_direct(
    axum::extract::State(store): axum::extract::State<Arc<dyn SessionRepository>>,
    headers: axum::http::HeaderMap,
) -> (StatusCode, String) {
    let id = headers
        .get(header::COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("SESSION="))
        .and_then(|v| v.parse::<SessionId>().ok());
    let Some(id) = id else {
        return (StatusCode::UNAUTHORIZED, String::new());
    };
    match store.find(&id).await {
        Ok(Some(session)) => match session.principal() {
            Some(user) => (StatusCode::OK, user.to_owned()),
            None => (StatusCode::UNAUTHORIZED, String::new()),
        },
        Ok(None) => (StatusCode::UNAUTHORIZED, String::new()),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, String::new()),
    }
}

fn direct_router(store: Arc<dyn SessionRepository>) -> Router {
    Router::new()
        .route("/profile", get(profile_direct))
        .with_state(store)
}

fn router(store: Arc<dyn SessionRepository>) -> Router {
    let cookie = CookieConfig::default().with_secure(false);
    Router::new()
        .route("/login", post(login))
        .route("/profile", get(profile))
        .layer(SessionLayer::new(
            store,
            LayerConfig::default().with_transport(IdTransport::Cookie(cookie)),
        ))
}

struct HttpProfile {
    clients: Vec<(reqwest::Client, String)>,
}

#[async_trait]
impl Workload for HttpProfile {
    async fn run(&self, i: usize) -> Result<()> {
        let (client, url) = &self.clients[i % self.clients.len()];
        let response = client.get(url).send().await.map_err(Error::backend)?;
        if response.status() != reqwest::StatusCode::OK {
            return Err(Error::backend(format!(
                "GET /profile answered {}",
                response.status()
            )));
        }
        Ok(())
    }
}

struct LayerProfile {
    router: Router,
    cookies: Vec<String>,
}

#[async_trait]
impl Workload for LayerProfile {
    async fn run(&self, i: usize) -> Result<()> {
        let request = Request::get("/profile")
            .header(header::COOKIE, &self.cookies[i % self.cookies.len()])
            .body(Body::empty())
            .map_err(Error::backend)?;
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .map_err(Error::backend)?;
        if response.status() != StatusCode::OK {
            return Err(Error::backend(format!(
                "GET /profile answered {}",
                response.status()
            )));
        }
        Ok(())
    }
}

/// Runs both measurements on `store` and prints their rows.
pub async fn bench(name: &str, store: Arc<dyn SessionRepository>, options: &Options) -> Result<()> {
    let timed = Arc::new(Timed::new(store));
    let app = router(Arc::clone(&timed) as Arc<dyn SessionRepository>);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(Error::backend)?;
    let base = format!("http://{}", listener.local_addr().map_err(Error::backend)?);
    let server = tokio::spawn(std::future::IntoFuture::into_future(axum::serve(
        listener,
        app.clone(),
    )));

    // One logged-in client per task, each with its own keep-alive connection and cookie.
    let mut clients = Vec::new();
    let mut cookies = Vec::new();
    let mut ids = Vec::new();
    for _ in 0..options.tasks {
        let client = reqwest::Client::builder()
            .cookie_store(true)
            .build()
            .map_err(Error::backend)?;
        let login = client
            .post(format!("{base}/login"))
            .send()
            .await
            .map_err(Error::backend)?;
        let cookie = login
            .headers()
            .get(reqwest::header::SET_COOKIE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .ok_or_else(|| Error::backend("login set no cookie"))?
            .to_owned();
        let id = cookie
            .split_once('=')
            .map(|(_, v)| v.to_owned())
            .unwrap_or_default();
        ids.push(
            id.parse::<SessionId>()
                .map_err(|e| Error::backend(e.to_string()))?,
        );
        cookies.push(cookie);
        clients.push((client, format!("{base}/profile")));
    }

    timed.take();
    let started = Instant::now();
    let http = measure(Arc::new(HttpProfile { clients }), options).await?;
    let wall = started.elapsed();
    let in_store = timed.take();
    print_row(name, "http", "GET /prof", &http, None);
    let busy = wall.as_secs_f64() * options.tasks as f64;
    println!(
        "{name:<10} http   store share of request time: {:.0}%",
        100.0 * in_store.as_secs_f64() / busy
    );

    let _ = ids;
    let direct_app = direct_router(Arc::clone(&timed) as Arc<dyn SessionRepository>);
    let direct = measure(
        Arc::new(LayerProfile {
            router: direct_app,
            cookies: cookies.clone(),
        }),
        options,
    )
    .await?;
    let layered = measure(
        Arc::new(LayerProfile {
            router: app,
            cookies,
        }),
        options,
    )
    .await?;
    print_row(name, "proc", "direct", &direct, None);
    print_row(name, "proc", "via-layer", &layered, Some(&direct));
    println!(
        "{name:<10} proc   layer overhead over calling the repository directly: {:.0}%",
        100.0 * (direct.ops_per_sec / layered.ops_per_sec - 1.0)
    );
    server.abort();
    Ok(())
}
