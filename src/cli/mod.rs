//! The command line: parses arguments, calls `ops`, prints. clap lives
//! here only, and so does every write to the terminal.
#![allow(clippy::print_stdout, clippy::print_stderr, clippy::disallowed_methods)]

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use miette::{GraphicalReportHandler, GraphicalTheme};

mod progress;

use crate::cache::Cache;
use crate::error::{Category, Diags};
use crate::exec::RunOptions;
use crate::ops;
use progress::{Mode, Reporter};

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
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        remote: RemoteArg,
    },
    /// Say which parts of a stage's key changed since its last run
    Explain {
        file: PathBuf,
        stage: String,
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        remote: RemoteArg,
    },
    /// Print the experiment's graph
    Graph {
        file: PathBuf,
        #[arg(long, value_enum, default_value_t = GraphFormat::Dot)]
        format: GraphFormat,
        /// Change a parameter as if the file said so (`sft.epochs=1`, `'ppo*.updates=2'`)
        #[arg(long, value_name = "STAGE.PARAM=VALUE")]
        set: Vec<String>,
    },
    /// Write the experiment as one self-contained HTML page (DAG, metrics, curves, evaluation)
    Report {
        file: PathBuf,
        /// Where to write it
        #[arg(short, long, value_name = "FILE", default_value = "report.html")]
        output: PathBuf,
        #[command(flatten)]
        target: Target,
    },
    /// Metrics of every stage and sweep variant, side by side
    Show(ShowArgs),
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
    /// Compute one resolved stage (what a cluster job of `run --executor slurm` runs)
    #[command(hide = true)]
    ExecStage { spec: PathBuf },
    /// Run a stage program under supervision (used by `run`)
    #[command(hide = true)]
    Supervise {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        command: Vec<std::ffi::OsString>,
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
struct ShowArgs {
    file: PathBuf,
    #[arg(long, value_enum, default_value_t = ShowFormat::Table)]
    format: ShowFormat,
    /// Average over these swept parameters (e.g. `seed`); adds `n` and `<metric> sd` columns
    #[arg(long, value_name = "PARAM", value_delimiter = ',')]
    aggregate: Vec<String>,
    /// Show only these metrics: names, prefixes (`importance`) or globs (`'val_*,accuracy'`)
    #[arg(long, value_name = "NAME", value_delimiter = ',')]
    metrics: Vec<String>,
    /// One table with every metric as a column, however wide
    #[arg(long)]
    wide: bool,
    /// Plot METRIC against the swept PARAM, one line per other setting (SVG)
    #[arg(long, value_name = "PARAM:METRIC")]
    plot: Option<String>,
    /// Where to write the plot [default: <experiment>-<metric>-by-<param>.svg]
    #[arg(long, value_name = "FILE")]
    plot_out: Option<PathBuf>,
    #[command(flatten)]
    target: Target,
}

/// What every planning command takes besides the file: the backend,
/// `--set` values and the executor (whose nodes decide a stage's backend class).
#[derive(Args, Debug)]
struct Target {
    /// Compute backend: auto, cpu or wgpu [default: the experiment's, else auto]
    #[arg(long, value_name = "BACKEND")]
    backend: Option<String>,
    /// Change a parameter as if the file said so (`sft.epochs=1`, `'ppo*.updates=2'`)
    #[arg(long, value_name = "STAGE.PARAM=VALUE")]
    set: Vec<String>,
    /// Where stages compute: `local` (this machine) or `slurm` (one job per stage)
    #[arg(long, value_enum, default_value_t = ExecutorArg::Local)]
    executor: ExecutorArg,
    /// The cluster's settings [default: $EFRLHF_EXECUTOR_CONFIG, else ~/.config/efrlhf/executor.kdl]
    #[arg(long, value_name = "FILE")]
    executor_config: Option<PathBuf>,
}

/// `--remote[=URL]`: look in a shared remote cache.
#[derive(Args, Debug)]
struct RemoteArg {
    /// Also look in a shared remote cache: URL (a folder, `s3://bucket/prefix`,
    /// `https://host/path`), else $EFRLHF_REMOTE, the experiment's `remote`, or
    /// ~/.config/efrlhf/remote.kdl
    #[arg(
        long,
        value_name = "URL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = ""
    )]
    remote: Option<String>,
}

