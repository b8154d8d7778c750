//! `session-bench`: measures each store's request cycle (load, change one attribute, save) and
//! read path beside the raw driver moving the same bytes on the same server, with 32
//! concurrent tasks, for small (10 × 100 B) and large (50 × 400 B) sessions.
//!
//! ```text
//! cargo run --release -p session-bench -- [--seconds S] [--rounds N] [--tasks N] [--sessions N] [--backends memory]
//!     [--shapes small,large] [--only cycle|read|raw-cycle|raw-read|raw-cas] [--pin]
//! ```
//!
//! Prints ops/s, p50 and p99 latency, each store row's ratio to its raw baseline, and, for
//! servers this run started, the server's CPU time per operation: where client and server
//! share the machine's cores, throughput follows that number (a store whose operations cost
//! the single-threaded Redis more server time cannot keep up with the raw driver, whatever
//! the client does).
//!
//! On Redis a `raw-cas` row runs beside them: the raw cycle with its write made conditional the
//! way the store's save is on that server (`SET … IFDEQ`, `SET … IFEQ`, or a script). The peer's
//! save does not compare, so this row is the ceiling, against the peer, of any store that keeps
//! a concurrent writer's change: the "versus tower-sessions" table shows it beside the store's
//! cycle.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use session_core::raw::SessionInternals;
use session_core::{Error, Result, SessionId, SessionKey, SessionRepository, SessionRepositoryExt};
use session_memory::MemoryStore;

mod http;
mod layout;
mod peer;
mod plan;
mod raw;
mod scratch;
mod workload;

use workload::*;

use raw::{MokaRaw, RawDriver, SqlRaw};
use session_sql::{Config, SqlStore};
use session_test_harness::{
    child_processes, provision, Backend, ProcStat, ServerProcess, ServerSpec, TestCertificates,
};

/// Benchmark parameters from the command line.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    /// Seconds each row runs, over all its rounds.
    seconds: f64,
    /// `--rounds N`: every row runs in N slices of `seconds / N`, the rows taking turns, so
    /// that rows compared with each other ran moments apart (see [`plan`]).
    rounds: usize,
    tasks: usize,
    /// Sessions per shape: `--sessions`, else the shape's default (more than any cache in the
    /// path holds: 100,000 small, 20,000 large).
    sessions: usize,
    sessions_given: bool,
    backends: Vec<String>,
    /// Session shapes to run (`small`, `large`).
    shapes: Vec<String>,
    /// Run only this workload (`cycle`, `read`, `raw-cycle`, `raw-read` or `raw-cas`), for
    /// profiling.
    only: Option<String>,
    /// `--pin`: give the servers this run starts a CPU of their own (see [`place`]).
    pin: bool,
    /// `--metrics`: install a Prometheus recorder and turn the metrics of
    /// `memory-instrumented` on (without it, that row's wrapper has its metrics off).
    metrics: bool,
    /// `--skip-layout`: leave out the SQL attribute-table row (its prepare, a row per
    /// attribute, takes most of a SQL run's time, and its tables crowd the buffer pool).
    skip_layout: bool,
    /// `--order scan|random`: how a row's tasks visit the sessions (see [`workload::Order`]).
    order: Order,
    /// CPUs this process may use when it starts.
    cpus: usize,
    /// `--footprint N`: instead of the rows, fill the in-memory store with N small sessions
    /// and report its bytes per session against the payload.
    footprint: Option<usize>,
}

