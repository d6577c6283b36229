//! Building the pipeline: each declared stage is checked against its kind's
//! manifest (parameters, inputs and their roles), the stages are ordered
//! (a cycle is reported stage by stage), the sweeps are read and expanded
//! into variants, and every built-in variant's parameters pass its kind's
//! own checks. Each phase reports every problem it finds, with a location.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use miette::SourceSpan;
use petgraph::graph::{DiGraph, NodeIndex};

use super::roles::assign_roles;
use super::sweep::{expand, read_sweeps};
use crate::dsl::value::value_from_args;
use crate::dsl::{Exec, Experiment, Manifest, ParamAssign, Registry, StageDecl, Value};
use crate::error::{Diag, Diags, SourceFile, did_you_mean};

/// One stage (or one sweep variant of a stage) to compute.
#[derive(Debug, Clone)]
pub struct Node {
    /// `b`, or `b[times=2]` for a sweep variant.
    pub id: String,
    /// The declared stage's name.
    pub stage: String,
    pub kind: Arc<Manifest>,
    /// Every parameter of the kind, defaults filled in, typed.
    pub params: BTreeMap<String, Value>,
    /// Upstream nodes, in the declared order.
    pub inputs: Vec<usize>,
    /// The role each input fills (parallel to `inputs`; `None` for kinds without roles).
    pub roles: Vec<Option<String>>,
    pub seed: i64,
    /// What this variant sets, for labels and reports.
    pub variant: Vec<(String, Value)>,
    /// What it asks of the machine (its `resources` over its kind's `requests`; not in its key).
    pub requests: crate::dsl::Requests,
    pub span: SourceSpan,
}

impl Node {
    /// Absolute paths of the `path`-typed parameters, as (param, index in list, path).
    pub fn path_params(&self, base: &Path) -> Vec<(String, PathBuf)> {
        let mut out = Vec::new();
        for spec in &self.kind.params {
            if !spec.ty.mentions_path() {
                continue;
            }
            match self.params.get(&spec.name) {
                // An empty path means "not given".
                Some(Value::Str(s)) if s.is_empty() || crate::hub::is_hub(s) => {}
                Some(Value::Str(s)) => out.push((spec.name.clone(), base.join(s))),
                Some(Value::List(items)) => {
                    for (i, v) in items.iter().enumerate() {
                        if let Value::Str(s) = v
                            && !s.is_empty()
                            && !crate::hub::is_hub(s)
                        {
                            out.push((format!("{}[{i}]", spec.name), base.join(s)));
                        }
                    }
                }
                _ => {}
            }
        }
        out
    }

    /// `path` parameters that name the Hub (`hf://...`): `(param, uri)`,
    /// `name[i]` in lists.
    pub fn hub_params(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for spec in self.kind.params.iter().filter(|s| s.ty.mentions_path()) {
            match self.params.get(&spec.name) {
                Some(Value::Str(s)) if crate::hub::is_hub(s) => {
                    out.push((spec.name.clone(), s.clone()))
                }
                Some(Value::List(items)) => {
                    for (i, v) in items.iter().enumerate() {
                        if let Value::Str(s) = v
                            && crate::hub::is_hub(s)
                        {
                            out.push((format!("{}[{i}]", spec.name), s.clone()));
                        }
                    }
                }
                _ => {}
            }
        }
        out
    }

    /// The parameters as a JSON object, `path` values resolved against `base`
    /// when given, and `hf://` values to the local path `hub` gives for them.
    pub fn params_json(&self, base: Option<&Path>) -> serde_json::Value {
        self.params_json_with(base, &|_| None)
    }

    /// [`Node::params_json`], with `hf://` values mapped by `hub`.
    pub fn params_json_with(
        &self,
        base: Option<&Path>,
        hub: &dyn Fn(&str) -> Option<PathBuf>,
    ) -> serde_json::Value {
        let resolve = |v: &Value| match (base, v) {
            (Some(_), Value::Str(s)) if crate::hub::is_hub(s) => match hub(s) {
                Some(p) => serde_json::Value::String(p.display().to_string()),
                None => v.to_json(),
            },
            (Some(dir), Value::Str(s)) if !s.is_empty() => {
                serde_json::Value::String(dir.join(s).display().to_string())
            }
            _ => v.to_json(),
        };
        let map = self
            .params
            .iter()
            .map(|(k, v)| {
                let is_path = self.kind.param(k).is_some_and(|s| s.ty.mentions_path());
                let json = match (is_path, v) {
                    (true, Value::List(items)) => {
                        serde_json::Value::Array(items.iter().map(resolve).collect())
                    }
                    (true, _) => resolve(v),
                    _ => v.to_json(),
                };
                (k.clone(), json)
            })
            .collect();
        serde_json::Value::Object(map)
    }
}
/// A validated, expanded experiment.
#[derive(Debug, Clone)]
pub struct Pipeline {
    pub experiment: Experiment,
    /// In topological order: every node comes after its inputs.
    pub nodes: Vec<Node>,
    pub graph: DiGraph<usize, ()>,
}

