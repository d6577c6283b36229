//! Locks that hold across hosts sharing a cache, where `flock` may not
//! (`EFRLHF_FLOCK=0` runs without it, as on Lustre without `-o flock`): two
//! runs compute each key once; a lease renewed by a run on another host is
//! waited for and taken over once its renewals stop; a killed run's lease is
//! taken at once on its own host; `cache gc` waits for a run it cannot see
//! through `flock`, and not for a registration whose run is gone. Another
//! host is stood in for by lease files written as such a host writes them.

mod common;
use common::*;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value as Json;

const SLOW: &str = r#"stage "a" kind="tshout" { times 2; sleep 3.0; marker "started"; }"#;

fn no_flock(mut c: Command) -> Command {
    c.env("EFRLHF_FLOCK", "0");
    c
}

fn spawn_run(s: &Sandbox, env: &[(&str, &str)]) -> Child {
    let mut c = no_flock(s.cmd(&["run", "exp.kdl", "--json"]));
    c.envs(env.iter().copied()).stdout(Stdio::piped());
    c.spawn().unwrap()
}

/// Waits for `child` (at most `limit`, so a hang fails instead of stalling); its stdout.
fn finish(child: Child, limit: Duration) -> (bool, String) {
    let pid = child.id();
    let watchdog = std::thread::spawn(move || {
        let start = Instant::now();
        while start.elapsed() < limit {
            std::thread::sleep(Duration::from_millis(100));
            if !PathBuf::from(format!("/proc/{pid}")).exists() {
                return false;
            }
        }
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        true
    });
    let out = child.wait_with_output().unwrap();
    let hung = watchdog.join().unwrap();
    assert!(!hung, "the run did not finish within {limit:?}");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < Duration::from_secs(60), "never: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string()
}

fn lease_leftovers(s: &Sandbox) -> Vec<String> {
    std::fs::read_dir(s.path("cache/locks"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".lease") || n.contains(".takeover"))
        .collect()
}

#[test]
fn two_runs_without_flock_compute_each_key_once() {
    let s = Sandbox::new("lease-two");
    s.experiment(SLOW);
    let first = spawn_run(&s, &[]);
    wait_for("a started", || s.path("started").exists());
    let second = spawn_run(&s, &[]);
    let (ok1, _) = finish(first, Duration::from_secs(120));
    let (ok2, said) = finish(second, Duration::from_secs(120));
    assert!(ok1 && ok2, "{said}");
    assert_eq!(s.calls(), ["a"], "computed twice");
    let waiting: Vec<Json> = said
        .lines()
        .filter_map(|l| serde_json::from_str::<Json>(l).ok())
        .filter(|e| e["event"] == "stage-waiting")
        .collect();
    assert_eq!(waiting.len(), 1, "{said}");
    let holder = waiting[0]["holder"].as_str().unwrap();
    assert!(
        holder.starts_with("the run with pid ") && holder.ends_with(&format!(" on {}", host())),
        "{holder}"
    );
    assert!(said.contains(r#""by_other_run":true"#), "{said}");
    assert_eq!(lease_leftovers(&s), Vec::<String>::new());
}

/// A lease as a run on `node-elsewhere` writes it, with heartbeat `beat`.
fn foreign_owner(beat: u64) -> String {
    format!(
        r#"{{"host":"node-elsewhere","pid":1,"token":"elsewhere0","job":"4242","since":1,"beat":{beat}}}"#
    )
}

#[test]
fn a_lease_renewed_on_another_host_is_waited_for_and_taken_over_once_it_stops() {
    let s = Sandbox::new("lease-foreign");
    s.experiment(r#"stage "a" kind="tshout" { times 2; }"#);
    let lease = s.path(&format!("cache/locks/{}.lease", s.key_of("a")));
    std::fs::create_dir_all(&lease).unwrap();
    std::fs::write(lease.join("owner.json"), foreign_owner(0)).unwrap();
    // flock stays on: it cannot see a holder on another host; the lease can.
    let mut c = s.cmd(&["run", "exp.kdl", "--json"]);
    c.env("EFRLHF_LEASE_TTL", "1").stdout(Stdio::piped());
    let mut run = c.spawn().unwrap();
    // Renewed for 4 TTLs: the run must wait all along.
    for beat in 1..=40 {
        std::thread::sleep(Duration::from_millis(100));
        std::fs::write(lease.join("owner.tmp"), foreign_owner(beat)).unwrap();
        std::fs::rename(lease.join("owner.tmp"), lease.join("owner.json")).unwrap();
        assert!(run.try_wait().unwrap().is_none(), "it did not wait");
    }
    assert!(s.calls().is_empty(), "computed while held elsewhere");
    let (ok, said) = finish(run, Duration::from_secs(60));
    assert!(ok, "{said}");
    assert_eq!(s.calls(), ["a"]);
    assert!(
        said.contains(r#""holder":"Slurm job 4242 of the run with pid 1 on node-elsewhere""#),
        "{said}"
    );
    assert!(
        said.contains("took the key over from Slurm job 4242 of the run with pid 1 on node-elsewhere, which stopped renewing its lease"),
        "{said}"
    );
    assert_eq!(lease_leftovers(&s), Vec::<String>::new());
}

#[test]
fn a_killed_runs_lease_is_taken_at_once_on_its_own_host() {
    let s = Sandbox::new("lease-killed");
    s.experiment(SLOW);
    let mut first = spawn_run(&s, &[]);
    wait_for("a started", || s.path("started").exists());
    first.kill().unwrap();
    first.wait().unwrap();
    assert_eq!(lease_leftovers(&s).len(), 1, "{:?}", lease_leftovers(&s));
    // Its process is gone: no need to wait out a TTL (an hour here).
    let (ok, said) = finish(
        spawn_run(&s, &[("EFRLHF_LEASE_TTL", "3600")]),
        Duration::from_secs(120),
    );
    assert!(ok, "{said}");
    assert!(!said.contains("stage-waiting"), "{said}");
    assert!(!said.contains("took the key over"), "{said}");
    assert_eq!(s.calls(), ["a", "a"]);
    assert_eq!(lease_leftovers(&s), Vec::<String>::new());
}

#[test]
fn gc_without_flock_waits_for_a_live_run_and_not_for_a_gone_one() {
    let s = Sandbox::new("lease-gc");
    s.experiment(SLOW);
    let run = spawn_run(&s, &[]);
    wait_for("a started", || s.path("started").exists());
    let gc = no_flock(s.cmd(&["cache", "gc", "exp.kdl"]))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (ok, said) = finish(run, Duration::from_secs(120));
    assert!(ok, "{said}");
    let gc = gc.wait_with_output().unwrap();
    let gc_said = String::from_utf8_lossy(&gc.stderr);
    assert!(gc.status.success(), "{gc_said}");
    assert!(gc_said.contains("waiting for the experiments"), "{gc_said}");
    // The run's result survived the gc that waited for it.
    let verified = s.ok(&["cache", "verify"]);
    assert!(verified.contains("all 1 artifacts intact"), "{verified}");
    // A run on another host that stopped renewing its registration holds nothing.
    std::fs::write(
        s.path("cache/locks/runs/elsewhere0.json"),
        foreign_owner(0).replace(r#""job":"4242","#, ""),
    )
    .unwrap();
    let mut c = no_flock(s.cmd(&["cache", "gc", "exp.kdl"]));
    c.env("EFRLHF_LEASE_TTL", "1").stdout(Stdio::piped());
    let (ok, _) = finish(c.spawn().unwrap(), Duration::from_secs(60));
    assert!(ok);
    assert!(!s.path("cache/locks/runs/elsewhere0.json").exists());
}
