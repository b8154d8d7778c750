//! This workspace's test servers, for its own tests and benchmarks (not published): the
//! conformance suite itself is `session-conformance`, which needs none of this.
//!
//! [`provision`] finds a server for a backend in this order:
//!
//! 1. a URL from the environment, `SESSION_TEST_<BACKEND>_URL` (e.g. `SESSION_TEST_REDIS_URL`;
//!    a cluster's node URLs, comma-separated, in `SESSION_TEST_REDIS_CLUSTER_URLS`);
//! 2. a throwaway server started from a binary on `PATH`, on a free loopback port with its data
//!    in a temp dir, shared by every test of the test binary (for MongoDB, a `mongo` container
//!    comes first when its image is already on the engine: real MongoDB over the wire-compatible
//!    servers);
//! 3. a container, when a Docker engine answers ([`ContainerSpec`]: official images pinned by
//!    tag, `SESSION_TEST_<BACKEND>_IMAGE` to override; `SESSION_TEST_PROVISION=docker` skips
//!    step 2 for every backend);
//! 4. otherwise the backend is skipped with one line on stderr, unless `SESSION_TEST_REQUIRE`
//!    is `all` or names the backend (comma-separated), in which case the test fails.
//!
//! The harness owns the servers it starts: [`dedicated`] gives a server of the calling test's
//! own, as a [`ServerControl`] the suite's fault cases can crash and freeze (a container when
//! the shared server is one). Each server, process or container, is watched by a small shell
//! process that kills or removes it when the test process exits, however it exits.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

pub use session_conformance::{namespace, report};
use session_conformance::{ControlError, ServerControl};

mod cluster;
mod docker;
mod proc;
mod process;
mod spec;
mod tls;

pub use cluster::{
    add_redis_cluster_master, move_redis_cluster_slots, redis_cluster_masters,
    start_redis_cluster_of, start_redis_cluster_with_replicas,
};
pub use docker::{
    container_exists, containers_forced, engine_answers, image_present, ContainerServer,
    ContainerSpec,
};
pub use proc::{child_processes, ProcStat};
pub use process::ServerProcess;
pub use spec::{Probe, ServerSpec};
pub use tls::TestCertificates;
#[allow(unused_imports)]
use {cluster::*, proc::*, process::*, spec::*};

/// PostgreSQL settings of every throwaway server, process or container: no durability (the
/// data is thrown away), room for the suite's concurrent pools.
pub(crate) const POSTGRES_TUNING: [&str; 8] = [
    "-c",
    "fsync=off",
    "-c",
    "synchronous_commit=off",
    "-c",
    "full_page_writes=off",
    "-c",
    "max_connections=300",
];

/// MariaDB settings of every throwaway server, process or container (same reasons).
///
/// The buffer pool and redo log are sized as a production server's would be for the data it
/// holds, not at the 128 MiB / 96 MiB defaults: the benchmark's tables (20,000 large sessions
/// for the store, the raw baseline and the peer, ~0.4 GB each) thrashed a 128 MiB pool, and
/// the rows then measured page eviction (the store's large cycle at 0.42× of the peer's with
/// the default, parity with 2 GiB). InnoDB takes the pool's memory only as it fills, so the
/// tests do not use more. A large session's save puts some 40 KB in the redo log (the new
/// blob's pages and the undo of the old), so at 6,000 saves a second a 256 MiB log filled in
/// about a second and InnoDB flushed pages in bursts to free it: stalls of tens of
/// milliseconds that fell on whichever row ran then (the store's large cycle at 0.84–1.19×
/// of the peer's over four runs; 1.30–1.42× over three with 1 GiB).
pub(crate) const MARIADB_TUNING: [&str; 5] = [
    "--skip-log-bin",
    "--innodb-flush-log-at-trx-commit=0",
    "--max-connections=300",
    "--innodb-buffer-pool-size=2G",
    "--innodb-log-file-size=1G",
];

/// How long a started server may take to answer its readiness probe.
pub(crate) const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A kind of server the suite can provision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Backend {
    /// A standalone redis-server.
    Redis,
    /// memcached.
    Memcached,
    /// PostgreSQL (15 on Debian 12).
    Postgres,
    /// MariaDB or MySQL.
    MySql,
    /// A Redis Cluster of three masters (no replicas).
    RedisCluster,
    /// A MongoDB-wire server: a real `mongod` from `SESSION_TEST_MONGODB_URL`, else secantusdb
    /// (a Python server on WiredTiger; `secantusd-py` on `PATH`, from
    /// `pip install secantusdb==0.7.0b3`).
    MongoDb,
    /// A second, independent MongoDB-wire server, nx-27017 (Python on NeoSQLite; `nx-27017` on
    /// `PATH`, from `pip install nx-27017==0.8.1`), run as a second opinion.
    MongoDbNx,
}

