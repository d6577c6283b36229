//! A shared remote cache: a result computed once serves a team, a cluster
//! and CI. The keys already name everything that determines a result, so a
//! remote only stores what the local cache stores, in two namespaces (as
//! Bazel's remote cache does):
//!
//! ```text
//! cas/<d[..2]>/<d>   one file, named by its blake3 digest (immutable)
//! ac/<key>.json      a result's manifest: its run record, its file list, its log
//! ```
//!
//! Order and trust, as DVC, Bazel and Nix learned them: a push uploads the
//! files first and the manifest last, created only where none exists, so
//! the manifest is the commit point and two pushers of one key never mix
//! (the loser compares: a different result means the stage is not
//! deterministic). A pull trusts nothing by name: the manifest must hash
//! to its key, its file list to its output digest, and every file is
//! re-hashed as it arrives; a mismatch is refused and reported. Files land
//! in a claimed scratch folder and enter the cache through the same commit
//! as a computed result, so nothing partial is ever visible.

mod aws_keys;
mod folder;
mod http;
mod s3;
mod store;

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::{Deserialize, Serialize};

use super::digest::listing_digest;
use super::pending::{Committed, Pending};
use super::{ArtifactRecord, Cache, Failed, KeyComponents, Outcome, RunRecord};
use crate::dsl::{RemoteDecl, RemoteLocation};
use crate::error::Diag;
pub use store::StoreError;
use store::{ObjectStore, get_bytes};

/// The manifest format this build writes and reads.
pub const MANIFEST_FORMAT: u32 = 1;

/// What `ac/<key>.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub run: RunRecord,
    pub artifact: ArtifactRecord,
    /// The stage's log, a `cas/` object.
    pub log: Option<Blob>,
    /// The host that pushed it, and when (Unix seconds).
    pub pushed_from: String,
    pub pushed_at: u64,
}

/// A `cas/` object: its digest and size.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Blob {
    pub digest: String,
    pub size: u64,
}

/// Why a result on the remote was not used.
#[derive(Debug, Clone)]
pub enum Refused {
    /// The manifest lists an object the remote does not have (evicted, or a
    /// push from an older tool).
    Missing(String),
    /// Content that does not match its digest, or a manifest that does not
    /// describe its key: never used.
    Tampered(String),
    /// The remote could not be read.
    Store(StoreError),
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Missing(m) | Refused::Tampered(m) => f.write_str(m),
            Refused::Store(e) => write!(f, "{e}"),
        }
    }
}

impl From<StoreError> for Refused {
    fn from(e: StoreError) -> Refused {
        Refused::Store(e)
    }
}

/// Why a result was not pushed.
#[derive(Debug, Clone)]
pub enum PushError {
    /// The local result is damaged: it is never shared.
    Damaged(String),
    /// The remote's manifest of this key is refused (tampered, a newer format).
    Conflict(String),
    /// The remote could not be read or written: the rest will fail alike.
    Remote(String),
}

impl std::fmt::Display for PushError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PushError::Damaged(m) | PushError::Conflict(m) | PushError::Remote(m) => f.write_str(m),
        }
    }
}

/// What a push of one result did.
#[derive(Debug, Clone, PartialEq)]
pub enum Pushed {
    /// Uploaded its manifest and the objects the remote lacked.
    Uploaded { objects: usize, bytes: u64 },
    /// The remote had it already.
    Present,
    /// The remote holds a different result for the same key (its output digest).
    Differs { theirs: String },
}

/// What filling a claimed key from the remote came to.
pub enum Filled<'c> {
    /// Downloaded, checked and committed: `bytes` came over the wire.
    Done {
        committed: Box<Committed>,
        bytes: u64,
    },
    /// Not used; the claim is handed back (its scratch folder emptied) to compute.
    Refused(Box<Pending<'c>>, Refused),
    /// The download was fine but the commit failed (recorded as a failure).
    Failed(Failed),
}

/// A key found on the remote, and its manifest (or why it was refused).
pub type Listed = (String, Result<Manifest, Refused>);

/// A remote cache, opened.
pub struct Remote {
    decl: RemoteDecl,
    store: Box<dyn ObjectStore>,
}

fn object_name(digest: &str) -> String {
    format!("cas/{}/{digest}", &digest[..2])
}

fn manifest_name(key: &str) -> String {
    format!("ac/{key}.json")
}

/// Files move this many at a time (threads).
fn parallel_transfers(decl: &RemoteDecl) -> usize {
    match decl.location {
        RemoteLocation::Folder(_) => 4,
        _ => 8,
    }
}

