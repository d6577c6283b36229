//! The cache-wide lock that keeps `cache gc` and `cache repair` from
//! removing what a run uses: every `run` holds it shared for as long as it
//! runs; `gc` and `repair` hold it exclusively, so they start only when no
//! run is live and no run starts (or commits) while they work. Two layers:
//! `flock` on `locks/cache.lock` (the kernel releases it when a process
//! dies, `kill -9` included), and for hosts that share the cache where
//! `flock` does not reach across them, a registration per run under
//! `locks/runs/` and a lease `locks/gc.lease/` held by `gc` (see
//! `cross_host.rs`). A run registers, then looks for the `gc` lease; `gc`
//! takes its lease, then waits for the registrations: whichever comes
//! second sees the first.

use std::fs::{File, TryLockError};
use std::path::Path;

use super::cross_host::{self, Hold};
use crate::error::{Diag, io_error};

/// A hold on the cache-wide lock; dropping it releases the lock.
pub struct Lease {
    _hold: Hold,
    _file: Option<File>,
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
    let mut on_wait = Some(on_wait);
    let mut waited = || {
        if let Some(f) = on_wait.take() {
            f();
        }
    };
    let file = flock(root, mode, &mut waited)?;
    let locks = root.join("locks");
    let (runs, gc) = (locks.join("runs"), locks.join("gc.lease"));
    let err = |e| io_error("cannot take the cache lease", &locks, e);
    let hold = match mode {
        Mode::Shared => loop {
            let reg = cross_host::register(&runs).map_err(err)?;
            if !gc.exists() {
                break reg;
            }
            drop(reg);
            waited();
            // Held by `gc` until it is done (or taken over once it is gone).
            drop(cross_host::lease(&gc, |_| {}).map_err(err)?);
        },
        Mode::Exclusive => {
            let hold = cross_host::lease(&gc, |_| waited()).map_err(err)?;
            cross_host::wait_unregistered(&runs, |_| waited());
            hold
        }
    };
    Ok(Lease {
        _hold: hold,
        _file: file,
    })
}

/// The `flock` layer; `None` where the filesystem has no `flock`.
fn flock(root: &Path, mode: Mode, waited: &mut dyn FnMut()) -> Result<Option<File>, Diag> {
    if !super::flock_wanted() {
        return Ok(None);
    }
    let p = root.join("locks").join("cache.lock");
    let f = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&p)
        .map_err(|e| io_error("cannot open the cache lock", &p, e))?;
    let lock_err = |e| super::lock_error(&p, e);
    let tried = match mode {
        Mode::Shared => f.try_lock_shared(),
        Mode::Exclusive => f.try_lock(),
    };
    match tried {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            waited();
            match mode {
                Mode::Shared => f.lock_shared(),
                Mode::Exclusive => f.lock(),
            }
            .map_err(lock_err)?;
        }
        Err(TryLockError::Error(e)) if super::flock_unsupported(&e) => return Ok(None),
        Err(TryLockError::Error(e)) => return Err(lock_err(e)),
    }
    Ok(Some(f))
}
