//! Random `kill -9` of runs whose stages are shell wrappers around a Python
//! program (so the work is a grandchild of the runner): after every kill no
//! stage program is left running, and at the end the results are
//! byte-identical to those of a run never killed, with `cache verify` clean.
//! CI kills 12 times; `EFRLHF_STRESS_KILLS=100` kills 100.

mod common;
use common::*;

use std::time::{Duration, Instant};

unsafe extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}

const STAGES: usize = 4;

fn experiment(s: &Sandbox) {
    s.wrapper_plugin("");
    let mut body = String::from("stage \"s0\" kind=\"twrap\" {\n    times 2\n    sleep 0.15\n");
    body.push_str(&format!(
        "    marker \"{}\"\n}}\n",
        s.path("s0.pid").display()
    ));
    for i in 1..STAGES {
        body.push_str(&format!(
            "stage \"s{i}\" kind=\"twrap\" {{\n    input \"s{}\"\n    times {}\n    sleep 0.15\n    marker \"{}\"\n}}\n",
            i - 1,
            i % 2 + 1,
            s.path(&format!("s{i}.pid")).display()
        ));
    }
    s.experiment(&body);
}

/// Stage id -> stored result digest, from `show --format json`.
fn results(s: &Sandbox) -> Vec<(String, String)> {
    let v: serde_json::Value =
        serde_json::from_str(&s.ok(&["show", "exp.kdl", "--format", "json"])).unwrap();
    v["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|st| {
            let out = st["output"].as_str().unwrap_or_default();
            (
                st["id"].as_str().unwrap().to_string(),
                out.rsplit('/').next().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
}

#[test]
fn random_kills_lose_nothing_and_leave_nothing_running() {
    let reference = Sandbox::new("stress-reference");
    experiment(&reference);
    reference.ok(&["run", "exp.kdl"]);
    let expected = results(&reference);

    let kills: usize = std::env::var("EFRLHF_STRESS_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    let s = Sandbox::new("stress-kills");
    experiment(&s);
    // A fixed sequence of moments (an LCG), spread over a whole run.
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    for round in 0..kills {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let after = Duration::from_millis(20 + (x >> 33) % 900);
        let mut child = s
            .cmd(&["run", "exp.kdl", "--jobs", "2"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(after);
        unsafe { kill(child.id() as i32, 9) };
        let _ = child.wait();
        // Every stage program started so far stops.
        for i in 0..STAGES {
            let marker = s.path(&format!("s{i}.pid"));
            if let Ok(pid) =
                std::fs::read_to_string(&marker).map(|t| t.trim().parse::<i32>().unwrap_or(0))
            {
                let t0 = Instant::now();
                while pid > 0 && alive(pid) {
                    assert!(
                        t0.elapsed() < Duration::from_secs(10),
                        "round {round}: s{i} (pid {pid}) outlived its runner"
                    );
                    std::thread::sleep(Duration::from_millis(10));
                }
                let _ = std::fs::remove_file(marker);
            }
        }
        assert!(
            !files_below(&s.path("cache/artifacts"))
                .iter()
                .any(|f| f.ends_with("partial.txt")),
            "round {round}: a partial file became visible"
        );
    }
    s.ok(&["run", "exp.kdl"]);
    assert_eq!(results(&s), expected, "after {kills} kills");
    let verify = s.ok(&["cache", "verify"]);
    assert!(verify.trim().ends_with("artifacts intact"), "{verify}");
}
