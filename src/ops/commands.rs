//! The commands whose output is more than one call: `show`, the tables
//! after `run`, `cache verify` and `cache gc` reports, `plugins`.

use std::path::{Path, PathBuf};

use crate::cache::Cache;
use crate::error::{Diag, Diags};
use crate::exec::Plan;

use super::{
    ShowRow, aggregate, fitted_text, fmt_bytes, load_plan, plot_rows, plugin_doc, plugins_list,
    registry_for, resolve_labels, rows_table, select_metrics, show_json_rows, show_rows,
};

/// How `show` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShowFormat {
    Table,
    Json,
    Csv,
    Md,
}

/// What `show` is asked for.
#[derive(Debug, Clone)]
pub struct ShowRequest {
    pub format: ShowFormat,
    /// Swept parameters to average over.
    pub aggregate: Vec<String>,
    /// Metric names, prefixes or globs to keep.
    pub metrics: Vec<String>,
    /// The text table: one wide table instead of one fitted to `width`.
    pub wide: bool,
    /// Columns the text table may use.
    pub width: usize,
    /// `PARAM:METRIC` to plot.
    pub plot: Option<String>,
    pub plot_out: Option<PathBuf>,
}

/// What `show` prints: the text for stdout, and a note for stderr.
pub struct Shown {
    pub text: String,
    pub note: Option<String>,
}

/// `show`: the table (or JSON, CSV, Markdown), the evaluation tables, the plot.
pub fn show(plan: &Plan, cache: &Cache, req: &ShowRequest) -> Result<Shown, Diags> {
    let mut rows = show_rows(plan);
    // The comparison tables keep every metric, whatever `--metrics` selects.
    let mut compared = rows.clone();
    if !req.aggregate.is_empty() {
        let mut labels = Vec::new();
        for a in &req.aggregate {
            let found = resolve_labels(plan, a);
            if found.is_empty() {
                return Err(Diag::input(
                    "E-AGGREGATE",
                    format!(
                        "`{a}` is not a swept parameter of `{}`",
                        plan.experiment_name()
                    ),
                )
                .with_help(
                    "aggregate over a parameter that a `vary` line sweeps, e.g. `--aggregate seed`",
                )
                .into());
            }
            labels.extend(found);
        }
        rows = aggregate(&rows, &labels);
        compared = aggregate(&compared, &labels);
    }
    select_metrics(&mut rows, &req.metrics).map_err(|m| {
        Diag::input("E-METRICS", m)
            .with_help("`--metrics` takes names, prefixes and globs such as `val_*,accuracy`")
    })?;
    let text = match req.format {
        ShowFormat::Json => format!("{}\n", show_json_rows(plan.experiment_name(), &rows, cache)),
        ShowFormat::Table => format!(
            "{}{}",
            if req.wide {
                rows_table(&rows).to_text()
            } else {
                fitted_text(&rows, req.width)
            },
            comparisons_of(plan, cache, &compared, false)
        ),
        ShowFormat::Csv => rows_table(&rows).to_csv(),
        ShowFormat::Md => format!(
            "{}{}",
            rows_table(&rows).to_markdown(),
            comparisons_of(plan, cache, &compared, true)
        ),
    };
    let note = match &req.plot {
        Some(spec) => {
            let path = req.plot_out.clone().unwrap_or_else(|| {
                let (x, y) = spec.split_once(':').unwrap_or((spec, ""));
                // A file in the working folder, whatever the names hold.
                let safe = |s: &str| -> String {
                    s.chars()
                        .map(|c| {
                            if c.is_alphanumeric() || "-_.".contains(c) {
                                c
                            } else {
                                '_'
                            }
                        })
                        .collect()
                };
                let name = format!(
                    "{}-{}-by-{}.svg",
                    safe(plan.experiment_name()),
                    safe(y),
                    safe(x)
                );
                PathBuf::from(name.trim_start_matches('.'))
            });
            Some(plot_rows(plan, &rows, spec, &path)?)
        }
        None => None,
    };
    Ok(Shown { text, note })
}

