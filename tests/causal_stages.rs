//! Decoder-only models through the stages: a Llama-architecture summarizer
//! trained from scratch through SFT, φ, PPO and eval; SFT from a
//! pretrained causal folder with a chat template; prompts cut to fit and
//! prompt errors that point at their line.

mod common;
use common::*;

use efrlhf::ml::causal::{Family, io};

/// The tiny pipeline of the tests with `architecture "llama"` in SFT.
fn llama_pipeline() -> String {
    tiny_rlhf().replace(
        "    d-model 32\n    layers 1\n    heads 2\n",
        "    architecture \"llama\"\n    d-model 32\n    layers 1\n    heads 4\n    kv-heads 2\n",
    )
}

#[test]
fn a_llama_summarizer_goes_through_sft_ppo_and_eval() {
    let s = Sandbox::new("causal-pipeline");
    s.experiment(&llama_pipeline());
    s.ok(&["run", "exp.kdl"]);
    let sft = s.stage_metrics("sft");
    let f = |m: &serde_json::Value, k: &str| {
        m[k].as_f64()
            .unwrap_or_else(|| panic!("no metric {k}: {m}"))
    };
    // It learned the summaries (the loss is over summary tokens only): one
    // epoch of 8 steps, 5.99 -> 5.65 here.
    assert!(
        f(&sft, "val_loss_last") < f(&sft, "val_loss_initial") - 0.2,
        "{sft}"
    );
    // 64 products' prompts: max-source 64 cuts the reviews of most.
    assert!(f(&sft, "prompts_cut") > 32.0, "{sft}");
    // A Hugging Face folder of the Llama architecture, tied, loadable.
    let folder = s.artifact_with("model/config.json").join("model");
    let (model, report) = io::load(&folder, &efrlhf::ml::device(None, 0).unwrap()).unwrap();
    assert!(report.unused.is_empty(), "{:?}", report.unused);
    assert_eq!(model.config.family, Family::Llama);
    assert_eq!(
        (
            model.config.num_attention_heads,
            model.config.num_key_value_heads
        ),
        (4, 2)
    );
    let names = std::fs::read_to_string(folder.join("config.json")).unwrap();
    assert!(names.contains("\"LlamaForCausalLM\""), "{names}");
    // PPO ran its updates on the causal policy and eval measured both models.
    let ppo = s.stage_metrics("ppo");
    assert_eq!(f(&ppo, "updates"), 3.0, "{ppo}");
    assert!(f(&ppo, "kl_last").is_finite(), "{ppo}");
    let eval = s.stage_metrics("eval");
    assert!(eval["ppo.kl_vs_sft"].as_f64().is_some(), "{eval}");
    assert!(eval["sft.prompts_cut"].as_f64().is_some(), "{eval}");
    assert!(s.all_logs().contains("sft (llama)"));
}

#[test]
fn sft_from_a_pretrained_causal_folder_keeps_its_chat_template() {
    let s = Sandbox::new("causal-pretrained");
    let fixture =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/causal/llama");
    s.experiment(&format!(
        r#"
stage "train" kind="dataset" {{
    source "opinpref" path="{p}"
    split "train"
    limit 24
}}
stage "sft" kind="sft" {{
    input "train"
    pretrained "{f}"
    epochs 1
    lr 0.001
    batch 8
    max-source 224
    max-target 24
    train-split "train"
    validation-split "train"
    val-products 4
    checkpoint-every 0
}}
"#,
        p = data("opinpref").display(),
        f = fixture.display()
    ));
    s.ok(&["run", "exp.kdl"]);
    let folder = s.artifact_with("model/config.json").join("model");
    // The chat template and tokenizer config came along: the folder is
    // ready for `apply_chat_template` (and for PPO and eval here).
    assert_eq!(
        std::fs::read_to_string(folder.join("chat_template.jinja")).unwrap(),
        std::fs::read_to_string(fixture.join("chat_template.jinja")).unwrap()
    );
    assert!(folder.join("tokenizer_config.json").is_file());
    let m = s.stage_metrics("sft");
    assert_eq!(m["train_examples"].as_f64(), Some(24.0), "{m}");
    assert!(
        m["val_loss_last"].as_f64() < m["val_loss_initial"].as_f64(),
        "{m}"
    );
    // The model's own EOS list (generation_config.json) is kept.
    let generation = std::fs::read_to_string(folder.join("generation_config.json")).unwrap();
    assert!(generation.contains("513"), "{generation}");
}

