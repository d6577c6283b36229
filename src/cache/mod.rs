//! The content-addressed store of stage results and the index of runs.
//!
//! Layout of a cache folder:
//! ```text
//! artifacts/<digest>/...   finished outputs, immutable (files read-only), named by content
//! tmp/<key>/out            a stage being computed (only while its key lock is held)
//! logs/<key>.log           stdout+stderr of a finished stage (`.failed.log` for failures)
//! locks/<key>.lock         one computation per key across processes
//! index/, index.lock       the sled index (see `index.rs`)
//! ```
//! Invariants: an artifact folder appears only by an atomic rename of a
//! complete output; a run record is written only after its artifact is in
//! place, so a kill at any moment leaves no partial result visible; a failed
//! stage writes a failure record, never a run record.

mod digest;
mod index;
mod key;
mod pending;

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use digest::{FileEntry, StatCache, hash_file, listing_digest, scan_dir};
pub use index::IndexSession;
pub use key::{Change, InputDigest, KEY_FORMAT, KeyComponents, StageKey, diff};
pub use pending::{Claim, Failed, Outcome, Pending};

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
        }
    }
}

/// Holds a key's lock; dropping it releases the lock.
pub(crate) struct KeyLock {
    _file: File,
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

    /// Takes the key's lock if no other process holds it.
    pub(crate) fn try_lock_key(&self, key: &str) -> Result<Option<KeyLock>, Diag> {
        let f = self.lock_file(key)?;
        match f.try_lock() {
            Ok(()) => Ok(Some(KeyLock { _file: f })),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(io_error(
                "cannot lock",
                &self.root.join("locks").join(key),
                e,
            )),
        }
    }

    /// Waits for the key's lock.
    pub(crate) fn lock_key(&self, key: &str) -> Result<KeyLock, Diag> {
        let f = self.lock_file(key)?;
        f.lock()
            .map_err(|e| io_error("cannot lock", &self.root.join("locks").join(key), e))?;
        Ok(KeyLock { _file: f })
    }

    /// Where a stage computing `key` keeps checkpoints; it outlives a killed
    /// run (unlike scratch) so the next run resumes, and goes once the key commits.
    pub fn checkpoint_dir(&self, key: &str) -> PathBuf {
        self.root.join("checkpoints").join(key)
    }

    /// A fresh scratch folder for computing `key`. Call with the key's lock held.
    fn scratch(&self, key: &str) -> Result<PathBuf, Diag> {
        let dir = self.root.join("tmp").join(key);
        if dir.exists() {
            make_writable(&dir);
            std::fs::remove_dir_all(&dir)
                .map_err(|e| io_error("cannot clear scratch folder", &dir, e))?;
        }
        std::fs::create_dir_all(dir.join("out"))
            .map_err(|e| io_error("cannot create scratch folder", &dir, e))?;
        Ok(dir)
    }

    /// Removes scratch folders left by killed runs (those whose key nobody holds).
    pub fn clean_scratch(&self) -> u64 {
        let mut freed = 0;
        let Ok(rd) = std::fs::read_dir(self.root.join("tmp")) else {
            return 0;
        };
        for entry in rd.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let lock = if name.starts_with("trash-") {
                None
            } else {
                self.try_lock_key(&name).ok().flatten()
            };
            if lock.is_some() || name.starts_with("trash-") {
                freed += dir_size(&entry.path());
                make_writable(&entry.path());
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        freed
    }

    /// Moves a finished output folder into the store. Returns its record.
    pub fn commit_output(&self, out: &Path) -> Result<ArtifactRecord, Diag> {
        let files = scan_dir(out).map_err(|e| {
            Diag::new(
                crate::error::Category::StageFailed,
                "E-OUTPUT",
                format!("cannot read the stage's output: {e}"),
            )
        })?;
        let digest = listing_digest(&files);
        let size = files.iter().map(|f| f.size).sum();
        let rec = ArtifactRecord {
            digest: digest.clone(),
            files,
            size,
        };
        let dest = self.artifact_dir(&digest);
        if dest.exists() {
            if self.check_artifact(&rec, true).is_empty() {
                make_writable(out);
                let _ = std::fs::remove_dir_all(out);
                return Ok(rec);
            }
            // A damaged copy with the same name: move it aside, then replace it.
            let trash = self
                .root
                .join("tmp")
                .join(format!("trash-{digest}-{}", std::process::id()));
            std::fs::rename(&dest, &trash)
                .map_err(|e| io_error("cannot move damaged artifact", &dest, e))?;
            make_writable(&trash);
            let _ = std::fs::remove_dir_all(&trash);
        }
        for f in &rec.files {
            set_readonly(&out.join(&f.path));
        }
        if let Err(e) = std::fs::rename(out, &dest) {
            // Another process committed the same content in the meantime.
            if dest.exists() && self.check_artifact(&rec, true).is_empty() {
                make_writable(out);
                let _ = std::fs::remove_dir_all(out);
            } else {
                return Err(io_error("cannot store artifact", &dest, e));
            }
        }
        Ok(rec)
    }

    /// Checks an artifact against its record. Without `full`, a file whose size
    /// and mtime are as recorded is trusted; otherwise every file is re-hashed.
    pub fn check_artifact(&self, rec: &ArtifactRecord, full: bool) -> Vec<ArtifactProblem> {
        let dir = self.artifact_dir(&rec.digest);
        if !dir.is_dir() {
            return vec![ArtifactProblem::FolderMissing];
        }
        let mut problems = Vec::new();
        for f in &rec.files {
            let p = dir.join(&f.path);
            let Ok(meta) = std::fs::metadata(&p) else {
                problems.push(ArtifactProblem::FileMissing(f.path.clone()));
                continue;
            };
            if meta.len() != f.size {
                problems.push(ArtifactProblem::FileChanged(f.path.clone()));
                continue;
            }
            if (full || digest::mtime_ns(&meta) != f.mtime_ns)
                && hash_file(&p).ok().as_deref() != Some(f.digest.as_str())
            {
                problems.push(ArtifactProblem::FileChanged(f.path.clone()));
            }
        }
        if full && let Ok(listing) = scan_dir(&dir) {
            let known: std::collections::HashSet<&str> =
                rec.files.iter().map(|f| f.path.as_str()).collect();
            for f in listing {
                if !known.contains(f.path.as_str()) {
                    problems.push(ArtifactProblem::FileAdded(f.path));
                }
            }
        }
        problems
    }

    /// Deletes an artifact folder; returns bytes freed.
    pub fn remove_artifact(&self, digest: &str) -> u64 {
        let dir = self.artifact_dir(digest);
        let size = dir_size(&dir);
        make_writable(&dir);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => size,
            Err(_) => 0,
        }
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

fn set_readonly(p: &Path) {
    if let Ok(meta) = std::fs::metadata(p) {
        let mut perm = meta.permissions();
        perm.set_readonly(true);
        let _ = std::fs::set_permissions(p, perm);
    }
}

/// Gives write permission back to read-only artifact files so they can be deleted by non-root users.
fn make_writable(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in rd.flatten() {
        let p = entry.path();
        if std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir()) {
            let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755));
            make_writable(&p);
        }
    }
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755));
}

/// Total size of the regular files below `p`.
pub fn dir_size(p: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(p) else {
        return 0;
    };
    if meta.is_file() {
        return meta.len();
    }
    if !meta.is_dir() {
        return 0;
    }
    std::fs::read_dir(p)
        .map(|rd| rd.flatten().map(|e| dir_size(&e.path())).sum())
        .unwrap_or(0)
}
