//! The command line: parses arguments, calls `ops`, prints. clap lives here only.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use miette::{GraphicalReportHandler, GraphicalTheme};

use crate::cache::Cache;
use crate::error::{Category, Diag, Diags};
use crate::exec::{Mode, Reporter, RunOptions};
use crate::ops;

#[derive(Parser, Debug)]
#[command(name = "efrlhf", version, about = "Declarative, incremental RLHF experiments", long_about = None)]
struct Cli {
    /// Cache folder [default: $EFRLHF_CACHE, else ./cache]
    #[arg(long, global = true, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run an experiment; stages whose results are stored are reused
    Run(RunArgs),
    /// Show what `run` would compute, and why
    Plan {
        file: PathBuf,
        /// One JSON object: {"stages": [{"id", "kind", "key", "status", "reason"}]}
        #[arg(long)]
        json: bool,
        /// Plan as if these stages were forced
        #[arg(long, value_name = "STAGE")]
        force: Vec<String>,
        #[arg(long, value_name = "BACKEND")]
        backend: Option<String>,
    },
    /// Say which parts of a stage's key changed since its last run
    Explain {
        file: PathBuf,
        stage: String,
        #[arg(long, value_name = "BACKEND")]
        backend: Option<String>,
    },
    /// Print the experiment's graph
    Graph {
        file: PathBuf,
        #[arg(long, value_enum, default_value_t = GraphFormat::Dot)]
        format: GraphFormat,
    },
    /// Metrics of every stage and sweep variant, side by side
    Show {
        file: PathBuf,
        #[arg(long, value_enum, default_value_t = ShowFormat::Table)]
        format: ShowFormat,
        /// Average over these swept parameters (e.g. `seed`); adds `n` and `<metric> sd` columns
        #[arg(long, value_name = "PARAM", value_delimiter = ',')]
        aggregate: Vec<String>,
        /// Show only these metrics (a name, or a prefix such as `importance`)
        #[arg(long, value_name = "NAME", value_delimiter = ',')]
        metrics: Vec<String>,
        /// Plot METRIC against the swept PARAM, one line per other setting (SVG)
        #[arg(long, value_name = "PARAM:METRIC")]
        plot: Option<String>,
        /// Where to write the plot [default: <experiment>-<metric>-by-<param>.svg]
        #[arg(long, value_name = "FILE")]
        plot_out: Option<PathBuf>,
        #[arg(long, value_name = "BACKEND")]
        backend: Option<String>,
    },
    /// Inspect and maintain the cache
    #[command(subcommand)]
    Cache(CacheCommand),
    /// ROUGE of predictions against references, exactly as Google's rouge-score
    Rouge {
        /// One prediction per line (text), or a JSONL of strings (`.jsonl`)
        #[arg(long, value_name = "FILE")]
        predictions: PathBuf,
        /// One reference per line (text), or a JSONL of strings or lists of strings
        #[arg(long, value_name = "FILE")]
        references: PathBuf,
        /// Do not apply the Porter stemmer
        #[arg(long)]
        no_stem: bool,
        /// How several references per prediction combine
        #[arg(long, value_enum, default_value_t = MultiRefArg::Max)]
        multi_ref: MultiRefArg,
        /// {"n", "rouge1": {"precision", "recall", "fmeasure"}, ...}
        #[arg(long)]
        json: bool,
    },
    /// List stage kinds, or document one
    Plugins {
        kind: Option<String>,
        /// Also load the plugin folders this experiment names
        #[arg(long, short = 'e', value_name = "FILE")]
        experiment: Option<PathBuf>,
    },
}

#[derive(Args, Debug)]
struct RunArgs {
    file: PathBuf,
    /// Run only these stages (and the stages they need)
    #[arg(long, value_name = "STAGE")]
    only: Vec<String>,
    /// Recompute these stages even if their results are stored
    #[arg(long, value_name = "STAGE")]
    force: Vec<String>,
    /// Stages run at once [default: number of CPUs]
    #[arg(long, short = 'j', value_name = "N")]
    jobs: Option<usize>,
    /// Compute backend: auto, cpu or wgpu [default: the experiment's, else auto]
    #[arg(long, value_name = "BACKEND")]
    backend: Option<String>,
    /// Print one JSON object per event on stdout
    #[arg(long)]
    json: bool,
    /// Stop starting stages after the first failure
    #[arg(long)]
    fail_fast: bool,
}

