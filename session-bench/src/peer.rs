//! The leading peer, tower-sessions' stores (`tower-redis`, `tower-redis-cluster`,
//! `tower-postgres`, `tower-mysql`, `tower-sqlite`, `tower-moka`), measured by the same loop
//! on the same servers as this project's stores, so that a row of ours and the peer's row
//! beside it differ only in the store.
//!
//! A peer cycle is what tower-sessions does for a request that changes its session: load the
//! record, set one attribute, save the whole record (the peer has no delta and no
//! compare-and-set: concurrent requests to one session overwrite each other). A read is a load.

#[allow(unused_imports)]
use super::*;

use serde_json::Value;
use tower_sessions_core::session::{Id, Record};
use tower_sessions_core::SessionStore;

/// The peers, and which of this project's backends each one stands beside.
pub(crate) const PEERS: [(&str, &str); 6] = [
    ("tower-redis", "redis"),
    ("tower-redis-cluster", "redis-cluster"),
    ("tower-postgres", "postgres"),
    ("tower-mysql", "mysql"),
    ("tower-sqlite", "sqlite"),
    ("tower-moka", "memory"),
];

fn peer_error(error: impl std::fmt::Display) -> Error {
    Error::backend(error.to_string())
}

/// Opens the peer store `name` on the server this run uses for its own backend.
pub(crate) async fn open_peer(
    name: &str,
    options: &Options,
) -> std::result::Result<(Arc<dyn SessionStore>, Vec<u32>), String> {
    let table = session_test_harness::namespace("tower_sessions");
    match name {
        "tower-moka" => Ok((
            Arc::new(tower_sessions_moka_store::MokaStore::new(None)),
            Vec::new(),
        )),
        "tower-redis" | "tower-redis-cluster" => {
            use tower_sessions_redis_store::fred::prelude::{ClientLike, Config, Pool};
            let (config, pids) = if name == "tower-redis" {
                let (url, pids) = server(Backend::Redis, options).await?;
                (Config::from_url(&url).map_err(|e| e.to_string())?, pids)
            } else {
                let (urls, pids) = server(Backend::RedisCluster, options).await?;
                (fred_cluster_config(&urls)?, pids)
            };
            // Six connections, as tower-sessions' own example sets up its pool.
            let pool = Pool::new(config, None, None, None, 6).map_err(|e| e.to_string())?;
            pool.init().await.map_err(|e| e.to_string())?;
            Ok((
                Arc::new(tower_sessions_redis_store::RedisStore::new(pool)),
                pids,
            ))
        }
        "tower-postgres" => {
            let (url, pids) = server(Backend::Postgres, options).await?;
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(16)
                .connect(&url)
                .await
                .map_err(|e| e.to_string())?;
            let store =
                tower_sessions_sqlx_store::PostgresStore::new(pool).with_table_name(&table)?;
            store.migrate().await.map_err(|e| e.to_string())?;
            Ok((Arc::new(store), pids))
        }
        "tower-mysql" => {
            let (url, pids) = server(Backend::MySql, options).await?;
            let pool = sqlx::mysql::MySqlPoolOptions::new()
                .max_connections(16)
                .connect(&url)
                .await
                .map_err(|e| e.to_string())?;
            let store = tower_sessions_sqlx_store::MySqlStore::new(pool).with_table_name(&table)?;
            store.migrate().await.map_err(|e| e.to_string())?;
            Ok((Arc::new(store), pids))
        }
        "tower-sqlite" => {
            let path = crate::scratch::path(&format!("{table}.db")).map_err(|e| e.to_string())?;
            let options = sqlx::sqlite::SqliteConnectOptions::new()
                .filename(&path)
                .create_if_missing(true)
                .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal);
            let pool = sqlx::sqlite::SqlitePoolOptions::new()
                .connect_with(options)
                .await
                .map_err(|e| e.to_string())?;
            let store =
                tower_sessions_sqlx_store::SqliteStore::new(pool).with_table_name(&table)?;
            store.migrate().await.map_err(|e| e.to_string())?;
            Ok((Arc::new(store), Vec::new()))
        }
        other => Err(format!("unknown peer {other}")),
    }
}