impl Options {
    fn parse() -> std::result::Result<Self, String> {
        let mut options = Options {
            seconds: 3.0,
            rounds: 6,
            tasks: 32,
            sessions: 0,
            sessions_given: false,
            backends: vec!["memory".into()],
            only: None,
            shapes: vec!["small".into(), "large".into()],
            pin: false,
            metrics: false,
            skip_layout: false,
            order: Order::Scan,
            cpus: std::thread::available_parallelism().map_or(1, usize::from),
            footprint: None,
        };
        let mut args = std::env::args().skip(1);
        while let Some(flag) = args.next() {
            let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
            match flag.as_str() {
                "--seconds" => options.seconds = number(&value()?)?,
                "--rounds" => options.rounds = number::<usize>(&value()?)?.max(1),
                "--tasks" => options.tasks = number(&value()?)?,
                "--sessions" => {
                    options.sessions = number(&value()?)?;
                    options.sessions_given = true;
                }
                "--backends" => options.backends = value()?.split(',').map(str::to_owned).collect(),
                "--only" => options.only = Some(value()?),
                "--order" => options.order = Order::parse(&value()?)?,
                "--shapes" => options.shapes = value()?.split(',').map(str::to_owned).collect(),
                "--pin" => options.pin = true,
                "--skip-layout" => options.skip_layout = true,
                "--metrics" => options.metrics = true,
                "--footprint" => options.footprint = Some(number(&value()?)?),
                "--help" | "-h" => {
                    return Err(format!("usage: session-bench [--seconds S] [--rounds N] [--tasks N] [--sessions N] [--backends B,B,…] [--only cycle|read|raw-cycle|raw-read|raw-cas] [--shapes small,large] [--order scan|random] [--pin] [--skip-layout] [--metrics] [--footprint N]; backends: {BACKENDS}; http-<backend> runs the HTTP-layer load"))
                }
                other => return Err(format!("unknown option {other}")),
            }
        }
        Ok(options)
    }
}

impl Options {
    /// These options with the session count of `shape`.
    pub(crate) fn for_shape(&self, shape: Shape) -> Options {
        let mut options = self.clone();
        if !self.sessions_given {
            options.sessions = shape.default_sessions;
        }
        options
    }
}

fn number<T: std::str::FromStr>(text: &str) -> std::result::Result<T, String> {
    text.parse().map_err(|_| format!("not a number: {text}"))
}

/// Session shape: `attributes` values of `value_len` bytes each.
#[derive(Debug, Clone, Copy)]
struct Shape {
    name: &'static str,
    attributes: usize,
    value_len: usize,
    /// Sessions of this shape without `--sessions`: a realistic working set, larger than the
    /// Redis near cache's default 32 MiB.
    default_sessions: usize,
}

const SHAPES: [Shape; 2] = [
    Shape {
        name: "small",
        attributes: 10,
        value_len: 100,
        default_sessions: 100_000,
    },
    Shape {
        name: "large",
        attributes: 50,
        value_len: 400,
        default_sessions: 20_000,
    },
];

/// A backend under test: the store, and the raw driver on the same server.
struct Target {
    name: String,
    repository: Arc<dyn SessionRepository>,
    raw: Arc<dyn RawDriver>,
    /// For SQL stores: the store itself, to measure the alternative layout beside it.
    sql: Option<SqlStore>,
    /// The server processes this run started (none for a server from the environment).
    server_pids: Vec<u32>,
    /// A server started for this target alone, stopped when the target is dropped.
    _dedicated: Option<Arc<ServerProcess>>,
}

const BACKENDS: &str =
    "memory, memory-instrumented, sqlite, postgres, mysql, redis, redis-nocache (near cache off), \
     redis-hash (the hash layout, which earlier versions wrote), redis-tls, \
     redis-cluster, memcached, mongodb, \
     mongodb-nx; beside them, tower-sessions' stores: tower-redis, tower-redis-cluster, tower-postgres, \
     tower-mysql, tower-sqlite, tower-moka";

/// The in-memory store with room for every session of the run (20,000 large sessions are
/// ~400 MiB; the default capacity, 256 MiB, would evict some and fail the rows).
fn bench_memory_store() -> MemoryStore {
    MemoryStore::open(
        session_memory::Config::default().with_capacity_bytes(4 << 30),
        session_core::SessionSettings::default(),
    )
}

