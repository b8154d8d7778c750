//! Fault cases for stores whose server the test controls ([`ServerControl`]): the server is
//! killed under a live repository, then started again; or frozen, then let run again.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use session_core::{
    Error, EventError, Result, Session, SessionEvent, SessionId, SessionRepository,
    SessionRepositoryExt,
};

use crate::control::ServerControl;

/// Bound given to the repository under test; errors must arrive within it (plus a second).
pub const FAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// Kills the store's server under a live repository: every operation fails with a retryable
/// error within [`FAULT_TIMEOUT`], no panic, no hang. Restarts it: the same repository (not
/// rebuilt) works again, and with
/// [`Capabilities::lifecycle_events`](session_core::Capabilities::lifecycle_events) a subscription taken
/// before the crash delivers the events of operations after the restart.
///
/// `server` is a server of the test's own (no other test may use it); `open(url, timeout)`
/// opens a repository on it with that operation timeout. Whether data written before the crash survives is the server's durability (the harness's
/// throwaway servers run without fsync), so only the repository's recovery is checked.
pub async fn server_killed_and_restarted<Open, Fut>(server: Arc<dyn ServerControl>, open: Open)
where
    Open: Fn(String, Duration) -> Fut,
    Fut: Future<Output = Result<Arc<dyn SessionRepository>>>,
{
    let (store, session) = live_store(&*server, open).await;
    let mut events = store
        .capabilities()
        .lifecycle_events
        .then(|| store.subscribe().expect("subscribe"));

    server.stop().await.expect("stop the server");
    for _ in 0..3 {
        let find_took = find_and_save_fail_retryably(&*store, &session).await;
        assert!(
            find_took < FAULT_TIMEOUT + Duration::from_secs(1),
            "find took {find_took:?}"
        );
        let touched = store.touch(session.id()).await;
        assert!(
            matches!(&touched, Err(e) if e.is_retryable()),
            "touch: {touched:?}"
        );
    }

    server.start().await.expect("start the server again");
    find_when_back(&*store, session.id(), "restart").await;
    let mut fresh = store.new_session();
    fresh.insert("after", "restart").unwrap();
    store.create(&mut fresh).await.unwrap();
    store.touch(fresh.id()).await.unwrap();
    let reloaded = store
        .find(fresh.id())
        .await
        .unwrap()
        .expect("created after the restart");
    assert_eq!(
        reloaded.get::<String>("after").unwrap().as_deref(),
        Some("restart")
    );
    assert!(matches!(
        store.touch(&SessionId::generate()).await,
        Err(Error::NotFound)
    ));

    if let Some(events) = &mut events {
        // The listener may reconnect a little after the store's own connection: create until
        // an event arrives.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut heard = false;
        while !heard && Instant::now() < deadline {
            let mut probe = store.new_session();
            store.create(&mut probe).await.unwrap();
            let wait = tokio::time::timeout(Duration::from_millis(500), async {
                loop {
                    match events.recv().await {
                        Ok(SessionEvent::Created(key)) if key == probe.key() => return true,
                        Ok(_) | Err(EventError::Lagged(_)) => {}
                        Err(_) => return false,
                    }
                }
            });
            heard = wait.await.unwrap_or(false);
        }
        assert!(heard, "no lifecycle event after the restart");
    }
}

/// Freezes the store's server under a live repository (a hang, not a crash): every operation
/// fails with a retryable error within [`FAULT_TIMEOUT`], no panic, no hang of its own. Lets
/// it run again: the same repository works again and the data stored before is all there.
///
/// `open` as for [`server_killed_and_restarted`]. An operation that timed out may still be
/// carried out by the server once it runs again (a timeout says nothing about the outcome),
/// so only what was stored before the freeze is checked afterwards.
pub async fn server_paused_and_resumed<Open, Fut>(server: Arc<dyn ServerControl>, open: Open)
where
    Open: Fn(String, Duration) -> Fut,
    Fut: Future<Output = Result<Arc<dyn SessionRepository>>>,
{
    let (store, session) = live_store(&*server, open).await;

    server.pause().await.expect("pause the server");
    let bound = FAULT_TIMEOUT + Duration::from_secs(1);
    for _ in 0..2 {
        let started = Instant::now();
        find_and_save_fail_retryably(&*store, &session).await;
        let elapsed = started.elapsed();
        assert!(elapsed < 2 * bound, "find and save took {elapsed:?}");
    }

    server.resume().await.expect("resume the server");
    let reloaded = find_when_back(&*store, session.id(), "resume")
        .await
        .expect("the session stored before the freeze is gone");
    assert_eq!(reloaded.get::<String>("a").unwrap().as_deref(), Some("1"));
    // A resumed server first works off what queued up while it was frozen (the statements of
    // the timed-out operations, the connects the kernel accepted); on a loaded machine that
    // can outlast one operation's timeout, so these too may wait out retryable errors.
    let mut fresh = store.new_session();
    retry_when_back("create", "resume", async || store.create(&mut fresh).await).await;
    retry_when_back("touch", "resume", async || store.touch(fresh.id()).await).await;
}

/// `operation` once the server is back (after a `restart` or `resume`), as
/// [`find_when_back`]: retryable errors are waited out for up to ten seconds; any other error,
/// or one that lasts, fails the case with the operation's name and the error.
async fn retry_when_back<T>(
    name: &str,
    after: &str,
    mut operation: impl AsyncFnMut() -> Result<T>,
) -> T {
    let mut last = None;
    for _ in 0..40 {
        match operation().await {
            Ok(value) => return value,
            Err(error) if error.is_retryable() => {
                last = Some(error);
                tokio::time::sleep(Duration::from_millis(250)).await
            }
            Err(error) => panic!("{name} after the {after}: not retryable: {error:?}"),
        }
    }
    panic!("{name} did not work again after the {after}; last error: {last:?}");
}

/// A find of `session` and a save of a changed copy, on a store whose server does not answer:
/// both must fail with retryable errors. Returns how long the find took.
async fn find_and_save_fail_retryably(
    store: &dyn SessionRepository,
    session: &Session,
) -> Duration {
    let started = Instant::now();
    let found = store.find(session.id()).await;
    let find_took = started.elapsed();
    assert!(
        matches!(&found, Err(e) if e.is_retryable()),
        "find: {found:?}"
    );
    let mut copy = session.clone();
    copy.insert("b", "2").unwrap();
    let saved = store.save(&mut copy).await;
    assert!(
        matches!(&saved, Err(e) if e.is_retryable()),
        "save: {saved:?}"
    );
    find_took
}

/// A repository opened on `server` with [`FAULT_TIMEOUT`], and a session stored there
/// (attribute `a` = `"1"`).
async fn live_store<Open, Fut>(
    server: &dyn ServerControl,
    open: Open,
) -> (Arc<dyn SessionRepository>, Session)
where
    Open: Fn(String, Duration) -> Fut,
    Fut: Future<Output = Result<Arc<dyn SessionRepository>>>,
{
    let store = open(server.url(), FAULT_TIMEOUT)
        .await
        .expect("open the store");
    let mut session = store.new_session();
    session.insert("a", "1").unwrap();
    store.create(&mut session).await.unwrap();
    (store, session)
}

/// `find(id)` once the server is back (after a `restart` or `resume`): retryable errors are
/// waited out for up to ten seconds, any other error or a store that never answers fails the
/// case.
async fn find_when_back(
    store: &dyn SessionRepository,
    id: &SessionId,
    after: &str,
) -> Option<Session> {
    retry_when_back("find", after, async || store.find(id).await).await
}
