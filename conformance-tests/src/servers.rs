//! Real servers for the suite.
//!
//! [`provision`] finds a server for a backend in this order:
//!
//! 1. a URL from the environment, `SESSION_TEST_<BACKEND>_URL` (e.g. `SESSION_TEST_REDIS_URL`;
//!    a cluster's node URLs, comma-separated, in `SESSION_TEST_REDIS_CLUSTER_URLS`);
//! 2. a throwaway server started from a binary on `PATH`, on a free loopback port with its data
//!    in a temp dir, shared by every test of the test binary;
//! 3. otherwise the backend is skipped with one line on stderr, unless `SESSION_TEST_REQUIRE`
//!    is `all` or names the backend (comma-separated), in which case the test fails.
//!
//! Containers (testcontainers, when a Docker engine answers) are the intended third step and
//! are not implemented yet: the machines this project runs on have no Docker engine.
//!
//! The harness owns the servers it starts: [`ServerProcess::start`] gives a dedicated server
//! that fault cases can [`stop`](ServerProcess::stop) and [`restart`](ServerProcess::restart).
//! Each server is watched by a small shell process that kills it and removes its temp dir when
//! the test process exits, however it exits.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::report;

/// How long a started server may take to answer its readiness probe.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

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
                    "-m",
                    "64",
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
                        "-c",
                        "fsync=off",
                        "-c",
                        "synchronous_commit=off",
                        "-c",
                        "full_page_writes=off",
                        "-c",
                        "max_connections=300",
                    ]),
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
                        "--skip-log-bin",
                        "--innodb-flush-log-at-trx-commit=0",
                        "--max-connections=300",
                    ]),
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

/// Whether every thread of process `pid` and of its child processes is stopped (state `T`
/// in /proc; Linux). A process that is gone counts as stopped.
fn all_stopped(pid: u32) -> bool {
    let threads_stopped = |process: u32| {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{process}/task")) else {
            return true;
        };
        tasks.flatten().all(|task| {
            ProcStat::read(&task.path().join("stat"))
                .is_none_or(|stat| matches!(stat.state, 'T' | 't'))
        })
    };
    threads_stopped(pid) && child_processes(&[pid]).into_iter().all(threads_stopped)
}

/// What `/proc/<pid>/stat` (or a thread's `/proc/<pid>/task/<tid>/stat`) says (Linux).
#[derive(Debug, Clone, Copy)]
pub struct ProcStat {
    /// `R` running, `S` sleeping, `T` stopped, ...
    pub state: char,
    /// The parent process.
    pub parent: u32,
    /// User + system CPU time, in clock ticks (USER_HZ, 100 per second on Linux).
    pub cpu_ticks: u64,
}

impl ProcStat {
    /// Reads a stat file; `None` if it is gone or unreadable.
    pub fn read(path: &Path) -> Option<Self> {
        let text = std::fs::read_to_string(path).ok()?;
        // The command name (2nd field) may hold spaces: count the fields after its last ')'.
        // There the state is the 1st, the parent the 2nd, utime and stime the 12th and 13th.
        let rest: Vec<&str> = text.rsplit_once(')')?.1.split_whitespace().collect();
        Some(ProcStat {
            state: rest.first()?.chars().next()?,
            parent: rest.get(1)?.parse().ok()?,
            cpu_ticks: rest.get(11)?.parse::<u64>().ok()? + rest.get(12)?.parse::<u64>().ok()?,
        })
    }

    /// The stat of process `pid`.
    pub fn of(pid: u32) -> Option<Self> {
        Self::read(Path::new(&format!("/proc/{pid}/stat")))
    }
}

/// The live processes whose parent is one of `parents` (Linux /proc; none without it).
pub fn child_processes(parents: &[u32]) -> Vec<u32> {
    let Ok(processes) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    processes
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| ProcStat::of(*pid).is_some_and(|stat| parents.contains(&stat.parent)))
        .collect()
}

/// The newest `/usr/lib/postgresql/<version>/bin` that has a `postgres` binary.
fn postgres_bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("postgres").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

