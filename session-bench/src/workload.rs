//! The measured workloads (store and raw, cycle and read) and the measuring loop.

#[allow(unused_imports)]
use super::*;

/// One measured row.
#[derive(Debug)]
pub(crate) struct Row {
    pub(crate) ops_per_sec: f64,
    pub(crate) p50: Duration,
    pub(crate) p99: Duration,
    /// Operations done.
    pub(crate) ops: usize,
    /// CPU time the server spent during the row, when this run started the server.
    pub(crate) server_cpu: Option<Duration>,
    /// CPU time this process (the client: store code, driver, runtime) spent during the row.
    /// Unlike ops/s, it does not move with the time other guests take from this machine, so
    /// two rows' client µs/op tell a small overhead apart where their ops/s cannot.
    pub(crate) client_cpu: Option<Duration>,
}

/// An operation a task repeats on session number `i`.
#[async_trait]
pub(crate) trait Workload: Send + Sync {
    async fn run(&self, i: usize) -> Result<()>;
}

/// `base` with its first 16 characters replaced by a counter: what a cycle writes, different
/// from what the cycle before wrote and of the same size. A request that saves changes
/// something, and a write of identical bytes is no write on some servers (InnoDB skips an
/// UPDATE that changes no column, so a raw baseline or a peer that rewrote the same bytes
/// measured a read and a no-op).
pub(crate) fn changed(base: &str) -> String {
    static CHANGES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = CHANGES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    // One allocation of the final size and no formatter: this is the application's share of a
    // store row, which the raw rows (a bit flipped in place) do not pay.
    let mut digits = [0u8; 16];
    // 8 bytes always fit 16 digits, and hex digits are ASCII.
    let _ = hex::encode_to_slice(n.to_be_bytes(), &mut digits);
    let mut value = String::with_capacity(base.len().max(16));
    value.push_str(std::str::from_utf8(&digits).unwrap_or_default());
    value.push_str(base.get(16..).unwrap_or(""));
    value
}

#[derive(Clone)]
pub(crate) struct RawCycle {
    pub(crate) raw: Arc<dyn RawDriver>,
    pub(crate) keys: Arc<Vec<SessionKey>>,
}

impl RawCycle {
    /// Reads session `i`'s bytes: what was read, and a copy with a real change of the same size
    /// (see [`changed`]) to write back.
    async fn read_and_change(&self, i: usize) -> Result<(Arc<Vec<u8>>, Vec<u8>)> {
        let read = self.raw.get(&self.keys[i]).await?.ok_or(Error::NotFound)?;
        let mut bytes = read.to_vec();
        if let Some(last) = bytes.last_mut() {
            *last ^= 1;
        }
        Ok((read, bytes))
    }
}

#[async_trait]
impl Workload for RawCycle {
    async fn run(&self, i: usize) -> Result<()> {
        let (_, bytes) = self.read_and_change(i).await?;
        self.raw.put(&self.keys[i], bytes).await
    }
}

/// [`RawCycle`] with the write made conditional on the bytes read, as the store's save is
/// ([`RawDriver::put_if_unchanged`]): the fastest a store can cycle that keeps a concurrent
/// writer's change, on this server and client.
pub(crate) struct RawCompareCycle(pub(crate) RawCycle);

#[async_trait]
impl Workload for RawCompareCycle {
    async fn run(&self, i: usize) -> Result<()> {
        let (read, bytes) = self.0.read_and_change(i).await?;
        // A lost compare (another task's cycle on the same session in between) counts as the
        // store's would before its merge: the loop measures the write, not the retry.
        self.0
            .raw
            .put_if_unchanged(&self.0.keys[i], &read, bytes)
            .await?;
        Ok(())
    }
}

pub(crate) struct RawRead(pub(crate) RawCycle);

#[async_trait]
impl Workload for RawRead {
    async fn run(&self, i: usize) -> Result<()> {
        self.0
            .raw
            .get(&self.0.keys[i])
            .await?
            .ok_or(Error::NotFound)?;
        Ok(())
    }
}

#[derive(Clone)]
pub(crate) struct StoreCycle {
    pub(crate) repository: Arc<dyn SessionRepository>,
    pub(crate) ids: Arc<Vec<SessionId>>,
    pub(crate) value: String,
}

#[async_trait]
impl Workload for StoreCycle {
    async fn run(&self, i: usize) -> Result<()> {
        let mut session = self
            .repository
            .find(&self.ids[i])
            .await?
            .ok_or(Error::NotFound)?;
        session.insert("attr0", &changed(&self.value))?;
        self.repository.save(&mut session).await
    }
}

pub(crate) struct StoreRead(pub(crate) StoreCycle);

#[async_trait]
impl Workload for StoreRead {
    async fn run(&self, i: usize) -> Result<()> {
        self.0
            .repository
            .find(&self.0.ids[i])
            .await?
            .ok_or(Error::NotFound)?;
        Ok(())
    }
}

/// The order in which a row's tasks visit the sessions (`--order`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Order {
    /// Each task walks its own stride through every session: a session comes back only after
    /// all the others, so no cache in the path can serve it (the default, and the worst case
    /// for any cache).
    Scan,
    /// Each task picks a session uniformly at random, so a session can come back while a
    /// cache still holds it: what a cache of a given size serves of a uniform load.
    Random,
}

impl Order {
    pub(crate) fn parse(text: &str) -> std::result::Result<Self, String> {
        match text {
            "scan" => Ok(Order::Scan),
            "random" => Ok(Order::Random),
            other => Err(format!("--order {other}: expected scan or random")),
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Order::Scan => "scan",
            Order::Random => "random",
        }
    }
}