impl RemoteArg {
    fn choice(&self) -> ops::RemoteChoice<'_> {
        match self.remote.as_deref() {
            None => ops::RemoteChoice::Off,
            Some("") => ops::RemoteChoice::Configured,
            Some(url) => ops::RemoteChoice::Url(url),
        }
    }

    /// The remote, which `--push` (or a cache transfer) implies even unnamed.
    fn required(&self) -> ops::RemoteChoice<'_> {
        match self.choice() {
            ops::RemoteChoice::Off => ops::RemoteChoice::Configured,
            other => other,
        }
    }
}

impl Target {
    /// The cluster's settings, under `--executor slurm`.
    fn cluster(&self) -> Result<Option<crate::exec::slurm::SlurmConfig>, Diags> {
        match self.executor {
            ExecutorArg::Local => Ok(None),
            ExecutorArg::Slurm => {
                crate::exec::slurm::SlurmConfig::load(self.executor_config.as_deref()).map(Some)
            }
        }
    }

    /// The backend class of stages computed on the cluster's nodes.
    /// No backend, no `--set`, the local executor.
    fn none() -> Target {
        Target {
            backend: None,
            set: Vec::new(),
            executor: ExecutorArg::Local,
            executor_config: None,
        }
    }

    fn class_of(&self) -> Result<Option<crate::exec::ClassOf>, Diags> {
        Ok(self.cluster()?.map(class_on))
    }
}

/// The backend class of stages computed on the nodes of this cluster.
fn class_on(cfg: crate::exec::slurm::SlurmConfig) -> crate::exec::ClassOf {
    std::sync::Arc::new(move |n: &crate::graph::Node| cfg.class_of(&n.kind.name, &n.requests))
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
    #[command(flatten)]
    target: Target,
    /// Print one JSON object per event on stdout
    #[arg(long)]
    json: bool,
    /// Also log each stage this run computes: `tensorboard=DIR`, `mlflow[=URI]`,
    /// or `none` to drop the experiment's `tracking` block
    #[arg(long, value_name = "TRACKER")]
    track: Vec<String>,
    /// Stop starting stages after the first failure
    #[arg(long)]
    fail_fast: bool,
    #[command(flatten)]
    remote: RemoteArg,
    /// Upload the results this run computes (and those it reuses that the
    /// remote lacks) to the remote; implies `--remote`
    #[arg(long)]
    push: bool,
}

#[derive(Subcommand, Debug)]
enum CacheCommand {
    /// List stored runs; with `--remote`, what a shared remote holds
    Ls {
        /// Experiments whose stages to look up, here and on the remote
        files: Vec<PathBuf>,
        #[command(flatten)]
        remote: RemoteArg,
    },
    /// Upload stored results to a shared remote: those the experiments use, or all
    Push(TransferArgs),
    /// Download results from a shared remote: those the experiments need, or all
    Pull(TransferArgs),
    /// Disk usage of the cache
    Du,
    /// Re-hash every stored result; name each damaged file (exit 1 if any)
    Verify,
    /// Rebuild the index from the results' own records (nothing is recomputed)
    Repair,
    /// Remove results not used by the given experiments (waits for running experiments)
    Gc {
        /// Experiments whose current results are kept
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Report what would be removed without removing it
        #[arg(long)]
        dry_run: bool,
    },
}

/// `cache push|pull`: the experiments (none: everything) and the remote.
#[derive(Args, Debug)]
struct TransferArgs {
    files: Vec<PathBuf>,
    #[command(flatten)]
    remote: RemoteArg,
    #[command(flatten)]
    target: Target,
}

/// `ops::cache_push` or `ops::cache_pull`.
type Transfer = fn(
    &Cache,
    &[PathBuf],
    ops::RemoteChoice,
    &ops::PlanRequest,
    &mut dyn FnMut(&str),
) -> Result<String, Diags>;

