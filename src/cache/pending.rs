//! The commit protocol of one computation. A run claims a key (its lock,
//! then a second look-up: another process may have finished it meanwhile),
//! gets a [`Pending`] entry with a fresh scratch folder, and ends it one of
//! two ways: [`Pending::commit`], the only way a success is recorded (the
//! output becomes an artifact, then the run record is written), or
//! [`Pending::fail`], which records the failure and keeps the log. Dropping
//! a `Pending` (a panic, a kill) records nothing; the next run clears its
//! scratch folder. Errors are returned, never dropped: cleanup that fails
//! after a commit comes back as a warning, since the result is safe.

use std::path::{Path, PathBuf};

use super::{Cache, FailureRecord, KeyComponents, KeyLock, RunRecord, StageKey, now_unix};
use crate::dsl::Metrics;
use crate::error::{Diag, io_error};

/// What claiming a key found.
pub enum Claim<'c> {
    /// Another run stored it since the plan was made.
    Stored(Box<RunRecord>),
    /// This run computes it.
    Pending(Box<Pending<'c>>),
}

/// A computation in progress: holds the key's lock and its scratch folder.
pub struct Pending<'c> {
    cache: &'c Cache,
    key: StageKey,
    /// The experiment and stage id the result is recorded under.
    experiment: String,
    stage_id: String,
    scratch: PathBuf,
    lock: KeyLock,
}

/// What a successful computation reports, besides its output folder.
pub struct Outcome {
    pub components: KeyComponents,
    pub metrics: Metrics,
    pub seconds: f64,
    /// When the result was computed (Unix seconds): `None` for now; a
    /// result pulled from a remote keeps its own.
    pub finished_at: Option<u64>,
}

/// A recorded success.
pub struct Committed {
    pub record: RunRecord,
    /// Cleanup that did not happen (the result is stored regardless).
    pub warnings: Vec<String>,
}

/// A recorded failure: the message and where its log is kept.
#[derive(Debug, Clone)]
pub struct Failed {
    pub message: String,
    pub log: Option<PathBuf>,
}

impl Cache {
    /// Takes `key`'s lock (calling `on_wait` first when another process holds
    /// it), then, unless `recompute`, looks the key up again. `owner` is the
    /// (experiment, stage id) the result or failure is recorded under.
    /// `on_wait` is told who holds the key.
    pub fn claim(
        &self,
        key: &str,
        owner: (&str, &str),
        recompute: bool,
        on_wait: impl FnOnce(&str),
    ) -> Result<Claim<'_>, Diag> {
        let lock = match self.try_lock_key(key)? {
            Some(l) => l,
            None => self.lock_key(key, on_wait)?,
        };
        if !recompute && let Some(rec) = self.lookup(key)? {
            return Ok(Claim::Stored(Box::new(rec)));
        }
        let scratch = self.scratch(key)?;
        let log = scratch.join("log.txt");
        std::fs::write(&log, "").map_err(|e| io_error("cannot create the log", &log, e))?;
        Ok(Claim::Pending(Box::new(Pending {
            cache: self,
            key: key.to_string(),
            experiment: owner.0.to_string(),
            stage_id: owner.1.to_string(),
            scratch,
            lock,
        })))
    }

    /// The stored run of `key`, if its artifact is intact (a damaged one counts as absent).
    pub fn lookup(&self, key: &str) -> Result<Option<RunRecord>, Diag> {
        let idx = self.index()?;
        let Some(rec) = idx.run(key)? else {
            return Ok(None);
        };
        match idx.artifact(&rec.output)? {
            Some(art) if self.check_artifact(&art, false).is_empty() => Ok(Some(rec)),
            _ => Ok(None),
        }
    }
}

