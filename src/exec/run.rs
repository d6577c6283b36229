//! Running a plan. A [`Scheduler`] owns the state of one run: which nodes
//! are pending, ready, running, done, failed or skipped, the output digests
//! of finished ones, and the resources (`gpu`) held. It launches ready nodes
//! on up to `--jobs` scoped threads, reuses a stored result when a node's
//! key (known once its inputs are) is in the cache (early cut-off: inputs
//! recomputed to identical bytes do not rerun a stage), and skips the
//! dependents of a failure. Each computation claims its key from the cache,
//! so concurrent runs compute a key once, and ends in the cache's commit
//! protocol ([`crate::cache::Pending`]). Worker threads only send messages;
//! every event reaches the [`EventSink`] from this thread.
//!
//! A run holds the cache shared for as long as it runs (`cache gc` waits).
//! Asked to stop (`RunOptions::stop`, set by SIGINT/SIGTERM), it starts
//! nothing more, stops the running programs, reports which stages were
//! interrupted and returns at once: finished results are stored, interrupted
//! stages record nothing and leave no scratch folder, and their checkpoints
//! stay for the next run to resume from. Built-in stages run on threads that
//! the caller's process exit ends.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use crate::cache::{Cache, Claim, Failed, KeyComponents, Outcome, Pending, RunRecord, StageKey};
use crate::dsl::{Exec, Metrics};
use crate::error::{Diag, Diags};

use super::events::{Event, EventSink};
use super::executor::Executor;
use super::plan::{Plan, Reason, Status};
use super::spec::{InputDir, StageSpec};

#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Parallel stages at most.
    pub jobs: usize,
    /// Run only these stages (names or ids) and what they need.
    pub only: Vec<String>,
    /// Stop launching stages after the first failure.
    pub fail_fast: bool,
    /// Set (to the signal's number) to stop the run.
    pub stop: Option<Arc<AtomicUsize>>,
    /// Where stages compute.
    pub executor: Executor,
    /// Upload each result computed to the plan's remote as it is stored.
    pub push: bool,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunSummary {
    pub ran: usize,
    pub cached: usize,
    /// Results taken from the remote instead of computed.
    pub pulled: usize,
    pub failed: usize,
    pub skipped: usize,
    pub seconds: f64,
    /// The signal that stopped the run, if one did.
    pub interrupted: Option<i32>,
    /// The stages it stopped.
    pub interrupted_stages: Vec<String>,
}

/// Set once a run is stopped: workers finishing after it record nothing.
static STOPPED: AtomicBool = AtomicBool::new(false);

/// A finished computation, as a worker reports it.
struct Finished {
    record: RunRecord,
    /// Another process stored it while this run waited for the key.
    by_other_run: bool,
    /// Taken from the remote: the bytes received and the seconds it took.
    pulled: Option<(u64, f64)>,
    warnings: Vec<String>,
}