async fn open_target(name: &str, options: &Options) -> std::result::Result<Target, String> {
    let mut server_pids = Vec::new();
    let url = match name {
        // The memory store inside session-instrument's wrapper: the wrapper's overhead is this
        // row beside the `memory` row (with `--metrics` a recorder counts every call).
        "memory-instrumented" => {
            return Ok(Target {
                name: name.into(),
                repository: {
                    let wrapped =
                        session_instrument::Instrumented::new(bench_memory_store(), "memory");
                    // Without `--metrics` the wrapper runs with metrics off (and no subscriber
                    // wants its spans): the cost of having it in place, doing nothing.
                    Arc::new(if options.metrics {
                        wrapped
                    } else {
                        wrapped.without_metrics()
                    })
                },
                raw: Arc::new(MokaRaw::new()),
                sql: None,
                server_pids: Vec::new(),
                _dedicated: None,
            });
        }
        "memory" => {
            return Ok(Target {
                name: name.into(),
                repository: Arc::new(bench_memory_store()),
                raw: Arc::new(MokaRaw::new()),
                sql: None,
                server_pids: Vec::new(),
                _dedicated: None,
            })
        }
        "sqlite" => {
            let path = scratch::path(&format!("{}.db", session_test_harness::namespace("bench")))
                .map_err(|e| format!("sqlite: {e}"))?;
            format!("sqlite://{}", path.display())
        }
        // Servers come from SESSION_TEST_<BACKEND>_URL or are started like the test suite does.
        "redis" | "redis-nocache" | "redis-hash" | "redis-cluster" | "redis-tls" => {
            let mut dedicated = None;
            let (url, server_pids, ca) = match name {
                "redis" | "redis-nocache" | "redis-hash" => server(Backend::Redis, options)
                    .await
                    .map(|(u, p)| (u, p, None))?,
                "redis-cluster" => server(Backend::RedisCluster, options)
                    .await
                    .map(|(u, p)| (u, p, None))?,
                _ => {
                    let (server, ca) = tls_server(options).await?;
                    let pids = server.pid().into_iter().collect();
                    let url = server.url();
                    dedicated = Some(server);
                    (url, pids, Some(ca))
                }
            };
            let mut config = session_redis::Config::from_url(&url)
                .map_err(|e| e.to_string())?
                .with_prefix(format!("{}:", session_test_harness::namespace("bench")));
            if let Some(ca) = ca {
                config = config.with_tls_ca_file(ca);
            }
            if name == "redis-nocache" {
                config = config.with_near_cache_bytes(0);
            }
            if name == "redis-hash" {
                config = config.with_layout(session_redis::Layout::Hash);
            }
            let store = session_redis::RedisStore::open(
                config.clone(),
                session_core::SessionSettings::default(),
            )
            .await
            .map_err(|e| format!("{name}: {e}"))?;
            let raw = raw::RedisRaw::connect(&config, store.comparison())
                .await
                .map_err(|e| e.to_string())?;
            return Ok(Target {
                name: name.into(),
                repository: Arc::new(store),
                raw: Arc::new(raw),
                sql: None,
                server_pids,
                _dedicated: dedicated,
            });
        }
        "memcached" => {
            let (url, server_pids) = server(Backend::Memcached, options).await?;
            let config = session_memcached::Config::from_url(&url)
                .map_err(|e| e.to_string())?
                .with_prefix(format!("{}:", session_test_harness::namespace("bench")));
            let raw = raw::MemcachedRaw::new(&config).map_err(|e| e.to_string())?;
            let store = session_memcached::MemcachedStore::open(
                config,
                session_core::SessionSettings::default(),
            )
            .await
            .map_err(|e| format!("{name}: {e}"))?;
            return Ok(Target {
                name: name.into(),
                repository: Arc::new(store),
                raw: Arc::new(raw),
                sql: None,
                server_pids,
                _dedicated: None,
            });
        }
        // MongoDB-wire servers (secantusdb, nx-27017): far slower than mongod, so these rows say
        // how the store compares with its own client on the same server, never what MongoDB
        // would do.
        "mongodb" | "mongodb-nx" => {
            let backend = if name == "mongodb" {
                Backend::MongoDb
            } else {
                Backend::MongoDbNx
            };
            let (url, server_pids) = server(backend, options).await?;
            let config = session_mongo::Config::from_url(&url)
                .map_err(|e| e.to_string())?
                .with_collection(session_test_harness::namespace("bench"));
            let store =
                session_mongo::MongoStore::open(config, session_core::SessionSettings::default())
                    .await
                    .map_err(|e| format!("{name}: {e}"))?;
            let raw = raw::MongoRaw::new(&store);
            return Ok(Target {
                name: name.into(),
                repository: Arc::new(store),
                raw: Arc::new(raw),
                sql: None,
                server_pids,
                _dedicated: None,
            });
        }
        "postgres" | "mysql" => {
            let backend = if name == "postgres" {
                Backend::Postgres
            } else {
                Backend::MySql
            };
            let (url, pids) = server(backend, options).await?;
            server_pids = pids;
            url
        }
        other => return Err(format!("unknown backend `{other}` (available: {BACKENDS})")),
    };
    let config = Config::from_url(&url)
        .map_err(|e| e.to_string())?
        .with_table(session_test_harness::namespace("bench"))
        .with_max_connections(u32::try_from(options.tasks).unwrap_or(32))
        .with_cleanup_interval(None);
    let store = SqlStore::open(config, session_core::SessionSettings::default())
        .await
        .map_err(|e| format!("{name}: {e}"))?;
    let raw = SqlRaw::new(&store).await.map_err(|e| e.to_string())?;
    Ok(Target {
        name: name.into(),
        repository: Arc::new(store.clone()),
        raw: Arc::new(raw),
        sql: Some(store),
        server_pids,
        _dedicated: None,
    })
}

