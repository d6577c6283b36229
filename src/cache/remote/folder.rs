//! A remote in a shared folder (NFS, Lustre, GPFS, a mounted bucket).
//! Objects are written under `tmp/`, synced, then put in place by a rename
//! (files) or a hard link, which fails where the name exists (the
//! create-if-absent commit point; `link` is atomic on NFS too; where the
//! filesystem has no hard links, a look and a rename). A killed writer
//! leaves only a file under `tmp/`, which readers never look at.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::store::{ObjectStore, StoreError};

pub struct FolderStore {
    root: PathBuf,
}

impl FolderStore {
    pub fn new(root: PathBuf) -> FolderStore {
        FolderStore { root }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// A fresh temporary path under `tmp/` (created on first use).
    fn temp(&self) -> Result<PathBuf, StoreError> {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let dir = self.root.join("tmp");
        std::fs::create_dir_all(&dir).map_err(|e| self.io("cannot write to", &dir, e))?;
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(dir.join(format!(
            "{}.{}.{n}",
            crate::cache::host_name(),
            std::process::id()
        )))
    }

    fn io(&self, what: &str, path: &Path, e: std::io::Error) -> StoreError {
        let message = format!("{what} `{}`: {e}", path.display());
        match e.kind() {
            std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem => {
                StoreError::denied(message)
            }
            _ => StoreError::new(message),
        }
    }

    /// Makes the folder of `dest` and syncs `tmp` before it is published.
    fn prepare(&self, tmp: &Path, dest: &Path) -> Result<(), StoreError> {
        std::fs::File::open(tmp)
            .and_then(|f| f.sync_all())
            .map_err(|e| self.io("cannot sync", tmp, e))?;
        if let Some(dir) = dest.parent() {
            std::fs::create_dir_all(dir).map_err(|e| self.io("cannot write to", dir, e))?;
        }
        Ok(())
    }
}

impl ObjectStore for FolderStore {
    fn get(&self, name: &str, to: &mut dyn Write) -> Result<bool, StoreError> {
        let p = self.path(name);
        match std::fs::File::open(&p) {
            Ok(mut f) => std::io::copy(&mut f, to)
                .map(|_| true)
                .map_err(|e| self.io("cannot read", &p, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(self.io("cannot read", &p, e)),
        }
    }

    fn exists(&self, name: &str) -> Result<bool, StoreError> {
        let p = self.path(name);
        match std::fs::symlink_metadata(&p) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(self.io("cannot look at", &p, e)),
        }
    }

    fn put_file(&self, name: &str, src: &Path) -> Result<(), StoreError> {
        let dest = self.path(name);
        let tmp = self.temp()?;
        let copied = std::fs::copy(src, &tmp)
            .map_err(|e| self.io("cannot copy into", &tmp, e))
            .and_then(|_| self.prepare(&tmp, &dest))
            .and_then(|_| {
                std::fs::rename(&tmp, &dest).map_err(|e| self.io("cannot write", &dest, e))
            });
        if copied.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        copied
    }

    fn create(&self, name: &str, bytes: &[u8]) -> Result<bool, StoreError> {
        let dest = self.path(name);
        let tmp = self.temp()?;
        let written = std::fs::write(&tmp, bytes)
            .map_err(|e| self.io("cannot write", &tmp, e))
            .and_then(|_| self.prepare(&tmp, &dest))
            .and_then(|_| match std::fs::hard_link(&tmp, &dest) {
                Ok(()) => Ok(true),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
                Err(e) if no_hard_links(&e) => self.publish_by_rename(&tmp, &dest),
                Err(e) => Err(self.io("cannot publish", &dest, e)),
            });
        let _ = std::fs::remove_file(&tmp);
        if matches!(written, Ok(true))
            && let Some(dir) = dest.parent()
        {
            let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
        }
        written
    }

    fn list(&self, prefix: &str) -> Result<Option<Vec<String>>, StoreError> {
        let mut out = Vec::new();
        walk(&self.root, &self.path(prefix), &mut out);
        out.sort();
        Ok(Some(out))
    }

    /// Removes temporary files a killed writer left in `tmp/` a day ago or
    /// more (a live writer's are minutes old at most).
    fn tidy(&self) {
        let Ok(rd) = std::fs::read_dir(self.root.join("tmp")) else {
            return;
        };
        let day = std::time::Duration::from_secs(24 * 3600);
        for entry in rd.flatten() {
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age >= day);
            if old {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

/// Whether a failed `link` means the filesystem has no hard links (a
/// mounted bucket such as gcsfuse or s3fs, some SMB shares).
fn no_hard_links(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::Unsupported
        || matches!(
            e.raw_os_error(),
            Some(libc::EPERM) | Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS)
        )
}

impl FolderStore {
    /// Create-if-absent where there are no hard links: a look, then a
    /// rename. Two writers racing in between both succeed and the last one
    /// stays (as on stores without conditional writes); each manifest is
    /// whole either way, since a rename publishes a complete file.
    fn publish_by_rename(&self, tmp: &Path, dest: &Path) -> Result<bool, StoreError> {
        if dest.exists() {
            return Ok(false);
        }
        std::fs::rename(tmp, dest)
            .map(|_| true)
            .map_err(|e| self.io("cannot publish", dest, e))
    }
}

/// Names of the files below `dir`, relative to `root`.
fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in rd.flatten() {
        let p = entry.path();
        match entry.file_type() {
            Ok(t) if t.is_dir() => walk(root, &p, out),
            Ok(t) if t.is_file() => {
                if let Ok(rel) = p.strip_prefix(root) {
                    out.push(rel.to_string_lossy().replace('\\', "/"));
                }
            }
            _ => {}
        }
    }
}
