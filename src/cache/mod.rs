//! The content-addressed store of stage results and the index of runs.
//!
//! Layout of a cache folder:
//! ```text
//! artifacts/<digest>/...   finished outputs, immutable (files read-only), named by content
//! tmp/<key>/out            a stage being computed (only while its key lock is held)
//! logs/<key>.log           stdout+stderr of a finished stage (`.failed.log` for failures)
//! locks/<key>.lock         one computation per key across processes (flock, within a host)
//! locks/<key>.lease/       the same across hosts (a mkdir lease naming its holder and job)
//! locks/runs/, gc.lease/   live runs, and a `gc` or `repair` at work (see `lease.rs`)
//! index/, index.lock       the sled index (see `index.rs`)
//! ```
//! A shared remote (`remote/`) holds the same results for several caches.
//! Invariants: an artifact folder appears only by an atomic rename of a
//! complete output; a run record is written only after its artifact is in
//! place, so a kill at any moment leaves no partial result visible; a failed
//! stage writes a failure record, never a run record.

mod cross_host;
mod digest;
mod index;
pub mod jobs;
mod key;
mod lease;
mod pending;
mod records;
pub mod remote;
mod store;

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use cross_host::{Owner, host_name};
pub use digest::{FileEntry, StatCache};
pub use index::IndexSession;
pub use key::{Change, InputDigest, KEY_FORMAT, KeyComponents, StageKey, diff};
pub use lease::Lease;
use lease::Mode;
pub use pending::{Claim, Failed, Outcome, Pending};
pub use records::RepairReport;
pub(crate) use records::write_durably;
pub use store::dir_size;
pub(crate) use store::remove_tree;

use crate::dsl::Metrics;
use crate::error::{Diag, io_error};

/// A successful computation of one key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    pub key: StageKey,
    pub components: KeyComponents,
    /// Digest of the output folder (its artifact).
    pub output: String,
    pub metrics: Metrics,
    pub seconds: f64,
    /// Unix seconds.
    pub finished_at: u64,
    /// Where it was first computed (for `cache ls`; not part of the key).
    pub experiment: String,
    pub stage_id: String,
}

/// The files of one artifact, as committed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ArtifactRecord {
    pub digest: String,
    pub files: Vec<FileEntry>,
    pub size: u64,
}

/// The last failed attempt of a stage.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FailureRecord {
    pub key: StageKey,
    pub experiment: String,
    pub stage_id: String,
    pub finished_at: u64,
    pub message: String,
    pub log: Option<PathBuf>,
}

/// Something wrong with a stored artifact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArtifactProblem {
    FolderMissing,
    FileMissing(String),
    FileChanged(String),
    FileAdded(String),
    /// A link or other non-plain file where plain files belong.
    NotPlain(String),
}

impl std::fmt::Display for ArtifactProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ArtifactProblem::FolderMissing => write!(f, "artifact folder is missing"),
            ArtifactProblem::FileMissing(p) => write!(f, "`{p}` is missing"),
            ArtifactProblem::FileChanged(p) => write!(f, "`{p}` no longer matches its digest"),
            ArtifactProblem::FileAdded(p) => {
                write!(f, "`{p}` was added after the artifact was stored")
            }
            ArtifactProblem::NotPlain(p) => write!(f, "`{p}` is a link, not a plain file"),
        }
    }
}

/// Holds a key's lock; dropping it releases the lock: the lease (across
/// hosts) first, then the `flock` (within one host, where it works).
pub(crate) struct KeyLock {
    lease: cross_host::Hold,
    _file: Option<File>,
}

impl KeyLock {
    /// The lease, to name the job that computes the key.
    pub(crate) fn lease(&self) -> &cross_host::Hold {
        &self.lease
    }
}

/// Whether `flock` is used: not where `EFRLHF_FLOCK=0` says the cache's
/// filesystem mishandles it (hangs, or errors not recognised below).
fn flock_wanted() -> bool {
    std::env::var("EFRLHF_FLOCK").map_or(true, |v| v != "0")
}