/// The model comparison tables of the plan's finished evaluation stages,
/// each under its stage id, as text or (`markdown`) Markdown.
pub fn eval_comparisons(plan: &Plan, cache: &Cache, markdown: bool) -> String {
    comparisons_of(plan, cache, &show_rows(plan), markdown)
}

/// The comparison tables of `rows`; an aggregated row (several seeds) shows
/// each number as its mean ± standard deviation.
fn comparisons_of(plan: &Plan, cache: &Cache, rows: &[ShowRow], markdown: bool) -> String {
    let mut text = String::new();
    for row in rows {
        let Some(d) = row.output.as_ref().or_else(|| member_output(plan, row)) else {
            continue;
        };
        let dir = cache.artifact_dir(d);
        let table = match row.kind.as_str() {
            "eval" => comparison_models(&dir).map(|models| comparison(row, &models)),
            "preference" => preference_pairs(&dir).map(|pairs| preferences(row, &pairs)),
            _ => None,
        };
        let Some(table) = table else { continue };
        let shown = if markdown {
            table.to_markdown()
        } else {
            table.to_text()
        };
        text.push_str(&format!("\n{}\n{shown}", row.id));
    }
    text
}

/// The stored result of some variant an aggregated row stands for: its
/// variants compared the same models, so any one's list serves.
fn member_output<'a>(plan: &'a Plan, row: &ShowRow) -> Option<&'a String> {
    plan.pipeline
        .nodes
        .iter()
        .zip(&plan.statuses)
        .filter(|(n, _)| n.stage == row.stage)
        .find_map(|(_, st)| match st {
            crate::exec::Status::Cached(rec) => Some(&rec.output),
            crate::exec::Status::Run(_) | crate::exec::Status::Remote(_) => None,
        })
}

/// A metric's cell: the number, or with a spread (over seeds) `mean ± sd`.
fn metric_cell(row: &ShowRow, key: &str) -> crate::report::Cell {
    use crate::report::{Cell, fmt_number};
    match (row.metrics.get(key), row.spread.get(key)) {
        (Some(v), Some(sd)) => Cell::Text(format!("{} ± {}", fmt_number(*v), fmt_spread(*v, *sd))),
        (Some(v), None) => Cell::Number(*v),
        _ => Cell::Empty,
    }
}

/// A standard deviation at the precision of its mean (`0.0564 ± 0.0006`, not `± 5.918e-4`).
fn fmt_spread(mean: f64, sd: f64) -> String {
    let fixed = mean.fract() != 0.0 && (1e-3..1e6).contains(&mean.abs());
    if fixed {
        format!("{sd:.4}")
    } else {
        crate::report::fmt_number(sd)
    }
}

/// What an evaluation compared (its `comparison.json`).
#[derive(Debug, Clone, Default)]
pub(super) struct Compared {
    /// The models, baseline first.
    pub models: Vec<String>,
    /// The reward models, headline first.
    pub reward_models: Vec<String>,
}

