//! Redis restarting with data under load, through the layer: while it loads its data file it
//! answers `LOADING`, which must be a retryable error (503 with `Retry-After`), never a 500,
//! and the service must be whole again right after the load.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::routing::get;
use axum::Router;
use session_axum::{LayerConfig, SessionError, SessionHandle, SessionLayer};
use session_core::{SessionId, SessionRepository, SessionRepositoryExt, SessionSettings};
use session_redis::redis;
use session_test_harness::{is_required, provision, Backend, ServerProcess};
use tower::ServiceExt as _;

/// Keys in the data file Redis reloads: enough for the load to take a while.
const FILLER_KEYS: u32 = 300_000;
const TASKS: usize = 32;
/// Sessions the load reads and writes.
const SESSIONS: usize = 200;

async fn visit(session: SessionHandle) -> Result<String, SessionError> {
    let visits = session.get::<u64>("visits").await?.unwrap_or(0) + 1;
    session.insert("visits", &visits).await?;
    Ok(visits.to_string())
}

/// One request's outcome: when it ended and what the layer answered, or the store's error.
#[derive(Debug)]
struct Outcome {
    at: Instant,
    status: Option<StatusCode>,
    retry_after: bool,
    store_error: Option<(bool, String)>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_loading_its_data_answers_503_then_recovers() {
    if provision(Backend::Redis).await.is_none() {
        assert!(!is_required(Backend::Redis));
        return;
    }
    // A pause on one key in twelve while loading (`key-load-delay -12`, a Redis test knob):
    // the load lasts about two seconds instead of a few hundred milliseconds, so the traffic
    // meets it on a busy machine too (a fast load was sometimes missed entirely).
    let mut spec = Backend::Redis.spec();
    spec.args
        .extend(["--key-load-delay".to_owned(), "-12".to_owned()]);
    let server = ServerProcess::start(spec).await.unwrap();
    let client = redis::Client::open(server.url()).unwrap();
    let mut raw = client.get_multiplexed_async_connection().await.unwrap();
    // The data file: filler keys written by a script in slices (each well inside the client's
    // response timeout), saved once.
    for slice in 0..FILLER_KEYS / 20_000 {
        let _: () = redis::cmd("EVAL")
            .arg(
                "for i = tonumber(ARGV[1]), tonumber(ARGV[2]) do \
                 redis.call('SET', 'filler:' .. i, string.rep('x', 64)) end",
            )
            .arg(0)
            .arg(slice * 20_000)
            .arg(slice * 20_000 + 19_999)
            .query_async(&mut raw)
            .await
            .unwrap();
    }
    let config = session_redis::Config::from_url(&server.url())
        .unwrap()
        .with_timeout(Duration::from_millis(500));
    let store: Arc<dyn SessionRepository> = Arc::new(
        session_redis::RedisStore::open(config, SessionSettings::default())
            .await
            .unwrap(),
    );
    let mut ids: Vec<SessionId> = Vec::new();
    for _ in 0..SESSIONS {
        let mut session = store.new_session();
        session.insert("visits", &0u64).unwrap();
        store.create(&mut session).await.unwrap();
        ids.push(session.id().clone());
    }
    let _: () = redis::cmd("SAVE").query_async(&mut raw).await.unwrap();
    let dbsize: u64 = redis::cmd("DBSIZE").query_async(&mut raw).await.unwrap();
    assert!(dbsize >= u64::from(FILLER_KEYS));

    let app = Router::new()
        .route("/", get(visit))
        .layer(SessionLayer::new(
            Arc::clone(&store),
            LayerConfig::default(),
        ));
    let outcomes = Arc::new(Mutex::new(Vec::<Outcome>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let ids = Arc::new(ids);
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let (app, store, ids) = (app.clone(), Arc::clone(&store), Arc::clone(&ids));
        let (outcomes, stop) = (Arc::clone(&outcomes), Arc::clone(&stop));
        tasks.push(tokio::spawn(async move {
            let mut i = task;
            while !stop.load(Ordering::Relaxed) {
                let id = &ids[i % ids.len()];
                i += TASKS;
                // Half the tasks go through the layer, half call the store itself.
                let outcome = if task % 2 == 0 {
                    let request = Request::builder()
                        .uri("/")
                        .header(header::COOKIE, format!("SESSION={}", id.expose_secret()))
                        .body(Body::empty())
                        .unwrap();
                    let response = app.clone().oneshot(request).await.unwrap();
                    Outcome {
                        at: Instant::now(),
                        status: Some(response.status()),
                        retry_after: response.headers().contains_key(header::RETRY_AFTER),
                        store_error: None,
                    }
                } else {
                    let result = match store.find(id).await {
                        Ok(Some(mut session)) => {
                            session.insert("direct", &i).unwrap();
                            store.save(&mut session).await
                        }
                        Ok(None) => panic!("a session vanished in the restart"),
                        Err(error) => Err(error),
                    };
                    Outcome {
                        at: Instant::now(),
                        status: None,
                        retry_after: false,
                        store_error: result
                            .err()
                            .map(|error| (error.is_retryable(), error.report().to_string())),
                    }
                };
                outcomes.lock().unwrap().push(outcome);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }));
    }

    tokio::time::sleep(Duration::from_millis(500)).await;
    let restarted_at = Instant::now();
    // Returns once the server answers PING, which it does only when the load is over.
    server.restart().await.unwrap();
    let loaded_at = Instant::now();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }

    let outcomes = outcomes.lock().unwrap();
    let (mut ok, mut unavailable, mut loading, mut late_failures) = (0, 0, 0, 0);
    for outcome in outcomes.iter() {
        let failed = match (&outcome.status, &outcome.store_error) {
            (Some(status), _) => {
                assert!(
                    *status == StatusCode::OK || *status == StatusCode::SERVICE_UNAVAILABLE,
                    "the layer answered {status} during the restart"
                );
                if *status == StatusCode::SERVICE_UNAVAILABLE {
                    assert!(outcome.retry_after, "a 503 without Retry-After");
                }
                *status != StatusCode::OK
            }
            (None, Some((retryable, report))) => {
                assert!(
                    retryable,
                    "a non-retryable error during the restart: {report}"
                );
                if report.contains("loading the dataset") {
                    loading += 1;
                }
                if std::env::var_os("SHOW_ERRORS").is_some() {
                    eprintln!("{report}");
                }
                true
            }
            (None, None) => false,
        };
        if failed {
            unavailable += 1;
            if outcome.at > loaded_at + Duration::from_secs(1) {
                late_failures += 1;
            }
        } else {
            ok += 1;
        }
    }
    eprintln!(
        "restart with {dbsize} keys: load took {:?}; {ok} calls succeeded, {unavailable} failed \
         retryably ({loading} of them LOADING at the store), {late_failures} failed later than \
         1 s after the load",
        loaded_at - restarted_at
    );
    assert!(
        loading > 0,
        "no call met the server while it loaded its data"
    );
    assert_eq!(
        late_failures, 0,
        "the service was not whole 1 s after the load"
    );
    assert!(ok > 0);
}
