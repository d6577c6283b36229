//! The featurize stage kind: lexical and distilled scores on real data, and
//! the LLM judge end to end against a small OpenAI-compatible server that the
//! test runs on 127.0.0.1.

mod common;
use common::chat::serve;
use common::*;

use std::path::Path;

/// Sloppy but parseable answers, except language correctness, which never has a tag.
fn judge(prompt: &str) -> String {
    if prompt.contains("quality of an opinion summary of product reviews: hallucination.") {
        "Let me check each claim.\n<SCORE> 4 / 5 </SCORE>\nHope this helps!".into()
    } else if prompt.contains("reviews: language correctness.") {
        "The language is fine; I would give it a 3.".into()
    } else {
        "Reasoning first. <score>2.5</score>".into()
    }
}

fn experiment(s: &Sandbox, stage: &str, port: u16, model: &str, extra: &str) {
    s.experiment(&format!(
        r#"
stage "prefs" kind="dataset" {{
    source "opinpref" path="{}"
    limit 2
}}
stage "{stage}" kind="featurize" {{
    input "prefs"
    method "llm-judge"
    endpoint "http://127.0.0.1:{port}/v1"
    model "{model}"
    timeout 10.0
    {extra}
}}
"#,
        data("opinpref/annotations-valid.jsonl").display()
    ));
}

