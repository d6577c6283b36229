//! One stage, fully resolved: a [`StageSpec`] says everything needed to
//! compute it (the program or built-in, parameters, input folders by role,
//! where the output, log, memo and checkpoints go), so the computation can
//! run in a thread of `efrlhf run` or, under another executor, as
//! `efrlhf exec-stage SPEC` on another machine that shares the cache's
//! filesystem. The worker only writes the output folder, the log and its
//! `result.json`; the coordinator commits the result and writes the index.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::plan::Plan;
use super::subprocess::run_program;
use crate::cache::{Cache, Pending};
use crate::dsl::{Exec, Manifest, Metrics};

/// The spec's format; a worker refuses another.
pub const SPEC_FORMAT: u32 = 1;

/// An input folder as a stage sees it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InputDir {
    /// The upstream's declared name (the name in the key).
    pub stage: String,
    pub dir: PathBuf,
    pub role: Option<String>,
}

/// What computes the stage.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum SpecExec {
    Builtin {
        name: String,
        /// The source identity the coordinator's build has for it.
        source: String,
    },
    Program {
        program: PathBuf,
        args: Vec<String>,
    },
}

/// A stage, resolved for a worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageSpec {
    pub format: u32,
    pub key: String,
    pub experiment: String,
    pub stage: String,
    pub kind: String,
    pub exec: SpecExec,
    /// Parameters with `path`s made absolute.
    pub params: serde_json::Value,
    pub inputs: Vec<InputDir>,
    /// Inputs as built-ins take them: `{"role": {"stage", "path"}, "many": [...]}`.
    pub inputs_by_role: serde_json::Value,
    pub seed: i64,
    pub backend: Option<String>,
    /// Where relative paths of programs start.
    pub experiment_dir: PathBuf,
    pub scratch: PathBuf,
    pub out: PathBuf,
    pub log: PathBuf,
    pub memo_dir: PathBuf,
    pub checkpoint_dir: PathBuf,
    /// The cache the result goes to (the coordinator's; workers only write files in it).
    pub cache_root: PathBuf,
    /// Computed on a cluster node under a `gpu` key: the node must have a
    /// real GPU (never the CPU, or a software renderer). Set by the Slurm executor.
    #[serde(default)]
    pub require_gpu: bool,
}

impl StageSpec {
    /// The spec of plan node `n` for the computation `pending` holds.
    pub fn new(
        plan: &Plan,
        cache: &Cache,
        n: usize,
        pending: &Pending<'_>,
        backend: Option<&str>,
        inputs: Vec<InputDir>,
    ) -> Result<StageSpec, String> {
        let node = &plan.pipeline.nodes[n];
        let exec = match &node.kind.exec {
            Exec::Program { program, args, .. } => SpecExec::Program {
                program: program.clone(),
                args: args.clone(),
            },
            Exec::Builtin { name } => SpecExec::Builtin {
                name: name.clone(),
                source: builtin_source(name)?,
            },
        };
        Ok(StageSpec {
            format: SPEC_FORMAT,
            key: pending.key().to_string(),
            experiment: plan.experiment_name().to_string(),
            stage: node.id.clone(),
            kind: node.kind.name.clone(),
            exec,
            params: node.params_json_with(Some(&plan.pipeline.experiment.dir), &|v| {
                plan.hub.local_path(n, v)
            }),
            inputs_by_role: inputs_by_role(&node.kind, &inputs),
            inputs,
            seed: node.seed,
            backend: backend.map(str::to_string),
            experiment_dir: plan.pipeline.experiment.dir.clone(),
            scratch: pending.scratch().to_path_buf(),
            out: pending.out(),
            log: pending.log(),
            memo_dir: cache.root().join("memo").join(&node.kind.name),
            checkpoint_dir: pending.checkpoint_dir(),
            cache_root: cache.root().to_path_buf(),
            require_gpu: false,
        })
    }
}

/// The source identity of a built-in kind in this build.
fn builtin_source(name: &str) -> Result<String, String> {
    crate::stages::builtins::builtin(name)
        .and_then(|b| b.identity())
        .map(|id| id.digest.to_string())
        .ok_or_else(|| format!("no built-in stage `{name}` in this build"))
}

/// Runs the stage's program or built-in into its output folder; its metrics.
pub fn execute(spec: &StageSpec) -> Result<Metrics, String> {
    match &spec.exec {
        SpecExec::Program { program, args } => {
            let spec_path = spec.scratch.join("stage.json");
            let text = serde_json::to_vec_pretty(&stage_json(spec)).map_err(|e| e.to_string())?;
            std::fs::write(&spec_path, text)
                .map_err(|e| format!("cannot write stage description: {e}"))?;
            run_program(program, args, &spec.experiment_dir, &spec_path, &spec.log)?;
            read_metrics(&spec.out)
        }
        SpecExec::Builtin { name, source } => {
            let b = crate::stages::builtins::builtin(name)
                .ok_or_else(|| format!("no built-in stage `{name}` in this build"))?;
            if spec.require_gpu {
                check_gpu()?;
            }
            let here = builtin_source(name)?;
            if &here != source {
                return Err(format!(
                    "this efrlhf binary ({}) is not the coordinator's build: built-in `{name}` has source identity {} here and {} there; give the nodes the same binary (`binary` in the executor config)",
                    std::env::current_exe().unwrap_or_default().display(),
                    &here[..here.len().min(16)],
                    &source[..source.len().min(16)]
                ));
            }
            run_builtin(spec, b)
        }
    }
}

