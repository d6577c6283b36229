//! The Slurm executor (`run --executor slurm`): each stage that is not cheap
//! enough to run on the coordinator becomes one batch job, driven through
//! Slurm's own commands (`sbatch --parsable`, `squeue`, `scancel`). The job
//! runs `efrlhf exec-stage SPEC` on a node that shares the cache's
//! filesystem; the worker writes the output folder and then `result.json`
//! (by rename), and that file, not Slurm's state, says how the stage ended.
//! Slurm's state only explains jobs that die without one (time limit,
//! memory, cancellation, a lost node), after a bounded wait for a shared
//! filesystem to show the file. The coordinator commits results and stays
//! the only writer of the index.

mod config;
mod queue;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::dsl::{Metrics, Requests};
use crate::error::Diag;

use super::spec::{StageSpec, WorkerResult, append_log, host_name, read_result};
use crate::cache::jobs;
pub use config::{GpuFlag, SlurmConfig};
use queue::{JobState, Queue};

/// What happens to a job, as the scheduler reports it.
pub enum JobEvent {
    /// Submitted: its Slurm job id.
    Queued(String),
    /// Running (the job, the node it runs on).
    Running { job: String, host: String },
    /// Something to say about the job (resubmitted, adopted): what.
    Note(String),
}

/// How often a job that was stopped from outside (time limit with a
/// checkpoint to resume from, preemption without requeue, a failed node) is
/// submitted again before the stage fails.
const MAX_RESUBMITS: usize = 3;

/// How waiting for a job ended.
enum Waited {
    Result(Result<Metrics, String>),
    /// It left the queue (or reached a final state) without a result.
    Ended(JobState),
}

/// A cluster, as this run uses it.
#[derive(Debug)]
pub struct Slurm {
    cfg: SlurmConfig,
    queue: Queue,
    /// Jobs submitted and not finished, for one `scancel` on Ctrl-C.
    active: Mutex<BTreeSet<String>>,
}

impl Slurm {
    /// Checks that Slurm's commands are here and answer.
    pub fn new(cfg: SlurmConfig) -> Result<Slurm, Diag> {
        let probe = Command::new("sinfo").args(["-h", "-o", "%P"]).output();
        match probe {
            Ok(o) if o.status.success() => {}
            Ok(o) => {
                return Err(Diag::env(
                    "E-SLURM",
                    format!(
                        "Slurm does not answer: `sinfo` says {}",
                        String::from_utf8_lossy(&o.stderr).trim()
                    ),
                )
                .with_help("run where `sinfo` works (a login node), or check SLURM_CONF"));
            }
            Err(e) => {
                return Err(Diag::env(
                    "E-SLURM",
                    format!("`--executor slurm` needs Slurm's commands: cannot run `sinfo`: {e}"),
                )
                .with_help("run on a login node of the cluster, or use `--executor local`"));
            }
        }
        Ok(Slurm {
            queue: Queue::new(cfg.poll),
            cfg,
            active: Mutex::new(BTreeSet::new()),
        })
    }

    /// Stages in flight at once, unless `--jobs` says.
    pub fn max_jobs(&self) -> usize {
        self.cfg.max_jobs
    }

    /// Whether stages of `kind` run on the coordinator.
    pub fn runs_locally(&self, kind: &str) -> bool {
        self.cfg.runs_locally(kind)
    }

    /// A stage's requests on this cluster.
    pub fn requests(&self, kind: &str, stage: &Requests) -> Requests {
        self.cfg.requests(kind, stage)
    }

    /// Submits the stage as a job and waits for its result.
    pub fn run(
        &self,
        spec: &StageSpec,
        requests: &Requests,
        events: &dyn Fn(JobEvent),
        stopped: &dyn Fn() -> bool,
    ) -> Result<Metrics, String> {
        // On a node, a `gpu` key must be computed on a real GPU.
        let spec = &StageSpec {
            require_gpu: spec.backend.as_deref() == Some("gpu"),
            ..spec.clone()
        };
        let spec_path = spec.scratch.join("spec.json");
        let text = serde_json::to_vec_pretty(spec).map_err(|e| e.to_string())?;
        std::fs::write(&spec_path, text)
            .map_err(|e| format!("cannot write {}: {e}", spec_path.display()))?;
        if let Some(adopted) = self.adopt(spec, events, stopped) {
            return adopted;
        }
        let result = self.submit_and_wait(spec, &spec_path, requests, events, stopped);
        jobs::remove(&spec.cache_root, &spec.key);
        result
    }