/// The URL of a server for `backend` (from `SESSION_TEST_<BACKEND>_URL`, or started like the
/// test suite does), placed by [`place`], and the server processes if this run started them.
async fn server(
    backend: Backend,
    options: &Options,
) -> std::result::Result<(String, Vec<u32>), String> {
    let provisioned = provision(backend)
        .await
        .ok_or_else(|| format!("no {} server", backend.name()))?;
    let pids: Vec<u32> = provisioned
        .processes
        .iter()
        .filter_map(|process| process.pid())
        .collect();
    place(backend, &pids, options);
    Ok((provisioned.url, pids))
}

/// A redis-server of its own that speaks only TLS, with a throwaway CA (needs openssl),
/// placed by [`place`]; and the CA certificate to trust.
async fn tls_server(
    options: &Options,
) -> std::result::Result<(Arc<ServerProcess>, std::path::PathBuf), String> {
    let dir = scratch::path(&session_test_harness::namespace("bench-tls"))
        .map_err(|e| format!("TLS certificates: {e}"))?;
    let certificates = TestCertificates::make(&dir).map_err(|e| e.to_string())?;
    let server = ServerProcess::start(ServerSpec::redis_tls(&certificates))
        .await
        .map_err(|e| format!("starting a TLS redis-server failed: {e}"))?;
    let pids: Vec<u32> = server.pid().into_iter().collect();
    place(Backend::Redis, &pids, options);
    Ok((server, certificates.ca()))
}