/// A stage that asked for GPUs fails here, loudly, on a node without a real one.
fn check_gpu() -> Result<(), String> {
    let host = host_name();
    match crate::ml::gpu() {
        Ok(g) if !g.software => Ok(()),
        Ok(g) => Err(format!(
            "this stage asked for a GPU (`resources gpus=...`), but node {host} has only a software renderer ({}): is the GPU's Vulkan driver (for NVIDIA, its ICD file) installed there?",
            g.adapter
        )),
        Err(e) => Err(format!(
            "this stage asked for a GPU (`resources gpus=...`), but node {host} has none that efrlhf can use: {e}"
        )),
    }
}

pub use crate::cache::host_name;

/// Runs a built-in kind in this process; a panic fails the stage, not the run.
fn run_builtin(spec: &StageSpec, b: &crate::stages::builtins::Builtin) -> Result<Metrics, String> {
    let mut logf = std::fs::File::options()
        .create(true)
        .append(true)
        .open(&spec.log)
        .map_err(|e| format!("cannot open log: {e}"))?;
    let mut ctx = crate::stages::kind::StageContext {
        stage_id: &spec.stage,
        output: &spec.out,
        seed: spec.seed,
        backend: spec.backend.as_deref(),
        memo_dir: &spec.memo_dir,
        checkpoint_dir: &spec.checkpoint_dir,
        log: &mut logf,
    };
    let (params, inputs) = (spec.params.clone(), spec.inputs_by_role.clone());
    let metrics = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        b.stage.run_json(params, inputs, &mut ctx)
    }))
    .unwrap_or_else(|p| {
        let what = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        Err(format!("internal error (a bug, please report it): {what}"))
    })?;
    // Built-ins return metrics; store them like external stages do.
    let json = serde_json::to_vec_pretty(&metrics).map_err(|e| e.to_string())?;
    std::fs::write(spec.out.join("metrics.json"), json)
        .map_err(|e| format!("cannot write metrics.json: {e}"))?;
    Ok(metrics)
}

/// `{"role": {"stage", "path"}, "many-role": [...], "optional-role": null}`.
fn inputs_by_role(kind: &Manifest, inputs: &[InputDir]) -> serde_json::Value {
    let mut obj = serde_json::Map::new();
    for r in &kind.roles {
        let empty = if r.is_many() {
            serde_json::Value::Array(Vec::new())
        } else {
            serde_json::Value::Null
        };
        obj.insert(r.name.clone(), empty);
    }
    for i in inputs {
        let Some(role) = &i.role else { continue };
        let entry = serde_json::json!({"stage": i.stage, "path": i.dir});
        match obj.get_mut(role) {
            Some(serde_json::Value::Array(list)) => list.push(entry),
            Some(slot) => *slot = entry,
            None => {}
        }
    }
    serde_json::Value::Object(obj)
}

/// Reads `metrics.json` if the stage wrote one: a flat object of numbers.
fn read_metrics(out: &Path) -> Result<Metrics, String> {
    let p = out.join("metrics.json");
    if !p.exists() {
        return Ok(Metrics::new());
    }
    let text = std::fs::read_to_string(&p).map_err(|e| format!("cannot read metrics.json: {e}"))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("metrics.json is not valid JSON: {e}"))?;
    let obj = v
        .as_object()
        .ok_or("metrics.json must be a JSON object of numbers")?;
    let mut m = Metrics::new();
    for (k, v) in obj {
        let x = v.as_f64().ok_or_else(|| format!("metrics.json: value of `{k}` is not a number (metrics are a flat object of numbers)"))?;
        m.insert(k.clone(), x);
    }
    Ok(m)
}

/// The description an external program reads from `$EFRLHF_STAGE`.
fn stage_json(spec: &StageSpec) -> serde_json::Value {
    let inputs: Vec<serde_json::Value> = spec
        .inputs
        .iter()
        .map(|i| match &i.role {
            Some(role) => serde_json::json!({"stage": i.stage, "path": i.dir, "role": role}),
            None => serde_json::json!({"stage": i.stage, "path": i.dir}),
        })
        .collect();
    serde_json::json!({
        "stage": spec.stage,
        "kind": spec.kind,
        "params": spec.params,
        "inputs": inputs,
        "output": spec.out,
        "seed": spec.seed,
        "backend": spec.backend,
        "experiment": spec.experiment,
        "checkpoint": spec.checkpoint_dir,
    })
}

