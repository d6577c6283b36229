//! The operations behind each command. The CLI parses arguments and calls
//! these; they return values or text and never touch the terminal (a run's
//! events go to the sink the CLI passes).

mod cache_ops;
mod commands;
mod eta;
mod explain;
mod remote_cmd;
mod report_cmd;
mod rouge_cmd;
mod show;
mod tracking;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use cache_ops::{cache_du, cache_gc, cache_ls, cache_verify};
pub use commands::{
    ShowFormat, ShowRequest, backend_note, cache_gc_report, cache_repair_report,
    cache_verify_report, comparisons_after_run, plugins, repair_text, selected_nodes, show,
};
pub use eta::RunEta;
pub use explain::explain;
pub use remote_cmd::{
    RemoteChoice, cache_ls_remote, cache_pull, cache_push, open_remote, push_after_run,
};
pub use report_cmd::report;
pub use rouge_cmd::{rouge_files, rouge_json, rouge_text};
pub use show::{
    ShowRow, aggregate, fitted_text, resolve_labels, rows_table, select_metrics, show_json_rows,
    show_rows,
};
pub use tracking::TrackingSink;

use crate::cache::Cache;
use crate::dsl::{Manifest, Registry, apply_sets, glob_set, load_experiment};
use crate::error::{Diag, Diags};
use crate::exec::{Plan, PlanOptions, Status, plan, resolve_backend};
use crate::graph::{Pipeline, build};

/// `$EFRLHF_CACHE`, else `cache/` in the working directory.
pub fn default_cache_dir() -> PathBuf {
    std::env::var_os("EFRLHF_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("cache"))
}

/// Extra plugin folders from `$EFRLHF_PLUGIN_PATH` (colon-separated).
pub fn env_plugin_dirs() -> Vec<PathBuf> {
    std::env::var_os("EFRLHF_PLUGIN_PATH")
        .map(|p| std::env::split_paths(&p).filter(|d| d.is_dir()).collect())
        .unwrap_or_default()
}

/// The registry for an experiment: built-ins, `$EFRLHF_PLUGIN_PATH`, and its `plugins` folders.
pub fn registry_for(extra: &[PathBuf]) -> Result<Registry, Diags> {
    let mut dirs = env_plugin_dirs();
    dirs.extend(extra.iter().cloned());
    Registry::load(&crate::stages::builtins::builtin_manifests(), &dirs)
}

/// What a command asks of an experiment besides its file.
#[derive(Clone, Copy, Default)]
pub struct PlanRequest<'a> {
    /// `--backend`: else the experiment's, else `auto`.
    pub backend: Option<&'a str>,
    /// `--force`: stages planned as if their results were not stored.
    pub force: &'a [String],
    /// `--set STAGE.PARAM=VALUE`, applied as if the file said so.
    pub set: &'a [String],
    /// Under a cluster executor, the backend class of the stages its nodes compute.
    pub class_of: Option<&'a crate::exec::ClassOf>,
    /// `--remote[=URL]`: whether (and which) shared remote to look in.
    pub remote: RemoteChoice<'a>,
}

/// Reads, validates and expands an experiment, with its `--set` values.
pub fn load_pipeline(file: &Path, set: &[String]) -> Result<Pipeline, Diags> {
    let mut exp = load_experiment(file)?;
    apply_sets(&mut exp, set)?;
    let registry = registry_for(&exp.plugin_dirs)?;
    let pipeline = build(exp, registry)?;
    check_glob_sets(&pipeline, set)?;
    Ok(pipeline)
}