impl Remote {
    /// Opens the remote `decl` names (nothing is sent yet).
    pub fn open(decl: &RemoteDecl) -> Result<Remote, Diag> {
        let store: Box<dyn ObjectStore> = match &decl.location {
            RemoteLocation::Folder(p) => Box::new(folder::FolderStore::new(p.clone())),
            RemoteLocation::Http { url } => {
                Box::new(http::HttpStore::new(url, decl.http_auth.as_ref()))
            }
            RemoteLocation::S3 { bucket, prefix } => {
                Box::new(s3::S3Store::new(decl, bucket, prefix).map_err(|why| {
                    Diag::input(
                        "E-REMOTE",
                        format!("cannot use remote {}: {why}", decl.display()),
                    )
                })?)
            }
        };
        Ok(Remote {
            decl: decl.clone(),
            store,
        })
    }

    /// Removes what killed pushes left behind (a folder remote's old temporary files).
    pub fn tidy(&self) {
        self.store.tidy();
    }

    /// The remote as messages show it (no credentials).
    pub fn shown(&self) -> String {
        self.decl.display()
    }

    /// Whether it is for pulling only.
    pub fn read_only(&self) -> bool {
        self.decl.read_only
    }

    /// A folder remote that is not there is a mistake, not an empty remote.
    pub fn check_reachable(&self) -> Result<(), Diag> {
        if let RemoteLocation::Folder(p) = &self.decl.location
            && !p.is_dir()
        {
            return Err(Diag::env(
                "E-REMOTE",
                format!("remote folder `{}` does not exist", self.shown()),
            )
            .with_help("create it (`mkdir -p`), or check that the shared filesystem is mounted"));
        }
        Ok(())
    }

    /// The remote's manifest of `key`, checked: `Ok(None)` when it has none.
    pub fn manifest(&self, key: &str) -> Result<Option<Manifest>, Refused> {
        let Some(bytes) = get_bytes(&*self.store, &manifest_name(key))? else {
            return Ok(None);
        };
        let name = manifest_name(key);
        let m: Manifest = serde_json::from_slice(&bytes).map_err(|e| {
            Refused::Tampered(format!("`{name}` on the remote is not a manifest: {e}"))
        })?;
        if m.format != MANIFEST_FORMAT {
            return Err(Refused::Tampered(format!(
                "`{name}` has manifest format {} (this efrlhf reads {MANIFEST_FORMAT}): update efrlhf",
                m.format
            )));
        }
        check_manifest(key, &m).map_err(|why| {
            Refused::Tampered(format!("`{name}` on the remote was refused: {why}"))
        })?;
        Ok(Some(m))
    }

    /// Every manifest on the remote (`None` where it cannot list), each
    /// checked against the key it is stored under.
    pub fn manifests(&self) -> Result<Option<Vec<Listed>>, StoreError> {
        let Some(names) = self.store.list("ac/")? else {
            return Ok(None);
        };
        let keys: Vec<String> = names
            .iter()
            .filter_map(|n| n.strip_prefix("ac/")?.strip_suffix(".json"))
            .map(str::to_string)
            .collect();
        Ok(Some(
            keys.into_iter()
                .map(|k| {
                    let m = self.manifest(&k).and_then(|m| {
                        m.ok_or_else(|| {
                            Refused::Missing(format!("`{}` vanished", manifest_name(&k)))
                        })
                    });
                    (k, m)
                })
                .collect(),
        ))
    }

    /// Uploads a stored result: its files the remote lacks, its log, then
    /// its manifest, created only if absent. The local files are re-hashed
    /// first: a damaged result is never shared.
    pub fn push(
        &self,
        cache: &Cache,
        run: &RunRecord,
        art: &ArtifactRecord,
    ) -> Result<Pushed, PushError> {
        let name = manifest_name(&run.key);
        if let Some(theirs) = self.existing(&run.key)? {
            return Ok(compare(run, theirs));
        }
        let problems = cache.check_artifact(art, true);
        if !problems.is_empty() {
            let list: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
            return Err(PushError::Damaged(format!(
                "the stored result is damaged ({}), so it was not pushed: `efrlhf cache verify` names the files, and a rerun recomputes it",
                list.join("; ")
            )));
        }
        let dir = cache.artifact_dir(&art.digest);
        let files: Vec<(String, std::path::PathBuf, u64)> = art
            .files
            .iter()
            .map(|f| (f.digest.clone(), dir.join(&f.path), f.size))
            .collect();
        let (mut objects, mut bytes) = self.upload(&files).map_err(PushError::Remote)?;
        let log = self
            .push_log(cache, &run.key, &mut objects, &mut bytes)
            .map_err(PushError::Remote)?;
        let manifest = Manifest {
            format: MANIFEST_FORMAT,
            run: run.clone(),
            artifact: art.clone(),
            log,
            pushed_from: super::host_name(),
            pushed_at: super::now_unix(),
        };
        let json =
            serde_json::to_vec_pretty(&manifest).map_err(|e| PushError::Remote(e.to_string()))?;
        let created = self.store.create(&name, &json);
        if created.map_err(|e| PushError::Remote(write_error(e)))? {
            return Ok(Pushed::Uploaded { objects, bytes });
        }
        // Another pusher won the race: say whether it pushed the same result.
        match self.existing(&run.key)? {
            Some(theirs) => Ok(compare(run, theirs)),
            None => Err(PushError::Remote(format!(
                "`{name}` could not be created, yet is not there"
            ))),
        }
    }