/// What a worker leaves in the scratch folder when it is done (`result.json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum WorkerResult {
    Ok { metrics: Metrics, seconds: f64 },
    Failed { error: String, seconds: f64 },
}

/// Where a spec's worker writes its result.
pub fn result_path(spec_path: &Path) -> PathBuf {
    spec_path.with_file_name("result.json")
}

/// `efrlhf exec-stage SPEC`: computes the stage and writes `result.json`
/// (write, fsync, rename: it appears whole, after the output). The exit code:
/// 0 computed, 1 the stage failed, 3 the spec cannot be read.
pub fn exec_stage(spec_path: &Path) -> i32 {
    let spec: StageSpec = match std::fs::read(spec_path)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    {
        Ok(s) => s,
        Err(e) => {
            let _ = write_result(
                spec_path,
                &WorkerResult::Failed {
                    error: format!("cannot read the stage spec {}: {e}", spec_path.display()),
                    seconds: 0.0,
                },
            );
            return 3;
        }
    };
    let started = std::time::Instant::now();
    let result = if spec.format != SPEC_FORMAT {
        Err(format!(
            "stage spec format {} (this efrlhf reads {SPEC_FORMAT})",
            spec.format
        ))
    } else {
        execute_attempt(&spec)
    };
    let seconds = started.elapsed().as_secs_f64();
    if matches!(result, Err(ref e) if e == ANOTHER_ATTEMPT_FINISHED) {
        return 0; // Its result is the stage's; this attempt adds nothing.
    }
    let (result, code) = match result {
        Ok(metrics) => (WorkerResult::Ok { metrics, seconds }, 0),
        Err(error) => (WorkerResult::Failed { error, seconds }, 1),
    };
    match write_result(spec_path, &result) {
        Ok(()) => code,
        Err(_) => 3,
    }
}

const ANOTHER_ATTEMPT_FINISHED: &str = "another attempt of this stage finished first";

/// Computes the stage in a folder of this attempt's own
/// (`attempt-<job>.<restart>/`), then moves its output into place: an
/// attempt Slurm requeued, or a resubmission, never writes into the folder
/// of an earlier one that may still be running on a node cut off from the
/// controller, and only the first to finish supplies the output.
fn execute_attempt(spec: &StageSpec) -> Result<Metrics, String> {
    let name = attempt_name();
    let dir = spec.scratch.join(&name);
    let _ = crate::cache::remove_tree(&dir);
    append_log(spec, &format!("efrlhf: {name} on {}\n", host_name()));
    let attempt = StageSpec {
        out: dir.join("out"),
        scratch: dir.clone(),
        ..spec.clone()
    };
    std::fs::create_dir_all(&attempt.out)
        .map_err(|e| format!("cannot create {}: {e}", attempt.out.display()))?;
    let metrics = execute(&attempt)?;
    // Onto the coordinator's empty folder; a filled one means another attempt won.
    match std::fs::rename(&attempt.out, &spec.out) {
        Ok(()) => Ok(metrics),
        Err(_) if std::fs::read_dir(&spec.out).is_ok_and(|mut d| d.next().is_some()) => {
            Err(ANOTHER_ATTEMPT_FINISHED.into())
        }
        Err(e) => Err(format!(
            "cannot move the output into {}: {e}",
            spec.out.display()
        )),
    }
}

/// `attempt-<job>.<restart>` under Slurm, `attempt-<host>.<pid>` elsewhere.
fn attempt_name() -> String {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    match var("SLURM_JOB_ID") {
        Some(job) => format!(
            "attempt-{job}.{}",
            var("SLURM_RESTART_COUNT").unwrap_or_else(|| "0".into())
        ),
        None => format!("attempt-{}.{}", host_name(), std::process::id()),
    }
}

/// Adds `text` to the stage's log (a log that cannot be written loses only the line).
pub fn append_log(spec: &StageSpec, text: &str) {
    use std::io::Write;
    if let Ok(mut f) = std::fs::File::options()
        .append(true)
        .create(true)
        .open(&spec.log)
    {
        let _ = f.write_all(text.as_bytes());
    }
}

fn write_result(spec_path: &Path, result: &WorkerResult) -> std::io::Result<()> {
    let bytes = serde_json::to_vec_pretty(result).unwrap_or_default();
    crate::cache::write_durably(&result_path(spec_path), &bytes)
}

/// A worker's result, once it is there.
pub fn read_result(spec_path: &Path) -> Option<Result<WorkerResult, String>> {
    let bytes = std::fs::read(result_path(spec_path)).ok()?;
    Some(serde_json::from_slice(&bytes).map_err(|e| format!("result.json is not readable: {e}")))
}
