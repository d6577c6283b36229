//! Sweeps: expansion, sharing of upstream stages, side-by-side metrics (acceptance 3).

mod common;
use common::*;

#[test]
fn plan_lists_shared_stage_once_and_each_variant() {
    let s = Sandbox::new("sweep-plan");
    s.experiment(
        r#"
stage "a" kind="tshout" { times 2; }
stage "b" kind="tshout" { input "a"; times 1; }
sweep "times" {
    vary "b.times" 1 2 3
}
"#,
    );
    let ids: Vec<String> = s.plan().into_iter().map(|(id, _)| id).collect();
    assert_eq!(ids, ["a", "b[times=1]", "b[times=2]", "b[times=3]"]);
    s.ok(&["run", "exp.kdl"]);
    assert_eq!(s.calls().iter().filter(|c| *c == "a").count(), 1);

    let v: serde_json::Value =
        serde_json::from_str(&s.ok(&["show", "exp.kdl", "--format", "json"])).unwrap();
    let chars: Vec<(String, f64)> = v["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["id"].as_str().unwrap().to_string(),
                x["metrics"]["chars"].as_f64().unwrap(),
            )
        })
        .collect();
    // "HELLO HELLO" repeated 1, 2, 3 times with spaces: 11, 23, 35 characters.
    assert_eq!(
        chars,
        [
            ("a".into(), 11.0),
            ("b[times=1]".into(), 11.0),
            ("b[times=2]".into(), 23.0),
            ("b[times=3]".into(), 35.0)
        ]
    );
    assert_eq!(v["stages"][2]["variant"]["b.times"], 2);

    let table = s.ok(&["show", "exp.kdl"]);
    let rows: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows[0], ["stage", "kind", "status", "times", "chars"]);
    assert_eq!(rows[5], ["b[times=3]", "tshout", "done", "3", "35"]);
    let csv = s.ok(&["show", "exp.kdl", "--format", "csv"]);
    assert_eq!(csv.lines().nth(2), Some("b[times=1],tshout,done,1,11"));
    let md = s.ok(&["show", "exp.kdl", "--format", "md"]);
    assert!(
        md.contains("| b[times=2] | tshout | done | 2 | 23 |"),
        "{md}"
    );
}

