//! The states of this run's jobs, from one `squeue` for all of them per
//! poll interval (however many stages wait), so the controller sees one
//! query per tick rather than one per job.

use std::collections::{BTreeSet, HashMap};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A job as `squeue` shows it; `name` empty when it is not in the queue.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobState {
    /// `PENDING`, `RUNNING`, `COMPLETED`, `TIMEOUT`, ...
    pub name: String,
    pub reason: String,
    pub node: String,
}

/// States after which the job may still run (again): requeued and
/// preempted jobs come back.
const ACTIVE: &[&str] = &[
    "PENDING",
    "CONFIGURING",
    "RUNNING",
    "COMPLETING",
    "REQUEUED",
    "REQUEUE_HOLD",
    "REQUEUE_FED",
    "RESIZING",
    "SUSPENDED",
    "SIGNALING",
    "STAGE_OUT",
    "STOPPED",
];

impl JobState {
    pub fn is_active(&self) -> bool {
        ACTIVE.contains(&self.name.as_str())
    }
    pub fn is_running(&self) -> bool {
        self.name == "RUNNING" || self.name == "COMPLETING"
    }
}

#[derive(Debug)]
pub struct Queue {
    poll: Duration,
    inner: Mutex<View>,
}

#[derive(Debug, Default)]
struct View {
    watched: BTreeSet<String>,
    states: HashMap<String, JobState>,
    refreshed: Option<Instant>,
}

impl Queue {
    pub fn new(poll: Duration) -> Queue {
        Queue {
            poll,
            inner: Mutex::new(View::default()),
        }
    }

    /// Starts or stops following a job.
    pub fn watch(&self, job: &str, on: bool) {
        if let Ok(mut v) = self.inner.lock() {
            if on {
                v.watched.insert(job.to_string());
                // A new job is asked about at the next look.
                v.refreshed = None;
            } else {
                v.watched.remove(job);
                v.states.remove(job);
            }
        }
    }

    /// The job's state, at most one poll interval old.
    pub fn state(&self, job: &str) -> JobState {
        let Ok(mut v) = self.inner.lock() else {
            return JobState::default();
        };
        let stale = v.refreshed.is_none_or(|t| t.elapsed() >= self.poll);
        if stale {
            let ids: Vec<String> = v.watched.iter().cloned().collect();
            if let Some(states) = query(&ids) {
                v.states = states;
            }
            v.refreshed = Some(Instant::now());
        }
        // Not listed: gone from the queue (the caller waits a while before believing it).
        v.states.get(job).cloned().unwrap_or_default()
    }
}

/// `squeue -h --states=all -j ID,... -o %i|%T|%r|%N`, in chunks of 100;
/// `None` when squeue itself fails (a busy controller: ask again later).
fn query(ids: &[String]) -> Option<HashMap<String, JobState>> {
    let mut out = HashMap::new();
    for chunk in ids.chunks(100) {
        let o = Command::new("squeue")
            .args(["-h", "--states=all", "-o", "%i|%T|%r|%N", "-j"])
            .arg(chunk.join(","))
            .output()
            .ok()?;
        let stderr = String::from_utf8_lossy(&o.stderr);
        // Every id unknown: squeue exits 1 with "Invalid job id specified".
        if !o.status.success() && !stderr.contains("Invalid job id") {
            return None;
        }
        out.extend(parse_squeue(&String::from_utf8_lossy(&o.stdout)));
    }
    Some(out)
}

fn parse_squeue(text: &str) -> HashMap<String, JobState> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.trim().split('|');
            let id = f.next()?.trim().to_string();
            let name = f.next()?.trim().to_string();
            let reason = f.next().unwrap_or("").trim().to_string();
            let node = f.next().unwrap_or("").trim().to_string();
            (!id.is_empty()).then_some((id, JobState { name, reason, node }))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn squeue_lines_read_into_states() {
        let s =
            parse_squeue("12|RUNNING|None|vm\n13|PENDING|Resources|\n14|TIMEOUT|TimeLimit|vm\n");
        assert!(s["12"].is_running() && s["12"].is_active());
        assert_eq!(s["12"].node, "vm");
        assert!(s["13"].is_active() && !s["13"].is_running());
        assert!(!s["14"].is_active());
        assert_eq!(s["14"].name, "TIMEOUT");
    }
}
