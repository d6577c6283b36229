//! `run --executor slurm` against stand-ins for `sbatch`, `squeue`,
//! `scancel` and `sinfo` (tests/fixtures/slurm/fake, first on `PATH`), which
//! run each job at once on this machine or make it end the way a cluster
//! can: time limit, memory, cancellation, a failed node, a job that
//! vanishes, a queue that never starts it, a refused submission. Every state
//! a job can end in is covered here; tests/slurm.rs runs the same executor
//! on a real one-node cluster.

mod common;
use common::*;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value as Json;

fn fake_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/slurm/fake")
}

/// A sandbox whose commands see the fake Slurm, with quick polling.
struct Cluster {
    s: Sandbox,
}

impl Cluster {
    fn new(name: &str) -> Cluster {
        let s = Sandbox::new(name);
        std::fs::create_dir_all(s.path("slurm")).unwrap();
        s.write(
            "executor.kdl",
            "executor \"slurm\" {\n    poll 0.05\n    latency-wait 0.3\n}\n",
        );
        Cluster { s }
    }

    fn cmd(&self, args: &[&str]) -> std::process::Command {
        let mut c = self.s.cmd(args);
        let path = std::env::var("PATH").unwrap_or_default();
        c.env("PATH", format!("{}:{path}", fake_dir().display()))
            .env("FAKE_SLURM_DIR", self.s.path("slurm"));
        c
    }

    /// `run exp.kdl --json` on the fake cluster.
    fn run_cmd(&self, extra: &[&str]) -> std::process::Command {
        let mut args = vec!["run", "exp.kdl", "--json", "--executor", "slurm"];
        args.extend(["--executor-config", "executor.kdl"]);
        args.extend_from_slice(extra);
        self.cmd(&args)
    }

    /// `run exp.kdl --executor slurm --json`: its exit code and events.
    fn run(&self, extra: &[&str]) -> (Option<i32>, Vec<Json>) {
        let out = self.run_cmd(extra).output().unwrap();
        let events = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        (out.status.code(), events)
    }

    /// The argument lists sbatch was called with.
    fn submissions(&self) -> Vec<Vec<String>> {
        self.s
            .read("slurm/sbatch.log")
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn modes(&self, modes: &str) {
        self.s.write("slurm/modes", modes);
    }
}

fn error_of(events: &[Json], stage: &str) -> String {
    events
        .iter()
        .find(|e| e["event"] == "stage-failed" && e["stage"] == stage)
        .unwrap_or_else(|| panic!("{stage} did not fail: {events:?}"))["error"]
        .as_str()
        .unwrap()
        .to_string()
}

const CHAIN: &str = r#"
stage "a" kind="tshout" { times 2; }
stage "b" kind="tshout" { input "a"; times 1; }
sweep "times" {
    vary "b.times" 1 2
}
"#;

/// Each output folder's digest, by stage id.
fn outputs(s: &Sandbox) -> Vec<(String, String)> {
    let v: Json = serde_json::from_str(&s.ok(&["show", "exp.kdl", "--format", "json"])).unwrap();
    v["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|st| {
            let dir = PathBuf::from(st["output"].as_str().unwrap());
            (
                st["id"].as_str().unwrap().to_string(),
                dir.file_name().unwrap().to_string_lossy().into_owned(),
            )
        })
        .collect()
}