/// A `--set` over a glob of stages must reach at least one stage whose kind
/// has the parameter (else a typo would change nothing).
fn check_glob_sets(pipeline: &Pipeline, sets: &[String]) -> Result<(), Diags> {
    for (set, (stages, param)) in sets.iter().filter_map(|s| Some((s, glob_set(s)?))) {
        let pattern = glob::Pattern::new(stages).ok();
        let matched: Vec<_> = pipeline
            .nodes
            .iter()
            .filter(|n| pattern.as_ref().is_some_and(|p| p.matches(&n.stage)))
            .collect();
        if matched.iter().any(|n| n.kind.param(param).is_some()) {
            continue;
        }
        let known: Vec<&str> = matched
            .iter()
            .flat_map(|n| n.kind.params.iter().map(|p| p.name.as_str()))
            .collect();
        let help = match crate::error::did_you_mean(param, known.iter().copied()) {
            Some(s) => format!("did you mean `{s}`?"),
            None => "`efrlhf plugins KIND` lists a kind's parameters".to_string(),
        };
        return Err(Diag::input(
            "E-UNKNOWN-PARAM",
            format!("`--set {set}`: no stage matching `{stages}` has a parameter `{param}`"),
        )
        .with_help(help)
        .into());
    }
    Ok(())
}

/// Loads an experiment and computes its plan against `cache`.
pub fn load_plan(file: &Path, cache: &Cache, req: &PlanRequest) -> Result<Plan, Diags> {
    let pipeline = load_pipeline(file, req.set)?;
    let remote = open_remote(req.remote, pipeline.experiment.remote.as_ref())?;
    plan_pipeline(pipeline, cache, req, remote)
}

/// Plans a loaded pipeline, looking in `remote` (already opened) if given.
fn plan_pipeline(
    pipeline: Pipeline,
    cache: &Cache,
    req: &PlanRequest,
    remote: Option<std::sync::Arc<crate::cache::remote::Remote>>,
) -> Result<Plan, Diags> {
    let requested = req
        .backend
        .map(str::to_string)
        .or_else(|| pipeline.experiment.backend.as_ref().map(|(b, _)| b.clone()));
    let backend = resolve_backend(requested.as_deref())?;
    plan(
        pipeline,
        cache,
        backend,
        &PlanOptions {
            force: req.force.to_vec(),
            class_of: req.class_of.cloned(),
            remote,
        },
    )
}

/// `plan --json`: `{"experiment", "stages": [{"id", "kind", "key", "status",
/// "reason", "reasons", "message", "inputs", "roles"}]}`; `reason` is the
/// first of the typed `reasons` (`null` when cached), `message` says it for
/// people, `roles` (kinds with named inputs) maps each role to its inputs.
pub fn plan_json(plan: &Plan) -> String {
    let stages: Vec<PlanStage> = plan
        .pipeline
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let (status, reasons, message) = match &plan.statuses[i] {
                Status::Cached(_) => ("cached", Vec::new(), "result stored".to_string()),
                Status::Remote(_) => ("remote", Vec::new(), "result on the remote".to_string()),
                Status::Run(r) => ("run", r.items(), r.to_string()),
            };
            let inputs: Vec<&str> = n
                .inputs
                .iter()
                .map(|&u| plan.pipeline.nodes[u].id.as_str())
                .collect();
            let mut roles: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
            for (input, role) in inputs.iter().zip(&n.roles) {
                if let Some(role) = role {
                    roles.entry(role.as_str()).or_default().push(input);
                }
            }
            PlanStage {
                id: &n.id,
                kind: &n.kind.name,
                key: plan.keys[i].as_deref(),
                status,
                reason: reasons.first().cloned(),
                reasons,
                message,
                inputs,
                roles,
            }
        })
        .collect();
    let json = PlanJson {
        experiment: plan.experiment_name(),
        stages,
        hub: hub_json(plan),
    };
    // Plain data with string keys: serialising cannot fail.
    serde_json::to_string(&json).unwrap_or_default()
}

/// `plan --json`, typed (serialised as it is built, for large sweeps).
#[derive(serde::Serialize)]
struct PlanJson<'a> {
    experiment: &'a str,
    stages: Vec<PlanStage<'a>>,
    /// `hf://` parameters: how they resolved, and what `run` would download.
    #[serde(skip_serializing_if = "Option::is_none")]
    hub: Option<serde_json::Value>,
}

/// The stages `run` would compute (all of them, `--only` aside).
fn stages_to_run(plan: &Plan) -> std::collections::BTreeSet<usize> {
    (0..plan.pipeline.nodes.len())
        .filter(|&n| !plan.statuses[n].is_cached() || plan.forced.contains(&n))
        .collect()
}