/// How to tell that a freshly started server accepts work.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Probe {
    /// `PING` answers `+PONG`.
    RedisPing,
    /// `version` answers one `VERSION ...` line (memcached keeps the connection open, so the
    /// probe reads one line instead of waiting for EOF).
    MemcachedVersion,
    /// A client command (`{port}` substituted) that exits 0 once the server accepts queries.
    Command(Vec<String>),
}

impl Probe {
    async fn check(&self, port: u16) -> bool {
        if let Probe::Command(command) = self {
            let args: Vec<String> = command
                .iter()
                .map(|arg| arg.replace("{port}", &port.to_string()))
                .collect();
            let status = tokio::process::Command::new(&args[0])
                .args(&args[1..])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            return matches!(tokio::time::timeout(Duration::from_secs(5), status).await, Ok(Ok(s)) if s.success());
        }
        let attempt = async {
            let stream = TcpStream::connect(("127.0.0.1", port)).await?;
            let mut stream = BufReader::new(stream);
            let (request, answer) = match self {
                Probe::RedisPing => ("PING\r\n", "+PONG"),
                Probe::MemcachedVersion | Probe::Command(_) => ("version\r\n", "VERSION"),
            };
            stream.get_mut().write_all(request.as_bytes()).await?;
            let mut line = String::new();
            stream.read_line(&mut line).await?;
            Ok::<bool, std::io::Error>(line.starts_with(answer))
        };
        matches!(
            tokio::time::timeout(Duration::from_secs(2), attempt).await,
            Ok(Ok(true))
        )
    }
}

/// A recipe for a throwaway server: program, arguments with `{port}` and `{dir}` placeholders,
/// readiness probe and URL template.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServerSpec {
    /// The backend this serves.
    pub backend: Backend,
    /// Binary: an absolute path or a name looked up on `PATH`.
    pub program: String,
    /// Arguments; `{port}` and `{dir}` are substituted.
    pub args: Vec<String>,
    /// Readiness probe.
    pub probe: Probe,
    /// URL template; `{port}` is substituted.
    pub url: String,
    /// User to run the setup and the server as (via `setpriv`).
    pub run_as: Option<&'static str>,
    /// User that must own the data dir (servers that drop privileges themselves).
    pub owner: Option<&'static str>,
    /// Commands run once, before the first start (e.g. `initdb`).
    pub setup: Vec<Vec<String>>,
    /// Commands run after each start, once the probe answers (e.g. `CREATE DATABASE`).
    pub after_start: Vec<Vec<String>>,
}

impl ServerSpec {
    /// This redis-server spec as a cluster node: cluster mode on, its node file in the data
    /// dir. [`start_redis_cluster_of`] joins three of them.
    pub fn redis_cluster_node(mut self) -> Self {
        self.backend = Backend::RedisCluster;
        self.args.extend(
            [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "{dir}/nodes.conf",
                "--cluster-node-timeout",
                "5000",
            ]
            .map(String::from),
        );
        self
    }

