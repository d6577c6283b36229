//! What reruns after what change (acceptance 1, 2, 9 of the runner).

mod common;
use common::*;

const AB: &str = r#"
stage "a" kind="tshout" {
    times 2
}
stage "b" kind="tshout" {
    input "a"
    times 1
}
"#;

#[test]
fn second_run_executes_nothing_and_plan_says_cached() {
    let s = Sandbox::new("fresh-second");
    s.experiment(AB);
    let ev = s.run_events(&[]);
    assert_eq!(with_event(&ev, "stage-done"), ["a", "b"]);
    assert_eq!(s.calls(), ["a", "b"]);
    assert_eq!(s.read("calls.txt").lines().count(), 2);

    assert_eq!(
        s.plan(),
        [
            ("a".to_string(), "cached".to_string()),
            ("b".to_string(), "cached".to_string())
        ]
    );
    let ev = s.run_events(&[]);
    assert_eq!(with_event(&ev, "stage-cached"), ["a", "b"]);
    assert!(with_event(&ev, "stage-done").is_empty());
    // The plugin program was not started again.
    assert_eq!(s.calls(), ["a", "b"]);
}

#[test]
fn changing_a_param_reruns_only_that_stage() {
    let s = Sandbox::new("fresh-param");
    s.experiment(AB);
    s.run_events(&[]);
    s.clear_calls();
    s.experiment(&AB.replace("input \"a\"\n    times 1", "input \"a\"\n    times 2"));
    let plan = s.plan();
    assert_eq!(plan[0].1, "cached");
    assert_eq!(plan[1].1, "run");
    let ev = s.run_events(&[]);
    assert_eq!(with_event(&ev, "stage-done"), ["b"]);
    assert_eq!(with_event(&ev, "stage-cached"), ["a"]);
    assert_eq!(s.calls(), ["b"]);
}

#[test]
fn explain_names_the_changed_param() {
    let s = Sandbox::new("fresh-explain");
    s.experiment(AB);
    s.run_events(&[]);
    s.experiment(&AB.replace("input \"a\"\n    times 1", "input \"a\"\n    times 2"));
    let text = s.ok(&["explain", "exp.kdl", "b"]);
    assert!(text.contains("param `times`: 1 -> 2"), "{text}");
    assert!(text.contains("will run"), "{text}");
    let text = s.ok(&["explain", "exp.kdl", "a"]);
    assert!(text.contains("is up to date"), "{text}");
    // An unknown stage is an input error with a suggestion.
    let out = s.run(&["explain", "exp.kdl", "bb"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("did you mean `b`?"));
}

#[test]
fn changing_the_plugin_program_reruns_every_stage_of_that_kind() {
    let s = Sandbox::new("fresh-program");
    s.experiment(AB);
    s.run_events(&[]);
    s.clear_calls();
    let program = s.read("plugins/tshout.py");
    s.write(
        "plugins/tshout.py",
        &format!("{program}\n# a change to the program\n"),
    );
    let ev = s.run_events(&[]);
    assert_eq!(with_event(&ev, "stage-done"), ["a", "b"]);
    assert_eq!(s.calls(), ["a", "b"]);
    let text = s.ok(&["explain", "exp.kdl", "a"]);
    assert!(text.contains("is up to date"), "{text}");
}

#[test]
fn a_param_that_does_not_change_the_output_stops_at_its_stage() {
    let s = Sandbox::new("fresh-cutoff");
    s.experiment(AB);
    s.run_events(&[]);
    s.clear_calls();
    s.experiment(&AB.replace("times 2\n", "times 2\n    note \"same bytes out\"\n"));
    let plan = s.plan();
    assert_eq!(plan[0].1, "run");
    assert_eq!(plan[1].1, "run", "b's key is unknown until a has run");
    let text = s.ok(&["explain", "exp.kdl", "b"]);
    assert!(text.contains("input `a`: param `note`"), "{text}");
    let ev = s.run_events(&[]);
    assert_eq!(with_event(&ev, "stage-done"), ["a"]);
    assert_eq!(
        with_event(&ev, "stage-cached"),
        ["b"],
        "early cutoff: a's output bytes did not change"
    );
    assert_eq!(s.calls(), ["a"]);
}

#[test]
fn whitespace_and_comments_change_nothing() {
    let s = Sandbox::new("fresh-whitespace");
    s.experiment(AB);
    s.run_events(&[]);
    s.clear_calls();
    let reformatted = AB
        .replace(
            "    times 2\n",
            "\n        // repeat twice\n        times   2   /* inline */\n\n",
        )
        .replace("kind=\"tshout\" {", "kind=\"tshout\"   {");
    s.experiment(&format!("// a comment at the top\n{reformatted}\n\n"));
    assert!(s.plan().iter().all(|(_, st)| st == "cached"));
    let ev = s.run_events(&[]);
    assert!(with_event(&ev, "stage-done").is_empty());
    assert!(s.calls().is_empty());
}

#[test]
fn seed_is_part_of_the_key_and_stage_seed_overrides() {
    let s = Sandbox::new("fresh-seed");
    s.experiment(AB);
    s.run_events(&[]);
    s.clear_calls();
    s.experiment(&AB.replace("times 2\n", "times 2\n    seed 11\n"));
    let text = s.ok(&["explain", "exp.kdl", "a"]);
    assert!(text.contains("seed: 7 -> 11"), "{text}");
    s.run_events(&[]);
    assert_eq!(
        s.calls(),
        ["a"],
        "a's output does not depend on the seed, so b is reused"
    );
}

#[test]
fn force_and_only_select_stages() {
    let s = Sandbox::new("fresh-only");
    s.experiment(&format!(
        "{AB}\nstage \"c\" kind=\"tshout\" {{\n    times 3\n}}\n"
    ));
    let ev = s.run_events(&["--only", "a"]);
    assert_eq!(with_event(&ev, "stage-done"), ["a"]);
    let ev = s.run_events(&["--only", "b"]);
    assert_eq!(with_event(&ev, "stage-done"), ["b"]);
    assert_eq!(with_event(&ev, "stage-cached"), ["a"]);
    s.clear_calls();
    let ev = s.run_events(&["--force", "a"]);
    assert_eq!(with_event(&ev, "stage-done"), ["a", "c"]);
    // a's forced rerun gives the same bytes, so b is still reused.
    assert_eq!(with_event(&ev, "stage-cached"), ["b"]);
}

#[test]
fn results_are_equal_with_one_job_and_many() {
    let body = r#"
stage "a" kind="tshout" { times 2; }
stage "b" kind="tshout" { input "a"; times 1; }
stage "c" kind="tshout" { input "a"; times 3; }
stage "d" kind="tshout" { input "b" "c"; }
"#;
    let keys = |jobs: &str, name: &str| {
        let s = Sandbox::new(name);
        s.experiment(body);
        let out = s.ok(&["run", "exp.kdl", "--json", "--jobs", jobs]);
        let mut keys: Vec<(String, String)> = out
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["event"] == "stage-done")
            .map(|v| {
                (
                    v["stage"].as_str().unwrap().to_string(),
                    v["key"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        keys.sort();
        (keys, s.read("cache/../calls.txt").lines().count())
    };
    let (one, n1) = keys("1", "jobs-1");
    let (four, n4) = keys("4", "jobs-4");
    assert_eq!(one.len(), 4);
    assert_eq!(one, four);
    assert_eq!((n1, n4), (4, 4));
}
