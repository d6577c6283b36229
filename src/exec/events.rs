//! What a run reports: [`Event`]s, sent to an [`EventSink`] from the main
//! thread only, and [`RunEvent`], their JSON form (`run --json`, one object
//! per line). How events are shown is the command line's business.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::cache::RunRecord;
use crate::dsl::Metrics;

use super::plan::Plan;
use super::run::RunSummary;

/// One thing that happened to a stage.
#[derive(Debug, Clone)]
pub enum Event {
    Start {
        node: usize,
        log: PathBuf,
        /// A cluster job: its id and the node it runs on.
        job: Option<(String, String)>,
    },
    /// Submitted to the cluster as this job; waiting in its queue.
    Queued {
        node: usize,
        job: String,
    },
    /// Another process is computing the same key; this run waits for it.
    Waiting {
        node: usize,
        /// Who computes it ("Slurm job 12 of the run with pid 345 on login1").
        holder: String,
    },
    Cached {
        node: usize,
        record: RunRecord,
        by_other_run: bool,
    },
    Done {
        node: usize,
        record: RunRecord,
    },
    /// The remote holds the result: `bytes` are being downloaded.
    Pulling {
        node: usize,
        bytes: u64,
    },
    /// Taken from the remote (checked and stored) instead of computed.
    Pulled {
        node: usize,
        record: RunRecord,
        bytes: u64,
        seconds: f64,
    },
    /// A computed result was uploaded to the remote (`run --push`).
    Pushed {
        node: usize,
        objects: usize,
        bytes: u64,
    },
    Failed {
        node: usize,
        seconds: f64,
        message: String,
        log: Option<PathBuf>,
    },
    Skipped {
        node: usize,
        because: String,
    },
    /// Something that did not fail the stage but deserves a look.
    Warning {
        node: usize,
        message: String,
    },
    /// The run was stopped while this stage ran; nothing of it was recorded.
    Interrupted {
        node: usize,
    },
}

/// What a run's downloads from the Hub report, before any stage starts.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event")]
pub enum DownloadEvent {
    /// The files and bytes to come.
    #[serde(rename = "download-start")]
    Start { files: usize, bytes: u64 },
    /// A file starts; `resumed_from` bytes were already there from an earlier try.
    #[serde(rename = "download-file")]
    File {
        repo: String,
        file: String,
        size: u64,
        resumed_from: u64,
    },
    /// Bytes so far of all files, and the speed over the last moments.
    #[serde(rename = "download-progress")]
    Progress {
        bytes: u64,
        total: u64,
        bytes_per_second: f64,
    },
    /// Another process (efrlhf or Python) is downloading the same file.
    #[serde(rename = "download-waiting")]
    Waiting { repo: String, file: String },
    #[serde(rename = "download-done")]
    Done {
        files: usize,
        bytes: u64,
        seconds: f64,
        bytes_per_second: f64,
    },
}

/// Where a run's events go.
pub trait EventSink {
    /// A download from the Hub made progress.
    fn download(&mut self, _ev: &DownloadEvent) {}
    /// One event, as it happens.
    fn event(&mut self, plan: &Plan, ev: &Event);
    /// Called a few times a second while stages run.
    fn tick(&mut self) {}
    /// Something about the run as a whole (waiting for the cache, ...).
    fn note(&mut self, _text: &str) {}
}

