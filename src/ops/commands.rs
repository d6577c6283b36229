//! The commands whose output is more than one call: `show`, the tables
//! after `run`, `cache verify` and `cache gc` reports, `plugins`.

use std::path::{Path, PathBuf};

use crate::cache::Cache;
use crate::error::{Diag, Diags};
use crate::exec::Plan;

use super::{
    aggregate, fitted_text, fmt_bytes, load_plan, plot_rows, plugin_doc, plugins_list,
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
            eval_comparisons(plan, cache, false)
        ),
        ShowFormat::Csv => rows_table(&rows).to_csv(),
        ShowFormat::Md => format!(
            "{}{}",
            rows_table(&rows).to_markdown(),
            eval_comparisons(plan, cache, true)
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
    let mut text = String::new();
    for row in show_rows(plan) {
        let (true, Some(d)) = (row.kind == "eval", &row.output) else {
            continue;
        };
        let Some(models) = comparison_models(&cache.artifact_dir(d)) else {
            continue;
        };
        let table = comparison(&row.metrics, &models);
        let shown = if markdown {
            table.to_markdown()
        } else {
            table.to_text()
        };
        text.push_str(&format!("\n{}\n{shown}", row.id));
    }
    text
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
pub(super) fn comparison(m: &crate::dsl::Metrics, compared: &Compared) -> crate::report::Table {
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
    let cell = |k: String| m.get(&k).map(|v| Cell::Number(*v)).unwrap_or(Cell::Empty);
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

/// After `run`: the evaluation tables, from a fresh plan (their results now exist).
pub fn comparisons_after_run(
    file: &Path,
    cache: &Cache,
    req: &super::PlanRequest,
    ran: &Plan,
) -> String {
    let has_eval = ran.pipeline.nodes.iter().any(|n| n.kind.name == "eval");
    if !has_eval {
        return String::new();
    }
    let req = super::PlanRequest { force: &[], ..*req };
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
