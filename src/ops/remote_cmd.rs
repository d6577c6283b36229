//! Which shared remote a command uses, and `cache push | pull | ls --remote`.
//!
//! The remote is the one `--remote=URL` names, else `$EFRLHF_REMOTE`, else
//! the experiment's `remote` node, else the user's `remote.kdl`. Commands
//! consult it only when asked (`--remote`, `cache push|pull`), so planning
//! never needs the network.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use crate::cache::remote::{PullOutcome, PushError, Pushed, Remote};
use crate::cache::{ArtifactRecord, Cache, RunRecord};
use crate::dsl::RemoteDecl;
use crate::error::{Category, Diag, Diags};
use crate::exec::{Plan, Status};
use crate::report::{Cell, Table};

use super::{PlanRequest, fmt_bytes, fmt_time, load_plan};

/// Whether (and which) remote a command looks in.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub enum RemoteChoice<'a> {
    /// The local cache alone.
    #[default]
    Off,
    /// The remote the environment, the experiment or `remote.kdl` names.
    Configured,
    /// `--remote=URL`.
    Url(&'a str),
}

/// The remote `choice` selects, opened; `from_experiment` is the file's `remote`.
pub fn open_remote(
    choice: RemoteChoice,
    from_experiment: Option<&RemoteDecl>,
) -> Result<Option<Arc<Remote>>, Diags> {
    let Some(decl) = remote_decl(choice, from_experiment)? else {
        return Ok(None);
    };
    let remote = Remote::open(&decl)?;
    remote.check_reachable()?;
    Ok(Some(Arc::new(remote)))
}

fn remote_decl(
    choice: RemoteChoice,
    from_experiment: Option<&RemoteDecl>,
) -> Result<Option<RemoteDecl>, Diags> {
    let from_url = |url: &str, what: &str| {
        let cwd = std::env::current_dir().unwrap_or_default();
        RemoteDecl::parse(url, &cwd).map_err(|why| {
            Diags::from(
                Diag::input(
                    "E-REMOTE",
                    format!(
                        "cannot use remote `{}` ({what}): {why}",
                        crate::dsl::redact(url)
                    ),
                )
                .with_help("name a folder, `s3://bucket/prefix` or `https://host/path`"),
            )
        })
    };
    match choice {
        RemoteChoice::Off => Ok(None),
        RemoteChoice::Url(url) => from_url(url, "--remote").map(Some),
        RemoteChoice::Configured => {
            if let Ok(url) = std::env::var("EFRLHF_REMOTE")
                && !url.is_empty()
            {
                return from_url(&url, "$EFRLHF_REMOTE").map(Some);
            }
            if let Some(d) = from_experiment {
                return Ok(Some(d.clone()));
            }
            match crate::dsl::load_remote_config()? {
                Some(d) => Ok(Some(d)),
                None => Err(Diag::input("E-REMOTE", "no remote is named")
                    .with_help("pass `--remote=URL`, set $EFRLHF_REMOTE, add `remote \"s3://bucket/prefix\"` to the `experiment` block, or write it in ~/.config/efrlhf/remote.kdl")
                    .into()),
            }
        }
    }
}

/// The experiments' remote for a command on several files: one they agree on.
fn remote_for_files(choice: RemoteChoice, files: &[PathBuf]) -> Result<Arc<Remote>, Diags> {
    let mut named: Option<RemoteDecl> = None;
    if choice == RemoteChoice::Configured && std::env::var_os("EFRLHF_REMOTE").is_none() {
        for f in files {
            let exp = crate::dsl::load_experiment(f)?;
            match (&named, exp.remote) {
                (Some(a), Some(b)) if *a != b => {
                    return Err(Diag::input(
                        "E-REMOTE",
                        format!(
                            "the experiments name different remotes ({} and {})",
                            a.display(),
                            b.display()
                        ),
                    )
                    .with_help("choose one with `--remote=URL`")
                    .into());
                }
                (None, Some(b)) => named = Some(b),
                _ => {}
            }
        }
    }
    let remote = open_remote(choice, named.as_ref())?;
    remote.ok_or_else(|| Diags::from(Diag::internal("a remote was asked for but none opened")))
}