/// The JSON form of an event (`run --json`): tagged by `event`.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum RunEvent<'a> {
    StageStart {
        stage: &'a str,
        kind: &'a str,
        /// The Slurm job, when the stage runs as one.
        #[serde(skip_serializing_if = "Option::is_none")]
        job: Option<&'a str>,
        /// The node that job runs on.
        #[serde(skip_serializing_if = "Option::is_none")]
        host: Option<&'a str>,
    },
    StageQueued {
        stage: &'a str,
        job: &'a str,
    },
    StageWaiting {
        stage: &'a str,
        holder: &'a str,
    },
    StageCached {
        stage: &'a str,
        key: &'a str,
        metrics: &'a Metrics,
        by_other_run: bool,
    },
    StageDone {
        stage: &'a str,
        key: &'a str,
        seconds: f64,
        metrics: &'a Metrics,
    },
    StagePulling {
        stage: &'a str,
        bytes: u64,
    },
    StagePulled {
        stage: &'a str,
        key: &'a str,
        metrics: &'a Metrics,
        bytes: u64,
        seconds: f64,
    },
    StagePushed {
        stage: &'a str,
        objects: usize,
        bytes: u64,
    },
    StageFailed {
        stage: &'a str,
        seconds: f64,
        error: &'a str,
        log: Option<&'a Path>,
    },
    StageSkipped {
        stage: &'a str,
        because: &'a str,
    },
    StageWarning {
        stage: &'a str,
        message: &'a str,
    },
    StageInterrupted {
        stage: &'a str,
    },
    RunDone {
        ran: usize,
        cached: usize,
        pulled: usize,
        failed: usize,
        skipped: usize,
        seconds: f64,
        /// `SIGINT` or `SIGTERM` when the run was stopped.
        #[serde(skip_serializing_if = "Option::is_none")]
        interrupted: Option<&'static str>,
    },
}

impl Event {
    /// The event's JSON form.
    pub fn json<'a>(&'a self, plan: &'a Plan) -> RunEvent<'a> {
        let id = |n: &usize| plan.pipeline.nodes[*n].id.as_str();
        match self {
            Event::Start { node, job, .. } => RunEvent::StageStart {
                stage: id(node),
                kind: &plan.pipeline.nodes[*node].kind.name,
                job: job.as_ref().map(|(j, _)| j.as_str()),
                host: job.as_ref().map(|(_, h)| h.as_str()),
            },
            Event::Queued { node, job } => RunEvent::StageQueued {
                stage: id(node),
                job,
            },
            Event::Waiting { node, holder } => RunEvent::StageWaiting {
                stage: id(node),
                holder,
            },
            Event::Cached {
                node,
                record,
                by_other_run,
            } => RunEvent::StageCached {
                stage: id(node),
                key: &record.key,
                metrics: &record.metrics,
                by_other_run: *by_other_run,
            },
            Event::Done { node, record } => RunEvent::StageDone {
                stage: id(node),
                key: &record.key,
                seconds: record.seconds,
                metrics: &record.metrics,
            },
            Event::Pulling { node, bytes } => RunEvent::StagePulling {
                stage: id(node),
                bytes: *bytes,
            },
            Event::Pulled {
                node,
                record,
                bytes,
                seconds,
            } => RunEvent::StagePulled {
                stage: id(node),
                key: &record.key,
                metrics: &record.metrics,
                bytes: *bytes,
                seconds: *seconds,
            },
            Event::Pushed {
                node,
                objects,
                bytes,
            } => RunEvent::StagePushed {
                stage: id(node),
                objects: *objects,
                bytes: *bytes,
            },
            Event::Failed {
                node,
                seconds,
                message,
                log,
            } => RunEvent::StageFailed {
                stage: id(node),
                seconds: *seconds,
                error: message,
                log: log.as_deref(),
            },
            Event::Skipped { node, because } => RunEvent::StageSkipped {
                stage: id(node),
                because,
            },
            Event::Warning { node, message } => RunEvent::StageWarning {
                stage: id(node),
                message,
            },
            Event::Interrupted { node } => RunEvent::StageInterrupted { stage: id(node) },
        }
    }
}

impl RunSummary {
    /// The final event of a run.
    pub fn json(&self) -> RunEvent<'static> {
        RunEvent::RunDone {
            ran: self.ran,
            cached: self.cached,
            pulled: self.pulled,
            failed: self.failed,
            skipped: self.skipped,
            seconds: self.seconds,
            interrupted: self.interrupted.map(signal_name),
        }
    }
}

/// `SIGINT`, `SIGTERM`, or `signal N`.
pub fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        libc::SIGHUP => "SIGHUP",
        _ => "a signal",
    }
}