impl Pipeline {
    pub fn find(&self, id: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.id == id)
    }
    /// Indices of `roots` and everything upstream of them.
    pub fn upstream_closure(&self, roots: &[usize]) -> BTreeSet<usize> {
        let mut seen = BTreeSet::new();
        let mut stack: Vec<usize> = roots.to_vec();
        while let Some(n) = stack.pop() {
            if seen.insert(n) {
                stack.extend(self.nodes[n].inputs.iter().copied());
            }
        }
        seen
    }
    /// Indices of all nodes downstream of `n` (not including it).
    pub fn dependents(&self, n: usize) -> Vec<usize> {
        self.graph
            .neighbors(NodeIndex::new(n))
            .map(|i| i.index())
            .collect()
    }
    /// Resolves user-given stage names: an exact node id, or a stage name (all its variants).
    pub fn select(&self, names: &[String]) -> Result<Vec<usize>, Diag> {
        let mut out = Vec::new();
        for name in names {
            let matched: Vec<usize> = self
                .nodes
                .iter()
                .enumerate()
                .filter(|(_, n)| &n.id == name || &n.stage == name)
                .map(|(i, _)| i)
                .collect();
            if matched.is_empty() {
                let mut d = Diag::input(
                    "E-UNKNOWN-STAGE",
                    format!(
                        "no stage `{name}` in `{}`",
                        self.experiment.source.path.display()
                    ),
                );
                let ids = self.nodes.iter().map(|n| n.id.as_str());
                d.help = Some(match did_you_mean(name, ids) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None => format!(
                        "stages: {}",
                        self.nodes
                            .iter()
                            .map(|n| n.id.as_str())
                            .take(20)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                });
                return Err(d);
            }
            out.extend(matched);
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }
}

/// A declared stage after checking it against its kind.
pub(super) struct Declared {
    /// `None` when the kind is unknown (already reported).
    pub(super) kind: Option<Arc<Manifest>>,
    /// Every parameter, defaults filled in.
    pub(super) params: BTreeMap<String, Value>,
    /// Declared stage indices of its inputs, in order.
    pub(super) inputs: Vec<usize>,
    /// The role of each input, once assigned.
    pub(super) roles: Vec<Option<String>>,
}

/// Validates `exp` against `registry` and expands its sweeps.
pub fn build(exp: Experiment, registry: Registry) -> Result<Pipeline, Diags> {
    let mut diags = Diags::default();
    let mut declared = check_stages(&exp, &registry, &mut diags);
    assign_roles(&exp, &mut declared, &mut diags);
    let inputs: Vec<Vec<usize>> = declared.iter().map(|d| d.inputs.clone()).collect();
    let order = match topo_order(&inputs) {
        Ok(o) => Some(o),
        Err(cycle) => {
            diags.push(cycle_diag(&exp, &cycle));
            None
        }
    };
    let axes = read_sweeps(&exp, &declared, &mut diags);
    let Some(order) = order else {
        return Err(diags);
    };
    if !diags.is_empty() {
        return Err(diags);
    }
    let (nodes, graph) = expand(&exp, &declared, &axes, &order)?;
    check_builtin_params(&exp, &nodes)?;
    Ok(Pipeline {
        experiment: exp,
        nodes,
        graph,
    })
}

/// Each stage against its kind: the kind exists, the inputs name stages,
/// the parameters fit, the number of inputs is allowed.
fn check_stages(exp: &Experiment, registry: &Registry, diags: &mut Diags) -> Vec<Declared> {
    let index = exp.stage_index();
    let mut out = Vec::with_capacity(exp.stages.len());
    for st in &exp.stages {
        let kind = registry.get(&st.kind).cloned();
        if kind.is_none() {
            diags.push(unknown_kind_diag(exp, st, registry));
        }
        let mut inputs = Vec::new();
        for decl in &st.inputs {
            match index.get(decl.stage.as_str()) {
                Some(&i) => inputs.push(i),
                None => diags.push(unknown_input_diag(exp, st, &decl.stage, decl.span)),
            }
        }
        let params = match &kind {
            Some(k) => check_params(exp, st, k, diags),
            None => BTreeMap::new(),
        };
        if let Some(k) = &kind
            && k.roles.is_empty()
        {
            check_input_count(exp, st, k, diags);
        }
        let roles = vec![None; inputs.len()];
        out.push(Declared {
            kind,
            params,
            inputs,
            roles,
        });
    }
    out
}