/// A lock under `path` could not be taken.
fn lock_error(path: &Path, e: std::io::Error) -> Diag {
    io_error("cannot lock", path, e)
        .with_help("where the cache's filesystem mishandles `flock`, set EFRLHF_FLOCK=0")
}

/// `flock` errors that mean the filesystem has none (Lustre without
/// `-o flock`, NFS without a lock daemon): the leases alone then hold.
fn flock_unsupported(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOSYS) | Some(libc::EOPNOTSUPP) | Some(libc::ENOLCK)
    )
}

pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A cache folder.
#[derive(Debug, Clone)]
pub struct Cache {
    root: PathBuf,
}

impl Cache {
    /// Holds the cache for a run (shared with other runs); `on_wait` is
    /// called first when a `gc` or `repair` holds it.
    pub fn lease_shared(&self, on_wait: impl FnOnce()) -> Result<Lease, Diag> {
        lease::acquire(self.root(), Mode::Shared, on_wait)
    }

    /// Holds the cache alone (for `gc` and `repair`); `on_wait` is called
    /// first when runs hold it.
    pub fn lease_exclusive(&self, on_wait: impl FnOnce()) -> Result<Lease, Diag> {
        lease::acquire(self.root(), Mode::Exclusive, on_wait)
    }

    /// Opens (creating if needed) the cache at `root`.
    pub fn open(root: &Path) -> Result<Cache, Diag> {
        for sub in ["artifacts", "tmp", "logs", "locks"] {
            let p = root.join(sub);
            std::fs::create_dir_all(&p).map_err(|e| {
                io_error("cannot create cache folder", &p, e)
                    .with_help("choose a writable cache with --cache-dir or EFRLHF_CACHE")
            })?;
        }
        let tag = root.join("CACHEDIR.TAG");
        if !tag.exists() {
            let _ = std::fs::write(
                &tag,
                "Signature: 8a477f597d28d172789f06886806bc55\n# efrlhf cache: results can be recomputed.\n",
            );
        }
        let root = std::path::absolute(root).unwrap_or_else(|_| root.to_path_buf());
        Ok(Cache { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A short session on the index (exclusive across processes).
    pub fn index(&self) -> Result<IndexSession, Diag> {
        IndexSession::open(&self.root)
    }

    pub fn artifact_dir(&self, digest: &str) -> PathBuf {
        self.root.join("artifacts").join(digest)
    }

    pub fn log_path(&self, key: &str, failed: bool) -> PathBuf {
        self.root.join("logs").join(if failed {
            format!("{key}.failed.log")
        } else {
            format!("{key}.log")
        })
    }

    fn lock_file(&self, key: &str) -> Result<File, Diag> {
        let p = self.root.join("locks").join(format!("{key}.lock"));
        File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .map_err(|e| io_error("cannot open lock", &p, e))
    }

    fn lease_dir(&self, key: &str) -> PathBuf {
        self.root.join("locks").join(format!("{key}.lease"))
    }

    /// Takes the key's `flock` if no other process holds it (`Some(None)`
    /// where the filesystem has no `flock`).
    fn try_flock_key(&self, key: &str) -> Result<Option<Option<File>>, Diag> {
        if !flock_wanted() {
            return Ok(Some(None));
        }
        let f = self.lock_file(key)?;
        match f.try_lock() {
            Ok(()) => Ok(Some(Some(f))),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) if flock_unsupported(&e) => Ok(Some(None)),
            Err(std::fs::TryLockError::Error(e)) => Err(self.lock_error(key, e)),
        }
    }

    fn lock_error(&self, key: &str, e: std::io::Error) -> Diag {
        lock_error(&self.root.join("locks").join(key), e)
    }

    /// Takes the key's lock if no other process holds it.
    pub(crate) fn try_lock_key(&self, key: &str) -> Result<Option<KeyLock>, Diag> {
        let Some(file) = self.try_flock_key(key)? else {
            return Ok(None);
        };
        let tried =
            cross_host::try_lease(&self.lease_dir(key)).map_err(|e| self.lock_error(key, e))?;
        Ok(match tried {
            cross_host::Tried::Held(lease) => Some(KeyLock { lease, _file: file }),
            cross_host::Tried::Busy { .. } => None,
        })
    }

    /// Waits for the key's lock; `on_wait` is told who holds it first when
    /// it must wait.
    pub(crate) fn lock_key(&self, key: &str, on_wait: impl FnOnce(&str)) -> Result<KeyLock, Diag> {
        let mut on_wait = Some(on_wait);
        let mut tell = |owner: Option<cross_host::Owner>| {
            if let Some(f) = on_wait.take() {
                f(&owner.map_or_else(|| "another run".to_string(), |o| o.describe()));
            }
        };
        let file = match self.try_flock_key(key)? {
            Some(file) => file,
            None => {
                tell(cross_host::holder(&self.lease_dir(key)));
                let f = self.lock_file(key)?;
                f.lock().map_err(|e| self.lock_error(key, e))?;
                Some(f)
            }
        };
        let lease = cross_host::lease(&self.lease_dir(key), |o| tell(o.cloned()))
            .map_err(|e| self.lock_error(key, e))?;
        Ok(KeyLock { lease, _file: file })
    }

    /// Where a stage computing `key` keeps checkpoints; it outlives a killed
    /// run (unlike scratch) so the next run resumes, and goes once the key commits.
    pub fn checkpoint_dir(&self, key: &str) -> PathBuf {
        self.root.join("checkpoints").join(key)
    }

    /// A fresh scratch folder for one attempt at `key` (`tmp/<key>.<pid>.<n>`):
    /// each attempt writes its own, so nothing left of an earlier one can
    /// mix into it. Call with the key's lock held.
    fn scratch(&self, key: &str) -> Result<PathBuf, Diag> {
        static ATTEMPT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = ATTEMPT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = self
            .root
            .join("tmp")
            .join(format!("{key}.{}.{n}", std::process::id()));
        std::fs::create_dir_all(dir.join("out"))
            .map_err(|e| io_error("cannot create scratch folder", &dir, e))?;
        Ok(dir)
    }

    /// Removes one attempt's scratch folder.
    pub(crate) fn discard_scratch(&self, dir: &Path) -> std::io::Result<()> {
        remove_tree(dir)
    }

    /// Removes scratch folders left by killed runs (those whose key nobody
    /// holds and no recorded cluster job writes into).
    pub fn clean_scratch(&self) -> u64 {
        let mut freed = 0;
        let Ok(rd) = std::fs::read_dir(self.root.join("tmp")) else {
            return 0;
        };
        // A cluster job of a killed coordinator may still write into its folder.
        let in_use: Vec<std::ffi::OsString> = jobs::scratch_in_use(&self.root)
            .iter()
            .filter_map(|p| p.file_name().map(|n| n.to_os_string()))
            .collect();
        for entry in rd.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if in_use.contains(&entry.file_name()) {
                continue;
            }
            // `<key>.<pid>.<n>`: an attempt whose key nobody holds is over.
            let key = name.split('.').next().unwrap_or_default();
            let lock = if name.starts_with("trash-") {
                None
            } else {
                self.try_lock_key(key).ok().flatten()
            };
            if lock.is_some() || name.starts_with("trash-") {
                freed += dir_size(&entry.path());
                let _ = remove_tree(&entry.path());
            }
        }
        freed
    }

    /// Sizes of the cache's parts, in bytes.
    pub fn disk_usage(&self) -> BTreeMap<&'static str, u64> {
        let mut out = BTreeMap::new();
        for part in ["artifacts", "logs", "index", "tmp"] {
            out.insert(part, dir_size(&self.root.join(part)));
        }
        out
    }
}
