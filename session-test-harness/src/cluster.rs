//! Redis Cluster orchestration: create, add a master, move slots, wait for the cluster.

#[allow(unused_imports)]
use super::*;

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

pub(super) async fn start_redis_cluster(
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
    Ok(Provisioned {
        url,
        processes,
        ..Provisioned::default()
    })
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
    // A node that joined answers CLUSTERDOWN until gossip told it who serves every slot, and
    // a slot moved to it then fails half-way (its `RESTORE` refused): seen in CI.
    wait_for_cluster_ok(&all, cli).await?;
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
pub(super) async fn cluster_nodes(node: &ServerProcess, cli: &[String]) -> std::io::Result<String> {
    ask(node, cli, &["cluster", "nodes"]).await
}

/// What redis-cli prints when it sends `command` to `node`.
pub(super) async fn ask(
    node: &ServerProcess,
    cli: &[String],
    command: &[&str],
) -> std::io::Result<String> {
    let output = tokio::process::Command::new("redis-cli")
        .args(cli)
        .args(["-p", &node.port().to_string()])
        .args(command)
        .output()
        .await?;
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The cluster node id of `node` (`CLUSTER MYID`).
pub(super) async fn cluster_node_id(
    node: &ServerProcess,
    cli: &[String],
) -> std::io::Result<String> {
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
pub(super) async fn run_quietly(mut command: Command) -> std::io::Result<()> {
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
pub(super) async fn wait_for_cluster_ok(
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
pub(super) struct Patience {
    until: tokio::time::Instant,
    otherwise: &'static str,
}

impl Patience {
    pub(super) fn new(otherwise: &'static str) -> Self {
        Patience {
            until: tokio::time::Instant::now() + READY_TIMEOUT,
            otherwise,
        }
    }

    /// Waits a moment before the caller asks again, or fails once the time is up.
    pub(super) async fn again(&self) -> std::io::Result<()> {
        if tokio::time::Instant::now() > self.until {
            return Err(std::io::Error::other(self.otherwise));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        Ok(())
    }
}

/// A free port whose cluster bus port (port + 10000) is free too.
pub(super) fn cluster_port() -> std::io::Result<u16> {
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
