//! Containers go with the test process that started them, however it ends: a test that
//! panics, a process that aborts (no destructor runs). Needs a Docker engine and the memcached
//! image (`SESSION_TEST_MEMCACHED_IMAGE`, made by `scripts/make-local-images.sh` where no
//! registry answers); skipped otherwise, a failure under `SESSION_TEST_PROVISION=docker`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::io::Write as _;
use std::time::{Duration, Instant};

use session_test_harness::{
    container_exists, containers_forced, engine_answers, image_present, report, Backend,
    ContainerServer, ContainerSpec,
};

/// Set in the child process: how it ends (`panic` or `abort`).
const CHILD: &str = "SESSION_TEST_CONTAINER_CHILD";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_container_outlives_its_test_process() {
    if let Ok(ending) = std::env::var(CHILD) {
        let spec = ContainerSpec::of(Backend::Memcached).unwrap();
        let server = ContainerServer::start(spec).await.unwrap();
        println!("container {}", server.id());
        std::io::stdout().flush().unwrap();
        // Held, as the harness's shared servers are held by statics that are never dropped.
        std::mem::forget(server);
        if ending == "abort" {
            std::process::abort();
        }
        panic!("a test that panics with its container running");
    }
    let spec = ContainerSpec::of(Backend::Memcached).unwrap();
    let available = engine_answers().await && image_present(&spec.image).await;
    if !available {
        assert!(
            !containers_forced(),
            "SESSION_TEST_PROVISION=docker, but no engine answers or {} is missing",
            spec.image
        );
        report(&format!(
            "SKIPPED container cleanup: no Docker engine, or no {} image",
            spec.image
        ));
        return;
    }
    for ending in ["panic", "abort"] {
        let child = tokio::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "no_container_outlives_its_test_process",
                "--nocapture",
            ])
            .env(CHILD, ending)
            .output()
            .await
            .unwrap();
        assert!(!child.status.success(), "the child was meant to fail");
        let stdout = String::from_utf8_lossy(&child.stdout);
        let id = stdout
            .lines()
            .find_map(|line| line.strip_prefix("container "))
            .unwrap_or_else(|| panic!("the child started no container: {stdout}"))
            .to_owned();
        let deadline = Instant::now() + Duration::from_secs(15);
        while container_exists(&id).await {
            assert!(
                Instant::now() < deadline,
                "container {id} outlived its test process ({ending})"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        report(&format!(
            "container cleanup: {} of a test process that ended by {ending} was removed",
            &id[..12]
        ));
    }
}
