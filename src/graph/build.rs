use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use miette::SourceSpan;
use petgraph::graph::{DiGraph, NodeIndex};

use crate::dsl::value::value_from_args;
use crate::dsl::{Experiment, Manifest, ParamType, Registry, StageDecl, Value};
use crate::error::{Diag, Diags, did_you_mean};

/// The most stages a sweep may expand to; beyond it a typo is likelier than intent.
const MAX_NODES: usize = 1_000_000;

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
    pub seed: i64,
    /// What this variant sets, for labels and reports.
    pub variant: Vec<(String, Value)>,
    pub span: SourceSpan,
}

impl Node {
    /// Absolute paths of the `path`-typed parameters, as (param, index in list, path).
    pub fn path_params(&self, base: &std::path::Path) -> Vec<(String, PathBuf)> {
        let mut out = Vec::new();
        for spec in &self.kind.params {
            if !spec.ty.mentions_path() {
                continue;
            }
            match self.params.get(&spec.name) {
                // An empty path means "not given".
                Some(Value::Str(s)) if s.is_empty() => {}
                Some(Value::Str(s)) => out.push((spec.name.clone(), base.join(s))),
                Some(Value::List(items)) => {
                    for (i, v) in items.iter().enumerate() {
                        if let Value::Str(s) = v
                            && !s.is_empty()
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
}

/// A validated, expanded experiment.
#[derive(Debug, Clone)]
pub struct Pipeline {
    pub experiment: Experiment,
    pub registry: Registry,
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

struct Axis {
    /// One entry per setting; each sets (stage index, param, value) for every `vary` of the sweep.
    settings: Vec<Vec<(usize, String, Value)>>,
    /// Display names of the varied params, parallel to each setting's entries.
    labels: Vec<String>,
}

/// Validates `exp` against `registry` and expands its sweeps.
pub fn build(exp: Experiment, registry: Registry) -> Result<Pipeline, Diags> {
    let src = exp.source.clone();
    let mut diags = Diags::default();
    let index: HashMap<&str, usize> = exp
        .stages
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.as_str(), i))
        .collect();

    // 1. Each stage against its kind.
    let mut kinds: Vec<Option<Arc<Manifest>>> = Vec::new();
    let mut base_params: Vec<BTreeMap<String, Value>> = Vec::new();
    let mut base_inputs: Vec<Vec<usize>> = Vec::new();
    for st in &exp.stages {
        let kind = match registry.get(&st.kind) {
            Some(k) => Some(k.clone()),
            None => {
                let mut d = Diag::input(
                    "E-UNKNOWN-KIND",
                    format!("unknown stage kind `{}`", st.kind),
                )
                .at(&src, st.kind_span, "no such kind");
                d.help = Some(match registry.suggest(&st.kind) {
                    Some(s) => format!("did you mean `{s}`? (`efrlhf plugins` lists the kinds)"),
                    None => format!(
                        "known kinds: {}; add a plugin folder with `plugins \"dir\"` in the `experiment` node",
                        registry.names().collect::<Vec<_>>().join(", ")
                    ),
                });
                diags.push(d);
                None
            }
        };
        let mut inputs = Vec::new();
        for (name, span) in &st.inputs {
            match index.get(name.as_str()) {
                Some(&i) => inputs.push(i),
                None => {
                    let mut d = Diag::input(
                        "E-UNKNOWN-INPUT",
                        format!(
                            "stage `{}` takes input from unknown stage `{name}`",
                            st.name
                        ),
                    )
                    .at(&src, *span, "no stage of this name");
                    d.help = Some(
                        match did_you_mean(name, exp.stages.iter().map(|s| s.name.as_str())) {
                            Some(s) => format!("did you mean `{s}`?"),
                            None => "declare that stage with `stage \"name\" kind=\"...\"`".into(),
                        },
                    );
                    diags.push(d);
                }
            }
        }
        let params = match &kind {
            Some(k) => check_params(&exp, st, k, &mut diags),
            None => BTreeMap::new(),
        };
        if let Some(k) = &kind {
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
                    .at(&src, st.name_span, "this stage")
                    .with_help("add or remove `input \"stage\"` lines"),
                );
            }
        }
        kinds.push(kind);
        base_params.push(params);
        base_inputs.push(inputs);
    }

    // 2. Cycles, then a topological order of the declared stages.
    let order = match topo_order(&base_inputs) {
        Ok(o) => Some(o),
        Err(cycle) => {
            diags.push(cycle_diag(&exp, &cycle));
            None
        }
    };

    // 3. Sweeps.
    let mut axes = Vec::new();
    let mut varied: HashMap<(usize, String), SourceSpan> = HashMap::new();
    for sw in &exp.sweeps {
        let mut axis = Axis {
            settings: Vec::new(),
            labels: Vec::new(),
        };
        let mut ok = true;
        let mut len: Option<(usize, SourceSpan)> = None;
        for v in &sw.varies {
            let Some(&si) = index.get(v.stage.as_str()) else {
                let mut d = Diag::input(
                    "E-UNKNOWN-STAGE",
                    format!("sweep `{}` varies unknown stage `{}`", sw.name, v.stage),
                )
                .at(&src, v.target_span, "no stage of this name");
                if let Some(s) = did_you_mean(&v.stage, exp.stages.iter().map(|s| s.name.as_str()))
                {
                    d.help = Some(format!("did you mean `{s}`?"));
                }
                diags.push(d);
                ok = false;
                continue;
            };
            let Some(kind) = &kinds[si] else {
                ok = false;
                continue;
            };
            let ty = if v.param == "seed" {
                ParamType::Int
            } else if let Some(spec) = kind.param(&v.param) {
                if spec.ty.is_list() {
                    diags.push(
                        Diag::input(
                            "E-SWEEP",
                            format!(
                                "`{}` is a list parameter; sweeps vary single values",
                                v.param
                            ),
                        )
                        .at(&src, v.target_span, "list parameter"),
                    );
                    ok = false;
                    continue;
                }
                spec.ty.clone()
            } else {
                diags.push(unknown_param_diag(&exp, &v.param, v.target_span, kind));
                ok = false;
                continue;
            };
            if let Some(prev) = varied.insert((si, v.param.clone()), v.target_span) {
                diags.push(
                    Diag::input(
                        "E-SWEEP",
                        format!("`{}.{}` is varied twice", v.stage, v.param),
                    )
                    .at(&src, v.target_span, "second")
                    .also(prev, "first")
                    .with_help("vary each parameter in one sweep only"),
                );
                ok = false;
                continue;
            }
            let mut values = Vec::new();
            for (raw, span) in &v.values {
                match value_from_args(&[raw], &ty) {
                    Ok(val) => {
                        if let Some(spec) = kind.param(&v.param)
                            && let Some(msg) = spec.check_range(&val)
                        {
                            diags.push(
                                Diag::input(
                                    "E-VALUE",
                                    format!("bad value for `{}`: {msg}", v.param),
                                )
                                .at(&src, *span, "here")
                                .with_help(format!(
                                    "`efrlhf plugins {}` lists the allowed values",
                                    kind.name
                                )),
                            );
                            ok = false;
                        }
                        values.push(val);
                    }
                    Err((_, msg)) => {
                        diags.push(
                            Diag::input(
                                "E-TYPE",
                                format!("wrong type for `{}.{}`: {msg}", v.stage, v.param),
                            )
                            .at(&src, *span, "here")
                            .with_help(format!(
                                "`{}` is declared as {ty} by kind `{}`",
                                v.param, kind.name
                            )),
                        );
                        ok = false;
                    }
                }
            }
            match len {
                None => len = Some((values.len(), v.target_span)),
                Some((n, first)) if n != values.len() => {
                    diags.push(
                        Diag::input("E-SWEEP", format!("the `vary` lines of sweep `{}` have different lengths ({n} and {})", sw.name, values.len()))
                            .at(&src, v.target_span, format!("{} values", values.len()))
                            .also(first, format!("{n} values"))
                            .with_help("lines of one sweep move together; put independent axes in separate `sweep` blocks"),
                    );
                    ok = false;
                }
                _ => {}
            }
            if axis.settings.is_empty() {
                axis.settings = vec![Vec::new(); values.len()];
            }
            for (i, val) in values.into_iter().enumerate() {
                if let Some(s) = axis.settings.get_mut(i) {
                    s.push((si, v.param.clone(), val));
                }
            }
            axis.labels.push(format!("{}.{}", v.stage, v.param));
        }
        if ok {
            axes.push(axis);
        }
    }

    let Some(order) = order else {
        return Err(diags);
    };
    if !diags.is_empty() {
        return Err(diags);
    }

    // 4. Expansion.
    let n_stages = exp.stages.len();
    let mut affecting: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); n_stages];
    for &s in &order {
        let mut set = BTreeSet::new();
        for (ai, axis) in axes.iter().enumerate() {
            if axis
                .settings
                .first()
                .is_some_and(|st| st.iter().any(|(si, _, _)| *si == s))
            {
                set.insert(ai);
            }
        }
        for &u in &base_inputs[s] {
            set.extend(affecting[u].iter().copied());
        }
        affecting[s] = set;
    }
    let mut total: usize = 0;
    for &s in &order {
        let count = affecting[s]
            .iter()
            .try_fold(1usize, |acc, &a| acc.checked_mul(axes[a].settings.len()));
        total = count
            .and_then(|c| total.checked_add(c))
            .unwrap_or(usize::MAX);
    }
    if total > MAX_NODES {
        return Err(Diag::input(
            "E-SWEEP",
            format!("the sweeps expand to {total} stages, more than {MAX_NODES}"),
        )
        .at(
            &src,
            exp.sweeps
                .first()
                .map(|s| s.span)
                .unwrap_or(SourceSpan::from(0..0)),
            "here",
        )
        .with_help("reduce the number of values or split the experiment")
        .into());
    }