/// `plan --json`'s `hub`: `{"resolved": [{"stage", "param", "uri", "repo",
/// "revision", "commit", "source"}], "downloads": [{"repo", "commit", "file",
/// "size"}], "download_bytes", "notes"}`.
fn hub_json(plan: &Plan) -> Option<serde_json::Value> {
    if plan.hub.uses.is_empty() {
        return None;
    }
    let resolved: Vec<serde_json::Value> = plan
        .hub
        .uses
        .iter()
        .map(|u| {
            let (commit, source) = match &u.resolved {
                Some((r, _)) => (
                    Some(r.commit.clone()),
                    match r.provenance {
                        crate::hub::Provenance::Hub => "hub",
                        crate::hub::Provenance::Pinned => "pinned",
                        crate::hub::Provenance::LastKnown { .. } => "last-known",
                    },
                ),
                None => (None, "unresolved"),
            };
            serde_json::json!({
                "stage": plan.pipeline.nodes[u.node].id,
                "param": u.param,
                "uri": u.uri.to_string(),
                "repo": u.uri.repo_label(),
                "revision": u.uri.revision(),
                "commit": commit,
                "source": source,
            })
        })
        .collect();
    let todo = plan.hub.missing(&stages_to_run(plan));
    let downloads: Vec<serde_json::Value> = todo
        .iter()
        .map(|m| {
            serde_json::json!({"repo": m.uri.repo_label(), "commit": m.commit, "file": m.file.path, "size": m.file.size})
        })
        .collect();
    Some(serde_json::json!({
        "resolved": resolved,
        "downloads": downloads,
        "download_bytes": todo.iter().map(|m| m.file.size).sum::<u64>(),
        "requests": plan.hub.requests(),
        "notes": plan.hub.notes(),
    }))
}

/// `plan`'s lines about the Hub: notes, then what `run` would download.
fn hub_text(plan: &Plan) -> String {
    let mut out = String::new();
    for n in plan.hub.notes() {
        out.push_str(&format!("note: {n}\n"));
    }
    let to_run = stages_to_run(plan);
    let todo = plan.hub.missing(&to_run);
    if !todo.is_empty() {
        out.push_str(&format!(
            "run would first download {} file(s) from the Hub:\n{}\n",
            todo.len(),
            crate::exec::missing_list(&todo)
        ));
    }
    for u in plan.hub.unresolved(&to_run) {
        out.push_str(&format!(
            "run needs the Hub to resolve `{}` (size unknown until then)\n",
            u.uri
        ));
    }
    out
}

#[derive(serde::Serialize)]
struct PlanStage<'a> {
    id: &'a str,
    kind: &'a str,
    key: Option<&'a str>,
    status: &'static str,
    reason: Option<crate::exec::ReasonItem>,
    reasons: Vec<crate::exec::ReasonItem>,
    message: String,
    inputs: Vec<&'a str>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    roles: BTreeMap<&'a str, Vec<&'a str>>,
}

/// `plan` for people.
pub fn plan_text(plan: &Plan) -> String {
    let mut out = String::new();
    let n = plan.pipeline.nodes.len();
    let cached = plan.count_cached();
    let remote = plan
        .statuses
        .iter()
        .filter(|s| matches!(s, Status::Remote(_)))
        .count();
    let on_remote = match &plan.remote {
        Some(r) => format!(", {remote} on the remote ({})", r.shown()),
        None => String::new(),
    };
    out.push_str(&format!(
        "experiment `{}` ({}): {n} stages, {cached} cached{on_remote}, {} to run\n",
        plan.experiment_name(),
        plan.pipeline.experiment.source.path.display(),
        n - cached - remote
    ));
    let width = plan
        .pipeline
        .nodes
        .iter()
        .map(|n| n.id.chars().count())
        .max()
        .unwrap_or(0)
        .min(60);
    let kwidth = plan
        .pipeline
        .nodes
        .iter()
        .map(|n| n.kind.name.chars().count())
        .max()
        .unwrap_or(0)
        .min(40);
    for (i, node) in plan.pipeline.nodes.iter().enumerate() {
        let (status, why) = match &plan.statuses[i] {
            Status::Cached(_) => ("cached", String::new()),
            Status::Remote(_) => ("remote", "pulled from the remote".to_string()),
            Status::Run(r) => ("run", r.to_string()),
        };
        out.push_str(
            format!(
                "  {status:<6}  {:<width$}  {:<kwidth$}  {why}\n",
                node.id, node.kind.name
            )
            .trim_end(),
        );
        out.push('\n');
    }
    out.push_str(&hub_text(plan));
    out
}

