//! The reports of the shipped experiments (quickstart, ablations,
//! reward-efficiency), each run at a small size with `--set` (the same graph,
//! sweeps and wiring; smaller models and fewer steps), hold every stage and
//! what the experiment is about, and render in headless Chromium.

mod common;
use common::browser::in_chromium;
use common::*;

use std::path::PathBuf;

use serde_json::Value as Json;

fn shipped(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("experiments/{name}.kdl"))
}

/// The settings that make the summarizer experiments small.
const SMALL_SUMMARIZER: &[&str] = &[
    "*.epochs=1",
    "*.d-model=32",
    "*.layers=1",
    "*.heads=2",
    "*.max-source=64",
    "*.max-target=32",
    "*.max-new-tokens=16",
    "*.val-products=8",
    "*.max-products=8",
    "*.updates=3",
    "*.vocab-size=400",
    "*.eval-every=20",
];

/// Runs `name` at a small size, writes its report, checks what every report
/// holds and opens it in Chromium; returns the page and `show`'s JSON.
fn report_of(name: &str, sets: &[&str]) -> (String, Json) {
    let s = Sandbox::new(&format!("shipped-{name}"));
    let file = shipped(name);
    let file = file.to_str().unwrap();
    let with_sets = |cmd: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = cmd.iter().map(|a| a.to_string()).collect();
        for set in sets {
            args.extend(["--set".to_string(), set.to_string()]);
        }
        args
    };
    let args = with_sets(&["run", file]);
    s.ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let args = with_sets(&["report", file, "-o", "report.html"]);
    s.ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let html = s.read("report.html");
    let args = with_sets(&["show", file, "--format", "json"]);
    let shown: Json =
        serde_json::from_str(&s.ok(&args.iter().map(String::as_str).collect::<Vec<_>>())).unwrap();
    for st in shown["stages"].as_array().unwrap() {
        let id = st["id"].as_str().unwrap();
        assert!(st["output"].is_string(), "{name}: {id} did not finish");
        assert!(
            html.contains(&format!("<td>{id}</td>")),
            "{name}: {id} is not in the stages table"
        );
    }
    assert_eq!(
        html.matches("<svg").count(),
        html.matches("<figure>").count()
    );
    in_chromium(&s.dir, &s.path("report.html"), &html);
    (html, shown)
}

#[test]
fn the_quickstart_report_compares_sft_and_ppo() {
    let (html, shown) = report_of("quickstart", SMALL_SUMMARIZER);
    assert_eq!(shown["stages"].as_array().unwrap().len(), 8);
    for chart in [
        "sft: train_curve.jsonl",
        "sft: validation_curve.jsonl",
        "ppo: ppo_curve.jsonl",
    ] {
        assert!(html.contains(chart), "{chart}");
    }
    let eval = shown["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "eval")
        .unwrap();
    let win = eval["metrics"]["ppo.win_rate_vs_sft"].as_f64().unwrap();
    assert!(
        html.contains(&format!("<td class=\"num\">{win:.4}</td>")),
        "win rate {win}"
    );
}

#[test]
fn the_ablations_report_holds_every_reward_and_every_policy() {
    let (html, shown) = report_of("ablations", SMALL_SUMMARIZER);
    let stages = shown["stages"].as_array().unwrap();
    assert_eq!(stages.len(), 16);
    let ppo: Vec<&str> = stages
        .iter()
        .filter(|s| s["kind"] == "ppo")
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ppo.len(), 6);
    // Each policy is a row of the evaluation's comparison.
    for p in ppo {
        assert!(html.contains(&format!("<td>{p}</td>")), "{p}");
    }
    assert!(html.matches("ppo_curve.jsonl").count() >= 5);
}

#[test]
fn the_reward_efficiency_report_plots_accuracy_over_pairs_with_seeds_averaged() {
    let sets = [
        "*.epochs=1",
        "*.d-model=32",
        "*.layers=1",
        "*.heads=2",
        "*.vocab-size=400",
        "rm.max-tokens=64",
    ];
    let (html, shown) = report_of("reward-efficiency", &sets);
    assert_eq!(shown["stages"].as_array().unwrap().len(), 3 + 6 * 2 * 3);
    assert!(html.contains("rm: accuracy by train-pairs"));
    assert!(html.contains(">accuracy sd<"));
    for pairs in [25, 50, 100, 200, 400, 800] {
        for method in ["domain-knowledge", "text"] {
            let row = format!(">rm[method={method},train-pairs={pairs}]<");
            assert!(html.contains(&row), "{row}");
        }
    }
}
