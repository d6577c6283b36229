//! `report FILE`: an experiment and its sweeps as one self-contained HTML
//! page: the DAG, each stage's status, time and metrics, sweep tables
//! averaged over seeds, every curve the stages log, the reward-efficiency
//! curve, φ's importances, the evaluation tables and a few products with
//! each model's summary. A sweep of thousands of variants stays small: tables
//! and charts hold a bounded number of variants and say how many they leave out.

use std::collections::BTreeMap;
use std::path::Path;

use crate::cache::Cache;
use crate::exec::{Plan, Status};
use crate::report::curves::{CURVE_FILES, Curve, read_curve};
use crate::report::html::{Page, bar_chart_svg, clip, dag_svg};
use crate::report::plot::{Series, line_chart_svg};
use crate::report::{Cell, Table, fmt_duration};

use super::show::{
    ShowRow, aggregate, distinct, fitted_block, resolve_labels, series_by, show_rows,
};

/// Rows a table shows before it says how many more there are.
const MAX_ROWS: usize = 200;
/// Lines a chart draws (variants of one stage).
const MAX_LINES: usize = 8;
/// Products shown side by side per evaluation.
const SAMPLES: usize = 3;
/// A chart's size in pixels.
const CHART: (u32, u32) = (380, 260);

/// The page, as HTML text.
pub fn report(plan: &Plan, cache: &Cache) -> String {
    let rows = show_rows(plan);
    let seeds = resolve_labels(plan, "seed");
    let averaged = if seeds.is_empty() {
        rows.clone()
    } else {
        aggregate(&rows, &seeds)
    };
    let mut page = Page::new(&format!("efrlhf report: {}", plan.experiment_name()));
    overview(&mut page, plan, &rows);
    stages(&mut page, plan, &rows);
    metrics(&mut page, &averaged, !seeds.is_empty());
    curves(&mut page, plan, cache, &rows);
    efficiency(&mut page, &averaged);
    importances(&mut page, &averaged);
    evaluations(&mut page, plan, cache, &rows);
    page.finish()
}

