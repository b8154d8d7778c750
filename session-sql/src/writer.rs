//! SQLite's writer: one write at a time per file, on a connection of its own, saves committed
//! in batches.

use std::sync::{Arc, Mutex as SyncMutex};
use std::time::Duration;

use futures_util::TryStreamExt;
use session_core::raw::SessionRecord;
use session_core::{Error, Result, SessionKey};
use sqlx::any::AnyQueryResult;
use sqlx::{AnyConnection, AnyPool, Either, Executor};
use tokio::sync::{mpsc, oneshot, MutexGuard};

use crate::checkpoint::Checkpoints;
use crate::error::{is_transient, map};
use crate::row::AnyQuery;
use crate::save;

/// Saves one batch commits at most.
const MAX_BATCH: usize = 64;

/// SQLite's writer, shared by the save queue and every other write: the turn to write, its
/// connection, and the checkpoints its writes call for.
#[derive(Debug)]
pub(crate) struct Writer {
    connection: tokio::sync::Mutex<Option<AnyConnection>>,
    pool: AnyPool,
    checkpoints: Checkpoints,
}

impl Writer {
    /// A writer whose connections are detached from `pool`, and whose checkpoints run on it,
    /// each bounded by `timeout`.
    pub(crate) fn new(pool: AnyPool, timeout: Duration) -> Self {
        Writer {
            connection: tokio::sync::Mutex::new(None),
            pool,
            checkpoints: Checkpoints::new(timeout),
        }
    }

    /// Waits for the turn to write.
    pub(crate) async fn turn(&self) -> WriteTurn<'_> {
        WriteTurn {
            connection: self.connection.lock().await,
            writer: self,
        }
    }
}

/// The writer's turn on SQLite, held around every write statement (see
/// [`Inner::write_turn`](crate::store::Inner::write_turn)).
///
/// SQLite allows one writer per file. Writers of this process queue for the turn, in order,
/// instead of polling SQLite's lock with growing sleeps (which starved some of them for 100 ms
/// at a time under load); other processes are still handled by the busy timeout.
///
/// The saves' writes, creates, touches and deletes run on the turn's own connection, always
/// the same one (rotation and the purge, rare and transactional, run on the pool's): SQLite
/// drops a connection's page cache whenever another connection wrote to the file since its last
/// transaction, so a write on whichever connection of the pool re-read the pages of its row's
/// B-tree path from the OS, inside the turn, which every save waits for. The connection is
/// taken from the pool and detached from it (so it never holds a connection the pool counts,
/// and a private in-memory database is the pool's), and dropped after an error on the
/// connection; the next turn detaches another.
///
/// The writer's connection leaves the write-ahead log's checkpoints to a task (see the
/// `checkpoint` module), which every turn, as it ends, tells.
pub(crate) struct WriteTurn<'a> {
    connection: MutexGuard<'a, Option<AnyConnection>>,
    writer: &'a Writer,
}

impl Drop for WriteTurn<'_> {
    fn drop(&mut self) {
        self.writer.checkpoints.after_write(&self.writer.pool);
    }
}

impl<'a> WriteTurn<'a> {
    /// The writer's connection, to be handed back with [`WriteTurn::settle`]; dropped instead
    /// if it is not (its statement was cancelled).
    pub(crate) async fn take(&mut self) -> Result<AnyConnection> {
        self.take_raw().await.map_err(map)
    }

    async fn take_raw(&mut self) -> std::result::Result<AnyConnection, sqlx::Error> {
        match self.connection.take() {
            Some(connection) => Ok(connection),
            None => {
                let mut connection = self.writer.pool.acquire().await?.detach();
                connection.execute("PRAGMA wal_autocheckpoint = 0").await?;
                Ok(connection)
            }
        }
    }

    /// Runs `query` on the writer's connection (a write other than a save's: create, touch,
    /// delete), keeping the connection unless the statement failed on it.
    pub(crate) async fn execute(
        &mut self,
        query: AnyQuery<'_>,
    ) -> std::result::Result<AnyQueryResult, sqlx::Error> {
        let mut connection = self.take_raw().await?;
        let result = query.execute(&mut connection).await;
        self.keep_unless(connection, result.as_ref().is_err_and(is_transient));
        result
    }

