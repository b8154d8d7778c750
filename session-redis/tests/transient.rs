//! A Redis busy with a long script answers `BUSY` to everyone else: a retryable error that says
//! so, and the store works again once the script ends.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::time::Duration;

use session_core::{SessionRepository, SessionRepositoryExt, SessionSettings};
use session_redis::{redis, Config, RedisStore};
use session_test_harness::{is_required, provision, Backend, ServerProcess};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_server_is_retryable_and_then_fine() {
    if provision(Backend::Redis).await.is_none() {
        assert!(!is_required(Backend::Redis));
        return;
    }
    let mut spec = Backend::Redis.spec();
    // Other clients get BUSY once a script has run this long (ms).
    spec.args.extend(["--lua-time-limit".into(), "100".into()]);
    let server = ServerProcess::start(spec).await.unwrap();
    let store = RedisStore::open(
        Config::from_url(&server.url()).unwrap(),
        SessionSettings::default(),
    )
    .await
    .unwrap();
    let mut session = store.new_session();
    session.insert("a", "1").unwrap();
    store.create(&mut session).await.unwrap();

    let client = redis::Client::open(server.url()).unwrap();
    let mut busy = client
        .get_multiplexed_async_connection_with_config(
            &redis::AsyncConnectionConfig::new().set_response_timeout(None),
        )
        .await
        .unwrap();
    let script = tokio::spawn(async move {
        redis::cmd("EVAL")
            .arg(
                "local t0 = redis.call('TIME') \
                 while true do local t = redis.call('TIME') \
                 if (t[1] - t0[1]) * 1000000 + (t[2] - t0[2]) > 1500000 then break end end \
                 return 1",
            )
            .arg(0)
            .query_async::<i64>(&mut busy)
            .await
    });
    // Past the 100 ms threshold every other client gets BUSY until the script ends.
    let mut error = None;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if let Err(found) = store.find(session.id()).await {
            error = Some(found);
            break;
        }
    }
    let error = error.expect("no call met the busy server");
    assert!(error.is_retryable(), "{}", error.report());
    assert!(
        error.report().to_string().contains("BUSY"),
        "{}",
        error.report()
    );
    assert_eq!(script.await.unwrap().unwrap(), 1);
    let loaded = store.find(session.id()).await.unwrap().expect("live");
    assert_eq!(loaded.get::<String>("a").unwrap().as_deref(), Some("1"));
}
