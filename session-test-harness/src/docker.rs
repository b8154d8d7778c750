//! Servers in Docker containers (testcontainers), for machines with a Docker engine.
//!
//! Images are the official ones, pinned by tag, each overridable with
//! `SESSION_TEST_<BACKEND>_IMAGE` (a machine without a registry makes its own with
//! `scripts/make-local-images.sh` and names them there). Containers run on the host network
//! when `SESSION_TEST_DOCKER_NETWORK=host` (the server is told a free loopback port on its
//! command line), else on the default bridge with the port published on 127.0.0.1 only: either
//! way nothing listens beyond loopback. Readiness is the server's own protocol (the backend's
//! [`Probe`]), not a sleep. A watchdog removes each container when the test process ends, also
//! when it panics or is killed; dropping a container removes it at once.

#[allow(unused_imports)]
use super::*;

use testcontainers::core::{ContainerPort, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt};

/// Whether every backend must come from a container (`SESSION_TEST_PROVISION=docker`).
pub fn containers_forced() -> bool {
    std::env::var("SESSION_TEST_PROVISION").is_ok_and(|value| value.eq_ignore_ascii_case("docker"))
}

/// How to run a backend's server from its image.
#[derive(Debug, Clone)]
pub struct ContainerSpec {
    /// The backend this serves.
    pub backend: Backend,
    /// The image, `name:tag`.
    pub image: String,
    /// Environment of the container.
    pub env: Vec<(String, String)>,
    /// The command (after the image's entrypoint); `{port}` is substituted.
    pub cmd: Vec<String>,
    /// The port the server listens on inside the container, on a bridge network.
    pub bridge_port: u16,
    /// Readiness probe.
    pub probe: Probe,
    /// URL template; `{port}` is substituted.
    pub url: String,
}

impl ContainerSpec {
    /// The recipe for `backend`, or `None` for a backend that has none (a Redis Cluster).
    pub fn of(backend: Backend) -> Option<Self> {
        let words = |items: &[&str]| {
            items
                .iter()
                .map(|item| (*item).to_owned())
                .collect::<Vec<String>>()
        };
        let (default_image, env, cmd, bridge_port, probe, url): (_, Vec<(&str, &str)>, _, _, _, _) =
            match backend {
                Backend::Redis => (
                    "redis:7.4.1",
                    vec![],
                    words(&[
                        "redis-server",
                        "--port",
                        "{port}",
                        "--bind",
                        "{bind}",
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                        "--notify-keyspace-events",
                        "Ex",
                    ]),
                    6379,
                    Probe::RedisPing,
                    "redis://127.0.0.1:{port}",
                ),
                Backend::Memcached => (
                    "memcached:1.6.32",
                    vec![],
                    words(&[
                        "memcached",
                        "-u",
                        "nobody",
                        "-p",
                        "{port}",
                        "-l",
                        "{bind}",
                        "-U",
                        "0",
                        // As the process server above: room for the benchmark's sessions.
                        "-m",
                        "2048",
                    ]),
                    11211,
                    Probe::MemcachedVersion,
                    "memcache://127.0.0.1:{port}",
                ),
                Backend::Postgres => (
                    "postgres:16.4",
                    vec![("POSTGRES_HOST_AUTH_METHOD", "trust")],
                    words(&["postgres", "-p", "{port}", "-c", "listen_addresses={bind}"])
                        .into_iter()
                        .chain(words(&POSTGRES_TUNING))
                        .collect(),
                    5432,
                    Probe::PostgresSsl,
                    "postgres://postgres@127.0.0.1:{port}/postgres",
                ),
                Backend::MySql => (
                    "mariadb:11.4.3",
                    vec![
                        ("MARIADB_ALLOW_EMPTY_ROOT_PASSWORD", "1"),
                        ("MARIADB_DATABASE", "session_test"),
                    ],
                    words(&["mariadbd", "--port={port}", "--bind-address={bind}"])
                        .into_iter()
                        .chain(words(&MARIADB_TUNING))
                        .collect(),
                    3306,
                    Probe::MySqlGreeting,
                    "mysql://root@127.0.0.1:{port}/session_test",
                ),
                Backend::MongoDb => (
                    "mongo:8.0.3",
                    vec![],
                    // The TTL monitor every second instead of every minute.
                    words(&[
                        "mongod",
                        "--port",
                        "{port}",
                        "--bind_ip",
                        "{bind}",
                        "--setParameter",
                        "ttlMonitorSleepSecs=1",
                    ]),
                    27017,
                    Probe::MongoPing,
                    "mongodb://127.0.0.1:{port}/session_test?directConnection=true",
                ),
                Backend::RedisCluster | Backend::MongoDbNx => return None,
            };
        let variable = format!(
            "SESSION_TEST_{}_IMAGE",
            backend.name().to_uppercase().replace('-', "_")
        );
        let image = std::env::var(&variable)
            .ok()
            .filter(|image| !image.trim().is_empty())
            .unwrap_or_else(|| default_image.to_owned());
        Some(ContainerSpec {
            backend,
            image,
            env: env
                .into_iter()
                .map(|(name, value)| (name.to_owned(), value.to_owned()))
                .collect(),
            cmd,
            bridge_port,
            probe,
            url: url.to_owned(),
        })
    }
}