    let mut nodes: Vec<Node> = Vec::with_capacity(total);
    let mut graph = DiGraph::with_capacity(total, total);
    // (stage, setting index per affecting axis) -> node
    let mut lookup: HashMap<(usize, Vec<usize>), usize> = HashMap::with_capacity(total);
    for &s in &order {
        let st = &exp.stages[s];
        let Some(kind) = kinds[s].clone() else {
            continue;
        };
        let axes_here: Vec<usize> = affecting[s].iter().copied().collect();
        for combo in combinations(
            &axes_here
                .iter()
                .map(|&a| axes[a].settings.len())
                .collect::<Vec<_>>(),
        ) {
            let assignment: HashMap<usize, usize> = axes_here
                .iter()
                .copied()
                .zip(combo.iter().copied())
                .collect();
            let mut params = base_params[s].clone();
            let mut seed = st.seed.map(|(v, _)| v).unwrap_or(exp.seed);
            let mut variant = Vec::new();
            for (&a, &i) in axes_here.iter().zip(&combo) {
                for (entry, label) in axes[a].settings[i].iter().zip(&axes[a].labels) {
                    let (si, param, val) = entry;
                    if *si == s {
                        if param == "seed" {
                            seed = val.as_i64().unwrap_or(seed);
                        } else {
                            params.insert(param.clone(), val.clone());
                        }
                    }
                    variant.push((label.clone(), val.clone()));
                }
            }
            let inputs: Vec<usize> = base_inputs[s]
                .iter()
                .map(|&u| {
                    let key: Vec<usize> = affecting[u].iter().map(|a| assignment[a]).collect();
                    lookup[&(u, key)]
                })
                .collect();
            let id = variant_id(&st.name, &variant);
            let idx = nodes.len();
            let gi = graph.add_node(idx);
            for &u in &inputs {
                graph.add_edge(NodeIndex::new(u), gi, ());
            }
            lookup.insert((s, combo.clone()), idx);
            nodes.push(Node {
                id,
                stage: st.name.clone(),
                kind: kind.clone(),
                params,
                inputs,
                seed,
                variant,
                span: st.name_span,
            });
        }
    }
    Ok(Pipeline {
        experiment: exp,
        registry,
        nodes,
        graph,
    })
}

