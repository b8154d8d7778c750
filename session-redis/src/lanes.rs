//! Direct lanes for a Cluster store's hot commands.
//!
//! redis-rs's cluster client passes every command through one routing task: two more channel
//! hops and task wake-ups per command than a standalone connection. Measured with
//! `session-bench` on a three-master Valkey Cluster, its plain `GET` + `SET` loop cost 29–32 µs
//! of client CPU per cycle, against 12.8 µs on a standalone connection, and capped every store
//! built on it near the peer's speed.
//!
//! The store's hot commands (reads, saves, touches, deletes) each name one key, or one slot
//! through a hash tag. So these go straight to the master of that slot, on one multiplexed
//! connection per master, found with `CLUSTER SLOTS`. Everything else goes to redis-rs's
//! cluster client, which follows redirects, retries and refreshes its view of the cluster:
//!
//! - commands of another kind, pipelines other than transactions (a transaction takes the lane
//!   of its first command that has one), and slots the table does not place;
//! - a command a lane's master answered with `MOVED`, `ASK`, `TRYAGAIN`, `CLUSTERDOWN`,
//!   `MASTERDOWN`, `READONLY` or `LOADING`, or a transaction answered `EXECABORT`: it was not
//!   executed, so it is sent again there;
//! - a command whose lane dropped its connection: sent again there, as the cluster client does
//!   itself on such errors (the store's writes are compare-and-set, so one that did reach the
//!   server loses the second time and merges);
//! - a command whose lane timed out fails with the timeout, as it would on the cluster client.
//!
//! Any of these retires the table: commands take the cluster client until a refresh, in the
//! background and at most once per [`REFRESH_PAUSE`], builds a new one with new connections.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::Slot;
use redis::{
    Arg, AsyncConnectionConfig, Cmd, ConnectionInfo, ErrorKind, Pipeline, RedisError, RedisResult,
    ServerErrorKind, Value,
};
use session_core::raw::with_timeout;
use session_core::Result;

use crate::error::map;
use crate::listener::node_client;
use crate::topology::{node_info, slot_ranges, Address};

/// The shortest time between two refreshes of the table.
pub(crate) const REFRESH_PAUSE: Duration = Duration::from_secs(1);

/// The commands that take a lane: the store's hot commands, each of which names its key first
/// (the scripts name theirs after the script and the key count).
const LANE_COMMANDS: [&[u8]; 7] = [
    b"GET",
    b"SET",
    b"GETRANGE",
    b"HGET",
    b"HGETALL",
    b"HSET",
    b"EVALSHA",
];

/// The lanes of one Cluster store, shared by its connection's clones.
pub(crate) struct Lanes {
    table: RwLock<Option<Arc<Table>>>,
    refreshing: AtomicBool,
    last_refresh: Mutex<Option<Instant>>,
    /// The seed's settings (credentials, TLS), copied for every master.
    seed: ConnectionInfo,
    ca: Option<Vec<u8>>,
    timeout: Duration,
}

/// Which master serves each slot, and a connection to each.
struct Table {
    slots: HashMap<Slot, usize>,
    masters: Vec<MultiplexedConnection>,
}

impl Lanes {
    /// Lanes to the masters of the cluster `cluster` is connected to, built in the background:
    /// the store opens as fast as its cluster client does (a master that hangs must not make
    /// the open time out), and commands take the cluster client until the table is there.
    pub(crate) fn open(
        cluster: &ClusterConnection,
        seed: ConnectionInfo,
        ca: Option<&[u8]>,
        timeout: Duration,
    ) -> Arc<Self> {
        let lanes = Arc::new(Lanes {
            table: RwLock::new(None),
            refreshing: AtomicBool::new(false),
            last_refresh: Mutex::new(None),
            seed,
            ca: ca.map(<[u8]>::to_vec),
            timeout,
        });
        lanes.refresh_if_retired(cluster);
        lanes
    }

    /// Sends `cmd` on its lane if it has one, else (or if the lane says so, see the module
    /// docs) on `cluster`.
    pub(crate) async fn send(
        self: &Arc<Self>,
        cluster: &mut ClusterConnection,
        cmd: &Cmd,
    ) -> RedisResult<Value> {
        let Some(mut lane) = self.lane_for(cmd) else {
            self.refresh_if_retired(cluster);
            return cluster.req_packed_command(cmd).await;
        };
        let answer = lane.req_packed_command(cmd).await;
        let refused = |value: &Value| refused_reply(value, not_executed);
        match self.judge(cluster, &answer, not_executed, refused) {
            Verdict::Answer => answer,
            Verdict::Resend => cluster.req_packed_command(cmd).await,
        }
    }