/// Whether the containers share the host's network (`SESSION_TEST_DOCKER_NETWORK=host`).
fn host_network() -> bool {
    std::env::var("SESSION_TEST_DOCKER_NETWORK").is_ok_and(|network| network == "host")
}

/// Whether a Docker engine answers `GET /_ping` at `DOCKER_HOST` (a `unix://` socket or
/// `tcp://` address; default `/var/run/docker.sock`).
pub async fn engine_answers() -> bool {
    matches!(engine_get("/_ping").await, Some((200, body)) if body == b"OK")
}

/// Whether the engine holds `image` already (no pull needed).
pub async fn image_present(image: &str) -> bool {
    matches!(
        engine_get(&format!("/images/{image}/json")).await,
        Some((200, _))
    )
}

/// Whether the engine knows container `id` (running or not).
pub async fn container_exists(id: &str) -> bool {
    matches!(
        engine_get(&format!("/containers/{id}/json")).await,
        Some((200, _))
    )
}

/// `GET path` on the engine's API: the status and the body, or `None` when nothing answers
/// within three seconds.
async fn engine_get(path: &str) -> Option<(u16, Vec<u8>)> {
    let host =
        std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into());
    let request = format!("GET {path} HTTP/1.0\r\nHost: docker\r\n\r\n");
    let exchange = async {
        let mut reply = Vec::new();
        if let Some(socket) = host.strip_prefix("unix://") {
            let mut stream = tokio::net::UnixStream::connect(socket).await?;
            stream.write_all(request.as_bytes()).await?;
            stream.read_to_end(&mut reply).await?;
        } else if let Some(address) = host.strip_prefix("tcp://") {
            let mut stream = TcpStream::connect(address).await?;
            stream.write_all(request.as_bytes()).await?;
            stream.read_to_end(&mut reply).await?;
        }
        Ok::<Vec<u8>, std::io::Error>(reply)
    };
    let reply = tokio::time::timeout(Duration::from_secs(3), exchange)
        .await
        .ok()?
        .ok()?;
    let status = std::str::from_utf8(reply.get(9..12)?).ok()?.parse().ok()?;
    let body_at = reply.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    Some((status, reply[body_at..].to_vec()))
}

/// A server in a container, owned by the harness.
pub struct ContainerServer {
    spec: ContainerSpec,
    /// The port the server answers on, on 127.0.0.1.
    port: u16,
    container: tokio::sync::Mutex<Option<ContainerAsync<GenericImage>>>,
    id: String,
    watchdog: Mutex<Option<Child>>,
}

impl fmt::Debug for ContainerServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContainerServer")
            .field("image", &self.spec.image)
            .field("id", &self.id)
            .field("port", &self.port)
            .finish()
    }
}