    /// Keeps `connection` for the next turn unless `result` is a failure of the connection
    /// (a transient error).
    pub(crate) fn settle<T>(&mut self, connection: AnyConnection, result: Result<T>) -> Result<T> {
        self.keep_unless(connection, result.as_ref().is_err_and(Error::is_retryable));
        result
    }

    /// Keeps `connection` for the next turn, unless its statement `failed_on_connection`.
    fn keep_unless(&mut self, connection: AnyConnection, failed_on_connection: bool) {
        if !failed_on_connection {
            *self.connection = Some(connection);
        }
    }
}

/// A save's compare-and-set, queued for the writer.
struct Request {
    key: SessionKey,
    record: SessionRecord,
    attributes: Vec<u8>,
    expected: u64,
    now: u64,
    written: oneshot::Sender<Result<bool>>,
}

/// The saves' compare-and-set statements on SQLite, run by one task that takes the turn once
/// for all the saves waiting and commits them in one transaction.
///
/// With 32 tasks saving, each taking the turn for its own statement, a write held the turn
/// twice as long as it took alone: between two writes, the turn went to the next task, which
/// had to be scheduled before it could send its statement to its connection's thread. The
/// queue's task sends the next statement as soon as the last one is done, and a batch shares
/// one commit (one append to the write-ahead log).
#[derive(Debug)]
pub(crate) struct SaveQueue {
    sender: SyncMutex<Option<mpsc::UnboundedSender<Request>>>,
    writer: Arc<Writer>,
    chunks: Arc<Chunks>,
}

impl SaveQueue {
    pub(crate) fn new(writer: Arc<Writer>, statement: &str) -> Self {
        SaveQueue {
            sender: SyncMutex::new(None),
            writer,
            chunks: Arc::new(Chunks::new(statement)),
        }
    }

    /// Writes `record` (with `attributes`, its attributes encoded) if the row of `key` is
    /// live and at `expected`; whether it was.
    pub(crate) async fn compare_and_set(
        &self,
        key: &SessionKey,
        record: SessionRecord,
        attributes: Vec<u8>,
        expected: u64,
        now: u64,
    ) -> Result<bool> {
        let (written, answer) = oneshot::channel();
        let mut request = Request {
            key: *key,
            record,
            attributes,
            expected,
            now,
            written,
        };
        // The queue's task lives on the runtime of the save that started it; a store used from
        // another runtime after that one ended starts another.
        for _ in 0..2 {
            let sender = self.sender();
            match sender.send(request) {
                Ok(()) => {
                    return answer
                        .await
                        .unwrap_or_else(|_| Err(Error::unavailable("the SQLite writer stopped")))
                }
                Err(mpsc::error::SendError(back)) => {
                    request = back;
                    self.forget(&sender);
                }
            }
        }
        Err(Error::unavailable("the SQLite writer cannot start"))
    }

    /// The queue's sender, starting its task if there is none.
    fn sender(&self) -> mpsc::UnboundedSender<Request> {
        let mut sender = self.sender.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(sender) = sender.as_ref().filter(|s| !s.is_closed()) {
            return sender.clone();
        }
        let (new, receiver) = mpsc::unbounded_channel();
        tokio::spawn(write_batches(
            receiver,
            Arc::clone(&self.writer),
            Arc::clone(&self.chunks),
        ));
        *sender = Some(new.clone());
        new
    }

    fn forget(&self, closed: &mpsc::UnboundedSender<Request>) {
        let mut sender = self.sender.lock().unwrap_or_else(|e| e.into_inner());
        if sender.as_ref().is_some_and(|s| s.same_channel(closed)) {
            *sender = None;
        }
    }
}

