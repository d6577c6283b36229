//! Cluster jobs that hold a key: `locks/<key>.job`, written by a coordinator
//! once it has submitted the job computing `key` and removed once the result
//! is committed or the stage has failed. A coordinator that was killed
//! leaves it behind, so the next run can adopt the job (wait for it rather
//! than submit again, or take the result it left) instead of computing the
//! key twice, and scratch cleaning leaves the job's folder alone. Written
//! whole and renamed, so a reader never sees half of one.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A submitted job and where it writes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    /// The scheduler's job id.
    pub job: String,
    /// The attempt's scratch folder (its `spec.json`, `out/` and, at the end, `result.json`).
    pub scratch: PathBuf,
    /// The coordinator that submitted it.
    pub host: String,
    pub pid: u32,
    /// Unix seconds.
    pub since: u64,
}

fn path(root: &Path, key: &str) -> PathBuf {
    root.join("locks").join(format!("{key}.job"))
}

/// The job that holds `key`, if a coordinator recorded one.
pub fn read(root: &Path, key: &str) -> Option<JobRecord> {
    let bytes = std::fs::read(path(root, key)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Records that `rec.job` computes `key`.
pub fn write(root: &Path, key: &str, rec: &JobRecord) -> std::io::Result<()> {
    std::fs::create_dir_all(root.join("locks"))?;
    super::write_durably(
        &path(root, key),
        &serde_json::to_vec_pretty(rec).unwrap_or_default(),
    )
}

/// The key is no longer held by a job.
pub fn remove(root: &Path, key: &str) {
    let _ = std::fs::remove_file(path(root, key));
}

/// Scratch folders that recorded jobs write into (kept by scratch cleaning).
pub fn scratch_in_use(root: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(root.join("locks")) else {
        return Vec::new();
    };
    rd.flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".job"))
        .filter_map(|e| std::fs::read(e.path()).ok())
        .filter_map(|b| serde_json::from_slice::<JobRecord>(&b).ok())
        .map(|r| r.scratch)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_protect_their_scratch() {
        let root = std::env::temp_dir().join(format!("efrlhf-jobs-{}", std::process::id()));
        let rec = JobRecord {
            job: "42".into(),
            scratch: root.join("tmp/k.1.0"),
            host: "login1".into(),
            pid: 7,
            since: 1,
        };
        assert_eq!(read(&root, "k"), None);
        write(&root, "k", &rec).unwrap();
        assert_eq!(read(&root, "k"), Some(rec.clone()));
        assert_eq!(scratch_in_use(&root), std::slice::from_ref(&rec.scratch));
        remove(&root, "k");
        assert_eq!(read(&root, "k"), None);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