impl Pending<'_> {
    /// The key being computed.
    pub fn key(&self) -> &str {
        &self.key
    }
    /// The scratch folder (the stage description goes here).
    pub fn scratch(&self) -> &Path {
        &self.scratch
    }
    /// The empty folder the stage writes its result into.
    pub fn out(&self) -> PathBuf {
        self.scratch.join("out")
    }
    /// The stage's log while it runs.
    pub fn log(&self) -> PathBuf {
        self.scratch.join("log.txt")
    }
    /// Names the cluster job computing the key in its lease (for waiters).
    pub fn name_job(&self, job: &str) {
        self.lock.lease().name_job(job);
    }
    /// The holder this claim took the key over from: one on another host
    /// that stopped renewing its lease (a dead process on this host is not news).
    pub fn took_over(&self) -> Option<&super::Owner> {
        self.lock
            .lease()
            .took_over
            .as_ref()
            .filter(|o| o.host != super::host_name())
    }
    /// Where the stage keeps checkpoints to resume from.
    pub fn checkpoint_dir(&self) -> PathBuf {
        self.cache.checkpoint_dir(&self.key)
    }

    /// Empties the output folder and the log again (a pull that was refused
    /// part-way), so the stage computes into a clean folder.
    pub fn reset(&self) -> Result<(), Diag> {
        let out = self.out();
        if out.exists() {
            super::remove_tree(&out).map_err(|e| io_error("cannot empty", &out, e))?;
        }
        std::fs::create_dir_all(&out).map_err(|e| io_error("cannot create", &out, e))?;
        let log = self.log();
        std::fs::write(&log, "").map_err(|e| io_error("cannot create the log", &log, e))
    }

    /// Gives the claim up without recording anything (a pull that found
    /// nothing to use): the scratch folder goes, the lock is released.
    pub fn abandon(self) {
        let _ = self.cache.discard_scratch(&self.scratch);
    }

    /// Stores the output as an artifact and records the run. On an error the
    /// failure is recorded instead.
    pub fn commit(self, outcome: Outcome) -> Result<Committed, Failed> {
        let art = match self.cache.commit_output(&self.out()) {
            Ok(a) => a,
            Err(d) => return Err(self.fail(d.to_string())),
        };
        let mut warnings = Vec::new();
        if self.lock.lease().lost() {
            warnings.push(
                "another run took this key's lease for abandoned while it was computed (was this process paused for longer than EFRLHF_LEASE_TTL?); the result is stored all the same".to_string(),
            );
        }
        let final_log = self.cache.log_path(&self.key, false);
        if let Err(e) = std::fs::rename(self.log(), &final_log) {
            warnings.push(format!("the log was not kept: {e}"));
        }
        let record = RunRecord {
            key: self.key.clone(),
            components: outcome.components,
            output: art.digest.clone(),
            metrics: outcome.metrics,
            seconds: outcome.seconds,
            finished_at: outcome.finished_at.unwrap_or_else(now_unix),
            experiment: self.experiment.clone(),
            stage_id: self.stage_id.clone(),
        };
        // The record file first: the index can always be rebuilt from it.
        let recorded = self
            .cache
            .write_record(&record, &art)
            .and_then(|_| self.cache.index())
            .and_then(|idx| {
                idx.put_artifact(&art)?;
                idx.put_run(&record)?;
                idx.set_latest(&record.experiment, &record.stage_id, &self.key)?;
                idx.clear_failure(&record.experiment, &record.stage_id)?;
                idx.flush()
            });
        if let Err(d) = recorded {
            return Err(Failed {
                message: d.to_string(),
                log: Some(final_log),
            });
        }
        for dir in [self.scratch.clone(), self.checkpoint_dir()] {
            if dir.exists()
                && let Err(e) = self.cache.discard_scratch(&dir)
            {
                warnings.push(format!("cannot remove `{}`: {e}", dir.display()));
            }
        }
        Ok(Committed { record, warnings })
    }

    /// Records a failure of this key; its log is kept under `logs/`.
    pub fn fail(self, message: String) -> Failed {
        let final_log = self.cache.log_path(&self.key, true);
        let log = std::fs::rename(self.log(), &final_log)
            .ok()
            .map(|_| final_log);
        let record = FailureRecord {
            key: self.key.clone(),
            experiment: self.experiment.clone(),
            stage_id: self.stage_id.clone(),
            finished_at: now_unix(),
            message: message.clone(),
            log: log.clone(),
        };
        let recorded = self.cache.index().and_then(|idx| {
            idx.put_failure(&record)?;
            idx.flush()
        });
        let message = match recorded {
            Ok(()) => message,
            Err(d) => format!("{message}\n  (the failure could not be recorded: {d})"),
        };
        Failed { message, log }
    }
}
