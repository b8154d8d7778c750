//! Helpers shared by the cases.

use std::sync::Arc;
use std::time::Duration;

use session_core::{Session, SessionId, SessionRepository, SessionSettings};

use crate::fixture::StoreFixture;

/// Idle timeout for expiry cases: short enough to keep the suite fast, long enough for a slow
/// server round trip to fit well inside it.
pub const SHORT_IDLE: Duration = Duration::from_millis(1_000);
/// Margin past a deadline before a case expects the session to be gone, and before a deadline
/// within which it expects it still live.
pub const MARGIN: Duration = Duration::from_millis(300);

/// Settings with the default everything but a short idle timeout.
pub fn short_lived() -> SessionSettings {
    SessionSettings::default().with_idle_timeout(SHORT_IDLE)
}

/// Opens a repository or fails the case with the store's error.
pub async fn open(
    fixture: &dyn StoreFixture,
    settings: SessionSettings,
) -> Arc<dyn SessionRepository> {
    match fixture.open(settings).await {
        Ok(repository) => repository,
        Err(error) => panic!("the fixture could not open a repository: {error}"),
    }
}

/// Creates a session with string attributes `pairs`.
pub async fn create_with(repository: &dyn SessionRepository, pairs: &[(&str, &str)]) -> Session {
    let mut session = Session::new(Arc::clone(repository.settings()));
    for (name, value) in pairs {
        session.insert(name, value).expect("insert");
    }
    repository.create(&mut session).await.expect("create");
    session
}

/// Loads a session that must exist.
pub async fn load(repository: &dyn SessionRepository, id: &SessionId) -> Session {
    repository
        .find(id)
        .await
        .expect("find")
        .unwrap_or_else(|| panic!("session {id} should exist"))
}

/// Whether the session is visible.
pub async fn exists(repository: &dyn SessionRepository, id: &SessionId) -> bool {
    repository.find(id).await.expect("find").is_some()
}

/// A string attribute of a loaded session.
pub fn text(session: &Session, name: &str) -> Option<String> {
    session.get::<String>(name).expect("decode")
}

/// Sleeps `duration`.
pub async fn sleep(duration: Duration) {
    tokio::time::sleep(duration).await;
}

/// Sleeps until the wall-clock time `instant` (at once if it has passed). A case that checks a
/// session just before or after its deadline waits for that instant, computed from the
/// session's own timestamps, not for a duration counted from when a slow call returned.
pub async fn sleep_until(instant: std::time::SystemTime) {
    if let Ok(left) = instant.duration_since(std::time::SystemTime::now()) {
        tokio::time::sleep(left).await;
    }
}

/// Asserts that `$result` is `Err` matching `$pattern`.
#[macro_export]
#[doc(hidden)]
macro_rules! assert_err {
    ($result:expr, $pattern:pat) => {
        match $result {
            Err($pattern) => {}
            other => panic!(
                "expected Err({}), got {:?}",
                stringify!($pattern),
                other.map(|_| "Ok(..)")
            ),
        }
    };
}