    /// A redis-server spec that listens only on TLS, presenting `certificates`' server
    /// certificate (clients are not asked for one); its URL is `rediss://`. Clients must
    /// trust [`TestCertificates::ca`].
    pub fn redis_tls(certificates: &TestCertificates) -> Self {
        let file = |path: PathBuf| path.display().to_string();
        let mut spec = Backend::Redis.spec();
        spec.args = vec![
            "--port".into(),
            "0".into(),
            "--tls-port".into(),
            "{port}".into(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--tls-cert-file".into(),
            file(certificates.server_certificate()),
            "--tls-key-file".into(),
            file(certificates.server_key()),
            "--tls-ca-cert-file".into(),
            file(certificates.ca()),
            "--tls-auth-clients".into(),
            "no".into(),
            "--dir".into(),
            "{dir}".into(),
            "--save".into(),
            "".into(),
            "--appendonly".into(),
            "no".into(),
        ];
        spec.probe = Probe::Command(
            [
                "redis-cli",
                "--tls",
                "--cacert",
                &file(certificates.ca()),
                "-p",
                "{port}",
                "ping",
            ]
            .map(String::from)
            .to_vec(),
        );
        spec.url = "rediss://127.0.0.1:{port}".into();
        spec
    }

    fn available(&self) -> bool {
        let program = Path::new(&self.program);
        let found = if program.is_absolute() {
            program.is_file()
        } else {
            find_on_path(&self.program).is_some()
        };
        found && (self.run_as.is_none() || find_on_path("setpriv").is_some())
    }

    /// `command` with placeholders filled in, run as [`ServerSpec::run_as`].
    fn command(&self, words: &[String], port: u16, dir: &Path) -> Command {
        let dir = dir.to_string_lossy();
        let mut words: Vec<String> = words
            .iter()
            .map(|word| {
                word.replace("{port}", &port.to_string())
                    .replace("{dir}", &dir)
            })
            .collect();
        if let Some(user) = self.run_as {
            let mut wrapped = vec![
                "setpriv".to_owned(),
                format!("--reuid={user}"),
                format!("--regid={user}"),
                "--init-groups".to_owned(),
                "--".to_owned(),
            ];
            wrapped.append(&mut words);
            words = wrapped;
        }
        let mut command = Command::new(&words[0]);
        command
            .args(&words[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        command
    }
}

/// Runs `command` to completion without blocking the runtime; an error names it if it fails.
async fn run_to_end(command: Command) -> std::io::Result<()> {
    let shown = format!("{command:?}");
    let status = tokio::process::Command::from(command).status().await?;
    if status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "{shown} failed with {status}"
        )))
    }
}

/// A throwaway certificate authority and a server certificate it issued for 127.0.0.1, as PEM
/// files in one directory (made by [`TestCertificates::make`]).
#[derive(Debug, Clone)]
pub struct TestCertificates {
    dir: PathBuf,
}

impl TestCertificates {
    /// Makes the CA and the server certificate in `dir` (created if missing) with `openssl`,
    /// valid for two days.
    pub fn make(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let script = r#"
            set -e
            cd "$1"
            openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=session-test-ca \
                -keyout ca.key -out ca.crt 2>/dev/null
            openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 \
                -keyout server.key -out server.csr 2>/dev/null
            printf 'subjectAltName=IP:127.0.0.1\n' > san.ext
            openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
                -extfile san.ext -out server.crt 2>/dev/null
            chmod 644 server.key
        "#;
        let status = Command::new("sh")
            .args(["-c", script, "certificates"])
            .arg(dir)
            .status()?;
        if !status.success() {
            return Err(std::io::Error::other(format!(
                "making test certificates failed ({status}); is openssl installed?"
            )));
        }
        Ok(TestCertificates {
            dir: dir.to_owned(),
        })
    }

    /// The CA certificate, for clients to trust.
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// The server certificate (for 127.0.0.1).
    pub fn server_certificate(&self) -> PathBuf {
        self.dir.join("server.crt")
    }

    /// The server certificate's private key.
    pub fn server_key(&self) -> PathBuf {
        self.dir.join("server.key")
    }
}

/// A server process owned by the harness.
pub struct ServerProcess {
    spec: ServerSpec,
    port: u16,
    dir: PathBuf,
    child: Mutex<Option<Child>>,
    watchdog: Mutex<Option<Child>>,
}

impl fmt::Debug for ServerProcess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerProcess")
            .field("program", &self.spec.program)
            .field("port", &self.port)
            .field("dir", &self.dir)
            .finish()
    }
}

impl ServerProcess {
    /// Starts a dedicated server on a free loopback port and waits until it answers.
    pub async fn start(spec: ServerSpec) -> std::io::Result<Arc<Self>> {
        Self::start_on(spec, free_port()?).await
    }