/// The queue's task: until the store is dropped, takes every request waiting (up to
/// [`MAX_BATCH`]), and writes them in the turn.
async fn write_batches(
    mut receiver: mpsc::UnboundedReceiver<Request>,
    writer: Arc<Writer>,
    chunks: Arc<Chunks>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while receiver.recv_many(&mut batch, MAX_BATCH).await > 0 {
        // A save that gave up (timed out) no longer waits for its write.
        batch.retain(|request| !request.written.is_closed());
        if batch.is_empty() {
            continue;
        }
        let mut turn = writer.turn().await;
        serve(&mut turn, &chunks, &mut batch).await;
    }
}

/// Writes `batch` in one transaction; if that fails, or for a batch of one, one save at a
/// time, so that each gets its own answer.
async fn serve(turn: &mut WriteTurn<'_>, chunks: &Chunks, batch: &mut Vec<Request>) {
    if batch.len() > 1 {
        if let Ok(mut connection) = turn.take().await {
            // A connection whose transaction failed is dropped, not kept: closing it rolls
            // back whatever the transaction left.
            if let Ok(written) = in_transaction(&mut connection, chunks, batch).await {
                let _ = turn.settle(connection, Ok(()));
                for (request, written) in batch.drain(..).zip(written) {
                    let _ = request.written.send(Ok(written));
                }
                return;
            }
        }
    }
    for request in batch.drain(..) {
        let written = match turn.take().await {
            Ok(mut connection) => {
                let written = compare_and_set(&mut connection, chunks.statement(1), &request).await;
                turn.settle(connection, written)
            }
            Err(error) => Err(error),
        };
        let _ = request.written.send(written);
    }
}

/// Runs the batch's statements in one transaction; whether each wrote its row. After a
/// failure nothing of it is committed.
///
/// The statements go to the connection's thread in chunks of a power of two, each chunk one
/// message of that many statements: every message to that thread and its answer are two
/// thread wake-ups, which cost more than the statement itself. Chunks of powers of two keep
/// the prepared texts few (seven), where one per batch length would be 64.
async fn in_transaction(
    connection: &mut AnyConnection,
    chunks: &Chunks,
    batch: &[Request],
) -> Result<Vec<bool>> {
    connection.execute("BEGIN IMMEDIATE").await.map_err(map)?;
    let mut written = Vec::with_capacity(batch.len());
    let mut rest = batch;
    while !rest.is_empty() {
        let (chunk, tail) = rest.split_at(1 << rest.len().ilog2());
        let mut query = sqlx::query(chunks.statement(chunk.len()));
        for request in chunk {
            query = save::bind_compare_and_set(
                query,
                &request.key,
                &request.record,
                &request.attributes,
                request.expected,
                request.now,
            );
        }
        let mut results = connection.fetch_many(query);
        while let Some(result) = results.try_next().await.map_err(map)? {
            if let Either::Left(done) = result {
                written.push(done.rows_affected() == 1);
            }
        }
        rest = tail;
    }
    if written.len() != batch.len() {
        return Err(Error::backend(format!(
            "a batch of {} saves answered {} results",
            batch.len(),
            written.len()
        )));
    }
    connection.execute("COMMIT").await.map_err(map)?;
    Ok(written)
}

/// The compare-and-set statement repeated 1, 2, 4 … [`MAX_BATCH`] times, one text each: SQLite
/// runs a text's statements in order, binding the arguments in order.
#[derive(Debug)]
pub(crate) struct Chunks(Vec<String>);

impl Chunks {
    fn new(statement: &str) -> Self {
        let mut texts = Vec::new();
        let mut n = 1;
        while n <= MAX_BATCH {
            texts.push(vec![statement; n].join("; "));
            n *= 2;
        }
        Chunks(texts)
    }

    /// The text of `n` statements; `n` is a power of two up to [`MAX_BATCH`].
    fn statement(&self, n: usize) -> &str {
        &self.0[n.ilog2() as usize]
    }
}

/// [`save::compare_and_set`] of `request` on `connection`.
async fn compare_and_set(
    connection: &mut AnyConnection,
    statement: &str,
    request: &Request,
) -> Result<bool> {
    save::compare_and_set(
        connection,
        statement,
        &request.key,
        &request.record,
        &request.attributes,
        request.expected,
        request.now,
    )
    .await
}
