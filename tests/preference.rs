//! The `preference` kind: pairwise verdicts between an evaluation's models,
//! by an LLM judge (a small OpenAI-compatible server on 127.0.0.1 plays it)
//! and offline by reward models. The expected win rates are computed here
//! from the evaluation's own summaries, by the rule each stand-in judge
//! follows; the offline one must equal eval's own win rate under the same φ.

mod common;
use common::chat::serve;
use common::*;

use std::collections::BTreeMap;

/// The tiny pipeline, a second SFT (another seed: other summaries) and an
/// evaluation of the three on 8 validation products.
fn pipeline() -> String {
    let body = tiny_rlhf()
        .replace("max-products 4", "max-products 8")
        .replace(
            r#"input "sft" "ppo" "phi" "val""#,
            r#"input "sft" "ppo" "sft2" "phi" "val""#,
        );
    let sft2 = tiny_summarizer()
        .split(r#"stage "sft" kind="sft" {"#)
        .nth(1)
        .map(|rest| format!("stage \"sft2\" kind=\"sft\" {{\n    seed 99{rest}"))
        .unwrap();
    assert!(body.contains(r#""sft2" "phi""#) && sft2.contains("seed 99"));
    body + &sft2
}

fn judge_stage(name: &str, port: u16, model: &str, extra: &str) -> String {
    format!(
        r#"
stage "{name}" kind="preference" {{
    input "eval" "val"
    endpoint "http://127.0.0.1:{port}/v1"
    model "{model}"
    method "llm-judge"
    timeout 10.0
    {extra}
}}
"#
    )
}

/// Summary A and summary B of a pairwise prompt.
fn pair_of(prompt: &str) -> (String, String) {
    let a = prompt.split("Summary A:\n").nth(1).unwrap();
    let (a, rest) = a.split_once("\n\nSummary B:\n").unwrap();
    let (b, _) = rest.split_once("\n\nThink step by step").unwrap();
    (a.to_string(), b.to_string())
}

fn words(s: &str) -> usize {
    s.split_whitespace().count()
}

/// The rule of the consistent judge: the summary longer by more than two
/// words wins (1: the first, 0: the second), else a tie (1/2).
fn longer_rule(a: &str, b: &str) -> f64 {
    let (x, y) = (words(a) as i64, words(b) as i64);
    if x > y + 2 {
        1.0
    } else if y > x + 2 {
        0.0
    } else {
        0.5
    }
}

/// A consistent judge answering by [`longer_rule`].
fn longer(prompt: &str) -> String {
    let (a, b) = pair_of(prompt);
    let v = match longer_rule(&a, &b) {
        1.0 => "A",
        0.0 => "B",
        _ => "Tie",
    };
    format!("Comparing both.\n<preference> {v} </preference>")
}

/// A judge that always prefers the first summary shown.
fn first(_: &str) -> String {
    "The first one. <preference>A</preference>".into()
}

/// The consistent judge, but without a tag whenever A wins.
fn sloppy(prompt: &str) -> String {
    let (a, b) = pair_of(prompt);
    if longer_rule(&a, &b) == 1.0 {
        "Summary A is clearly better.".into()
    } else {
        longer(prompt)
    }
}

/// Per product, each model's summary, from the evaluation's output.
fn summaries(s: &Sandbox) -> Vec<BTreeMap<String, String>> {
    let dir = s.artifact_with("summaries.jsonl");
    std::fs::read_to_string(dir.join("summaries.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            serde_json::from_value(v["summaries"].clone()).unwrap()
        })
        .collect()
}

/// The model's score per product under [`longer_rule`].
fn longer_scores(rows: &[BTreeMap<String, String>], model: &str) -> Vec<f64> {
    rows.iter()
        .map(|r| longer_rule(&r[model], &r["sft"]))
        .collect()
}

fn differing(rows: &[BTreeMap<String, String>], model: &str) -> usize {
    rows.iter()
        .filter(|r| r[model].trim() != r["sft"].trim())
        .count()
}

fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

#[test]
fn llm_judge_asks_both_orders_cancels_position_bias_and_survives_a_dead_server() {
    let s = Sandbox::new("preference-llm");
    let server = serve(0, 10_000, longer);
    let port = server.port;
    s.experiment(&(pipeline() + &judge_stage("judge", port, "m", "concurrency 3")));
    s.ok(&["run", "exp.kdl"]);
    let rows = summaries(&s);
    assert_eq!(rows.len(), 8);
    let asked = 2 * (differing(&rows, "ppo") + differing(&rows, "sft2"));
    assert!(
        differing(&rows, "sft2") > 0,
        "the second SFT must write other summaries"
    );
    assert_eq!(
        server.count(),
        asked,
        "both orders of every differing pair, nothing else"
    );
    {
        let reqs = server.requests.lock().unwrap();
        // Each pair is asked with each summary first.
        let mut orders: Vec<(String, String)> = reqs
            .iter()
            .map(|r| pair_of(r["messages"][0]["content"].as_str().unwrap()))
            .collect();
        for (a, b) in orders.clone() {
            assert!(orders.contains(&(b, a)));
        }
        orders.dedup();
        let content = reqs[0]["messages"][0]["content"].as_str().unwrap();
        assert!(content.contains("Reviews:\n1. ") && content.contains("<preference>"));
    }
    let m = s.stage_metrics("judge");
    let get = |k: &str| m[k].as_f64().unwrap_or_else(|| panic!("no `{k}` in {m}"));
    for model in ["ppo", "sft2"] {
        let expected = longer_scores(&rows, model);
        let rate = get(&format!("{model}.win_rate_vs_sft"));
        assert!(
            (rate - mean(&expected)).abs() < 1e-12,
            "{model}: {rate} vs {expected:?}"
        );
        let count = |v: f64| expected.iter().filter(|x| **x == v).count() as f64;
        assert_eq!(get(&format!("{model}.wins_vs_sft")), count(1.0));
        assert_eq!(get(&format!("{model}.ties_vs_sft")), count(0.5));
        assert_eq!(get(&format!("{model}.losses_vs_sft")), count(0.0));
        let (lo, hi) = (
            get(&format!("{model}.win_rate_vs_sft.low")),
            get(&format!("{model}.win_rate_vs_sft.high")),
        );
        assert!(
            lo <= rate && rate <= hi && lo >= 0.0 && hi <= 1.0,
            "{lo} {rate} {hi}"
        );
        assert_eq!(get(&format!("{model}.order_agreement_vs_sft")), 1.0);
    }
    assert_eq!(get("unparsed_answers"), 0.0);
    // Some differing pairs were ties by the judge's own answer, not only identical ones.
    let answered_ties = ["ppo", "sft2"]
        .iter()
        .flat_map(|m| rows.iter().map(move |r| (m, r)))
        .filter(|(m, r)| r[**m].trim() != r["sft"].trim() && longer_rule(&r[**m], &r["sft"]) == 0.5)
        .count();
    assert!(answered_ties > 0, "no pair was judged a tie");
    let shown = s.ok(&["show", "exp.kdl"]);
    assert!(
        shown.contains("order agreement") && shown.contains("95% low"),
        "{shown}"
    );

    // Another stage asking the same prompts (another key: another bootstrap) asks nothing.
    s.experiment(
        &(pipeline()
            + &judge_stage("judge", port, "m", "concurrency 3")
            + &judge_stage("judge-again", port, "m", "bootstrap 500")),
    );
    s.ok(&["run", "exp.kdl"]);
    assert_eq!(
        server.count(),
        asked,
        "answers are remembered across stages"
    );
    assert_eq!(
        s.stage_metrics("judge-again")["answers_reused"].as_f64(),
        Some(asked as f64)
    );
    server.stop();

    // A server that dies after 3 answers: those are kept, the rerun asks only the rest.
    let flaky = serve(0, 3, longer);
    let flaky_port = flaky.port;
    s.experiment(
        &(pipeline() + &judge_stage("flaky", flaky_port, "other", "retries 0\n    concurrency 1")),
    );
    let out = s.run(&["run", "exp.kdl"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("3 answers received in this run are saved"),
        "{err}"
    );
    assert!(
        err.contains(&format!("cannot reach http://127.0.0.1:{flaky_port}")),
        "{err}"
    );
    flaky.stop();
    let back = serve(flaky_port, 10_000, longer);
    s.ok(&["run", "exp.kdl"]);
    assert_eq!(back.count(), asked - 3);
    assert_eq!(
        s.stage_metrics("flaky")["answers_reused"].as_f64(),
        Some(3.0)
    );
    back.stop();
}

#[test]
fn a_judge_biased_to_one_position_cancels_out_and_untagged_answers_are_unparsed() {
    let s = Sandbox::new("preference-biased");
    // A judge that always picks the first summary: both orders cancel it out.
    let biased = serve(0, 10_000, first);
    s.experiment(&(pipeline() + &judge_stage("biased", biased.port, "m", "")));
    s.ok(&["run", "exp.kdl"]);
    let rows = summaries(&s);
    assert!(differing(&rows, "sft2") > 0);
    let m = s.stage_metrics("biased");
    assert_eq!(m["ppo.win_rate_vs_sft"].as_f64(), Some(0.5));
    assert_eq!(m["sft2.first_position_share_vs_sft"].as_f64(), Some(1.0));
    assert_eq!(m["sft2.order_agreement_vs_sft"].as_f64(), Some(0.0));
    biased.stop();

    // Answers without a verdict: the other order decides alone; none counts as unjudged.
    let sloppy_server = serve(0, 10_000, sloppy);
    s.experiment(&(pipeline() + &judge_stage("sloppy", sloppy_server.port, "m", "")));
    s.ok(&["run", "exp.kdl"]);
    let m = s.stage_metrics("sloppy");
    let longer_wins = |model: &str| {
        longer_scores(&rows, model)
            .iter()
            .filter(|x| **x == 1.0)
            .count()
            + longer_scores(&rows, model)
                .iter()
                .filter(|x| **x == 0.0)
                .count()
    };
    // Every decisive pair has one order with A longer: one unparsed answer each.
    let expected_unparsed = (longer_wins("ppo") + longer_wins("sft2")) as f64;
    assert_eq!(m["unparsed_answers"].as_f64(), Some(expected_unparsed));
    let rate = m["sft2.win_rate_vs_sft"].as_f64().unwrap();
    assert!((rate - mean(&longer_scores(&rows, "sft2"))).abs() < 1e-12);
    sloppy_server.stop();
}

#[test]
fn offline_the_higher_reward_wins_as_eval_counts_it() {
    let s = Sandbox::new("preference-rm");
    let body = pipeline()
        + r#"
stage "naive" kind="reward-model" {
    input "train" "val"
    method "naive-mean"
}
stage "prefer" kind="preference" {
    input "eval" "val" "phi" "naive"
    method "reward-model"
    models "ppo"
}
"#;
    s.experiment(&body);
    s.ok(&["run", "exp.kdl"]);
    let eval = s.stage_metrics("eval");
    let m = s.stage_metrics("prefer");
    // eval's win rate under φ counts ties half, as the preference does.
    assert_eq!(
        m["ppo.win_rate_vs_sft.phi"].as_f64(),
        eval["ppo.win_rate_vs_sft"].as_f64()
    );
    assert_eq!(m["ppo.win_rate_vs_sft"], m["ppo.win_rate_vs_sft.phi"]);
    assert!(m["ppo.win_rate_vs_sft.naive"].as_f64().is_some());
    assert!(
        m.get("sft2.win_rate_vs_sft").is_none(),
        "only `models` are judged"
    );
    let n = ["wins", "ties", "losses"]
        .iter()
        .map(|k| m[format!("ppo.{k}_vs_sft.phi")].as_f64().unwrap())
        .sum::<f64>();
    assert_eq!(n, 8.0);

    // A model the evaluation lacks is named, with those it has; a missing endpoint fails the plan.
    s.experiment(&body.replace(r#"models "ppo""#, r#"models "ppo-typo""#));
    let out = s.run(&["run", "exp.kdl"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no model `ppo-typo`") && err.contains("sft, ppo, sft2"),
        "{err}"
    );
    s.experiment(&body.replace("method \"reward-model\"", "method \"llm-judge\""));
    let out = s.run(&["plan", "exp.kdl"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("needs `endpoint`"),
        "{err}"
    );
}