fn overview(page: &mut Page, plan: &Plan, rows: &[ShowRow]) {
    page.section("overview", "Overview");
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for r in rows {
        *counts.entry(r.status.as_str()).or_default() += 1;
    }
    let said: Vec<String> = counts.iter().map(|(s, n)| format!("{n} {s}")).collect();
    page.paragraph(&format!(
        "{} stage variants of {} declared stages: {}. Generated {}.",
        rows.len(),
        plan.pipeline.experiment.stages.len(),
        said.join(", "),
        super::fmt_time(now())
    ));
    // The declared stages, with how many variants each has.
    let declared: Vec<&str> = plan
        .pipeline
        .experiment
        .stages
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    let mut boxes = Vec::new();
    let mut inputs = Vec::new();
    for name in &declared {
        let nodes: Vec<usize> = (0..rows.len())
            .filter(|&i| rows[i].stage == *name)
            .collect();
        let Some(&first) = nodes.first() else {
            continue;
        };
        let kind = &plan.pipeline.nodes[first].kind.name;
        let detail = match nodes.len() {
            1 => kind.clone(),
            n => format!("{kind} × {n}"),
        };
        boxes.push((name.to_string(), detail));
        let mut ins: Vec<usize> = plan.pipeline.nodes[first]
            .inputs
            .iter()
            .filter_map(|&j| {
                declared
                    .iter()
                    .position(|d| *d == plan.pipeline.nodes[j].stage)
            })
            .collect();
        ins.sort_unstable();
        ins.dedup();
        inputs.push(ins);
    }
    page.figure(&dag_svg(&boxes, &inputs), "the stages and what each reads");
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn stages(page: &mut Page, plan: &Plan, rows: &[ShowRow]) {
    page.section("stages", "Stages");
    let mut t = Table {
        columns: ["stage", "kind", "status", "time", "finished", "result"]
            .map(String::from)
            .to_vec(),
        rows: Vec::new(),
    };
    for (i, r) in rows.iter().enumerate().take(MAX_ROWS) {
        let rec = match &plan.statuses[i] {
            Status::Cached(rec) => Some(&**rec),
            Status::Run(_) | Status::Remote(_) => plan.previous[i].as_ref(),
        };
        let text = |s: String| Cell::Text(s);
        t.rows.push(vec![
            text(r.id.clone()),
            text(r.kind.clone()),
            text(r.status.clone()),
            rec.map_or(Cell::Empty, |x| text(fmt_duration(x.seconds))),
            rec.map_or(Cell::Empty, |x| text(super::fmt_time(x.finished_at))),
            r.output
                .as_ref()
                .map_or(Cell::Empty, |d| text(d.chars().take(12).collect())),
        ]);
    }
    page.table(&t);
    more_rows(page, rows.len());
}

fn more_rows(page: &mut Page, total: usize) {
    if total > MAX_ROWS {
        page.note(&format!(
            "the first {MAX_ROWS} of {total}; `efrlhf show FILE --format csv` lists them all"
        ));
    }
}

fn metrics(page: &mut Page, rows: &[ShowRow], over_seeds: bool) {
    page.section("metrics", "Metrics");
    if over_seeds {
        page.note(
            "means over seeds; `sd` columns are their standard deviations, `n` how many seeds",
        );
    }
    for kind in distinct(rows, |r| &r.kind) {
        let of_kind: Vec<ShowRow> = rows
            .iter()
            .filter(|r| r.kind == kind)
            .take(MAX_ROWS)
            .cloned()
            .collect();
        page.subheading(&kind);
        // The terminal's rule at a page's width: stages or metrics as rows.
        for piece in fitted_block(&of_kind, false, 170) {
            page.table(&piece);
        }
        more_rows(page, rows.iter().filter(|r| r.kind == kind).count());
    }
}

fn curves(page: &mut Page, plan: &Plan, cache: &Cache, rows: &[ShowRow]) {
    page.section("curves", "Curves");
    let mut any = false;
    for stage in plan.pipeline.experiment.stages.iter().map(|s| &s.name) {
        let done: Vec<&ShowRow> = rows
            .iter()
            .filter(|r| &r.stage == stage && r.output.is_some())
            .collect();
        for (file, x_name) in CURVE_FILES {
            let read: Vec<(&str, Curve)> = done
                .iter()
                .take(MAX_LINES)
                .filter_map(|r| {
                    let dir = cache.artifact_dir(r.output.as_deref()?);
                    Some((r.id.as_str(), read_curve(&dir.join(file), x_name)?))
                })
                .collect();
            let fields: Vec<&String> = read
                .first()
                .map(|(_, f)| f.keys().collect())
                .unwrap_or_default();
            if fields.is_empty() {
                continue;
            }
            any = true;
            page.subheading(&format!("{stage}: {file}"));
            if done.len() > MAX_LINES {
                page.note(&format!("the first {MAX_LINES} of {} variants", done.len()));
            }
            for field in fields {
                let series: Vec<Series> = read
                    .iter()
                    .map(|(id, f)| Series {
                        name: id.to_string(),
                        points: f
                            .get(field)
                            .map(|p| p.iter().map(|&(x, y)| (x, y, None)).collect())
                            .unwrap_or_default(),
                    })
                    .collect();
                if let Ok(svg) = line_chart_svg(CHART, field, (x_name, field), &series, false) {
                    page.figure(&svg, &format!("{stage} {field} by {x_name}"));
                }
            }
        }
    }
    if !any {
        page.note("no finished stage logged a curve");
    }
}

/// The metric a kind is judged by, for plots against a swept parameter.
fn headline(kind: &str) -> Option<&'static str> {
    match kind {
        "reward-model" => Some("accuracy"),
        "sft" => Some("val_rougeL"),
        "ppo" => Some("reward_last"),
        _ => None,
    }
}

/// The headline metric of each stage against each numeric parameter its
/// sweeps vary (means and standard deviations over seeds): for reward models
/// over `train-pairs`, the reward-efficiency curve.
fn efficiency(page: &mut Page, rows: &[ShowRow]) {
    page.section("sweeps", "Sweeps");
    let mut any = false;
    for stage in distinct(rows, |r| &r.stage) {
        let of: Vec<&ShowRow> = rows.iter().filter(|r| r.stage == stage).collect();
        let Some(metric) = headline(&of[0].kind) else {
            continue;
        };
        for label in numeric_labels(&of) {
            let series: Vec<Series> = series_by(&of, &label, metric)
                .into_iter()
                .take(MAX_LINES)
                .collect();
            let title = format!("{stage}: {metric} by {}", short(&label));
            if let Ok(svg) =
                line_chart_svg((520, 340), &title, (short(&label), metric), &series, true)
            {
                any = true;
                page.figure(&svg, &title);
            }
        }
    }
    if !any {
        page.note("no sweep varies a number of a stage with a headline metric");
    }
}

/// Variant labels with at least two distinct numeric values among `rows`.
fn numeric_labels(rows: &[&ShowRow]) -> Vec<String> {
    let mut values: BTreeMap<&String, Vec<f64>> = BTreeMap::new();
    for r in rows {
        for (l, v) in &r.variant {
            if let Some(x) = v.as_f64() {
                values.entry(l).or_default().push(x);
            }
        }
    }
    values
        .into_iter()
        .filter(|(_, xs)| xs.iter().any(|x| *x != xs[0]))
        .map(|(l, _)| l.clone())
        .collect()
}

fn short(label: &str) -> &str {
    label.split_once('.').map_or(label, |(_, p)| p)
}

