//! Sweeps: reading `sweep` blocks into axes, and expanding the declared
//! stages into one node per combination of the axes that reach them.
//!
//! A sweep is one axis; the `vary` lines inside one sweep move together
//! (zipped), and several sweeps multiply. A stage gets one variant per
//! combination of the axes that touch it or any of its ancestors.

use std::collections::{BTreeSet, HashMap};

use miette::SourceSpan;
use petgraph::graph::{DiGraph, NodeIndex};

use super::build::{Declared, Node, unknown_param_diag};
use crate::dsl::value::value_from_args;
use crate::dsl::{Experiment, Manifest, ParamType, SweepDecl, Value, VaryDecl};
use crate::error::{Diag, Diags, did_you_mean};

/// The most stages a sweep may expand to; beyond it a typo is likelier than intent.
const MAX_NODES: usize = 1_000_000;

/// One sweep.
pub(super) struct Axis {
    /// One entry per setting; each sets (stage index, param, value) for every `vary` of the sweep.
    settings: Vec<Vec<(usize, String, Value)>>,
    /// Display names of the varied params, parallel to each setting's entries.
    labels: Vec<String>,
}

/// Every sweep whose lines are all valid, as an axis; problems go to `diags`.
pub(super) fn read_sweeps(exp: &Experiment, declared: &[Declared], diags: &mut Diags) -> Vec<Axis> {
    let index = exp.stage_index();
    let mut varied: HashMap<(usize, String), SourceSpan> = HashMap::new();
    exp.sweeps
        .iter()
        .filter_map(|sw| read_axis(exp, declared, &index, sw, &mut varied, diags))
        .collect()
}

