//! DPO and the critic-free online methods (GRPO, RLOO, REINFORCE++) as
//! stages on a tiny pipeline of shipped data, for BART and a decoder-only
//! model: DPO's first loss is ln 2 with the policy as its own reference and
//! its accuracy on the training pairs rises above 0.9; their models feed
//! `eval` and `preference`; a killed GRPO run resumes to the identical
//! policy; groups share the prompt's pass; bad settings fail at plan time.

mod common;
use common::*;

use efrlhf::ml::bart::{Bart, BartConfig};
use efrlhf::ml::causal::{CausalConfig, CausalLm, Family, Sizes};
use efrlhf::ml::decoding::GenerateOptions;
use efrlhf::ml::lm::LanguageModel;
use efrlhf::rng::Rng;

/// [`tiny_summarizer`] (BART, or a decoder-only `architecture`), φ on the
/// stored scores, then `body`.
fn experiment(s: &Sandbox, architecture: &str, body: &str) {
    let sft = tiny_summarizer().replace(
        "    d-model 32\n",
        &format!("    architecture \"{architecture}\"\n    d-model 32\n"),
    );
    s.experiment(&format!(
        r#"{sft}stage "phi" kind="reward-model" {{
    input "train" "val"
    hidden 6 4 2
    epochs 5
}}
{body}"#
    ));
}

const DPO: &str = r#"
stage "dpo" kind="dpo" {
    input "sft" "train" "val"
    beta 0.1
    epochs 6
    batch 8
    lr 0.003
    warmup 0.0
    max-source 64
    max-target 32
    checkpoint-every 0
}
"#;

fn number(m: &serde_json::Value, k: &str) -> f64 {
    m[k].as_f64()
        .unwrap_or_else(|| panic!("no metric `{k}`: {m}"))
}

/// A GRPO run of three updates on the tiny pipeline.
const GRPO: &str = r#"
stage "grpo" kind="grpo" {
    input "sft" "phi" "train"
    updates 3
    batch 2
    group-size 4
    lr 0.001
    beta 0.04
    max-source 64
    max-new-tokens 16
    checkpoint-every 0
}
"#;

/// The tiny SFT stage once more under another name: the same key, the same weights.
fn sft_copy() -> String {
    let sft = tiny_summarizer();
    let start = sft.find("stage \"sft\"").unwrap();
    sft[start..].replace("stage \"sft\"", "stage \"sft-copy\"")
}

#[test]
fn dpo_and_grpo_train_both_families_and_dpo_starts_at_ln2_and_learns_its_pairs() {
    for arch in ["bart", "qwen2"] {
        let s = Sandbox::new(&format!("dpo-{arch}"));
        let reference = if arch == "bart" {
            // The reference as an input: an identical SFT model must give the identical run.
            sft_copy().replace("d-model 32", "architecture \"bart\"\n    d-model 32")
                + &DPO.replace("stage \"dpo\"", "stage \"dpo-ref\"").replace(
                    "input \"sft\" \"train\" \"val\"",
                    "input \"sft\" \"train\" \"val\"\n    input \"sft-copy\" role=\"reference\"",
                )
        } else {
            String::new()
        };
        experiment(&s, arch, &format!("{DPO}{GRPO}{reference}"));
        s.ok(&["run", "exp.kdl"]);
        let m = s.stage_metrics("dpo");
        // The reference is the policy as it starts: every Δ is 0 at the first step.
        let first = number(&m, "loss_first");
        assert!((first - std::f64::consts::LN_2).abs() < 1e-4, "{arch}: {m}");
        // 64 training products, one human pair each.
        assert_eq!(number(&m, "pairs"), 64.0, "{m}");
        assert!(number(&m, "train_rewards/accuracies") > 0.9, "{arch}: {m}");
        assert!(number(&m, "train_rewards/margins") > 0.0, "{arch}: {m}");
        assert!(number(&m, "eval_rewards/accuracies").is_finite(), "{m}");
        // The curve under TRL's names, one line per step (6 epochs of 8 steps).
        let art = s.output_of("dpo");
        let curve = std::fs::read_to_string(art.join("dpo_curve.jsonl")).unwrap();
        let lines: Vec<serde_json::Value> = curve
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 48);
        for k in [
            "loss",
            "rewards/chosen",
            "rewards/rejected",
            "rewards/accuracies",
            "rewards/margins",
            "logps/chosen",
            "logps/rejected",
        ] {
            assert!(lines[0][k].is_number(), "{k}: {}", lines[0]);
        }
        // The implicit rewards are β times the log-ratios: they start at 0.
        assert!(lines[0]["rewards/chosen"].as_f64().unwrap().abs() < 1e-3);
        if arch == "bart" {
            assert_eq!(
                s.stage_metrics("dpo-ref"),
                m,
                "the reference input gives the same run"
            );
        }
        let g = s.stage_metrics("grpo");
        assert_eq!(number(&g, "updates"), 3.0, "{arch}: {g}");
        assert!(
            (0.0..1.0).contains(&number(&g, "reward_first")),
            "sigmoid(φ): {g}"
        );
        assert!(number(&g, "kl_last") >= 0.0, "{arch}: {g}");
    }
}