    /// Starts a dedicated server on `port` and waits until it answers.
    pub async fn start_on(spec: ServerSpec, port: u16) -> std::io::Result<Arc<Self>> {
        let dir = std::env::temp_dir().join(crate::namespace(&format!(
            "session-test-{}",
            spec.backend.name()
        )));
        std::fs::create_dir_all(&dir)?;
        if let Some(user) = spec.owner {
            run_to_end({
                let mut chown = Command::new("chown");
                chown.arg("-R").arg(user).arg(&dir);
                chown
            })
            .await?;
        }
        for step in &spec.setup {
            run_to_end(spec.command(step, port, &dir)).await?;
        }
        let server = Arc::new(ServerProcess {
            spec,
            port,
            dir,
            child: Mutex::new(None),
            watchdog: Mutex::new(None),
        });
        server.spawn()?;
        server.wait_ready().await?;
        Ok(server)
    }

    /// The URL to connect to.
    pub fn url(&self) -> String {
        self.spec.url.replace("{port}", &self.port.to_string())
    }

    /// The loopback port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's process id while it runs (benchmarks pin it to a CPU).
    pub fn pid(&self) -> Option<u32> {
        lock(&self.child).as_ref().map(Child::id)
    }

    /// Kills the server (SIGKILL: a crash, not a clean shutdown) and waits for it to exit.
    pub fn stop(&self) {
        if let Some(mut child) = lock(&self.child).take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(mut watchdog) = lock(&self.watchdog).take() {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
    }

    /// Freezes the server (SIGSTOP to it and its child processes): connections stay open and
    /// connects are still accepted by the kernel, but nothing answers — a hung server.
    pub async fn pause(&self) -> std::io::Result<()> {
        self.signal("STOP").await
    }

    /// Lets a [paused](ServerProcess::pause) server run again.
    pub async fn resume(&self) -> std::io::Result<()> {
        self.signal("CONT").await
    }

    /// Sends `signal` to the server and to its children (PostgreSQL serves each connection
    /// from a child of the postmaster).
    async fn signal(&self, signal: &str) -> std::io::Result<()> {
        let pid = lock(&self.child)
            .as_ref()
            .map(Child::id)
            .ok_or_else(|| std::io::Error::other("the server is not running"))?;
        let pid_text = pid.to_string();
        // The children first on STOP and last on CONT, so none runs while the parent is stopped.
        let children = || {
            let mut pkill = Command::new("pkill");
            pkill.arg(format!("-{signal}")).arg("-P").arg(&pid_text);
            pkill
        };
        let parent = || {
            let mut kill = Command::new("kill");
            kill.arg(format!("-{signal}")).arg(&pid_text);
            kill
        };
        if signal == "CONT" {
            run_to_end(parent()).await?;
            // pkill exits 1 when the server has no children: not an error.
            let _ = tokio::process::Command::from(children()).status().await;
            return Ok(());
        }
        let _ = tokio::process::Command::from(children()).status().await;
        run_to_end(parent()).await?;
        // kill returns once the signal is sent; each thread stops when it next passes through
        // the kernel. A test that goes on before then can still be answered (seen once with
        // MariaDB), so wait until every thread of the server and of its children is stopped.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !all_stopped(pid) {
            if tokio::time::Instant::now() > deadline {
                return Err(std::io::Error::other(format!(
                    "the server (pid {pid}) did not stop"
                )));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    /// Starts the server again on the same port and waits until it answers.
    pub async fn restart(&self) -> std::io::Result<()> {
        self.stop();
        self.spawn()?;
        self.wait_ready().await
    }

    fn spawn(&self) -> std::io::Result<()> {
        let mut words = vec![self.spec.program.clone()];
        words.extend(self.spec.args.iter().cloned());
        let child = self.spec.command(&words, self.port, &self.dir).spawn()?;
        let watchdog = spawn_watchdog(child.id(), &self.dir)?;
        *lock(&self.child) = Some(child);
        *lock(&self.watchdog) = Some(watchdog);
        Ok(())
    }

    async fn wait_ready(&self) -> std::io::Result<()> {
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        while tokio::time::Instant::now() < deadline {
            if self.spec.probe.check(self.port).await {
                for step in &self.spec.after_start {
                    run_to_end(self.spec.command(step, self.port, &self.dir)).await?;
                }
                return Ok(());
            }
            if let Some(child) = lock(&self.child).as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(std::io::Error::other(format!(
                        "{} exited with {status} before it was ready",
                        self.spec.program
                    )));
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(std::io::Error::other(format!(
            "{} did not answer within {READY_TIMEOUT:?}",
            self.spec.program
        )))
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Kills `pid` and removes `dir` once this test process is gone, so that no server outlives
/// the test run even when the process ends without running destructors (statics, panics).
fn spawn_watchdog(pid: u32, dir: &Path) -> std::io::Result<Child> {
    let script = "while kill -0 \"$1\" 2>/dev/null; do sleep 1; done; kill -9 \"$2\" 2>/dev/null; rm -rf \"$3\"";
    Command::new("sh")
        .args(["-c", script, "watchdog"])
        .arg(std::process::id().to_string())
        .arg(pid.to_string())
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn find_on_path(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(program))
            .find(|candidate| candidate.is_file())
    })
}

/// Whether `SESSION_TEST_REQUIRE` makes a skip of `backend` a failure.
pub fn is_required(backend: Backend) -> bool {
    std::env::var("SESSION_TEST_REQUIRE").is_ok_and(|value| {
        value.split(',').map(str::trim).any(|name| {
            name.eq_ignore_ascii_case("all") || name.eq_ignore_ascii_case(backend.name())
        })
    })
}

/// A server for tests: where to connect, and the process if the harness started it.
#[derive(Debug, Clone)]
pub struct Provisioned {
    /// URL of the server.
    pub url: String,
    /// The server processes when the harness owns them (none for a URL from the environment).
    pub processes: Vec<Arc<ServerProcess>>,
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
                processes: Vec::new(),
            });
        }
    }
    let spec = backend.spec();
    let cluster = backend == Backend::RedisCluster;
    let reason = if spec.available() && (!cluster || find_on_path("redis-cli").is_some()) {
        let started = if cluster {
            start_redis_cluster_of(&Backend::RedisCluster.spec(), &[]).await
        } else {
            ServerProcess::start(spec.clone())
                .await
                .map(|process| Provisioned {
                    url: process.url(),
                    processes: vec![process],
                })
        };
        match started {
            Ok(provisioned) => {
                report(&format!(
                    "{}: started a throwaway server at {}",
                    backend.name(),
                    provisioned.url
                ));
                return Some(provisioned);
            }
            Err(error) => format!("starting {} failed: {error}", spec.program),
        }
    } else {
        format!(
            "no {variable}, no {} on PATH, and no container support",
            spec.program
        )
    };
    if is_required(backend) {
        panic!(
            "{} is required by SESSION_TEST_REQUIRE but unavailable: {reason}",
            backend.name()
        );
    }
    report(&format!("SKIPPED {}: {reason}", backend.name()));
    None
}

