//! Linux /proc readers: process states and children.

#[allow(unused_imports)]
use super::*;

/// The threads of process `pid` and of its child processes that are not stopped (state `T`
/// in /proc; Linux), as (thread id, state). A process that is gone has none, and a zombie
/// (`Z`, `X`: a child that exited while its stopped parent cannot reap it) runs nothing.
pub(super) fn unstopped_threads(pid: u32) -> Vec<(u32, char)> {
    let mut processes = child_processes(&[pid]);
    processes.push(pid);
    processes
        .into_iter()
        .flat_map(|process| {
            std::fs::read_dir(format!("/proc/{process}/task"))
                .into_iter()
                .flatten()
                .flatten()
        })
        .filter_map(|task| {
            let stat = ProcStat::read(&task.path().join("stat"))?;
            let tid = task.file_name().to_str()?.parse().ok()?;
            (!matches!(stat.state, 'T' | 't' | 'Z' | 'X')).then_some((tid, stat.state))
        })
        .collect()
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
