//! Recipes for throwaway servers and their readiness probes.

#[allow(unused_imports)]
use super::*;

/// The newest `/usr/lib/postgresql/<version>/bin` that has a `postgres` binary.
pub(super) fn postgres_bin_dir() -> Option<PathBuf> {
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
    /// An OP_MSG `ping` answers `ok: 1` (MongoDB's wire protocol).
    MongoPing,
    /// PostgreSQL answers an `SSLRequest` with `S` or `N` (it accepts connections on TCP).
    PostgresSsl,
    /// MySQL/MariaDB greets a new connection with a protocol-10 handshake packet.
    MySqlGreeting,
}

impl Probe {
    pub(super) async fn check(&self, port: u16) -> bool {
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
        if matches!(self, Probe::PostgresSsl | Probe::MySqlGreeting) {
            return matches!(
                tokio::time::timeout(Duration::from_secs(2), self.first_bytes(port)).await,
                Ok(Ok(true))
            );
        }
        if *self == Probe::MongoPing {
            return matches!(
                tokio::time::timeout(Duration::from_secs(2), mongo_ping(port)).await,
                Ok(Ok(true))
            );
        }
        let attempt = async {
            let stream = TcpStream::connect(("127.0.0.1", port)).await?;
            let mut stream = BufReader::new(stream);
            let (request, answer) = match self {
                Probe::RedisPing => ("PING\r\n", "+PONG"),
                Probe::MemcachedVersion
                | Probe::Command(_)
                | Probe::MongoPing
                | Probe::PostgresSsl
                | Probe::MySqlGreeting => ("version\r\n", "VERSION"),
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

impl Probe {
    /// The PostgreSQL and MySQL probes: what the server says first, in its own protocol.
    async fn first_bytes(&self, port: u16) -> std::io::Result<bool> {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
        if *self == Probe::PostgresSsl {
            // Length 8, then the SSLRequest code 80877103.
            stream
                .write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])
                .await?;
            let mut answer = [0u8; 1];
            stream.read_exact(&mut answer).await?;
            return Ok(matches!(answer[0], b'S' | b'N'));
        }
        // A packet header (3 bytes of length, a sequence number 0), then protocol version 10.
        let mut greeting = [0u8; 5];
        stream.read_exact(&mut greeting).await?;
        Ok(greeting[3] == 0 && greeting[4] == 10)
    }
}

/// Sends `{ping: 1, $db: "admin"}` as an OP_MSG and reads the reply: whether it says `ok: 1`
/// (a double, as MongoDB writes it, or an integer).
async fn mongo_ping(port: u16) -> std::io::Result<bool> {
    const OP_MSG: i32 = 2013;
    let mut document = Vec::new();
    document.extend_from_slice(b"\x10ping\0");
    document.extend_from_slice(&1i32.to_le_bytes());
    document.extend_from_slice(b"\x02$db\0");
    document.extend_from_slice(&6i32.to_le_bytes());
    document.extend_from_slice(b"admin\0\0");
    let document_len = i32::try_from(document.len() + 4).unwrap_or(i32::MAX);
    let body_len = 4 + 1 + 4 + document.len();
    let message_len = i32::try_from(16 + body_len).unwrap_or(i32::MAX);
    let mut message = Vec::with_capacity(16 + body_len);
    for word in [message_len, 1, 0, OP_MSG] {
        message.extend_from_slice(&word.to_le_bytes());
    }
    message.extend_from_slice(&0u32.to_le_bytes());
    message.push(0);
    message.extend_from_slice(&document_len.to_le_bytes());
    message.extend_from_slice(&document);

    let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
    stream.write_all(&message).await?;
    let mut header = [0u8; 16];
    stream.read_exact(&mut header).await?;
    let word = |at: usize| {
        i32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
    };
    let (length, op_code) = (word(0), word(12));
    let Some(rest) = usize::try_from(length).ok().and_then(|n| n.checked_sub(16)) else {
        return Ok(false);
    };
    if op_code != OP_MSG || rest > 1 << 20 {
        return Ok(false);
    }
    let mut reply = vec![0u8; rest];
    stream.read_exact(&mut reply).await?;
    let ok = |tag: u8, value: &[u8]| {
        let mut pattern = vec![tag];
        pattern.extend_from_slice(b"ok\0");
        pattern.extend_from_slice(value);
        reply.windows(pattern.len()).any(|window| window == pattern)
    };
    Ok(ok(0x01, &1f64.to_le_bytes())
        || ok(0x10, &1i32.to_le_bytes())
        || ok(0x12, &1i64.to_le_bytes()))
}

/// secantusdb, started by the harness's launcher (`scripts/secantus_server.py`) with the
/// Python next to `secantusd-py` on `PATH` (the venv it was installed in): its command line
/// sweeps expired documents every 60 s and cannot be told otherwise, the launcher sweeps every
/// second.
pub(super) fn secantus_spec() -> ServerSpec {
    let python = find_on_path("secantusd-py")
        .and_then(|entry| Some(entry.parent()?.join("python")))
        .map_or_else(
            || "secantusd-py".to_owned(),
            |python| python.display().to_string(),
        );
    ServerSpec {
        backend: Backend::MongoDb,
        program: python,
        args: vec![
            concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/secantus_server.py").to_owned(),
            "{port}".to_owned(),
            "{dir}".to_owned(),
        ],
        probe: Probe::MongoPing,
        url: "mongodb://127.0.0.1:{port}/session_test?directConnection=true".into(),
        run_as: None,
        owner: None,
        setup: Vec::new(),
        after_start: Vec::new(),
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

    pub(super) fn available(&self) -> bool {
        let program = Path::new(&self.program);
        let found = if program.is_absolute() {
            program.is_file()
        } else {
            find_on_path(&self.program).is_some()
        };
        found && (self.run_as.is_none() || find_on_path("setpriv").is_some())
    }

    /// `command` with placeholders filled in, run as [`ServerSpec::run_as`].
    pub(super) fn command(&self, words: &[String], port: u16, dir: &Path) -> Command {
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
pub(super) async fn run_to_end(command: Command) -> std::io::Result<()> {
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