/// Three redis-servers of `node` (see [`ServerSpec::redis_cluster_node`]) joined into a
/// cluster with all 16384 slots; `cli` goes before every `redis-cli` command the joining and
/// the readiness check run (e.g. `--tls --cacert <file>` for TLS-only nodes).
pub async fn start_redis_cluster_of(
    node: &ServerSpec,
    cli: &[String],
) -> std::io::Result<Provisioned> {
    start_redis_cluster(node, cli, 0).await
}

/// [`start_redis_cluster_of`] with a replica for each of the three masters (six nodes), for
/// failover tests; [`redis_cluster_masters`] tells which nodes are the masters.
pub async fn start_redis_cluster_with_replicas(
    node: &ServerSpec,
    cli: &[String],
) -> std::io::Result<Provisioned> {
    start_redis_cluster(node, cli, 1).await
}

/// The nodes of `cluster` that are masters now (`ROLE`).
pub async fn redis_cluster_masters(
    cluster: &Provisioned,
    cli: &[String],
) -> std::io::Result<Vec<Arc<ServerProcess>>> {
    let mut masters = Vec::new();
    for process in &cluster.processes {
        if ask(process, cli, &["role"]).await?.starts_with("master") {
            masters.push(Arc::clone(process));
        }
    }
    Ok(masters)
}