    /// Sends a transaction on the lane of its first command that takes one, if any, else (or if
    /// the lane says so) on `cluster`. Only transactions: their `EXEC` runs every command or
    /// none, so one that a redirect or a dropped connection stopped can be sent again whole.
    /// (The store's transactions stage a value and run a script on the same key.)
    pub(crate) async fn send_pipeline(
        self: &Arc<Self>,
        cluster: &mut ClusterConnection,
        pipeline: &Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        let lane = pipeline
            .is_transaction()
            .then(|| pipeline.cmd_iter().find_map(|cmd| self.lane_for(cmd)))
            .flatten();
        let Some(mut lane) = lane else {
            self.refresh_if_retired(cluster);
            return cluster.req_packed_commands(pipeline, offset, count).await;
        };
        let answer = lane.req_packed_commands(pipeline, offset, count).await;
        let refused = |values: &Vec<Value>| {
            values
                .iter()
                .any(|value| refused_reply(value, not_run_in_transaction))
        };
        match self.judge(cluster, &answer, not_run_in_transaction, refused) {
            Verdict::Answer => answer,
            Verdict::Resend => cluster.req_packed_commands(pipeline, offset, count).await,
        }
    }

    /// What a lane's `answer` calls for (see the module docs), retiring the table on any
    /// trouble: `not_run` tells the error kinds that say the server did not run the command,
    /// `refused` whether an answer that arrived carries one.
    fn judge<T>(
        self: &Arc<Self>,
        cluster: &ClusterConnection,
        answer: &RedisResult<T>,
        not_run: fn(ServerErrorKind) -> bool,
        refused: impl Fn(&T) -> bool,
    ) -> Verdict {
        let verdict = match answer {
            Ok(value) if refused(value) => Verdict::Resend,
            Ok(_) => return Verdict::Answer,
            Err(error) if server_kind(error).is_some_and(not_run) => Verdict::Resend,
            // Fails with the timeout, as it would on the cluster client.
            Err(error) if error.is_timeout() => Verdict::Answer,
            Err(error) if error.is_connection_dropped() || error.is_io_error() => Verdict::Resend,
            Err(_) => return Verdict::Answer,
        };
        self.retire(cluster);
        verdict
    }

    /// The connection to the master of `cmd`'s slot, if `cmd` takes a lane and the table
    /// places its slot.
    fn lane_for(&self, cmd: &Cmd) -> Option<MultiplexedConnection> {
        let slot = Slot::for_key(lane_key(cmd)?);
        let table = self.table.read().unwrap_or_else(PoisonError::into_inner);
        let table = table.as_ref()?;
        table.masters.get(*table.slots.get(&slot)?).cloned()
    }

    fn install(&self, table: Option<Table>) {
        *self.table.write().unwrap_or_else(PoisonError::into_inner) = table.map(Arc::new);
    }

    /// Drops the table (the cluster moved, or a master is in trouble) and starts a refresh.
    fn retire(self: &Arc<Self>, cluster: &ClusterConnection) {
        self.install(None);
        self.refresh_if_retired(cluster);
    }

    /// Starts building a new table in the background, unless there is one, one is being built,
    /// or the last attempt was less than [`REFRESH_PAUSE`] ago.
    fn refresh_if_retired(self: &Arc<Self>, cluster: &ClusterConnection) {
        if self
            .table
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
        {
            return;
        }
        {
            let mut last = self
                .last_refresh
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if last.is_some_and(|at| at.elapsed() < REFRESH_PAUSE)
                || self.refreshing.swap(true, Ordering::AcqRel)
            {
                return;
            }
            *last = Some(Instant::now());
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.refreshing.store(false, Ordering::Release);
            return;
        };
        let lanes = Arc::clone(self);
        let mut cluster = cluster.clone();
        runtime.spawn(async move {
            // Cleared however the task ends, also when its runtime shuts down under it.
            let _refreshing = Refreshing(&lanes);
            if let Ok(table) = lanes.build(&mut cluster).await {
                lanes.install(Some(table));
            }
        });
    }

    /// The table as the cluster describes it now, with a new connection to each master.
    async fn build(&self, cluster: &mut ClusterConnection) -> Result<Table> {
        let asked = match self.seed.addr() {
            redis::ConnectionAddr::Tcp(host, _) | redis::ConnectionAddr::TcpTls { host, .. } => {
                host.clone()
            }
            _ => String::new(),
        };
        let reply: Value = with_timeout(self.timeout, async {
            redis::cmd("CLUSTER")
                .arg("SLOTS")
                .query_async(cluster)
                .await
                .map_err(map)
        })
        .await?;
        let mut masters: Vec<Address> = Vec::new();
        let mut slots = HashMap::new();
        for range in slot_ranges(&reply, &asked)? {
            let index = match masters.iter().position(|known| *known == range.master) {
                Some(index) => index,
                None => {
                    masters.push(range.master);
                    masters.len() - 1
                }
            };
            for slot in range.first..=range.last {
                if let Some(slot) = Slot::new(slot) {
                    slots.insert(slot, index);
                }
            }
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout));
        let mut connections = Vec::with_capacity(masters.len());
        for master in &masters {
            let client = node_client(node_info(&self.seed, master), false, self.ca.as_deref())?;
            let connection = with_timeout(self.timeout, async {
                client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
                    .map_err(map)
            })
            .await?;
            connections.push(connection);
        }
        Ok(Table {
            slots,
            masters: connections,
        })
    }
}

