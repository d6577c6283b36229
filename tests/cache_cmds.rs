//! `cache verify`, `cache gc`, `cache ls`, `cache du` (acceptance 8 of the runner).

mod common;
use common::*;

const SWEEP: &str = r#"
stage "a" kind="tshout" {
    times 3
}
stage "b" kind="tshout" {
    input "a"
}
sweep "times" {
    vary "b.times" 2 3 4
}
"#;

#[test]
fn verify_names_a_corrupted_file_and_run_does_not_reuse_it() {
    let s = Sandbox::new("cache-verify");
    s.experiment(SWEEP);
    s.ok(&["run", "exp.kdl"]);
    assert_eq!(s.ok(&["cache", "verify"]).trim(), "all 4 artifacts intact");

    // Change one byte of b[times=4]'s text, keeping its size.
    let v: serde_json::Value =
        serde_json::from_str(&s.ok(&["show", "exp.kdl", "--format", "json"])).unwrap();
    assert_eq!(v["stages"][3]["id"], "b[times=4]");
    let arts = files_below(&s.path("cache/artifacts"));
    let victim = arts
        .iter()
        .find(|f| {
            f.ends_with("text.txt")
                && s.read(&format!("cache/artifacts/{f}")).len()
                    == "HELLO HELLO HELLO".len() * 4 + 3
        })
        .unwrap()
        .clone();
    let path = s.path(&format!("cache/artifacts/{victim}"));
    make_writable(&s.path("cache/artifacts"));
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[0] = b'J';
    std::fs::write(&path, &bytes).unwrap();

    let out = s.run(&["cache", "verify"]);
    assert_ne!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("{victim}: content does not match its digest")),
        "{stdout}"
    );
    assert_eq!(stdout.lines().count(), 1, "{stdout}");

    let plan = s.plan();
    assert_eq!(plan[3], ("b[times=4]".to_string(), "run".to_string()));
    let text = s.ok(&["explain", "exp.kdl", "b[times=4]"]);
    assert!(
        text.contains("damaged") && text.contains("text.txt"),
        "{text}"
    );
    s.clear_calls();
    let ev = s.run_events(&[]);
    assert_eq!(with_event(&ev, "stage-done"), ["b[times=4]"]);
    assert_eq!(s.calls(), ["b[times=4]"]);
    assert_eq!(s.ok(&["cache", "verify"]).trim(), "all 4 artifacts intact");
    assert!(
        s.read(&format!("cache/artifacts/{victim}"))
            .starts_with("HELLO")
    );
}

#[test]
fn gc_removes_results_the_given_experiments_no_longer_use() {
    let s = Sandbox::new("cache-gc");
    s.experiment(SWEEP);
    s.ok(&["run", "exp.kdl"]);
    let before = files_below(&s.path("cache/artifacts")).len();
    assert_eq!(before, 8, "4 artifacts of 2 files each");

    s.experiment(&SWEEP.replace("2 3 4", "2 3"));
    let dry = s.ok(&["cache", "gc", "exp.kdl", "--dry-run"]);
    assert!(
        dry.starts_with("would remove 1 runs and 1 artifacts"),
        "{dry}"
    );
    assert_eq!(files_below(&s.path("cache/artifacts")).len(), 8);

    let report = s.ok(&["cache", "gc", "exp.kdl"]);
    assert!(
        report.starts_with("removed 1 runs and 1 artifacts"),
        "{report}"
    );
    // bytes: "HELLO HELLO HELLO" x4 joined (71 bytes) + {"chars": 71} (13 bytes) + its log.
    let freed: Vec<&str> = report.split(", ").nth(1).unwrap().split(' ').collect();
    assert!(freed[0].parse::<f64>().unwrap() >= 84.0, "{report}");
    assert_eq!(files_below(&s.path("cache/artifacts")).len(), 6);
    assert!(
        s.plan().iter().all(|(_, st)| st == "cached"),
        "what the experiment uses is kept"
    );
    assert_eq!(s.ok(&["cache", "verify"]).trim(), "all 3 artifacts intact");

    let ls = s.ok(&["cache", "ls"]);
    assert_eq!(ls.lines().count(), 2 + 3, "{ls}");
    assert!(
        ls.contains("b[times=3]") && !ls.contains("b[times=4]"),
        "{ls}"
    );
    let du = s.ok(&["cache", "du"]);
    assert!(du.contains("(3 runs, 3 artifacts)"), "{du}");
}