impl ContainerServer {
    /// Starts a container of `spec` and waits until the server answers.
    pub async fn start(spec: ContainerSpec) -> std::io::Result<Arc<Self>> {
        let host = host_network();
        let port = free_port()?;
        let (name, tag) = spec
            .image
            .rsplit_once(':')
            .filter(|(_, tag)| !tag.contains('/'))
            .unwrap_or((spec.image.as_str(), "latest"));
        let (listen_port, bind) = if host {
            (port, "127.0.0.1")
        } else {
            (spec.bridge_port, "0.0.0.0")
        };
        let cmd: Vec<String> = spec
            .cmd
            .iter()
            .map(|word| {
                word.replace("{port}", &listen_port.to_string())
                    .replace("{bind}", bind)
            })
            .collect();
        let mut request = GenericImage::new(name, tag)
            .with_wait_for(WaitFor::Nothing)
            .with_cmd(cmd)
            .with_container_name(session_conformance::namespace(&format!(
                "session-test-{}",
                spec.backend.name()
            )));
        for (variable, value) in &spec.env {
            request = request.with_env_var(variable, value);
        }
        request = if host {
            request.with_network("host")
        } else {
            request
                .with_mapped_port(port, ContainerPort::Tcp(spec.bridge_port))
                // Published on loopback only: nothing outside this machine reaches it.
                .with_host_config_modifier(|config| {
                    for bindings in config
                        .port_bindings
                        .iter_mut()
                        .flat_map(|map| map.values_mut())
                    {
                        for binding in bindings.iter_mut().flatten() {
                            binding.host_ip = Some("127.0.0.1".to_owned());
                        }
                    }
                })
        };
        let container = request
            .start()
            .await
            .map_err(|error| std::io::Error::other(format!("{}: {error}", spec.image)))?;
        let id = container.id().to_owned();
        let server = Arc::new(ContainerServer {
            spec,
            port,
            id,
            container: tokio::sync::Mutex::new(Some(container)),
            watchdog: Mutex::new(None),
        });
        *lock(&server.watchdog) = spawn_container_watchdog(&server.id).ok();
        server.wait_ready().await?;
        Ok(server)
    }

    /// The URL to connect to.
    pub fn url(&self) -> String {
        self.spec.url.replace("{port}", &self.port.to_string())
    }

    /// The image it runs.
    pub fn image(&self) -> &str {
        &self.spec.image
    }

    /// The container's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    async fn wait_ready(&self) -> std::io::Result<()> {
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        while tokio::time::Instant::now() < deadline {
            if self.spec.probe.check(self.port).await {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(std::io::Error::other(format!(
            "{} did not answer within {READY_TIMEOUT:?}",
            self.spec.image
        )))
    }

    async fn container<T>(
        &self,
        action: impl AsyncFnOnce(
            &ContainerAsync<GenericImage>,
        ) -> testcontainers::core::error::Result<T>,
    ) -> Result<T, ControlError> {
        let guard = self.container.lock().await;
        let container = guard.as_ref().ok_or("the container was removed")?;
        Ok(action(container).await?)
    }
}

impl Drop for ContainerServer {
    fn drop(&mut self) {
        // Dropping the container removes it; the watchdog is no longer needed.
        if let Some(mut watchdog) = lock(&self.watchdog).take() {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
    }
}

#[async_trait::async_trait]
impl ServerControl for ContainerServer {
    fn url(&self) -> String {
        ContainerServer::url(self)
    }

    async fn stop(&self) -> Result<(), ControlError> {
        // No grace period: SIGKILL right away, a crash.
        self.container(async |c| c.stop_with_timeout(Some(0)).await)
            .await
    }

    async fn start(&self) -> Result<(), ControlError> {
        self.container(async |c| c.start().await).await?;
        Ok(self.wait_ready().await?)
    }

    async fn pause(&self) -> Result<(), ControlError> {
        self.container(async |c| c.pause().await).await
    }

    async fn resume(&self) -> Result<(), ControlError> {
        self.container(async |c| c.unpause().await).await
    }
}

/// Removes container `id` once this test process is gone (statics are never dropped, and a
/// panic with `panic = abort` or a kill skips destructors). Needs the `docker` command; without
/// it, containers are removed when dropped only.
fn spawn_container_watchdog(id: &str) -> std::io::Result<Child> {
    let script =
        "while kill -0 \"$1\" 2>/dev/null; do sleep 1; done; docker rm -f \"$2\" >/dev/null 2>&1";
    Command::new("sh")
        .args(["-c", script, "watchdog"])
        .arg(std::process::id().to_string())
        .arg(id)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
}