/// φ's importance of each quality dimension, one bar per variant.
fn importances(page: &mut Page, rows: &[ShowRow]) {
    page.section("importances", "Importances");
    let with: Vec<&ShowRow> = rows
        .iter()
        .filter(|r| r.metrics.keys().any(|k| k.starts_with("importance.")))
        .collect();
    if with.is_empty() {
        page.note("no reward model with importances");
        return;
    }
    let dims: Vec<String> = with[0]
        .metrics
        .keys()
        .filter(|k| k.starts_with("importance."))
        .cloned()
        .collect();
    for chunk in with.chunks(MAX_LINES).take(4) {
        let series: Vec<(String, Vec<f64>)> = chunk
            .iter()
            .map(|r| {
                (
                    r.id.clone(),
                    dims.iter()
                        .map(|d| r.metrics.get(d).copied().unwrap_or(f64::NAN))
                        .collect(),
                )
            })
            .collect();
        let cats: Vec<String> = dims
            .iter()
            .map(|d| d["importance.".len()..].to_string())
            .collect();
        page.figure(
            &bar_chart_svg("importance of each dimension", &cats, &series),
            "linear weights, or for an MLP the mean of gradient × input",
        );
    }
    if with.len() > 4 * MAX_LINES {
        page.note(&format!(
            "the first {} of {} reward models",
            4 * MAX_LINES,
            with.len()
        ));
    }
}

fn evaluations(page: &mut Page, plan: &Plan, cache: &Cache, rows: &[ShowRow]) {
    page.section("evaluation", "Evaluation");
    let evals: Vec<(usize, &ShowRow)> = rows
        .iter()
        .enumerate()
        .filter(|(_, r)| r.kind == "eval" && r.output.is_some())
        .collect();
    if evals.is_empty() {
        page.note("no finished evaluation");
    }
    for (i, r) in evals.into_iter().take(MAX_LINES) {
        let dir = cache.artifact_dir(r.output.as_deref().unwrap_or_default());
        page.subheading(&r.id);
        let models = super::commands::comparison_models(&dir).unwrap_or_default();
        page.table(&super::commands::comparison(r, &models));
        if let Some(t) = samples(plan, cache, i, &dir) {
            page.text_table(&t);
        }
    }
    let judged = rows
        .iter()
        .filter(|r| r.kind == "preference" && r.output.is_some());
    for r in judged.take(MAX_LINES) {
        let dir = cache.artifact_dir(r.output.as_deref().unwrap_or_default());
        if let Some(j) = super::commands::preference_pairs(&dir) {
            page.subheading(&format!("{} (pairwise preference)", r.id));
            page.table(&super::commands::preferences(r, &j));
        }
    }
}

/// The first products an evaluation scored: a few reviews, the first
/// reference and each model's summary, one column per product.
fn samples(plan: &Plan, cache: &Cache, eval: usize, dir: &Path) -> Option<Table> {
    let text = std::fs::read_to_string(dir.join("summaries.jsonl")).ok()?;
    let scored: Vec<serde_json::Value> = text
        .lines()
        .take(SAMPLES)
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let products = upstream_products(plan, cache, eval);
    let mut t = Table {
        columns: vec![String::new()],
        rows: Vec::new(),
    };
    let mut reviews = vec![Cell::Text("reviews".into())];
    let mut reference = vec![Cell::Text("reference".into())];
    let mut by_model: BTreeMap<String, Vec<Cell>> = BTreeMap::new();
    for s in &scored {
        let id = s["product"].as_str().unwrap_or_default();
        t.columns.push(format!("product {}", clip(id, 13)));
        let shown: Vec<String> = products
            .get(id)
            .map(|p| p.iter().take(3).map(|r| clip(r, 240)).collect())
            .unwrap_or_default();
        reviews.push(Cell::Text(shown.join(" / ")));
        reference.push(Cell::Text(
            s["references"][0].as_str().unwrap_or_default().to_string(),
        ));
        for (m, text) in s["summaries"].as_object().into_iter().flatten() {
            by_model
                .entry(m.clone())
                .or_insert_with(|| vec![Cell::Text(m.clone())])
                .push(Cell::Text(text.as_str().unwrap_or_default().to_string()));
        }
    }
    t.rows.extend([reviews, reference]);
    t.rows.extend(by_model.into_values());
    (!scored.is_empty()).then_some(t)
}

/// The reviews of each product, from the dataset results upstream of `node`.
fn upstream_products(plan: &Plan, cache: &Cache, node: usize) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    for j in plan.pipeline.upstream_closure(&[node]) {
        let Status::Cached(rec) = &plan.statuses[j] else {
            continue;
        };
        if plan.pipeline.nodes[j].kind.name != "dataset" {
            continue;
        }
        let products =
            crate::stages::formats::dataset::read_products(&cache.artifact_dir(&rec.output));
        for p in products.into_iter().flatten() {
            out.entry(p.id).or_insert(p.reviews);
        }
    }
    out
}