/// With `--pin` and at least two CPUs, puts the server processes this run started on the last
/// CPU and this process (all its threads) on the others, and says so.
///
/// Client and server then do not take turns on the same cores, as on separate hosts: without
/// it, a store that spends server time (scripts) is charged that time twice, once as server
/// work and once as client CPU lost to it, and rows move ±15% with the scheduler. The raw
/// baseline runs under the same placement. A server from the environment is left alone.
fn place(backend: Backend, pids: &[u32], options: &Options) {
    let name = backend.name();
    if !options.pin || options.cpus < 2 || pids.is_empty() {
        let why = match (options.pin, options.cpus >= 2, pids.is_empty()) {
            (false, _, _) => "no --pin",
            (_, false, _) => "one CPU",
            _ => "a server this run did not start",
        };
        println!("{name}: client and server share all CPUs ({why})");
        return;
    }
    let server_cpu = options.cpus - 1;
    let taskset = |cpus: &str, pid: u32| {
        std::process::Command::new("taskset")
            .args(["-a", "-p", "-c", cpus, &pid.to_string()])
            .stdout(std::process::Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    };
    let servers = pids
        .iter()
        .all(|pid| taskset(&server_cpu.to_string(), *pid));
    let client = taskset(&format!("0-{}", server_cpu - 1), std::process::id());
    if servers && client {
        println!(
            "{name}: server on CPU {server_cpu}, session-bench on CPUs 0-{}",
            server_cpu - 1
        );
    } else {
        println!("{name}: could not pin with taskset; client and server share all CPUs");
    }
}

/// Creates `options.sessions` sessions of `shape` in the store, and the same encoded bytes
/// under the same keys in the raw driver.
async fn prepare(
    target: &Target,
    shape: Shape,
    options: &Options,
) -> Result<(Arc<Vec<SessionId>>, Arc<Vec<SessionKey>>)> {
    let value = Arc::new("x".repeat(shape.value_len));
    let made = in_parallel(options, |_| {
        let (repository, raw, value) = (
            Arc::clone(&target.repository),
            Arc::clone(&target.raw),
            Arc::clone(&value),
        );
        async move {
            let mut session = repository.new_session();
            for a in 0..shape.attributes {
                session.insert(&format!("attr{a}"), &*value)?;
            }
            let bytes = session
                .clone()
                .record_for_create(session_core::raw::time::now_millis())?
                .encode()?;
            repository.create(&mut session).await?;
            raw.put(&session.key(), bytes).await?;
            Ok((session.id().clone(), session.key()))
        }
    })
    .await?;
    let (ids, keys) = made.into_iter().unzip();
    Ok((Arc::new(ids), Arc::new(keys)))
}

/// Runs `make(i)` for every session number `i` of `options.sessions`, `options.tasks` at a
/// time (filling a server with 100,000 sessions one by one takes minutes); results in order.
pub(crate) async fn in_parallel<T, F, Fut>(options: &Options, make: F) -> Result<Vec<T>>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<T>> + Send + 'static,
{
    let mut results: Vec<Option<T>> = (0..options.sessions).map(|_| None).collect();
    let mut running = tokio::task::JoinSet::new();
    for i in 0..options.sessions {
        if running.len() >= options.tasks.max(1) {
            if let Some(joined) = running.join_next().await {
                let (j, made) = joined.map_err(Error::backend)?;
                results[j] = Some(made?);
            }
        }
        let made = make(i);
        running.spawn(async move { (i, made.await) });
    }
    while let Some(joined) = running.join_next().await {
        let (j, made) = joined.map_err(Error::backend)?;
        results[j] = Some(made?);
    }
    // Every index was spawned and joined above, so every slot is filled.
    Ok(results.into_iter().flatten().collect())
}

/// Resident memory of this process, bytes (Linux `/proc/self/statm`, 4 KiB pages).
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// Fills an in-memory store with `sessions` small sessions and prints what each one costs in
/// resident memory beside its payload (attribute names and encoded values).
async fn footprint(sessions: usize, options: &Options) -> Result<()> {
    let shape = SHAPES[0];
    let store: Arc<dyn SessionRepository> = Arc::new(MemoryStore::open(
        session_memory::Config::default().with_capacity_bytes(64 << 30),
        session_core::SessionSettings::default(),
    ));
    let before = resident_bytes().unwrap_or(0);
    let options = Options {
        sessions,
        ..options.clone()
    };
    let value = Arc::new("x".repeat(shape.value_len));
    let payloads = in_parallel(&options, |_| {
        let (store, value) = (Arc::clone(&store), Arc::clone(&value));
        async move {
            let mut session = store.new_session();
            for a in 0..shape.attributes {
                session.insert(&format!("attr{a}"), &*value)?;
            }
            store.create(&mut session).await?;
            Ok(session.size())
        }
    })
    .await?;
    let after = resident_bytes().unwrap_or(0);
    let payload = payloads.iter().sum::<usize>() as f64 / sessions as f64;
    let resident = after.saturating_sub(before) as f64 / sessions as f64;
    println!(
        "memory store, {sessions} small sessions ({} × {} B): payload {payload:.0} B/session, \
         resident {resident:.0} B/session ({:.2}× payload), process RSS {:.0} MiB",
        shape.attributes,
        shape.value_len,
        resident / payload,
        after as f64 / (1 << 20) as f64
    );
    Ok(())
}

fn micros(duration: Duration) -> String {
    format!("{:.1}", duration.as_secs_f64() * 1e6)
}

pub(crate) fn print_row(
    backend: &str,
    shape: &str,
    workload: &str,
    row: &Row,
    baseline: Option<&Row>,
) {
    let ratio = baseline.map_or(String::from("-"), |base| {
        format!("{:.2}x", row.ops_per_sec / base.ops_per_sec)
    });
    let per_op = |cpu: Option<Duration>| {
        cpu.filter(|_| row.ops > 0)
            .map_or(String::from("-"), |cpu| {
                format!("{:.2}", cpu.as_secs_f64() * 1e6 / row.ops as f64)
            })
    };
    println!(
        "{backend:<10} {shape:<6} {workload:<10} {:>12.0} {:>10} {:>10} {:>8} {:>10} {:>10}",
        row.ops_per_sec,
        micros(row.p50),
        micros(row.p99),
        ratio,
        per_op(row.server_cpu),
        per_op(row.client_cpu),
    );
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let options = match Options::parse() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("{message}");
            scratch::exit(2);
        }
    };
    if cfg!(debug_assertions) {
        eprintln!("warning: a debug build; run with --release for meaningful numbers");
    }
    // Held for the whole run: the recorder the instrumented rows report to.
    let _metrics = if options.metrics {
        let installed = metrics_exporter_prometheus::PrometheusBuilder::new()
            .set_buckets_for_metric(
                metrics_exporter_prometheus::Matcher::Full(
                    "session_store_operation_seconds".into(),
                ),
                session_instrument::LATENCY_BUCKETS,
            )
            .and_then(|builder| builder.install_recorder());
        match installed {
            Ok(handle) => {
                // As an application would (the exporter's own `install` does the same): fold
                // the histogram samples into summaries every second.
                let upkeep = handle.clone();
                tokio::spawn(async move {
                    let mut ticks = tokio::time::interval(Duration::from_secs(1));
                    loop {
                        ticks.tick().await;
                        upkeep.run_upkeep();
                    }
                });
                Some(handle)
            }
            Err(error) => {
                eprintln!("cannot install the Prometheus recorder: {error}");
                scratch::exit(2);
            }
        }
    } else {
        None
    };
    scratch::remove_on_interrupt();
    if let Some(sessions) = options.footprint {
        if let Err(error) = footprint(sessions, &options).await {
            eprintln!("footprint: {error}");
            scratch::exit(1);
        }
        return;
    }
    let sessions = if options.sessions_given {
        options.sessions.to_string()
    } else {
        SHAPES
            .iter()
            .map(|shape| format!("{} {}", shape.default_sessions, shape.name))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "session-bench: {} tasks, {sessions} sessions visited in {} order, {} s per row in {} interleaved rounds; ratio = store ops/s / raw ops/s; \
         srv µs/op = CPU time of the server processes this run started, per operation; \
         cli µs/op = CPU time of this process, per operation",
        options.tasks,
        options.order.name(),
        options.seconds,
        options.rounds
    );
    println!(
        "{:<10} {:<6} {:<10} {:>12} {:>10} {:>10} {:>8} {:>10} {:>10}",
        "backend",
        "size",
        "workload",
        "ops/s",
        "p50 µs",
        "p99 µs",
        "ratio",
        "srv µs/op",
        "cli µs/op"
    );
    // Every row is prepared first and measured afterwards in interleaved rounds (see `plan`);
    // the targets stay open until then.
    let mut rows = Vec::new();
    let mut open = Vec::new();
    for name in &options.backends {
        if name.starts_with("tower-") {
            let (store, pids) = match peer::open_peer(name, &options).await {
                Ok(opened) => opened,
                Err(message) => {
                    eprintln!("{name}: {message}");
                    scratch::exit(2);
                }
            };
            for shape in SHAPES
                .into_iter()
                .filter(|shape| options.shapes.iter().any(|s| s == shape.name))
            {
                let planned =
                    peer::plan_peer(name, &store, &pids, shape, &options, &mut rows).await;
                if let Err(error) = planned {
                    eprintln!("{name} {}: {error}", shape.name);
                    scratch::exit(1);
                }
            }
            continue;
        }
        if let Some(store_name) = name.strip_prefix("http-") {
            let target = match open_target(store_name, &options).await {
                Ok(target) => target,
                Err(message) => {
                    eprintln!("{message}");
                    scratch::exit(2);
                }
            };
            if let Err(error) =
                http::bench(name, target.repository, &options.for_shape(SHAPES[0])).await
            {
                eprintln!("{name}: {error}");
                scratch::exit(1);
            }
            continue;
        }
        let target = match open_target(name, &options).await {
            Ok(target) => target,
            Err(message) => {
                eprintln!("{message}");
                scratch::exit(2);
            }
        };
        for shape in SHAPES
            .into_iter()
            .filter(|shape| options.shapes.iter().any(|s| s == shape.name))
        {
            if let Err(error) = plan_shape(&target, shape, &options, &mut rows).await {
                eprintln!("{} {}: {error}", target.name, shape.name);
                scratch::exit(1);
            }
        }
        open.push(target);
    }
    match plan::run(&rows, &options).await {
        Ok(results) => peer::print_versus_peer(&results),
        Err(error) => {
            eprintln!("{error}");
            scratch::exit(1);
        }
    }
    drop(open);
    scratch::remove();
}

