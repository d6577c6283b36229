//! Bringing a resolution's files into the Hub cache: each missing blob is
//! fetched under its lock (shared with `huggingface_hub`), into
//! `blobs/<etag>.incomplete` (resumed after a kill), checked against its
//! content hash, renamed into place and linked from the snapshot. A file
//! that does not verify is never stored.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::http::{HubError, RemoteFile};
use super::layout::RepoCache;
use super::resolve::{Hub, Resolution};
use super::uri::HubUri;

/// What a download reports as it goes (the live display, `--json` events).
pub trait Transfer {
    /// Before the first byte: how many files and bytes are to come.
    fn begin(&mut self, _files: usize, _bytes: u64) {}
    /// A file starts (`resumed_from`: bytes already there from an earlier try).
    fn file(&mut self, _repo: &str, _path: &str, _size: u64, _resumed_from: u64) {}
    /// More bytes arrived.
    fn bytes(&mut self, _n: u64) {}
    /// Another process holds the file's lock.
    fn waiting(&mut self, _repo: &str, _path: &str) {}
    /// All done.
    fn end(&mut self, _files: usize, _bytes: u64, _seconds: f64) {}
}

/// A file of one resolution still to be fetched.
#[derive(Debug, Clone)]
pub struct Missing {
    pub uri: HubUri,
    pub commit: String,
    pub file: RemoteFile,
}

/// The files of `selected` (resolved as `r`) not in the Hub cache yet.
pub fn missing(hub: &Hub, uri: &HubUri, r: &Resolution, selected: &[RemoteFile]) -> Vec<Missing> {
    let repo = hub.repo_cache(uri.repo_type, &uri.repo_id);
    selected
        .iter()
        .filter(|f| repo.cached_file(&r.commit, &f.path, &f.etag).is_none())
        .map(|f| Missing {
            uri: uri.clone(),
            commit: r.commit.clone(),
            file: f.clone(),
        })
        .collect()
}

/// Fetches every file of `todo` (deduplicated by blob), reporting to `t`.
pub fn fetch_all(hub: &Hub, todo: &[Missing], t: &mut dyn Transfer) -> Result<(), HubError> {
    let mut seen = std::collections::BTreeSet::new();
    let todo: Vec<&Missing> = todo
        .iter()
        .filter(|m| seen.insert((m.uri.repo_label(), m.commit.clone(), m.file.path.clone())))
        .collect();
    let bytes: u64 = todo.iter().map(|m| m.file.size).sum();
    let started = Instant::now();
    t.begin(todo.len(), bytes);
    for m in &todo {
        fetch_one(hub, m, t)?;
    }
    t.end(todo.len(), bytes, started.elapsed().as_secs_f64());
    Ok(())
}

/// One file: lock, fetch or reuse its blob, verify, link.
fn fetch_one(hub: &Hub, m: &Missing, t: &mut dyn Transfer) -> Result<PathBuf, HubError> {
    let repo = hub.repo_cache(m.uri.repo_type, &m.uri.repo_id);
    let label = m.uri.repo_label();
    let disk = |p: &Path, e: std::io::Error| HubError::Disk {
        path: p.display().to_string(),
        why: e.to_string(),
    };
    let blobs = repo.root().join("blobs");
    fs::create_dir_all(&blobs).map_err(|e| disk(&blobs, e))?;
    let _lock = repo
        .lock_blob(&m.file.etag, &mut || t.waiting(&label, &m.file.path))
        .map_err(|e| disk(&blobs, e))?;
    let blob = repo.blob(&m.file.etag);
    if !blob.is_file() {
        download_verified(hub, m, &repo, t)?;
    } else {
        t.file(&label, &m.file.path, m.file.size, m.file.size);
        t.bytes(0);
    }
    repo.link_snapshot(&m.commit, &m.file.path, &m.file.etag)
        .map_err(|e| disk(&repo.snapshot_dir(&m.commit), e))
}

/// Downloads into `.incomplete` and renames to the blob once the hash matches;
/// a mismatch discards the bytes and tries once more from nothing.
fn download_verified(
    hub: &Hub,
    m: &Missing,
    repo: &RepoCache,
    t: &mut dyn Transfer,
) -> Result<(), HubError> {
    let label = m.uri.repo_label();
    let part = repo.incomplete(&m.file.etag);
    let blob = repo.blob(&m.file.etag);
    let mut last = String::new();
    for _ in 0..2 {
        let have = fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
        t.file(&label, &m.file.path, m.file.size, have);
        let res = hub
            .client()
            .download(&m.uri, &m.commit, &m.file, &part, &mut |n| t.bytes(n));
        if let Err(e) = res {
            if matches!(e, HubError::Disk { .. }) {
                // A full disk keeps nothing half-written.
                let _ = fs::remove_file(&part);
            }
            return Err(e);
        }
        let got = content_hash(&part, m.file.lfs).map_err(|e| HubError::Disk {
            path: part.display().to_string(),
            why: e.to_string(),
        })?;
        if got == m.file.etag {
            return fs::rename(&part, &blob).map_err(|e| HubError::Disk {
                path: blob.display().to_string(),
                why: e.to_string(),
            });
        }
        let _ = fs::remove_file(&part);
        last = got;
    }
    Err(HubError::BadReply {
        url: format!("{} at {}", label, &m.commit[..7]),
        why: format!(
            "the bytes received for `{}` do not match its {} (expected {}, got {}), twice; nothing was stored",
            m.file.path,
            if m.file.lfs {
                "sha256"
            } else {
                "git blob hash"
            },
            m.file.etag,
            last
        ),
    })
}

/// The hex content hash the Hub names a blob by: sha256 for LFS files, the
/// git blob sha1 (`sha1("blob LEN\0" + bytes)`) for the others.
pub fn content_hash(path: &Path, lfs: bool) -> std::io::Result<String> {
    let mut f = fs::File::open(path)?;
    let mut ctx = if lfs {
        ring::digest::Context::new(&ring::digest::SHA256)
    } else {
        let mut c = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
        c.update(format!("blob {}\0", f.metadata()?.len()).as_bytes());
        c
    };
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
    }
    Ok(ctx
        .finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_match_git_and_sha256sum() {
        let p = std::env::temp_dir().join(format!("efrlhf-hash-{}", std::process::id()));
        fs::write(&p, b"hello\n").unwrap();
        // `git hash-object` and `sha256sum` of "hello\n".
        assert_eq!(
            content_hash(&p, false).unwrap(),
            "ce013625030ba8dba906f756967f9e9ca394464a"
        );
        assert_eq!(
            content_hash(&p, true).unwrap(),
            "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"
        );
        let _ = fs::remove_file(&p);
    }
}