/// `b[times=2]`; a parameter name shown once per label unless two stages' params collide.
fn variant_id(stage: &str, variant: &[(String, Value)]) -> String {
    if variant.is_empty() {
        return stage.to_string();
    }
    let short = |label: &str| {
        label
            .split_once('.')
            .map(|(_, p)| p.to_string())
            .unwrap_or_else(|| label.to_string())
    };
    let mut counts: HashMap<String, usize> = HashMap::new();
    for (label, _) in variant {
        *counts.entry(short(label)).or_default() += 1;
    }
    let parts: Vec<String> = variant
        .iter()
        .map(|(label, v)| {
            let s = short(label);
            if counts[&s] > 1 {
                format!("{label}={v}")
            } else {
                format!("{s}={v}")
            }
        })
        .collect();
    format!("{stage}[{}]", parts.join(","))
}

/// Every combination of indices below each of `sizes` (row-major).
fn combinations(sizes: &[usize]) -> Vec<Vec<usize>> {
    let mut out = vec![Vec::new()];
    for &n in sizes {
        let mut next = Vec::with_capacity(out.len() * n);
        for prefix in &out {
            for i in 0..n {
                let mut p = prefix.clone();
                p.push(i);
                next.push(p);
            }
        }
        out = next;
    }
    out
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
        if let Some((_, span)) = to.inputs.iter().find(|(n, _)| *n == from.name) {
            let label = format!("`{}` takes input from `{}`", to.name, from.name);
            if d.labels.is_empty() {
                d = d.at(src, *span, label);
            } else {
                d = d.also(*span, label);
            }
        }
    }
    d.with_help("a stage cannot depend on itself, directly or through others; remove one of these `input` lines")
}