/// How a transfer went, for its closing line.
#[derive(Default)]
struct Tally {
    moved: usize,
    present: usize,
    objects: usize,
    bytes: u64,
    problems: Vec<String>,
}

impl Tally {
    /// The closing line, and an error when something failed.
    fn finish(self, verb: &str, remote: &Remote, started: Instant) -> Result<String, Diags> {
        let line = format!(
            "{verb} {} result{} ({}{}) {} {} in {:.1}s; {} already there\n",
            self.moved,
            if self.moved == 1 { "" } else { "s" },
            if verb == "pushed" {
                format!("{} files, ", self.objects)
            } else {
                String::new()
            },
            fmt_bytes(self.bytes),
            if verb == "pushed" { "to" } else { "from" },
            remote.shown(),
            started.elapsed().as_secs_f64(),
            self.present
        );
        if self.problems.is_empty() {
            return Ok(line);
        }
        let mut d = Diag::new(
            Category::Environment,
            "E-REMOTE",
            format!(
                "{line}{} result{} could not be {verb}:\n  - {}",
                self.problems.len(),
                if self.problems.len() == 1 { "" } else { "s" },
                self.problems.join("\n  - ")
            ),
        );
        d.help = Some(match verb {
            "pushed" => "what was cut short is left unseen on the remote (its manifest comes last); run the push again".into(),
            _ => "a refused result is never used: `run` computes it instead".into(),
        });
        Err(d.into())
    }
}

/// The stored results of these experiments' stages (each key once), or of
/// every run the cache holds.
fn stored_results(
    cache: &Cache,
    files: &[PathBuf],
    req: &PlanRequest,
) -> Result<Vec<(String, RunRecord, ArtifactRecord)>, Diags> {
    let mut out: Vec<(String, RunRecord, ArtifactRecord)> = Vec::new();
    if files.is_empty() {
        for r in cache.records().0 {
            let label = format!("{}/{}", r.run.experiment, r.run.stage_id);
            out.push((label, r.run, r.artifact));
        }
    } else {
        let plans: Vec<Plan> = files
            .iter()
            .map(|f| {
                load_plan(
                    f,
                    cache,
                    &PlanRequest {
                        remote: RemoteChoice::Off,
                        ..*req
                    },
                )
            })
            .collect::<Result<_, _>>()?;
        let idx = cache.index()?;
        for plan in &plans {
            for (i, st) in plan.statuses.iter().enumerate() {
                if let Status::Cached(rec) = st
                    && let Some(art) = idx.artifact(&rec.output)?
                {
                    out.push((plan.pipeline.nodes[i].id.clone(), (**rec).clone(), art));
                }
            }
        }
    }
    let mut seen = std::collections::HashSet::new();
    out.retain(|(_, r, _)| seen.insert(r.key.clone()));
    Ok(out)
}

/// `cache push [FILE...]`: uploads what those experiments use (else every
/// stored result) that the remote lacks. `say` gets a line per result.
pub fn cache_push(
    cache: &Cache,
    files: &[PathBuf],
    choice: RemoteChoice,
    req: &PlanRequest,
    say: &mut dyn FnMut(&str),
) -> Result<String, Diags> {
    let remote = remote_for_files(choice, files)?;
    let results = stored_results(cache, files, req)?;
    push_results(cache, &remote, &results, say)
}