enum Msg {
    Event(Event),
    Finished {
        node: usize,
        seconds: f64,
        result: Result<Finished, Failed>,
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

/// Executes the plan. Returns the counts; a failed stage is counted, not an `Err`.
pub fn run(
    plan: &Arc<Plan>,
    cache: &Cache,
    opts: &RunOptions,
    sink: &mut dyn EventSink,
) -> Result<RunSummary, Diags> {
    let start = Instant::now();
    let _lease = cache.lease_shared(|| {
        sink.note("waiting for `efrlhf cache gc` (or `cache repair`) on this cache to finish")
    })?;
    let selected: BTreeSet<usize> = if opts.only.is_empty() {
        (0..plan.pipeline.nodes.len()).collect()
    } else {
        plan.pipeline
            .upstream_closure(&plan.pipeline.select(&opts.only)?)
    };
    fetch_hub_files(plan, &selected, sink)?;
    cache.clean_scratch();
    let mut s = Scheduler::new(plan, cache, opts, selected);
    s.drive(sink)?;
    s.skip_unlaunched(sink);
    s.record_latest()?;
    s.summary.seconds = start.elapsed().as_secs_f64();
    Ok(s.summary)
}

/// Brings the Hub files that the stages to compute read into the Hub cache,
/// before anything computes: a revision that could not be resolved, or a
/// file that cannot be had, fails the run here, naming each with its size.
pub fn fetch_hub_files(
    plan: &Plan,
    selected: &BTreeSet<usize>,
    sink: &mut dyn EventSink,
) -> Result<(), Diags> {
    let to_run: BTreeSet<usize> = selected
        .iter()
        .copied()
        // A result on the remote needs no Hub files (unless its pull is refused).
        .filter(|&n| plan.statuses[n].known_output().is_none() || plan.forced.contains(&n))
        .collect();
    let unresolved = plan.hub.unresolved(&to_run);
    if let Some(u) = unresolved.first() {
        let list: Vec<String> = unresolved
            .iter()
            .map(|u| {
                format!(
                    "  `{}` (parameter `{}` of `{}`)",
                    u.uri, u.param, plan.pipeline.nodes[u.node].id
                )
            })
            .collect();
        return Err(Diag::env(
            "E-HUB-OFFLINE",
            format!(
                "nothing was computed: {}, so these cannot be read:\n{}",
                u.why.as_deref().unwrap_or("the Hub cannot be reached"),
                list.join("\n")
            ),
        )
        .with_help("run where the Hub is reachable once (or pin a commit whose files are in the Hub cache)")
        .into());
    }
    let todo = plan.hub.missing(&to_run);
    if todo.is_empty() {
        return Ok(());
    }
    let mut progress = DownloadProgress::new(sink);
    plan.hub.fetch(&todo, &mut progress)
}

/// Forwards a download's progress to the sink, a few times a second.
struct DownloadProgress<'s> {
    sink: &'s mut dyn EventSink,
    total: u64,
    done: u64,
    last: Instant,
    window: (Instant, u64),
    rate: f64,
}

impl<'s> DownloadProgress<'s> {
    fn new(sink: &'s mut dyn EventSink) -> Self {
        let now = Instant::now();
        DownloadProgress {
            sink,
            total: 0,
            done: 0,
            last: now,
            window: (now, 0),
            rate: 0.0,
        }
    }

    fn report(&mut self) {
        let (t0, b0) = self.window;
        let dt = t0.elapsed().as_secs_f64();
        if dt > 0.05 {
            self.rate = (self.done - b0) as f64 / dt;
        }
        if dt > 2.0 {
            self.window = (Instant::now(), self.done);
        }
        self.last = Instant::now();
        self.sink.download(&super::events::DownloadEvent::Progress {
            bytes: self.done,
            total: self.total,
            bytes_per_second: self.rate,
        });
        self.sink.tick();
    }
}

impl crate::hub::Transfer for DownloadProgress<'_> {
    fn begin(&mut self, files: usize, bytes: u64) {
        self.total = bytes;
        self.sink
            .download(&super::events::DownloadEvent::Start { files, bytes });
    }
    fn file(&mut self, repo: &str, path: &str, size: u64, resumed_from: u64) {
        self.done += resumed_from;
        self.sink.download(&super::events::DownloadEvent::File {
            repo: repo.to_string(),
            file: path.to_string(),
            size,
            resumed_from,
        });
    }
    fn bytes(&mut self, n: u64) {
        self.done += n;
        if self.last.elapsed() >= Duration::from_millis(250) {
            self.report();
        }
    }
    fn waiting(&mut self, repo: &str, path: &str) {
        self.sink.download(&super::events::DownloadEvent::Waiting {
            repo: repo.to_string(),
            file: path.to_string(),
        });
    }
    fn end(&mut self, files: usize, bytes: u64, seconds: f64) {
        self.report();
        self.sink.download(&super::events::DownloadEvent::Done {
            files,
            bytes,
            seconds,
            bytes_per_second: bytes as f64 / seconds.max(1e-9),
        });
    }
}