    /// The remote's manifest of `key` for a push: a damaged one is an error.
    fn existing(&self, key: &str) -> Result<Option<Manifest>, PushError> {
        self.manifest(key).map_err(|r| match r {
            Refused::Store(e) => PushError::Remote(e.message),
            other => PushError::Conflict(format!(
                "{other}; remove it from the remote to push this result again"
            )),
        })
    }

    /// Uploads the stage's log, if it has one, as a `cas/` object.
    fn push_log(
        &self,
        cache: &Cache,
        key: &str,
        objects: &mut usize,
        bytes: &mut u64,
    ) -> Result<Option<Blob>, String> {
        let path = cache.log_path(key, false);
        let Ok(meta) = std::fs::metadata(&path) else {
            return Ok(None);
        };
        let digest = super::digest::hash_file(&path).map_err(|e| e.to_string())?;
        let (n, b) = self.upload(&[(digest.clone(), path, meta.len())])?;
        *objects += n;
        *bytes += b;
        Ok(Some(Blob {
            digest,
            size: meta.len(),
        }))
    }

    /// Uploads the files (digest, local path, size) the remote lacks, in parallel.
    fn upload(&self, files: &[(String, std::path::PathBuf, u64)]) -> Result<(usize, u64), String> {
        let sent = std::sync::Mutex::new((0usize, 0u64));
        self.each_file(files, |(digest, path, size)| -> Result<(), String> {
            let name = object_name(digest);
            if self.store.exists(&name).map_err(write_error)? {
                return Ok(());
            }
            self.store.put_file(&name, path).map_err(write_error)?;
            if let Ok(mut s) = sent.lock() {
                s.0 += 1;
                s.1 += size;
            }
            Ok(())
        })?;
        Ok(sent.into_inner().unwrap_or_default())
    }

    /// Downloads a checked manifest's files into `out` and its log into
    /// `log`, re-hashing each as it arrives. Returns the bytes received.
    pub fn download(&self, m: &Manifest, out: &Path, log: &Path) -> Result<u64, Refused> {
        let received = std::sync::atomic::AtomicU64::new(0);
        self.each_file(&m.artifact.files, |f| -> Result<(), Refused> {
            self.fetch(&f.digest, f.size, &out.join(&f.path), &f.path)?;
            received.fetch_add(f.size, Ordering::Relaxed);
            Ok(())
        })?;
        if let Some(b) = &m.log {
            // A log that cannot be had is not worth refusing a result for.
            if self.fetch(&b.digest, b.size, log, "the log").is_err() {
                let _ = std::fs::write(log, "(the log of this result could not be pulled)\n");
            }
        }
        Ok(received.into_inner())
    }

