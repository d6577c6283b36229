//! The run index, in sled. This is the only file that knows about sled.
//!
//! sled lets one process open a database at a time, and runs of efrlhf may
//! overlap (two terminals, a sweep launched twice). So the index is opened
//! for short sessions only, under an exclusive lock on `index.lock`: every
//! reader and writer takes the lock, opens, works, flushes and closes.
//!
//! Trees: `runs` (key -> RunRecord), `latest` (experiment, stage id -> key),
//! `artifacts` (digest -> ArtifactRecord), `failures` (experiment, stage id ->
//! FailureRecord), `stat` (path -> StatEntry), `identities` (implementation
//! digest -> its parts, so `explain` can say which file changed). Values are JSON.

use std::fs::File;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::digest::StatEntry;
use super::{ArtifactRecord, FailureRecord, RunRecord};
use crate::error::{Diag, io_error};

pub struct IndexSession {
    db: sled::Db,
    _lock: File,
}

fn db_error(e: sled::Error, path: &Path) -> Diag {
    Diag::env("E-INDEX", format!("cache index `{}`: {e}", path.display()))
        .with_help("`efrlhf cache repair` rebuilds the index from the results' own records, recomputing nothing")
}

fn pair_key(experiment: &str, stage: &str) -> Vec<u8> {
    let mut k = experiment.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(stage.as_bytes());
    k
}

impl IndexSession {
    /// Takes the index lock (waiting for other processes) and opens the database.
    pub fn open(root: &Path) -> Result<IndexSession, Diag> {
        let lock_path = root.join("index.lock");
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| io_error("cannot open", &lock_path, e))?;
        lock.lock()
            .map_err(|e| io_error("cannot lock", &lock_path, e))?;
        let path = root.join("index");
        // sled releases its own file lock from background threads shortly after
        // a session closes, so a new session may briefly find it held: retry.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            match sled::Config::new().path(&path).flush_every_ms(None).open() {
                Ok(db) => return Ok(IndexSession { db, _lock: lock }),
                Err(sled::Error::Io(e))
                    // sled reports its held lock as an `Other` error with this text.
                    if (e.kind() == std::io::ErrorKind::WouldBlock || e.to_string().contains("could not acquire lock"))
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
                Err(e) => return Err(db_error(e, &path)),
            }
        }
    }

    fn tree(&self, name: &str) -> Result<sled::Tree, Diag> {
        self.db
            .open_tree(name)
            .map_err(|e| db_error(e, Path::new(name)))
    }

    fn get<T: DeserializeOwned>(&self, tree: &str, key: &[u8]) -> Result<Option<T>, Diag> {
        let t = self.tree(tree)?;
        match t.get(key).map_err(|e| db_error(e, Path::new(tree)))? {
            // A record that no longer parses (older format) counts as absent.
            Some(bytes) => Ok(serde_json::from_slice(&bytes).ok()),
            None => Ok(None),
        }
    }

    fn put<T: Serialize>(&self, tree: &str, key: &[u8], value: &T) -> Result<(), Diag> {
        let bytes = serde_json::to_vec(value)
            .map_err(|e| Diag::internal(format!("serialising index record: {e}")))?;
        self.tree(tree)?
            .insert(key, bytes)
            .map_err(|e| db_error(e, Path::new(tree)))?;
        Ok(())
    }

    fn remove(&self, tree: &str, key: &[u8]) -> Result<(), Diag> {
        self.tree(tree)?
            .remove(key)
            .map_err(|e| db_error(e, Path::new(tree)))?;
        Ok(())
    }

    fn all<T: DeserializeOwned>(&self, tree: &str) -> Result<Vec<(Vec<u8>, T)>, Diag> {
        let mut out = Vec::new();
        for item in self.tree(tree)?.iter() {
            let (k, v) = item.map_err(|e| db_error(e, Path::new(tree)))?;
            if let Ok(val) = serde_json::from_slice(&v) {
                out.push((k.to_vec(), val));
            }
        }
        Ok(out)
    }

    pub fn run(&self, key: &str) -> Result<Option<RunRecord>, Diag> {
        self.get("runs", key.as_bytes())
    }
    pub fn put_run(&self, rec: &RunRecord) -> Result<(), Diag> {
        self.put("runs", rec.key.as_bytes(), rec)
    }
    pub fn remove_run(&self, key: &str) -> Result<(), Diag> {
        self.remove("runs", key.as_bytes())
    }
    /// Whether any run is recorded (without reading them).
    pub fn has_runs(&self) -> Result<bool, Diag> {
        Ok(!self.tree("runs")?.is_empty())
    }
    pub fn runs(&self) -> Result<Vec<RunRecord>, Diag> {
        Ok(self.all("runs")?.into_iter().map(|(_, v)| v).collect())
    }

    pub fn latest(&self, experiment: &str, stage: &str) -> Result<Option<String>, Diag> {
        self.get("latest", &pair_key(experiment, stage))
    }
    pub fn set_latest(&self, experiment: &str, stage: &str, key: &str) -> Result<(), Diag> {
        self.put("latest", &pair_key(experiment, stage), &key)
    }

    pub fn artifact(&self, digest: &str) -> Result<Option<ArtifactRecord>, Diag> {
        self.get("artifacts", digest.as_bytes())
    }
    pub fn put_artifact(&self, rec: &ArtifactRecord) -> Result<(), Diag> {
        self.put("artifacts", rec.digest.as_bytes(), rec)
    }
    pub fn remove_artifact(&self, digest: &str) -> Result<(), Diag> {
        self.remove("artifacts", digest.as_bytes())
    }
    pub fn artifacts(&self) -> Result<Vec<ArtifactRecord>, Diag> {
        Ok(self.all("artifacts")?.into_iter().map(|(_, v)| v).collect())
    }

    pub fn failure(&self, experiment: &str, stage: &str) -> Result<Option<FailureRecord>, Diag> {
        self.get("failures", &pair_key(experiment, stage))
    }
    pub fn put_failure(&self, rec: &FailureRecord) -> Result<(), Diag> {
        self.put("failures", &pair_key(&rec.experiment, &rec.stage_id), rec)
    }
    pub fn clear_failure(&self, experiment: &str, stage: &str) -> Result<(), Diag> {
        self.remove("failures", &pair_key(experiment, stage))
    }
    pub fn stat_entries(&self) -> Result<Vec<(PathBuf, StatEntry)>, Diag> {
        Ok(self
            .all::<StatEntry>("stat")?
            .into_iter()
            .map(|(k, v)| (PathBuf::from(String::from_utf8_lossy(&k).into_owned()), v))
            .collect())
    }
    pub fn put_stat(&self, path: &Path, entry: &StatEntry) -> Result<(), Diag> {
        self.put("stat", path.to_string_lossy().as_bytes(), entry)
    }

    /// The parts (`name` -> digest or version) of a kind's implementation digest.
    pub fn identity(&self, digest: &str) -> Result<Option<Vec<(String, String)>>, Diag> {
        self.get("identities", digest.as_bytes())
    }
    pub fn put_identity(&self, digest: &str, parts: &[(String, String)]) -> Result<(), Diag> {
        self.put("identities", digest.as_bytes(), &parts)
    }

    /// Writes everything to disk; called before the session ends.
    pub fn flush(&self) -> Result<(), Diag> {
        self.db
            .flush()
            .map(|_| ())
            .map_err(|e| db_error(e, Path::new("index")))
    }
}

impl Drop for IndexSession {
    fn drop(&mut self) {
        let _ = self.db.flush();
    }
}