fn push_results(
    cache: &Cache,
    remote: &Remote,
    results: &[(String, RunRecord, ArtifactRecord)],
    say: &mut dyn FnMut(&str),
) -> Result<String, Diags> {
    if remote.read_only() {
        return Err(Diag::input(
            "E-REMOTE",
            format!(
                "the remote {} is read-only (`read-only=#true`)",
                remote.shown()
            ),
        )
        .with_help("push to a remote you may write to, or drop `--push`")
        .into());
    }
    let started = Instant::now();
    let mut tally = Tally::default();
    remote.tidy();
    for (n, (label, run, art)) in results.iter().enumerate() {
        let one = Instant::now();
        match remote.push(cache, run, art) {
            Ok(Pushed::Uploaded { objects, bytes }) => {
                say(&format!(
                    "pushed {label} ({objects} files, {}{})",
                    fmt_bytes(bytes),
                    rate(bytes, one)
                ));
                tally.moved += 1;
                tally.objects += objects;
                tally.bytes += bytes;
            }
            Ok(Pushed::Present) => tally.present += 1,
            Ok(Pushed::Differs { theirs }) => {
                tally.present += 1;
                say(&format!(
                    "warning: {label}: the remote holds a different result for the same key (output {} there, {} here): the stage is not deterministic; the remote's is kept",
                    &theirs[..12.min(theirs.len())],
                    &run.output[..12.min(run.output.len())]
                ));
            }
            Err(e @ (PushError::Damaged(_) | PushError::Conflict(_))) => {
                tally.problems.push(format!("{label}: {e}"))
            }
            Err(e @ PushError::Remote(_)) => {
                tally.problems.push(format!("{label}: {e}"));
                let left = results.len() - n - 1;
                if left > 0 {
                    tally
                        .problems
                        .push(format!("{left} more not tried after that failure"));
                }
                break;
            }
        }
    }
    tally.finish("pushed", remote, started)
}

/// After `run --push`: every result the experiment now uses that the
/// remote lacks (those the run computed went up as they finished).
pub fn push_after_run(
    file: &Path,
    cache: &Cache,
    remote: &Remote,
    req: &PlanRequest,
    say: &mut dyn FnMut(&str),
) -> Result<String, Diags> {
    let results = stored_results(cache, &[file.to_path_buf()], req)?;
    push_results(cache, remote, &results, say)
}

/// `cache pull [FILE...]`: brings what those experiments need from the
/// remote (else everything it holds), each result checked before it is stored.
pub fn cache_pull(
    cache: &Cache,
    files: &[PathBuf],
    choice: RemoteChoice,
    req: &PlanRequest,
    say: &mut dyn FnMut(&str),
) -> Result<String, Diags> {
    let remote = remote_for_files(choice, files)?;
    let _lease =
        cache.lease_shared(|| say("waiting for `efrlhf cache gc` on this cache to finish"))?;
    let started = Instant::now();
    let mut tally = Tally::default();
    if files.is_empty() {
        let Some(listed) = remote
            .manifests()
            .map_err(|e| Diag::env("E-REMOTE", e.message))?
        else {
            return Err(cannot_list(&remote));
        };
        let idx = cache.index()?;
        let missing: Vec<_> = listed
            .into_iter()
            .filter(|(k, _)| idx.run(k).ok().flatten().is_none())
            .collect();
        drop(idx);
        for (key, m) in missing {
            match m {
                Ok(m) => {
                    let label = format!("{}/{}", m.run.experiment, m.run.stage_id);
                    pull_one(
                        &remote,
                        cache,
                        &mut tally,
                        say,
                        label,
                        &key,
                        (&m.run.experiment, &m.run.stage_id),
                    );
                }
                Err(r) => tally
                    .problems
                    .push(format!("{}: {r}", &key[..12.min(key.len())])),
            }
        }
    } else {
        for f in files {
            let pipeline = super::load_pipeline(f, req.set)?;
            let plan = super::plan_pipeline(pipeline, cache, req, Some(Arc::clone(&remote)))?;
            if let Some(why) = &plan.remote_error {
                return Err(Diag::env(
                    "E-REMOTE",
                    format!("the remote {} cannot be read: {why}", remote.shown()),
                )
                .into());
            }
            for note in &plan.remote_notes {
                say(&format!("warning: {note}"));
            }
            for (i, node) in plan.pipeline.nodes.iter().enumerate() {
                if let (Status::Remote(_), Some(key)) = (&plan.statuses[i], &plan.keys[i]) {
                    pull_one(
                        &remote,
                        cache,
                        &mut tally,
                        say,
                        node.id.clone(),
                        key,
                        (plan.experiment_name(), &node.id),
                    );
                }
            }
        }
    }
    tally.finish("pulled", &remote, started)
}

