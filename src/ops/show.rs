//! `show FILE`: every stage and variant with its status and metrics, side by
//! side; optionally averaged over sweep axes (`--aggregate seed`) and plotted
//! (`--plot train-pairs:accuracy`).

use std::collections::{BTreeMap, BTreeSet};

use crate::dsl::{Metrics, Value};
use crate::exec::{Plan, Status};
use crate::report::plot::Series;
use crate::report::{Cell, Table};

use super::variant_columns;

/// One row of `show`: a stage variant, or a group of them after aggregation.
#[derive(Debug, Clone)]
pub struct ShowRow {
    pub id: String,
    pub stage: String,
    pub kind: String,
    pub status: String,
    /// Variant settings by label (`rm.train-pairs`).
    pub variant: BTreeMap<String, Value>,
    pub metrics: Metrics,
    /// Standard deviations of the metrics over aggregated variants.
    pub spread: Metrics,
    /// How many variants the row stands for.
    pub n: usize,
    /// Digest of the stored result, for `done` rows.
    pub output: Option<String>,
}

/// Status words: `done` (current result stored), `outdated` (an older result
/// exists; metrics shown are that one's), `failed` (last attempt failed),
/// `not-run`.
fn status_of(plan: &Plan, i: usize) -> (&'static str, Option<&Metrics>) {
    match &plan.statuses[i] {
        Status::Cached(rec) => ("done", Some(&rec.metrics)),
        Status::Run(_) | Status::Remote(_) => {
            let prev = plan.previous[i].as_ref();
            let failed_later = plan.failures[i]
                .as_ref()
                .is_some_and(|f| prev.is_none_or(|p| f.finished_at >= p.finished_at));
            if failed_later {
                ("failed", prev.map(|p| &p.metrics))
            } else if let Some(p) = prev {
                ("outdated", Some(&p.metrics))
            } else {
                ("not-run", None)
            }
        }
    }
}

pub fn show_rows(plan: &Plan) -> Vec<ShowRow> {
    plan.pipeline
        .nodes
        .iter()
        .enumerate()
        .map(|(i, node)| {
            let (status, metrics) = status_of(plan, i);
            let output = match &plan.statuses[i] {
                Status::Cached(rec) => Some(rec.output.clone()),
                Status::Run(_) | Status::Remote(_) => None,
            };
            ShowRow {
                output,
                id: node.id.clone(),
                stage: node.stage.clone(),
                kind: node.kind.name.clone(),
                status: status.into(),
                variant: node.variant.iter().cloned().collect(),
                metrics: metrics.cloned().unwrap_or_default(),
                spread: Metrics::new(),
                n: 1,
            }
        })
        .collect()
}

/// Resolves a user's column name (`seed`, `train-pairs` or `rm.train-pairs`) to variant labels.
pub fn resolve_labels(plan: &Plan, name: &str) -> Vec<String> {
    variant_columns(plan)
        .into_iter()
        .filter(|l| l == name || l.split_once('.').is_some_and(|(_, p)| p == name))
        .collect()
}

/// Averages rows that differ only in the `over` labels. Metrics become means,
/// `spread` their standard deviations (n - 1), `n` the group size.
pub fn aggregate(rows: &[ShowRow], over: &[String]) -> Vec<ShowRow> {
    let mut groups: Vec<(String, Vec<&ShowRow>)> = Vec::new();
    for r in rows {
        let kept: Vec<(&String, &Value)> = r
            .variant
            .iter()
            .filter(|(l, _)| !over.contains(l))
            .collect();
        let key = format!("{}\0{kept:?}", r.stage);
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, g)) => g.push(r),
            None => groups.push((key, vec![r])),
        }
    }
    groups
        .into_iter()
        .map(|(_, g)| {
            let first = g[0];
            let variant: BTreeMap<String, Value> = first
                .variant
                .iter()
                .filter(|(l, _)| !over.contains(l))
                .map(|(l, v)| (l.clone(), v.clone()))
                .collect();
            let id = if variant.is_empty() {
                first.stage.clone()
            } else {
                let parts: Vec<String> = variant
                    .iter()
                    .map(|(l, v)| format!("{}={v}", l.split_once('.').map(|(_, p)| p).unwrap_or(l)))
                    .collect();
                format!("{}[{}]", first.stage, parts.join(","))
            };
            let names: BTreeSet<&String> = g.iter().flat_map(|r| r.metrics.keys()).collect();
            let mut metrics = Metrics::new();
            let mut spread = Metrics::new();
            for name in names {
                let xs: Vec<f64> = g
                    .iter()
                    .filter_map(|r| r.metrics.get(name).copied())
                    .collect();
                let mean = xs.iter().sum::<f64>() / xs.len() as f64;
                metrics.insert(name.clone(), mean);
                if xs.len() > 1 {
                    let var =
                        xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (xs.len() - 1) as f64;
                    spread.insert(name.clone(), var.sqrt());
                }
            }
            let statuses: BTreeSet<&str> = g.iter().map(|r| r.status.as_str()).collect();
            let status = if statuses.len() == 1 {
                first.status.clone()
            } else {
                "mixed".into()
            };
            let output = if g.len() == 1 {
                first.output.clone()
            } else {
                None
            };
            ShowRow {
                id,
                stage: first.stage.clone(),
                kind: first.kind.clone(),
                status,
                variant,
                metrics,
                spread,
                n: g.len(),
                output,
            }
        })
        .collect()
}