    /// Runs `transfer` on every item, several at a time (the remote's
    /// number of parallel transfers); the first failure stops the rest.
    fn each_file<T: Sync, E: Send>(
        &self,
        items: &[T],
        transfer: impl Fn(&T) -> Result<(), E> + Sync,
    ) -> Result<(), E> {
        let next = AtomicUsize::new(0);
        let failure = std::sync::Mutex::new(None::<E>);
        let work = || {
            while let Some(item) = items.get(next.fetch_add(1, Ordering::Relaxed)) {
                if failure.lock().map(|f| f.is_some()).unwrap_or(true) {
                    return;
                }
                if let Err(e) = transfer(item)
                    && let Ok(mut slot) = failure.lock()
                {
                    slot.get_or_insert(e);
                }
            }
        };
        std::thread::scope(|s| {
            for _ in 0..parallel_transfers(&self.decl).min(items.len()) {
                s.spawn(work);
            }
        });
        match failure.into_inner().ok().flatten() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// One object into `dest`, checked against its digest and size.
    fn fetch(&self, digest: &str, size: u64, dest: &Path, shown: &str) -> Result<(), Refused> {
        let io = |e: std::io::Error| {
            Refused::Store(StoreError::new(format!(
                "cannot write `{}`: {e}",
                dest.display()
            )))
        };
        if let Some(dir) = dest.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let file = std::fs::File::create(dest).map_err(io)?;
        let mut w = Hashing {
            inner: std::io::BufWriter::with_capacity(1 << 20, file),
            hasher: blake3::Hasher::new(),
            len: 0,
        };
        let name = object_name(digest);
        if !self.store.get(&name, &mut w)? {
            return Err(Refused::Missing(format!(
                "the remote lists `{name}` (`{shown}`) but does not have it"
            )));
        }
        w.inner.flush().map_err(io)?;
        let got = w.hasher.finalize().to_hex().to_string();
        if got != digest || w.len != size {
            return Err(Refused::Tampered(format!(
                "`{name}` (`{shown}`) on the remote does not match its digest ({} bytes, blake3 {}...): refused",
                w.len,
                &got[..12]
            )));
        }
        Ok(())
    }

    /// Fills a claimed key from the remote's checked manifest: downloads
    /// into the claim's scratch folder, then commits as a computation
    /// would, with the remote's metrics and times and `components` (the
    /// key's own). A refusal hands the claim back, emptied.
    pub fn fill<'c>(
        &self,
        pending: Pending<'c>,
        m: &Manifest,
        components: KeyComponents,
    ) -> Filled<'c> {
        let bytes = match self.download(m, &pending.out(), &pending.log()) {
            Ok(b) => b,
            Err(r) => {
                return match pending.reset() {
                    Ok(()) => Filled::Refused(Box::new(pending), r),
                    Err(d) => Filled::Failed(pending.fail(d.to_string())),
                };
            }
        };
        let outcome = Outcome {
            components,
            metrics: m.run.metrics.clone(),
            seconds: m.run.seconds,
            finished_at: Some(m.run.finished_at),
        };
        match pending.commit(outcome) {
            Ok(committed) => Filled::Done {
                committed: Box::new(committed),
                bytes,
            },
            Err(f) => Filled::Failed(f),
        }
    }
}

/// What [`Remote::pull`] did with one key.
#[derive(Debug, Clone, PartialEq)]
pub enum PullOutcome {
    /// Downloaded, checked and stored: bytes received.
    Fetched(u64),
    /// Stored already (another run got it meanwhile).
    Stored,
    /// The remote has no result for the key.
    Absent,
}

impl Remote {
    /// Brings `key`'s result into `cache` under its claim, recorded under
    /// `owner` (experiment, stage id). `components` default to the manifest's
    /// (checked to hash to the key).
    pub fn pull(
        &self,
        cache: &Cache,
        key: &str,
        owner: (&str, &str),
        components: Option<KeyComponents>,
    ) -> Result<PullOutcome, String> {
        let pending = match cache
            .claim(key, owner, false, |_| {})
            .map_err(|d| d.to_string())?
        {
            super::Claim::Stored(_) => return Ok(PullOutcome::Stored),
            super::Claim::Pending(p) => *p,
        };
        let m = match self.manifest(key) {
            Ok(Some(m)) => m,
            Ok(None) => {
                pending.abandon();
                return Ok(PullOutcome::Absent);
            }
            Err(r) => {
                pending.abandon();
                return Err(r.to_string());
            }
        };
        let components = components.unwrap_or_else(|| m.run.components.clone());
        match self.fill(pending, &m, components) {
            Filled::Done { bytes, .. } => Ok(PullOutcome::Fetched(bytes)),
            Filled::Refused(pending, r) => {
                pending.abandon();
                Err(r.to_string())
            }
            Filled::Failed(f) => Err(f.message),
        }
    }
}

/// A failed write, with a hint where the remote refused it.
fn write_error(e: StoreError) -> String {
    if e.denied {
        format!(
            "{}: the remote refused the write (is it read-only for these credentials?)",
            e.message
        )
    } else {
        e.message
    }
}

/// Pushing `run` where `theirs` exists.
fn compare(run: &RunRecord, theirs: Manifest) -> Pushed {
    if theirs.run.output == run.output {
        Pushed::Present
    } else {
        Pushed::Differs {
            theirs: theirs.run.output,
        }
    }
}

