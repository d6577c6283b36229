//! `eval` under several reward models: each model's reward and win rate
//! under each of them (the first also as the headline), so reward hacking
//! shows as disagreement; `show` gives a column pair per reward model. The
//! naive-mean reward is checked by hand: the mean of the seven lexical
//! scores eval reports, over their 1-5 range.

mod common;
use common::*;

/// The seven domain scores, as eval names them (independently of the code's list).
const DOMAIN: [&str; 7] = [
    "aspect-coverage",
    "opinion-faithfulness",
    "opinion-coverage",
    "conciseness",
    "relevance",
    "hallucination",
    "language-correctness",
];

#[test]
fn eval_reports_every_reward_model_and_the_first_as_headline() {
    let s = Sandbox::new("eval-rewards");
    let body = tiny_rlhf().replace(
        r#"stage "eval" kind="eval" {
    input "sft" "ppo" "phi" "val""#,
        r#"stage "naive" kind="reward-model" {
    input "train" "val"
    method "naive-mean"
}
stage "eval" kind="eval" {
    input "sft" "ppo" "phi" "naive" "val""#,
    );
    assert!(body.contains("\"naive\" \"val\""));
    s.experiment(&body);
    s.ok(&["run", "exp.kdl"]);
    let m = s.stage_metrics("eval");
    let get = |k: &str| {
        m[k].as_f64()
            .unwrap_or_else(|| panic!("no metric `{k}` in {m}"))
    };
    for model in ["sft", "ppo"] {
        // The headline is the first reward model's.
        assert_eq!(
            get(&format!("{model}.reward")),
            get(&format!("{model}.reward.phi"))
        );
        let lexical: f64 = DOMAIN
            .iter()
            .map(|k| get(&format!("{model}.lexical.{k}")))
            .sum::<f64>()
            / 7.0;
        let naive = get(&format!("{model}.reward.naive"));
        assert!(
            (naive - lexical / 5.0).abs() < 1e-9,
            "{naive} vs {lexical}/5"
        );
    }
    assert_eq!(get("ppo.win_rate_vs_sft"), get("ppo.win_rate_vs_sft.phi"));
    let w = get("ppo.win_rate_vs_sft.naive");
    assert!((0.0..=1.0).contains(&w), "{w}");
    let shown = s.ok(&["show", "exp.kdl", "--format", "md"]);
    for col in ["reward phi", "win phi", "reward naive", "win naive"] {
        assert!(shown.contains(col), "{col} missing:\n{shown}");
    }
}