impl TransferArgs {
    /// Runs `transfer`, printing a line per result and the closing one on stderr.
    fn run(&self, cache: &Cache, transfer: Transfer) -> Result<String, Diags> {
        let class_of = self.target.class_of()?;
        let req = request(&self.target, class_of.as_ref(), &[]);
        let mut say = |line: &str| err(&format!("{line}\n"));
        let line = transfer(cache, &self.files, self.remote.required(), &req, &mut say)?;
        err(&line);
        Ok(String::new())
    }
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum MultiRefArg {
    Max,
    Mean,
    First,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq)]
enum ExecutorArg {
    Local,
    Slurm,
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
        if !d.fits_a_snippet() || handler.render_report(&mut s, d).is_err() {
            s = d.plain();
        }
        let _ = write!(stderr, "{s}");
    }
    if diags.0.len() > 1 {
        let _ = writeln!(stderr, "error: {} problems found", diags.0.len());
    }
}

/// Opens the cache; a damaged or deleted index is rebuilt first (and said).
fn cache_at(dir: &Option<PathBuf>) -> Result<Cache, Diags> {
    let cache = Cache::open(&dir.clone().unwrap_or_else(ops::default_cache_dir))?;
    repair_index(&cache)?;
    Ok(cache)
}

fn repair_index(cache: &Cache) -> Result<(), Diags> {
    if let Some(report) = cache.ensure_index()? {
        err(&format!(
            "Note: the cache index was damaged or missing: {}",
            ops::repair_text(&report)
        ));
    }
    Ok(())
}

/// Opens the cache for a command that plans: the plan's own index session
/// checks the index, so a no-op run opens it once.
fn cache_for_plan(dir: &Option<PathBuf>) -> Result<Cache, Diags> {
    Ok(Cache::open(
        &dir.clone().unwrap_or_else(ops::default_cache_dir),
    )?)
}

/// A command's request without `--force`.
fn request<'a>(
    t: &'a Target,
    class_of: Option<&'a crate::exec::ClassOf>,
    force: &'a [String],
) -> ops::PlanRequest<'a> {
    ops::PlanRequest {
        backend: t.backend.as_deref(),
        force,
        set: &t.set,
        class_of,
        remote: ops::RemoteChoice::Off,
    }
}

/// [`ops::load_plan`], rebuilding a damaged index (and saying so) first when
/// the plan finds one.
fn plan_at(
    file: &std::path::Path,
    cache: &Cache,
    req: &ops::PlanRequest,
) -> Result<crate::exec::Plan, Diags> {
    match ops::load_plan(file, cache, req) {
        Err(d) if d.0.iter().any(|d| d.code == "E-INDEX-DAMAGED") => {
            repair_index(cache)?;
            ops::load_plan(file, cache, req)
        }
        other => other,
    }
}

fn out(text: &str) {
    let mut o = std::io::stdout().lock();
    // A closed stdout (`| head`) ends the output, not the command.
    let _ = o.write_all(text.as_bytes());
}

fn err(text: &str) {
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
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
        Command::Run(args) => run(&cli.cache_dir, args),
        Command::Plan {
            file,
            json,
            force,
            target,
            remote,
        } => {
            let cache = cache_for_plan(&cli.cache_dir)?;
            let class_of = target.class_of()?;
            let req = ops::PlanRequest {
                remote: remote.choice(),
                ..request(&target, class_of.as_ref(), &force)
            };
            let plan = plan_at(&file, &cache, &req)?;
            for note in &plan.remote_notes {
                err(&format!("warning: {note}\n"));
            }
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
            target,
            remote,
        } => {
            let cache = cache_for_plan(&cli.cache_dir)?;
            let class_of = target.class_of()?;
            let req = ops::PlanRequest {
                remote: remote.choice(),
                ..request(&target, class_of.as_ref(), &[])
            };
            let plan = plan_at(&file, &cache, &req)?;
            out(&ops::explain(&plan, &stage)?);
            Ok(0)
        }
        Command::Graph { file, format, set } => {
            let p = ops::load_pipeline(&file, &set)?;
            out(&match format {
                GraphFormat::Dot => crate::graph::to_dot(&p),
                GraphFormat::Mermaid => crate::graph::to_mermaid(&p),
            });
            Ok(0)
        }
        Command::Report {
            file,
            output,
            target,
        } => {
            let class_of = target.class_of()?;
            report_command(
                &cli.cache_dir,
                &file,
                &output,
                &request(&target, class_of.as_ref(), &[]),
            )
        }
        Command::Show(args) => show_command(&cli.cache_dir, args),
        Command::Cache(cmd) => cache_command(&cli.cache_dir, cmd),
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
        Command::ExecStage { spec } => Ok(crate::exec::exec_stage(&spec)),
        Command::Supervise { command } => {
            match crate::exec::supervise(&command[0], &command[1..]) {
                Ok(code) => Ok(code),
                Err(e) => {
                    err(&format!("{e}\n"));
                    Ok(127)
                }
            }
        }
        Command::Plugins { kind, experiment } => {
            out(&ops::plugins(kind.as_deref(), experiment.as_deref())?);
            Ok(0)
        }
    }
}

