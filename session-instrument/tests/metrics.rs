//! What the wrapper counts and times, checked with a recording `metrics` recorder on two stores
//! (in-memory and SQLite) and an optimistic one.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

mod common;

use std::collections::HashMap;

use common::{known_sequence, runtime, stores};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use metrics_util::{CompositeKey, MetricKind};
use session_core::{Concurrency, Error, SessionRepository, SessionRepositoryExt, SessionSettings};
use session_instrument::Instrumented;

#[test]
fn metrics_count_and_time_every_call_by_store_operation_and_outcome() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        runtime().block_on(async {
            for store in stores().await {
                known_sequence(&*store).await;
            }
            // A stale copy saved in optimistic mode: a conflict.
            let optimistic = Instrumented::new(
                session_memory::MemoryStore::new().with_settings(
                    SessionSettings::default().with_concurrency(Concurrency::Optimistic),
                ),
                "optimistic",
            );
            let mut session = optimistic.new_session();
            optimistic.create(&mut session).await.unwrap();
            let mut stale = optimistic.find(session.id()).await.unwrap().unwrap();
            session.insert("a", "1").unwrap();
            optimistic.save(&mut session).await.unwrap();
            stale.insert("b", "2").unwrap();
            assert!(matches!(
                optimistic.save(&mut stale).await,
                Err(Error::Conflict { .. })
            ));
        })
    });
    let (counters, histograms) = read(&snapshotter);
    for store in ["memory", "sqlite"] {
        for (operation, outcome, count) in [
            ("create", "ok", 1),
            ("find", "ok", 2),
            ("save", "ok", 1),
            ("touch", "ok", 1),
            ("touch", "not_found", 1),
            ("delete", "ok", 1),
        ] {
            let name = format!(
                "session_store_operations_total{{operation={operation},outcome={outcome},store={store}}}"
            );
            assert_eq!(counters.get(&name), Some(&count), "{name}: {counters:#?}");
            let timing = name.replace("operations_total", "operation_seconds");
            assert_eq!(histograms.get(&timing), Some(&(count as usize)), "{timing}");
        }
    }
    assert_eq!(
        counters.get(
            "session_store_operations_total{operation=save,outcome=conflict,store=optimistic}"
        ),
        Some(&1)
    );
    assert_eq!(
        counters.get("session_store_conflicts_total{store=optimistic}"),
        Some(&1)
    );
    assert!(counters.contains_key("session_store_undecodable_records{}"));
    let quiet: Vec<_> = counters
        .keys()
        .chain(histograms.keys())
        .filter(|name| name.contains("store=quiet"))
        .collect();
    assert!(
        quiet.is_empty(),
        "a store without metrics was counted: {quiet:?}"
    );
}

/// Counters (value) and histograms (sample count) by `name{label=value,…}`, labels sorted.
fn read(
    snapshotter: &metrics_util::debugging::Snapshotter,
) -> (HashMap<String, u64>, HashMap<String, usize>) {
    let mut counters: HashMap<String, u64> = HashMap::new();
    let mut histograms: HashMap<String, usize> = HashMap::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let key: CompositeKey = key;
        let mut labels: Vec<String> = key
            .key()
            .labels()
            .map(|label| format!("{}={}", label.key(), label.value()))
            .collect();
        labels.sort();
        let name = format!("{}{{{}}}", key.key().name(), labels.join(","));
        match (key.kind(), value) {
            (MetricKind::Counter, DebugValue::Counter(count)) => {
                counters.insert(name, count);
            }
            (MetricKind::Histogram, DebugValue::Histogram(samples)) => {
                histograms.insert(name, samples.len());
            }
            _ => {}
        }
    }
    (counters, histograms)
}

#[test]
fn events_are_counted_by_kind_where_the_store_emits_them() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        runtime().block_on(async {
            // The memory store emits lifecycle and expiry events.
            let store = Instrumented::new(session_memory::MemoryStore::new(), "memory");
            let mut session = store.new_session();
            store.create(&mut session).await.unwrap();
            store.change_id(&mut session).await.unwrap();
            store.delete(session.id()).await.unwrap();
            let mut other = store.new_session();
            store.create(&mut other).await.unwrap();
            // The counting task runs on this runtime: give it its turn.
            for _ in 0..100 {
                tokio::task::yield_now().await;
            }
        })
    });
    let (counters, _) = read(&snapshotter);
    for (event, count) in [("created", 2), ("id_changed", 1), ("deleted", 1)] {
        let name = format!("session_store_events_total{{event={event},store=memory}}");
        assert_eq!(counters.get(&name), Some(&count), "{name}: {counters:#?}");
    }
}