fn unknown_kind_diag(exp: &Experiment, st: &StageDecl, registry: &Registry) -> Diag {
    let mut d = Diag::input(
        "E-UNKNOWN-KIND",
        format!("unknown stage kind `{}`", st.kind),
    )
    .at(&exp.source, st.kind_span, "no such kind");
    d.help = Some(match registry.suggest(&st.kind) {
        Some(s) => format!("did you mean `{s}`? (`efrlhf plugins` lists the kinds)"),
        None => format!(
            "known kinds: {}; add a plugin folder with `plugins \"dir\"` in the `experiment` node",
            registry.names().collect::<Vec<_>>().join(", ")
        ),
    });
    d
}

fn unknown_input_diag(exp: &Experiment, st: &StageDecl, name: &str, span: SourceSpan) -> Diag {
    let mut d = Diag::input(
        "E-UNKNOWN-INPUT",
        format!(
            "stage `{}` takes input from unknown stage `{name}`",
            st.name
        ),
    )
    .at(&exp.source, span, "no stage of this name");
    d.help = Some(
        match did_you_mean(name, exp.stages.iter().map(|s| s.name.as_str())) {
            Some(s) => format!("did you mean `{s}`?"),
            None => "declare that stage with `stage \"name\" kind=\"...\"`".into(),
        },
    );
    d
}

/// For kinds with positional inputs only: the count against `inputs min= max=`.
fn check_input_count(exp: &Experiment, st: &StageDecl, k: &Manifest, diags: &mut Diags) {
    let n = st.inputs.len();
    let too_few = n < k.min_inputs;
    let too_many = k.max_inputs.is_some_and(|m| n > m);
    if too_few || too_many {
        let want = match k.max_inputs {
            Some(m) if m == k.min_inputs => format!("exactly {m}"),
            Some(m) => format!("{} to {m}", k.min_inputs),
            None => format!("at least {}", k.min_inputs),
        };
        diags.push(
            Diag::input(
                "E-INPUTS",
                format!(
                    "stage `{}` has {n} input(s); kind `{}` takes {want}",
                    st.name, k.name
                ),
            )
            .at(&exp.source, st.name_span, "this stage")
            .with_help("add or remove `input \"stage\"` lines"),
        );
    }
    for decl in &st.inputs {
        if let Some((role, span)) = &decl.role {
            diags.push(
                Diag::input(
                    "E-ROLE",
                    format!("kind `{}` has no named inputs, so no role `{role}`", k.name),
                )
                .at(&exp.source, *span, "not a role of this kind")
                .with_help("remove `role=...`: its inputs are positional"),
            );
        }
    }
}

/// Each built-in variant's parameters through its kind's own checks
/// (relations the manifest cannot state, such as `d-model` divisible by `heads`).
fn check_builtin_params(exp: &Experiment, nodes: &[Node]) -> Result<(), Diags> {
    let mut diags = Diags::default();
    for node in nodes {
        let Exec::Builtin { name } = &node.kind.exec else {
            continue;
        };
        let Some(b) = crate::stages::builtins::builtin(name) else {
            continue;
        };
        if let Err(msg) = b.stage.check_params(&node.params_json(None)) {
            diags.push(
                Diag::input("E-VALUE", format!("stage `{}`: {msg}", node.id))
                    .at(&exp.source, node.span, "this stage")
                    .with_help(format!(
                        "`efrlhf plugins {}` documents the parameters",
                        node.kind.name
                    )),
            );
        }
    }
    diags.into_result(())
}

