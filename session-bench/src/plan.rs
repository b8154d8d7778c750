//! The run's rows, measured in interleaved slices.
//!
//! Every row of the run (ours, the raw baseline, the peer) is prepared first; then each round
//! measures every row for `seconds / rounds`, in turn. A guest on a shared host changes speed
//! from one second to the next (the same raw row has run at 43k and 98k ops/s in two
//! consecutive runs), so rows measured one after another compare the machine's moods as much
//! as the stores. Interleaved, two rows share every mood, and the per-round ratio's range says
//! how far a single comparison can be trusted.

#[allow(unused_imports)]
use super::*;

/// One row to measure: a workload, the server processes it loads, the row it is compared with.
pub(crate) struct Planned {
    pub(crate) backend: String,
    pub(crate) shape: &'static str,
    pub(crate) workload: &'static str,
    pub(crate) work: Arc<dyn Workload>,
    pub(crate) pids: Vec<u32>,
    /// Sessions this row walks (the shape's count).
    pub(crate) sessions: usize,
    /// The plan index of the raw row this row's ratio is taken against.
    pub(crate) baseline: Option<usize>,
}

/// What the slices of one row add up to.
#[derive(Default)]
struct Tally {
    latencies: Vec<Duration>,
    elapsed: f64,
    server_cpu: Option<Duration>,
    client_cpu: Option<Duration>,
    /// Ops/s of each round.
    rounds: Vec<f64>,
    /// Where the next slice's tasks start in the session set: slices continue the walk, so
    /// that no slice revisits the sessions the previous one began with (a near cache would
    /// count those as hits a longer row would not have).
    cursor: usize,
}

impl Tally {
    fn row(&mut self) -> Row {
        Row {
            server_cpu: self.server_cpu,
            client_cpu: self.client_cpu,
            ..Row::from_latencies(std::mem::take(&mut self.latencies), self.elapsed)
        }
    }
}

fn add(total: Option<Duration>, slice: Option<Duration>) -> Option<Duration> {
    match (total, slice) {
        (Some(a), Some(b)) => Some(a + b),
        (None, b) => b,
        (a, None) => a,
    }
}

/// Waits (at most 5 s) until the server processes `pids` are nearly idle: work a row leaves
/// behind (InnoDB's purge of old row versions, PostgreSQL's autovacuum, memcached's LRU
/// crawler) would otherwise run during the next row's slice and be charged to it. Measured
/// on MariaDB: the large-session cycle ran at 978 ops/s right after the raw row's slice and
/// at 3,787 alone.
async fn settle(pids: &[u32]) {
    const STEP: Duration = Duration::from_millis(100);
    const IDLE: Duration = Duration::from_millis(10);
    let Some(mut before) = server_cpu(pids) else {
        return;
    };
    for _ in 0..50 {
        tokio::time::sleep(STEP).await;
        let Some(now) = server_cpu(pids) else {
            return;
        };
        if now.saturating_sub(before) <= IDLE {
            return;
        }
        before = now;
    }
}

/// Measures every row of `plan` in `options.rounds` interleaved rounds, prints the rows in
/// plan order, and returns them for the comparison with the peer.
pub(crate) async fn run(plan: &[Planned], options: &Options) -> Result<Vec<peer::Measured>> {
    let rounds = options.rounds;
    let slice = options.seconds / rounds as f64;
    let mut tallies: Vec<Tally> = plan.iter().map(|_| Tally::default()).collect();
    for _ in 0..rounds {
        for (planned, tally) in plan.iter().zip(&mut tallies) {
            settle(&planned.pids).await;
            let server_before = server_cpu(&planned.pids);
            let client_before = ProcStat::of(std::process::id());
            let (latencies, elapsed) = measure_slice(
                Arc::clone(&planned.work),
                slice,
                options.tasks,
                planned.sessions,
                tally.cursor,
                options.order,
            )
            .await?;
            let server = server_before
                .zip(server_cpu(&planned.pids))
                .map(|(before, after)| after.saturating_sub(before));
            let client =
                client_before
                    .zip(ProcStat::of(std::process::id()))
                    .map(|(before, after)| {
                        Duration::from_millis(after.cpu_ticks.saturating_sub(before.cpu_ticks) * 10)
                    });
            tally.cursor = tally.cursor.wrapping_add(latencies.len());
            tally.rounds.push(latencies.len() as f64 / elapsed);
            tally.elapsed += elapsed;
            tally.latencies.extend(latencies);
            tally.server_cpu = add(tally.server_cpu, server);
            tally.client_cpu = add(tally.client_cpu, client);
        }
    }
    let rows: Vec<Row> = tallies.iter_mut().map(Tally::row).collect();
    let mut measured = Vec::new();
    for ((planned, row), tally) in plan.iter().zip(&rows).zip(&tallies) {
        let baseline = planned.baseline.map(|index| &rows[index]);
        print_row(
            &planned.backend,
            planned.shape,
            planned.workload,
            row,
            baseline,
        );
        measured.push(peer::Measured::new(
            &planned.backend,
            planned.shape,
            planned.workload,
            row,
            tally.rounds.clone(),
        ));
    }
    Ok(measured)
}