impl Backend {
    /// Name used in `SESSION_TEST_REQUIRE` and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Redis => "redis",
            Backend::Memcached => "memcached",
            Backend::Postgres => "postgres",
            Backend::MySql => "mysql",
            Backend::RedisCluster => "redis-cluster",
            Backend::MongoDb => "mongodb",
            Backend::MongoDbNx => "mongodb-nx",
        }
    }

    /// The environment variable holding an external server's URL: `SESSION_TEST_<NAME>_URL`,
    /// except for a cluster, whose several node URLs (comma-separated) are in
    /// `SESSION_TEST_REDIS_CLUSTER_URLS`.
    pub fn url_variable(self) -> String {
        let name = self.name().to_uppercase().replace('-', "_");
        match self {
            Backend::RedisCluster => format!("SESSION_TEST_{name}_URLS"),
            _ => format!("SESSION_TEST_{name}_URL"),
        }
    }

    /// How to start a throwaway server of this kind.
    pub fn spec(self) -> ServerSpec {
        let strings = |items: &[&str]| {
            items
                .iter()
                .map(|item| (*item).to_owned())
                .collect::<Vec<_>>()
        };
        match self {
            Backend::Redis => ServerSpec {
                backend: self,
                program: "redis-server".into(),
                args: strings(&[
                    "--port",
                    "{port}",
                    "--bind",
                    "127.0.0.1",
                    "--dir",
                    "{dir}",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--logfile",
                    "{dir}/redis.log",
                    // Expired-key notifications, so that stores can report expiry events.
                    "--notify-keyspace-events",
                    "Ex",
                ]),
                probe: Probe::RedisPing,
                url: "redis://127.0.0.1:{port}".into(),
                run_as: None,
                owner: None,
                setup: Vec::new(),
                after_start: Vec::new(),
            },
            Backend::RedisCluster => Backend::Redis.spec().redis_cluster_node(),
            Backend::MongoDb => secantus_spec(),
            Backend::MongoDbNx => ServerSpec {
                backend: self,
                program: "nx-27017".into(),
                args: strings(&[
                    "--host",
                    "127.0.0.1",
                    "-p",
                    "{port}",
                    "--data-dir",
                    "{dir}",
                    "--log-file",
                    "{dir}/nx.log",
                    "--pid-file",
                    "{dir}/nx.pid",
                ]),
                probe: Probe::MongoPing,
                url: "mongodb://127.0.0.1:{port}/session_test?directConnection=true".into(),
                run_as: None,
                owner: None,
                setup: Vec::new(),
                after_start: Vec::new(),
            },
            Backend::Memcached => ServerSpec {
                backend: self,
                program: "memcached".into(),
                // As root memcached exits with 64 unless told which user to run as.
                args: strings(&[
                    "-u",
                    "nobody",
                    "-l",
                    "127.0.0.1",
                    "-p",
                    "{port}",
                    "-U",
                    "0",
                    // Room for session-bench's 20,000 large sessions twice (the store's
                    // and the raw baseline's, ~0.9 GB); memcached takes memory as it fills.
                    "-m",
                    "2048",
                ]),
                probe: Probe::MemcachedVersion,
                url: "memcache://127.0.0.1:{port}".into(),
                run_as: None,
                owner: None,
                setup: Vec::new(),
                after_start: Vec::new(),
            },
            Backend::Postgres => {
                // initdb and postgres refuse to run as root; Debian keeps them off PATH.
                let bin = postgres_bin_dir()
                    .unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"));
                let tool = |name: &str| bin.join(name).to_string_lossy().into_owned();
                ServerSpec {
                    backend: self,
                    program: tool("postgres"),
                    args: strings(&[
                        "-D",
                        "{dir}/data",
                        "-p",
                        "{port}",
                        "-k",
                        "{dir}",
                        "-c",
                        "listen_addresses=127.0.0.1",
                    ])
                    .into_iter()
                    .chain(strings(&POSTGRES_TUNING))
                    .collect(),
                    probe: Probe::Command(vec![
                        "pg_isready".into(),
                        "-q".into(),
                        "-h".into(),
                        "127.0.0.1".into(),
                        "-p".into(),
                        "{port}".into(),
                    ]),
                    url: "postgres://postgres@127.0.0.1:{port}/postgres".into(),
                    run_as: Some("postgres"),
                    owner: Some("postgres"),
                    setup: vec![vec![
                        tool("initdb"),
                        "-D".into(),
                        "{dir}/data".into(),
                        "-U".into(),
                        "postgres".into(),
                        "--auth=trust".into(),
                        "-E".into(),
                        "UTF8".into(),
                        "--locale=C.UTF-8".into(),
                        "-N".into(),
                    ]],
                    after_start: Vec::new(),
                }
            }
            Backend::MySql => {
                let client = |sql: &str| {
                    strings(&[
                        "mariadb",
                        "--no-defaults",
                        "--protocol=TCP",
                        "-h127.0.0.1",
                        "-P{port}",
                        "-uroot",
                        "-e",
                        sql,
                    ])
                };
                ServerSpec {
                    backend: self,
                    program: "mariadbd".into(),
                    // --no-defaults: /etc/mysql/my.cnf would override datadir, socket and port.
                    args: strings(&[
                        "--no-defaults",
                        "--datadir={dir}/data",
                        // Its own temp dir: servers sharing /tmp collide on temp-table names.
                        "--tmpdir={dir}",
                        "--user=mysql",
                        "--port={port}",
                        "--bind-address=127.0.0.1",
                        "--socket={dir}/sock",
                    ])
                    .into_iter()
                    .chain(strings(&MARIADB_TUNING))
                    .collect(),
                    probe: Probe::Command(client("SELECT 1")),
                    url: "mysql://root@127.0.0.1:{port}/session_test".into(),
                    run_as: None,
                    owner: Some("mysql"),
                    setup: vec![strings(&[
                        "mariadb-install-db",
                        "--no-defaults",
                        "--datadir={dir}/data",
                        // Concurrent bootstraps in one /tmp fail on each other's temp tables.
                        "--tmpdir={dir}",
                        "--user=mysql",
                        "--auth-root-authentication-method=normal",
                        "--skip-test-db",
                    ])],
                    after_start: vec![client("CREATE DATABASE IF NOT EXISTS session_test")],
                }
            }
        }
    }
}

