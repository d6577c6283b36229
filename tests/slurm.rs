//! `run --executor slurm` on a real one-node Slurm cluster, which this test
//! brings up from Debian's `slurm-wlm` (tests/fixtures/slurm/up.sh, all state
//! in a temporary folder) and stops by its PIDs. The shipped demo and a small
//! ML experiment (dataset, tokenizer, SFT, φ, PPO, eval) give byte-identical
//! artifacts with `--executor slurm` and `local`; a rerun submits nothing; a
//! changed parameter submits only what changed; a failing stage, a stage
//! over its memory, Ctrl-C, a killed coordinator (its job is adopted) and a
//! preemption (the job is requeued, the run waits for it, each attempt in a
//! folder of its own) end as they should, and a stage over its time limit
//! is submitted again and resumes from its checkpoint. A node failure needs
//! a second node: that ending is covered by tests/slurm_fake.rs. Skipped where Slurm's daemons are not
//! installed or this is not root, unless `EFRLHF_REQUIRE_SLURM` is set (CI).

#![allow(clippy::print_stderr)]

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value as Json;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/slurm")
}

/// The cluster, stopped (by its daemons' PIDs) when dropped.
struct Cluster {
    dir: PathBuf,
    conf: PathBuf,
}

impl Cluster {
    fn up() -> Option<Cluster> {
        let root = unsafe { libc::geteuid() } == 0;
        let have = Command::new("slurmctld")
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success());
        if !(root && have) {
            assert!(
                std::env::var_os("EFRLHF_REQUIRE_SLURM").is_none(),
                "EFRLHF_REQUIRE_SLURM is set but slurmctld is not installed or this is not root"
            );
            eprintln!("no Slurm daemons here (or not root): tests/slurm.rs is skipped");
            return None;
        }
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("slurm-cluster");
        let _ = std::fs::remove_dir_all(&dir);
        let port = free_port_pair();
        let out = Command::new(fixtures().join("up.sh"))
            .arg(&dir)
            .env("EFRLHF_SLURM_PORT", port.to_string())
            .output()
            .unwrap();
        let cluster = Cluster {
            conf: dir.join("etc/slurm.conf"),
            dir,
        };
        assert!(
            out.status.success(),
            "up.sh failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Some(cluster)
    }

    /// Job ids the controller knows (finished ones stay listed for 10 minutes).
    fn jobs(&self) -> Vec<String> {
        let out = Command::new("squeue")
            .args(["-h", "--states=all", "-o", "%i|%T"])
            .env("SLURM_CONF", &self.conf)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// How many jobs of experiment `name` the controller knows (tests run alongside).
    fn jobs_of(&self, name: &str) -> usize {
        let out = Command::new("squeue")
            .args(["-h", "--states=all", "-o", "%j"])
            .env("SLURM_CONF", &self.conf)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|j| j.ends_with(&format!("@{name}")))
            .count()
    }

    fn cmd(&self, s: &Sandbox, args: &[&str]) -> Command {
        let mut c = s.cmd(args);
        c.env("SLURM_CONF", &self.conf);
        c
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(fixtures().join("down.sh"))
            .arg(&self.dir)
            .status();
    }
}

/// A port whose successor is free too (slurmctld's and slurmd's).
fn free_port_pair() -> u16 {
    for _ in 0..50 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let p = l.local_addr().unwrap().port();
        if p < 65000 && std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            return p;
        }
    }
    panic!("no free pair of ports");
}

/// `run exp.kdl` on the cluster, as a background process.
const SLURM_RUN: [&str; 7] = [
    "run",
    "exp.kdl",
    "--json",
    "--executor",
    "slurm",
    "--executor-config",
    "executor.kdl",
];

fn executor_config(s: &Sandbox) {
    s.write(
        "executor.kdl",
        "executor \"slurm\" {\n    poll 0.2\n    latency-wait 10\n}\n",
    );
}