/// Kahn's algorithm preferring declaration order; on a cycle, returns it (stage indices, first repeated last).
fn topo_order(inputs: &[Vec<usize>]) -> Result<Vec<usize>, Vec<usize>> {
    let n = inputs.len();
    let mut indeg: Vec<usize> = inputs.iter().map(|i| i.len()).collect();
    let mut users: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (s, ins) in inputs.iter().enumerate() {
        for &u in ins {
            users[u].push(s);
        }
    }
    let mut ready: BTreeSet<usize> = (0..n).filter(|&s| indeg[s] == 0).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(s) = ready.pop_first() {
        order.push(s);
        for &t in &users[s] {
            indeg[t] -= 1;
            if indeg[t] == 0 {
                ready.insert(t);
            }
        }
    }
    if order.len() == n {
        return Ok(order);
    }
    // Find a cycle among the remaining stages with petgraph's strongly connected components.
    let mut g: DiGraph<usize, ()> = DiGraph::new();
    let idx: Vec<NodeIndex> = (0..n).map(|i| g.add_node(i)).collect();
    for (s, ins) in inputs.iter().enumerate() {
        for &u in ins {
            g.add_edge(idx[u], idx[s], ());
        }
    }
    for scc in petgraph::algo::tarjan_scc(&g) {
        let self_loop = scc.len() == 1 && inputs[scc[0].index()].contains(&scc[0].index());
        if scc.len() > 1 || self_loop {
            let members: BTreeSet<usize> = scc.iter().map(|i| i.index()).collect();
            let start = *members.first().unwrap_or(&0);
            // Walk inputs backwards inside the component until we return to the start.
            let mut path = vec![start];
            let mut cur = start;
            let mut visited = BTreeSet::from([start]);
            loop {
                let next = users[cur]
                    .iter()
                    .copied()
                    .filter(|u| members.contains(u))
                    .find(|u| *u == start || !visited.contains(u));
                match next {
                    Some(u) if u == start => {
                        path.push(start);
                        return Err(path);
                    }
                    Some(u) => {
                        visited.insert(u);
                        path.push(u);
                        cur = u;
                    }
                    None => {
                        // Dead end inside the component: back up.
                        path.pop();
                        match path.last() {
                            Some(&p) => cur = p,
                            None => return Err(vec![start, start]),
                        }
                    }
                }
            }
        }
    }
    Err(Vec::new())
}

fn cycle_diag(exp: &Experiment, cycle: &[usize]) -> Diag {
    let names: Vec<&str> = cycle.iter().map(|&i| exp.stages[i].name.as_str()).collect();
    let src = &exp.source;
    let mut d = Diag::input(
        "E-CYCLE",
        format!("the stages form a cycle: {}", names.join(" -> ")),
    );
    for w in cycle.windows(2) {
        let (from, to) = (&exp.stages[w[0]], &exp.stages[w[1]]);
        if let Some(span) = to
            .inputs
            .iter()
            .find(|i| i.stage == from.name)
            .map(|i| i.span)
        {
            let label = format!("`{}` takes input from `{}`", to.name, from.name);
            if d.labels.is_empty() {
                d = d.at(src, span, label);
            } else {
                d = d.also(span, label);
            }
        }
    }
    d.with_help("a stage cannot depend on itself, directly or through others; remove one of these `input` lines")
}

pub(super) fn unknown_param_diag(
    exp: &Experiment,
    name: &str,
    span: SourceSpan,
    kind: &Manifest,
) -> Diag {
    let mut d = Diag::input(
        "E-UNKNOWN-PARAM",
        format!("unknown parameter `{name}` for kind `{}`", kind.name),
    )
    .at(&exp.source, span, "not a parameter of this kind");
    let names: Vec<&str> = kind.params.iter().map(|p| p.name.as_str()).collect();
    d.help = Some(match did_you_mean(name, names.iter().copied()) {
        Some(s) => format!("did you mean `{s}`?"),
        None if names.is_empty() => format!("kind `{}` takes no parameters", kind.name),
        None => format!("kind `{}` takes: {}", kind.name, names.join(", ")),
    });
    d
}

/// What is wrong with a `path` parameter's value, if anything: it must
/// name a regular file or a folder (a device or a FIFO would be read forever).
fn path_problem(dir: &Path, p: &str) -> Option<&'static str> {
    if p.is_empty() {
        return None;
    }
    match std::fs::metadata(dir.join(p)) {
        Err(_) => Some("does not exist"),
        Ok(m) if m.is_file() || m.is_dir() => None,
        Ok(_) => Some("is neither a regular file nor a folder"),
    }
}

/// A parameter's diagnostic, at its place in the file or naming the `--set` that gave it.
fn at_assign(d: Diag, src: &SourceFile, assign: &ParamAssign, span: SourceSpan) -> Diag {
    match &assign.set_by {
        Some(set) => from_flag(d, set),
        None => d.at(src, span, "here"),
    }
}

/// A diagnostic about a `--set` value: it names the flag, not a line of the file.
fn from_flag(mut d: Diag, set: &str) -> Diag {
    d.message = format!("{} (from `--set {set}`)", d.message);
    d.source = None;
    d.labels.clear();
    d
}

