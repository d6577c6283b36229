//! Built-in stage kinds: one module per kind, each implementing [`Stage`],
//! all listed in [`BUILTINS`]. That table drives the registry (their
//! manifests live in `plugins/builtin/` and are embedded in the binary),
//! `efrlhf plugins`, and dispatch.
//!
//! A stage receives typed parameters, its inputs' folders, an empty output
//! folder and a log; it returns metrics. It never hashes, locks or touches
//! the cache: the runner does that.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::dsl::{Metrics, Value};

pub mod dataset;
pub mod eval;
pub mod featurize;
pub mod ppo;
pub mod reward;
pub mod sft;
pub mod tokenizer;

/// What a built-in stage gets to work with.
pub struct StageContext<'a> {
    pub stage_id: &'a str,
    pub params: &'a BTreeMap<String, Value>,
    /// `(input stage id, its artifact folder)`, in declared order.
    pub inputs: &'a [(String, PathBuf)],
    pub output: &'a Path,
    pub seed: i64,
    /// `cpu` or `gpu` for kinds that compute on a backend.
    pub backend: Option<&'a str>,
    /// The experiment's folder (paths in params are already absolute).
    pub experiment_dir: &'a Path,
    /// A folder that outlives runs, shared by all stages of this kind (for
    /// memoizing expensive calls such as LLM answers; not part of any result).
    pub memo_dir: &'a Path,
    /// A folder that survives a killed run of this exact stage (same key),
    /// for checkpoints to resume from; removed once the stage succeeds.
    pub checkpoint_dir: &'a Path,
    pub log: &'a mut dyn Write,
}

/// A built-in stage kind.
pub trait Stage: Sync {
    /// Computes the stage into `ctx.output`; an `Err` fails the stage with that message.
    fn run(&self, ctx: &mut StageContext<'_>) -> Result<Metrics, String>;
}

/// One built-in kind: its manifest (path shown in errors, text) and implementation.
pub struct Builtin {
    pub name: &'static str,
    pub manifest_path: &'static str,
    pub manifest: &'static str,
    /// Bump when the implementation's results change; part of every key of this kind.
    pub code_version: u32,
    pub stage: &'static dyn Stage,
}

/// Every built-in kind.
pub static BUILTINS: &[Builtin] = &[
    Builtin {
        name: "dataset",
        manifest_path: "plugins/builtin/dataset.kdl",
        manifest: include_str!("../../plugins/builtin/dataset.kdl"),
        code_version: 1,
        stage: &dataset::DatasetStage,
    },
    Builtin {
        name: "tokenizer",
        manifest_path: "plugins/builtin/tokenizer.kdl",
        manifest: include_str!("../../plugins/builtin/tokenizer.kdl"),
        code_version: 1,
        stage: &tokenizer::TokenizerStage,
    },
    Builtin {
        name: "reward-model",
        manifest_path: "plugins/builtin/reward-model.kdl",
        manifest: include_str!("../../plugins/builtin/reward-model.kdl"),
        code_version: 1,
        stage: &reward::RewardStage,
    },
    Builtin {
        name: "featurize",
        manifest_path: "plugins/builtin/featurize.kdl",
        manifest: include_str!("../../plugins/builtin/featurize.kdl"),
        code_version: 2,
        stage: &featurize::FeaturizeStage,
    },
    Builtin {
        name: "sft",
        manifest_path: "plugins/builtin/sft.kdl",
        manifest: include_str!("../../plugins/builtin/sft.kdl"),
        code_version: 1,
        stage: &sft::SftStage,
    },
    Builtin {
        name: "ppo",
        manifest_path: "plugins/builtin/ppo.kdl",
        manifest: include_str!("../../plugins/builtin/ppo.kdl"),
        code_version: 2,
        stage: &ppo::PpoStage,
    },
    Builtin {
        name: "eval",
        manifest_path: "plugins/builtin/eval.kdl",
        manifest: include_str!("../../plugins/builtin/eval.kdl"),
        code_version: 3,
        stage: &eval::EvalStage,
    },
];

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

pub fn builtin(name: &str) -> Option<&'static Builtin> {
    BUILTINS.iter().find(|b| b.name == name)
}

/// `(path, text)` of every built-in manifest, for the registry.
pub fn builtin_manifests() -> Vec<(&'static str, &'static str)> {
    BUILTINS
        .iter()
        .map(|b| (b.manifest_path, b.manifest))
        .collect()
}

/// The products of every dataset input and the tokenizer.json of a tokenizer input.
pub fn datasets_and_tokenizer(
    inputs: &[(String, PathBuf)],
) -> Result<(Vec<dataset::Product>, Option<PathBuf>), String> {
    let mut products = Vec::new();
    let mut tokenizer = None;
    for (id, dir) in inputs {
        if dir.join("products.jsonl").is_file() {
            products.extend(dataset::read_products(dir)?);
        } else if dir.join("tokenizer.json").is_file() {
            tokenizer = Some(dir.join("tokenizer.json"));
        } else {
            return Err(format!("input `{id}` is neither a dataset nor a tokenizer"));
        }
    }
    Ok((products, tokenizer))
}

// Typed access to parameters. The runner has already checked names and types
// against the manifest, so an error here means a manifest and its stage disagree.

fn param<'a>(p: &'a BTreeMap<String, Value>, name: &str) -> Result<&'a Value, String> {
    p.get(name)
        .ok_or_else(|| format!("internal: parameter `{name}` missing"))
}

pub fn param_str<'a>(p: &'a BTreeMap<String, Value>, name: &str) -> Result<&'a str, String> {
    param(p, name)?
        .as_str()
        .ok_or_else(|| format!("internal: parameter `{name}` is not a string"))
}

pub fn param_i64(p: &BTreeMap<String, Value>, name: &str) -> Result<i64, String> {
    param(p, name)?
        .as_i64()
        .ok_or_else(|| format!("internal: parameter `{name}` is not an int"))
}

pub fn param_f64(p: &BTreeMap<String, Value>, name: &str) -> Result<f64, String> {
    param(p, name)?
        .as_f64()
        .ok_or_else(|| format!("internal: parameter `{name}` is not a number"))
}

pub fn param_bool(p: &BTreeMap<String, Value>, name: &str) -> Result<bool, String> {
    param(p, name)?
        .as_bool()
        .ok_or_else(|| format!("internal: parameter `{name}` is not a bool"))
}

pub fn param_strs(p: &BTreeMap<String, Value>, name: &str) -> Result<Vec<String>, String> {
    match param(p, name)? {
        Value::List(items) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| format!("internal: `{name}` holds a non-string"))
            })
            .collect(),
        _ => Err(format!("internal: parameter `{name}` is not a list")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every built-in: its manifest parses, names this entry, binds to it, and documents every parameter.
    #[test]
    fn the_builtin_table_is_consistent() {
        let reg = crate::dsl::Registry::load(&builtin_manifests(), &[])
            .unwrap_or_else(|d| panic!("{d:?}"));
        assert_eq!(reg.names().count(), BUILTINS.len());
        for b in BUILTINS {
            let m = reg
                .get(b.name)
                .unwrap_or_else(|| panic!("manifest of `{}` names another kind", b.name));
            match &m.exec {
                crate::dsl::Exec::Builtin { name } => assert_eq!(name, b.name),
                other => panic!("`{}` does not bind to a built-in: {other:?}", b.name),
            }
            assert!(!m.doc.is_empty(), "`{}` has no doc", b.name);
            for p in &m.params {
                assert!(!p.doc.is_empty(), "`{}.{}` has no doc", b.name, p.name);
            }
        }
    }
}
