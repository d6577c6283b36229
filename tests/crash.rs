//! `kill -9` in the middle of a stage (acceptance 6 of the runner).

mod common;
use common::*;

use std::time::{Duration, Instant};

#[test]
fn killed_run_reuses_finished_stages_and_never_shows_a_partial_artifact() {
    let s = Sandbox::new("crash-kill");
    let marker = s.path("started.pid");
    s.experiment(&format!(
        "stage \"a\" kind=\"tshout\" {{\n    times 2\n}}\nstage \"slow\" kind=\"tshout\" {{\n    input \"a\"\n    times 3\n    sleep 30.0\n    marker \"{}\"\n}}\n",
        marker.display()
    ));
    let mut child = s.cmd(&["run", "exp.kdl", "--jobs", "1"]).spawn().unwrap();
    let t0 = Instant::now();
    while !marker.exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the slow stage never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The slow stage has written a partial file into its scratch folder.
    let tmp_files = files_below(&s.path("cache/tmp"));
    assert!(
        tmp_files.iter().any(|f| f.ends_with("partial.txt")),
        "{tmp_files:?}"
    );
    let plugin_pid: i32 = std::fs::read_to_string(&marker)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // kill -9 the runner.
    unsafe { libc_kill(child.id() as i32, 9) };
    let _ = child.wait();
    // Its stage program dies with it.
    let t0 = Instant::now();
    while std::path::Path::new(&format!("/proc/{plugin_pid}")).exists() && !is_zombie(plugin_pid) {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the stage program outlived the killed runner"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Nothing partial is visible as a result.
    assert!(
        !files_below(&s.path("cache/artifacts"))
            .iter()
            .any(|f| f.ends_with("partial.txt"))
    );
    let plan = s.plan();
    assert_eq!(
        plan,
        [
            ("a".to_string(), "cached".to_string()),
            ("slow".to_string(), "run".to_string())
        ]
    );

    // Run again (without the sleep): a is reused, slow reruns from scratch.
    s.clear_calls();
    std::fs::remove_file(&marker).unwrap();
    let out = s
        .cmd(&["run", "exp.kdl", "--json"])
        .env("EFRLHF_TEST_NOSLEEP", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ev = events(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(with_event(&ev, "stage-cached"), ["a"]);
    assert_eq!(with_event(&ev, "stage-done"), ["slow"]);
    assert_eq!(s.calls(), ["slow"]);
    let stored = files_below(&s.path("cache/artifacts"));
    assert!(
        !stored.iter().any(|f| f.ends_with("partial.txt")),
        "{stored:?}"
    );
    assert!(
        files_below(&s.path("cache/tmp")).is_empty(),
        "scratch of the killed run is cleaned"
    );
    assert_eq!(s.ok(&["cache", "verify"]).trim(), "all 2 artifacts intact");
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.contains(") Z "))
        .unwrap_or(true)
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}
