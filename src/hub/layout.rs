//! The Hub cache on disk, in the layout Python's `huggingface_hub` uses, so
//! either side finds what the other downloaded:
//!
//! ```text
//! HF_HUB_CACHE/models--ORG--NAME/refs/main              the commit `main` was last seen at
//!                               /blobs/<etag>           a file's bytes (etag: sha256 or git sha1)
//!                               /blobs/<etag>.incomplete  a download under way (resumed from)
//!                               /snapshots/<commit>/<path> -> ../../blobs/<etag> (relative symlink)
//! HF_HUB_CACHE/.locks/models--ORG--NAME/<etag>.lock     held (flock) while a blob is fetched
//! ```
//!
//! A blob appears under its final name only once it is complete and
//! verified (a rename), and a snapshot entry only after its blob: a reader
//! never sees half a file. Every path from a server is checked to stay inside
//! the repository's folder.

use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use super::uri::RepoType;

/// Refuses a repository-relative path that could leave its folder: absolute,
/// with `..`, `\`, NUL or empty components.
pub fn check_relative(path: &str) -> Result<(), String> {
    let bad = path.is_empty()
        || path.contains('\\')
        || path.contains('\0')
        || path.starts_with('/')
        || path
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
        || Path::new(path)
            .components()
            .any(|c| !matches!(c, Component::Normal(_)));
    if bad {
        Err(format!(
            "`{}` is not a safe file name inside a repository",
            path.escape_debug()
        ))
    } else {
        Ok(())
    }
}

/// An etag as a blob name: quotes and a weak `W/` dropped, hex only.
pub fn normalize_etag(raw: &str) -> Option<String> {
    let e = raw.trim().trim_start_matches("W/").trim_matches('"');
    (!e.is_empty() && e.len() <= 128 && e.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| e.to_ascii_lowercase())
}

/// One repository's folder in the Hub cache.
#[derive(Debug, Clone)]
pub struct RepoCache {
    pub cache_dir: PathBuf,
    /// `models--ORG--NAME`.
    pub folder: String,
}

impl RepoCache {
    pub fn new(cache_dir: &Path, repo_type: RepoType, repo_id: &str) -> RepoCache {
        RepoCache {
            cache_dir: cache_dir.to_path_buf(),
            folder: format!("{}--{}", repo_type.plural(), repo_id.replace('/', "--")),
        }
    }

    pub fn root(&self) -> PathBuf {
        self.cache_dir.join(&self.folder)
    }

    pub fn snapshot_dir(&self, commit: &str) -> PathBuf {
        self.root().join("snapshots").join(commit)
    }

    pub fn blob(&self, etag: &str) -> PathBuf {
        self.root().join("blobs").join(etag)
    }

    pub fn incomplete(&self, etag: &str) -> PathBuf {
        self.root().join("blobs").join(format!("{etag}.incomplete"))
    }

    fn lock_path(&self, etag: &str) -> PathBuf {
        self.cache_dir
            .join(".locks")
            .join(&self.folder)
            .join(format!("{etag}.lock"))
    }

    fn ref_path(&self, revision: &str) -> Option<PathBuf> {
        check_relative(revision).ok()?;
        Some(self.root().join("refs").join(revision))
    }

    /// The commit `refs/<revision>` records, if any.
    pub fn read_ref(&self, revision: &str) -> Option<String> {
        let text = fs::read_to_string(self.ref_path(revision)?).ok()?;
        let sha = text.trim();
        is_commit(sha).then(|| sha.to_string())
    }

    /// Records that `revision` is at `commit` (as `huggingface_hub` does after a download).
    pub fn write_ref(&self, revision: &str, commit: &str) -> io::Result<()> {
        if revision == commit {
            return Ok(());
        }
        let Some(path) = self.ref_path(revision) else {
            return Ok(());
        };
        if fs::read_to_string(&path).is_ok_and(|t| t.trim() == commit) {
            return Ok(());
        }
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension(format!("efrlhf-{}.tmp", std::process::id()));
        fs::write(&tmp, commit)?;
        fs::rename(&tmp, &path)
    }

