use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use crate::cache::{
    ArtifactProblem, Cache, Change, FailureRecord, InputDigest, KEY_FORMAT, KeyComponents,
    RunRecord, StageKey, StatCache, diff,
};
use crate::dsl::{Exec, Manifest, Value};
use crate::error::{Diag, Diags, display_path};
use crate::graph::Pipeline;

use super::backend::Backend;

#[derive(Debug, Clone, Default)]
pub struct PlanOptions {
    /// Stage names or ids to recompute even when cached.
    pub force: Vec<String>,
}

/// Why a stage must be computed.
#[derive(Debug, Clone, PartialEq)]
pub enum Reason {
    /// No earlier run of this stage is recorded.
    New,
    /// Its key differs from the last run's; what changed.
    Changed(Vec<Change>),
    /// `--force`.
    Forced,
    /// The stored result was damaged; it is recomputed.
    Damaged(Vec<ArtifactProblem>),
    /// Inputs will be recomputed first; `own` lists the stage's own changes.
    Upstream {
        upstream: Vec<String>,
        own: Vec<Change>,
    },
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::New => write!(f, "never run"),
            Reason::Changed(c) if c.is_empty() => write!(f, "result no longer stored"),
            Reason::Changed(c) => write!(
                f,
                "{}",
                c.iter()
                    .map(|c| c.to_string())
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            Reason::Forced => write!(f, "forced"),
            Reason::Damaged(p) => write!(
                f,
                "stored result damaged: {}",
                p.iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            Reason::Upstream { upstream, own } => {
                let ups: Vec<String> = upstream.iter().map(|u| format!("`{u}`")).collect();
                write!(f, "input {} reruns", ups.join(", "))?;
                if !own.is_empty() {
                    write!(
                        f,
                        "; {}",
                        own.iter()
                            .map(|c| c.to_string())
                            .collect::<Vec<_>>()
                            .join("; ")
                    )?;
                }
                Ok(())
            }
        }
    }
}

#[derive(Debug, Clone)]
pub enum Status {
    Cached(Box<RunRecord>),
    Run(Reason),
}

impl Status {
    pub fn is_cached(&self) -> bool {
        matches!(self, Status::Cached(_))
    }
}

/// The key parts that do not depend on upstream results, computed once per plan.
#[derive(Debug, Clone)]
struct Prepared {
    implementation: String,
    files: BTreeMap<String, String>,
    backend: Option<String>,
}

/// A pipeline with a status for every node.
pub struct Plan {
    pub pipeline: Pipeline,
    pub backend: Backend,
    prepared: Vec<Prepared>,
    pub statuses: Vec<Status>,
    /// Keys where known now (unknown while an input must be recomputed).
    pub keys: Vec<Option<StageKey>>,
    /// The stage's last recorded run, for `explain` and `show`.
    pub previous: Vec<Option<RunRecord>>,
    /// The key the index records as this stage's latest.
    pub latest_keys: Vec<Option<StageKey>>,
    pub failures: Vec<Option<FailureRecord>>,
    pub forced: BTreeSet<usize>,
}

