//! Tracking: each stage execution of a run, logged where researchers look
//! (TensorBoard event files, an MLflow server) besides the cache. A
//! [`Tracker`] does the logging on its own thread so a slow server never
//! holds up the run, and turns every failure into a warning: tracking never
//! fails a run or touches its results. Stored results reused by a run are not
//! logged again.

mod mlflow;
mod tensorboard;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;

use crate::dsl::{Metrics, TrackTarget};
use crate::error::Diag;
use crate::report::curves::{CURVE_FILES, read_curve};

/// One finished stage execution, as the trackers log it.
#[derive(Debug, Clone)]
pub struct StageRun {
    pub experiment: String,
    /// The stage's id (`ppo[kl-coef=0.1]` for a sweep variant).
    pub stage: String,
    pub kind: String,
    pub key: String,
    /// Every parameter (defaults filled in), `seed` and `backend`, as text.
    pub params: BTreeMap<String, String>,
    pub metrics: Metrics,
    /// The result folder in the cache.
    pub dir: PathBuf,
    /// Unix milliseconds.
    pub started_ms: u64,
    pub finished_ms: u64,
}

/// One point of a logged curve.
#[derive(Debug, Clone, PartialEq)]
pub struct Scalar {
    /// `<curve>/<field>`: `train/loss`, `validation/extra.rougeL`, `ppo/kl`, `curve/accuracy`.
    pub tag: String,
    pub step: i64,
    pub value: f64,
}

/// The curve points of a result folder, by file, field and step. A curve
/// file is any `*_curve.jsonl` or `*curve.csv` at the folder's top level.
pub fn scalars(run: &StageRun) -> Vec<Scalar> {
    let mut out = Vec::new();
    for (file, prefix) in curve_files(&run.dir) {
        let x_name = CURVE_FILES
            .iter()
            .find(|(f, _)| *f == file)
            .map_or("step", |(_, x)| *x);
        let Some(curve) = read_curve(&run.dir.join(&file), x_name) else {
            continue;
        };
        for (field, points) in curve {
            out.extend(points.into_iter().map(|(x, value)| Scalar {
                tag: format!("{prefix}/{field}"),
                step: x.round() as i64,
                value,
            }));
        }
    }
    out
}

/// The curve files in `dir`, sorted, with the tag prefix each gets.
fn curve_files(dir: &Path) -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let stem = name
                .strip_suffix(".jsonl")
                .or_else(|| name.strip_suffix(".csv"))?;
            let prefix = stem
                .strip_suffix("_curve")
                .or((stem == "curve").then_some(stem))?;
            Some((name.clone(), prefix.to_string()))
        })
        .collect();
    files.sort();
    files
}

/// The step final metrics are logged at: the last step of any curve.
pub fn final_step(scalars: &[Scalar]) -> i64 {
    scalars.iter().map(|s| s.step).max().unwrap_or(0)
}

/// A tracker's configuration, checked: where to log.
#[derive(Debug, Clone)]
enum Target {
    TensorBoard(PathBuf),
    Mlflow { uri: String, experiment: String },
}

/// Checks the targets: an MLflow server needs an `http(s)://` address (from
/// the file, `--track` or `$MLFLOW_TRACKING_URI`).
fn resolve(targets: &[TrackTarget], experiment: &str) -> Result<Vec<Target>, Diag> {
    targets
        .iter()
        .map(|t| match t {
            TrackTarget::TensorBoard { dir } => Ok(Target::TensorBoard(dir.clone())),
            TrackTarget::Mlflow { uri, experiment: e } => {
                let uri = uri
                    .clone()
                    .or_else(|| std::env::var("MLFLOW_TRACKING_URI").ok())
                    .filter(|u| !u.is_empty())
                    .ok_or_else(|| {
                        Diag::input("E-TRACKING", "MLflow tracking needs the server's address")
                            .with_help("write `mlflow uri=\"http://HOST:PORT\"` in `tracking`, pass `--track mlflow=URI`, or set MLFLOW_TRACKING_URI")
                    })?;
                if !(uri.starts_with("http://") || uri.starts_with("https://")) {
                    return Err(Diag::input(
                        "E-TRACKING",
                        format!("MLflow address `{uri}` is not an http(s) URL"),
                    )
                    .with_help("efrlhf talks to a tracking server through its REST API: start one with `mlflow server` and give its http://HOST:PORT"));
                }
                Ok(Target::Mlflow {
                    uri: uri.trim_end_matches('/').to_string(),
                    experiment: e.clone().unwrap_or_else(|| experiment.to_string()),
                })
            }
        })
        .collect()
}

