//! The `ppo` stage on a tiny pipeline of shipped data: it runs online and
//! offline, only PPO reruns when its KL coefficient changes, and a killed
//! run resumes from its checkpoint to the identical policy.

mod common;
use common::*;

use std::path::{Path, PathBuf};

fn data(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data").join(rel)
}

fn experiment(s: &Sandbox, mode: &str, updates: usize, kl: f64) {
    s.experiment(&format!(
        r#"
stage "train" kind="dataset" {{
    source "opinpref" path="{p}"
    split "train"
    limit 64
}}
stage "tok" kind="tokenizer" {{
    input "train"
    vocab-size 400
}}
stage "sft" kind="sft" {{
    input "train" "tok"
    d-model 32
    layers 1
    heads 2
    epochs 1
    lr 0.003
    max-source 64
    max-target 32
    train-split "train"
    validation-split "train"
    val-products 8
    checkpoint-every 0
}}
stage "phi" kind="reward-model" {{
    input "train" "val"
    hidden 6 4 2
}}
stage "val" kind="dataset" {{
    source "opinpref" path="{p}"
    split "validation"
    limit 16
}}
stage "ppo" kind="ppo" {{
    input "sft" "phi" "train"
    mode "{mode}"
    updates {updates}
    batch 4
    minibatch 2
    kl-coef {kl}
    max-source 64
    max-new-tokens 24
    checkpoint-every 2
}}
stage "eval" kind="eval" {{
    input "sft" "ppo" "phi" "val"
    split "validation"
    reference "preferred"
    max-products 8
    max-source 64
    max-new-tokens 24
}}
"#,
        p = data("opinpref").display()
    ));
}

#[test]
fn online_and_offline_ppo_and_eval_run_and_a_kl_change_reruns_only_ppo_and_eval() {
    for mode in ["online", "offline"] {
        let s = Sandbox::new(&format!("ppo-{mode}"));
        experiment(&s, mode, 4, 0.2);
        s.ok(&["run", "exp.kdl"]);
        let m = s.stage_metrics("ppo");
        assert_eq!(m["updates"], 4.0, "{m}");
        for k in [
            "reward_first",
            "reward_last",
            "kl_last",
            "response_length_last",
        ] {
            assert!(m[k].as_f64().unwrap().is_finite(), "{k}: {m}");
        }
        let art = s.artifact_with("ppo_curve.jsonl");
        assert_eq!(
            std::fs::read_to_string(art.join("ppo_curve.jsonl"))
                .unwrap()
                .lines()
                .count(),
            4
        );
        let dev = efrlhf::ml::device(None, 0).unwrap();
        efrlhf::ml::bart::io::load(&art.join("model"), &dev).unwrap();
        assert!(art.join("value_head.safetensors").is_file());
        // The evaluation compares SFT and PPO, and `run` prints the table.
        let ev = s.stage_metrics("eval");
        assert_eq!(ev["products"], 8.0, "{ev}");
        for k in [
            "sft.rougeL",
            "ppo.rougeL",
            "sft.reward",
            "ppo.reward",
            "ppo.win_rate_vs_sft",
            "ppo.kl_vs_sft",
            "ppo.length",
        ] {
            assert!(ev[k].as_f64().unwrap().is_finite(), "{k}: {ev}");
        }
        let printed = s.ok(&["run", "exp.kdl"]);
        assert!(
            printed.contains("win rate") && printed.contains("ppo"),
            "{printed}"
        );
        if mode == "online" {
            // Rewards are sigmoid(φ) in (0, 1), less 1 for a sample without EOS.
            let r = m["reward_first"].as_f64().unwrap();
            assert!((-1.0..1.0).contains(&r), "{m}");
            experiment(&s, mode, 4, 0.1);
            let plan = s.plan();
            let runs: Vec<&str> = plan
                .iter()
                .filter(|(_, st)| st == "run")
                .map(|(id, _)| id.as_str())
                .collect();
            assert_eq!(runs, ["ppo", "eval"], "{plan:?}");
        }
    }
}

#[test]
fn a_killed_ppo_resumes_from_its_checkpoint_to_the_identical_policy() {
    let whole = Sandbox::new("ppo-whole");
    experiment(&whole, "online", 16, 0.2);
    whole.ok(&["run", "exp.kdl"]);

    let s = Sandbox::new("ppo-killed");
    experiment(&s, "online", 16, 0.2);
    s.kill_run_when(|| {
        std::fs::read_dir(s.path("cache/checkpoints"))
            .map(|d| {
                d.filter_map(|e| std::fs::read_to_string(e.unwrap().path().join("state.json")).ok())
                    .any(|t| t.contains("\"update\""))
            })
            .unwrap_or(false)
    });
    s.ok(&["run", "exp.kdl"]);
    let logs = s.all_logs();
    assert!(
        logs.contains("resuming from the checkpoint after update"),
        "{logs}"
    );
    let (a, b) = (
        whole.artifact_with("ppo_curve.jsonl"),
        s.artifact_with("ppo_curve.jsonl"),
    );
    assert_eq!(
        std::fs::read(a.join("model/model.safetensors")).unwrap(),
        std::fs::read(b.join("model/model.safetensors")).unwrap()
    );
    assert_eq!(
        std::fs::read_to_string(a.join("ppo_curve.jsonl")).unwrap(),
        std::fs::read_to_string(b.join("ppo_curve.jsonl")).unwrap()
    );
}
