//! The content-addressed store of results: committing an output folder (its
//! files hashed, made read-only and synced, then renamed into place and the
//! folder synced, so a power loss cannot leave a renamed result with empty
//! files), checking a stored result against its record, removing one.
//!
//! A stored result holds only plain files and folders: a link, or a file
//! that is not in its record, makes it damaged, and damaged results are
//! recomputed, never reused.

use std::collections::HashSet;
use std::path::Path;

use super::digest::{self, hash_file, listing_digest, scan_dir};
use super::records::sync_dir;
use super::{ArtifactProblem, ArtifactRecord, Cache};
use crate::error::{Category, Diag, io_error};

impl Cache {
    /// Moves a finished output folder into the store. Returns its record.
    pub fn commit_output(&self, out: &Path) -> Result<ArtifactRecord, Diag> {
        let files = scan_dir(out).map_err(|e| {
            Diag::new(
                Category::StageFailed,
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
                .root()
                .join("tmp")
                .join(format!("trash-{digest}-{}", std::process::id()));
            std::fs::rename(&dest, &trash)
                .map_err(|e| io_error("cannot move damaged artifact", &dest, e))?;
            make_writable(&trash);
            let _ = std::fs::remove_dir_all(&trash);
        }
        for f in &rec.files {
            let p = out.join(&f.path);
            sync_file(&p).map_err(|e| io_error("cannot sync", &p, e))?;
            set_readonly(&p);
        }
        sync_tree(out).map_err(|e| io_error("cannot sync", out, e))?;
        if let Err(e) = std::fs::rename(out, &dest) {
            // Another process committed the same content in the meantime.
            if dest.exists() && self.check_artifact(&rec, true).is_empty() {
                make_writable(out);
                let _ = std::fs::remove_dir_all(out);
            } else {
                return Err(io_error("cannot store artifact", &dest, e));
            }
        }
        let store = self.root().join("artifacts");
        sync_dir(&store).map_err(|e| io_error("cannot sync", &store, e))?;
        Ok(rec)
    }

    /// Checks an artifact against its record. Without `full`, a file whose
    /// size and mtime are as recorded is trusted (a stat per file and a
    /// listing of the folder); with `full` every file is re-hashed.
    pub fn check_artifact(&self, rec: &ArtifactRecord, full: bool) -> Vec<ArtifactProblem> {
        let dir = self.artifact_dir(&rec.digest);
        match std::fs::symlink_metadata(&dir) {
            Ok(m) if m.file_type().is_symlink() => {
                return vec![ArtifactProblem::NotPlain(".".into())];
            }
            Ok(m) if m.is_dir() => {}
            _ => return vec![ArtifactProblem::FolderMissing],
        }
        let mut problems = Vec::new();
        for f in &rec.files {
            let p = dir.join(&f.path);
            let Ok(meta) = std::fs::symlink_metadata(&p) else {
                problems.push(ArtifactProblem::FileMissing(f.path.clone()));
                continue;
            };
            if !meta.is_file() {
                problems.push(ArtifactProblem::NotPlain(f.path.clone()));
                continue;
            }
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
        let known: HashSet<&str> = rec.files.iter().map(|f| f.path.as_str()).collect();
        let mut entries = Vec::new();
        list_entries(&dir, &dir, &mut entries);
        for (rel, plain) in entries {
            if !plain {
                problems.push(ArtifactProblem::NotPlain(rel));
            } else if !known.contains(rel.as_str()) {
                problems.push(ArtifactProblem::FileAdded(rel));
            }
        }
        problems.sort_by_key(|p| p.to_string());
        problems.dedup();
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
}

/// Every file below `dir` (relative, `/`-separated) and whether it is a
/// plain file; folders are walked, links are not followed.
fn list_entries(root: &Path, dir: &Path, out: &mut Vec<(String, bool)>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in rd.flatten() {
        let p = entry.path();
        let Ok(ft) = entry.file_type() else { continue };
        if ft.is_dir() {
            list_entries(root, &p, out);
            continue;
        }
        let rel = p
            .strip_prefix(root)
            .unwrap_or(&p)
            .components()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/");
        out.push((rel, ft.is_file()));
    }
}

fn sync_file(p: &Path) -> std::io::Result<()> {
    std::fs::File::open(p)?.sync_all()
}

/// Syncs every folder below `dir` and `dir` itself (their entries).
fn sync_tree(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)?.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            sync_tree(&entry.path())?;
        }
    }
    sync_dir(dir)
}

fn set_readonly(p: &Path) {
    if let Ok(meta) = std::fs::metadata(p) {
        let mut perm = meta.permissions();
        perm.set_readonly(true);
        // Read-only is a guard against accidents, not part of correctness: digests are.
        let _ = std::fs::set_permissions(p, perm);
    }
}

/// Gives write permission back to read-only artifact files so they can be deleted by non-root users.
/// Removes a folder and everything in it, read-only files (results) included.
pub(crate) fn remove_tree(dir: &Path) -> std::io::Result<()> {
    make_writable(dir);
    std::fs::remove_dir_all(dir)
}

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