impl Plan {
    /// The key components of node `n` given its inputs' output digests.
    pub fn components(&self, n: usize, input_outputs: &[String]) -> KeyComponents {
        let node = &self.pipeline.nodes[n];
        let prep = &self.prepared[n];
        let params: BTreeMap<String, Value> = node
            .params
            .iter()
            .filter(|(name, _)| node.kind.param(name).is_some_and(|s| !s.ty.mentions_path()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        KeyComponents {
            format: KEY_FORMAT,
            stage: node.stage.clone(),
            kind: node.kind.name.clone(),
            kind_version: node.kind.version.clone(),
            implementation: prep.implementation.clone(),
            params,
            files: prep.files.clone(),
            inputs: node
                .inputs
                .iter()
                .zip(input_outputs)
                .map(|(&i, out)| InputDigest {
                    stage: self.pipeline.nodes[i].stage.clone(),
                    output: out.clone(),
                })
                .collect(),
            seed: node.seed,
            backend: prep.backend.clone(),
        }
    }

    pub fn experiment_name(&self) -> &str {
        &self.pipeline.experiment.name
    }

    pub fn count_cached(&self) -> usize {
        self.statuses.iter().filter(|s| s.is_cached()).count()
    }
}

/// Identity of a kind's implementation: its manifest (minus docs) and the
/// content of its local program files, or a built-in's code version.
fn implementation_digest(kind: &Manifest, stat: &mut StatCache) -> Result<String, Diag> {
    let mut h = blake3::Hasher::new();
    h.update(&kind.identity_bytes());
    if let Exec::Builtin { name } = &kind.exec {
        let version = crate::stages::builtin(name)
            .map(|b| b.code_version)
            .unwrap_or(0);
        h.update(format!("\nbuiltin-code-version:{version}").as_bytes());
    }
    let dir = kind.dir.clone().unwrap_or_default();
    let mut files: Vec<(String, &std::path::PathBuf)> = kind
        .files
        .iter()
        .map(|p| (p.strip_prefix(&dir).unwrap_or(p).display().to_string(), p))
        .collect();
    files.sort();
    for (rel, path) in files {
        let d = stat.path(path).map_err(|e| {
            Diag::env(
                "E-PROGRAM",
                format!(
                    "cannot read `{}` of plugin `{}`: {e}",
                    display_path(path).display(),
                    kind.name
                ),
            )
        })?;
        h.update(format!("\n{rel}\0{d}").as_bytes());
    }
    Ok(h.finalize().to_hex().to_string())
}

/// Computes every node's status against the cache.
pub fn plan(
    pipeline: Pipeline,
    cache: &Cache,
    backend: Backend,
    opts: &PlanOptions,
) -> Result<Plan, Diags> {
    let forced: BTreeSet<usize> = pipeline.select(&opts.force)?.into_iter().collect();
    let idx = cache.index()?;
    let mut stat = StatCache::default();
    for (p, e) in idx.stat_entries()? {
        stat.entries.insert(p, e);
    }
    stat.dirty = false;

    let exp_dir = pipeline.experiment.dir.clone();
    let mut impls: HashMap<String, String> = HashMap::new();
    let mut prepared = Vec::with_capacity(pipeline.nodes.len());
    for node in &pipeline.nodes {
        let implementation = match impls.get(&node.kind.name) {
            Some(d) => d.clone(),
            None => {
                let d = implementation_digest(&node.kind, &mut stat)?;
                impls.insert(node.kind.name.clone(), d.clone());
                d
            }
        };
        let mut files = BTreeMap::new();
        for (name, path) in node.path_params(&exp_dir) {
            let d = stat.path(&path).map_err(|e| {
                Diag::input(
                    "E-PATH",
                    format!(
                        "cannot read `{}` (parameter `{name}` of stage `{}`): {e}",
                        display_path(&path).display(),
                        node.id
                    ),
                )
                .at(&pipeline.experiment.source, node.span, "this stage")
            })?;
            files.insert(name, d);
        }
        let backend_class = node.kind.uses_backend().then(|| backend.class.to_string());
        prepared.push(Prepared {
            implementation,
            files,
            backend: backend_class,
        });
    }

    let exp_name = pipeline.experiment.name.clone();
    let n = pipeline.nodes.len();
    let mut plan = Plan {
        pipeline,
        backend,
        prepared,
        statuses: Vec::with_capacity(n),
        keys: Vec::with_capacity(n),
        previous: Vec::with_capacity(n),
        latest_keys: Vec::with_capacity(n),
        failures: Vec::with_capacity(n),
        forced,
    };
    for i in 0..n {
        let id = plan.pipeline.nodes[i].id.clone();
        let latest = idx.latest(&exp_name, &id)?;
        let previous = match &latest {
            Some(k) => idx.run(k)?,
            None => None,
        };
        let failure = idx.failure(&exp_name, &id)?;
        let inputs = plan.pipeline.nodes[i].inputs.clone();
        let outputs: Option<Vec<String>> = inputs
            .iter()
            .map(|&u| match &plan.statuses[u] {
                Status::Cached(rec) if !plan.forced.contains(&u) => Some(rec.output.clone()),
                _ => None,
            })
            .collect();
        let (status, key) = match outputs {
            Some(outs) => {
                let comps = plan.components(i, &outs);
                let key = comps.key();
                let status = if plan.forced.contains(&i) {
                    Status::Run(Reason::Forced)
                } else if let Some(rec) = idx.run(&key)? {
                    let problems = match idx.artifact(&rec.output)? {
                        Some(art) => cache.check_artifact(&art, false),
                        None => vec![ArtifactProblem::FolderMissing],
                    };
                    if problems.is_empty() {
                        Status::Cached(Box::new(rec))
                    } else {
                        Status::Run(Reason::Damaged(problems))
                    }
                } else {
                    match &previous {
                        Some(prev) => {
                            Status::Run(Reason::Changed(diff(&prev.components, &comps, true)))
                        }
                        None => Status::Run(Reason::New),
                    }
                };
                (status, Some(key))
            }
            None => {
                let upstream: Vec<String> = inputs
                    .iter()
                    .filter(|&&u| !plan.statuses[u].is_cached() || plan.forced.contains(&u))
                    .map(|&u| plan.pipeline.nodes[u].id.clone())
                    .collect();
                let placeholder = vec![String::new(); inputs.len()];
                let comps = plan.components(i, &placeholder);
                let own = previous
                    .as_ref()
                    .map(|p| diff(&p.components, &comps, false))
                    .unwrap_or_default();
                (Status::Run(Reason::Upstream { upstream, own }), None)
            }
        };
        plan.statuses.push(status);
        plan.keys.push(key);
        plan.previous.push(previous);
        plan.latest_keys.push(latest);
        plan.failures.push(failure);
    }
    if stat.dirty {
        for (p, e) in &stat.entries {
            idx.put_stat(p, e)?;
        }
        idx.flush()?;
    }
    Ok(plan)
}