/// What becomes of a command a lane answered.
enum Verdict {
    /// The lane's answer is the command's.
    Answer,
    /// It did not run (or may not have): send it again through the cluster client.
    Resend,
}

/// Clears [`Lanes::refreshing`] when dropped.
struct Refreshing<'a>(&'a Lanes);

impl Drop for Refreshing<'_> {
    fn drop(&mut self) {
        self.0.refreshing.store(false, Ordering::Release);
    }
}

/// The key `cmd` is routed by, if it is one of [`LANE_COMMANDS`] and names one.
fn lane_key(cmd: &Cmd) -> Option<&[u8]> {
    let mut args = cmd.args_iter().map(|arg| match arg {
        Arg::Simple(bytes) => Some(bytes),
        _ => None,
    });
    let name = args.next()??;
    if !LANE_COMMANDS
        .iter()
        .any(|lane| name.eq_ignore_ascii_case(lane))
    {
        return None;
    }
    if name.eq_ignore_ascii_case(b"EVALSHA") {
        let _script = args.next()??;
        let keys = args.next()??;
        if keys == b"0" {
            return None;
        }
    }
    args.next()?
}

/// Whether `value` is an error reply of a kind `not_run` says was not run.
fn refused_reply(value: &Value, not_run: fn(ServerErrorKind) -> bool) -> bool {
    matches!(value, Value::ServerError(error) if error.kind().is_some_and(not_run))
}

/// [`not_executed`] for a transaction, which `EXECABORT` also says did not run.
fn not_run_in_transaction(kind: ServerErrorKind) -> bool {
    not_executed(kind) || kind == ServerErrorKind::ExecAbort
}

/// The kind of a server's error reply.
fn server_kind(error: &RedisError) -> Option<ServerErrorKind> {
    match error.kind() {
        ErrorKind::Server(kind) => Some(kind),
        _ => None,
    }
}

/// Whether a server's error reply means that it did not execute the command, because the slot
/// is elsewhere or the cluster is not serving it right now.
fn not_executed(kind: ServerErrorKind) -> bool {
    matches!(
        kind,
        ServerErrorKind::Moved
            | ServerErrorKind::Ask
            | ServerErrorKind::TryAgain
            | ServerErrorKind::ClusterDown
            | ServerErrorKind::MasterDown
            | ServerErrorKind::ReadOnly
            | ServerErrorKind::BusyLoading
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hot_commands_take_the_lane_of_their_key() {
        let key = |cmd: &Cmd| lane_key(cmd).map(<[u8]>::to_vec);
        assert_eq!(key(redis::cmd("GET").arg("{s}a")), Some(b"{s}a".to_vec()));
        assert_eq!(
            key(redis::cmd("set").arg("k").arg("v").arg("IFEQ").arg("w")),
            Some(b"k".to_vec())
        );
        assert_eq!(
            key(redis::cmd("EVALSHA").arg("abc").arg(2).arg("k1").arg("k2")),
            Some(b"k1".to_vec())
        );
        assert_eq!(key(redis::cmd("EVALSHA").arg("abc").arg(0).arg("x")), None);
        assert_eq!(key(redis::cmd("EVALSHA").arg("abc")), None);
        assert_eq!(key(&redis::cmd("GET")), None);
        assert_eq!(key(redis::cmd("ZADD").arg("k").arg(1).arg("m")), None);
        assert_eq!(key(redis::cmd("CLUSTER").arg("SLOTS")), None);
    }

    #[test]
    fn only_answers_of_commands_not_run_are_sent_again() {
        assert!(not_executed(ServerErrorKind::Moved));
        assert!(not_executed(ServerErrorKind::Ask));
        assert!(not_executed(ServerErrorKind::ClusterDown));
        assert!(!not_executed(ServerErrorKind::NoScript));
        assert!(!not_executed(ServerErrorKind::ResponseError));
        assert!(!not_executed(ServerErrorKind::ExecAbort));
        assert!(not_run_in_transaction(ServerErrorKind::ExecAbort));
        assert!(not_run_in_transaction(ServerErrorKind::Moved));
        assert!(!not_run_in_transaction(ServerErrorKind::NoScript));
    }
}