fn read_axis(
    exp: &Experiment,
    declared: &[Declared],
    index: &HashMap<&str, usize>,
    sw: &SweepDecl,
    varied: &mut HashMap<(usize, String), SourceSpan>,
    diags: &mut Diags,
) -> Option<Axis> {
    let mut axis = Axis {
        settings: Vec::new(),
        labels: Vec::new(),
    };
    let mut ok = true;
    let mut len: Option<(usize, SourceSpan)> = None;
    for v in &sw.varies {
        let Some((si, values)) = read_vary(exp, declared, index, (&sw.name, v), varied, diags)
        else {
            ok = false;
            continue;
        };
        match len {
            None => len = Some((values.len(), v.target_span)),
            Some((n, first)) if n != values.len() => {
                diags.push(
                    Diag::input("E-SWEEP", format!("the `vary` lines of sweep `{}` have different lengths ({n} and {})", sw.name, values.len()))
                        .at(&exp.source, v.target_span, format!("{} values", values.len()))
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
    ok.then_some(axis)
}

/// One `vary` line: its stage and typed, range-checked values.
fn read_vary(
    exp: &Experiment,
    declared: &[Declared],
    index: &HashMap<&str, usize>,
    (sweep, v): (&str, &VaryDecl),
    varied: &mut HashMap<(usize, String), SourceSpan>,
    diags: &mut Diags,
) -> Option<(usize, Vec<Value>)> {
    let src = &exp.source;
    let Some(&si) = index.get(v.stage.as_str()) else {
        let mut d = Diag::input(
            "E-UNKNOWN-STAGE",
            format!("sweep `{sweep}` varies unknown stage `{}`", v.stage),
        )
        .at(src, v.target_span, "no stage of this name");
        if let Some(s) = did_you_mean(&v.stage, exp.stages.iter().map(|s| s.name.as_str())) {
            d.help = Some(format!("did you mean `{s}`?"));
        }
        diags.push(d);
        return None;
    };
    let kind = declared[si].kind.as_ref()?;
    let ty = vary_type(exp, v, kind, diags)?;
    if let Some(prev) = varied.insert((si, v.param.clone()), v.target_span) {
        diags.push(
            Diag::input(
                "E-SWEEP",
                format!("`{}.{}` is varied twice", v.stage, v.param),
            )
            .at(src, v.target_span, "second")
            .also(prev, "first")
            .with_help("vary each parameter in one sweep only"),
        );
        return None;
    }
    let mut values = Vec::new();
    let mut ok = true;
    for (raw, span) in &v.values {
        match value_from_args(&[raw], &ty) {
            Ok(val) => {
                if let Some(spec) = kind.param(&v.param)
                    && let Some(msg) = spec.check_range(&val)
                {
                    diags.push(
                        Diag::input("E-VALUE", format!("bad value for `{}`: {msg}", v.param))
                            .at(src, *span, "here")
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
                    .at(src, *span, "here")
                    .with_help(format!(
                        "`{}` is declared as {ty} by kind `{}`",
                        v.param, kind.name
                    )),
                );
                ok = false;
            }
        }
    }
    ok.then_some((si, values))
}

/// The type of a varied parameter: `seed` is an int; lists cannot be swept.
fn vary_type(
    exp: &Experiment,
    v: &VaryDecl,
    kind: &Manifest,
    diags: &mut Diags,
) -> Option<ParamType> {
    if v.param == "seed" {
        return Some(ParamType::Int);
    }
    let Some(spec) = kind.param(&v.param) else {
        diags.push(unknown_param_diag(exp, &v.param, v.target_span, kind));
        return None;
    };
    if spec.ty.is_list() {
        diags.push(
            Diag::input(
                "E-SWEEP",
                format!(
                    "`{}` is a list parameter; sweeps vary single values",
                    v.param
                ),
            )
            .at(&exp.source, v.target_span, "list parameter"),
        );
        return None;
    }
    Some(spec.ty.clone())
}

/// For each stage, the axes that reach it (its own and its ancestors').
fn affecting_axes(declared: &[Declared], axes: &[Axis], order: &[usize]) -> Vec<BTreeSet<usize>> {
    let mut affecting: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); declared.len()];
    for &s in order {
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
        for &u in &declared[s].inputs {
            set.extend(affecting[u].iter().copied());
        }
        affecting[s] = set;
    }
    affecting
}

/// How many nodes the expansion makes; an error beyond [`MAX_NODES`].
fn count_nodes(
    exp: &Experiment,
    axes: &[Axis],
    order: &[usize],
    affecting: &[BTreeSet<usize>],
) -> Result<usize, Diags> {
    let mut total: usize = 0;
    for &s in order {
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
            &exp.source,
            exp.sweeps
                .first()
                .map(|s| s.span)
                .unwrap_or(SourceSpan::from(0..0)),
            "here",
        )
        .with_help("reduce the number of values or split the experiment")
        .into());
    }
    Ok(total)
}

/// The nodes of every stage variant, in topological order, and their graph.
pub(super) fn expand(
    exp: &Experiment,
    declared: &[Declared],
    axes: &[Axis],
    order: &[usize],
) -> Result<(Vec<Node>, DiGraph<usize, ()>), Diags> {
    let affecting = affecting_axes(declared, axes, order);
    let total = count_nodes(exp, axes, order, &affecting)?;
    let mut nodes: Vec<Node> = Vec::with_capacity(total);
    let mut graph = DiGraph::with_capacity(total, total);
    // (stage, setting index per affecting axis) -> node
    let mut lookup: HashMap<(usize, Vec<usize>), usize> = HashMap::with_capacity(total);
    for &s in order {
        let st = &exp.stages[s];
        let Some(kind) = declared[s].kind.clone() else {
            continue;
        };
        let axes_here: Vec<usize> = affecting[s].iter().copied().collect();
        let sizes: Vec<usize> = axes_here.iter().map(|&a| axes[a].settings.len()).collect();
        for combo in combinations(&sizes) {
            let assignment: HashMap<usize, usize> = axes_here
                .iter()
                .copied()
                .zip(combo.iter().copied())
                .collect();
            let mut params = declared[s].params.clone();
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
            let inputs: Vec<usize> = declared[s]
                .inputs
                .iter()
                .map(|&u| {
                    let key: Vec<usize> = affecting[u].iter().map(|a| assignment[a]).collect();
                    lookup[&(u, key)]
                })
                .collect();
            let idx = nodes.len();
            let gi = graph.add_node(idx);
            for &u in &inputs {
                graph.add_edge(NodeIndex::new(u), gi, ());
            }
            lookup.insert((s, combo), idx);
            nodes.push(Node {
                id: variant_id(&st.name, &variant),
                stage: st.name.clone(),
                kind: kind.clone(),
                params,
                inputs,
                roles: declared[s].roles.clone(),
                seed,
                variant,
                requests: st.requests.or(&kind.requests),
                span: st.name_span,
            });
        }
    }
    Ok((nodes, graph))
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
    fn variant_ids_disambiguate_colliding_names() {
        let v = vec![
            ("a.times".to_string(), Value::Int(1)),
            ("b.times".to_string(), Value::Int(2)),
        ];
        assert_eq!(variant_id("b", &v), "b[a.times=1,b.times=2]");
        assert_eq!(variant_id("b", &v[..1]), "b[times=1]");
    }
}