async fn start_redis_cluster(
    node: &ServerSpec,
    cli: &[String],
    replicas: usize,
) -> std::io::Result<Provisioned> {
    let mut processes = Vec::new();
    for _ in 0..3 * (1 + replicas) {
        let port = cluster_port()?;
        processes.push(ServerProcess::start_on(node.clone(), port).await?);
    }
    let mut create = Command::new("redis-cli");
    create.args(cli).arg("--cluster").arg("create");
    for process in &processes {
        create.arg(format!("127.0.0.1:{}", process.port()));
    }
    create.args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"]);
    run_quietly(create).await?;
    wait_for_cluster_ok(&processes, cli).await?;
    // A replica that has not synced with its master yet refuses to take over from it.
    let patience = Patience::new("a replica did not sync with its master");
    for process in &processes {
        while ask(process, cli, &["role"]).await?.starts_with("slave")
            && !ask(process, cli, &["info", "replication"])
                .await?
                .contains("master_link_status:up")
        {
            patience.again().await?;
        }
    }
    let url = processes
        .iter()
        .map(|process| process.url())
        .collect::<Vec<_>>()
        .join(",");
    Ok(Provisioned { url, processes })
}

/// Starts one more node like `node`, joins it to `cluster` as a master and moves `slots` hash
/// slots to it from the other masters (`redis-cli --cluster add-node`, then
/// [`move_redis_cluster_slots`]): a live topology change, for tests of what a client does when
/// a master appears. Returns the new node (`cluster`'s URL does not list it). `cli` as for
/// [`start_redis_cluster_of`].
pub async fn add_redis_cluster_master(
    cluster: &Provisioned,
    node: &ServerSpec,
    cli: &[String],
    slots: u32,
) -> std::io::Result<Arc<ServerProcess>> {
    let first = cluster
        .processes
        .first()
        .ok_or_else(|| std::io::Error::other("a cluster the harness did not start"))?;
    let process = ServerProcess::start_on(node.clone(), cluster_port()?).await?;
    let mut add = Command::new("redis-cli");
    add.args(cli).args([
        "--cluster",
        "add-node",
        &format!("127.0.0.1:{}", process.port()),
        &format!("127.0.0.1:{}", first.port()),
    ]);
    run_quietly(add).await?;
    let mut all = cluster.processes.clone();
    all.push(Arc::clone(&process));
    // Every node must know the new one before slots move to it (gossip takes a moment).
    let id = cluster_node_id(&process, cli).await?;
    let patience = Patience::new("the new node did not join the cluster");
    for node in &cluster.processes {
        while !cluster_nodes(node, cli).await?.contains(&id) {
            patience.again().await?;
        }
    }
    move_redis_cluster_slots(first, None, &process, slots, cli).await?;
    wait_for_cluster_ok(&all, cli).await?;
    Ok(process)
}

/// Moves `slots` hash slots (and their keys) from the master `from` (from every other master
/// when `None`) to the master `to` with `redis-cli --cluster reshard`, asking through `via`.
pub async fn move_redis_cluster_slots(
    via: &ServerProcess,
    from: Option<&ServerProcess>,
    to: &ServerProcess,
    slots: u32,
    cli: &[String],
) -> std::io::Result<()> {
    let from = match from {
        Some(node) => cluster_node_id(node, cli).await?,
        None => "all".to_owned(),
    };
    let to = cluster_node_id(to, cli).await?;
    // reshard refuses a target that the node asked does not know as a master yet (a node just
    // added: gossip takes a moment) and nodes that disagree on the slots (slots just moved).
    let patience = Patience::new("the Redis Cluster's nodes do not agree on its configuration");
    loop {
        let known = cluster_nodes(via, cli)
            .await?
            .lines()
            .any(|line| line.starts_with(&to) && line.contains("master"));
        let mut check = Command::new("redis-cli");
        check
            .args(cli)
            .args(["--cluster", "check", &format!("127.0.0.1:{}", via.port())]);
        if known && run_quietly(check).await.is_ok() {
            break;
        }
        patience.again().await?;
    }
    let mut reshard = Command::new("redis-cli");
    reshard.args(cli).args([
        "--cluster",
        "reshard",
        &format!("127.0.0.1:{}", via.port()),
        "--cluster-from",
        &from,
        "--cluster-to",
        &to,
        "--cluster-slots",
        &slots.to_string(),
        "--cluster-yes",
    ]);
    run_quietly(reshard).await
}