/// Keeps only the metrics that `names` select: a name exactly, a dotted
/// prefix (`importance` keeps `importance.relevance`), or a glob (`val_*`,
/// `*.rouge?`). A glob that does not parse is an error naming it.
pub fn select_metrics(rows: &mut [ShowRow], names: &[String]) -> Result<(), String> {
    if names.is_empty() {
        return Ok(());
    }
    let mut globs = Vec::new();
    for n in names.iter().filter(|n| n.contains(['*', '?', '['])) {
        let g = glob::Pattern::new(n).map_err(|e| format!("`{n}` is not a valid pattern: {e}"))?;
        globs.push(g);
    }
    let keep = |k: &String| {
        globs.iter().any(|g| g.matches(k))
            || names.iter().any(|n| {
                k == n
                    || k.strip_prefix(n.as_str())
                        .is_some_and(|r| r.starts_with('.'))
            })
    };
    for r in rows.iter_mut() {
        r.metrics.retain(|k, _| keep(k));
        r.spread.retain(|k, _| keep(k));
    }
    Ok(())
}

/// Rows as a table: stage, kind, status, [n,] one column per varied parameter, then metrics.
pub fn rows_table(rows: &[ShowRow]) -> Table {
    keyed_table(rows, true).0
}

/// The varied parameters' labels, in order of first appearance.
fn variant_labels(rows: &[ShowRow]) -> Vec<String> {
    let mut labels: Vec<String> = Vec::new();
    for r in rows {
        for l in r.variant.keys() {
            if !labels.contains(l) {
                labels.push(l.clone());
            }
        }
    }
    labels
}

/// [`rows_table`], with or without the kind column, and how many columns
/// come before the metrics.
fn keyed_table(rows: &[ShowRow], with_kind: bool) -> (Table, usize) {
    let labels = variant_labels(rows);
    let metric_names: BTreeSet<String> = rows
        .iter()
        .flat_map(|r| r.metrics.keys().cloned())
        .collect();
    // Short variant columns (`times`) unless they collide with each other or a metric.
    let short: Vec<String> = labels
        .iter()
        .map(|l| l.split_once('.').map(|(_, p)| p).unwrap_or(l).to_string())
        .collect();
    let unique = short.iter().collect::<BTreeSet<_>>().len() == short.len()
        && short.iter().all(|s| !metric_names.contains(s));
    let aggregated = rows.iter().any(|r| r.n > 1);
    let mut columns = vec!["stage".to_string()];
    if with_kind {
        columns.push("kind".into());
    }
    columns.push("status".into());
    if aggregated {
        columns.push("n".into());
    }
    columns.extend(if unique { short } else { labels.clone() });
    let keys = columns.len();
    for m in &metric_names {
        columns.push(m.clone());
        if aggregated && rows.iter().any(|r| r.spread.contains_key(m)) {
            columns.push(format!("{m} sd"));
        }
    }
    let mut t = Table {
        columns,
        rows: Vec::new(),
    };
    for r in rows {
        let mut row = vec![Cell::Text(r.id.clone())];
        if with_kind {
            row.push(Cell::Text(r.kind.clone()));
        }
        row.push(Cell::Text(r.status.clone()));
        if aggregated {
            row.push(Cell::Number(r.n as f64));
        }
        for l in &labels {
            row.push(match r.variant.get(l) {
                Some(Value::Int(x)) => Cell::Number(*x as f64),
                Some(Value::Float(x)) => Cell::Number(*x),
                Some(v) => Cell::Text(v.to_string()),
                None => Cell::Empty,
            });
        }
        for m in &metric_names {
            row.push(
                r.metrics
                    .get(m)
                    .map(|x| Cell::Number(*x))
                    .unwrap_or(Cell::Empty),
            );
            if aggregated && rows.iter().any(|x| x.spread.contains_key(m)) {
                row.push(
                    r.spread
                        .get(m)
                        .map(|x| Cell::Number(*x))
                        .unwrap_or(Cell::Empty),
                );
            }
        }
        t.rows.push(row);
    }
    (t, keys)
}