/// `run FILE --json` with the executor; exit code and events.
fn run(
    c: &Cluster,
    s: &Sandbox,
    file: &str,
    executor: &str,
    extra: &[&str],
) -> (Option<i32>, Vec<Json>) {
    let mut args = vec!["run", file, "--json", "--executor", executor];
    if executor == "slurm" {
        args.extend(["--executor-config", "executor.kdl"]);
    }
    args.extend_from_slice(extra);
    let out = c.cmd(s, &args).output().unwrap();
    let events = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    (out.status.code(), events)
}

/// Every stored artifact: its digest and the digests of its files.
fn artifacts(cache: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(cache.join("artifacts"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn stages_run_as_slurm_jobs_on_a_real_cluster() {
    let Some(c) = Cluster::up() else {
        return;
    };
    // Slurm enforces a time limit only after 60-90 s: that case runs alongside the next three.
    std::thread::scope(|scope| {
        scope.spawn(|| a_time_limit_is_resubmitted_and_resumes_from_its_checkpoint(&c));
        demo_matches_local_and_reruns_submit_only_what_changed(&c);
        small_ml_pipeline_matches_local(&c);
        failures_end_as_they_should(&c);
    });
    ctrl_c_cancels_the_jobs(&c);
    a_killed_coordinators_job_is_adopted(&c);
    a_preempted_job_is_requeued_and_still_counts_once(&c);
}

fn demo_matches_local_and_reruns_submit_only_what_changed(c: &Cluster) {
    let demo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("experiments/demo.kdl");
    let demo = demo.to_str().unwrap();
    let s = Sandbox::new("slurm-demo");
    executor_config(&s);
    let before = c.jobs_of("demo");
    let (code, events) = run(c, &s, demo, "slurm", &[]);
    assert_eq!(code, Some(0), "{events:?}");
    assert_eq!(stages_with(&events, "stage-queued").len(), 4, "{events:?}");
    assert_eq!(c.jobs_of("demo"), before + 4);
    let local = Sandbox::new("slurm-demo-local");
    let (code, _) = run(c, &local, demo, "local", &[]);
    assert_eq!(code, Some(0));
    assert_eq!(artifacts(&s.path("cache")), artifacts(&local.path("cache")));
    let (_, events) = run(c, &s, demo, "slurm", &[]);
    assert_eq!(stages_with(&events, "stage-cached").len(), 4);
    assert_eq!(c.jobs_of("demo"), before + 4, "a rerun submitted jobs");
    let (_, events) = run(c, &s, demo, "slurm", &["--set", "b.times=1 2 4"]);
    assert_eq!(stages_with(&events, "stage-queued"), ["b[times=4]"]);
    assert_eq!(c.jobs_of("demo"), before + 5);
}

fn small_ml_pipeline_matches_local(c: &Cluster) {
    let body = tiny_rlhf();
    let s = Sandbox::new("slurm-ml");
    let local = Sandbox::new("slurm-ml-local");
    for sb in [&s, &local] {
        sb.experiment(&body);
        executor_config(sb);
    }
    let (code, events) = run(c, &s, "exp.kdl", "slurm", &[]);
    assert_eq!(code, Some(0), "{events:?}");
    // The cheap kinds ran on the coordinator; SFT, PPO and eval as jobs.
    assert_eq!(stages_with(&events, "stage-queued"), ["eval", "ppo", "sft"]);
    let (code, _) = run(c, &local, "exp.kdl", "local", &[]);
    assert_eq!(code, Some(0));
    assert_eq!(artifacts(&s.path("cache")), artifacts(&local.path("cache")));
}

fn failures_end_as_they_should(c: &Cluster) {
    let s = Sandbox::new("slurm-failures");
    executor_config(&s);
    s.write(
        "plugins/hog.kdl",
        "plugin \"hog\" version=\"1\" {\n    run \"python3\" \"hog.py\"\n    param \"mb\" type=\"int\" default=600\n}\n",
    );
    s.write(
        "plugins/hog.py",
        "import json, os, time\nspec = json.load(open(os.environ['EFRLHF_STAGE']))\nblock = b'x' * (spec['params']['mb'] << 20)\ntime.sleep(6)\n",
    );
    s.experiment(
        r#"
stage "a" kind="tshout" { fail #true; }
stage "b" kind="tshout" { input "a"; }
stage "big" kind="hog" { resources mem="100M"; }
"#,
    );
    let (code, events) = run(c, &s, "exp.kdl", "slurm", &[]);
    assert_eq!(code, Some(1), "{events:?}");
    let error = |stage: &str| {
        events
            .iter()
            .find(|e| e["event"] == "stage-failed" && e["stage"] == stage)
            .map(|e| e["error"].as_str().unwrap().to_string())
            .unwrap_or_else(|| panic!("{stage} did not fail: {events:?}"))
    };
    assert!(error("a").contains("exited with code 3"), "{}", error("a"));
    assert_eq!(stages_with(&events, "stage-skipped"), ["b"]);
    let big = error("big");
    assert!(big.contains("ran out of memory (mem was 100M)"), "{big}");
    assert!(s.all_logs().contains("boom: this stage was asked to fail"));
}

fn ctrl_c_cancels_the_jobs(c: &Cluster) {
    let s = Sandbox::new("slurm-ctrl-c");
    executor_config(&s);
    s.experiment(r#"stage "a" kind="tshout" { sleep 60.0; }"#);
    let mut child = c
        .cmd(&s, &SLURM_RUN)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let running = |c: &Cluster| c.jobs().iter().any(|j| j.ends_with("|RUNNING"));
    while !running(c) {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the job never ran: {:?}",
            c.jobs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let code = child.wait().unwrap().code();
    assert_eq!(code, Some(130));
    let start = Instant::now();
    let ending = |c: &Cluster| {
        c.jobs()
            .iter()
            .any(|j| j.ends_with("|RUNNING") || j.ends_with("|COMPLETING"))
    };
    while ending(c) {
        assert!(
            start.elapsed() < Duration::from_secs(40),
            "still running: {:?}",
            c.jobs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        c.jobs().iter().any(|j| j.ends_with("|CANCELLED")),
        "{:?}",
        c.jobs()
    );
}

fn a_killed_coordinators_job_is_adopted(c: &Cluster) {
    let s = Sandbox::new("slurm-adopt");
    executor_config(&s);
    s.experiment(r#"stage "a" kind="tshout" { sleep 4.0; }"#);
    let before = c.jobs().len();
    let mut child = c
        .cmd(&s, &SLURM_RUN)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !c.jobs().iter().any(|j| j.ends_with("|RUNNING")) {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the job never ran: {:?}",
            c.jobs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let (code, events) = run(c, &s, "exp.kdl", "slurm", &[]);
    assert_eq!(code, Some(0), "{events:?}");
    assert_eq!(stages_with(&events, "stage-done"), ["a"]);
    assert!(format!("{events:?}").contains("adopted job"), "{events:?}");
    assert_eq!(
        c.jobs().len(),
        before + 1,
        "the stage was submitted again: {:?}",
        c.jobs()
    );
}

fn a_time_limit_is_resubmitted_and_resumes_from_its_checkpoint(c: &Cluster) {
    let s = Sandbox::new("slurm-timeout");
    executor_config(&s);
    // The first attempt checkpoints and overruns its minute; the next one resumes.
    s.write(
        "plugins/resume.kdl",
        "plugin \"resume\" version=\"1\" {\n    run \"python3\" \"resume.py\"\n}\n",
    );
    s.write(
        "plugins/resume.py",
        "import json, os, time\nspec = json.load(open(os.environ['EFRLHF_STAGE']))\nck = os.path.join(spec['checkpoint'], 'step')\nif os.path.exists(ck):\n    text = 'resumed from step ' + open(ck).read()\nelse:\n    os.makedirs(spec['checkpoint'], exist_ok=True)\n    open(ck, 'w').write('5')\n    time.sleep(600)\n    text = 'never'\nopen(os.path.join(spec['output'], 'text.txt'), 'w').write(text)\n",
    );
    s.experiment(r#"stage "t" kind="resume" { resources time="1m"; }"#);
    let (code, events) = run(c, &s, "exp.kdl", "slurm", &[]);
    assert_eq!(code, Some(0), "{events:?}");
    let said = format!("{events:?}");
    assert!(
        said.contains("reached its time limit; submitted again, it resumes from its checkpoint"),
        "{said}"
    );
    assert_eq!(stages_with(&events, "stage-queued"), ["t", "t"], "{said}");
    let text = std::fs::read_to_string(artifacts_with(&s.path("cache"), "text.txt")).unwrap();
    assert_eq!(text, "resumed from step 5");
    // The checkpoint goes once the result is stored.
    assert_eq!(
        std::fs::read_dir(s.path("cache/checkpoints"))
            .map(|d| d.count())
            .unwrap_or(0),
        0
    );
}

fn a_preempted_job_is_requeued_and_still_counts_once(c: &Cluster) {
    let s = Sandbox::new("slurm-preempt");
    executor_config(&s);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    // Its first attempt runs until it is preempted; the requeued one ends at once.
    s.write(
        "plugins/once.kdl",
        "plugin \"once\" version=\"1\" {\n    run \"python3\" \"once.py\"\n    param \"flag\" type=\"string\" default=\"\"\n}\n",
    );
    s.write(
        "plugins/once.py",
        "import json, os, time\nspec = json.load(open(os.environ['EFRLHF_STAGE']))\nflag = spec['params']['flag']\nif not os.path.exists(flag):\n    open(flag, 'w').close()\n    time.sleep(300)\nopen(os.path.join(spec['output'], 'text.txt'), 'w').write('done')\n",
    );
    let flag = s.path("first-attempt");
    s.experiment(&format!(
        r#"stage "p" kind="once" {{ flag "{}"; resources cpus={cpus}; }}"#,
        flag.display()
    ));
    let child = c
        .cmd(&s, &SLURM_RUN)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let job = loop {
        if let Some(j) = c.jobs().iter().find(|j| j.ends_with("|RUNNING")) {
            break j.split('|').next().unwrap().to_string();
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "never ran: {:?}",
            c.jobs()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    // A job of the higher-priority partition takes every CPU: `p` is preempted and requeued.
    let blocker = Command::new("sbatch")
        .args([
            "--parsable",
            "-p",
            "urgent",
            "-c",
            &cpus.to_string(),
            "--output=/dev/null",
            "--wrap",
            "sleep 1",
        ])
        .env("SLURM_CONF", &c.conf)
        .output()
        .unwrap();
    assert!(blocker.status.success());
    let start = Instant::now();
    let mut requeued = false;
    while !requeued {
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "not preempted: {:?}",
            c.jobs()
        );
        std::thread::sleep(Duration::from_millis(250));
        let state = Command::new("squeue")
            .args(["-h", "-j", &job, "-o", "%T|%r"])
            .env("SLURM_CONF", &c.conf)
            .output()
            .unwrap();
        let state = String::from_utf8_lossy(&state.stdout).trim().to_string();
        requeued = state == "PENDING|BeginTime";
    }
    // Slurm holds a requeued job for two minutes; release it now.
    let released = Command::new("scontrol")
        .args(["update", &format!("JobId={job}"), "StartTime=now"])
        .env("SLURM_CONF", &c.conf)
        .status()
        .unwrap();
    assert!(released.success());
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    let events: Vec<Json> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert_eq!(
        stages_with(&events, "stage-queued"),
        ["p"],
        "one job, requeued in place"
    );
    assert_eq!(stages_with(&events, "stage-done"), ["p"]);
    let text = std::fs::read_to_string(artifacts_with(&s.path("cache"), "text.txt")).unwrap();
    assert_eq!(text, "done");
    // Each attempt of the job computed in a folder of its own.
    let log = std::fs::read_dir(s.path("cache/logs"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect::<String>();
    for attempt in [0, 1] {
        assert!(
            log.contains(&format!("efrlhf: attempt-{job}.{attempt} on ")),
            "{log}"
        );
    }
}

/// The file `name` of the one stored artifact that has it.
fn artifacts_with(cache: &Path, name: &str) -> PathBuf {
    std::fs::read_dir(cache.join("artifacts"))
        .unwrap()
        .map(|e| e.unwrap().path().join(name))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("no artifact has {name}"))
}