/// Runs `workload` from `tasks` tasks for `seconds`, visiting the sessions in `options.order`.
pub(crate) async fn measure(workload: Arc<dyn Workload>, options: &Options) -> Result<Row> {
    let (latencies, elapsed) = measure_slice(
        workload,
        options.seconds,
        options.tasks,
        options.sessions,
        0,
        options.order,
    )
    .await?;
    Ok(Row::from_latencies(latencies, elapsed))
}

impl Row {
    /// The row of operations that took `latencies`, in `elapsed` seconds of wall time;
    /// without CPU times.
    pub(crate) fn from_latencies(mut latencies: Vec<Duration>, elapsed: f64) -> Row {
        latencies.sort_unstable();
        let all = &latencies;
        let percentile = |p: f64| {
            all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
                .copied()
                .unwrap_or_default()
        };
        Row {
            ops_per_sec: all.len() as f64 / elapsed.max(f64::MIN_POSITIVE),
            p50: percentile(0.50),
            p99: percentile(0.99),
            ops: all.len(),
            server_cpu: None,
            client_cpu: None,
        }
    }
}

/// One slice of a row: `tasks` tasks run `workload` for `seconds`. In [`Order::Scan`], task `t`
/// visits sessions `start + t`, `start + t + tasks`, ... (modulo `sessions`), so tasks rarely
/// contend on one session; in [`Order::Random`], sessions drawn uniformly by a generator seeded
/// with `start + t` (the same draws for the same row, round and task). Returns every
/// operation's latency and the slice's wall time (never less than `seconds`).
pub(crate) async fn measure_slice(
    workload: Arc<dyn Workload>,
    seconds: f64,
    tasks: usize,
    sessions: usize,
    start: usize,
    order: Order,
) -> Result<(Vec<Duration>, f64)> {
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(seconds);
    let mut handles = Vec::with_capacity(tasks);
    for task in 0..tasks {
        let workload = Arc::clone(&workload);
        handles.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(1 << 14);
            let sessions = sessions.max(1);
            let mut i = start.wrapping_add(task);
            let mut draws = fastrand::Rng::with_seed(i as u64);
            while Instant::now() < deadline {
                let session = match order {
                    Order::Scan => i % sessions,
                    Order::Random => draws.usize(..sessions),
                };
                let begun = Instant::now();
                workload.run(session).await?;
                latencies.push(begun.elapsed());
                i = i.wrapping_add(tasks);
            }
            Ok::<_, Error>(latencies)
        }));
    }
    let mut all = Vec::new();
    for handle in handles {
        all.extend(handle.await.map_err(Error::backend)??);
    }
    let elapsed = started.elapsed().as_secs_f64().max(seconds);
    Ok((all, elapsed))
}

/// User + system CPU time of `pids` and their live children, from /proc (Linux); `None`
/// without pids or /proc.
pub(crate) fn server_cpu(pids: &[u32]) -> Option<Duration> {
    if pids.is_empty() {
        return None;
    }
    let mut ticks = 0;
    for pid in pids {
        ticks += ProcStat::of(*pid)?.cpu_ticks;
    }
    for child in child_processes(pids) {
        // A child that ended meanwhile took its time with it.
        ticks += ProcStat::of(child).map_or(0, |stat| stat.cpu_ticks);
    }
    Some(Duration::from_millis(ticks * 10))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records every session index it is run on.
    struct Visits(std::sync::Mutex<Vec<usize>>);

    #[async_trait]
    impl Workload for Visits {
        async fn run(&self, i: usize) -> Result<()> {
            self.0.lock().expect("not poisoned").push(i);
            tokio::task::yield_now().await;
            Ok(())
        }
    }

    async fn visits(order: Order) -> Vec<usize> {
        let visits = Arc::new(Visits(std::sync::Mutex::new(Vec::new())));
        let work: Arc<dyn Workload> = visits.clone();
        let (latencies, _) = measure_slice(work, 0.05, 4, 10, 7, order)
            .await
            .expect("measured");
        let seen = visits.0.lock().expect("not poisoned").clone();
        assert_eq!(seen.len(), latencies.len());
        assert!(seen.len() > 100, "only {} operations", seen.len());
        seen
    }

    #[tokio::test]
    async fn a_scan_visits_every_session_in_turn() {
        let seen = visits(Order::Scan).await;
        let mut counts = [0usize; 10];
        for i in &seen {
            counts[*i] += 1;
        }
        let (least, most) = (counts.iter().min(), counts.iter().max());
        // Each task walks its stride, so no session is visited more than a few times more
        // often than another.
        assert!(
            most.zip(least).is_some_and(|(m, l)| *l > 0 && m - l <= 4),
            "{counts:?}"
        );
    }

    #[tokio::test]
    async fn a_random_order_stays_in_range_and_differs_from_a_scan() {
        let seen = visits(Order::Random).await;
        assert!(seen.iter().all(|i| *i < 10));
        let distinct: std::collections::BTreeSet<_> = seen.iter().collect();
        assert_eq!(distinct.len(), 10);
        let scan_like = seen.windows(2).filter(|w| w[1] == (w[0] + 1) % 10).count();
        assert!(
            scan_like < seen.len() / 2,
            "{scan_like} of {} in scan order",
            seen.len()
        );
    }

    #[test]
    fn a_change_keeps_the_size_and_differs_from_the_last() {
        let base = "v".repeat(100);
        let (first, second) = (changed(&base), changed(&base));
        assert_eq!((first.len(), second.len()), (100, 100));
        assert_ne!(first, second);
        assert_eq!(first[16..], base[16..]);
        let n = u64::from_str_radix(&first[..16], 16).expect("16 hex digits");
        assert_eq!(format!("{n:016x}"), first[..16]);
    }
}
