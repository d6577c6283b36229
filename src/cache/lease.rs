//! The cache-wide lock that keeps `cache gc` and `cache repair` from
//! removing what a run uses: every `run` holds it shared for as long as it
//! runs; `gc` and `repair` hold it exclusively, so they start only when no
//! run is live and no run starts (or commits) while they work. Plain
//! `flock`: the kernel releases it when a process dies, `kill -9` included.

use std::fs::{File, TryLockError};
use std::path::Path;

use crate::error::{Diag, io_error};

/// A hold on the cache-wide lock; dropping it releases the lock.
pub struct Lease {
    _file: File,
}

/// Whether a lease may be shared with other runs.
#[derive(Clone, Copy)]
pub(super) enum Mode {
    /// Runs: any number at once.
    Shared,
    /// `gc` and `repair`: alone.
    Exclusive,
}

/// Takes the lock under the cache `root`; `on_wait` is called first when
/// it must wait.
pub(super) fn acquire(root: &Path, mode: Mode, on_wait: impl FnOnce()) -> Result<Lease, Diag> {
    let p = root.join("locks").join("cache.lock");
    let f = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&p)
        .map_err(|e| io_error("cannot open the cache lock", &p, e))?;
    let lock_err = |e| io_error("cannot lock", &p, e);
    let tried = match mode {
        Mode::Shared => f.try_lock_shared(),
        Mode::Exclusive => f.try_lock(),
    };
    match tried {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            on_wait();
            match mode {
                Mode::Shared => f.lock_shared(),
                Mode::Exclusive => f.lock(),
            }
            .map_err(lock_err)?;
        }
        Err(TryLockError::Error(e)) => return Err(lock_err(e)),
    }
    Ok(Lease { _file: f })
}
