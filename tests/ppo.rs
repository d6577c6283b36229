//! The `ppo` stage on a tiny pipeline of shipped data: it runs online and
//! offline, only PPO reruns when its KL coefficient changes, and a killed
//! run resumes from its checkpoint to the identical policy.

mod common;
use common::*;

/// The PPO side of the tiny pipeline.
struct Ppo<'a> {
    mode: &'a str,
    updates: usize,
    kl: f64,
    /// The reward model's method: `domain-knowledge` or `text`.
    reward: &'a str,
    norm: &'a str,
    /// The KL reference: `sft` or `previous`.
    reference: &'a str,
}

const ONLINE: Ppo = Ppo {
    mode: "online",
    updates: 4,
    kl: 0.2,
    reward: "domain-knowledge",
    norm: "none",
    reference: "sft",
};

fn experiment(s: &Sandbox, ppo: &Ppo) {
    let Ppo {
        mode,
        updates,
        kl,
        reward,
        norm,
        reference,
    } = ppo;
    s.experiment(&format!(
        r#"
{tiny}stage "phi" kind="reward-model" {{
    input "train" "val" "tok"
    method "{reward}"
    hidden 6 4 2
    d-model 16
    layers 1
    heads 2
    max-tokens 96
    epochs 1
}}
stage "ppo" kind="ppo" {{
    input "sft" "phi" "train"
    mode "{mode}"
    updates {updates}
    batch 4
    minibatch 2
    kl-coef {kl}
    reward-norm "{norm}"
    reference "{reference}"
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
        tiny = tiny_summarizer()
    ));
}

#[test]
fn online_and_offline_ppo_and_eval_run_and_a_kl_change_reruns_only_ppo_and_eval() {
    for mode in ["online", "offline"] {
        let s = Sandbox::new(&format!("ppo-{mode}"));
        experiment(&s, &Ppo { mode, ..ONLINE });
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
        // `show` ends with the same comparison, in markdown too.
        let shown = s.ok(&["show", "exp.kdl"]);
        assert!(
            shown.contains("win rate")
                && shown
                    .trim_end()
                    .ends_with(printed.trim_end().lines().last().unwrap()),
            "{shown}"
        );
        let md = s.ok(&["show", "exp.kdl", "--format", "md"]);
        assert!(md.contains("| model | ROUGE-1 |"), "{md}");
        if mode == "online" {
            // Scores are sigmoid(φ) in (0, 1).
            let r = m["reward_first"].as_f64().unwrap();
            assert!((0.0..1.0).contains(&r), "{m}");
            experiment(&s, &Ppo { kl: 0.1, ..ONLINE });
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
    // Scaled rewards and the previous policy as the KL reference: the running
    // moments and that policy must resume too.
    let setup = Ppo {
        updates: 16,
        norm: "scale",
        reference: "previous",
        ..ONLINE
    };
    experiment(&whole, &setup);
    whole.ok(&["run", "exp.kdl"]);

    let s = Sandbox::new("ppo-killed");
    experiment(&s, &setup);
    s.kill_run_when(|| s.has_checkpoint_with("\"update\""));
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

#[test]
fn the_text_reward_model_drives_ppo_and_scaled_rewards_have_unit_spread() {
    let s = Sandbox::new("ppo-text");
    experiment(
        &s,
        &Ppo {
            reward: "text",
            norm: "scale",
            updates: 6,
            ..ONLINE
        },
    );
    s.ok(&["run", "exp.kdl"]);
    let m = s.stage_metrics("ppo");
    assert_eq!(m["updates"], 6.0, "{m}");
    let art = s.artifact_with("ppo_curve.jsonl");
    let curve: Vec<serde_json::Value> = std::fs::read_to_string(art.join("ppo_curve.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // Raw scores are sigmoid(text score); the rewards PPO optimises are the same
    // scores divided by their running standard deviation, so after a few batches
    // their mean over the spread of the raw scores is about mean/std of the raw ones.
    let (scores, stds): (Vec<f64>, Vec<f64>) = curve
        .iter()
        .map(|c| {
            (
                c["score"].as_f64().unwrap(),
                c["score_std"].as_f64().unwrap(),
            )
        })
        .unzip();
    assert!(scores.iter().all(|x| (0.0..1.0).contains(x)), "{scores:?}");
    let all_mean = scores.iter().sum::<f64>() / scores.len() as f64;
    let last = &curve[curve.len() - 1];
    let ratio = last["reward"].as_f64().unwrap() / last["score"].as_f64().unwrap();
    // reward = score / running std, where the running std pools every batch so far.
    let pooled = {
        let within = stds.iter().map(|s| s * s).sum::<f64>() / stds.len() as f64;
        let between =
            scores.iter().map(|x| (x - all_mean).powi(2)).sum::<f64>() / scores.len() as f64;
        (within + between).sqrt()
    };
    assert!(
        (ratio * pooled - 1.0).abs() < 0.25,
        "reward/score {ratio}, pooled std {pooled}"
    );
    for c in &curve {
        assert!(c["entropy"].as_f64().unwrap() > 0.0, "{c}");
    }
    // The eval stage scores with the same text model.
    let ev = s.stage_metrics("eval");
    assert!(
        (0.0..1.0).contains(&ev["ppo.reward"].as_f64().unwrap()),
        "{ev}"
    );
}