/// fred's configuration for the cluster whose seed nodes `urls` lists, read as this project's
/// Redis store reads them (`redis://a:7000,redis://b:7001`, or `redis+cluster://a:7000,b:7001`),
/// each node's address then read by fred.
fn fred_cluster_config(
    urls: &str,
) -> std::result::Result<tower_sessions_redis_store::fred::prelude::Config, String> {
    use tower_sessions_redis_store::fred::prelude::{Config, ServerConfig};
    let nodes = session_redis::Config::from_url(urls)
        .map_err(|e| e.to_string())?
        .nodes;
    let hosts = nodes
        .iter()
        .map(
            |node| match Config::from_url(node).map_err(|e| e.to_string())?.server {
                ServerConfig::Centralized { server } => Ok((server.host.to_string(), server.port)),
                other => Err(format!("{node}: not one node: {other:?}")),
            },
        )
        .collect::<std::result::Result<Vec<_>, String>>()?;
    Ok(Config {
        server: ServerConfig::new_clustered(hosts),
        ..Config::default()
    })
}

/// Creates the sessions of `shape` in the peer store: the same attribute names and values as
/// this project's rows, as JSON strings (what tower-sessions stores for a `String`).
async fn prepare(
    store: &Arc<dyn SessionStore>,
    shape: Shape,
    options: &Options,
) -> Result<Vec<Id>> {
    let value = Value::String("x".repeat(shape.value_len));
    in_parallel(options, |_| {
        let (store, value) = (Arc::clone(store), value.clone());
        async move {
            let mut record = Record {
                id: Id::default(),
                data: (0..shape.attributes)
                    .map(|a| (format!("attr{a}"), value.clone()))
                    .collect(),
                expiry_date: time::OffsetDateTime::now_utc() + time::Duration::hours(2),
            };
            store.create(&mut record).await.map_err(peer_error)?;
            Ok(record.id)
        }
    })
    .await
}

struct PeerCycle {
    store: Arc<dyn SessionStore>,
    ids: Vec<Id>,
    value: Value,
}

#[async_trait]
impl Workload for PeerCycle {
    async fn run(&self, i: usize) -> Result<()> {
        let mut record = self
            .store
            .load(&self.ids[i])
            .await
            .map_err(peer_error)?
            .ok_or(Error::NotFound)?;
        let value = match &self.value {
            Value::String(base) => Value::String(changed(base)),
            other => other.clone(),
        };
        record.data.insert("attr0".into(), value);
        self.store.save(&record).await.map_err(peer_error)
    }
}

struct PeerRead(Arc<PeerCycle>);

#[async_trait]
impl Workload for PeerRead {
    async fn run(&self, i: usize) -> Result<()> {
        self.0
            .store
            .load(&self.0.ids[i])
            .await
            .map_err(peer_error)?
            .ok_or(Error::NotFound)?;
        Ok(())
    }
}