    /// The snapshot entry of `path` at `commit`, when it links to a complete blob.
    pub fn cached_file(&self, commit: &str, path: &str, etag: &str) -> Option<PathBuf> {
        let entry = self.snapshot_dir(commit).join(path);
        let target = fs::read_link(&entry).ok();
        let points_at_blob = target
            .as_ref()
            .and_then(|t| t.file_name())
            .is_some_and(|n| n == etag);
        (points_at_blob && self.blob(etag).is_file()).then_some(entry)
    }

    /// Links `snapshots/<commit>/<path>` to `blobs/<etag>` (relative, like Python).
    pub fn link_snapshot(&self, commit: &str, path: &str, etag: &str) -> io::Result<PathBuf> {
        let entry = self.snapshot_dir(commit).join(path);
        if let Some(dir) = entry.parent() {
            fs::create_dir_all(dir)?;
        }
        let depth = path.split('/').count() + 1;
        let target = PathBuf::from("../".repeat(depth)).join("blobs").join(etag);
        if fs::read_link(&entry).is_ok_and(|t| t == target) {
            return Ok(entry);
        }
        let tmp = entry.with_file_name(format!(
            ".{}.efrlhf-{}.tmp",
            entry.file_name().and_then(|n| n.to_str()).unwrap_or("f"),
            std::process::id()
        ));
        let _ = fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&target, &tmp)?;
        fs::rename(&tmp, &entry)?;
        Ok(entry)
    }

    /// Takes the blob's lock (shared with `huggingface_hub`'s `filelock`),
    /// calling `waiting` once if another process holds it.
    pub fn lock_blob(&self, etag: &str, waiting: &mut dyn FnMut()) -> io::Result<BlobLock> {
        let path = self.lock_path(etag);
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)?;
        let mut told = false;
        loop {
            // SAFETY: flock on a descriptor this function owns; no memory is shared.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if rc == 0 {
                return Ok(BlobLock { _file: file });
            }
            let err = io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(err);
            }
            if !told {
                waiting();
                told = true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A held blob lock; released when dropped (closing the descriptor releases flock).
pub struct BlobLock {
    _file: fs::File,
}

/// A full commit hash: 40 lowercase hex digits.
pub fn is_commit(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_paths_that_escape() {
        for bad in [
            "../x",
            "a/../../x",
            "/etc/passwd",
            "a//b",
            "a\\b",
            "./a",
            "",
        ] {
            assert!(check_relative(bad).is_err(), "{bad}");
        }
        for good in ["config.json", "a/b/c.jsonl", "a..b"] {
            assert!(check_relative(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn etags_become_blob_names() {
        assert_eq!(normalize_etag("W/\"AbC1\"").as_deref(), Some("abc1"));
        assert_eq!(normalize_etag("\"../x\""), None);
    }

    #[test]
    fn snapshot_links_are_relative_and_reach_the_blob() {
        let dir = std::env::temp_dir().join(format!("efrlhf-layout-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let repo = RepoCache::new(&dir, RepoType::Dataset, "o/n");
        assert_eq!(repo.folder, "datasets--o--n");
        let c = "0123456789abcdef0123456789abcdef01234567";
        fs::create_dir_all(repo.root().join("blobs")).unwrap();
        fs::write(repo.blob("ab"), b"hi").unwrap();
        let e = repo.link_snapshot(c, "sub/dir/f.txt", "ab").unwrap();
        assert_eq!(fs::read(&e).unwrap(), b"hi");
        assert_eq!(
            fs::read_link(&e).unwrap(),
            PathBuf::from("../../../../blobs/ab")
        );
        assert!(repo.cached_file(c, "sub/dir/f.txt", "ab").is_some());
        repo.write_ref("main", c).unwrap();
        assert_eq!(repo.read_ref("main").as_deref(), Some(c));
        let _ = fs::remove_dir_all(&dir);
    }
}
