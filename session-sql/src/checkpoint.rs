//! SQLite's checkpoints, off the writer's path.
//!
//! In WAL mode a commit appends its pages to the write-ahead log, and a checkpoint copies them
//! into the database file and syncs both files. SQLite runs it by default on the connection
//! that commits, inline, once the log passes 1,000 pages: on the writer's connection, while
//! every save waits for the turn (with 20 KB sessions, a copy of 4 MB and two syncs about
//! every 150 saves). The writer's connection opts out (`PRAGMA wal_autocheckpoint = 0`, set
//! when it is detached from the pool) and tells [`Checkpoints`] after each turn; a task then
//! checkpoints on a pool connection, [`PAUSE`] later, so that one checkpoint covers the turns
//! of that pause. It checkpoints `PASSIVE`ly: it never waits for readers or the writer, and
//! the writer's thread goes on committing while another thread copies.
//!
//! The pool's other connections (rotation and the purge write on them, rarely) and other
//! programs' connections to the file keep SQLite's default, so a log they grow is checkpointed
//! as before.

use std::sync::Mutex as SyncMutex;
use std::time::Duration;

use sqlx::AnyPool;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

/// How long after a write turn the checkpoint runs. Under load, a turn ends every few hundred
/// microseconds: a checkpoint every 20 ms copies what about 300 saves of large sessions wrote,
/// close to the 1,000 pages at which SQLite would checkpoint by itself; a longer log makes
/// every read search more of the log's index.
pub(crate) const PAUSE: Duration = Duration::from_millis(20);

/// The checkpoints the writer's turns call for: a task, started on the runtime of the first
/// turn that needs it (and again if that runtime ended), that checkpoints after writes.
#[derive(Debug)]
pub(crate) struct Checkpoints {
    /// Holds at most one wake-up: a turn that finds it full is covered by the checkpoint to come.
    sender: SyncMutex<Option<mpsc::Sender<()>>>,
    /// Bounds one checkpoint.
    timeout: Duration,
}

impl Checkpoints {
    pub(crate) fn new(timeout: Duration) -> Self {
        Checkpoints {
            sender: SyncMutex::new(None),
            timeout,
        }
    }

    /// A write turn ended: a checkpoint on `pool` follows within [`PAUSE`] (after the one
    /// under way, if any).
    pub(crate) fn after_write(&self, pool: &AnyPool) {
        let mut sender = self.sender.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(task) = sender.as_ref() {
            match task.try_send(()) {
                Ok(()) | Err(TrySendError::Full(())) => return,
                // Its runtime ended.
                Err(TrySendError::Closed(())) => {}
            }
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (task, writes) = mpsc::channel(1);
        let _ = task.try_send(());
        runtime.spawn(checkpoint_after_writes(writes, pool.clone(), self.timeout));
        *sender = Some(task);
    }
}

/// Until the store is dropped (the sender with it), checkpoints [`PAUSE`] after each wake-up.
async fn checkpoint_after_writes(mut writes: mpsc::Receiver<()>, pool: AnyPool, timeout: Duration) {
    let mut failing = false;
    while writes.recv().await.is_some() {
        tokio::time::sleep(PAUSE).await;
        let checkpoint = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").execute(&pool);
        let error = match tokio::time::timeout(timeout, checkpoint).await {
            Ok(Ok(_)) => {
                if failing {
                    tracing::info!("checkpoints of the SQLite write-ahead log succeed again");
                }
                failing = false;
                continue;
            }
            Ok(Err(error)) => error.to_string(),
            Err(_) => format!("no answer within {timeout:?}"),
        };
        // Once per streak: under load a failing checkpoint is tried 50 times a second.
        if !failing {
            tracing::warn!(%error, "a checkpoint of the SQLite write-ahead log failed; the log grows until one succeeds");
        }
        failing = true;
    }
}
