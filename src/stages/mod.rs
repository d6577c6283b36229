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

/// Every built-in kind. Kinds arrive with the data, training and evaluation stages.
pub static BUILTINS: &[Builtin] = &[];

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