#[test]
fn a_prompt_that_does_not_render_points_at_its_line() {
    let s = Sandbox::new("causal-bad-prompt");
    let body = llama_pipeline().replace(
        "    architecture \"llama\"\n",
        "    architecture \"llama\"\n    prompt \"Summarize:\\n{% for r in reviews %}{{ r }}\"\n",
    );
    s.experiment(&body);
    let out = s.run(&["run", "exp.kdl"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).to_string() + &s.all_logs();
    assert!(err.contains("`prompt` line 2"), "{err}");
}

#[test]
fn a_reward_model_on_a_causal_backbone_trains_and_scores_ppo_rollouts() {
    // φ replaced by a text reward model on the causal fixture (a Llama with
    // a ChatML template): TRL's RewardTrainer, then PPO and eval read it.
    let s = Sandbox::new("causal-rm");
    let fixture =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/causal/llama");
    let rm = format!(
        "stage \"phi\" kind=\"reward-model\" {{\n    input \"train\" \"val\"\n    method \"text\"\n    backbone \"{}\"\n    max-tokens 192\n    train-pairs 24\n}}\n",
        fixture.display()
    );
    let body = tiny_rlhf();
    let start = body.find("stage \"phi\"").unwrap();
    let end = start + body[start..].find("}\n").unwrap() + 2;
    s.experiment(&format!("{}{rm}{}", &body[..start], &body[end..]));
    s.ok(&["run", "exp.kdl"]);
    let m = s.stage_metrics("phi");
    let acc = m["accuracy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&acc), "{m}");
    assert!(m["parameters"].as_f64().unwrap() > 60_000.0, "{m}");
    let folder = s.artifact_with("reward.json").join("model");
    let config = std::fs::read_to_string(folder.join("config.json")).unwrap();
    assert!(
        config.contains("\"LlamaForSequenceClassification\""),
        "{config}"
    );
    assert!(folder.join("chat_template.jinja").is_file());
    // PPO's rollouts and eval's summaries were scored by it: rewards are sigmoids.
    let eval = s.stage_metrics("eval");
    let reward = eval["ppo.reward"]
        .as_f64()
        .unwrap_or_else(|| panic!("{eval}"));
    assert!(reward > 0.0 && reward < 1.0, "{eval}");
    assert!(
        s.all_logs()
            .contains("text reward model on a llama backbone")
    );
}

#[test]
fn a_causal_checkpoint_as_a_model_stage_is_evaluated_as_is() {
    // The `model` kind takes a Llama folder (here the fixture, with its chat
    // template) and `eval` summarizes with it through the template.
    let s = Sandbox::new("causal-model-kind");
    let fixture =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/causal/llama");
    s.experiment(&format!(
        r#"
stage "val" kind="dataset" {{
    source "opinpref" path="{p}"
    split "validation"
    limit 3
}}
stage "llama" kind="model" {{
    pretrained "{f}"
}}
stage "ev" kind="eval" {{
    input "llama" "val"
    split "validation"
    reference "preferred"
    sample #false
    max-new-tokens 8
    max-source 200
}}
"#,
        p = data("opinpref").display(),
        f = fixture.display()
    ));
    s.ok(&["run", "exp.kdl"]);
    let m = s.stage_metrics("llama");
    // 1000 x 64 embedding (tied) + 2 layers + the final norm.
    assert_eq!(m["parameters"].as_f64(), Some(103_104.0), "{m}");
    let ev = s.stage_metrics("ev");
    assert!(ev["llama.length"].as_f64().is_some(), "{ev}");
    // Of 3 products' prompts, those whose reviews did not fit in 200 tokens.
    let cut = ev["llama.prompts_cut"].as_f64().unwrap();
    assert!((0.0..=3.0).contains(&cut), "{ev}");
}