/// Pulls one key and counts how it went.
fn pull_one(
    remote: &Remote,
    cache: &Cache,
    tally: &mut Tally,
    say: &mut dyn FnMut(&str),
    label: String,
    key: &str,
    owner: (&str, &str),
) {
    let one = Instant::now();
    match remote.pull(cache, key, owner, None) {
        Ok(PullOutcome::Fetched(bytes)) => {
            say(&format!(
                "pulled {label} ({}{})",
                fmt_bytes(bytes),
                rate(bytes, one)
            ));
            tally.moved += 1;
            tally.bytes += bytes;
        }
        Ok(PullOutcome::Stored) => tally.present += 1,
        Ok(PullOutcome::Absent) => tally
            .problems
            .push(format!("{label}: no longer on the remote")),
        Err(e) => tally.problems.push(format!("{label}: {e}")),
    }
}

/// ` in 2.1s, 48.2 MB/s` for a transfer that took a noticeable time.
fn rate(bytes: u64, since: Instant) -> String {
    let secs = since.elapsed().as_secs_f64();
    if secs < 1.0 {
        return String::new();
    }
    format!(" in {secs:.1}s, {:.1} MB/s", bytes as f64 / 1e6 / secs)
}

fn cannot_list(remote: &Remote) -> Diags {
    Diag::input(
        "E-REMOTE",
        format!(
            "the remote {} cannot list what it holds (a plain HTTP cache)",
            remote.shown()
        ),
    )
    .with_help("name the experiments whose results to pull or list: `efrlhf cache pull FILE...`")
    .into()
}

/// `cache ls --remote [FILE...]`: each stage of the experiments, here and
/// there; without files, every result on the remote.
pub fn cache_ls_remote(
    cache: &Cache,
    files: &[PathBuf],
    choice: RemoteChoice,
    req: &PlanRequest,
) -> Result<Table, Diags> {
    let remote = remote_for_files(choice, files)?;
    if files.is_empty() {
        return remote_listing(&remote);
    }
    let mut t = table(&["experiment", "stage", "kind", "key", "here", "remote"]);
    for f in files {
        let plan = load_plan(
            f,
            cache,
            &PlanRequest {
                remote: RemoteChoice::Off,
                ..*req
            },
        )?;
        for (i, node) in plan.pipeline.nodes.iter().enumerate() {
            let Some(key) = &plan.keys[i] else {
                t.rows.push(row(&[
                    plan.experiment_name(),
                    &node.id,
                    &node.kind.name,
                    "(after its inputs)",
                    "no",
                    "?",
                ]));
                continue;
            };
            let there = match remote.manifest(key) {
                Ok(Some(_)) => "yes".to_string(),
                Ok(None) => "no".to_string(),
                Err(r) => format!("refused: {r}"),
            };
            let here = if plan.statuses[i].is_cached() {
                "yes"
            } else {
                "no"
            };
            t.rows.push(row(&[
                plan.experiment_name(),
                &node.id,
                &node.kind.name,
                &key[..12],
                here,
                &there,
            ]));
        }
    }
    Ok(t)
}

fn remote_listing(remote: &Remote) -> Result<Table, Diags> {
    let Some(listed) = remote
        .manifests()
        .map_err(|e| Diag::env("E-REMOTE", e.message))?
    else {
        return Err(cannot_list(remote));
    };
    let mut t = table(&[
        "key",
        "experiment",
        "stage",
        "kind",
        "size",
        "seconds",
        "finished",
        "pushed from",
    ]);
    for (key, m) in listed {
        match m {
            Ok(m) => t.rows.push(vec![
                Cell::Text(key[..12].to_string()),
                Cell::Text(m.run.experiment.clone()),
                Cell::Text(m.run.stage_id.clone()),
                Cell::Text(m.run.components.kind.clone()),
                Cell::Text(fmt_bytes(m.artifact.size)),
                Cell::Number((m.run.seconds * 100.0).round() / 100.0),
                Cell::Text(fmt_time(m.run.finished_at)),
                Cell::Text(m.pushed_from.clone()),
            ]),
            Err(r) => t.rows.push(row(&[
                &key[..12.min(key.len())],
                "?",
                "?",
                "?",
                "-",
                "-",
                "-",
                &format!("refused: {r}"),
            ])),
        }
    }
    Ok(t)
}

fn table(columns: &[&str]) -> Table {
    Table {
        columns: columns.iter().map(|c| c.to_string()).collect(),
        rows: Vec::new(),
    }
}

fn row(cells: &[&str]) -> Vec<Cell> {
    cells.iter().map(|c| Cell::Text(c.to_string())).collect()
}