/// `plugins`: one line per kind.
pub fn plugins_list(reg: &Registry) -> String {
    let mut t = crate::report::Table {
        columns: vec!["kind".into(), "version".into(), "from".into(), "doc".into()],
        rows: vec![],
    };
    for m in reg.all() {
        let from = if m.dir.is_some() {
            m.source.path.display().to_string()
        } else {
            "built-in".into()
        };
        t.rows.push(vec![
            crate::report::Cell::Text(m.name.clone()),
            crate::report::Cell::Text(m.version.clone()),
            crate::report::Cell::Text(from),
            crate::report::Cell::Text(m.doc.clone()),
        ]);
    }
    t.to_text()
}

/// `plugins KIND`: the kind's documentation, identity, inputs and parameters.
pub fn plugin_doc(m: &Manifest) -> String {
    let mut out = format!("{} (version {})\n", m.name, m.version);
    if !m.doc.is_empty() {
        out.push_str(&format!("  {}\n", m.doc));
    }
    match &m.exec {
        crate::dsl::Exec::Program { written, .. } => {
            out.push_str(&format!("  runs: {}\n", written.join(" ")))
        }
        crate::dsl::Exec::Builtin { name } => {
            out.push_str(&format!("  built-in: {name}\n"));
            out.push_str(&builtin_identity(name));
        }
    }
    out.push_str(&format!("  manifest: {}\n", m.source.path.display()));
    out.push_str(&format!("  produces: {}\n", m.produces.described()));
    out.push_str(&inputs_doc(m));
    if !m.resources.is_empty() {
        out.push_str(&format!("  resources: {}\n", m.resources.join(", ")));
    }
    out.push_str(&params_doc(m));
    if !m.outputs.is_empty() {
        out.push_str("\noutputs:\n");
        for o in &m.outputs {
            out.push_str(&format!("  {}  {}\n", o.name, o.doc));
        }
    }
    out
}

/// The source identity of a built-in: its digest and what it is built from.
fn builtin_identity(name: &str) -> String {
    let Some(id) = crate::stages::builtins::builtin(name).and_then(|b| b.identity()) else {
        return "  identity: (none in this build)\n".into();
    };
    let files: Vec<&str> = id
        .files
        .iter()
        .filter_map(|f| f.rsplit_once(' ').map(|(p, _)| p))
        .collect();
    let crates: Vec<&str> = id
        .crates
        .iter()
        .filter(|c| {
            [
                "burn ",
                "tokenizers ",
                "vader_sentiment ",
                "nltk-porter ",
                "safetensors ",
            ]
            .iter()
            .any(|k| c.starts_with(k))
        })
        .copied()
        .collect();
    format!(
        "  identity: {} (from the source of {} files and {} locked crates)\n  sources: {}\n  crates: {}{}\n",
        &id.digest[..16],
        files.len(),
        id.crates.len(),
        files.join(", "),
        crates.join(", "),
        if id.crates.len() > crates.len() {
            ", ..."
        } else {
            ""
        }
    )
}

/// The kind's inputs: its roles, or how many positional inputs it takes.
fn inputs_doc(m: &Manifest) -> String {
    if m.roles.is_empty() {
        let inputs = match m.max_inputs {
            Some(max) if max == m.min_inputs => format!("exactly {max}"),
            Some(max) => format!("{} to {max}", m.min_inputs),
            None => format!("at least {}", m.min_inputs),
        };
        return format!("  inputs: {inputs}\n");
    }
    let mut out = String::from(
        "\ninputs (by role; `input \"STAGE\" role=\"ROLE\"`, or by format when unambiguous):\n",
    );
    let mut t = crate::report::Table {
        columns: vec!["role".into(), "format".into(), "count".into(), "doc".into()],
        rows: vec![],
    };
    for r in &m.roles {
        t.rows.push(vec![
            crate::report::Cell::Text(r.name.clone()),
            crate::report::Cell::Text(r.format.name().into()),
            crate::report::Cell::Text(r.arity().into()),
            crate::report::Cell::Text(r.doc.clone()),
        ]);
    }
    out.push_str(&t.to_text());
    out
}