/// Prepares `target`'s sessions of `shape` and adds its rows to `plan`: raw cycle, raw
/// compare-and-set cycle (where the raw driver has one), cycle, raw read, read (each store row
/// against the raw row of its kind), and for SQL the attribute-table layout; with `--only`,
/// that one row.
async fn plan_shape(
    target: &Target,
    shape: Shape,
    options: &Options,
    plan: &mut Vec<plan::Planned>,
) -> Result<()> {
    let options = &options.for_shape(shape);
    let (ids, keys) = prepare(target, shape, options).await?;
    let raw = RawCycle {
        raw: Arc::clone(&target.raw),
        keys,
    };
    let store = StoreCycle {
        repository: Arc::clone(&target.repository),
        ids,
        value: "y".repeat(shape.value_len),
    };
    let mut push = |workload: &'static str, work: Arc<dyn Workload>, baseline: Option<usize>| {
        plan.push(plan::Planned {
            backend: target.name.clone(),
            shape: shape.name,
            workload,
            work,
            pids: target.server_pids.clone(),
            sessions: options.sessions,
            baseline,
        });
        plan.len() - 1
    };
    if let Some(only) = options.only.as_deref() {
        let (workload, work): (&'static str, Arc<dyn Workload>) = match only {
            "cycle" => ("cycle", Arc::new(store)),
            "read" => ("read", Arc::new(StoreRead(store))),
            "raw-cycle" => ("raw-cycle", Arc::new(raw)),
            "raw-read" => ("raw-read", Arc::new(RawRead(raw))),
            "raw-cas" if target.raw.compares() => ("raw-cas", Arc::new(RawCompareCycle(raw))),
            other => {
                return Err(Error::InvalidInput(format!(
                    "--only {other}: expected cycle, read, raw-cycle, raw-read or raw-cas"
                )))
            }
        };
        push(workload, work, None);
        return Ok(());
    }
    let raw_cycle = push("raw-cycle", Arc::new(raw.clone()), None);
    if target.raw.compares() {
        push(
            "raw-cas",
            Arc::new(RawCompareCycle(raw.clone())),
            Some(raw_cycle),
        );
    }
    push("cycle", Arc::new(store.clone()), Some(raw_cycle));
    let raw_read = push("raw-read", Arc::new(RawRead(raw.clone())), None);
    push("read", Arc::new(StoreRead(store)), Some(raw_read));
    if let (Some(sql), false) = (&target.sql, options.skip_layout) {
        let keys = Arc::clone(&raw.keys);
        let spring =
            layout::AttributeTableCycle::prepare(sql, keys, shape.attributes, shape.value_len)
                .await?;
        push("attr-table", Arc::new(spring), Some(raw_cycle));
    }
    Ok(())
}