#[test]
fn stages_become_jobs_equal_to_a_local_run_and_a_rerun_submits_nothing() {
    let c = Cluster::new("slurm-fake-chain");
    c.s.experiment(CHAIN);
    let (code, events) = c.run(&[]);
    assert_eq!(code, Some(0), "{events:?}");
    assert_eq!(
        stages_with(&events, "stage-queued"),
        ["a", "b[times=1]", "b[times=2]"]
    );
    assert_eq!(
        stages_with(&events, "stage-done"),
        ["a", "b[times=1]", "b[times=2]"]
    );
    // Each stage started as its job, on the node the queue named.
    for e in events.iter().filter(|e| e["event"] == "stage-start") {
        assert_eq!(e["host"], "fakenode", "{e}");
        assert!(e["job"].as_str().unwrap().parse::<u32>().is_ok(), "{e}");
    }
    assert_eq!(c.submissions().len(), 3);
    let local = Sandbox::new("slurm-fake-chain-local");
    local.experiment(CHAIN);
    local.ok(&["run", "exp.kdl"]);
    assert_eq!(outputs(&c.s), outputs(&local));

    let (code, events) = c.run(&[]);
    assert_eq!(code, Some(0));
    assert_eq!(stages_with(&events, "stage-cached").len(), 3);
    assert_eq!(c.submissions().len(), 3, "a rerun submitted jobs");
    c.s.experiment(&CHAIN.replace("vary \"b.times\" 1 2", "vary \"b.times\" 1 3"));
    let (_, events) = c.run(&[]);
    assert_eq!(stages_with(&events, "stage-queued"), ["b[times=3]"]);
    assert_eq!(c.submissions().len(), 4);
}