/// A warning about one stage's tracking: (plan node, text).
pub type Warning = (usize, String);

/// Logs stage executions on a thread of its own.
pub struct Tracker {
    jobs: Option<mpsc::Sender<(usize, StageRun)>>,
    warnings: mpsc::Receiver<Warning>,
    worker: Option<JoinHandle<()>>,
}

impl Tracker {
    /// Starts logging to `targets`; `None` when there are none.
    pub fn start(targets: &[TrackTarget], experiment: &str) -> Result<Option<Tracker>, Diag> {
        let targets = resolve(targets, experiment)?;
        if targets.is_empty() {
            return Ok(None);
        }
        let (jobs, rx) = mpsc::channel::<(usize, StageRun)>();
        let (warn, warnings) = mpsc::channel();
        let worker = std::thread::Builder::new()
            .name("efrlhf-tracking".into())
            .spawn(move || log_all(&targets, &rx, &warn))
            .map_err(|e| Diag::env("E-TRACKING", format!("cannot start tracking: {e}")))?;
        Ok(Some(Tracker {
            jobs: Some(jobs),
            warnings,
            worker: Some(worker),
        }))
    }

    /// Queues one finished stage execution.
    pub fn submit(&self, node: usize, run: StageRun) {
        if let Some(jobs) = &self.jobs {
            // The worker only stops when this side hangs up.
            let _ = jobs.send((node, run));
        }
    }

    /// The warnings so far.
    pub fn warnings(&self) -> Vec<Warning> {
        self.warnings.try_iter().collect()
    }

    /// Waits for everything queued to be logged; the remaining warnings.
    pub fn finish(mut self) -> Vec<Warning> {
        self.jobs = None;
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
        self.warnings()
    }
}

/// The worker: logs each run to every target. A server that fails once is
/// not asked again during this run (one warning, then a count at the end).
fn log_all(
    targets: &[Target],
    rx: &mpsc::Receiver<(usize, StageRun)>,
    warn: &mpsc::Sender<Warning>,
) {
    let mut servers: Vec<Option<mlflow::Client>> = targets
        .iter()
        .map(|t| match t {
            Target::Mlflow { uri, experiment } => Some(mlflow::Client::new(uri, experiment)),
            Target::TensorBoard(_) => None,
        })
        .collect();
    let mut not_logged = vec![0usize; targets.len()];
    let mut last_node = 0;
    for (node, run) in rx {
        last_node = node;
        // Read once: every tracker logs the same curves.
        let curves = scalars(&run);
        for (i, target) in targets.iter().enumerate() {
            let failed = match (target, &mut servers[i]) {
                (Target::TensorBoard(dir), _) => tensorboard::write_run(dir, &run, &curves)
                    .err()
                    .map(|e| format!("TensorBoard: cannot write under {}: {e}", dir.display())),
                (Target::Mlflow { .. }, Some(client)) if !client.is_down() => client
                    .log(&run, &curves)
                    .err()
                    .map(|e| format!("MLflow: {e}; the rest of this run is not logged there")),
                _ => {
                    not_logged[i] += 1;
                    None
                }
            };
            if let Some(text) = failed {
                let _ = warn.send((node, format!("{text} (results are unaffected)")));
            }
        }
    }
    for (i, n) in not_logged.into_iter().enumerate() {
        if let (Target::Mlflow { uri, .. }, true) = (&targets[i], n > 0) {
            let _ = warn.send((
                last_node,
                format!("MLflow at {uri}: {n} more stage execution(s) not logged"),
            ));
        }
    }
}
