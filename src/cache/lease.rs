//! The cache-wide lock that keeps `cache gc` and `cache repair` from
//! removing what a run uses: every `run` holds it shared for as long as it
//! runs; `gc` and `repair` hold it exclusively, so they start only when no
//! run is live and no run starts (or commits) while they work. Plain
//! `flock`: the kernel releases it when a process dies, `kill -9` included.

use std::fs::File;

use super::Cache;
use crate::error::{Diag, io_error};

/// A hold on the cache-wide lock; dropping it releases the lock.
pub struct Lease {
    _file: File,
}

impl Cache {
    fn lease_file(&self) -> Result<File, Diag> {
        let p = self.root().join("locks").join("cache.lock");
        File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .map_err(|e| io_error("cannot open the cache lock", &p, e))
    }

    /// Holds the cache for a run (shared with other runs); `on_wait` is
    /// called first when a `gc` or `repair` holds it.
    pub fn lease_shared(&self, on_wait: impl FnOnce()) -> Result<Lease, Diag> {
        let f = self.lease_file()?;
        let lock_err = |e| io_error("cannot lock", &self.root().join("locks/cache.lock"), e);
        match f.try_lock_shared() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                on_wait();
                f.lock_shared().map_err(lock_err)?;
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(lock_err(e)),
        }
        Ok(Lease { _file: f })
    }

    /// Holds the cache alone (for `gc` and `repair`); `on_wait` is called
    /// first when runs hold it.
    pub fn lease_exclusive(&self, on_wait: impl FnOnce()) -> Result<Lease, Diag> {
        let f = self.lease_file()?;
        let lock_err = |e| io_error("cannot lock", &self.root().join("locks/cache.lock"), e);
        match f.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                on_wait();
                f.lock().map_err(lock_err)?;
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(lock_err(e)),
        }
        Ok(Lease { _file: f })
    }
}