/// `show FILE`: the metrics table (or JSON, CSV, Markdown, a plot).
fn show_command(cache_dir: &Option<PathBuf>, args: ShowArgs) -> Result<i32, Diags> {
    let cache = cache_for_plan(cache_dir)?;
    let class_of = args.target.class_of()?;
    let plan = plan_at(
        &args.file,
        &cache,
        &request(&args.target, class_of.as_ref(), &[]),
    )?;
    let request = ops::ShowRequest {
        format: match args.format {
            ShowFormat::Table => ops::ShowFormat::Table,
            ShowFormat::Json => ops::ShowFormat::Json,
            ShowFormat::Csv => ops::ShowFormat::Csv,
            ShowFormat::Md => ops::ShowFormat::Md,
        },
        aggregate: args.aggregate,
        metrics: args.metrics,
        wide: args.wide,
        width: table_width(),
        plot: args.plot,
        plot_out: args.plot_out,
    };
    let shown = ops::show(&plan, &cache, &request)?;
    out(&shown.text);
    if let Some(note) = shown.note {
        err(&format!("{note}\n"));
    }
    Ok(0)
}

/// `report FILE -o OUTPUT`: writes the page, says where and how large.
fn report_command(
    cache_dir: &Option<PathBuf>,
    file: &std::path::Path,
    output: &std::path::Path,
    req: &ops::PlanRequest,
) -> Result<i32, Diags> {
    let cache = cache_for_plan(cache_dir)?;
    let plan = plan_at(file, &cache, req)?;
    let html = ops::report(&plan, &cache);
    std::fs::write(output, &html)
        .map_err(|e| crate::error::io_error("cannot write the report", output, e))?;
    err(&format!(
        "wrote {} ({})\n",
        output.display(),
        ops::fmt_bytes(html.len() as u64)
    ));
    Ok(0)
}

/// `cache ls|du|verify|gc|repair`.
fn cache_command(cache_dir: &Option<PathBuf>, cmd: CacheCommand) -> Result<i32, Diags> {
    let cache = cache_at(cache_dir)?;
    let waiting = || err("waiting for the experiments running on this cache to finish\n");
    out(&match cmd {
        CacheCommand::Ls { files, remote } => match remote.choice() {
            ops::RemoteChoice::Off if files.is_empty() => ops::cache_ls(&cache)?.to_text(),
            _ => {
                let target = Target::none();
                let req = request(&target, None, &[]);
                ops::cache_ls_remote(&cache, &files, remote.required(), &req)?.to_text()
            }
        },
        CacheCommand::Push(args) => args.run(&cache, ops::cache_push)?,
        CacheCommand::Pull(args) => args.run(&cache, ops::cache_pull)?,
        CacheCommand::Du => ops::cache_du(&cache)?,
        CacheCommand::Verify => {
            let (text, problem) = ops::cache_verify_report(&cache)?;
            out(&text);
            return problem.map_or(Ok(0), Err);
        }
        CacheCommand::Gc { files, dry_run } => {
            ops::cache_gc_report(&cache, &files, dry_run, waiting)?
        }
        CacheCommand::Repair => ops::cache_repair_report(&cache, waiting)?,
    });
    Ok(0)
}