/// What `node` says of the cluster's nodes (`CLUSTER NODES`).
async fn cluster_nodes(node: &ServerProcess, cli: &[String]) -> std::io::Result<String> {
    ask(node, cli, &["cluster", "nodes"]).await
}

/// What redis-cli prints when it sends `command` to `node`.
async fn ask(node: &ServerProcess, cli: &[String], command: &[&str]) -> std::io::Result<String> {
    let output = tokio::process::Command::new("redis-cli")
        .args(cli)
        .args(["-p", &node.port().to_string()])
        .args(command)
        .output()
        .await?;
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The cluster node id of `node` (`CLUSTER MYID`).
async fn cluster_node_id(node: &ServerProcess, cli: &[String]) -> std::io::Result<String> {
    let id = ask(node, cli, &["cluster", "myid"])
        .await?
        .trim()
        .to_owned();
    if id.is_empty() {
        return Err(std::io::Error::other(format!(
            "no cluster node id from port {}",
            node.port()
        )));
    }
    Ok(id)
}

/// Runs `command` to its end with no input, keeping its output (redis-cli's `--cluster`
/// commands talk a lot) for the error when it fails.
async fn run_quietly(mut command: Command) -> std::io::Result<()> {
    command.stdin(Stdio::null());
    let shown = format!("{command:?}");
    let output = tokio::process::Command::from(command).output().await?;
    if output.status.success() {
        return Ok(());
    }
    let said = String::from_utf8_lossy(&output.stdout) + String::from_utf8_lossy(&output.stderr);
    let last: Vec<&str> = said.lines().rev().take(5).collect();
    Err(std::io::Error::other(format!(
        "{shown} failed with {}: {}",
        output.status,
        last.into_iter().rev().collect::<Vec<_>>().join(" / ")
    )))
}

/// Waits until every node of a cluster says `cluster_state:ok`.
async fn wait_for_cluster_ok(
    processes: &[Arc<ServerProcess>],
    cli: &[String],
) -> std::io::Result<()> {
    let patience = Patience::new("the Redis Cluster did not reach cluster_state:ok");
    for process in processes {
        while !ask(process, cli, &["cluster", "info"])
            .await?
            .contains("cluster_state:ok")
        {
            patience.again().await?;
        }
    }
    Ok(())
}

/// The bound of one wait on a cluster ([`READY_TIMEOUT`] in all, however many nodes are
/// asked) and what to say when it runs out.
struct Patience {
    until: tokio::time::Instant,
    otherwise: &'static str,
}

impl Patience {
    fn new(otherwise: &'static str) -> Self {
        Patience {
            until: tokio::time::Instant::now() + READY_TIMEOUT,
            otherwise,
        }
    }

    /// Waits a moment before the caller asks again, or fails once the time is up.
    async fn again(&self) -> std::io::Result<()> {
        if tokio::time::Instant::now() > self.until {
            return Err(std::io::Error::other(self.otherwise));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        Ok(())
    }
}

/// A free port whose cluster bus port (port + 10000) is free too.
fn cluster_port() -> std::io::Result<u16> {
    for _ in 0..100 {
        let port = free_port()?;
        if port < 55_000 && std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return Ok(port);
        }
    }
    Err(std::io::Error::other(
        "no free port pair for a cluster node",
    ))
}
