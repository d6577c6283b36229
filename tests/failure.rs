//! A failing stage (acceptance 5 of the runner).

mod common;
use common::*;

const BODY: &str = r#"
stage "ok" kind="tshout" {
    times 2
}
stage "bad" kind="tshout" {
    input "ok"
    fail #true
}
stage "after" kind="tshout" {
    input "bad"
}
stage "beside" kind="tshout" {
    input "ok"
    times 3
}
"#;

#[test]
fn failing_stage_keeps_its_log_skips_dependents_and_keeps_finished_results() {
    let s = Sandbox::new("fail-basic");
    s.experiment(BODY);
    let out = s.run(&["run", "exp.kdl", "--jobs", "1"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Failed bad"), "{err}");
    assert!(err.contains("exited with code 3"), "{err}");
    // The log's tail is shown, and the log is kept on disk.
    assert!(err.contains("boom: this stage was asked to fail"), "{err}");
    let logs: Vec<String> = files_below(&s.path("cache/logs"))
        .into_iter()
        .filter(|f| f.ends_with(".failed.log"))
        .collect();
    assert_eq!(logs.len(), 1);
    let log = s.read(&format!("cache/logs/{}", logs[0]));
    assert!(
        log.contains("starting bad") && log.contains("boom"),
        "{log}"
    );
    assert!(err.contains("Skipped after: input `bad` failed"), "{err}");
    // The dependent never started; the independent stage did.
    let calls = s.calls();
    assert!(!calls.contains(&"after".to_string()));
    assert!(calls.contains(&"beside".to_string()));

    let v: serde_json::Value =
        serde_json::from_str(&s.ok(&["show", "exp.kdl", "--format", "json"])).unwrap();
    let status: Vec<(&str, &str)> = v["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| (x["id"].as_str().unwrap(), x["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        status,
        [
            ("ok", "done"),
            ("bad", "failed"),
            ("after", "not-run"),
            ("beside", "done")
        ]
    );
    let text = s.ok(&["explain", "exp.kdl", "bad"]);
    assert!(
        text.contains("last failure") && text.contains("exited with code 3"),
        "{text}"
    );

    // Finished stages stay cached; fixing the stage runs it and its dependent only.
    s.clear_calls();
    s.experiment(&BODY.replace("fail #true", "fail #false"));
    let ev = s.run_events(&[]);
    assert_eq!(with_event(&ev, "stage-cached"), ["beside", "ok"]);
    assert_eq!(with_event(&ev, "stage-done"), ["after", "bad"]);
    assert_eq!(s.calls(), ["bad", "after"]);
}

#[test]
fn json_events_report_the_failure_and_fail_fast_stops_early() {
    let s = Sandbox::new("fail-json");
    s.experiment(BODY);
    let out = s.run(&["run", "exp.kdl", "--json", "--jobs", "1", "--fail-fast"]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let ev = events(&stdout);
    assert_eq!(with_event(&ev, "stage-failed"), ["bad"]);
    assert_eq!(with_event(&ev, "stage-skipped"), ["after", "beside"]);
    let failed: serde_json::Value = stdout
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["event"] == "stage-failed")
        .unwrap();
    assert!(failed["log"].as_str().unwrap().ends_with(".failed.log"));
    assert!(failed["seconds"].as_f64().unwrap() >= 0.0);
}

#[test]
fn malformed_metrics_fail_the_stage_with_a_clear_message() {
    let s = Sandbox::new("fail-metrics");
    s.experiment("stage \"m\" kind=\"tshout\" {\n    bad-metrics #true\n}\n");
    let out = s.run(&["run", "exp.kdl"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("metrics.json: value of `chars` is not a number"),
        "{err}"
    );
    assert!(
        files_below(&s.path("cache/artifacts")).is_empty(),
        "a failed stage stores nothing"
    );
}