/// Whether a manifest describes `key` and its files are what it says.
fn check_manifest(key: &str, m: &Manifest) -> Result<(), String> {
    if m.run.key != key || m.run.components.key() != key {
        return Err("its stage description does not hash to its key".into());
    }
    if m.run.output != m.artifact.digest || listing_digest(&m.artifact.files) != m.artifact.digest {
        return Err("its file list does not hash to its output digest".into());
    }
    let digests = m
        .artifact
        .files
        .iter()
        .map(|f| &f.digest)
        .chain(m.log.iter().map(|b| &b.digest));
    for d in digests {
        if d.len() != 64
            || !d
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(format!("`{d}` is not a blake3 digest"));
        }
    }
    for f in &m.artifact.files {
        let plain = !f.path.is_empty()
            && !f.path.starts_with('/')
            && f.path
                .split('/')
                .all(|c| !c.is_empty() && c != "." && c != "..");
        if !plain {
            return Err(format!("`{}` is not a path inside a result", f.path));
        }
    }
    Ok(())
}

/// A writer that hashes and counts what passes through.
struct Hashing<W: Write> {
    inner: W,
    hasher: blake3::Hasher,
    len: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::FileEntry;

    /// A manifest of one result whose files are `paths` (each 3 bytes of "abc").
    fn manifest(paths: &[&str]) -> Manifest {
        let components: KeyComponents = serde_json::from_value(serde_json::json!({
            "format": crate::cache::KEY_FORMAT, "stage": "s", "kind": "k",
            "kind_version": "1", "implementation": "i", "params": {}, "files": {},
            "inputs": [], "seed": 7, "backend": null
        }))
        .unwrap();
        let digest = blake3::hash(b"abc").to_hex().to_string();
        let files: Vec<FileEntry> = paths
            .iter()
            .map(|p| FileEntry {
                path: p.to_string(),
                size: 3,
                digest: digest.clone(),
                mtime_ns: 0,
            })
            .collect();
        let output = listing_digest(&files);
        Manifest {
            format: MANIFEST_FORMAT,
            run: RunRecord {
                key: components.key(),
                components,
                output: output.clone(),
                metrics: Default::default(),
                seconds: 1.0,
                finished_at: 0,
                experiment: "e".into(),
                stage_id: "s".into(),
            },
            artifact: ArtifactRecord {
                digest: output,
                size: 3 * paths.len() as u64,
                files,
            },
            log: None,
            pushed_from: "h".into(),
            pushed_at: 0,
        }
    }

    #[test]
    fn a_manifest_must_describe_its_key_and_its_files() {
        let m = manifest(&["model/weights.bin", "metrics.json"]);
        let key = m.run.key.clone();
        assert_eq!(check_manifest(&key, &m), Ok(()));
        // Stored under another key.
        let other = "0".repeat(64);
        assert!(
            check_manifest(&other, &m)
                .unwrap_err()
                .contains("does not hash to its key")
        );
        // A description changed after the key was computed.
        let mut changed = m.clone();
        changed.run.components.seed = 8;
        assert!(
            check_manifest(&key, &changed)
                .unwrap_err()
                .contains("its key")
        );
        // A file list that is not the output's.
        let mut swapped = m.clone();
        swapped.artifact.files[0].size = 4;
        assert!(
            check_manifest(&key, &swapped)
                .unwrap_err()
                .contains("output digest")
        );
    }

    #[test]
    fn a_manifest_cannot_name_files_outside_its_result() {
        for bad in ["../escape", "/etc/passwd", "a/../../b", "a//b", "./a"] {
            let m = manifest(&[bad]);
            let why = check_manifest(&m.run.key, &m).unwrap_err();
            assert!(why.contains("not a path inside"), "{bad}: {why}");
        }
    }

    #[test]
    fn a_folder_remote_creates_a_name_once() {
        let root = std::env::temp_dir().join(format!("efrlhf-folder-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        let store = folder::FolderStore::new(root.clone());
        assert!(store.create("ac/k.json", b"first").unwrap());
        assert!(!store.create("ac/k.json", b"second").unwrap());
        assert_eq!(
            get_bytes(&store, "ac/k.json").unwrap(),
            Some(b"first".to_vec())
        );
        assert_eq!(get_bytes(&store, "ac/none.json").unwrap(), None);
        let src = root.join("src.bin");
        std::fs::write(&src, b"xyz").unwrap();
        store.put_file("cas/ab/abc", &src).unwrap();
        assert!(store.exists("cas/ab/abc").unwrap());
        assert_eq!(
            store.list("").unwrap(),
            Some(vec![
                "ac/k.json".to_string(),
                "cas/ab/abc".into(),
                "src.bin".into()
            ])
        );
        // Nothing of the writes is left in the remote's tmp/.
        assert_eq!(std::fs::read_dir(root.join("tmp")).unwrap().count(), 0);
        let _ = std::fs::remove_dir_all(&root);
    }
}