/// The state of one run.
struct Scheduler<'p> {
    plan: &'p Plan,
    /// The same plan, for worker threads.
    shared: Arc<Plan>,
    cache: &'p Cache,
    jobs: usize,
    fail_fast: bool,
    stop_signal: Option<Arc<AtomicUsize>>,
    executor: Executor,
    push: bool,
    /// Running nodes and their scratch folders (known from their start event).
    scratch: BTreeMap<usize, Option<PathBuf>>,
    selected: BTreeSet<usize>,
    state: Vec<State>,
    /// Output digests of finished nodes.
    outputs: Vec<Option<String>>,
    /// Inputs not finished yet, per node.
    remaining: Vec<usize>,
    ready: BTreeSet<usize>,
    /// Resource -> the node holding it.
    held: HashMap<String, usize>,
    running: usize,
    stop: bool,
    /// Stages whose latest key moves to a result this run reused.
    latest_updates: Vec<(String, StageKey)>,
    summary: RunSummary,
}

impl<'p> Scheduler<'p> {
    fn new(
        plan: &'p Arc<Plan>,
        cache: &'p Cache,
        opts: &RunOptions,
        selected: BTreeSet<usize>,
    ) -> Self {
        let nodes = &plan.pipeline.nodes;
        let remaining: Vec<usize> = nodes.iter().map(|n| n.inputs.len()).collect();
        let ready = selected
            .iter()
            .copied()
            .filter(|&n| remaining[n] == 0)
            .collect();
        Scheduler {
            plan,
            shared: Arc::clone(plan),
            cache,
            jobs: opts.jobs.max(1),
            fail_fast: opts.fail_fast,
            stop_signal: opts.stop.clone(),
            executor: opts.executor.clone(),
            push: opts.push,
            scratch: BTreeMap::new(),
            selected,
            state: vec![State::Pending; nodes.len()],
            outputs: vec![None; nodes.len()],
            remaining,
            ready,
            held: HashMap::new(),
            running: 0,
            stop: false,
            latest_updates: Vec::new(),
            summary: RunSummary::default(),
        }
    }