#[test]
fn grpo_rloo_and_dpo_models_feed_eval_and_preference() {
    let s = Sandbox::new("algorithms");
    experiment(
        &s,
        "bart",
        &format!(
            r#"{DPO}{GRPO}
stage "rloo" kind="grpo" {{
    input "sft" "phi" "train"
    advantage "rloo"
    kl "reward"
    updates 3
    batch 2
    group-size 2
    minibatch 2
    lr 0.001
    beta 0.05
    max-source 64
    max-new-tokens 16
    checkpoint-every 0
}}
stage "naive" kind="reward-model" {{
    input "train" "val"
    method "naive-mean"
}}
stage "weighted" kind="grpo" {{
    input "sft" "phi" "naive" "train"
    reward-weights 1.0 0.5
    updates 2
    batch 2
    group-size 2
    lr 0.001
    max-source 64
    max-new-tokens 16
    checkpoint-every 0
}}
stage "eval" kind="eval" {{
    input "sft" "dpo" "grpo" "rloo" "phi" "val"
    split "validation"
    reference "preferred"
    max-products 4
    max-source 64
    max-new-tokens 16
}}
stage "prefer" kind="preference" {{
    input "eval" "phi" "val"
    bootstrap 100
}}
"#
        ),
    );
    s.ok(&["run", "exp.kdl"]);
    for stage in ["grpo", "rloo"] {
        let m = s.stage_metrics(stage);
        assert_eq!(number(&m, "updates"), 3.0, "{m}");
        let r = number(&m, "reward_first");
        assert!((0.0..1.0).contains(&r), "sigmoid(φ): {m}");
        assert!(number(&m, "kl_last") >= 0.0, "{m}");
    }
    let art = s.output_of("grpo");
    let curve = std::fs::read_to_string(art.join("grpo_curve.jsonl")).unwrap();
    let first: serde_json::Value = serde_json::from_str(curve.lines().next().unwrap()).unwrap();
    for k in [
        "reward",
        "reward_std",
        "frac_reward_zero_std",
        "rewards/phi/mean",
        "kl",
        "clip_ratio",
        "completion_length",
    ] {
        assert!(first[k].is_number(), "{k}: {first}");
    }
    // With one reward model of weight 1 the reward is that model's.
    assert_eq!(first["reward"], first["rewards/phi/mean"]);
    // Two reward models weighed 1 and 0.5: the reward is their weighted sum.
    let art = s.output_of("weighted");
    for line in std::fs::read_to_string(art.join("grpo_curve.jsonl"))
        .unwrap()
        .lines()
    {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let f = |k: &str| v[k].as_f64().unwrap_or_else(|| panic!("{k}: {v}"));
        let expected = f("rewards/phi/mean") + 0.5 * f("rewards/naive/mean");
        assert!((f("reward") - expected).abs() < 1e-9, "{v}");
        assert!(f("rewards/naive/mean") > 0.0, "{v}");
    }
    let ev = s.stage_metrics("eval");
    for model in ["dpo", "grpo", "rloo"] {
        for k in ["rougeL", "reward", "win_rate_vs_sft", "kl_vs_sft"] {
            assert!(
                number(&ev, &format!("{model}.{k}")).is_finite(),
                "{model}.{k}: {ev}"
            );
        }
    }
    let shown = s.ok(&["show", "exp.kdl"]);
    assert!(
        shown.contains("rloo") && shown.contains("win rate"),
        "{shown}"
    );
}

/// Runs `body` whole, and again killed after its first checkpoint and
/// resumed; the two end with the identical model and curve.
fn killed_and_resumed_is_identical(name: &str, body: &str, curve: &str, progress: &str) {
    let whole = Sandbox::new(&format!("{name}-whole"));
    experiment(&whole, "bart", body);
    whole.ok(&["run", "exp.kdl"]);
    let s = Sandbox::new(&format!("{name}-killed"));
    experiment(&s, "bart", body);
    s.kill_run_when(|| s.has_checkpoint_with(progress));
    s.ok(&["run", "exp.kdl"]);
    let logs = s.all_logs();
    assert!(
        logs.contains("resuming from the checkpoint after"),
        "{name}: {logs}"
    );
    let (a, b) = (whole.artifact_with(curve), s.artifact_with(curve));
    assert_eq!(
        std::fs::read(a.join("model/model.safetensors")).unwrap(),
        std::fs::read(b.join("model/model.safetensors")).unwrap(),
        "{name}"
    );
    assert_eq!(
        std::fs::read_to_string(a.join(curve)).unwrap(),
        std::fs::read_to_string(b.join(curve)).unwrap(),
        "{name}"
    );
}