/// Prepares the peer's sessions of `shape` and adds its cycle and read rows to `plan`.
pub(crate) async fn plan_peer(
    name: &str,
    store: &Arc<dyn SessionStore>,
    pids: &[u32],
    shape: Shape,
    options: &Options,
    plan: &mut Vec<plan::Planned>,
) -> Result<()> {
    let options = &options.for_shape(shape);
    let ids = prepare(store, shape, options).await?;
    let cycle = Arc::new(PeerCycle {
        store: Arc::clone(store),
        ids,
        value: Value::String("y".repeat(shape.value_len)),
    });
    let rows: [(&'static str, Arc<dyn Workload>); 2] = [
        ("cycle", cycle.clone()),
        ("read", Arc::new(PeerRead(cycle))),
    ];
    for (workload, work) in rows {
        plan.push(plan::Planned {
            backend: name.to_owned(),
            shape: shape.name,
            workload,
            work,
            pids: pids.to_vec(),
            sessions: options.sessions,
            baseline: None,
        });
    }
    Ok(())
}

/// One measured row, kept for the comparison printed at the end of the run.
#[derive(Debug, Clone)]
pub(crate) struct Measured {
    backend: String,
    shape: &'static str,
    workload: &'static str,
    ops_per_sec: f64,
    /// Ops/s of each interleaved round.
    rounds: Vec<f64>,
}

impl Measured {
    pub(crate) fn new(
        backend: &str,
        shape: &'static str,
        workload: &'static str,
        row: &Row,
        rounds: Vec<f64>,
    ) -> Self {
        Measured {
            backend: backend.to_owned(),
            shape,
            workload,
            ops_per_sec: row.ops_per_sec,
            rounds,
        }
    }
}

/// For every row of this project's store that ran beside its peer: ours / the peer's ops/s,
/// over the whole row and the range of the per-round ratios (rounds are interleaved, so each
/// round's two slices ran moments apart).
pub(crate) fn print_versus_peer(results: &[Measured]) {
    let mut lines = Vec::new();
    for (peer, ours) in PEERS {
        for theirs in results.iter().filter(|m| m.backend == peer) {
            // The raw compare-and-set loop beside the peer's cycle: how far above the peer a
            // store that compares can get on this server (the peer's save does not compare).
            let workloads: &[&str] = match theirs.workload {
                "cycle" => &["cycle", "raw-cas"],
                other => &[other],
            };
            let rows = workloads.iter().filter_map(|workload| {
                results.iter().find(|m| {
                    m.backend == ours && m.shape == theirs.shape && m.workload == *workload
                })
            });
            for mine in rows {
                let per_round: Vec<f64> = mine
                    .rounds
                    .iter()
                    .zip(&theirs.rounds)
                    .map(|(a, b)| a / b)
                    .collect();
                let low = per_round.iter().copied().fold(f64::INFINITY, f64::min);
                let high = per_round.iter().copied().fold(0.0, f64::max);
                lines.push(format!(
                    "{ours:<10} {:<6} {:<10} {:>12.0} {:>12.0} {:>8.2}x {:>6.2}-{:.2}x",
                    theirs.shape,
                    mine.workload,
                    mine.ops_per_sec,
                    theirs.ops_per_sec,
                    mine.ops_per_sec / theirs.ops_per_sec,
                    low,
                    high,
                ));
            }
        }
    }
    if !lines.is_empty() {
        println!("\nversus tower-sessions (same run, same servers, same loop):");
        println!(
            "{:<10} {:<6} {:<10} {:>12} {:>12} {:>9} {:>12}",
            "backend", "size", "workload", "ours ops/s", "peer ops/s", "ours/peer", "per round"
        );
        for line in lines {
            println!("{line}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fred_cluster_config;
    use tower_sessions_redis_store::fred::prelude::ServerConfig;

    #[test]
    fn every_cluster_node_reaches_fred() {
        for urls in [
            "redis://127.0.0.1:7000,redis://127.0.0.1:7001,redis://127.0.0.1:7002",
            "redis+cluster://127.0.0.1:7000,127.0.0.1:7001,127.0.0.1:7002",
        ] {
            let config = fred_cluster_config(urls).unwrap();
            let ServerConfig::Clustered { hosts, .. } = config.server else {
                panic!("not clustered: {:?}", config.server);
            };
            let mut ports: Vec<u16> = hosts.iter().map(|host| host.port).collect();
            ports.sort_unstable();
            assert_eq!(ports, [7000, 7001, 7002], "{urls}");
            assert!(hosts.iter().all(|host| &*host.host == "127.0.0.1"));
        }
    }
}