    /// Submits the stage (again, where that helps) until it has a result.
    fn submit_and_wait(
        &self,
        spec: &StageSpec,
        spec_path: &Path,
        requests: &Requests,
        events: &dyn Fn(JobEvent),
        stopped: &dyn Fn() -> bool,
    ) -> Result<Metrics, String> {
        let mut exclude: Vec<String> = Vec::new();
        for attempt in 0.. {
            let job = self.submit(spec, spec_path, requests, &exclude)?;
            self.record(spec, &job);
            self.track(&job, true);
            events(JobEvent::Queued(job.clone()));
            let waited = self.wait(&spec.scratch, spec_path, &job, events, stopped);
            self.track(&job, false);
            append_slurm_log(spec, &job);
            let state = match waited {
                Waited::Result(r) => return r,
                Waited::Ended(state) => state,
            };
            match resubmit_reason(spec, &job, &state) {
                Some(why) if attempt < MAX_RESUBMITS => {
                    if state.name == "NODE_FAIL" || state.name == "BOOT_FAIL" {
                        exclude.push(state.node.clone());
                    }
                    events(JobEvent::Note(why));
                }
                _ => return Err(ended_without_result(spec, &job, &state, requests)),
            }
        }
        unreachable!("the loop returns")
    }

    /// Notes in the cache that `job` computes the spec's key, so a run after
    /// this coordinator's death adopts it rather than submitting it again.
    fn record(&self, spec: &StageSpec, job: &str) {
        let rec = jobs::JobRecord {
            job: job.to_string(),
            scratch: spec.scratch.clone(),
            host: host_name(),
            pid: std::process::id(),
            since: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        };
        // Without the record a restarted run submits the stage again: slower, not wrong.
        let _ = jobs::write(&spec.cache_root, &spec.key, &rec);
    }

    /// The job an earlier coordinator (killed meanwhile) submitted for this
    /// key: its result when it left one, else the wait for it while it is in
    /// the queue. Its output then becomes this attempt's. `None` when there
    /// is no such job, or it is gone without a result (it is then forgotten).
    fn adopt(
        &self,
        spec: &StageSpec,
        events: &dyn Fn(JobEvent),
        stopped: &dyn Fn() -> bool,
    ) -> Option<Result<Metrics, String>> {
        let rec = jobs::read(&spec.cache_root, &spec.key)?;
        let old_spec = rec.scratch.join("spec.json");
        self.track(&rec.job, true);
        let active = self.queue.state(&rec.job).is_active();
        if active {
            events(JobEvent::Queued(rec.job.clone()));
            events(JobEvent::Note(format!(
                "adopted job {} of an earlier run (its coordinator stopped) instead of submitting again",
                rec.job
            )));
        }
        // Also when it looks gone: its result may still be on its way (NFS).
        let result = self.wait(&rec.scratch, &old_spec, &rec.job, events, stopped);
        self.track(&rec.job, false);
        if !active && matches!(result, Waited::Result(_)) {
            events(JobEvent::Note(format!(
                "took the result of job {} of an earlier run (its coordinator stopped)",
                rec.job
            )));
        }
        let taken = match result {
            Waited::Result(r) => Some(r.and_then(|m| take_output(&rec.scratch, spec).map(|()| m))),
            Waited::Ended(_) => None,
        };
        let _ = crate::cache::remove_tree(&rec.scratch);
        jobs::remove(&spec.cache_root, &spec.key);
        taken
    }

    fn track(&self, job: &str, on: bool) {
        if let Ok(mut a) = self.active.lock() {
            if on {
                a.insert(job.to_string());
            } else {
                a.remove(job);
            }
        }
        self.queue.watch(job, on);
    }

    /// `sbatch --parsable ... job.sh`; the job id.
    fn submit(
        &self,
        spec: &StageSpec,
        spec_path: &Path,
        requests: &Requests,
        exclude: &[String],
    ) -> Result<String, String> {
        let mut args = self.sbatch_args(spec, requests);
        let exclude: Vec<&str> = exclude
            .iter()
            .map(String::as_str)
            .filter(|n| !n.is_empty())
            .collect();
        if !exclude.is_empty() {
            args.push(format!("--exclude={}", exclude.join(",")));
        }
        let script = spec.scratch.join("job.sh");
        std::fs::write(&script, job_script(&self.cfg, spec, spec_path, &args))
            .map_err(|e| format!("cannot write {}: {e}", script.display()))?;
        let mut last = String::new();
        for attempt in 0..4u32 {
            if attempt > 0 {
                std::thread::sleep(Duration::from_millis(500 << attempt));
            }
            let out = Command::new("sbatch")
                .args(&args)
                .arg(&script)
                .output()
                .map_err(|e| format!("cannot run sbatch: {e}"))?;
            if out.status.success() {
                return parse_job_id(&String::from_utf8_lossy(&out.stdout));
            }
            last = String::from_utf8_lossy(&out.stderr).trim().to_string();
            // The controller being busy passes; a wrong partition or account does not.
            let transient = ["Socket timed out", "temporarily unavailable", "Try again"];
            if !transient.iter().any(|t| last.contains(t)) {
                break;
            }
        }
        Err(format!(
            "sbatch refused the job: {last} (the job script is {})",
            script.display()
        ))
    }

