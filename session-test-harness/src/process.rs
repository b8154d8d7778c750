//! Server processes owned by the harness: start, stop, pause, resume, restart, and a
//! watchdog that outlives nothing.

#[allow(unused_imports)]
use super::*;

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
        let dir = std::env::temp_dir().join(session_conformance::namespace(&format!(
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
    pub(super) async fn signal(&self, signal: &str) -> std::io::Result<()> {
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
        // A thread in uninterruptible sleep (`D`, disk I/O) stops only when that ends, which on
        // a loaded machine can take seconds.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let running = unstopped_threads(pid);
            if running.is_empty() {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(std::io::Error::other(format!(
                    "the server (pid {pid}) did not stop: threads (id, state) {running:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Starts the server again on the same port and waits until it answers.
    pub async fn restart(&self) -> std::io::Result<()> {
        self.stop();
        self.spawn()?;
        self.wait_ready().await
    }

    pub(super) fn spawn(&self) -> std::io::Result<()> {
        let mut words = vec![self.spec.program.clone()];
        words.extend(self.spec.args.iter().cloned());
        let child = self.spec.command(&words, self.port, &self.dir).spawn()?;
        let watchdog = spawn_watchdog(child.id(), &self.dir)?;
        *lock(&self.child) = Some(child);
        *lock(&self.watchdog) = Some(watchdog);
        Ok(())
    }

    pub(super) async fn wait_ready(&self) -> std::io::Result<()> {
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
pub(super) fn spawn_watchdog(pid: u32, dir: &Path) -> std::io::Result<Child> {
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

pub(super) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(super) fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

pub(super) fn find_on_path(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(program))
            .find(|candidate| candidate.is_file())
    })
}