#[test]
fn two_sweeps_multiply_and_zipped_varies_move_together() {
    let s = Sandbox::new("sweep-product");
    s.experiment(
        r#"
stage "a" kind="tshout" { times 1; }
stage "b" kind="tshout" { input "a"; }
stage "c" kind="tshout" { input "b"; }
sweep "upstream" {
    vary "a.times" 1 2
}
sweep "pair" {
    vary "b.times" 1 2 3
    vary "b.note" "x" "y" "z"
}
"#,
    );
    let ids: Vec<String> = s.plan().into_iter().map(|(id, _)| id).collect();
    assert_eq!(ids.len(), 2 + 6 + 6);
    assert!(
        ids.contains(&"b[times=2,note=y]".to_string())
            || ids.contains(&"b[a.times=1,b.times=2,note=y]".to_string()),
        "{ids:?}"
    );
    assert!(
        ids.iter()
            .all(|id| !id.contains("note=z") || id.contains("times=3")),
        "{ids:?}"
    );
    let v: serde_json::Value = serde_json::from_str(&s.ok(&["plan", "exp.kdl", "--json"])).unwrap();
    // Every c variant reads the b variant with the same settings.
    for st in v["stages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["id"].as_str().unwrap().starts_with("c["))
    {
        let id = st["id"].as_str().unwrap();
        assert_eq!(
            st["inputs"][0].as_str().unwrap(),
            id.replacen("c[", "b[", 1)
        );
    }
}

#[test]
fn graph_exports_dot_and_mermaid() {
    let s = Sandbox::new("sweep-graph");
    s.experiment("stage \"a\" kind=\"tshout\" {\n}\nstage \"b\" kind=\"tshout\" {\n    input \"a\"\n}\nsweep \"s\" {\n    vary \"b.times\" 1 2\n}\n");
    let dot = s.ok(&["graph", "exp.kdl"]);
    assert_eq!(
        dot,
        "digraph \"t\" {\n  rankdir=LR;\n  node [shape=box, style=rounded];\n  \"a\" [label=\"a\\ntshout\"];\n  \"b[times=1]\" [label=\"b[times=1]\\ntshout\"];\n  \"b[times=2]\" [label=\"b[times=2]\\ntshout\"];\n  \"a\" -> \"b[times=1]\";\n  \"a\" -> \"b[times=2]\";\n}\n"
    );
    let mermaid = s.ok(&["graph", "exp.kdl", "--format", "mermaid"]);
    assert!(
        mermaid.starts_with("flowchart LR\n")
            && mermaid.contains("n0 --> n1")
            && mermaid.contains("n0 --> n2"),
        "{mermaid}"
    );
}

#[test]
fn plugins_lists_and_documents_kinds() {
    let s = Sandbox::new("sweep-plugins");
    s.experiment("stage \"a\" kind=\"tshout\" {\n}\n");
    let list = s.ok(&["plugins", "-e", "exp.kdl"]);
    assert!(
        list.contains("tshout") && list.contains("Upper-cases"),
        "{list}"
    );
    let doc = s.ok(&["plugins", "tshout", "-e", "exp.kdl"]);
    assert!(
        doc.contains("times")
            && doc.contains("int")
            && doc.contains("repeat count")
            && doc.contains("range 0.."),
        "{doc}"
    );
    let out = s.run(&["plugins", "tshuot", "-e", "exp.kdl"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("did you mean `tshout`?"));
}

#[test]
fn show_aggregates_over_an_axis_and_plots_a_metric() {
    let s = Sandbox::new("sweep-aggregate");
    s.experiment(
        r#"
stage "a" kind="tshout" { times 1; }
stage "b" kind="tshout" { input "a"; }
sweep "times" {
    vary "b.times" 1 2 4
}
sweep "seed" {
    vary "b.seed" 1 2
}
"#,
    );
    s.ok(&["run", "exp.kdl"]);
    let v: serde_json::Value = serde_json::from_str(&s.ok(&[
        "show",
        "exp.kdl",
        "--format",
        "json",
        "--aggregate",
        "seed",
    ]))
    .unwrap();
    let stages = v["stages"].as_array().unwrap();
    assert_eq!(stages.len(), 1 + 3);
    let b4 = stages.iter().find(|x| x["id"] == "b[times=4]").unwrap();
    assert_eq!(b4["n"], 2);
    // "HELLO" four times with spaces: 23 characters, whatever the seed.
    assert_eq!(b4["metrics"]["chars"], 23.0);
    assert_eq!(b4["sd"]["chars"], 0.0);
    let out = s.run(&[
        "show",
        "exp.kdl",
        "--aggregate",
        "seed",
        "--plot",
        "times:chars",
        "--plot-out",
        "plot.svg",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("wrote plot.svg (1 series)"));
    let svg = s.read("plot.svg");
    assert!(
        svg.starts_with("<svg") && svg.contains("t: chars by times"),
        "{}",
        &svg[..200.min(svg.len())]
    );
    // Unknown axes are input errors.
    let out = s.run(&["show", "exp.kdl", "--aggregate", "sed"]);
    assert_eq!(out.status.code(), Some(2));
    let out = s.run(&["show", "exp.kdl", "--plot", "tims:chars"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("`tims` is not a swept parameter"));
}

#[test]
fn show_can_keep_only_some_metrics() {
    let s = Sandbox::new("sweep-metrics");
    s.experiment("stage \"a\" kind=\"tshout\" { times 2; }\n");
    s.ok(&["run", "exp.kdl"]);
    let table = s.ok(&["show", "exp.kdl", "--metrics", "nothing-like-this"]);
    assert_eq!(
        table
            .lines()
            .next()
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["stage", "kind", "status"]
    );
    let table = s.ok(&["show", "exp.kdl", "--metrics", "chars"]);
    assert_eq!(
        table
            .lines()
            .nth(2)
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["a", "tshout", "done", "11"]
    );
}

/// Seconds as the run line prints them (an independent copy of the rule).
fn duration(secs: f64) -> String {
    if secs < 9.95 {
        format!("{secs:.1}s")
    } else {
        format!("{}s", secs.round())
    }
}

#[test]
fn a_rerun_says_what_each_stage_took_last_time_and_when_the_run_ends() {
    let s = Sandbox::new("sweep-eta");
    let exp = |times: u32| {
        format!(
            "stage \"a\" kind=\"tshout\" {{ times {times}; }}\nstage \"b\" kind=\"tshout\" {{ input \"a\"; times 1; }}\nsweep \"t\" {{\n    vary \"b.times\" 1 2\n}}\n"
        )
    };
    s.experiment(&exp(1));
    let mut took = std::collections::BTreeMap::new();
    for line in s.ok(&["run", "exp.kdl", "--json"]).lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        if v["event"] == "stage-done" {
            took.insert(
                v["stage"].as_str().unwrap().to_string(),
                v["seconds"].as_f64().unwrap(),
            );
        }
    }
    assert_eq!(took.len(), 3, "{took:?}");
    // Everything reruns: each stage's last time is known, and one job does them in turn.
    s.experiment(&exp(2));
    let out = s.run(&["run", "exp.kdl", "--jobs", "1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    let total = 0.0 + took["a"] + took["b[times=1]"] + took["b[times=2]"];
    let first = format!(
        "Running a (tshout), {} last time; run ETA {}",
        duration(took["a"]),
        duration(total)
    );
    assert!(err.contains(&first), "no `{first}` in:\n{err}");
    let last = format!(
        "Running b[times=2] (tshout), {} last time; run ETA ",
        duration(took["b[times=2]"])
    );
    assert!(err.contains(&last), "no `{last}` in:\n{err}");
    // A first run knows no durations, and says no ETA.
    let fresh = Sandbox::new("sweep-eta-fresh");
    fresh.experiment(&exp(1));
    let out = fresh.run(&["run", "exp.kdl"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Running a (tshout)\n") && !err.contains("ETA"),
        "{err}"
    );
}
