//! The plan: for every node of the pipeline, whether its result is stored
//! (`Cached`), on a shared remote (`Remote`, asked only when a remote is
//! given) or why it must be computed (`Run` with a [`Reason`]), and its
//! key where that is known before running. Planning reads the index and
//! stats files; it never writes results (it records stat entries and the
//! parts of implementation digests, so later plans and `explain` are cheap
//! and precise). `plan`, `explain`, `show` and `run` all read this one type.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use crate::cache::{
    ArtifactProblem, Cache, Change, FailureRecord, IndexSession, InputDigest, KEY_FORMAT,
    KeyComponents, RunRecord, StageKey, StatCache, diff,
};
use crate::dsl::{Exec, Manifest, Value};
use crate::error::{Diag, Diags, display_path};
use crate::graph::{Node, Pipeline};

use super::backend::Backend;
use super::hub_plan::HubPlan;
use crate::hub::HubIdentity;

/// A stage's backend class where it is not the run's (`None`: the run's).
pub type ClassOf = std::sync::Arc<dyn Fn(&Node) -> Option<&'static str> + Send + Sync>;

#[derive(Clone, Default)]
pub struct PlanOptions {
    /// Stage names or ids to recompute even when cached.
    pub force: Vec<String>,
    /// Under a cluster executor, the class of stages computed on its nodes
    /// (from the GPUs they request), not this machine's.
    pub class_of: Option<ClassOf>,
    /// A shared remote to look for results the cache lacks.
    pub remote: Option<std::sync::Arc<crate::cache::remote::Remote>>,
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
    /// `hf://` parameters whose revision could not be resolved (offline, with
    /// no earlier resolution): `(param, uri)`. Its key is known once they are.
    HubUnresolved(Vec<(String, String)>),
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
            Reason::HubUnresolved(u) => write!(
                f,
                "needs the Hub to resolve {}",
                u.iter()
                    .map(|(_, uri)| format!("`{uri}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
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

/// One reason, in the typed form `plan --json` prints: tagged by `kind`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum ReasonItem {
    /// No earlier run of this stage is recorded.
    NeverRun,
    /// `--force`.
    Forced,
    /// The last result of this stage is no longer stored (`cache gc`).
    ResultRemoved,
    /// The stored result is damaged.
    Damaged {
        problems: Vec<String>,
    },
    /// These inputs are recomputed first.
    UpstreamReruns {
        stages: Vec<String>,
    },
    KeyFormatChanged {
        from: u32,
        to: u32,
    },
    KindChanged {
        from: String,
        to: String,
    },
    KindVersionChanged {
        from: String,
        to: String,
    },
    /// `parts`: the files and crates that changed, where known.
    ImplementationChanged {
        of_kind: String,
        parts: Vec<String>,
    },
    ParamChanged {
        param: String,
        from: serde_json::Value,
        to: serde_json::Value,
    },
    /// The content of a `path` parameter changed, or it was set or unset.
    FileChanged {
        param: String,
        was_set: bool,
        is_set: bool,
    },
    /// The same `hf://` revision now resolves to another commit.
    HubRevisionMoved {
        param: String,
        repo: String,
        revision: String,
        from: String,
        to: String,
    },
    /// An `hf://` parameter names something else (or was set or unset).
    HubSourceChanged {
        param: String,
        from: Option<String>,
        to: Option<String>,
    },
    /// An `hf://` parameter could not be resolved without the network.
    HubUnresolved {
        param: String,
        uri: String,
    },
    InputCountChanged {
        from: usize,
        to: usize,
    },
    InputReplaced {
        index: usize,
        from: String,
        to: String,
    },
    /// The input's output digest changed.
    InputChanged {
        stage: String,
    },
    InputRoleChanged {
        stage: String,
        from: Option<String>,
        to: Option<String>,
    },
    SeedChanged {
        from: i64,
        to: i64,
    },
    BackendChanged {
        from: Option<String>,
        to: Option<String>,
    },
}

impl ReasonItem {
    fn of_change(c: &Change) -> ReasonItem {
        let json = |v: &Option<crate::dsl::Value>| {
            v.as_ref()
                .map(|v| v.to_json())
                .unwrap_or(serde_json::Value::Null)
        };
        match c.clone() {
            Change::Format { old, new } => ReasonItem::KeyFormatChanged { from: old, to: new },
            Change::Kind { old, new } => ReasonItem::KindChanged { from: old, to: new },
            Change::KindVersion { old, new } => {
                ReasonItem::KindVersionChanged { from: old, to: new }
            }
            Change::Implementation { kind, parts } => ReasonItem::ImplementationChanged {
                of_kind: kind,
                parts,
            },
            Change::Param { name, old, new } => ReasonItem::ParamChanged {
                param: name,
                from: json(&old),
                to: json(&new),
            },
            Change::File { name, old, new } => ReasonItem::FileChanged {
                param: name,
                was_set: old.is_some(),
                is_set: new.is_some(),
            },
            Change::HubMoved {
                param,
                repo,
                revision,
                old,
                new,
            } => ReasonItem::HubRevisionMoved {
                param,
                repo,
                revision,
                from: old,
                to: new,
            },
            Change::HubSource { param, old, new } => ReasonItem::HubSourceChanged {
                param,
                from: old,
                to: new,
            },
            Change::InputCount { old, new } => ReasonItem::InputCountChanged { from: old, to: new },
            Change::Input {
                index,
                stage,
                old_stage,
            } if stage != old_stage => ReasonItem::InputReplaced {
                index,
                from: old_stage,
                to: stage,
            },
            Change::Input { stage, .. } => ReasonItem::InputChanged { stage },
            Change::InputRole { stage, old, new } => ReasonItem::InputRoleChanged {
                stage,
                from: old,
                to: new,
            },
            Change::Seed { old, new } => ReasonItem::SeedChanged { from: old, to: new },
            Change::Backend { old, new } => ReasonItem::BackendChanged { from: old, to: new },
        }
    }
}

impl Reason {
    /// Every reason, typed.
    pub fn items(&self) -> Vec<ReasonItem> {
        let changes = |c: &[Change]| c.iter().map(ReasonItem::of_change).collect::<Vec<_>>();
        match self {
            Reason::New => vec![ReasonItem::NeverRun],
            Reason::Forced => vec![ReasonItem::Forced],
            Reason::HubUnresolved(u) => u
                .iter()
                .map(|(param, uri)| ReasonItem::HubUnresolved {
                    param: param.clone(),
                    uri: uri.clone(),
                })
                .collect(),
            Reason::Changed(c) if c.is_empty() => vec![ReasonItem::ResultRemoved],
            Reason::Changed(c) => changes(c),
            Reason::Damaged(p) => vec![ReasonItem::Damaged {
                problems: p.iter().map(|p| p.to_string()).collect(),
            }],
            Reason::Upstream { upstream, own } => {
                let mut out = vec![ReasonItem::UpstreamReruns {
                    stages: upstream.clone(),
                }];
                out.extend(changes(own));
                out
            }
        }
    }
}

#[derive(Debug, Clone)]
pub enum Status {
    Cached(Box<RunRecord>),
    /// Not stored here, but on the remote (its run record, as pushed): `run
    /// --remote` pulls it instead of computing it.
    Remote(Box<RunRecord>),
    Run(Reason),
}

impl Status {
    pub fn is_cached(&self) -> bool {
        matches!(self, Status::Cached(_))
    }

    /// The output digest, where it is known before running (stored here or on the remote).
    pub fn known_output(&self) -> Option<&str> {
        match self {
            Status::Cached(rec) | Status::Remote(rec) => Some(&rec.output),
            Status::Run(_) => None,
        }
    }
}

/// Looks keys up on the remote while planning, once each. The first
/// failure to reach it is noted and ends the looking: the plan goes on
/// with the local cache alone (an offline laptop still plans and runs).
struct RemoteProbe {
    remote: std::sync::Arc<crate::cache::remote::Remote>,
    found: HashMap<StageKey, Option<RunRecord>>,
    /// Why it could not be read, once it could not.
    down: Option<String>,
}

impl RemoteProbe {
    fn lookup(&mut self, key: &str, notes: &mut Vec<String>) -> Option<RunRecord> {
        if self.down.is_some() {
            return None;
        }
        if let Some(found) = self.found.get(key) {
            return found.clone();
        }
        use crate::cache::remote::Refused;
        let found = match self.remote.manifest(key) {
            Ok(m) => m.map(|m| m.run),
            Err(Refused::Store(e)) => {
                notes.push(format!(
                    "the remote {} cannot be read ({e}); planning with this cache alone",
                    self.remote.shown()
                ));
                self.down = Some(e.message);
                None
            }
            Err(refused) => {
                notes.push(format!("not using a result on the remote: {refused}"));
                None
            }
        };
        self.found.insert(key.to_string(), found.clone());
        found
    }
}

/// The key parts that do not depend on upstream results, computed once per plan.
#[derive(Debug, Clone)]
struct Prepared {
    implementation: String,
    files: BTreeMap<String, String>,
    hub: BTreeMap<String, HubIdentity>,
    /// `hf://` parameters not resolvable now: `(param, uri)`.
    unresolved: Vec<(String, String)>,
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
    /// The `hf://` parameters and the Hub they resolve against.
    pub hub: HubPlan,
    /// What the remote's look-ups ran into (unreachable, a refused manifest).
    pub remote_notes: Vec<String>,
    /// The remote looked in, if one was asked for (`run` pulls from it).
    pub remote: Option<std::sync::Arc<crate::cache::remote::Remote>>,
    /// Why the remote could not be read, when it could not (`cache pull` fails on it).
    pub remote_error: Option<String>,
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
            hub: prep.hub.clone(),
            inputs: node
                .inputs
                .iter()
                .zip(&node.roles)
                .zip(input_outputs)
                .map(|((&i, role), out)| InputDigest {
                    stage: self.pipeline.nodes[i].stage.clone(),
                    output: out.clone(),
                    role: role.clone(),
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

/// Identity of a kind's implementation: its manifest (minus docs), and a
/// built-in's source identity or an external plugin's program files. Also
/// returns the named parts it is made of.
fn implementation_digest(
    kind: &Manifest,
    stat: &mut StatCache,
) -> Result<(String, Vec<(String, String)>), Diag> {
    let mut h = blake3::Hasher::new();
    let manifest = kind.identity_bytes();
    h.update(&manifest);
    let mut parts = vec![(
        "manifest".to_string(),
        blake3::hash(&manifest).to_hex().to_string(),
    )];
    if let Exec::Builtin { name } = &kind.exec {
        let id = crate::stages::builtins::builtin(name)
            .and_then(|b| b.identity())
            .ok_or_else(|| {
                Diag::internal(format!(
                    "built-in kind `{name}` has no source identity in this build"
                ))
            })?;
        h.update(format!("\nbuiltin-source:{}", id.digest).as_bytes());
        parts.extend(id.parts());
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
        parts.push((rel, d));
    }
    Ok((h.finalize().to_hex().to_string(), parts))
}

/// The key parts of every node that do not depend on upstream results.
fn prepare(
    pipeline: &Pipeline,
    idx: &IndexSession,
    backend: &Backend,
    class_of: Option<&ClassOf>,
    stat: &mut StatCache,
    hub: &mut HubPlan,
) -> Result<Vec<Prepared>, Diag> {
    let exp_dir = pipeline.experiment.dir.clone();
    let mut impls: HashMap<String, String> = HashMap::new();
    let mut prepared = Vec::with_capacity(pipeline.nodes.len());
    for node in &pipeline.nodes {
        let implementation = match impls.get(&node.kind.name) {
            Some(d) => d.clone(),
            None => {
                let (d, parts) = implementation_digest(&node.kind, stat)?;
                if idx.identity(&d)?.is_none() {
                    idx.put_identity(&d, &parts)?;
                }
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
        let (hub_ids, unresolved) = resolve_hub_params(pipeline, prepared.len(), hub)?;
        let class = class_of.and_then(|f| f(node)).unwrap_or(backend.class);
        let backend_class = node.kind.uses_backend().then(|| class.to_string());
        prepared.push(Prepared {
            implementation,
            files,
            hub: hub_ids,
            unresolved,
            backend: backend_class,
        });
    }
    Ok(prepared)
}

/// Node `n`'s `hf://` parameters, resolved: their key parts, and those that
/// cannot be resolved now. A Hub that refuses (unknown repo or file, gated)
/// is an error at the stage.
#[allow(clippy::type_complexity)]
fn resolve_hub_params(
    pipeline: &Pipeline,
    n: usize,
    hub: &mut HubPlan,
) -> Result<(BTreeMap<String, HubIdentity>, Vec<(String, String)>), Diag> {
    let node = &pipeline.nodes[n];
    let mut ids = BTreeMap::new();
    let mut unresolved = Vec::new();
    for (param, text) in node.hub_params() {
        let at = |d: Diag| d.at(&pipeline.experiment.source, node.span, "this stage");
        let uri = crate::hub::HubUri::parse(&text).map_err(|e| {
            at(Diag::input(
                "E-HUB-URI",
                format!("parameter `{param}` of stage `{}`: {e}", node.id),
            ))
        })?;
        let use_ = hub.resolve(n, &param, uri).map_err(at)?;
        match &use_.resolved {
            Some((r, files)) => {
                ids.insert(param.clone(), crate::hub::identity(&use_.uri, r, files));
            }
            None => unresolved.push((param.clone(), use_.uri.to_string())),
        }
    }
    Ok((ids, unresolved))
}

/// Names what changed in an implementation, from the parts the index keeps.
fn implementation_parts(idx: &IndexSession, old: &str, new: &str) -> Result<Vec<String>, Diag> {
    let (Some(old), Some(new)) = (idx.identity(old)?, idx.identity(new)?) else {
        return Ok(Vec::new());
    };
    let old: BTreeMap<String, String> = old.into_iter().collect();
    let new: BTreeMap<String, String> = new.into_iter().collect();
    let mut out = Vec::new();
    for (name, v) in &new {
        match old.get(name) {
            Some(o) if o == v => {}
            Some(o) if name.starts_with("crate ") => out.push(format!("{name} {o} -> {v}")),
            Some(_) => out.push(name.clone()),
            None => out.push(format!("{name} (new)")),
        }
    }
    for name in old.keys().filter(|n| !new.contains_key(*n)) {
        out.push(format!("{name} (gone)"));
    }
    Ok(out)
}

/// `diff`, with implementation changes named part by part.
fn explained_diff(
    idx: &IndexSession,
    old: &KeyComponents,
    new: &KeyComponents,
    with_inputs: bool,
) -> Result<Vec<Change>, Diag> {
    let mut changes = diff(old, new, with_inputs);
    for c in &mut changes {
        if let Change::Implementation { parts, .. } = c {
            *parts = implementation_parts(idx, &old.implementation, &new.implementation)?;
        }
    }
    Ok(changes)
}

/// The status and key of node `i`, given its inputs' statuses so far.
fn status_of(
    plan: &mut Plan,
    cache: &Cache,
    idx: &IndexSession,
    i: usize,
    previous: Option<&RunRecord>,
    damaged: &Damaged,
    probe: &mut Option<RemoteProbe>,
) -> Result<(Status, Option<StageKey>), Diag> {
    let inputs = &plan.pipeline.nodes[i].inputs;
    if !plan.prepared[i].unresolved.is_empty() {
        let reason = Reason::HubUnresolved(plan.prepared[i].unresolved.clone());
        return Ok((Status::Run(reason), None));
    }
    let known = |u: usize| match plan.forced.contains(&u) {
        true => None,
        false => plan.statuses[u].known_output().map(str::to_string),
    };
    let outputs: Option<Vec<String>> = inputs.iter().map(|&u| known(u)).collect();
    let Some(outs) = outputs else {
        let upstream: Vec<String> = inputs
            .iter()
            .filter(|&&u| known(u).is_none())
            .map(|&u| plan.pipeline.nodes[u].id.clone())
            .collect();
        let placeholder = vec![String::new(); inputs.len()];
        let comps = plan.components(i, &placeholder);
        let own = match previous {
            Some(p) => explained_diff(idx, &p.components, &comps, false)?,
            None => Vec::new(),
        };
        return Ok((Status::Run(Reason::Upstream { upstream, own }), None));
    };
    let comps = plan.components(i, &outs);
    let key = comps.key();
    let status = if plan.forced.contains(&i) {
        Status::Run(Reason::Forced)
    } else if let Some(problems) = damaged.get(&i) {
        Status::Run(Reason::Damaged(problems.clone()))
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
        match previous {
            Some(prev) => Status::Run(Reason::Changed(explained_diff(
                idx,
                &prev.components,
                &comps,
                true,
            )?)),
            None => Status::Run(Reason::New),
        }
    };
    let status = match (status, probe) {
        (Status::Run(reason), Some(probe)) if reason != Reason::Forced => {
            match probe.lookup(&key, &mut plan.remote_notes) {
                Some(rec) => Status::Remote(Box::new(rec)),
                None => Status::Run(reason),
            }
        }
        (status, _) => status,
    };
    Ok((status, Some(key)))
}

/// Stored results found damaged when a stage was about to consume them.
type Damaged = BTreeMap<usize, Vec<ArtifactProblem>>;

/// Every node's status, in order (inputs first).
fn fill_statuses(
    plan: &mut Plan,
    cache: &Cache,
    idx: &IndexSession,
    exp_name: &str,
    damaged: &Damaged,
    probe: &mut Option<RemoteProbe>,
) -> Result<(), Diag> {
    for v in [&mut plan.keys, &mut plan.latest_keys] {
        v.clear();
    }
    plan.statuses.clear();
    plan.previous.clear();
    plan.failures.clear();
    for i in 0..plan.pipeline.nodes.len() {
        let id = plan.pipeline.nodes[i].id.clone();
        let latest = idx.latest(exp_name, &id)?;
        let previous = match &latest {
            Some(k) => idx.run(k)?,
            None => None,
        };
        let (status, key) = status_of(plan, cache, idx, i, previous.as_ref(), damaged, probe)?;
        plan.statuses.push(status);
        plan.keys.push(key);
        plan.previous.push(previous);
        plan.latest_keys.push(latest);
        plan.failures.push(idx.failure(exp_name, &id)?);
    }
    Ok(())
}

/// Stored inputs of stages that will run, re-hashed in full: those that no
/// longer match their record (each artifact is checked once).
fn consumed_damage(
    plan: &Plan,
    cache: &Cache,
    idx: &IndexSession,
    known: &Damaged,
) -> Result<Damaged, Diag> {
    let mut checked: HashMap<String, Vec<ArtifactProblem>> = HashMap::new();
    let mut found = Damaged::new();
    for (i, node) in plan.pipeline.nodes.iter().enumerate() {
        if plan.statuses[i].is_cached() {
            continue;
        }
        for &u in &node.inputs {
            let Status::Cached(rec) = &plan.statuses[u] else {
                continue;
            };
            if known.contains_key(&u) || plan.forced.contains(&u) {
                continue;
            }
            let problems = match checked.get(&rec.output) {
                Some(p) => p.clone(),
                None => {
                    let p = match idx.artifact(&rec.output)? {
                        Some(art) => cache.check_artifact(&art, true),
                        None => vec![ArtifactProblem::FolderMissing],
                    };
                    checked.insert(rec.output.clone(), p.clone());
                    p
                }
            };
            if !problems.is_empty() {
                found.insert(u, problems);
            }
        }
    }
    Ok(found)
}

/// Computes every node's status against the cache.
pub fn plan(
    pipeline: Pipeline,
    cache: &Cache,
    backend: Backend,
    opts: &PlanOptions,
) -> Result<Plan, Diags> {
    let forced: BTreeSet<usize> = pipeline.select(&opts.force)?.into_iter().collect();
    let idx = cache.index_checked()?;
    let mut stat = StatCache::default();
    for (p, e) in idx.stat_entries()? {
        stat.entries.insert(p, e);
    }
    stat.dirty = false;
    let mut hub = HubPlan::new(cache);
    let prepared = prepare(
        &pipeline,
        &idx,
        &backend,
        opts.class_of.as_ref(),
        &mut stat,
        &mut hub,
    )?;
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
        hub,
        remote_notes: Vec::new(),
        remote: opts.remote.clone(),
        remote_error: None,
    };
    let mut probe = opts.remote.clone().map(|remote| RemoteProbe {
        remote,
        found: HashMap::new(),
        down: None,
    });
    // A stored result is reused as it is (a stat check), but before a stage
    // consumes one it is re-hashed in full: a damaged input is recomputed
    // first. Each round can only add damaged results, so this ends.
    let mut damaged = Damaged::new();
    loop {
        fill_statuses(&mut plan, cache, &idx, &exp_name, &damaged, &mut probe)?;
        let found = consumed_damage(&plan, cache, &idx, &damaged)?;
        if found.is_empty() {
            break;
        }
        damaged.extend(found);
    }
    plan.remote_error = probe.and_then(|p| p.down);
    if stat.dirty {
        for (p, e) in &stat.entries {
            idx.put_stat(p, e)?;
        }
    }
    idx.flush()?;
    Ok(plan)
}
