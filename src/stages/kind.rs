//! The seam between the runner and a built-in stage kind.
//!
//! A kind implements [`Kind`]: one serde struct of parameters (its fields are
//! the manifest's `param`s, defaults and ranges included), one serde struct
//! of inputs (one field per manifest `input` role, typed by artifact format,
//! see [`super::formats`]) and a `run` that computes the output folder. The
//! runner hands both over as JSON and the blanket [`Stage`] impl decodes them,
//! so stage code reads fields, never names. A kind never hashes, locks or
//! touches the cache: the runner does that.
//!
//! Kinds reach this module and `formats`, never each other (each kind's
//! identity is the code it reaches; see `build/identity.rs`).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use schemars::{JsonSchema, Schema};
use serde::de::DeserializeOwned;

/// What a stage reports: a flat map of numbers, stored as `metrics.json`.
pub type Metrics = BTreeMap<String, f64>;

/// What a built-in stage gets to work with besides its parameters and inputs.
pub struct StageContext<'a> {
    /// The stage's id (`b`, or `b[times=2]` for a sweep variant).
    pub stage_id: &'a str,
    /// An empty folder: everything written here is the stage's result.
    pub output: &'a Path,
    /// The stage's seed.
    pub seed: i64,
    /// `cpu` or `gpu` for kinds that compute on a backend.
    pub backend: Option<&'a str>,
    /// A folder that outlives runs, shared by all stages of this kind (for
    /// memoizing expensive calls such as LLM answers; not part of any result).
    pub memo_dir: &'a Path,
    /// A folder that survives a killed run of this exact stage (same key),
    /// for checkpoints to resume from; removed once the stage succeeds.
    pub checkpoint_dir: &'a Path,
    /// The stage's log (its last line is shown live).
    pub log: &'a mut dyn Write,
}

/// A built-in stage kind, typed.
pub trait Kind: Sync {
    /// The manifest's parameters, kebab-case, every one with its default.
    type Params: DeserializeOwned + JsonSchema + Default;
    /// The manifest's input roles, kebab-case, typed by format.
    type Inputs: DeserializeOwned + JsonSchema;

    /// Checks what the manifest cannot say (relations between parameters);
    /// runs at plan time, so a mistake is reported before anything computes.
    fn check(&self, _params: &Self::Params) -> Result<(), String> {
        Ok(())
    }

    /// Computes the stage into `ctx.output`; an `Err` fails the stage with that message.
    fn run(
        &self,
        params: &Self::Params,
        inputs: &Self::Inputs,
        ctx: &mut StageContext<'_>,
    ) -> Result<Metrics, String>;
}

/// A built-in kind as the runner sees it: parameters and inputs as JSON.
pub trait Stage: Sync {
    /// Decodes and checks the parameters (plan time).
    fn check_params(&self, params: &serde_json::Value) -> Result<(), String>;
    /// Decodes parameters and inputs, then runs.
    fn run_json(
        &self,
        params: serde_json::Value,
        inputs: serde_json::Value,
        ctx: &mut StageContext<'_>,
    ) -> Result<Metrics, String>;
    /// JSON schema of the parameters struct.
    fn params_schema(&self) -> Schema;
    /// JSON schema of the inputs struct.
    fn inputs_schema(&self) -> Schema;
}

fn decode<T: DeserializeOwned>(what: &str, v: serde_json::Value) -> Result<T, String> {
    // A mismatch here is a manifest that disagrees with its kind: the
    // manifest tests keep that from shipping.
    serde_json::from_value(v).map_err(|e| format!("internal: the {what} do not fit the kind: {e}"))
}

impl<K: Kind> Stage for K {
    fn check_params(&self, params: &serde_json::Value) -> Result<(), String> {
        self.check(&decode::<K::Params>("parameters", params.clone())?)
    }

    fn run_json(
        &self,
        params: serde_json::Value,
        inputs: serde_json::Value,
        ctx: &mut StageContext<'_>,
    ) -> Result<Metrics, String> {
        let params: K::Params = decode("parameters", params)?;
        let inputs: K::Inputs = decode("inputs", inputs)?;
        self.run(&params, &inputs, ctx)
    }

    fn params_schema(&self) -> Schema {
        schemars::schema_for!(K::Params)
    }

    fn inputs_schema(&self) -> Schema {
        schemars::schema_for!(K::Inputs)
    }
}

/// `[=====     ]`: the live display shows a stage's last log line, so
/// long-running kinds log one of these per step.
pub fn progress_bar(done: usize, total: usize) -> String {
    let width = 20;
    let filled = (done * width).checked_div(total).unwrap_or(width);
    format!(
        "[{}{}]",
        "=".repeat(filled),
        " ".repeat(width.saturating_sub(filled))
    )
}

/// `m:ss` left, from the time `done` steps took since `started`.
pub fn eta(started: std::time::Instant, done: usize, left: usize) -> String {
    let per = started.elapsed().as_secs_f64() / done.max(1) as f64;
    let secs = (per * left as f64) as u64;
    format!("{}:{:02}", secs / 60, secs % 60)
}

/// Writes `rows` as JSON lines (the curve files of training kinds).
pub fn write_jsonl<T: serde::Serialize>(path: &Path, rows: &[T]) -> Result<(), String> {
    let mut out = String::new();
    for r in rows {
        out.push_str(&serde_json::to_string(r).map_err(|e| e.to_string())?);
        out.push('\n');
    }
    std::fs::write(path, out).map_err(|e| format!("cannot write `{}`: {e}", path.display()))
}
