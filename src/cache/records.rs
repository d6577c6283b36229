//! Each committed run keeps its own record beside the index, as a plain
//! JSON file (`records/<key>.json`: the run and its artifact's file list),
//! written and synced before the index hears of it. The sled index is a
//! fast view of these files: when it is damaged or gone, [`Cache::repair`]
//! rebuilds it from them without recomputing anything.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{ArtifactRecord, Cache, RunRecord};
use crate::error::{Diag, io_error};

/// What `records/<key>.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredRecord {
    /// The run.
    pub run: RunRecord,
    /// Its artifact's files.
    pub artifact: ArtifactRecord,
}

/// What [`Cache::repair`] did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RepairReport {
    /// Runs put back into the index.
    pub runs: usize,
    /// Records whose artifact folder is gone or damaged (left out; their stages recompute).
    pub missing: usize,
    /// Record files that could not be read.
    pub unreadable: Vec<PathBuf>,
    /// Where the damaged index was moved, if it was.
    pub moved_aside: Option<PathBuf>,
}

/// Writes `bytes` to `path` durably: a temporary file, synced, renamed, and the folder synced.
pub(crate) fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default(),
        std::process::id()
    ));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    sync_dir(dir)
}

/// Makes a folder's entries (a rename into it) durable.
pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

impl Cache {
    fn records_dir(&self) -> PathBuf {
        self.root().join("records")
    }

    /// Keeps the record of a committed run (before the index is written).
    pub(crate) fn write_record(
        &self,
        run: &RunRecord,
        artifact: &ArtifactRecord,
    ) -> Result<(), Diag> {
        let dir = self.records_dir();
        std::fs::create_dir_all(&dir).map_err(|e| io_error("cannot create", &dir, e))?;
        let rec = StoredRecord {
            run: run.clone(),
            artifact: artifact.clone(),
        };
        let bytes = serde_json::to_vec(&rec)
            .map_err(|e| Diag::internal(format!("serialising a run record: {e}")))?;
        let path = dir.join(format!("{}.json", run.key));
        write_durably(&path, &bytes).map_err(|e| io_error("cannot write the run record", &path, e))
    }

    /// Removes the record of a run (`cache gc`).
    pub(crate) fn remove_record(&self, key: &str) {
        // A record without its run is skipped by `repair` (its artifact is gone too).
        let _ = std::fs::remove_file(self.records_dir().join(format!("{key}.json")));
    }

    /// Whether any result keeps its own record (a cache from before records has none).
    pub fn has_records(&self) -> bool {
        std::fs::read_dir(self.records_dir())
            .map(|mut rd| {
                rd.any(|e| e.is_ok_and(|e| e.path().extension().is_some_and(|x| x == "json")))
            })
            .unwrap_or(false)
    }

    /// Writes the record of every run the index holds (a cache from before records).
    fn backfill_records(&self, idx: &super::IndexSession) -> Result<(), Diag> {
        for run in idx.runs()? {
            if let Some(art) = idx.artifact(&run.output)? {
                self.write_record(&run, &art)?;
            }
        }
        Ok(())
    }

    /// Every readable record, and the record files that are not.
    pub fn records(&self) -> (Vec<StoredRecord>, Vec<PathBuf>) {
        let (mut ok, mut bad) = (Vec::new(), Vec::new());
        let Ok(rd) = std::fs::read_dir(self.records_dir()) else {
            return (ok, bad);
        };
        let mut paths: Vec<PathBuf> = rd
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        paths.sort();
        for p in paths {
            match std::fs::read(&p)
                .ok()
                .and_then(|b| serde_json::from_slice::<StoredRecord>(&b).ok())
            {
                Some(r) => ok.push(r),
                None => bad.push(p),
            }
        }
        (ok, bad)
    }

    /// Rebuilds the index from the records: every run whose artifact is
    /// intact, each stage's latest run, every artifact. A damaged index is
    /// moved aside first (kept for a bug report), never deleted.
    pub fn repair(&self) -> Result<RepairReport, Diag> {
        let mut report = RepairReport::default();
        let index = self.root().join("index");
        if super::IndexSession::open(self.root()).is_err() && index.exists() {
            let aside = self
                .root()
                .join(format!("index.damaged-{}", super::now_unix()));
            std::fs::rename(&index, &aside)
                .map_err(|e| io_error("cannot move the damaged index aside", &index, e))?;
            report.moved_aside = Some(aside);
        }
        let (records, unreadable) = self.records();
        report.unreadable = unreadable;
        let idx = self.index()?;
        let mut latest: std::collections::BTreeMap<(String, String), (u64, String)> =
            Default::default();
        for r in records {
            if !self.check_artifact(&r.artifact, false).is_empty() {
                report.missing += 1;
                continue;
            }
            idx.put_artifact(&r.artifact)?;
            idx.put_run(&r.run)?;
            let slot = (r.run.experiment.clone(), r.run.stage_id.clone());
            let entry = (r.run.finished_at, r.run.key.clone());
            if latest.get(&slot).is_none_or(|e| e.0 <= entry.0) {
                latest.insert(slot, entry);
            }
            report.runs += 1;
        }
        for ((exp, stage), (_, key)) in latest {
            idx.set_latest(&exp, &stage, &key)?;
        }
        idx.flush()?;
        Ok(report)
    }

    /// Repairs the index when it cannot be opened, or when it lists no run
    /// while records exist (it was deleted). Returns what was done, for a note.
    /// A cache filled before records existed gets them here, once.
    pub fn ensure_index(&self) -> Result<Option<RepairReport>, Diag> {
        if self.index_checked().is_ok() {
            return Ok(None);
        }
        let _lease = self.lease_exclusive(|| {})?;
        self.repair().map(Some)
    }

    /// A session on an index that holds the runs the records say it should:
    /// the records of an index from before them are written first; an index
    /// that cannot be opened, or is empty while records exist, is an
    /// `E-INDEX-DAMAGED` error ([`Cache::ensure_index`] repairs it). Plans
    /// open their session this way, so a run pays for no extra check.
    pub fn index_checked(&self) -> Result<super::IndexSession, Diag> {
        let damaged = |why: String| {
            Diag::env("E-INDEX-DAMAGED", why)
                .with_help("`efrlhf cache repair` rebuilds the index from the results' own records, recomputing nothing")
        };
        let idx = self.index().map_err(|e| damaged(e.message.clone()))?;
        let has_runs = idx.has_runs().map_err(|e| damaged(e.message.clone()))?;
        let has_records = self.has_records();
        if has_runs && !has_records {
            self.backfill_records(&idx)?;
        }
        if !has_runs && has_records {
            return Err(damaged(
                "the cache index holds no runs, but results with records exist".into(),
            ));
        }
        Ok(idx)
    }
}
