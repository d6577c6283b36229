//! Content digests of files and folders (blake3, hex), with a stat cache so
//! unchanged files are not read again.
//!
//! A folder's digest covers each regular file's relative path, size and
//! content digest, in sorted order; empty folders, permissions and times are
//! left out. Symbolic links are refused: an artifact must not point outside itself.

use std::collections::HashMap;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One file of an artifact or of a declared input folder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Relative path with `/` separators.
    pub path: String,
    pub size: u64,
    pub digest: String,
    /// Modification time (ns since the epoch) when hashed; lets a check skip unchanged files.
    pub mtime_ns: i128,
}

pub fn hash_file(path: &Path) -> io::Result<String> {
    let mut hasher = blake3::Hasher::new();
    hasher.update_reader(std::fs::File::open(path)?)?;
    Ok(hasher.finalize().to_hex().to_string())
}

pub fn mtime_ns(meta: &std::fs::Metadata) -> i128 {
    meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128
}

/// Lists and hashes every regular file below `dir`, sorted by path.
pub fn scan_dir(dir: &Path) -> io::Result<Vec<FileEntry>> {
    let mut out = Vec::new();
    walk(dir, dir, &mut out, &mut |p, meta| {
        Ok(FileEntry {
            path: String::new(),
            size: meta.len(),
            digest: hash_file(p)?,
            mtime_ns: mtime_ns(meta),
        })
    })?;
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

fn walk(
    root: &Path,
    dir: &Path,
    out: &mut Vec<FileEntry>,
    hash: &mut dyn FnMut(&Path, &std::fs::Metadata) -> io::Result<FileEntry>,
) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let meta = std::fs::symlink_metadata(&path)?;
        if meta.file_type().is_symlink() {
            return Err(io::Error::other(format!(
                "`{}` is a symbolic link; outputs and inputs must be regular files",
                path.display()
            )));
        }
        if meta.is_dir() {
            walk(root, &path, out, hash)?;
        } else if meta.is_file() {
            let rel = path.strip_prefix(root).unwrap_or(&path);
            let rel = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/");
            let mut e = hash(&path, &meta)?;
            e.path = rel;
            out.push(e);
        }
    }
    Ok(())
}

/// The digest of a folder listing (see module docs).
pub fn listing_digest(files: &[FileEntry]) -> String {
    let mut h = blake3::Hasher::new();
    h.update(b"efrlhf-dir-v1\n");
    for f in files {
        h.update(f.path.as_bytes());
        h.update(b"\0");
        h.update(f.size.to_string().as_bytes());
        h.update(b"\0");
        h.update(f.digest.as_bytes());
        h.update(b"\n");
    }
    h.finalize().to_hex().to_string()
}

/// A remembered (size, mtime, inode) -> digest for files outside the cache.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatEntry {
    pub size: u64,
    pub mtime_ns: i128,
    pub ino: u64,
    pub digest: String,
}

/// Digests of files named by experiments and manifests, reusing earlier
/// digests when a file's size, mtime and inode are unchanged.
#[derive(Debug, Default)]
pub struct StatCache {
    pub entries: HashMap<PathBuf, StatEntry>,
    pub dirty: bool,
}

impl StatCache {
    /// Digest of one file.
    pub fn file(&mut self, path: &Path) -> io::Result<String> {
        let meta = std::fs::metadata(path)?;
        let mtime = mtime_ns(&meta);
        if let Some(e) = self.entries.get(path)
            && e.size == meta.len()
            && e.mtime_ns == mtime
            && e.ino == meta.ino()
        {
            return Ok(e.digest.clone());
        }
        let digest = hash_file(path)?;
        // A file modified in the last two seconds may change again within the
        // same timestamp tick; do not trust its stat until it settles.
        let now_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as i128)
            .unwrap_or(0);
        if now_ns - mtime > 2_000_000_000 {
            self.entries.insert(
                path.to_path_buf(),
                StatEntry {
                    size: meta.len(),
                    mtime_ns: mtime,
                    ino: meta.ino(),
                    digest: digest.clone(),
                },
            );
            self.dirty = true;
        }
        Ok(digest)
    }

    /// Digest of a file or a folder (by content only, not by its path).
    pub fn path(&mut self, path: &Path) -> io::Result<String> {
        let meta = std::fs::metadata(path)?;
        if meta.is_dir() {
            let mut out = Vec::new();
            let mut hash = |p: &Path, m: &std::fs::Metadata| -> io::Result<FileEntry> {
                Ok(FileEntry {
                    path: String::new(),
                    size: m.len(),
                    digest: self.file(p)?,
                    mtime_ns: 0,
                })
            };
            walk(path, path, &mut out, &mut hash)?;
            out.sort_by(|a, b| a.path.cmp(&b.path));
            Ok(format!("dir:{}", listing_digest(&out)))
        } else {
            Ok(format!("file:{}", self.file(path)?))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folder_digest_depends_on_content_not_location() {
        let base = std::env::temp_dir().join(format!("efrlhf-digest-{}", std::process::id()));
        let (a, b) = (base.join("a"), base.join("b"));
        for d in [&a, &b] {
            std::fs::create_dir_all(d.join("sub")).unwrap();
            std::fs::write(d.join("x.txt"), "hello").unwrap();
            std::fs::write(d.join("sub/y.txt"), "world").unwrap();
        }
        let mut sc = StatCache::default();
        assert_eq!(sc.path(&a).unwrap(), sc.path(&b).unwrap());
        std::fs::write(b.join("sub/y.txt"), "World").unwrap();
        assert_ne!(sc.path(&a).unwrap(), sc.path(&b).unwrap());
        let listing = scan_dir(&a).unwrap();
        assert_eq!(
            listing.iter().map(|f| f.path.as_str()).collect::<Vec<_>>(),
            ["sub/y.txt", "x.txt"]
        );
        // blake3("hello"), independently known value.
        assert_eq!(
            listing[1].digest,
            "ea8f163db38682925e4491c5e58d4bb3506ef8c14eb78a86e908c5624a67200f"
        );
        std::fs::remove_dir_all(&base).unwrap();
    }
}