    /// The flags of a stage's job. None of them is part of its key.
    fn sbatch_args(&self, spec: &StageSpec, r: &Requests) -> Vec<String> {
        let mut a = vec![
            "--parsable".to_string(),
            format!("--job-name={}", job_name(spec)),
            format!(
                "--comment=efrlhf:key={}",
                &spec.key[..spec.key.len().min(16)]
            ),
            format!("--output={}", spec.scratch.join("slurm-%j.log").display()),
            "--open-mode=append".into(),
            // Preempted jobs come back and resume from the stage's checkpoints.
            "--requeue".into(),
            format!("--chdir={}", spec.experiment_dir.display()),
            "--export=ALL".into(),
        ];
        let mut push = |flag: &str, v: Option<String>| {
            if let Some(v) = v {
                a.push(format!("--{flag}={v}"));
            }
        };
        push("partition", self.cfg.partition.clone());
        push("account", self.cfg.account.clone());
        push("cpus-per-task", r.cpus.map(|c| c.to_string()));
        push("mem", r.mem.clone());
        push("time", r.time.clone());
        if let Some(g) = r.gpus.filter(|g| *g > 0) {
            a.push(match self.cfg.gpu_flag {
                GpuFlag::Gpus => format!("--gpus={g}"),
                GpuFlag::Gres => format!("--gres=gpu:{g}"),
            });
        }
        a.extend(self.cfg.extra.iter().cloned());
        a
    }

    /// Waits for the worker's result; explains a job that ended without one.
    fn wait(
        &self,
        scratch: &Path,
        spec_path: &Path,
        job: &str,
        events: &dyn Fn(JobEvent),
        stopped: &dyn Fn() -> bool,
    ) -> Waited {
        let mut running = false;
        let mut ended: Option<(Instant, JobState)> = None;
        loop {
            if stopped() {
                return Waited::Result(Err("interrupted".into()));
            }
            // Listing the folder makes NFS look again before the file is read.
            let _ = std::fs::read_dir(scratch).map(|d| d.count());
            let result = read_result(spec_path);
            if result.is_some() && !running {
                // Finished between two looks at the queue: it did start.
                events(JobEvent::Running {
                    job: job.to_string(),
                    host: self.queue.state(job).node,
                });
            }
            if let Some(r) = result {
                return Waited::Result(r.and_then(worker_metrics));
            }
            let state = self.queue.state(job);
            if state.is_running() && !running {
                running = true;
                events(JobEvent::Running {
                    job: job.to_string(),
                    host: state.node.clone(),
                });
            }
            if state.is_active() {
                ended = None;
            } else {
                let since = ended.get_or_insert_with(|| (Instant::now(), state.clone()));
                if since.0.elapsed() >= self.cfg.latency_wait {
                    return Waited::Ended(since.1.clone());
                }
            }
            std::thread::sleep(self.cfg.poll.min(Duration::from_millis(500)));
        }
    }

    /// Ctrl-C: one `scancel` for every job still in flight.
    pub fn cancel_all(&self) {
        let ids: Vec<String> = self
            .active
            .lock()
            .map(|a| a.iter().cloned().collect())
            .unwrap_or_default();
        for chunk in ids.chunks(100) {
            let _ = Command::new("scancel").args(chunk).output();
        }
    }
}

/// A worker's result as the stage's: its metrics, or its error.
fn worker_metrics(r: WorkerResult) -> Result<Metrics, String> {
    match r {
        WorkerResult::Ok { metrics, .. } => Ok(metrics),
        WorkerResult::Failed { error, .. } => Err(error),
    }
}

/// An adopted job's output and log become this attempt's.
fn take_output(old_scratch: &Path, spec: &StageSpec) -> Result<(), String> {
    let _ = std::fs::remove_dir(&spec.out);
    std::fs::rename(old_scratch.join("out"), &spec.out)
        .map_err(|e| format!("cannot take the adopted job's output: {e}"))?;
    if let Ok(text) = std::fs::read_to_string(old_scratch.join("log.txt")) {
        append_log(spec, &text);
    }
    for entry in std::fs::read_dir(old_scratch)
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("slurm-") {
            let _ = std::fs::rename(entry.path(), spec.scratch.join(&name));
        }
    }
    Ok(())
}

/// `sft@quickstart` (Slurm job names are plain text; no spaces or commas).
fn job_name(spec: &StageSpec) -> String {
    format!("{}@{}", spec.stage, spec.experiment)
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || "-_.@[]=".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(120)
        .collect()
}