/// The models and reward models an evaluation compared; `None` when the
/// result has no `comparison.json`.
pub(super) fn comparison_models(dir: &Path) -> Option<Compared> {
    let text = std::fs::read_to_string(dir.join("comparison.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    let list = |k: &str| serde_json::from_value(v[k].clone()).unwrap_or_default();
    Some(Compared {
        models: list("models"),
        reward_models: list("reward_models"),
    })
}

/// One row per model and stored system, one column per measure; with
/// several reward models, a reward and a win rate column for each.
pub(super) fn comparison(row: &ShowRow, compared: &Compared) -> crate::report::Table {
    use crate::report::{Cell, Table};
    let models = &compared.models;
    let base = models.first().cloned().unwrap_or_default();
    let mut cols: Vec<(String, String)> = [
        ("ROUGE-1", "rouge1"),
        ("ROUGE-2", "rouge2"),
        ("ROUGE-L", "rougeL"),
        ("ROUGE-L (1st ref)", "rougeL_first_ref"),
    ]
    .iter()
    .map(|(h, k)| (h.to_string(), k.to_string()))
    .collect();
    if compared.reward_models.len() > 1 {
        for rm in &compared.reward_models {
            cols.push((format!("reward {rm}"), format!("reward.{rm}")));
            cols.push((format!("win {rm}"), format!("win_rate_vs_{base}.{rm}")));
        }
    } else {
        cols.push(("reward".into(), "reward".into()));
        cols.push(("win rate".into(), format!("win_rate_vs_{base}")));
    }
    cols.push(("KL".into(), format!("kl_vs_{base}")));
    cols.push(("words".into(), "length".into()));
    let mut t = Table {
        columns: std::iter::once("model".to_string())
            .chain(cols.iter().map(|(h, _)| h.to_string()))
            .collect(),
        rows: Vec::new(),
    };
    let m = &row.metrics;
    let cell = |k: String| metric_cell(row, &k);
    for name in models {
        let mut row = vec![Cell::Text(name.clone())];
        row.extend(cols.iter().map(|(_, k)| cell(format!("{name}.{k}"))));
        t.rows.push(row);
    }
    for k in m
        .keys()
        .filter(|k| k.starts_with("system.") && k.ends_with(".rougeL"))
    {
        let name = &k["system.".len()..k.len() - ".rougeL".len()];
        let mut row = vec![Cell::Text(format!("{name} (stored outputs)"))];
        row.extend(cols.iter().map(|(_, c)| {
            if c == "rougeL" {
                cell(k.clone())
            } else {
                Cell::Empty
            }
        }));
        t.rows.push(row);
    }
    t
}

/// What a preference stage judged (its `preference.json`).
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub(super) struct Judgements {
    /// (model, baseline) pairs.
    pub pairs: Vec<(String, String)>,
    /// The judges: `llm`, or the reward models, headline first.
    #[serde(default)]
    pub judges: Vec<String>,
    /// The interval's coverage.
    #[serde(default)]
    pub confidence: f64,
}

/// The pairs a preference stage judged; `None` without `preference.json`.
pub(super) fn preference_pairs(dir: &Path) -> Option<Judgements> {
    let text = std::fs::read_to_string(dir.join("preference.json")).ok()?;
    serde_json::from_str(&text).ok()
}

/// One row per (model, baseline) and judge: the win rate, its interval,
/// wins, ties, losses and, for an LLM judge, how often both orders agreed.
pub(super) fn preferences(row: &ShowRow, j: &Judgements) -> crate::report::Table {
    use crate::report::{Cell, Table};
    let pct = (j.confidence * 100.0).round();
    let mut t = Table {
        columns: [
            "model",
            "vs",
            "judge",
            "win rate",
            &format!("{pct}% low"),
            &format!("{pct}% high"),
            "wins",
            "ties",
            "losses",
            "order agreement",
        ]
        .iter()
        .map(|c| c.to_string())
        .collect(),
        rows: Vec::new(),
    };
    let several = j.judges.len() > 1;
    for judge in &j.judges {
        let suffix = if several {
            format!(".{judge}")
        } else {
            String::new()
        };
        for (model, base) in &j.pairs {
            let cell = |what: &str| metric_cell(row, &format!("{model}.{what}{suffix}"));
            t.rows.push(vec![
                Cell::Text(model.clone()),
                Cell::Text(base.clone()),
                Cell::Text(judge.clone()),
                cell(&format!("win_rate_vs_{base}")),
                cell(&format!("win_rate_vs_{base}.low")),
                cell(&format!("win_rate_vs_{base}.high")),
                cell(&format!("wins_vs_{base}")),
                cell(&format!("ties_vs_{base}")),
                cell(&format!("losses_vs_{base}")),
                cell(&format!("order_agreement_vs_{base}")),
            ]);
        }
    }
    t
}

/// After `run`: the evaluation tables, from a fresh plan (their results now exist).
pub fn comparisons_after_run(
    file: &Path,
    cache: &Cache,
    req: &super::PlanRequest,
    ran: &Plan,
) -> String {
    let has_eval = ran
        .pipeline
        .nodes
        .iter()
        .any(|n| n.kind.name == "eval" || n.kind.name == "preference");
    if !has_eval {
        return String::new();
    }
    let req = super::PlanRequest {
        force: &[],
        remote: super::RemoteChoice::Off,
        ..*req
    };
    match load_plan(file, cache, &req) {
        Ok(after) => eval_comparisons(&after, cache, false),
        Err(_) => String::new(),
    }
}

/// How many stages `run --only` selects (all without it).
pub fn selected_nodes(plan: &Plan, only: &[String]) -> Result<Vec<usize>, Diags> {
    if only.is_empty() {
        return Ok((0..plan.pipeline.nodes.len()).collect());
    }
    Ok(plan
        .pipeline
        .upstream_closure(&plan.pipeline.select(only)?)
        .into_iter()
        .collect())
}

/// The backend line, when a stage computes on a backend.
pub fn backend_note(plan: &Plan) -> Option<&str> {
    plan.pipeline
        .nodes
        .iter()
        .any(|n| n.kind.uses_backend())
        .then_some(plan.backend.note.as_str())
}

/// `cache verify`: the text for stdout (`all N artifacts intact`, or one
/// line per problem), and the error to exit with when there are problems.
pub fn cache_verify_report(cache: &Cache) -> Result<(String, Option<Diags>), Diags> {
    let (problems, n) = super::cache_verify(cache)?;
    if problems.is_empty() {
        return Ok((format!("all {n} artifacts intact\n"), None));
    }
    let d = Diag::new(
        crate::error::Category::Damaged,
        "E-CORRUPT",
        format!("{} problem(s) in {n} artifacts", problems.len()),
    )
    .with_help("the next `run` recomputes the stages whose results are damaged");
    let text = problems.iter().map(|p| format!("{p}\n")).collect();
    Ok((text, Some(d.into())))
}

/// `cache gc FILE...`: removes what those experiments do not use. It holds
/// the cache alone (`on_wait` is called when runs hold it first), so no run
/// uses or commits anything while it decides and deletes.
pub fn cache_gc_report(
    cache: &Cache,
    files: &[PathBuf],
    dry_run: bool,
    on_wait: impl FnOnce(),
) -> Result<String, Diags> {
    let _lease = if dry_run {
        None
    } else {
        Some(cache.lease_exclusive(on_wait)?)
    };
    let mut plans = Vec::new();
    for f in files {
        plans.push(load_plan(f, cache, &super::PlanRequest::default())?);
    }
    let r = super::cache_gc(cache, &plans, dry_run)?;
    let verb = if dry_run { "would remove" } else { "removed" };
    Ok(format!(
        "{verb} {} runs and {} artifacts, {} freed; kept {} runs used by {} experiment(s)\n",
        r.runs_removed,
        r.artifacts_removed,
        fmt_bytes(r.bytes_freed),
        r.runs_kept,
        files.len()
    ))
}

/// `plugins [KIND] [-e FILE]`.
pub fn plugins(kind: Option<&str>, experiment: Option<&Path>) -> Result<String, Diags> {
    let extra = match experiment {
        Some(f) => crate::dsl::load_experiment(f)?.plugin_dirs,
        None => Vec::new(),
    };
    let reg = registry_for(&extra)?;
    let Some(k) = kind else {
        return Ok(plugins_list(&reg));
    };
    match reg.get(k) {
        Some(m) => Ok(plugin_doc(m)),
        None => {
            let mut d = Diag::input("E-UNKNOWN-KIND", format!("unknown stage kind `{k}`"));
            d.help = Some(match reg.suggest(k) {
                Some(s) => format!("did you mean `{s}`?"),
                None => "`efrlhf plugins` lists the kinds; add `-e FILE` to include an experiment's plugin folders".into(),
            });
            Err(d.into())
        }
    }
}

/// `cache repair`: rebuilds the index from the results' own records.
pub fn cache_repair_report(cache: &Cache, on_wait: impl FnOnce()) -> Result<String, Diags> {
    let _lease = cache.lease_exclusive(on_wait)?;
    Ok(repair_text(&cache.repair()?))
}

/// What a repair did, in words.
pub fn repair_text(r: &crate::cache::RepairReport) -> String {
    let mut out = format!("rebuilt the index from {} result record(s)", r.runs);
    if let Some(aside) = &r.moved_aside {
        out.push_str(&format!(
            "; the damaged index is kept as `{}`",
            crate::error::display_path(aside).display()
        ));
    }
    if r.missing > 0 {
        out.push_str(&format!(
            "; {} record(s) whose result folder is gone or damaged were left out (those stages recompute)",
            r.missing
        ));
    }
    for p in &r.unreadable {
        out.push_str(&format!(
            "; unreadable record `{}`",
            crate::error::display_path(p).display()
        ));
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(metrics: &[(&str, f64)], spread: &[(&str, f64)]) -> ShowRow {
        let map = |xs: &[(&str, f64)]| xs.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        ShowRow {
            id: "eval".into(),
            stage: "eval".into(),
            kind: "eval".into(),
            status: "done".into(),
            variant: Default::default(),
            metrics: map(metrics),
            spread: map(spread),
            n: if spread.is_empty() { 1 } else { 3 },
            output: None,
        }
    }

    #[test]
    fn an_evaluation_over_seeds_shows_mean_and_standard_deviation() {
        let r = row(
            &[
                ("sft.rougeL", 0.17714),
                ("ppo.rougeL", 0.1834),
                ("ppo.win_rate_vs_sft", 0.76),
            ],
            &[("sft.rougeL", 0.003), ("ppo.rougeL", 0.0041)],
        );
        let compared = Compared {
            models: vec!["sft".into(), "ppo".into()],
            reward_models: vec!["phi".into()],
        };
        let text = comparison(&r, &compared).to_text();
        assert!(text.contains("0.1771 ± 0.0030"), "{text}");
        assert!(text.contains("0.1834 ± 0.0041"), "{text}");
        let small = row(&[("sft.rouge2", 0.0564)], &[("sft.rouge2", 0.000_59)]);
        assert!(
            comparison(&small, &compared)
                .to_text()
                .contains("0.0564 ± 0.0006")
        );
        // A number without a spread (one seed had it) stays a plain number.
        assert!(
            text.contains("0.7600") && !text.contains("0.7600 ±"),
            "{text}"
        );
    }

    #[test]
    fn the_preference_table_has_a_row_per_pair_and_judge() {
        let r = row(
            &[
                ("ppo.win_rate_vs_sft.phi", 0.75),
                ("ppo.win_rate_vs_sft.low.phi", 0.68),
                ("ppo.win_rate_vs_sft.high.phi", 0.82),
                ("ppo.wins_vs_sft.phi", 100.0),
                ("ppo.win_rate_vs_sft.naive", 0.4),
            ],
            &[],
        );
        let j = Judgements {
            pairs: vec![("ppo".into(), "sft".into())],
            judges: vec!["phi".into(), "naive".into()],
            confidence: 0.95,
        };
        let t = preferences(&r, &j);
        assert_eq!(t.columns[4], "95% low");
        assert_eq!(t.rows.len(), 2);
        let text = t.to_text();
        assert!(text.contains("0.6800") && text.contains("0.8200") && text.contains("100"));
        assert!(text.contains("naive") && text.contains("0.4000"), "{text}");
    }
}