/// An `hf://` value (the `i`th of `assign`) that does not parse is an error at
/// its span; one that does is resolved at plan time.
fn check_hub_uri(value: &str, src: &SourceFile, assign: &ParamAssign, i: usize, diags: &mut Diags) {
    if let Err(e) = crate::hub::HubUri::parse(value) {
        let span = assign.values.get(i).map_or(assign.span, |(_, s)| *s);
        diags.push(
            Diag::input("E-HUB-URI", e)
                .at(src, span, "not a Hub path")
                .with_help("write `hf://ORG/NAME[@REVISION][/PATH]` for a model, `hf://datasets/ORG/NAME...` for a dataset"),
        );
    }
}

fn check_params(
    exp: &Experiment,
    st: &StageDecl,
    kind: &Manifest,
    diags: &mut Diags,
) -> BTreeMap<String, Value> {
    let src = &exp.source;
    let mut out = BTreeMap::new();
    for assign in &st.params {
        let Some(spec) = kind.param(&assign.name) else {
            let d = unknown_param_diag(exp, &assign.name, assign.span, kind);
            match &assign.set_by {
                // `--set '*.lr=...'` sets it where the kind has it (checked to be somewhere).
                Some(set) if crate::dsl::glob_set(set).is_some() => {}
                Some(set) => diags.push(from_flag(d, set)),
                None => diags.push(d),
            }
            continue;
        };
        let raw: Vec<&kdl::KdlValue> = assign.values.iter().map(|(v, _)| v).collect();
        match value_from_args(&raw, &spec.ty) {
            Ok(v) => {
                if let Some(msg) = spec.check_range(&v) {
                    let span = assign
                        .values
                        .first()
                        .map(|(_, s)| *s)
                        .unwrap_or(assign.span);
                    diags.push(
                        at_assign(
                            Diag::input("E-VALUE", format!("bad value for `{}`: {msg}", spec.name)),
                            src,
                            assign,
                            span,
                        )
                        .with_help(format!(
                            "`efrlhf plugins {}` lists the allowed values",
                            kind.name
                        )),
                    );
                    continue;
                }
                if spec.ty.mentions_path() {
                    let items: Vec<&Value> = match &v {
                        Value::List(items) => items.iter().collect(),
                        other => vec![other],
                    };
                    for (i, item) in items.into_iter().enumerate() {
                        if let Value::Str(p) = item
                            && crate::hub::is_hub(p)
                        {
                            check_hub_uri(p, src, assign, i, diags);
                            continue;
                        }
                        if let Value::Str(p) = item
                            && let Some(problem) = path_problem(&exp.dir, p)
                        {
                            let span = assign.values.get(i).map(|(_, s)| *s).unwrap_or(assign.span);
                            diags.push(
                                Diag::input("E-PATH", format!("`{p}` {problem}"))
                                    .at(
                                        src,
                                        span,
                                        format!(
                                            "resolved to `{}`",
                                            crate::error::display_path(&exp.dir.join(p)).display()
                                        ),
                                    )
                                    .with_help(
                                        "paths are relative to the experiment file's folder and name a file or a folder",
                                    ),
                            );
                        }
                    }
                }
                out.insert(spec.name.clone(), v);
            }
            Err((i, msg)) => {
                let span = assign.values.get(i).map(|(_, s)| *s).unwrap_or(assign.span);
                diags.push(
                    at_assign(
                        Diag::input("E-TYPE", format!("wrong type for `{}`: {msg}", spec.name)),
                        src,
                        assign,
                        span,
                    )
                    .with_help(format!(
                        "`{}` is declared as {} by kind `{}`",
                        spec.name, spec.ty, kind.name
                    )),
                );
            }
        }
    }
    for spec in &kind.params {
        if out.contains_key(&spec.name) || st.params.iter().any(|p| p.name == spec.name) {
            continue;
        }
        match &spec.default {
            Some(d) => {
                out.insert(spec.name.clone(), d.clone());
            }
            None => diags.push(
                Diag::input(
                    "E-MISSING-PARAM",
                    format!(
                        "stage `{}` does not set required parameter `{}`",
                        st.name, spec.name
                    ),
                )
                .at(src, st.name_span, "this stage")
                .with_help(format!(
                    "add `{} <{}>` inside the stage{}",
                    spec.name,
                    spec.ty,
                    if spec.doc.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", spec.doc)
                    }
                )),
            ),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topo_prefers_declaration_order_and_finds_cycles() {
        assert_eq!(topo_order(&[vec![], vec![0], vec![]]), Ok(vec![0, 1, 2]));
        assert_eq!(
            topo_order(&[vec![2], vec![0], vec![1]]),
            Err(vec![0, 1, 2, 0])
        );
        assert_eq!(topo_order(&[vec![0]]), Err(vec![0, 0]));
    }
}