    /// Launches and collects until nothing runs and nothing can start, or
    /// until asked to stop.
    fn drive(&mut self, sink: &mut dyn EventSink) -> Result<(), Diags> {
        let (tx, rx) = mpsc::channel::<Msg>();
        loop {
            if let Some(sig) = self.stop_signal() {
                self.interrupt(sig, &rx, sink);
                return Ok(());
            }
            self.launch(&tx, sink)?;
            if self.running == 0 {
                return Ok(());
            }
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(Msg::Event(ev)) => {
                    if let Event::Start { node, log, .. } = &ev {
                        self.scratch
                            .insert(*node, log.parent().map(Path::to_path_buf));
                    }
                    sink.event(self.plan, &ev)
                }
                Ok(Msg::Finished {
                    node,
                    seconds,
                    result,
                }) => self.finished(node, seconds, result, sink),
                Err(mpsc::RecvTimeoutError::Timeout) => sink.tick(),
                Err(mpsc::RecvTimeoutError::Disconnected) => return Ok(()),
            }
        }
    }

    /// A ready node whose resources are free.
    fn pick(&self) -> Option<usize> {
        let nodes = &self.plan.pipeline.nodes;
        self.ready.iter().copied().find(|&n| {
            self.executor.is_remote(&nodes[n].kind)
                || nodes[n]
                    .kind
                    .resources
                    .iter()
                    .all(|r| !self.held.contains_key(r))
        })
    }

    fn stop_signal(&self) -> Option<i32> {
        let sig = self.stop_signal.as_ref()?.load(Ordering::SeqCst);
        (sig != 0).then_some(sig as i32)
    }

    /// Stops: no new stage, the running programs stopped, the running stages
    /// reported and their scratch folders removed. Waits a little for the
    /// programs' workers (they end as soon as their supervisors do), never
    /// for built-in stages, which end with the process.
    fn interrupt(&mut self, sig: i32, rx: &mpsc::Receiver<Msg>, sink: &mut dyn EventSink) {
        STOPPED.store(true, Ordering::SeqCst);
        super::subprocess::stop_all();
        self.executor.cancel_all();
        let deadline = Instant::now() + Duration::from_secs(2);
        let programs = |s: &Self| {
            s.scratch
                .keys()
                .any(|&n| matches!(s.plan.pipeline.nodes[n].kind.exec, Exec::Program { .. }))
        };
        while programs(self) && Instant::now() < deadline {
            if let Ok(Msg::Finished { node, .. }) = rx.recv_timeout(Duration::from_millis(50)) {
                self.report_interrupted(node, sink);
            }
        }
        for node in self.scratch.keys().copied().collect::<Vec<_>>() {
            self.report_interrupted(node, sink);
        }
        self.summary.interrupted = Some(sig);
    }

    fn report_interrupted(&mut self, node: usize, sink: &mut dyn EventSink) {
        let Some(dir) = self.scratch.remove(&node) else {
            return;
        };
        if let Some(dir) = dir
            && dir.exists()
            && let Err(e) = self.cache.discard_scratch(&dir)
        {
            let message = format!("cannot remove `{}`: {e}", dir.display());
            sink.event(self.plan, &Event::Warning { node, message });
        }
        self.state[node] = State::Skipped;
        self.summary
            .interrupted_stages
            .push(self.plan.pipeline.nodes[node].id.clone());
        sink.event(self.plan, &Event::Interrupted { node });
    }

    /// Starts ready nodes (or reuses their stored results) while there is room.
    fn launch(&mut self, tx: &mpsc::Sender<Msg>, sink: &mut dyn EventSink) -> Result<(), Diag> {
        while self.running < self.jobs && !self.stop {
            let Some(n) = self.pick() else {
                return Ok(());
            };
            self.ready.remove(&n);
            let outs: Vec<String> = self.plan.pipeline.nodes[n]
                .inputs
                .iter()
                .map(|&u| self.outputs[u].clone().unwrap_or_default())
                .collect();
            let comps = self.plan.components(n, &outs);
            let key = comps.key();
            if let Some(rec) = self.stored(n, &key)? {
                if self.plan.latest_keys[n].as_deref() != Some(key.as_str()) {
                    self.latest_updates
                        .push((self.plan.pipeline.nodes[n].id.clone(), key.clone()));
                }
                self.summary.cached += 1;
                sink.event(
                    self.plan,
                    &Event::Cached {
                        node: n,
                        record: rec.clone(),
                        by_other_run: false,
                    },
                );
                self.complete(n, &rec);
                continue;
            }
            self.spawn(tx, n, comps, key);
        }
        Ok(())
    }

    /// The stored result of `key`, unless `n` is forced.
    fn stored(&self, n: usize, key: &str) -> Result<Option<RunRecord>, Diag> {
        if self.plan.forced.contains(&n) {
            return Ok(None);
        }
        match (&self.plan.statuses[n], &self.plan.keys[n]) {
            (Status::Cached(rec), Some(k)) if k == key => Ok(Some((**rec).clone())),
            // The plan re-hashed it in full: a quick look would pass it again.
            (Status::Run(Reason::Damaged(_)), Some(k)) if k == key => Ok(None),
            _ => self.cache.lookup(key),
        }
    }

    fn spawn(&mut self, tx: &mpsc::Sender<Msg>, n: usize, comps: KeyComponents, key: StageKey) {
        let nodes = &self.plan.pipeline.nodes;
        // Inputs go by their declared names, the names in the key: a stage
        // that labels its outputs by them stays shareable across sweeps.
        let inputs: Vec<InputDir> = nodes[n]
            .inputs
            .iter()
            .zip(&nodes[n].roles)
            .map(|(&u, role)| InputDir {
                stage: nodes[u].stage.clone(),
                dir: self
                    .cache
                    .artifact_dir(self.outputs[u].as_deref().unwrap_or_default()),
                role: role.clone(),
            })
            .collect();
        if !self.executor.is_remote(&nodes[n].kind) {
            for r in &nodes[n].kind.resources {
                self.held.insert(r.clone(), n);
            }
        }
        self.state[n] = State::Running;
        self.running += 1;
        self.scratch.insert(n, None);
        let (plan, cache, tx) = (Arc::clone(&self.shared), self.cache.clone(), tx.clone());
        let executor = self.executor.clone();
        let push = self.push;
        std::thread::spawn(move || {
            let started = Instant::now();
            let work = Work {
                plan: &plan,
                cache: &cache,
                executor: &executor,
                tx: &tx,
                push,
            };
            let result = work.compute(n, (comps, key), inputs);
            let seconds = started.elapsed().as_secs_f64();
            // Fails only when the run has returned (stopped): nobody listens then.
            let _ = tx.send(Msg::Finished {
                node: n,
                seconds,
                result,
            });
        });
    }

    /// A worker is done with `n`.
    fn finished(
        &mut self,
        n: usize,
        seconds: f64,
        result: Result<Finished, Failed>,
        sink: &mut dyn EventSink,
    ) {
        self.running -= 1;
        self.scratch.remove(&n);
        self.held.retain(|_, holder| *holder != n);
        match result {
            Ok(f) => {
                for message in f.warnings {
                    sink.event(self.plan, &Event::Warning { node: n, message });
                }
                let ev = if let Some((bytes, seconds)) = f.pulled {
                    self.summary.pulled += 1;
                    Event::Pulled {
                        node: n,
                        record: f.record.clone(),
                        bytes,
                        seconds,
                    }
                } else if f.by_other_run {
                    self.summary.cached += 1;
                    self.latest_updates
                        .push((self.plan.pipeline.nodes[n].id.clone(), f.record.key.clone()));
                    Event::Cached {
                        node: n,
                        record: f.record.clone(),
                        by_other_run: true,
                    }
                } else {
                    self.summary.ran += 1;
                    Event::Done {
                        node: n,
                        record: f.record.clone(),
                    }
                };
                sink.event(self.plan, &ev);
                self.complete(n, &f.record);
            }
            Err(f) => self.fail(n, seconds, f, sink),
        }
    }

    /// Marks `n` done and readies the dependents whose inputs are all done.
    fn complete(&mut self, n: usize, rec: &RunRecord) {
        self.state[n] = State::Done;
        self.outputs[n] = Some(rec.output.clone());
        for d in self.plan.pipeline.dependents(n) {
            if self.selected.contains(&d) {
                self.remaining[d] -= 1;
                if self.remaining[d] == 0 && self.state[d] == State::Pending {
                    self.ready.insert(d);
                }
            }
        }
    }

    /// Marks `n` failed and skips everything downstream of it.
    fn fail(&mut self, n: usize, seconds: f64, f: Failed, sink: &mut dyn EventSink) {
        self.state[n] = State::Failed;
        self.summary.failed += 1;
        sink.event(
            self.plan,
            &Event::Failed {
                node: n,
                seconds,
                message: f.message,
                log: f.log,
            },
        );
        let because = format!("input `{}` failed", self.plan.pipeline.nodes[n].id);
        let mut queue: VecDeque<usize> = self.plan.pipeline.dependents(n).into();
        while let Some(d) = queue.pop_front() {
            if self.selected.contains(&d) && self.state[d] == State::Pending {
                self.state[d] = State::Skipped;
                self.ready.remove(&d);
                self.summary.skipped += 1;
                let because = because.clone();
                sink.event(self.plan, &Event::Skipped { node: d, because });
                queue.extend(self.plan.pipeline.dependents(d));
            }
        }
        if self.fail_fast {
            self.stop = true;
        }
    }

    /// Stages never launched because of `--fail-fast`.
    fn skip_unlaunched(&mut self, sink: &mut dyn EventSink) {
        let pending: Vec<usize> = self
            .selected
            .iter()
            .copied()
            .filter(|&n| self.state[n] == State::Pending)
            .collect();
        let because = if self.summary.interrupted.is_some() {
            "the run was interrupted"
        } else {
            "an earlier stage failed (--fail-fast)"
        };
        for n in pending {
            self.state[n] = State::Skipped;
            self.summary.skipped += 1;
            let because = because.to_string();
            sink.event(self.plan, &Event::Skipped { node: n, because });
        }
    }

    /// Points each reused stage's latest key at the result it used.
    fn record_latest(&self) -> Result<(), Diag> {
        if self.latest_updates.is_empty() {
            return Ok(());
        }
        let idx = self.cache.index()?;
        let exp = self.plan.experiment_name();
        for (id, key) in &self.latest_updates {
            idx.set_latest(exp, id, key)?;
            idx.clear_failure(exp, id)?;
        }
        idx.flush()
    }
}