/// Stages as columns, metrics as rows (after the status, the varied
/// parameters and `n`); the first column names the row.
fn transposed(rows: &[ShowRow]) -> Table {
    let (wide, keys) = keyed_table(rows, false);
    let mut t = Table {
        columns: std::iter::once("metric".to_string())
            .chain(rows.iter().map(|r| r.id.clone()))
            .collect(),
        rows: Vec::new(),
    };
    // Column 0 of the wide table is the stage: it became the header.
    for (c, name) in wide.columns.iter().enumerate().skip(1) {
        let mut line = vec![Cell::Text(name.clone())];
        line.extend(wide.rows.iter().map(|r| r[c].clone()));
        if c >= keys && line[1..].iter().all(|x| *x == Cell::Empty) {
            continue;
        }
        t.rows.push(line);
    }
    t
}

/// One kind's stages in at most `width` columns: stages as rows, or metrics as
/// rows when that needs fewer pieces (each piece a table that fits).
pub(super) fn fitted_block(rows: &[ShowRow], with_kind: bool, width: usize) -> Vec<Table> {
    let (by_stage, keys) = keyed_table(rows, with_kind);
    if by_stage.text_width() <= width {
        return vec![by_stage];
    }
    let by_stage = by_stage.split_columns(keys, width);
    let by_metric = transposed(rows).split_columns(1, width);
    if by_metric.len() < by_stage.len() {
        by_metric
    } else {
        by_stage
    }
}

/// The distinct values of one field of `rows`, in order of first appearance.
pub(super) fn distinct(rows: &[ShowRow], field: impl Fn(&ShowRow) -> &String) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    for r in rows {
        if !seen.contains(field(r)) {
            seen.push(field(r).clone());
        }
    }
    seen
}

/// The metric `y` of `rows` against their value of the variant `label`, one
/// series per setting of the other varied parameters (`stage k=v ...`), x
/// sorted; the points carry the rows' standard deviations.
pub(super) fn series_by(rows: &[&ShowRow], label: &str, y: &str) -> Vec<Series> {
    let mut series: Vec<Series> = Vec::new();
    for r in rows {
        let (Some(xv), Some(yv)) = (
            r.variant.get(label).and_then(Value::as_f64),
            r.metrics.get(y),
        ) else {
            continue;
        };
        let others: Vec<String> = r
            .variant
            .iter()
            .filter(|(l, _)| *l != label)
            .map(|(l, v)| format!("{}={v}", l.split_once('.').map(|(_, p)| p).unwrap_or(l)))
            .collect();
        let name = if others.is_empty() {
            r.stage.clone()
        } else {
            format!("{} {}", r.stage, others.join(" "))
        };
        let point = (xv, *yv, r.spread.get(y).copied());
        match series.iter_mut().find(|s| s.name == name) {
            Some(s) => s.points.push(point),
            None => series.push(Series {
                name,
                points: vec![point],
            }),
        }
    }
    for s in &mut series {
        s.points.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    series
}

/// `show`'s text: the one table when it fits in `width` columns; otherwise a
/// block per stage kind (titled `kind (n stages)`), each fitted on its own.
pub fn fitted_text(rows: &[ShowRow], width: usize) -> String {
    let wide = rows_table(rows);
    if wide.text_width() <= width {
        return wide.to_text();
    }
    let kinds = distinct(rows, |r| &r.kind);
    if kinds.len() == 1 {
        return pieces_text(&fitted_block(rows, true, width));
    }
    let blocks: Vec<String> = kinds
        .iter()
        .map(|kind| {
            let of_kind: Vec<ShowRow> = rows.iter().filter(|r| r.kind == *kind).cloned().collect();
            let n = of_kind.len();
            let title = format!("{kind} ({n} stage{})", if n == 1 { "" } else { "s" });
            format!(
                "{title}\n{}",
                pieces_text(&fitted_block(&of_kind, false, width))
            )
        })
        .collect();
    blocks.join("\n")
}

fn pieces_text(pieces: &[Table]) -> String {
    pieces
        .iter()
        .map(Table::to_text)
        .collect::<Vec<_>>()
        .join("\n")
}

/// `show --format json`: `{"stages": [{"id", "kind", "status", "metrics", "variant", "output"}]}`,
/// `output` being the folder of a `done` stage's result.
pub fn show_json_rows(
    experiment: &str,
    rows: &[ShowRow],
    cache: &crate::cache::Cache,
) -> serde_json::Value {
    let stages: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            let variant: serde_json::Map<String, serde_json::Value> = r.variant.iter().map(|(l, v)| (l.clone(), v.to_json())).collect();
            let mut v = serde_json::json!({
                "id": r.id, "stage": r.stage, "kind": r.kind, "status": r.status, "metrics": r.metrics, "variant": variant,
            });
            if let Some(d) = &r.output {
                v["output"] = serde_json::json!(cache.artifact_dir(d));
            }
            if r.n > 1 {
                v["n"] = serde_json::json!(r.n);
                v["sd"] = serde_json::json!(r.spread);
            }
            v
        })
        .collect();
    serde_json::json!({ "experiment": experiment, "stages": stages })
}