/// The parameter table.
fn params_doc(m: &Manifest) -> String {
    let mut out = String::new();
    out.push_str("\nparameters:\n");
    let mut t = crate::report::Table {
        columns: vec!["name".into(), "type".into(), "default".into(), "doc".into()],
        rows: vec![],
    };
    for p in &m.params {
        let mut doc = p.doc.clone();
        if !p.choices.is_empty() {
            doc.push_str(&format!(
                " (one of: {})",
                p.choices
                    .iter()
                    .map(|c| c.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if p.min.is_some() || p.max.is_some() {
            doc.push_str(&format!(
                " (range {}..{})",
                p.min.map(|x| x.to_string()).unwrap_or_default(),
                p.max.map(|x| x.to_string()).unwrap_or_default()
            ));
        }
        t.rows.push(vec![
            crate::report::Cell::Text(p.name.clone()),
            crate::report::Cell::Text(p.ty.to_string()),
            crate::report::Cell::Text(
                p.default
                    .as_ref()
                    .map(|d| d.to_string())
                    .unwrap_or_else(|| "(required)".into()),
            ),
            crate::report::Cell::Text(doc.trim().to_string()),
        ]);
    }
    out.push_str(&t.to_text());
    out
}

/// Formats unix seconds as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn fmt_time(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil-from-days (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Human byte counts.
pub fn fmt_bytes(b: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut x = b as f64;
    let mut u = 0;
    while x >= 1024.0 && u < units.len() - 1 {
        x /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{x:.1} {}", units[u])
    }
}

/// Variant labels of a plan's nodes as columns (`times` -> values by node).
pub fn variant_columns(plan: &Plan) -> Vec<String> {
    let mut cols: Vec<String> = Vec::new();
    for n in &plan.pipeline.nodes {
        for (label, _) in &n.variant {
            if !cols.contains(label) {
                cols.push(label.clone());
            }
        }
    }
    cols
}

/// `show --plot X:Y`: one line per group of the other varied parameters.
pub fn plot_rows(plan: &Plan, rows: &[ShowRow], spec: &str, out: &Path) -> Result<String, Diags> {
    let bad = |msg: String| -> Diags {
        crate::error::Diag::input("E-PLOT", msg)
            .with_help("write `--plot PARAM:METRIC`, e.g. `--plot train-pairs:accuracy`")
            .into()
    };
    let (x, y) = spec
        .split_once(':')
        .ok_or_else(|| bad(format!("`{spec}` is not PARAM:METRIC")))?;
    let labels = resolve_labels(plan, x);
    let label = match labels.as_slice() {
        [one] => one.clone(),
        [] => {
            return Err(bad(format!(
                "`{x}` is not a swept parameter of `{}`",
                plan.experiment_name()
            )));
        }
        _ => return Err(bad(format!("`{x}` is ambiguous: {}", labels.join(", ")))),
    };
    let all: Vec<&ShowRow> = rows.iter().collect();
    let series = show::series_by(&all, &label, y);
    let title = format!("{}: {y} by {x}", plan.experiment_name());
    crate::report::plot::line_plot_svg(out, &title, x, y, &series)
        .map_err(|e| Diags::from(crate::error::Diag::env("E-PLOT", e)))?;
    Ok(format!(
        "wrote {} ({} series)",
        crate::error::display_path(out).display(),
        series.len()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_times_and_sizes() {
        assert_eq!(fmt_time(0), "1970-01-01 00:00:00 UTC");
        // 2026-11-26 17:25:28 UTC, checked with `date -u -d @1795713928`.
        assert_eq!(fmt_time(1_795_713_928), "2026-11-26 17:25:28 UTC");
        assert_eq!(fmt_bytes(512), "512 B");
        assert_eq!(fmt_bytes(1536), "1.5 KiB");
    }
}