#[test]
fn killed_grpo_and_dpo_runs_resume_from_their_checkpoints_to_the_identical_policy() {
    let grpo = r#"
stage "grpo" kind="grpo" {
    input "sft" "phi" "train"
    updates 8
    batch 2
    group-size 4
    minibatch 4
    iterations 2
    lr 0.001
    beta 0.04
    reward-norm "normalize"
    max-source 64
    max-new-tokens 16
    checkpoint-every 2
}
"#;
    killed_and_resumed_is_identical("grpo", grpo, "grpo_curve.jsonl", "\"update\"");
    let dpo = DPO.replace("checkpoint-every 0", "checkpoint-every 4");
    killed_and_resumed_is_identical("dpo", &dpo, "dpo_curve.jsonl", "\"step\"");
}

#[test]
fn identical_summaries_in_every_group_warn_and_bad_settings_fail_at_plan_time() {
    // Near-greedy sampling: the four summaries of a product are the same,
    // so every group's rewards are equal and the update teaches nothing.
    let s = Sandbox::new("grpo-flat");
    experiment(
        &s,
        "bart",
        r#"
stage "grpo" kind="grpo" {
    input "sft" "phi" "train"
    updates 2
    batch 2
    group-size 4
    lr 0.001
    temperature 0.01
    max-source 64
    max-new-tokens 16
    checkpoint-every 0
}
"#,
    );
    s.ok(&["run", "exp.kdl"]);
    assert_eq!(
        number(&s.stage_metrics("grpo"), "frac_reward_zero_std_mean"),
        1.0
    );
    let logs = s.all_logs();
    assert!(logs.contains("every summary got the same reward"), "{logs}");

    for (setting, expect) in [
        ("group-size 1", "at least 2"),
        ("minibatch 3", "do not split into minibatches of 3"),
    ] {
        let bad = Sandbox::new("grpo-bad");
        experiment(
            &bad,
            "bart",
            &format!(
                "stage \"grpo\" kind=\"grpo\" {{\n    input \"sft\" \"phi\" \"train\"\n    {setting}\n}}\n"
            ),
        );
        let out = bad.run(&["plan", "exp.kdl"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(expect),
            "{setting}: {err}"
        );
        assert!(err.contains("exp.kdl"), "points into the file: {err}");
    }
    // DPO on a dataset without pairs: the validation products of a split that has none.
    let nopairs = Sandbox::new("dpo-nopairs");
    experiment(
        &nopairs,
        "bart",
        &DPO.replace("    beta 0.1\n", "    beta 0.1\n    train-split \"test\"\n"),
    );
    let out = nopairs.run(&["run", "exp.kdl"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("no preference pairs"),
        "{err}"
    );
}

/// Decodes `sources` with `copies` sequences each, and each source repeated `copies` times.
fn copies_and_repeats<M: LanguageModel>(model: &M, sources: &[Vec<u32>], sample: bool) {
    let dev = efrlhf::ml::device(None, 0).unwrap();
    let copies = 3;
    let opts = GenerateOptions {
        sample,
        ..GenerateOptions::greedy(8)
    };
    let grouped = model.generate(
        sources,
        &GenerateOptions {
            num_return_sequences: copies,
            ..opts.clone()
        },
        sources.len(),
        &mut Rng::new(9),
        &dev,
    );
    let repeated: Vec<Vec<u32>> = sources
        .iter()
        .flat_map(|s| std::iter::repeat_n(s.clone(), copies))
        .collect();
    let plain = model.generate(&repeated, &opts, repeated.len(), &mut Rng::new(9), &dev);
    assert_eq!(grouped, plain, "{}", model.architecture());
}

#[test]
fn copies_of_a_prompt_share_its_pass_and_decode_as_repeated_prompts() {
    let dev = efrlhf::ml::device(None, 11).unwrap();
    let sources: Vec<Vec<u32>> = vec![vec![0, 5, 9, 7, 2], vec![0, 12, 2], vec![0, 3, 4, 2]];
    let mut cfg = BartConfig::small(40, 16, 1, 2);
    cfg.init_std = 0.3;
    let bart = Bart::new(&cfg, &dev).unwrap();
    let sizes = Sizes {
        vocab: 40,
        hidden: 16,
        intermediate: 32,
        layers: 2,
        heads: 4,
        kv_heads: 2,
        max_positions: 64,
        bos: None,
        eos: 2,
        pad: Some(1),
    };
    let causal = CausalLm::new(&CausalConfig::new(Family::Qwen2, &sizes).unwrap(), &dev).unwrap();
    for sample in [false, true] {
        copies_and_repeats(&bart, &sources, sample);
        copies_and_repeats(&causal, &sources, sample);
    }
}
