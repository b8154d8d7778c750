//! `StoreConfig::from_env`. Alone in its test binary: setting environment variables while other
//! threads (database drivers, C libraries) may read the environment is not safe.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use session_store::StoreConfig;

#[test]
fn config_comes_from_the_environment() {
    let prefix = "SESSION_STORE_TEST_FROM_ENV_";
    assert_eq!(StoreConfig::from_env(prefix).unwrap(), None);
    std::env::set_var(format!("{prefix}URL"), "memory://");
    std::env::set_var(format!("{prefix}IDLE_TIMEOUT_SECS"), "90");
    let config = StoreConfig::from_env(prefix).unwrap().expect("URL set");
    assert_eq!(config.url, "memory://");
    assert_eq!(config.idle_timeout_secs, Some(90));
    assert_eq!(config.migrate_from, None);
    std::env::set_var(format!("{prefix}MIGRATE_FROM"), "redis://old:6379");
    let config = StoreConfig::from_env(prefix).unwrap().expect("URL set");
    assert_eq!(config.migrate_from.as_deref(), Some("redis://old:6379"));
    std::env::set_var(format!("{prefix}IDLE_TIMEOUT_SECS"), "ninety");
    assert!(
        StoreConfig::from_env(prefix).is_err(),
        "a non-number is a clear error"
    );
}