/// Whether `SESSION_TEST_REQUIRE` makes a skip of `backend` a failure.
pub fn is_required(backend: Backend) -> bool {
    std::env::var("SESSION_TEST_REQUIRE").is_ok_and(|value| {
        value.split(',').map(str::trim).any(|name| {
            name.eq_ignore_ascii_case("all") || name.eq_ignore_ascii_case(backend.name())
        })
    })
}

/// A server for tests: where to connect, and the process or container if the harness
/// started it.
#[derive(Debug, Clone, Default)]
pub struct Provisioned {
    /// URL of the server.
    pub url: String,
    /// The server processes when the harness owns them (none for a URL from the environment).
    pub processes: Vec<Arc<ServerProcess>>,
    /// The container, when the server runs in one.
    pub containers: Vec<Arc<ContainerServer>>,
}

type Slot = Arc<tokio::sync::OnceCell<Option<Provisioned>>>;

/// A server for `backend`, shared by all tests of this test binary (see the module docs for
/// the order tried). `None` after printing one skip line; panics instead when the backend is
/// required.
pub async fn provision(backend: Backend) -> Option<Provisioned> {
    static SLOTS: OnceLock<Mutex<HashMap<Backend, Slot>>> = OnceLock::new();
    let slot = Arc::clone(
        lock(SLOTS.get_or_init(Default::default))
            .entry(backend)
            .or_default(),
    );
    slot.get_or_init(|| provision_uncached(backend))
        .await
        .clone()
}

