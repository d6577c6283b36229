//! How a run looks: a live progress display on a terminal, plain lines
//! otherwise, or JSON lines (`--json`, the serde form of each event).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::dsl::Metrics;
use crate::exec::{DownloadEvent, Event, EventSink, Plan, RunEvent, RunSummary, Status};
use crate::ops::RunEta;
use crate::report::fmt_duration;

/// How events are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Progress bars on a terminal.
    Live,
    /// One line per event on stderr.
    Plain,
    /// One JSON object per event on stdout.
    Json,
}

impl Mode {
    pub fn detect(json: bool) -> Mode {
        if json {
            Mode::Json
        } else if std::io::stderr().is_terminal() {
            Mode::Live
        } else {
            Mode::Plain
        }
    }
}

/// Shows a run's events.
pub struct Reporter {
    mode: Mode,
    multi: Option<MultiProgress>,
    total: Option<ProgressBar>,
    running: BTreeMap<usize, (Option<ProgressBar>, PathBuf, Instant)>,
    /// The stages this run still has to compute, in topological order.
    left: BTreeSet<usize>,
    eta: RunEta,
    names: Vec<String>,
    /// The bar of a download from the Hub, while one runs.
    download: Option<ProgressBar>,
}

fn fmt_metrics(m: &Metrics) -> String {
    m.iter()
        .take(6)
        .map(|(k, v)| format!("{k}={}", crate::report::fmt_number(*v)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The last `n` lines of a log file.
fn log_tail(path: &Path, n: usize) -> Vec<String> {
    let text = std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

impl Reporter {
    /// A reporter for a run of the `selected` stages of `plan` on `jobs` workers.
    pub fn new(mode: Mode, plan: &Plan, selected: &[usize], jobs: usize) -> Reporter {
        let total = selected.len();
        let (multi, bar) = if mode == Mode::Live {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
            let bar = multi.add(ProgressBar::new(total as u64));
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix:>10.cyan.bold} [{bar:30}] {pos}/{len} stages  {elapsed}  {wide_msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar.set_prefix("Running");
            (Some(multi), Some(bar))
        } else {
            (None, None)
        };
        Reporter {
            mode,
            multi,
            total: bar,
            running: BTreeMap::new(),
            left: selected
                .iter()
                .copied()
                .filter(|&n| matches!(plan.statuses[n], Status::Run(_)))
                .collect(),
            eta: RunEta::new(plan, jobs),
            names: plan.pipeline.nodes.iter().map(|n| n.id.clone()).collect(),
            download: None,
        }
    }

    /// Seconds until the run is done, when every stage left has a history.
    fn eta_seconds(&self) -> Option<f64> {
        let left: Vec<(usize, f64)> = self
            .left
            .iter()
            .map(|&n| {
                let spent = self
                    .running
                    .get(&n)
                    .map_or(0.0, |(_, _, t)| t.elapsed().as_secs_f64());
                (n, spent)
            })
            .collect();
        self.eta.remaining(&left)
    }

    /// The run-level line: which stages run now, and the ETA.
    fn progress_message(&self) -> String {
        let running: Vec<&str> = self
            .running
            .keys()
            .map(|&n| self.names[n].as_str())
            .collect();
        let mut msg = match running.len() {
            0 => String::new(),
            1..=3 => format!("running {}", running.join(", ")),
            k => format!("running {} and {} more", running[..2].join(", "), k - 2),
        };
        if let Some(secs) = self.eta_seconds().filter(|_| !self.left.is_empty()) {
            let sep = if msg.is_empty() { "" } else { "  " };
            msg = format!("{msg}{sep}ETA {}", fmt_duration(secs));
        }
        msg
    }

    /// A stage is no longer to be computed (finished, failed, cached, skipped).
    fn settled(&mut self, n: usize) {
        self.left.remove(&n);
        self.finish_spinner(n);
        if let Some(t) = &self.total {
            t.inc(1);
            t.set_message(self.progress_message());
        }
    }

    fn line(&self, verb: &str, rest: &str) {
        let text = format!("{verb:>10} {rest}");
        match &self.multi {
            Some(m) => {
                let _ = m.println(text);
            }
            None => {
                let _ = writeln!(std::io::stderr(), "{text}");
            }
        }
    }

    fn json(&self, value: &RunEvent<'_>) {
        let mut out = std::io::stdout().lock();
        // A closed stdout (`| head`) must not stop the run.
        if let Ok(text) = serde_json::to_string(value) {
            let _ = writeln!(out, "{text}");
            let _ = out.flush();
        }
    }

    pub fn note(&self, text: &str) {
        if self.mode != Mode::Json {
            self.line("Note", text);
        }
    }

    fn show(&mut self, plan: &Plan, ev: &Event) {
        let node = |n: usize| &plan.pipeline.nodes[n];
        match self.mode {
            Mode::Json => self.json(&ev.json(plan)),
            Mode::Plain | Mode::Live => match ev {
                Event::Start { node: n, log, job } => self.started(plan, *n, log, job.as_ref()),
                Event::Queued { node: n, job } => {
                    self.line("Queued", &format!("{} as Slurm job {job}", node(*n).id))
                }
                Event::Waiting { node: n, holder } => self.line(
                    "Waiting",
                    &format!("{}: {holder} is computing it", node(*n).id),
                ),
                Event::Cached {
                    node: n,
                    by_other_run,
                    ..
                } => {
                    let how = if *by_other_run {
                        " (computed by another run)"
                    } else {
                        ""
                    };
                    self.line("Cached", &format!("{}{how}", node(*n).id));
                    self.settled(*n);
                }
                Event::Done { node: n, record } => {
                    self.line(
                        "Finished",
                        &format!(
                            "{} in {:.2}s  {}",
                            node(*n).id,
                            record.seconds,
                            fmt_metrics(&record.metrics)
                        ),
                    );
                    self.settled(*n);
                }
                Event::Pulling { node: n, bytes } => self.pulling(plan, *n, *bytes),
                Event::Pulled {
                    node: n,
                    bytes,
                    seconds,
                    ..
                } => {
                    self.line(
                        "Pulled",
                        &format!(
                            "{} from the remote ({} in {seconds:.2}s)",
                            node(*n).id,
                            crate::ops::fmt_bytes(*bytes)
                        ),
                    );
                    self.settled(*n);
                }
                Event::Pushed {
                    node: n,
                    objects,
                    bytes,
                } => self.line(
                    "Pushed",
                    &format!(
                        "{} to the remote ({objects} files, {})",
                        node(*n).id,
                        crate::ops::fmt_bytes(*bytes)
                    ),
                ),
                Event::Failed {
                    node: n,
                    seconds,
                    message,
                    log,
                } => {
                    self.line(
                        "Failed",
                        &format!("{} after {seconds:.2}s: {message}", node(*n).id),
                    );
                    if let Some(log) = log {
                        let tail = log_tail(log, 15);
                        if !tail.is_empty() {
                            self.line(
                                "",
                                &format!(
                                    "last lines of {}:",
                                    crate::error::display_path(log).display()
                                ),
                            );
                            for l in tail {
                                self.line("|", &l);
                            }
                        } else {
                            self.line(
                                "",
                                &format!(
                                    "log (empty): {}",
                                    crate::error::display_path(log).display()
                                ),
                            );
                        }
                    }
                    self.settled(*n);
                }
                Event::Skipped { node: n, because } => {
                    self.line("Skipped", &format!("{}: {because}", node(*n).id));
                    self.settled(*n);
                }
                Event::Interrupted { node: n } => {
                    self.line(
                        "Stopped",
                        &format!("{}: interrupted, nothing recorded", node(*n).id),
                    );
                    self.settled(*n);
                }
                Event::Warning { node: n, message } => {
                    self.line("Warning", &format!("{}: {message}", node(*n).id));
                }
            },
        }
    }

    /// A stage starts: a spinner on a terminal, a line otherwise; both say
    /// what it took last time and when the run should end.
    fn started(&mut self, plan: &Plan, n: usize, log: &Path, job: Option<&(String, String)>) {
        let node = &plan.pipeline.nodes[n];
        let mut label = format!("{} ({})", node.id, node.kind.name);
        if let Some((id, host)) = job {
            label = format!("{label}, job {id} on {host}");
        }
        if let Some(secs) = self.eta.of(n) {
            label = format!("{label}, {} last time", fmt_duration(secs));
        }
        // A pull that was refused hands over to the computation.
        self.finish_spinner(n);
        let spinner = self.spinner(&label);
        self.running
            .insert(n, (spinner, log.to_path_buf(), Instant::now()));
        // Live mode has the run's bar; plain lines carry the ETA themselves.
        match &self.total {
            Some(t) => t.set_message(self.progress_message()),
            None => {
                if let Some(secs) = self.eta_seconds() {
                    label = format!("{label}; run ETA {}", fmt_duration(secs));
                }
                self.line("Running", &label);
            }
        }
    }

    /// A spinner line on a terminal (`None` otherwise).
    fn spinner(&self, label: &str) -> Option<ProgressBar> {
        self.multi.as_ref().map(|m| {
            let pb = m.add(ProgressBar::new_spinner());
            pb.set_style(
                ProgressStyle::with_template(
                    "{spinner:.green} {prefix:.bold} {elapsed:>4} {wide_msg:.dim}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            pb.set_prefix(label.to_string());
            pb.enable_steady_tick(Duration::from_millis(120));
            pb
        })
    }

    /// A stage's result is being pulled from the remote.
    fn pulling(&mut self, plan: &Plan, n: usize, bytes: u64) {
        let (id, size) = (&plan.pipeline.nodes[n].id, crate::ops::fmt_bytes(bytes));
        let spinner = self.spinner(&format!("{id} (pulling {size} from the remote)"));
        self.running
            .insert(n, (spinner, std::path::PathBuf::new(), Instant::now()));
        if self.multi.is_none() {
            self.line("Pulling", &format!("{id} ({size} from the remote)"));
        }
    }

    fn finish_spinner(&mut self, n: usize) {
        if let Some((Some(pb), _, _)) = self.running.remove(&n) {
            pb.finish_and_clear();
            if let Some(m) = &self.multi {
                m.remove(&pb);
            }
        }
    }

    /// Refreshes the live display: the last line each running stage logged,
    /// and the run's line.
    fn refresh(&mut self) {
        for (pb, log, _) in self.running.values() {
            if let (Some(pb), Some(last)) = (pb, log_tail(log, 1).pop()) {
                pb.set_message(last);
            }
        }
        if let Some(t) = &self.total {
            t.set_message(self.progress_message());
        }
    }

    pub fn finish(&mut self, summary: &RunSummary) {
        if let Some(t) = self.total.take() {
            t.finish_and_clear();
        }
        match self.mode {
            Mode::Json => self.json(&summary.json()),
            _ => {
                if let Some(sig) = summary.interrupted {
                    self.interrupted(sig, summary);
                    return;
                }
                let verb = if summary.failed > 0 { "Failed" } else { "Done" };
                let pulled = match summary.pulled {
                    0 => String::new(),
                    n => format!(", {n} pulled"),
                };
                self.line(
                    verb,
                    &format!(
                        "{} stages: {} ran, {} cached{pulled}, {} failed, {} skipped in {:.2}s",
                        summary.ran
                            + summary.cached
                            + summary.pulled
                            + summary.failed
                            + summary.skipped,
                        summary.ran,
                        summary.cached,
                        summary.failed,
                        summary.skipped,
                        summary.seconds
                    ),
                );
            }
        }
    }
}

impl Reporter {
    /// What an interrupted run stopped and what it kept.
    fn interrupted(&self, sig: i32, summary: &RunSummary) {
        let kept = summary.ran + summary.cached;
        let stopped = if summary.interrupted_stages.is_empty() {
            "no stage was running".to_string()
        } else {
            format!("stopped {}", summary.interrupted_stages.join(", "))
        };
        self.line(
            "Stopped",
            &format!(
                "by {} after {:.2}s: {stopped}; {kept} finished results are stored ({} computed now); checkpoints are kept and `efrlhf run` resumes from them",
                crate::exec::signal_name(sig),
                summary.seconds,
                summary.ran
            ),
        );
    }
}

impl Reporter {
    /// A download from the Hub: a bytes bar with speed and ETA on a terminal,
    /// a line per file otherwise, the event itself under `--json`.
    fn show_download(&mut self, ev: &DownloadEvent) {
        use crate::exec::human_bytes;
        if self.mode == Mode::Json {
            self.json_value(ev);
            return;
        }
        match ev {
            DownloadEvent::Start { files, bytes } => {
                self.line(
                    "Download",
                    &format!("{files} file(s), {} from the Hub", human_bytes(*bytes)),
                );
                if let Some(m) = &self.multi {
                    let bar = m.insert(0, ProgressBar::new(*bytes));
                    bar.set_style(
                        ProgressStyle::with_template(
                            "{prefix:>10.cyan.bold} [{bar:30}] {bytes}/{total_bytes}  {bytes_per_sec}  eta {eta}  {wide_msg}",
                        )
                        .unwrap_or_else(|_| ProgressStyle::default_bar())
                        .progress_chars("=> "),
                    );
                    bar.set_prefix("Fetching");
                    self.download = Some(bar);
                }
            }
            DownloadEvent::File {
                repo,
                file,
                size,
                resumed_from,
            } => {
                let resumed = if *resumed_from > 0 && resumed_from < size {
                    format!(" (resuming at {})", human_bytes(*resumed_from))
                } else {
                    String::new()
                };
                match &self.download {
                    Some(b) => b.set_message(format!("{repo}/{file}{resumed}")),
                    None => self.line(
                        "Fetching",
                        &format!("{repo}/{file} ({}){resumed}", human_bytes(*size)),
                    ),
                }
            }
            DownloadEvent::Progress { bytes, .. } => {
                if let Some(b) = &self.download {
                    b.set_position(*bytes);
                }
            }
            DownloadEvent::Waiting { repo, file } => self.line(
                "Waiting",
                &format!("for another process downloading {repo}/{file}"),
            ),
            DownloadEvent::Done {
                files,
                bytes,
                seconds,
                bytes_per_second,
            } => {
                if let Some(b) = self.download.take() {
                    b.finish_and_clear();
                }
                self.line(
                    "Fetched",
                    &format!(
                        "{files} file(s), {} in {seconds:.1} s ({}/s)",
                        human_bytes(*bytes),
                        human_bytes(*bytes_per_second as u64)
                    ),
                );
            }
        }
    }

    fn json_value(&self, value: &impl serde::Serialize) {
        let mut out = std::io::stdout().lock();
        if let Ok(text) = serde_json::to_string(value) {
            let _ = writeln!(out, "{text}");
            let _ = out.flush();
        }
    }
}

impl EventSink for Reporter {
    fn event(&mut self, plan: &Plan, ev: &Event) {
        self.show(plan, ev);
    }
    fn download(&mut self, ev: &DownloadEvent) {
        self.show_download(ev);
    }
    fn note(&mut self, text: &str) {
        Reporter::note(self, text);
    }
    fn tick(&mut self) {
        self.refresh();
    }
}