#[test]
fn requests_become_sbatch_flags_and_never_enter_a_key() {
    let c = Cluster::new("slurm-fake-requests");
    c.s.write(
        "executor.kdl",
        r#"executor "slurm" {
    poll 0.05
    partition "gpu"
    account "proj7"
    gpu-flag "gres"
    extra "--qos=normal"
    setup "export FROM_SETUP=1"
    kind "tshout" cpus=4 time="30m"
}
"#,
    );
    c.s.experiment(r#"stage "a" kind="tshout" { times 2; resources gpus=1 mem="3G" time="2h"; }"#);
    let (code, events) = c.run(&[]);
    assert_eq!(code, Some(0), "{events:?}");
    let args = &c.submissions()[0];
    for flag in [
        "--partition=gpu",
        "--account=proj7",
        "--gres=gpu:1",
        "--mem=3G",
        "--cpus-per-task=4",
        "--time=120",
        "--qos=normal",
        "--requeue",
        "--job-name=a@t",
    ] {
        assert!(args.iter().any(|a| a == flag), "{flag} not in {args:?}");
    }
    let script = c.s.read("slurm/script-100");
    assert!(script.contains("export FROM_SETUP=1\nexec "), "{script}");
    // Other requests: the same key, nothing to run.
    c.s.experiment(r#"stage "a" kind="tshout" { times 2; resources gpus=0 cpus=1; }"#);
    assert!(c.s.plan().iter().all(|(_, st)| st == "cached"));
    let (_, events) = c.run(&[]);
    assert_eq!(stages_with(&events, "stage-cached"), ["a"]);
}

#[test]
fn a_failing_job_keeps_its_log_and_skips_its_dependents() {
    let c = Cluster::new("slurm-fake-fail");
    c.s.experiment(
        r#"
stage "a" kind="tshout" { fail #true; }
stage "b" kind="tshout" { input "a"; }
"#,
    );
    let (code, events) = c.run(&[]);
    assert_eq!(code, Some(1));
    assert!(
        error_of(&events, "a").contains("exited with code 3"),
        "{events:?}"
    );
    assert_eq!(stages_with(&events, "stage-skipped"), ["b"]);
    let logs = c.s.all_logs();
    assert!(
        logs.contains("boom: this stage was asked to fail"),
        "{logs}"
    );
    assert!(logs.contains("--- Slurm job"), "{logs}");
}

#[test]
fn jobs_that_end_without_a_result_say_why_and_never_count_as_done() {
    let c = Cluster::new("slurm-fake-deaths");
    c.s.experiment(
        r#"
stage "slow" kind="tshout" { resources time="1h"; }
stage "big" kind="tshout" { resources mem="100M"; }
stage "gone" kind="tshout" { times 2; }
stage "killed" kind="tshout" { times 3; }
stage "broken" kind="tshout" { times 4; }
"#,
    );
    c.modes(r#"{"slow@": "timeout", "big@": "oom", "gone@": "vanish", "killed@": "cancel", "broken@": "node_fail"}"#);
    let (code, events) = c.run(&[]);
    assert_eq!(code, Some(1));
    assert!(stages_with(&events, "stage-done").is_empty(), "{events:?}");
    let slow = error_of(&events, "slow");
    assert!(
        slow.contains("time limit (was 60)") && slow.contains("resources time="),
        "{slow}"
    );
    assert!(slow.contains("DUE TO TIME LIMIT"), "the log's tail: {slow}");
    let big = error_of(&events, "big");
    assert!(
        big.contains("ran out of memory (mem was 100M)") && big.contains("resources mem="),
        "{big}"
    );
    assert!(error_of(&events, "gone").contains("left the queue without a result: it is lost"));
    assert!(error_of(&events, "killed").contains("cancelled outside efrlhf"));
    assert!(error_of(&events, "broken").contains("the node of job"));
    // Nothing was recorded as a result: the next run submits them again.
    c.modes("{}");
    let (code, events) = c.run(&[]);
    assert_eq!(code, Some(0), "{events:?}");
    assert_eq!(stages_with(&events, "stage-done").len(), 5);
}

#[test]
fn a_time_limit_with_a_checkpoint_and_a_failed_node_are_submitted_again() {
    let c = Cluster::new("slurm-fake-resubmit");
    c.s.experiment(
        r#"
stage "long" kind="tshout" { times 1; }
stage "flaky" kind="tshout" { times 2; }
"#,
    );
    // `long` has checkpointed before its time ran out.
    let plan: Json = serde_json::from_str(&c.s.ok(&["plan", "exp.kdl", "--json"])).unwrap();
    let key = plan["stages"][0]["key"].as_str().unwrap();
    c.s.write(&format!("cache/checkpoints/{key}/step-10.bin"), "state");
    c.modes(r#"{"long@": "timeout_once", "flaky@": "node_fail_once"}"#);
    let (code, events) = c.run(&[]);
    assert_eq!(code, Some(0), "{events:?}");
    assert_eq!(stages_with(&events, "stage-done"), ["flaky", "long"]);
    let warnings: Vec<&str> = events
        .iter()
        .filter(|e| e["event"] == "stage-warning")
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    assert!(
        warnings.iter().any(|w| w
            .contains("reached its time limit; submitted again, it resumes from its checkpoint")),
        "{warnings:?}"
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("(fakenode) failed; submitted again, excluding it")),
        "{warnings:?}"
    );
    let subs = c.submissions();
    assert_eq!(subs.len(), 4);
    let flaky: Vec<&Vec<String>> = subs
        .iter()
        .filter(|a| a.iter().any(|x| x == "--job-name=flaky@t"))
        .collect();
    assert!(
        flaky[1].iter().any(|x| x == "--exclude=fakenode"),
        "{flaky:?}"
    );
}

/// Starts a run of stage `stage`'s job, waits until the job is submitted
/// and recorded, and kills the coordinator (`kill -9`): its job stays queued.
fn kill_coordinator_after_submitting(c: &Cluster, stage: &str) -> String {
    let mut child = c
        .run_cmd(&["--only", stage])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let job = loop {
        let recorded = std::fs::read_dir(c.s.path("cache/locks"))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".job"))
            .filter_map(|e| {
                serde_json::from_str::<Json>(&std::fs::read_to_string(e.path()).ok()?).ok()
            })
            .map(|r| r["job"].as_str().unwrap_or_default().to_string())
            .find(|j| c.s.read("slurm/sbatch.log").contains(&format!("{stage}@")) && !j.is_empty());
        // The key's lease names the job too (for waiters on other hosts).
        if let Some(j) = recorded
            && lease_owners(c).iter().any(|o| o["job"] == j.as_str())
        {
            break j;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{stage} was not submitted"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    job
}

/// The owners of the keys' leases (`locks/<key>.lease/owner.json`).
fn lease_owners(c: &Cluster) -> Vec<Json> {
    std::fs::read_dir(c.s.path("cache/locks"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".lease"))
        .filter_map(|e| std::fs::read_to_string(e.path().join("owner.json")).ok())
        .filter_map(|t| serde_json::from_str(&t).ok())
        .collect()
}

#[test]
fn a_coordinator_on_another_host_that_died_has_its_lease_taken_over_and_its_job_adopted() {
    let c = Cluster::new("slurm-fake-adopt-elsewhere");
    c.s.experiment(r#"stage "queued" kind="tshout" { times 1; }"#);
    c.modes(r#"{"@": "hold_once"}"#);
    let job = kill_coordinator_after_submitting(&c, "queued");
    // As if that coordinator had run on login2: its process cannot be checked from here.
    let locks = c.s.path("cache/locks");
    let lease = std::fs::read_dir(&locks)
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().ends_with(".lease"))
        .unwrap()
        .path()
        .join("owner.json");
    let mut owner: Json = serde_json::from_str(&std::fs::read_to_string(&lease).unwrap()).unwrap();
    owner["host"] = "login2".into();
    std::fs::write(&lease, owner.to_string()).unwrap();
    let pid = owner["pid"].clone();
    let mut second = c.run_cmd(&[]);
    second.env("EFRLHF_LEASE_TTL", "1");
    let mut second = second.stdout(std::process::Stdio::piped()).spawn().unwrap();
    let mut said = String::new();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(second.stdout.take().unwrap()));
    for line in lines.by_ref() {
        said.push_str(&line.unwrap());
        if said.contains(&format!("adopted job {job}")) {
            break;
        }
    }
    std::fs::write(c.s.path(&format!("slurm/release-{job}")), "").unwrap();
    said.extend(lines.map(|l| l.unwrap()));
    assert!(second.wait().unwrap().success(), "{said}");
    let holder = format!("Slurm job {job} of the run with pid {pid} on login2");
    assert!(said.contains(&format!("\"holder\":\"{holder}\"")), "{said}");
    assert!(
        said.contains(&format!(
            "took the key over from {holder}, which stopped renewing its lease"
        )),
        "{said}"
    );
    assert!(
        said.contains("\"event\":\"stage-done\",\"stage\":\"queued\""),
        "{said}"
    );
    assert_eq!(c.submissions().len(), 1, "submitted again");
    assert!(lease_owners(&c).is_empty());
}

#[test]
fn a_restarted_coordinator_adopts_its_predecessors_jobs() {
    let c = Cluster::new("slurm-fake-adopt");
    c.s.experiment(
        r#"
stage "queued" kind="tshout" { times 1; }
stage "finished" kind="tshout" { times 2; }
stage "vanished" kind="tshout" { times 3; }
"#,
    );
    c.modes(r#"{"@": "hold_once"}"#);
    // Still queued when the next run starts: it waits for that job.
    let job = kill_coordinator_after_submitting(&c, "queued");
    // Released only once the new coordinator has said it adopts the job.
    let mut second = c
        .run_cmd(&["--only", "queued"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut said = String::new();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(second.stdout.take().unwrap()));
    for line in lines.by_ref() {
        let line = line.unwrap();
        said.push_str(&line);
        if line.contains(&format!("adopted job {job} of an earlier run")) {
            break;
        }
    }
    std::fs::write(c.s.path(&format!("slurm/release-{job}")), "").unwrap();
    let rest: Vec<String> = lines.map(|l| l.unwrap()).collect();
    assert!(second.wait().unwrap().success(), "{said} {rest:?}");
    assert!(
        said.contains(&format!("adopted job {job} of an earlier run")),
        "{said}"
    );
    assert!(
        rest.iter()
            .any(|l| l.contains("\"event\":\"stage-done\",\"stage\":\"queued\"")),
        "{rest:?}"
    );
    // Finished while no coordinator ran: its result is taken as it is.
    let job = kill_coordinator_after_submitting(&c, "finished");
    std::fs::write(c.s.path(&format!("slurm/release-{job}")), "").unwrap();
    let start = Instant::now();
    while c.s.read(&format!("slurm/state-{job}")).trim() != "COMPLETED" {
        assert!(start.elapsed() < Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(50));
    }
    let (code, events) = c.run(&["--only", "finished"]);
    assert_eq!(code, Some(0), "{events:?}");
    assert!(format!("{events:?}").contains(&format!("took the result of job {job}")));
    // Gone from the queue without a result: forgotten, submitted again.
    let job = kill_coordinator_after_submitting(&c, "vanished");
    std::fs::remove_file(c.s.path(&format!("slurm/state-{job}"))).unwrap();
    let (code, events) = c.run(&["--only", "vanished"]);
    // The vanished job's process still waits to be released: let it end
    // rather than poll for a sandbox that is gone.
    std::fs::write(c.s.path(&format!("slurm/release-{job}")), "").unwrap();
    assert_eq!(code, Some(0), "{events:?}");
    // One job each for the adopted two; the vanished one twice.
    let names: Vec<String> = c.submissions().iter().map(|a| a[1].clone()).collect();
    assert_eq!(
        names,
        [
            "--job-name=queued@t",
            "--job-name=finished@t",
            "--job-name=vanished@t",
            "--job-name=vanished@t"
        ]
    );
    // Every stage's result is the same as a local run's.
    let local = Sandbox::new("slurm-fake-adopt-local");
    local.experiment(&c.s.read("exp.kdl").replacen(
        "experiment \"t\" {\n    seed 7\n    plugins \"plugins\"\n}\n",
        "",
        1,
    ));
    local.ok(&["run", "exp.kdl"]);
    assert_eq!(outputs(&c.s), outputs(&local));
    assert!(
        !c.s.path("cache/locks")
            .read_dir()
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().ends_with(".job"))
    );
}

#[test]
fn two_coordinators_on_one_cache_submit_each_key_once() {
    let c = Cluster::new("slurm-fake-two");
    c.s.experiment(CHAIN);
    c.modes(r#"{"a@": "hold"}"#);
    let first = c
        .run_cmd(&[])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while c.submissions().is_empty() {
        assert!(start.elapsed() < Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut second = c
        .run_cmd(&[])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The second waits for the first's `a` (its key's lock); then `a` may finish.
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(second.stdout.take().unwrap()));
    let mut said: Vec<String> = Vec::new();
    for line in lines.by_ref() {
        said.push(line.unwrap());
        if said
            .last()
            .is_some_and(|l| l.contains("{\"event\":\"stage-waiting\",\"stage\":\"a\","))
        {
            break;
        }
    }
    std::fs::write(c.s.path("slurm/release-100"), "").unwrap();
    said.extend(lines.map(|l| l.unwrap()));
    assert!(first.wait_with_output().unwrap().status.success());
    assert!(second.wait().unwrap().success(), "{said:?}");
    // Each key once: the two share the work, neither repeats the other's.
    let mut names: Vec<String> = c.submissions().iter().map(|a| a[1].clone()).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "--job-name=a@t",
            "--job-name=b[times=1]@t",
            "--job-name=b[times=2]@t"
        ]
    );
    // The second used the `a` the first stored.
    assert!(
        said.iter()
            .any(|l| l.contains("\"event\":\"stage-cached\",\"stage\":\"a\"")
                && l.contains("\"by_other_run\":true")),
        "{said:?}"
    );
}

#[test]
fn ctrl_c_cancels_every_job_in_flight_with_one_scancel() {
    let c = Cluster::new("slurm-fake-ctrl-c");
    c.s.experiment(
        r#"
stage "a" kind="tshout" { times 1; }
stage "b" kind="tshout" { times 2; }
"#,
    );
    c.modes(r#"{"@": "pending"}"#);
    let child = c
        .run_cmd(&[])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while c.submissions().len() < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "jobs were not submitted"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130));
    let cancels: Vec<String> =
        c.s.read("slurm/scancel.log")
            .lines()
            .map(str::to_string)
            .collect();
    assert_eq!(cancels.len(), 1, "{cancels:?}");
    assert_eq!(cancels[0].split(' ').count(), 2, "{cancels:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("\"interrupted\":\"SIGINT\""), "{stdout}");
    // The keys' leases are released, not left for another host to wait out.
    assert_eq!(lease_owners(&c), Vec::<Json>::new());
}

#[test]
fn a_refused_submission_fails_the_stage_with_sbatchs_words() {
    let c = Cluster::new("slurm-fake-refused");
    c.s.experiment(r#"stage "a" kind="tshout" { times 1; }"#);
    c.s.write(
        "slurm/refuse",
        "sbatch: error: invalid partition specified: gpux\n",
    );
    let (code, events) = c.run(&[]);
    assert_eq!(code, Some(1));
    let e = error_of(&events, "a");
    assert!(
        e.contains("sbatch refused the job: sbatch: error: invalid partition specified: gpux"),
        "{e}"
    );
    assert_eq!(
        c.submissions().len(),
        1,
        "a refusal that will not pass is not retried"
    );
}

#[test]
fn without_slurm_the_executor_says_so_before_anything_runs() {
    let s = Sandbox::new("slurm-fake-none");
    s.write(
        "exp.kdl",
        &format!(
            "stage \"d\" kind=\"dataset\" {{ source \"opinpref\" path=\"{}\"; }}\n",
            data("opinpref").display()
        ),
    );
    let out = s
        .cmd(&["run", "exp.kdl", "--executor", "slurm"])
        .env("PATH", "/nonexistent")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("`--executor slurm` needs Slurm's commands"),
        "{err}"
    );
    assert!(
        !s.path("cache/artifacts").exists() || files_below(&s.path("cache/artifacts")).is_empty()
    );
}

#[test]
fn a_stage_asking_for_gpus_has_a_gpu_key_and_fails_loudly_on_a_node_without_one() {
    let c = Cluster::new("slurm-fake-gpu");
    let with_gpus = |n: u32| {
        tiny_summarizer().replace(
            "    checkpoint-every 0\n}",
            &format!("    checkpoint-every 0\n    resources gpus={n}\n}}"),
        )
    };
    c.s.experiment(&with_gpus(1));
    c.s.ok(&["run", "exp.kdl", "--backend", "cpu"]);
    let slurm_plan = |c: &Cluster| -> Json {
        let out = c
            .cmd(&[
                "plan",
                "exp.kdl",
                "--json",
                "--executor",
                "slurm",
                "--executor-config",
                "executor.kdl",
            ])
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap()
    };
    // On the cluster SFT computes on a GPU: another key than this machine's CPU run.
    let plan = slurm_plan(&c);
    let sft = plan["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "sft")
        .unwrap();
    assert_eq!(sft["status"], "run", "{plan}");
    assert_eq!(sft["reasons"][0]["kind"], "backend-changed", "{plan}");
    assert_eq!(sft["reasons"][0]["to"], "gpu", "{plan}");
    // This machine is the fake cluster's node, and it has no GPU efrlhf may use.
    let (code, events) = c.run(&[]);
    assert_eq!(code, Some(1), "{events:?}");
    let e = error_of(&events, "sft");
    assert!(
        e.contains("this stage asked for a GPU (`resources gpus=...`), but node"),
        "{e}"
    );
    // Without GPUs, the cluster's key is the local one: nothing to run.
    c.s.experiment(&with_gpus(0));
    let plan = slurm_plan(&c);
    assert!(
        plan["stages"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["status"] == "cached"),
        "{plan}"
    );
}