fn unknown_param_diag(exp: &Experiment, name: &str, span: SourceSpan, kind: &Manifest) -> Diag {
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
            diags.push(unknown_param_diag(exp, &assign.name, assign.span, kind));
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
                        Diag::input("E-VALUE", format!("bad value for `{}`: {msg}", spec.name))
                            .at(src, span, "here")
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
                            && !p.is_empty()
                            && !exp.dir.join(p).exists()
                        {
                            let span = assign.values.get(i).map(|(_, s)| *s).unwrap_or(assign.span);
                            diags.push(
                                Diag::input("E-PATH", format!("`{p}` does not exist"))
                                    .at(
                                        src,
                                        span,
                                        format!(
                                            "resolved to `{}`",
                                            crate::error::display_path(&exp.dir.join(p)).display()
                                        ),
                                    )
                                    .with_help(
                                        "paths are relative to the experiment file's folder",
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
                    Diag::input("E-TYPE", format!("wrong type for `{}`: {msg}", spec.name))
                        .at(src, span, "here")
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
    fn combinations_are_row_major() {
        assert_eq!(combinations(&[2, 3]).len(), 6);
        assert_eq!(combinations(&[2, 3])[1], vec![0, 1]);
        assert_eq!(combinations(&[]), vec![Vec::<usize>::new()]);
    }

    #[test]
    fn topo_prefers_declaration_order_and_finds_cycles() {
        assert_eq!(topo_order(&[vec![], vec![0], vec![]]), Ok(vec![0, 1, 2]));
        assert_eq!(
            topo_order(&[vec![2], vec![0], vec![1]]),
            Err(vec![0, 1, 2, 0])
        );
        assert_eq!(topo_order(&[vec![0]]), Err(vec![0, 0]));
    }

    #[test]
    fn variant_ids_disambiguate_colliding_names() {
        let v = vec![
            ("a.times".to_string(), Value::Int(1)),
            ("b.times".to_string(), Value::Int(2)),
        ];
        assert_eq!(variant_id("b", &v), "b[a.times=1,b.times=2]");
        assert_eq!(variant_id("b", &v[..1]), "b[times=1]");
    }
}