/// Sends an event to the main thread.
fn notify(tx: &mpsc::Sender<Msg>, ev: Event) {
    // Sending fails only once a stopped run has returned: nobody listens then.
    let _ = tx.send(Msg::Event(ev));
}

/// What trying the remote for a claimed key came to.
enum PullTry<'c> {
    Pulled(Finished),
    /// Not pulled: the claim, to compute.
    Back(Pending<'c>),
    /// Pulled, but storing it failed (recorded as the stage's failure).
    Failed(Failed),
}

/// What a worker thread computes with.
struct Work<'a> {
    plan: &'a Plan,
    cache: &'a Cache,
    executor: &'a Executor,
    tx: &'a mpsc::Sender<Msg>,
    push: bool,
}

impl Work<'_> {
    /// Computes one stage under its key's claim and commits the result; a
    /// result the plan's remote holds is pulled instead.
    fn compute(
        &self,
        n: usize,
        (comps, key): (KeyComponents, StageKey),
        inputs: Vec<InputDir>,
    ) -> Result<Finished, Failed> {
        let plan = self.plan;
        let node = &plan.pipeline.nodes[n];
        let owner = (plan.experiment_name(), node.id.as_str());
        // Forced, or found damaged by the plan's full check (a quick look would pass it).
        let damaged = matches!(plan.statuses[n], Status::Run(Reason::Damaged(_)))
            && plan.keys[n].as_deref() == Some(key.as_str());
        let forced = plan.forced.contains(&n);
        let claim = self
            .cache
            .claim(&key, owner, forced || damaged, |holder| {
                notify(
                    self.tx,
                    Event::Waiting {
                        node: n,
                        holder: holder.to_string(),
                    },
                )
            })
            .map_err(|d| Failed {
                message: d.to_string(),
                log: None,
            })?;
        let mut pending = match claim {
            Claim::Stored(record) => {
                return Ok(Finished {
                    record: *record,
                    by_other_run: true,
                    pulled: None,
                    warnings: Vec::new(),
                });
            }
            Claim::Pending(p) => *p,
        };
        // A remote the plan could not read is not asked again for each stage.
        if !forced
            && plan.remote_error.is_none()
            && let Some(remote) = &plan.remote
        {
            match self.pull(n, remote, pending, &comps) {
                PullTry::Pulled(finished) => return Ok(finished),
                PullTry::Back(back) => pending = back,
                PullTry::Failed(f) => return Err(f),
            }
        }
        let finished = self.compute_claimed(n, comps, pending, inputs)?;
        Ok(self.pushed(n, finished))
    }

    /// Tries the remote for a claimed key: its result pulled and stored,
    /// else the claim back (a refusal is a warning).
    fn pull<'c>(
        &self,
        n: usize,
        remote: &crate::cache::remote::Remote,
        pending: Pending<'c>,
        comps: &KeyComponents,
    ) -> PullTry<'c> {
        use crate::cache::remote::Filled;
        let warn = |message: String| notify(self.tx, Event::Warning { node: n, message });
        let manifest = match remote.manifest(pending.key()) {
            Ok(Some(m)) => m,
            Ok(None) => return PullTry::Back(pending),
            Err(r) => {
                warn(format!("not using the remote's result: {r}; computing it"));
                return PullTry::Back(pending);
            }
        };
        let started = Instant::now();
        let bytes = manifest.artifact.size;
        notify(self.tx, Event::Pulling { node: n, bytes });
        match remote.fill(pending, &manifest, comps.clone()) {
            Filled::Done { committed, bytes } => PullTry::Pulled(Finished {
                record: committed.record,
                by_other_run: false,
                pulled: Some((bytes, started.elapsed().as_secs_f64())),
                warnings: committed.warnings,
            }),
            Filled::Refused(back, r) => {
                warn(format!("refused the remote's result: {r}; computing it"));
                PullTry::Back(*back)
            }
            Filled::Failed(f) => PullTry::Failed(f),
        }
    }

    /// Uploads a computed result when the run pushes; a failed push is a
    /// warning (the result is stored here all the same).
    fn pushed(&self, n: usize, mut f: Finished) -> Finished {
        let Some(remote) = self.plan.remote.as_ref().filter(|_| self.push) else {
            return f;
        };
        let art = match self
            .cache
            .index()
            .and_then(|idx| idx.artifact(&f.record.output))
        {
            Ok(Some(a)) => a,
            _ => return f,
        };
        use crate::cache::remote::Pushed;
        match remote.push(self.cache, &f.record, &art) {
            Ok(Pushed::Uploaded { objects, bytes }) => notify(
                self.tx,
                Event::Pushed {
                    node: n,
                    objects,
                    bytes,
                },
            ),
            Ok(Pushed::Present) => {}
            Ok(Pushed::Differs { theirs }) => f.warnings.push(format!(
                "the remote holds a different result for this key (output {}): the stage is not deterministic; the remote's is kept",
                &theirs[..12.min(theirs.len())]
            )),
            Err(e) => f.warnings.push(format!("not pushed to the remote: {e}")),
        }
        f
    }

    /// Runs the stage into a claimed key's scratch folder and commits it.
    fn compute_claimed(
        &self,
        n: usize,
        comps: KeyComponents,
        pending: Pending<'_>,
        inputs: Vec<InputDir>,
    ) -> Result<Finished, Failed> {
        let (plan, cache, tx) = (self.plan, self.cache, self.tx);
        let node = &plan.pipeline.nodes[n];
        let spec = match StageSpec::new(plan, cache, n, &pending, comps.backend.as_deref(), inputs)
        {
            Ok(s) => s,
            Err(message) => return Err(pending.fail(message)),
        };
        if let Some(gone) = pending.took_over() {
            let message = format!(
                "took the key over from {}, which stopped renewing its lease",
                gone.describe()
            );
            notify(tx, Event::Warning { node: n, message });
        }
        let started = Instant::now();
        let stopped = || STOPPED.load(Ordering::SeqCst);
        let events = |ev: Event| {
            if let Event::Queued { job, .. } = &ev {
                pending.name_job(job);
            }
            notify(tx, ev)
        };
        let result = self
            .executor
            .compute(n, &node.kind, &node.requests, &spec, &events, &stopped)
            .and_then(finite_metrics);
        let seconds = started.elapsed().as_secs_f64();
        if STOPPED.load(Ordering::SeqCst) {
            // An interrupted stage records nothing; the run removed its scratch folder.
            return Err(Failed {
                message: "interrupted".into(),
                log: None,
            });
        }
        match result {
            Ok(metrics) => pending
                .commit(Outcome {
                    components: comps,
                    metrics,
                    seconds,
                    finished_at: None,
                })
                .map(|c| Finished {
                    record: c.record,
                    by_other_run: false,
                    pulled: None,
                    warnings: c.warnings,
                }),
            Err(message) => Err(pending.fail(message)),
        }
    }
}

/// A result whose metrics are not all finite numbers is a failure: a loss
/// that became NaN means the computation diverged, and must not be stored.
fn finite_metrics(m: Metrics) -> Result<Metrics, String> {
    if let Some((name, v)) = m.iter().find(|(_, v)| !v.is_finite()) {
        return Err(format!(
            "metric `{name}` is {v}: the computation diverged (a learning rate or another step size is too large for it)"
        ));
    }
    Ok(m)
}
