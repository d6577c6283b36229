use std::collections::{BTreeSet, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::cache::{Cache, FailureRecord, KeyComponents, RunRecord, StageKey, now_unix};
use crate::dsl::{Exec, Metrics, Value};
use crate::error::{Diag, Diags};

use super::events::{Event, Reporter};
use super::plan::{Plan, Status};
use super::subprocess::run_program;

#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Parallel stages at most.
    pub jobs: usize,
    /// Run only these stages (names or ids) and what they need.
    pub only: Vec<String>,
    /// Stop launching stages after the first failure.
    pub fail_fast: bool,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunSummary {
    pub ran: usize,
    pub cached: usize,
    pub failed: usize,
    pub skipped: usize,
    pub seconds: f64,
}

struct Failure {
    message: String,
    log: Option<PathBuf>,
    seconds: f64,
}

enum Msg {
    Event(Event),
    Finished {
        node: usize,
        result: Result<(RunRecord, bool), Failure>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Pending,
    Running,
    Done,
    Failed,
    Skipped,
}

/// Looks a key up; a damaged artifact counts as absent (it is recomputed).
fn lookup(cache: &Cache, key: &str) -> Result<Option<RunRecord>, Diag> {
    let idx = cache.index()?;
    let Some(rec) = idx.run(key)? else {
        return Ok(None);
    };
    match idx.artifact(&rec.output)? {
        Some(art) if cache.check_artifact(&art, false).is_empty() => Ok(Some(rec)),
        _ => Ok(None),
    }
}

/// Executes the plan. Returns the counts; a failed stage is counted, not an `Err`.
pub fn run(
    plan: &Plan,
    cache: &Cache,
    opts: &RunOptions,
    reporter: &mut Reporter,
) -> Result<RunSummary, Diags> {
    let start = Instant::now();
    let nodes = &plan.pipeline.nodes;
    let selected: BTreeSet<usize> = if opts.only.is_empty() {
        (0..nodes.len()).collect()
    } else {
        plan.pipeline
            .upstream_closure(&plan.pipeline.select(&opts.only)?)
    };
    cache.clean_scratch();

    let mut state = vec![State::Pending; nodes.len()];
    let mut outputs: Vec<Option<String>> = vec![None; nodes.len()];
    let mut remaining: Vec<usize> = nodes.iter().map(|n| n.inputs.len()).collect();
    let mut ready: BTreeSet<usize> = selected
        .iter()
        .copied()
        .filter(|&n| remaining[n] == 0)
        .collect();
    let mut held: HashMap<String, usize> = HashMap::new();
    let mut latest_updates: Vec<(String, StageKey)> = Vec::new();
    let mut summary = RunSummary::default();
    let mut running = 0usize;
    let mut stop = false;
    let jobs = opts.jobs.max(1);
    let (tx, rx) = mpsc::channel::<Msg>();

    // Marks `n` done and readies the dependents whose inputs are all done.
    let complete = |n: usize,
                    rec: &RunRecord,
                    state: &mut Vec<State>,
                    outputs: &mut Vec<Option<String>>,
                    remaining: &mut Vec<usize>,
                    ready: &mut BTreeSet<usize>| {
        state[n] = State::Done;
        outputs[n] = Some(rec.output.clone());
        for d in plan.pipeline.dependents(n) {
            if selected.contains(&d) {
                remaining[d] -= 1;
                if remaining[d] == 0 && state[d] == State::Pending {
                    ready.insert(d);
                }
            }
        }
    };

    let result: Result<(), Diags> = std::thread::scope(|scope| {
        loop {
            while running < jobs && !stop {
                let pick = ready.iter().copied().find(|&n| {
                    nodes[n]
                        .kind
                        .resources
                        .iter()
                        .all(|r| !held.contains_key(r))
                });
                let Some(n) = pick else { break };
                ready.remove(&n);
                let outs: Vec<String> = nodes[n]
                    .inputs
                    .iter()
                    .map(|&u| outputs[u].clone().unwrap_or_default())
                    .collect();
                let comps = plan.components(n, &outs);
                let key = comps.key();
                if !plan.forced.contains(&n) {
                    let known = match (&plan.statuses[n], &plan.keys[n]) {
                        (Status::Cached(rec), Some(k)) if *k == key => Some((**rec).clone()),
                        _ => lookup(cache, &key)?,
                    };
                    if let Some(rec) = known {
                        if plan.latest_keys[n].as_deref() != Some(key.as_str()) {
                            latest_updates.push((nodes[n].id.clone(), key.clone()));
                        }
                        reporter.event(
                            plan,
                            &Event::Cached {
                                node: n,
                                record: rec.clone(),
                                by_other_run: false,
                            },
                        );
                        summary.cached += 1;
                        complete(
                            n,
                            &rec,
                            &mut state,
                            &mut outputs,
                            &mut remaining,
                            &mut ready,
                        );
                        continue;
                    }
                }
                // Inputs go by their declared names, the names in the key: a
                // stage that labels its outputs by them stays shareable across sweeps.
                let inputs: Vec<(String, PathBuf)> = nodes[n]
                    .inputs
                    .iter()
                    .map(|&u| {
                        (
                            nodes[u].stage.clone(),
                            cache.artifact_dir(outputs[u].as_deref().unwrap_or_default()),
                        )
                    })
                    .collect();
                for r in &nodes[n].kind.resources {
                    held.insert(r.clone(), n);
                }
                state[n] = State::Running;
                running += 1;
                let tx = tx.clone();
                scope.spawn(move || {
                    let result = compute(plan, cache, n, comps, key, inputs, &tx);
                    let _ = tx.send(Msg::Finished { node: n, result });
                });
            }
            if running == 0 {
                break;
            }
            match rx.recv_timeout(Duration::from_millis(150)) {
                Ok(Msg::Event(ev)) => reporter.event(plan, &ev),
                Ok(Msg::Finished { node: n, result }) => {
                    running -= 1;
                    held.retain(|_, holder| *holder != n);
                    match result {
                        Ok((rec, by_other)) => {
                            if by_other {
                                summary.cached += 1;
                                reporter.event(
                                    plan,
                                    &Event::Cached {
                                        node: n,
                                        record: rec.clone(),
                                        by_other_run: true,
                                    },
                                );
                                latest_updates.push((nodes[n].id.clone(), rec.key.clone()));
                            } else {
                                summary.ran += 1;
                                reporter.event(
                                    plan,
                                    &Event::Done {
                                        node: n,
                                        record: rec.clone(),
                                    },
                                );
                            }
                            complete(
                                n,
                                &rec,
                                &mut state,
                                &mut outputs,
                                &mut remaining,
                                &mut ready,
                            );
                        }
                        Err(f) => {
                            state[n] = State::Failed;
                            summary.failed += 1;
                            reporter.event(
                                plan,
                                &Event::Failed {
                                    node: n,
                                    seconds: f.seconds,
                                    message: f.message,
                                    log: f.log,
                                },
                            );
                            let mut queue: VecDeque<usize> = plan.pipeline.dependents(n).into();
                            while let Some(d) = queue.pop_front() {
                                if selected.contains(&d) && state[d] == State::Pending {
                                    state[d] = State::Skipped;
                                    ready.remove(&d);
                                    summary.skipped += 1;
                                    let because = format!("input `{}` failed", nodes[n].id);
                                    reporter.event(plan, &Event::Skipped { node: d, because });
                                    queue.extend(plan.pipeline.dependents(d));
                                }
                            }
                            if opts.fail_fast {
                                stop = true;
                            }
                        }
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => reporter.tick(),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        Ok(())
    });
    result?;
    // Stages never launched because of --fail-fast.
    for &n in &selected {
        if state[n] == State::Pending {
            state[n] = State::Skipped;
            summary.skipped += 1;
            reporter.event(
                plan,
                &Event::Skipped {
                    node: n,
                    because: "an earlier stage failed (--fail-fast)".into(),
                },
            );
        }
    }
    if !latest_updates.is_empty() {
        let idx = cache.index()?;
        for (id, key) in &latest_updates {
            idx.set_latest(plan.experiment_name(), id, key)?;
            idx.clear_failure(plan.experiment_name(), id)?;
        }
        idx.flush()?;
    }
    summary.seconds = start.elapsed().as_secs_f64();
    Ok(summary)
}

/// Reads `metrics.json` if the stage wrote one: a flat object of numbers.
fn read_metrics(out: &Path) -> Result<Metrics, String> {
    let p = out.join("metrics.json");
    if !p.exists() {
        return Ok(Metrics::new());
    }
    let text = std::fs::read_to_string(&p).map_err(|e| format!("cannot read metrics.json: {e}"))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("metrics.json is not valid JSON: {e}"))?;
    let obj = v
        .as_object()
        .ok_or("metrics.json must be a JSON object of numbers")?;
    let mut m = Metrics::new();
    for (k, v) in obj {
        let x = v.as_f64().ok_or_else(|| format!("metrics.json: value of `{k}` is not a number (metrics are a flat object of numbers)"))?;
        m.insert(k.clone(), x);
    }
    Ok(m)
}

fn stage_json(
    plan: &Plan,
    n: usize,
    inputs: &[(String, PathBuf)],
    out: &Path,
    backend: Option<&str>,
) -> serde_json::Value {
    let node = &plan.pipeline.nodes[n];
    let params: serde_json::Map<String, serde_json::Value> = absolute_params(plan, n)
        .iter()
        .map(|(k, v)| (k.clone(), v.to_json()))
        .collect();
    serde_json::json!({
        "stage": node.id,
        "kind": node.kind.name,
        "params": params,
        "inputs": inputs.iter().map(|(id, p)| serde_json::json!({"stage": id, "path": p})).collect::<Vec<_>>(),
        "output": out,
        "seed": node.seed,
        "backend": backend,
        "experiment": plan.pipeline.experiment.name,
    })
}

/// Computes one stage under its key's lock and records the result.
fn compute(
    plan: &Plan,
    cache: &Cache,
    n: usize,
    comps: KeyComponents,
    key: StageKey,
    inputs: Vec<(String, PathBuf)>,
    tx: &mpsc::Sender<Msg>,
) -> Result<(RunRecord, bool), Failure> {
    let env_fail = |d: Diag| Failure {
        message: d.to_string(),
        log: None,
        seconds: 0.0,
    };
    let _lock = match cache.try_lock_key(&key).map_err(env_fail)? {
        Some(l) => l,
        None => {
            let _ = tx.send(Msg::Event(Event::Waiting { node: n }));
            cache.lock_key(&key).map_err(env_fail)?
        }
    };
    // Another run may have finished this key since the plan was made.
    if !plan.forced.contains(&n)
        && let Some(rec) = lookup(cache, &key).map_err(env_fail)?
    {
        return Ok((rec, true));
    }
    let node = &plan.pipeline.nodes[n];
    let exp = plan.experiment_name().to_string();
    let scratch = cache.scratch(&key).map_err(env_fail)?;
    let out = scratch.join("out");
    let log = scratch.join("log.txt");
    let _ = std::fs::write(&log, "");
    let _ = tx.send(Msg::Event(Event::Start {
        node: n,
        log: log.clone(),
    }));
    let started = Instant::now();
    let backend = comps.backend.clone();
    let result: Result<Metrics, String> = match &node.kind.exec {
        Exec::Program { program, args, .. } => {
            let spec = stage_json(plan, n, &inputs, &out, backend.as_deref());
            let spec_path = scratch.join("stage.json");
            std::fs::write(
                &spec_path,
                serde_json::to_vec_pretty(&spec).unwrap_or_default(),
            )
            .map_err(|e| format!("cannot write stage description: {e}"))
            .and_then(|_| {
                run_program(
                    program,
                    args,
                    &plan.pipeline.experiment.dir,
                    &spec_path,
                    &log,
                )
            })
            .and_then(|_| read_metrics(&out))
        }
        Exec::Builtin { name } => match crate::stages::builtin(name) {
            Some(b) => match std::fs::File::options().append(true).open(&log) {
                Ok(mut logf) => {
                    let params = absolute_params(plan, n);
                    let mut ctx = crate::stages::StageContext {
                        stage_id: &node.id,
                        params: &params,
                        inputs: &inputs,
                        output: &out,
                        seed: node.seed,
                        backend: backend.as_deref(),
                        experiment_dir: &plan.pipeline.experiment.dir,
                        memo_dir: &cache.root().join("memo").join(&node.kind.name),
                        checkpoint_dir: &cache.checkpoint_dir(&key),
                        log: &mut logf,
                    };
                    // A panic in a stage fails that stage, not the whole run.
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| b.stage.run(&mut ctx)))
                        .unwrap_or_else(|p| {
                            let what = p
                                .downcast_ref::<String>()
                                .cloned()
                                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                                .unwrap_or_default();
                            Err(format!("internal error (a bug, please report it): {what}"))
                        })
                        .and_then(|m| {
                            // Built-ins return metrics; store them like external stages do.
                            let json = serde_json::to_vec_pretty(&m).map_err(|e| e.to_string())?;
                            std::fs::write(out.join("metrics.json"), json)
                                .map_err(|e| format!("cannot write metrics.json: {e}"))?;
                            Ok(m)
                        })
                }
                Err(e) => Err(format!("cannot open log: {e}")),
            },
            None => Err(format!("no built-in stage `{name}` in this build")),
        },
    };
    let seconds = started.elapsed().as_secs_f64();
    let finished = result.and_then(|metrics| {
        cache
            .commit_output(&out)
            .map(|art| (metrics, art))
            .map_err(|d| d.to_string())
    });
    match finished {
        Ok((metrics, art)) => {
            let final_log = cache.log_path(&key, false);
            let _ = std::fs::rename(&log, &final_log);
            let rec = RunRecord {
                key: key.clone(),
                components: comps,
                output: art.digest.clone(),
                metrics,
                seconds,
                finished_at: now_unix(),
                experiment: exp.clone(),
                stage_id: node.id.clone(),
            };
            let record = || -> Result<(), Diag> {
                let idx = cache.index()?;
                idx.put_artifact(&art)?;
                idx.put_run(&rec)?;
                idx.set_latest(&exp, &node.id, &key)?;
                idx.clear_failure(&exp, &node.id)?;
                idx.flush()
            };
            record().map_err(|d| Failure {
                message: d.to_string(),
                log: Some(final_log.clone()),
                seconds,
            })?;
            let _ = std::fs::remove_dir_all(&scratch);
            let _ = std::fs::remove_dir_all(cache.checkpoint_dir(&key));
            Ok((rec, false))
        }
        Err(message) => {
            let final_log = cache.log_path(&key, true);
            let log = std::fs::rename(&log, &final_log).ok().map(|_| final_log);
            if let Ok(idx) = cache.index() {
                let _ = idx.put_failure(&FailureRecord {
                    key: key.clone(),
                    experiment: exp,
                    stage_id: node.id.clone(),
                    finished_at: now_unix(),
                    message: message.clone(),
                    log: log.clone(),
                });
                let _ = idx.flush();
            }
            Err(Failure {
                message,
                log,
                seconds,
            })
        }
    }
}

/// Parameters with `path` values made absolute, for built-in stages.
fn absolute_params(plan: &Plan, n: usize) -> std::collections::BTreeMap<String, Value> {
    let node = &plan.pipeline.nodes[n];
    let dir = &plan.pipeline.experiment.dir;
    node.params
        .iter()
        .map(|(k, v)| {
            let is_path = node.kind.param(k).is_some_and(|s| s.ty.mentions_path());
            let v = match (is_path, v) {
                (true, Value::Str(s)) if s.is_empty() => Value::Str(String::new()),
                (true, Value::Str(s)) => Value::Str(dir.join(s).display().to_string()),
                (true, Value::List(items)) => Value::List(
                    items
                        .iter()
                        .map(|i| {
                            Value::Str(
                                dir.join(i.as_str().unwrap_or_default())
                                    .display()
                                    .to_string(),
                            )
                        })
                        .collect(),
                ),
                _ => v.clone(),
            };
            (k.clone(), v)
        })
        .collect()
}