/// SIGINT and SIGTERM: the first sets the returned number (the run stops
/// cleanly), a second one exits at once.
fn stop_on_signals() -> Result<std::sync::Arc<std::sync::atomic::AtomicUsize>, Diags> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize};
    let stop = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let registered =
            signal_hook::flag::register_conditional_shutdown(sig, 128 + sig, Arc::clone(&seen))
                .and_then(|_| signal_hook::flag::register(sig, Arc::clone(&seen)))
                .and_then(|_| {
                    signal_hook::flag::register_usize(sig, Arc::clone(&stop), sig as usize)
                });
        registered.map_err(|e| {
            crate::error::Diag::env("E-SIGNAL", format!("cannot handle signals: {e}"))
        })?;
    }
    Ok(stop)
}

/// `run`: the plan, the live display, the run, the evaluation tables.
fn run(cache_dir: &Option<PathBuf>, args: RunArgs) -> Result<i32, Diags> {
    let stop = stop_on_signals()?;
    let cache = cache_for_plan(cache_dir)?;
    let cluster = args.target.cluster()?;
    let class_of = cluster.clone().map(class_on);
    let executor = match cluster {
        None => crate::exec::Executor::Local,
        Some(cfg) => {
            crate::exec::Executor::Slurm(std::sync::Arc::new(crate::exec::slurm::Slurm::new(cfg)?))
        }
    };
    let remote_choice = match args.push {
        true => args.remote.required(),
        false => args.remote.choice(),
    };
    let req = ops::PlanRequest {
        remote: remote_choice,
        ..request(&args.target, class_of.as_ref(), &args.force)
    };
    let plan = std::sync::Arc::new(plan_at(&args.file, &cache, &req)?);
    if args.push
        && let Some(remote) = &plan.remote
        && remote.read_only()
    {
        return Err(crate::error::Diag::input(
            "E-REMOTE",
            format!(
                "the remote {} is read-only (`read-only=#true`)",
                remote.shown()
            ),
        )
        .with_help("drop `--push`, or push to a remote you may write to")
        .into());
    }
    let jobs = args.jobs.unwrap_or_else(|| match &executor {
        crate::exec::Executor::Slurm(s) => s.max_jobs(),
        crate::exec::Executor::Local => std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
    });
    let mode = Mode::detect(args.json);
    let selected = ops::selected_nodes(&plan, &args.only)?;
    let mut reporter = Reporter::new(mode, &plan, &selected, jobs);
    if let Some(note) = ops::backend_note(&plan) {
        reporter.note(note);
    }
    for note in plan.hub.notes() {
        reporter.note(&note);
    }
    for note in &plan.remote_notes {
        reporter.note(note);
    }
    let opts = RunOptions {
        jobs,
        only: args.only,
        fail_fast: args.fail_fast,
        stop: Some(stop),
        executor,
        push: args.push,
    };
    let mut sink = ops::TrackingSink::new(&plan, &cache, &args.track, &mut reporter)?;
    let summary = crate::exec::run(&plan, &cache, &opts, &mut sink)?;
    sink.finish();
    if args.push
        && summary.interrupted.is_none()
        && let Some(remote) = &plan.remote
    {
        let mut say = |line: &str| reporter.note(line);
        let pushed = ops::push_after_run(&args.file, &cache, remote, &req, &mut say);
        match pushed {
            Ok(line) => reporter.note(line.trim_end()),
            Err(d) => print_diags(&d),
        }
    }
    reporter.finish(&summary);
    if let Some(sig) = summary.interrupted {
        // Built-in stages still computing end with the process.
        return Ok(128 + sig);
    }
    if mode != Mode::Json {
        // The comparison tables of evaluation stages, last thing on screen.
        out(&ops::comparisons_after_run(&args.file, &cache, &req, &plan));
    }
    Ok(if summary.failed > 0 || summary.skipped > 0 {
        Category::StageFailed.exit_code()
    } else {
        0
    })
}

/// Columns for `show`'s table: the terminal's width, 120 when stdout is not a terminal.
fn table_width() -> usize {
    use std::io::IsTerminal;
    let stdout = std::io::stdout();
    if !stdout.is_terminal() {
        return 120;
    }
    terminal_size::terminal_size_of(&stdout).map_or(120, |(w, _)| usize::from(w.0).max(40))
}
