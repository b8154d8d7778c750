//! The run's scratch directory: where the SQLite rows keep their database files and the TLS
//! row its throwaway certificates.
//!
//! At the default scale a SQLite row's file passes 1 GB, so a run must not leave them behind.
//! Every file the run writes goes into one directory per run, removed when the run ends: normally, on an
//! error exit ([`exit`]), or on SIGINT or SIGTERM.

use std::path::PathBuf;

/// The directory of this run (`$TMPDIR/session-bench-<pid>`); [`path`] creates it.
fn dir() -> PathBuf {
    std::env::temp_dir().join(format!("session-bench-{}", std::process::id()))
}

/// The path of the file or directory `name` in the run's scratch directory.
pub(crate) fn path(name: &str) -> std::io::Result<PathBuf> {
    let dir = dir();
    std::fs::create_dir_all(&dir)?;
    Ok(dir.join(name))
}

/// Removes the run's scratch directory, if there is one.
pub(crate) fn remove() {
    let dir = dir();
    if dir.exists() {
        if let Err(error) = std::fs::remove_dir_all(&dir) {
            eprintln!("cannot remove {}: {error}", dir.display());
        }
    }
}

/// Ends the process with `code` after removing the scratch directory (`std::process::exit`
/// runs no destructors).
pub(crate) fn exit(code: i32) -> ! {
    remove();
    std::process::exit(code)
}

/// On Ctrl-C (SIGINT) or SIGTERM (`kill`, a timeout), removes the scratch directory and ends
/// the process with the code a shell gives a process the signal ended (130, 143).
pub(crate) fn remove_on_interrupt() {
    tokio::spawn(async {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("interrupted");
            exit(130);
        }
    });
    #[cfg(unix)]
    if let Ok(mut terminate) =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    {
        tokio::spawn(async move {
            if terminate.recv().await.is_some() {
                eprintln!("terminated");
                exit(143);
            }
        });
    }
}
