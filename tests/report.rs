//! `efrlhf report`: the page of a small pipeline (dataset, tokenizer, SFT,
//! φ, PPO, eval, and a reward-model sweep over pairs and seeds) holds every
//! stage, a chart per logged curve, the reward-efficiency curve, the
//! importances and the evaluation, fetches nothing; and where Chromium is
//! installed (CI installs it and sets `EFRLHF_REQUIRE_BROWSER`) it renders
//! headless without console errors into a screenshot that is not blank.

#![allow(clippy::print_stderr)]

mod common;
use common::browser::in_chromium;
use common::*;

use std::path::Path;

fn experiment(s: &Sandbox) {
    s.experiment(&format!(
        r#"
{tiny}stage "rm" kind="reward-model" {{
    input "train" "val"
    hidden
    epochs 5
}}
sweep "pairs" {{
    vary "rm.train-pairs" 16 32 64
}}
sweep "seed" {{
    vary "rm.seed" 1 2
}}
"#,
        tiny = tiny_rlhf()
    ));
}

/// Numeric fields of a curve file other than its x axis (nested ones count
/// once each), as the page must chart them; 0 when there is no such file.
fn curve_fields(path: &Path) -> usize {
    let Ok(text) = std::fs::read_to_string(path) else {
        return 0;
    };
    if path.extension().is_some_and(|e| e == "csv") {
        return text.lines().next().unwrap().split(',').count() - 1;
    }
    fn leaves(prefix: &str, v: &serde_json::Value, out: &mut std::collections::BTreeSet<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    leaves(&format!("{prefix}{k}."), v, out);
                }
            }
            serde_json::Value::Number(_) => {
                out.insert(prefix.to_string());
            }
            _ => {}
        }
    }
    let mut names = std::collections::BTreeSet::new();
    for line in text.lines() {
        leaves("", &serde_json::from_str(line).unwrap(), &mut names);
    }
    names.remove("step.");
    names.len()
}

#[test]
fn the_report_holds_every_stage_curve_and_evaluation_and_renders_in_chromium() {
    let s = Sandbox::new("report");
    experiment(&s);
    s.ok(&["run", "exp.kdl"]);
    let out = s.run(&["report", "exp.kdl", "-o", "r.html"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("wrote r.html ("));
    let html = s.read("r.html");
    assert!(html.starts_with("<!DOCTYPE html>"));
    for external in [
        "<script",
        "<link",
        "src=",
        "href=\"http",
        "url(http",
        "@import",
    ] {
        assert!(
            !html.contains(external),
            "the page fetches something: {external}"
        );
    }
    let shown: serde_json::Value =
        serde_json::from_str(&s.ok(&["show", "exp.kdl", "--format", "json"])).unwrap();
    let stages = shown["stages"].as_array().unwrap();
    assert_eq!(stages.len(), 8 + 5);
    for st in stages {
        let id = st["id"].as_str().unwrap();
        assert!(
            html.contains(&format!("<td>{id}</td>")),
            "{id} is not in the stages table"
        );
    }
    // One chart per logged curve field (stages in file order, their first variant's files).
    let mut curves = 0;
    for stage in ["train", "val", "tok", "sft", "phi", "rm", "ppo", "eval"] {
        let first = stages.iter().find(|x| x["stage"] == stage).unwrap();
        let dir = Path::new(first["output"].as_str().unwrap());
        for file in [
            "train_curve.jsonl",
            "validation_curve.jsonl",
            "ppo_curve.jsonl",
            "curve.csv",
        ] {
            curves += curve_fields(&dir.join(file));
        }
    }
    assert!(curves >= 20, "{curves}");
    // The DAG, the curves, rm's accuracy by train-pairs, one importance chart.
    assert_eq!(html.matches("<figure>").count(), 1 + curves + 1 + 1);
    assert_eq!(
        html.matches("<svg").count(),
        html.matches("<figure>").count()
    );
    assert!(html.contains("rm: accuracy by train-pairs"));
    // rm is averaged over its two seeds: `n` and `sd` columns, three rows.
    for pairs in [16, 32, 64] {
        assert!(
            html.contains(&format!(">rm[train-pairs={pairs}]<")),
            "{pairs}"
        );
    }
    assert!(html.contains(">accuracy sd<"));
    // The evaluation's table, and the products side by side.
    let eval = stages.iter().find(|x| x["stage"] == "eval").unwrap();
    let reward = eval["metrics"]["ppo.reward"].as_f64().unwrap();
    assert!(reward.abs() > 1e-3, "{reward}");
    assert!(html.contains(&format!("<td class=\"num\">{reward:.4}</td>")));
    assert!(html.contains("<td>reviews</td>") && html.contains("<td>reference</td>"));
    in_chromium(&s.dir, &s.dir.join("r.html"), &html);
}
