//! Linux /proc readers: process states and children.

#[allow(unused_imports)]
use super::*;

/// Whether every thread of process `pid` and of its child processes is stopped (state `T`
/// in /proc; Linux). A process that is gone counts as stopped.
pub(super) fn all_stopped(pid: u32) -> bool {
    let threads_stopped = |process: u32| {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{process}/task")) else {
            return true;
        };
        tasks.flatten().all(|task| {
            ProcStat::read(&task.path().join("stat"))
                .is_none_or(|stat| matches!(stat.state, 'T' | 't'))
        })
    };
    threads_stopped(pid) && child_processes(&[pid]).into_iter().all(threads_stopped)
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