#[test]
fn llm_judge_end_to_end_with_cache_and_server_failure() {
    let s = Sandbox::new("judge");
    let server = serve(0, 1000, judge);
    experiment(&s, "judge", server.port, "test-model", "concurrency 3");
    s.ok(&["run", "exp.kdl"]);
    // 2 products x 2 summaries x 7 dimensions.
    assert_eq!(server.count(), 28);
    {
        let reqs = server.requests.lock().unwrap();
        for r in reqs.iter() {
            assert_eq!(r["model"], "test-model");
            assert_eq!(r["messages"][0]["role"], "user");
            let content = r["messages"][0]["content"].as_str().unwrap();
            assert!(
                content.contains("Reviews:\n1. ")
                    && content.contains("Summary:\n")
                    && content.contains("<score>"),
                "{content}"
            );
        }
        let dims = reqs
            .iter()
            .filter(|r| {
                r["messages"][0]["content"]
                    .as_str()
                    .unwrap()
                    .contains("reviews: hallucination.")
            })
            .count();
        assert_eq!(dims, 4);
    }
    let m = s.stage_metrics("judge");
    assert_eq!(
        (
            m["requests"].as_f64(),
            m["parse_errors"].as_f64(),
            m["answers_reused"].as_f64()
        ),
        (Some(28.0), Some(4.0), Some(0.0))
    );
    // The scores: hallucination 4 from the sloppy tag, 2.5 elsewhere, language correctness missing.
    let out = s.ok(&["show", "exp.kdl", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let dir = v["stages"][1]["output"].as_str().unwrap().to_string();
    let products = efrlhf::stages::dataset::read_products(Path::new(&dir)).unwrap();
    let sc = products[0].candidates[1].scores.as_ref().unwrap();
    assert_eq!((sc["hallucination"], sc["relevance"]), (4.0, 2.5));
    assert!(!sc.contains_key("language-correctness"));

    // Another stage (another key) with the same prompts asks nothing.
    experiment(
        &s,
        "judge-again",
        server.port,
        "test-model",
        "concurrency 2",
    );
    s.ok(&["run", "exp.kdl"]);
    assert_eq!(
        server.count(),
        28,
        "answers are cached across stages and experiments"
    );
    assert_eq!(
        s.stage_metrics("judge-again")["answers_reused"].as_f64(),
        Some(28.0)
    );
    let port = server.port;
    server.stop();

    // Nothing listening: a clear error.
    experiment(
        &s,
        "judge-down",
        port,
        "other-model",
        "retries 1\n    concurrency 1",
    );
    let out = s.run(&["run", "exp.kdl"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "cannot reach http://127.0.0.1:{port}/v1/chat/completions"
        )) && err.contains("is the server running?"),
        "{err}"
    );

    // A server that dies after 10 answers: those 10 are kept, and the rerun asks only for the other 18.
    let flaky = serve(port, 10, judge);
    experiment(
        &s,
        "judge-flaky",
        port,
        "flaky-model",
        "retries 0\n    concurrency 1",
    );
    let out = s.run(&["run", "exp.kdl"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("10 answers received in this run are saved")
    );
    flaky.stop();
    let back = serve(port, 1000, judge);
    s.ok(&["run", "exp.kdl"]);
    assert_eq!(back.count(), 18);
    assert_eq!(
        s.stage_metrics("judge-flaky")["answers_reused"].as_f64(),
        Some(10.0)
    );
    back.stop();
}

#[test]
fn lexical_and_distilled_scores_track_the_stored_ones() {
    let s = Sandbox::new("featurize-lexical");
    s.experiment(&format!(
        r#"
stage "prefs" kind="dataset" {{
    source "opinpref" path="{}"
}}
stage "summeval" kind="dataset" {{
    source "summeval-op" path="{}"
}}
stage "f" kind="featurize" {{
    input "prefs" "summeval"
}}
sweep "m" {{
    vary "f.method" "lexical" "distilled"
}}
"#,
        data("opinpref").display(),
        data("summeval_op").display()
    ));
    s.ok(&["run", "exp.kdl"]);
    for id in ["f[method=lexical]", "f[method=distilled]"] {
        let m = s.stage_metrics(id);
        assert_eq!(m["scored_validation_summaries"].as_f64(), Some(280.0));
        assert_eq!(m["human_rated_summaries"].as_f64(), Some(416.0));
        assert_eq!(m["summaries"].as_f64(), Some(1880.0 + 416.0));
        // Positive agreement with the stored LLM scores on the dimensions the
        // lexical rules target most directly.
        for key in [
            "aspect-coverage",
            "opinion-faithfulness",
            "opinion-coverage",
            "conciseness",
            "relevance",
            "hallucination",
        ] {
            let r = m[format!("spearman.{key}")].as_f64().unwrap();
            assert!(r > 0.2, "{id} {key}: {r}");
        }
        assert!(
            m["spearman_human.aspect-coverage"].as_f64().unwrap() > 0.3,
            "{id}"
        );
    }
    // from-data refuses summaries without stored scores.
    s.experiment(&format!(
        "stage \"summeval\" kind=\"dataset\" {{\n    source \"summeval-op\" path=\"{}\"\n}}\nstage \"f\" kind=\"featurize\" {{\n    input \"summeval\"\n    method \"from-data\"\n}}\n",
        data("summeval_op").display()
    ));
    let out = s.run(&["run", "exp.kdl"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no stored scores"));
}

#[test]
fn phi_on_lexical_scores_comes_within_five_points_of_phi_on_the_stored_scores() {
    // The acceptance target of the featurizers: φ (7-6-4-2-1) trained on the
    // lexical scores of the 800 training pairs, against φ on the stored LLM
    // scores, both on the 140 validation pairs, averaged over three seeds.
    let s = Sandbox::new("featurize-phi");
    s.experiment(&format!(
        r#"
stage "prefs" kind="dataset" {{
    source "opinpref" path="{}"
}}
stage "f" kind="featurize" {{
    input "prefs"
    method "lexical"
}}
stage "phi-lexical" kind="reward-model" {{
    input "f"
    hidden 6 4 2
}}
stage "phi-stored" kind="reward-model" {{
    input "prefs"
    hidden 6 4 2
}}
sweep "seed" {{
    vary "phi-lexical.seed" 1 2 3
    vary "phi-stored.seed" 1 2 3
}}
"#,
        data("opinpref").display()
    ));
    s.ok(&["run", "exp.kdl"]);
    let mean = |stage: &str| {
        (1..=3)
            .map(|k| {
                s.stage_metrics(&format!(
                    "{stage}[phi-lexical.seed={k},phi-stored.seed={k}]"
                ))["accuracy"]
                    .as_f64()
                    .unwrap()
            })
            .sum::<f64>()
            / 3.0
    };
    let (lexical, stored) = (mean("phi-lexical"), mean("phi-stored"));
    assert!(
        lexical >= stored - 0.05,
        "φ on lexical scores {lexical:.3}, on stored scores {stored:.3}"
    );
}
