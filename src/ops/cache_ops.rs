//! `cache ls | du | verify | gc`.

use std::collections::HashSet;

use crate::cache::{ArtifactProblem, Cache, dir_size};
use crate::error::Diag;
use crate::exec::{Plan, Status};
use crate::report::{Cell, Table};

use super::{fmt_bytes, fmt_time};

/// Every recorded run, oldest first.
pub fn cache_ls(cache: &Cache) -> Result<Table, Diag> {
    let idx = cache.index()?;
    let mut runs = idx.runs()?;
    runs.sort_by(|a, b| {
        a.finished_at
            .cmp(&b.finished_at)
            .then(a.stage_id.cmp(&b.stage_id))
    });
    let mut t = Table {
        columns: [
            "key",
            "experiment",
            "stage",
            "kind",
            "size",
            "seconds",
            "finished",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
        rows: Vec::new(),
    };
    for r in runs {
        let size = idx.artifact(&r.output)?.map(|a| a.size).unwrap_or(0);
        t.rows.push(vec![
            Cell::Text(r.key[..12].to_string()),
            Cell::Text(r.experiment.clone()),
            Cell::Text(r.stage_id.clone()),
            Cell::Text(r.components.kind.clone()),
            Cell::Text(fmt_bytes(size)),
            Cell::Number((r.seconds * 100.0).round() / 100.0),
            Cell::Text(fmt_time(r.finished_at)),
        ]);
    }
    Ok(t)
}

/// Sizes of the cache's parts.
pub fn cache_du(cache: &Cache) -> Result<String, Diag> {
    let usage = cache.disk_usage();
    let (runs, artifacts) = {
        let idx = cache.index()?;
        (idx.runs()?.len(), idx.artifacts()?.len())
    };
    let total: u64 = usage.values().sum();
    let mut out = format!(
        "cache {}\n",
        crate::error::display_path(cache.root()).display()
    );
    for (part, bytes) in &usage {
        out.push_str(&format!("  {part:<10} {:>10}\n", fmt_bytes(*bytes)));
    }
    out.push_str(&format!(
        "  {:<10} {:>10}  ({runs} runs, {artifacts} artifacts)\n",
        "total",
        fmt_bytes(total)
    ));
    Ok(out)
}

/// Re-hashes every artifact. Returns one line per problem (empty when all is well).
pub fn cache_verify(cache: &Cache) -> Result<(Vec<String>, usize), Diag> {
    let idx = cache.index()?;
    let arts = idx.artifacts()?;
    let mut problems = Vec::new();
    for a in &arts {
        let dir = crate::error::display_path(&cache.artifact_dir(&a.digest));
        for p in cache.check_artifact(a, true) {
            problems.push(match p {
                ArtifactProblem::FolderMissing => {
                    format!("{}: artifact folder is missing", dir.display())
                }
                ArtifactProblem::FileMissing(f) => format!("{}/{f}: missing", dir.display()),
                ArtifactProblem::FileChanged(f) => format!(
                    "{}/{f}: content does not match its digest (corrupted or edited)",
                    dir.display()
                ),
                ArtifactProblem::FileAdded(f) => {
                    format!("{}/{f}: not part of the stored artifact", dir.display())
                }
                ArtifactProblem::NotPlain(f) => {
                    format!("{}/{f}: a link, not a plain file", dir.display())
                }
            });
        }
    }
    let known: HashSet<String> = arts.iter().map(|a| a.digest.clone()).collect();
    for r in idx.runs()? {
        if !known.contains(&r.output) {
            problems.push(format!(
                "run {} ({}): its artifact record is missing",
                &r.key[..12],
                r.stage_id
            ));
        }
    }
    Ok((problems, arts.len()))
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct GcReport {
    pub runs_removed: usize,
    pub runs_kept: usize,
    pub artifacts_removed: usize,
    pub bytes_freed: u64,
}

/// Removes every run not used by `plans` (their current keys), every artifact
/// no kept run uses, their logs, and leftovers of killed runs.
pub fn cache_gc(cache: &Cache, plans: &[Plan], dry_run: bool) -> Result<GcReport, Diag> {
    let mut keep_keys: HashSet<String> = HashSet::new();
    for plan in plans {
        for (i, st) in plan.statuses.iter().enumerate() {
            if let Status::Cached(rec) = st {
                keep_keys.insert(rec.key.clone());
            }
            if let Some(k) = &plan.keys[i] {
                keep_keys.insert(k.clone());
            }
        }
    }
    let idx = cache.index()?;
    let runs = idx.runs()?;
    let mut report = GcReport::default();
    let mut keep_outputs: HashSet<String> = HashSet::new();
    for r in &runs {
        if keep_keys.contains(&r.key) {
            report.runs_kept += 1;
            keep_outputs.insert(r.output.clone());
            continue;
        }
        report.runs_removed += 1;
        for failed in [false, true] {
            let log = cache.log_path(&r.key, failed);
            report.bytes_freed += dir_size(&log);
            if !dry_run {
                let _ = std::fs::remove_file(&log);
            }
        }
        if !dry_run {
            idx.remove_run(&r.key)?;
            cache.remove_record(&r.key);
        }
    }
    // Artifact folders: recorded or orphaned by a kill between store and record.
    let mut digests: HashSet<String> = idx.artifacts()?.into_iter().map(|a| a.digest).collect();
    if let Ok(rd) = std::fs::read_dir(cache.root().join("artifacts")) {
        digests.extend(
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned()),
        );
    }
    for d in digests {
        if keep_outputs.contains(&d) {
            continue;
        }
        report.artifacts_removed += 1;
        if dry_run {
            report.bytes_freed += dir_size(&cache.artifact_dir(&d));
        } else {
            report.bytes_freed += cache.remove_artifact(&d);
            idx.remove_artifact(&d)?;
        }
    }
    if !dry_run {
        idx.flush()?;
        drop(idx);
        report.bytes_freed += cache.clean_scratch();
    }
    Ok(report)
}
