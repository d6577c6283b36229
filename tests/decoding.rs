//! Decoding settings reach the summaries: `eval` and SFT validation decode
//! with beam search when asked; SFT saves the decoding it validated with as
//! the model's `generation_config.json`; `eval` decodes a model as that file
//! says unless the stage sets its own; beam search with sampling is refused
//! before anything runs. Beam search itself equals `transformers` token for
//! token (tests/bart.rs).

mod common;
use common::*;

use serde_json::Value as Json;

/// `eval` of `sft` on 4 validation products, without sampling, plus `extra` settings.
fn eval_stage(id: &str, extra: &str) -> String {
    format!(
        r#"stage "{id}" kind="eval" {{
    input "sft" "val"
    split "validation"
    reference "preferred"
    max-products 4
    max-source 64
    max-new-tokens 16
    sample #false
    {extra}
}}
"#
    )
}

/// The summaries of eval stage `id` (one per product).
fn summaries(s: &Sandbox, id: &str) -> Vec<String> {
    let key = s.key_of(id);
    let rec: Json = serde_json::from_str(&s.read(&format!("cache/records/{key}.json")))
        .unwrap_or_else(|_| panic!("no record of {id}"));
    let dir = s.path(&format!(
        "cache/artifacts/{}",
        rec["run"]["output"].as_str().unwrap()
    ));
    std::fs::read_to_string(dir.join("summaries.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: Json = serde_json::from_str(l).unwrap();
            v["summaries"]["sft"].as_str().unwrap().to_string()
        })
        .collect()
}

const BEAMS: &str = r#"num-beams 3; length-penalty 2.0; early-stopping "true";"#;

#[test]
fn sft_saves_its_decoding_and_eval_follows_it_unless_told_otherwise() {
    // SFT validated with beams: its model's default decoding.
    let beamed = Sandbox::new("decoding-beamed");
    let sft_with_beams = tiny_summarizer().replace(
        "    checkpoint-every 0\n}",
        &format!("    checkpoint-every 0\n    {BEAMS}\n}}"),
    );
    beamed.experiment(&format!(
        "{sft_with_beams}{}{}",
        eval_stage("by-model", ""),
        eval_stage("greedy", "num-beams 1")
    ));
    beamed.ok(&["run", "exp.kdl"]);
    let folder = beamed.artifact_with("model/generation_config.json");
    let saved: Json = serde_json::from_str(
        &std::fs::read_to_string(folder.join("model/generation_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(saved["num_beams"], 3);
    assert_eq!(saved["length_penalty"], 2.0);
    assert_eq!(saved["early_stopping"], true);
    assert_eq!(saved["eos_token_id"], 2);
    assert!(saved.get("max_new_tokens").is_none(), "{saved}");

    // The same SFT validated greedily; eval told the same beams explicitly.
    let plain = Sandbox::new("decoding-plain");
    plain.experiment(&format!(
        "{}{}{}",
        tiny_summarizer(),
        eval_stage("explicit", BEAMS),
        eval_stage("greedy", "")
    ));
    plain.ok(&["run", "exp.kdl"]);
    let weights = |s: &Sandbox| {
        std::fs::read(
            s.artifact_with("model/model.safetensors")
                .join("model/model.safetensors"),
        )
        .unwrap()
    };
    assert!(
        weights(&beamed) == weights(&plain),
        "validation decoding changed training"
    );
    let by_model = summaries(&beamed, "by-model");
    assert_eq!(by_model, summaries(&plain, "explicit"));
    // `num-beams 1` is greedy even on a model that defaults to beams.
    assert_eq!(summaries(&beamed, "greedy"), summaries(&plain, "greedy"));
    assert_ne!(
        by_model,
        summaries(&plain, "greedy"),
        "beam search gave the greedy summaries"
    );
}

#[test]
fn beam_search_with_sampling_is_refused_before_anything_runs() {
    let s = Sandbox::new("decoding-refused");
    s.experiment(&format!(
        "{}{}",
        tiny_summarizer(),
        eval_stage("eval", "num-beams 3").replace("sample #false", "")
    ));
    let out = s.run(&["run", "exp.kdl"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("sample #false"), "{err}");
    assert!(err.contains("exp.kdl"), "{err}");
    assert!(
        s.calls().is_empty() && !s.path("cache/artifacts").exists() || {
            std::fs::read_dir(s.path("cache/artifacts")).map_or(true, |mut d| d.next().is_none())
        }
    );
}