async fn provision_uncached(backend: Backend) -> Option<Provisioned> {
    let variable = backend.url_variable();
    if let Ok(url) = std::env::var(&variable) {
        if !url.trim().is_empty() {
            report(&format!("{}: using {variable}", backend.name()));
            return Some(Provisioned {
                url,
                ..Provisioned::default()
            });
        }
    }
    let mut reasons = vec![format!("no {variable}")];
    // Real MongoDB where a container of it can be had without a pull: before the
    // wire-compatible servers on PATH.
    if backend == Backend::MongoDb && !containers_forced() {
        if let Some(spec) = ContainerSpec::of(backend) {
            if engine_answers().await && image_present(&spec.image).await {
                match start_container(backend).await {
                    Ok(server) => return Some(announce_container(backend, server)),
                    Err(reason) => reasons.push(reason),
                }
            }
        }
    }
    if containers_forced() {
        reasons.push("SESSION_TEST_PROVISION=docker".to_owned());
    } else {
        match start_process(backend).await {
            Ok(provisioned) => {
                report(&format!(
                    "{}: started a throwaway server at {}",
                    backend.name(),
                    provisioned.url
                ));
                return Some(provisioned);
            }
            Err(reason) => reasons.push(reason),
        }
    }
    match start_container(backend).await {
        Ok(server) => return Some(announce_container(backend, server)),
        Err(reason) => reasons.push(reason),
    }
    let reason = reasons.join(", ");
    if is_required(backend) {
        panic!(
            "{} is required by SESSION_TEST_REQUIRE but unavailable: {reason}",
            backend.name()
        );
    }
    report(&format!("SKIPPED {}: {reason}", backend.name()));
    None
}

fn announce_container(backend: Backend, server: Arc<ContainerServer>) -> Provisioned {
    report(&format!(
        "{}: started a container of {} at {} (id {})",
        backend.name(),
        server.image(),
        server.url(),
        &server.id()[..12.min(server.id().len())]
    ));
    Provisioned {
        url: server.url(),
        containers: vec![server],
        ..Provisioned::default()
    }
}

/// A throwaway server process of `backend` from its binary on `PATH`; why not, otherwise.
async fn start_process(backend: Backend) -> Result<Provisioned, String> {
    let spec = backend.spec();
    let cluster = backend == Backend::RedisCluster;
    if !spec.available() || (cluster && find_on_path("redis-cli").is_none()) {
        return Err(format!("no {} on PATH", spec.program));
    }
    let started = if cluster {
        start_redis_cluster_of(&Backend::RedisCluster.spec(), &[]).await
    } else {
        ServerProcess::start(spec.clone())
            .await
            .map(|process| Provisioned {
                url: process.url(),
                processes: vec![process],
                ..Provisioned::default()
            })
    };
    started.map_err(|error| format!("starting {} failed: {error}", spec.program))
}

/// A container of `backend`; why not, otherwise.
async fn start_container(backend: Backend) -> Result<Arc<ContainerServer>, String> {
    let Some(spec) = ContainerSpec::of(backend) else {
        return Err("no container recipe for it".to_owned());
    };
    if !engine_answers().await {
        return Err("no Docker engine answers".to_owned());
    }
    let image = spec.image.clone();
    ContainerServer::start(spec)
        .await
        .map_err(|error| format!("a container of {image} failed: {error}"))
}

/// A server of `backend` for the calling test alone (fault cases crash and freeze it): a
/// container when the shared one is (or `SESSION_TEST_PROVISION=docker`), else a process. `None`
/// when the backend is skipped (see [`provision`]; a failure under `SESSION_TEST_REQUIRE`).
pub async fn dedicated(backend: Backend) -> Option<Arc<dyn ServerControl>> {
    let shared = provision(backend).await?;
    let in_container = !shared.containers.is_empty()
        || containers_forced()
        || (shared.processes.is_empty() && !backend.spec().available());
    if in_container {
        let server = start_container(backend).await.unwrap_or_else(|reason| {
            panic!("cannot start a dedicated {}: {reason}", backend.name())
        });
        return Some(server);
    }
    let server = ServerProcess::start(backend.spec())
        .await
        .unwrap_or_else(|error| panic!("cannot start a dedicated {}: {error}", backend.name()));
    Some(server)
}

#[async_trait::async_trait]
impl ServerControl for ServerProcess {
    fn url(&self) -> String {
        ServerProcess::url(self)
    }

    async fn stop(&self) -> Result<(), ControlError> {
        ServerProcess::stop(self);
        Ok(())
    }

    async fn start(&self) -> Result<(), ControlError> {
        Ok(self.restart().await?)
    }

    async fn pause(&self) -> Result<(), ControlError> {
        Ok(ServerProcess::pause(self).await?)
    }

    async fn resume(&self) -> Result<(), ControlError> {
        Ok(ServerProcess::resume(self).await?)
    }
}