#[derive(Subcommand, Debug)]
enum CacheCommand {
    /// List stored runs
    Ls,
    /// Disk usage of the cache
    Du,
    /// Re-hash every stored artifact; name each damaged file (exit 1 if any)
    Verify,
    /// Remove results not used by the given experiments
    Gc {
        /// Experiments whose current results are kept
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Report what would be removed without removing it
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum MultiRefArg {
    Max,
    Mean,
    First,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum GraphFormat {
    Dot,
    Mermaid,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum ShowFormat {
    Table,
    Json,
    Csv,
    Md,
}

/// Prints diagnostics to stderr.
pub fn print_diags(diags: &Diags) {
    let handler = if std::io::stderr().is_terminal() {
        GraphicalReportHandler::new()
    } else {
        GraphicalReportHandler::new_themed(GraphicalTheme::unicode_nocolor())
    };
    let mut stderr = std::io::stderr().lock();
    for d in &diags.0 {
        let mut s = String::new();
        if handler.render_report(&mut s, d).is_err() {
            s = format!("error: {}\n", d.message);
        }
        let _ = write!(stderr, "{s}");
    }
    if diags.0.len() > 1 {
        let _ = writeln!(stderr, "error: {} problems found", diags.0.len());
    }
}

fn cache_at(dir: &Option<PathBuf>) -> Result<Cache, Diags> {
    Ok(Cache::open(
        &dir.clone().unwrap_or_else(ops::default_cache_dir),
    )?)
}

fn out(text: &str) {
    let mut o = std::io::stdout().lock();
    let _ = o.write_all(text.as_bytes());
}

/// Runs the command line; returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(code) => code,
        Err(diags) => {
            print_diags(&diags);
            diags.category().exit_code()
        }
    }
}

fn dispatch(cli: Cli) -> Result<i32, Diags> {
    match cli.command {
        Command::Run(args) => {
            let cache = cache_at(&cli.cache_dir)?;
            let plan = ops::load_plan(&args.file, &cache, args.backend.as_deref(), &args.force)?;
            let jobs = args.jobs.unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(1)
            });
            let mode = Mode::detect(args.json);
            let selected = if args.only.is_empty() {
                plan.pipeline.nodes.len()
            } else {
                plan.pipeline
                    .upstream_closure(&plan.pipeline.select(&args.only)?)
                    .len()
            };
            let mut reporter = Reporter::new(mode, selected);
            if plan.pipeline.nodes.iter().any(|n| n.kind.uses_backend()) {
                reporter.note(&plan.backend.note);
            }
            let opts = RunOptions {
                jobs,
                only: args.only,
                fail_fast: args.fail_fast,
            };
            let summary = crate::exec::run(&plan, &cache, &opts, &mut reporter)?;
            reporter.finish(&summary);
            // Planned again only when there is an evaluation to show: its result now exists.
            let has_eval = plan.pipeline.nodes.iter().any(|n| n.kind.name == "eval");
            let after = (mode != Mode::Json && has_eval)
                .then(|| ops::load_plan(&args.file, &cache, args.backend.as_deref(), &[]).ok())
                .flatten();
            if let Some(after) = after {
                // The comparison tables of evaluation stages, last thing on screen.
                out(&eval_comparisons(&after, &cache, "comparison.txt"));
            }
            Ok(if summary.failed > 0 || summary.skipped > 0 {
                Category::StageFailed.exit_code()
            } else {
                0
            })
        }
        Command::Plan {
            file,
            json,
            force,
            backend,
        } => {
            let cache = cache_at(&cli.cache_dir)?;
            let plan = ops::load_plan(&file, &cache, backend.as_deref(), &force)?;
            if json {
                out(&format!("{}\n", ops::plan_json(&plan)));
            } else {
                out(&ops::plan_text(&plan));
            }
            Ok(0)
        }
        Command::Explain {
            file,
            stage,
            backend,
        } => {
            let cache = cache_at(&cli.cache_dir)?;
            let plan = ops::load_plan(&file, &cache, backend.as_deref(), &[])?;
            out(&ops::explain(&plan, &stage)?);
            Ok(0)
        }
        Command::Graph { file, format } => {
            let p = ops::load_pipeline(&file)?;
            out(&match format {
                GraphFormat::Dot => crate::graph::to_dot(&p),
                GraphFormat::Mermaid => crate::graph::to_mermaid(&p),
            });
            Ok(0)
        }
        Command::Show {
            file,
            format,
            backend,
            aggregate,
            metrics,
            plot,
            plot_out,
        } => {
            let cache = cache_at(&cli.cache_dir)?;
            let plan = ops::load_plan(&file, &cache, backend.as_deref(), &[])?;
            let mut rows = ops::show_rows(&plan);
            if !aggregate.is_empty() {
                let mut labels = Vec::new();
                for a in &aggregate {
                    let found = ops::resolve_labels(&plan, a);
                    if found.is_empty() {
                        return Err(Diag::input("E-AGGREGATE", format!("`{a}` is not a swept parameter of `{}`", plan.experiment_name()))
                            .with_help("aggregate over a parameter that a `vary` line sweeps, e.g. `--aggregate seed`")
                            .into());
                    }
                    labels.extend(found);
                }
                rows = ops::aggregate(&rows, &labels);
            }
            ops::select_metrics(&mut rows, &metrics);
            match format {
                ShowFormat::Json => out(&format!(
                    "{}\n",
                    ops::show_json_rows(plan.experiment_name(), &rows, &cache)
                )),
                ShowFormat::Table => out(&format!(
                    "{}{}",
                    ops::rows_table(&rows).to_text(),
                    eval_comparisons(&plan, &cache, "comparison.txt")
                )),
                ShowFormat::Csv => out(&ops::rows_table(&rows).to_csv()),
                ShowFormat::Md => out(&format!(
                    "{}{}",
                    ops::rows_table(&rows).to_markdown(),
                    eval_comparisons(&plan, &cache, "comparison.md")
                )),
            }
            if let Some(spec) = plot {
                let path = plot_out.unwrap_or_else(|| {
                    let (x, y) = spec.split_once(':').unwrap_or((&spec, ""));
                    PathBuf::from(format!("{}-{y}-by-{x}.svg", plan.experiment_name()))
                });
                let msg = ops::plot_rows(&plan, &rows, &spec, &path)?;
                eprintln!("{msg}");
            }
            Ok(0)
        }
        Command::Cache(cmd) => {
            let cache = cache_at(&cli.cache_dir)?;
            match cmd {
                CacheCommand::Ls => out(&ops::cache_ls(&cache)?.to_text()),
                CacheCommand::Du => out(&ops::cache_du(&cache)?),
                CacheCommand::Verify => {
                    let (problems, n) = ops::cache_verify(&cache)?;
                    if problems.is_empty() {
                        out(&format!("all {n} artifacts intact\n"));
                    } else {
                        for p in &problems {
                            out(&format!("{p}\n"));
                        }
                        let d = Diag::env(
                            "E-CORRUPT",
                            format!("{} problem(s) in {n} artifacts", problems.len()),
                        )
                        .with_help(
                            "the next `run` recomputes the stages whose results are damaged",
                        );
                        return Err(d.into());
                    }
                }
                CacheCommand::Gc { files, dry_run } => {
                    let mut plans = Vec::new();
                    for f in &files {
                        plans.push(ops::load_plan(f, &cache, None, &[])?);
                    }
                    let r = ops::cache_gc(&cache, &plans, dry_run)?;
                    let verb = if dry_run { "would remove" } else { "removed" };
                    out(&format!(
                        "{verb} {} runs and {} artifacts, {} freed; kept {} runs used by {} experiment(s)\n",
                        r.runs_removed,
                        r.artifacts_removed,
                        ops::fmt_bytes(r.bytes_freed),
                        r.runs_kept,
                        files.len()
                    ));
                }
            }
            Ok(0)
        }
        Command::Rouge {
            predictions,
            references,
            no_stem,
            multi_ref,
            json,
        } => {
            let how = match multi_ref {
                MultiRefArg::Max => crate::text::rouge::MultiRef::Max,
                MultiRefArg::Mean => crate::text::rouge::MultiRef::Mean,
                MultiRefArg::First => crate::text::rouge::MultiRef::First,
            };
            let (n, scores) = ops::rouge_files(&predictions, &references, !no_stem, how)?;
            if json {
                out(&format!("{}\n", ops::rouge_json(n, &scores)));
            } else {
                out(&ops::rouge_text(n, &scores));
            }
            Ok(0)
        }
        Command::Plugins { kind, experiment } => {
            let extra = match &experiment {
                Some(f) => crate::dsl::load_experiment(f)?.plugin_dirs,
                None => Vec::new(),
            };
            let reg = ops::registry_for(&extra)?;
            match kind {
                None => out(&ops::plugins_list(&reg)),
                Some(k) => match reg.get(&k) {
                    Some(m) => out(&ops::plugin_doc(m)),
                    None => {
                        let mut d =
                            Diag::input("E-UNKNOWN-KIND", format!("unknown stage kind `{k}`"));
                        d.help = Some(match reg.suggest(&k) {
                            Some(s) => format!("did you mean `{s}`?"),
                            None => "`efrlhf plugins` lists the kinds; add `-e FILE` to include an experiment's plugin folders".into(),
                        });
                        return Err(d.into());
                    }
                },
            }
            Ok(0)
        }
    }
}

/// The model comparison tables (`file`: `comparison.txt` or `.md`) of the
/// plan's finished evaluation stages, each under its stage id.
fn eval_comparisons(plan: &crate::exec::Plan, cache: &crate::cache::Cache, file: &str) -> String {
    let mut text = String::new();
    for row in ops::show_rows(plan) {
        if let (true, Some(d)) = (row.kind == "eval", &row.output)
            && let Ok(table) = std::fs::read_to_string(cache.artifact_dir(d).join(file))
        {
            text.push_str(&format!("\n{}\n{table}", row.id));
        }
    }
    text
}