/// The batch script: the site's setup lines, then the worker. It states how
/// it was submitted so it can be resubmitted by hand.
fn job_script(cfg: &SlurmConfig, spec: &StageSpec, spec_path: &Path, args: &[String]) -> String {
    let mut s = format!(
        "#!/bin/bash\n# efrlhf: stage {} of experiment {}, key {}\n# submitted as: sbatch {} {}\n",
        spec.stage,
        spec.experiment,
        spec.key,
        args.join(" "),
        spec.scratch.join("job.sh").display()
    );
    for line in &cfg.setup {
        s.push_str(line);
        s.push('\n');
    }
    s.push_str(&format!(
        "exec {} exec-stage {}\n",
        sh_quote(&cfg.binary.display().to_string()),
        sh_quote(&spec_path.display().to_string())
    ));
    s
}

fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// `sbatch --parsable` prints `id` or `id;cluster`.
fn parse_job_id(stdout: &str) -> Result<String, String> {
    let id = stdout.trim().split(';').next().unwrap_or("").trim();
    if !id.is_empty() && id.chars().all(|c| c.is_ascii_digit() || c == '_') {
        Ok(id.to_string())
    } else {
        Err(format!("sbatch answered {stdout:?}, not a job id"))
    }
}

/// Why a job that ended without a result is worth submitting again: it was
/// stopped from outside and the next attempt can do better (resume from the
/// stage's checkpoints after a time limit, run after a preemption, on
/// another node after a node failure). `None`: the stage fails.
fn resubmit_reason(spec: &StageSpec, job: &str, state: &JobState) -> Option<String> {
    let checkpointed =
        std::fs::read_dir(&spec.checkpoint_dir).is_ok_and(|mut d| d.next().is_some());
    match state.name.as_str() {
        "TIMEOUT" if checkpointed => Some(format!(
            "job {job} reached its time limit; submitted again, it resumes from its checkpoint"
        )),
        "PREEMPTED" => Some(format!(
            "job {job} was preempted and not requeued; submitted again"
        )),
        "NODE_FAIL" | "BOOT_FAIL" => Some(format!(
            "the node of job {job} ({}) failed; submitted again, excluding it",
            state.node
        )),
        _ => None,
    }
}

/// Why a job ended without writing its result, and what to change.
fn ended_without_result(spec: &StageSpec, job: &str, state: &JobState, r: &Requests) -> String {
    let log = spec.scratch.join(format!("slurm-{job}.log"));
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let was = |v: &Option<String>| {
        v.as_ref()
            .map(|v| format!(" (was {v})"))
            .unwrap_or_default()
    };
    let why = match state.name.as_str() {
        "TIMEOUT" | "DEADLINE" => format!(
            "Slurm stopped job {job} at its time limit{}: raise it with `resources time=\"...\"` on the stage, or `kind \"{}\" time=...` in the executor config",
            was(&r.time),
            spec.kind
        ),
        "OUT_OF_MEMORY" => oom(job, spec, r),
        _ if text.contains("exceeded memory limit") || text.contains("oom-kill") => {
            oom(job, spec, r)
        }
        "CANCELLED" => format!("job {job} was cancelled outside efrlhf (scancel?)"),
        "NODE_FAIL" | "BOOT_FAIL" => format!("the node of job {job} failed ({})", state.node),
        "" => format!("job {job} left the queue without a result: it is lost"),
        other => format!("job {job} ended {other} without a result"),
    };
    let tail: Vec<&str> = text.lines().rev().take(8).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    format!("{why}; Slurm's log {}:\n{}", log.display(), tail.join("\n"))
}

fn oom(job: &str, spec: &StageSpec, r: &Requests) -> String {
    format!(
        "job {job} ran out of memory{}: raise it with `resources mem=\"...\"` on the stage, or `kind \"{}\" mem=...` in the executor config",
        r.mem
            .as_ref()
            .map(|m| format!(" (mem was {m})"))
            .unwrap_or_default(),
        spec.kind
    )
}

/// Slurm's log of the job goes into the stage's log, which the cache keeps.
fn append_slurm_log(spec: &StageSpec, job: &str) {
    let log: PathBuf = spec.scratch.join(format!("slurm-{job}.log"));
    if let Ok(text) = std::fs::read_to_string(&log) {
        append_log(
            spec,
            &format!("\n--- Slurm job {job} ({}) ---\n{text}", log.display()),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_and_names_read_and_write_as_slurm_does() {
        assert_eq!(parse_job_id("1234\n").unwrap(), "1234");
        assert_eq!(parse_job_id("77;cluster-a\n").unwrap(), "77");
        assert!(parse_job_id("sbatch: error").is_err());
        assert_eq!(sh_quote("a'b"), "'a'\\''b'");
    }
}
