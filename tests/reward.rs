//! Reward models on OpinPref (800 train / 140 validation pairs), and the
//! properties of φ's training on synthetic data with a known answer.

mod common;
use common::*;

use std::path::Path;

use efrlhf::ml::bt::PairwiseLoop;
use efrlhf::ml::phi::{FeaturePairs, PhiTrainConfig, train_phi};
use efrlhf::rng::Rng;
use efrlhf::stages::dataset::{Candidate, FieldMap, load};
use efrlhf::stages::formats::dataset::collect_pairs;
use efrlhf::stages::reward::{features, load_phi};

fn show(s: &Sandbox, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["show", "exp.kdl", "--format", "json"];
    args.extend_from_slice(extra);
    serde_json::from_str(&s.ok(&args)).unwrap()
}

fn metric(v: &serde_json::Value, id: &str, m: &str) -> f64 {
    let st = v["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"] == id)
        .unwrap_or_else(|| panic!("no stage {id} in {v}"));
    st["metrics"][m]
        .as_f64()
        .unwrap_or_else(|| panic!("no metric {m} for {id}: {st}"))
}

#[test]
fn naive_mean_accuracy_is_exact() {
    let s = Sandbox::new("rm-naive");
    s.experiment(&format!(
        "stage \"prefs\" kind=\"dataset\" {{\n    source \"opinpref\" path=\"{}\"\n}}\nstage \"mean\" kind=\"reward-model\" {{\n    input \"prefs\"\n    method \"naive-mean\"\n}}\n",
        data("opinpref").display()
    ));
    s.ok(&["run", "exp.kdl"]);
    let v = show(&s, &[]);
    // Computed outside this project with exact fractions: 103 of 140 right, 3 ties.
    assert_eq!(metric(&v, "mean", "accuracy"), 104.5 / 140.0);
    assert_eq!(metric(&v, "mean", "val_ties"), 3.0);
    assert_eq!(
        metric(&v, "mean", "train_accuracy"),
        (584.0 + 11.0 / 2.0) / 800.0
    );
}

#[test]
fn phi_mlp_and_linear_reach_72_percent_over_five_seeds() {
    let s = Sandbox::new("rm-phi-seeds");
    s.experiment(&format!(
        r#"
stage "prefs" kind="dataset" {{
    source "opinpref" path="{}"
}}
stage "mlp" kind="reward-model" {{
    input "prefs"
    hidden 6 4 2
}}
stage "linear" kind="reward-model" {{
    input "prefs"
    hidden
}}
sweep "mlp-seed" {{
    vary "mlp.seed" 1 2 3 4 5
}}
sweep "linear-seed" {{
    vary "linear.seed" 1 2 3 4 5
}}
"#,
        data("opinpref").display()
    ));
    s.ok(&["run", "exp.kdl"]);
    let v = show(&s, &["--aggregate", "seed"]);
    let mlp = metric(&v, "mlp", "accuracy");
    let linear = metric(&v, "linear", "accuracy");
    assert!(mlp >= 0.72, "MLP φ mean validation accuracy {mlp}");
    assert!(linear >= 0.72, "linear φ mean validation accuracy {linear}");
    for id in ["mlp", "linear"] {
        let st = v["stages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["id"] == id)
            .unwrap();
        assert_eq!(st["n"], 5);
        for key in efrlhf::stages::dataset::DOMAIN_KEYS {
            let imp = st["metrics"][format!("importance.{key}")].as_f64().unwrap();
            assert!(imp.is_finite());
        }
    }
    assert_eq!(metric(&v, "linear", "parameters"), 8.0);
    assert_eq!(
        metric(&v, "mlp", "parameters"),
        89.0,
        "7-6-4-2-1 as the authors ran it"
    );
    let table = s.ok(&["show", "exp.kdl", "--aggregate", "seed"]);
    assert!(table.contains("accuracy sd"), "{table}");
    show_fits_the_terminal(&s);
}

/// `show` of 11 stages with 16 metrics each: blocks per kind in 120 columns
/// that still hold every metric; `--wide` is the one table; globs select.
fn show_fits_the_terminal(s: &Sandbox) {
    let table = s.ok(&["show", "exp.kdl"]);
    let widest = table.lines().map(|l| l.chars().count()).max().unwrap();
    assert!(widest <= 120, "{widest} columns:\n{table}");
    assert!(table.starts_with("dataset (1 stage)\n"), "{table}");
    assert!(table.contains("\nreward-model (10 stages)\n"), "{table}");
    let v = show(s, &[]);
    for st in v["stages"].as_array().unwrap() {
        let id = st["id"].as_str().unwrap();
        assert!(
            table.split_whitespace().any(|w| w == id),
            "{id} missing:\n{table}"
        );
        for m in st["metrics"].as_object().unwrap().keys() {
            assert!(
                table.split_whitespace().any(|w| w == m),
                "{m} missing:\n{table}"
            );
        }
    }
    let wide = s.ok(&["show", "exp.kdl", "--wide"]);
    assert!(wide.starts_with("stage "), "{wide}");
    assert!(wide.lines().next().unwrap().len() > 120);
    assert_eq!(wide.lines().count(), 2 + 11);
    let picked = show(s, &["--metrics", "train_*,accuracy"]);
    let names: Vec<&String> = picked["stages"][1]["metrics"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(
        names,
        ["accuracy", "train_accuracy", "train_loss", "train_pairs"]
    );
    let out = s.run(&["show", "exp.kdl", "--metrics", "val_[x"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("`val_[x` is not a valid pattern"), "{err}");
}

#[test]
fn text_reward_model_trains_and_its_saved_model_reloads() {
    let s = Sandbox::new("rm-text");
    s.experiment(&format!(
        r#"
stage "prefs" kind="dataset" {{
    source "opinpref" path="{}"
}}
stage "tok" kind="tokenizer" {{
    input "prefs"
    vocab-size 800
}}
stage "text" kind="reward-model" {{
    input "prefs" "tok"
    method "text"
    train-pairs 48
    epochs 1
    d-model 32
    layers 1
    heads 2
    max-tokens 96
}}
"#,
        data("opinpref").display()
    ));
    s.ok(&["run", "exp.kdl"]);
    let v = show(&s, &[]);
    let acc = metric(&v, "text", "accuracy");
    assert!((0.0..=1.0).contains(&acc));
    assert_eq!(metric(&v, "text", "train_pairs"), 48.0);
    assert_eq!(metric(&v, "text", "val_pairs"), 140.0);
    let out = v["stages"][2]["output"].as_str().unwrap();
    let (spec, _model) =
        efrlhf::stages::reward::load_text_rm(Path::new(out), &efrlhf::ml::device(None, 0).unwrap())
            .unwrap();
    assert_eq!(spec.method, "text");
    assert_eq!(spec.text.unwrap().d_model, 32);
    // Without a tokenizer input, the text method is a clear stage error.
    s.experiment(&format!(
        "stage \"prefs\" kind=\"dataset\" {{\n    source \"opinpref\" path=\"{}\"\n}}\nstage \"text\" kind=\"reward-model\" {{\n    input \"prefs\"\n    method \"text\"\n}}\n",
        data("opinpref").display()
    ));
    let out = s.run(&["run", "exp.kdl"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("method `text` needs a tokenizer stage among the inputs")
    );
}

#[test]
fn saved_phi_reloads_with_identical_scores() {
    let products = load("opinpref", &data("opinpref"), true, &FieldMap::default())
        .unwrap()
        .products;
    let (pairs, _) = collect_pairs(&products, "train", false);
    let mut fp = FeaturePairs::default();
    for pr in pairs.iter().take(200) {
        let p = &products[pr.product];
        fp.preferred
            .push(features(p, &p.candidates[pr.preferred], 0.2).unwrap());
        fp.rejected
            .push(features(p, &p.candidates[pr.rejected], 0.2).unwrap());
    }
    let dev = efrlhf::ml::device(None, 3).unwrap();
    let cfg = PhiTrainConfig {
        hidden: vec![6, 4, 2],
        training: PairwiseLoop {
            epochs: 5,
            batch: 32,
            lr: 0.01,
            weight_decay: 0.01,
            warmup_steps: 0,
            seed: 3,
        },
    };
    let trained = train_phi(&cfg, &fp, &dev, |_, _| {});
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("phi-roundtrip");
    std::fs::create_dir_all(&dir).unwrap();
    trained.model.save(&dir.join("model.safetensors")).unwrap();
    std::fs::write(dir.join("reward.json"), r#"{"method": "domain-knowledge", "hidden": [6, 4, 2], "features": [], "scale": 0.2, "reward": "sigmoid(phi)"}"#).unwrap();
    let (_, loaded) = load_phi(&dir, &dev).unwrap();
    assert_eq!(
        loaded.unwrap().score(&fp.preferred, &dev),
        trained.model.score(&fp.preferred, &dev)
    );
    // Same seed, same data: the same model.
    let again = train_phi(&cfg, &fp, &dev, |_, _| {});
    assert_eq!(
        again.model.score(&fp.rejected, &dev),
        trained.model.score(&fp.rejected, &dev)
    );
}

/// Pairs drawn from a Bradley-Terry model with known weights over 7 features.
fn synthetic_pairs(weights: &[f64; 7], n: usize, seed: u64) -> FeaturePairs {
    let mut rng = Rng::new(seed);
    let mut fp = FeaturePairs::default();
    for _ in 0..n {
        let a: [f32; 7] = std::array::from_fn(|_| rng.next_f64() as f32);
        let b: [f32; 7] = std::array::from_fn(|_| rng.next_f64() as f32);
        let u = |x: &[f32; 7]| {
            x.iter()
                .zip(weights)
                .map(|(x, w)| *x as f64 * w)
                .sum::<f64>()
        };
        let p_a = 1.0 / (1.0 + (u(&b) - u(&a)).exp());
        if rng.next_f64() < p_a {
            fp.preferred.push(a);
            fp.rejected.push(b);
        } else {
            fp.preferred.push(b);
            fp.rejected.push(a);
        }
    }
    fp
}

#[test]
fn phi_recovers_the_ranking_of_known_weights() {
    let truth = [6.0, 4.5, 3.2, 2.2, 1.4, 0.7, 0.1];
    let pairs = synthetic_pairs(&truth, 6000, 11);
    let dev = efrlhf::ml::device(None, 1).unwrap();
    let cfg = PhiTrainConfig {
        hidden: vec![],
        training: PairwiseLoop {
            epochs: 30,
            batch: 64,
            lr: 0.03,
            weight_decay: 0.0,
            warmup_steps: 0,
            seed: 1,
        },
    };
    let trained = train_phi(&cfg, &pairs, &dev, |_, _| {});
    let w = trained.importance;
    let mut order: Vec<usize> = (0..7).collect();
    order.sort_by(|a, b| w[*b].total_cmp(&w[*a]));
    assert_eq!(order, [0, 1, 2, 3, 4, 5, 6], "learned weights {w:?}");
    // The learned scale is close to the truth (maximum likelihood on 6000 pairs).
    for (k, t) in truth.iter().enumerate() {
        assert!((w[k] - t).abs() < 0.6, "weight {k}: {} vs {t}", w[k]);
    }
    // An MLP φ ranks held-out pairs nearly as well as the true utility does.
    let held_out = synthetic_pairs(&truth, 2000, 12);
    let mlp_cfg = PhiTrainConfig {
        hidden: vec![6, 4, 2],
        training: PairwiseLoop {
            epochs: 20,
            batch: 64,
            lr: 0.01,
            weight_decay: 0.0,
            warmup_steps: 0,
            seed: 2,
        },
    };
    let mlp = train_phi(&mlp_cfg, &pairs, &dev, |_, _| {});
    let acc = |p: &[f32], r: &[f32]| {
        p.iter().zip(r).filter(|(a, b)| a > b).count() as f64 / p.len() as f64
    };
    let u = |xs: &[[f32; 7]]| -> Vec<f32> {
        xs.iter()
            .map(|x| x.iter().zip(&truth).map(|(a, w)| a * *w as f32).sum())
            .collect()
    };
    let oracle = acc(&u(&held_out.preferred), &u(&held_out.rejected));
    let got = acc(
        &mlp.model.score(&held_out.preferred, &dev),
        &mlp.model.score(&held_out.rejected, &dev),
    );
    assert!(got > oracle - 0.03, "MLP {got} vs oracle {oracle}");
    // Gradient x input ranks the strongest feature first.
    let top = (0..7)
        .max_by(|a, b| mlp.importance[*a].total_cmp(&mlp.importance[*b]))
        .unwrap();
    assert_eq!(top, 0, "{:?}", mlp.importance);
}

#[test]
fn malformed_inputs_are_reported_not_trained_on() {
    let products = load(
        "opinpref",
        &data("opinpref/annotations-valid.jsonl"),
        true,
        &FieldMap::default(),
    )
    .unwrap()
    .products;
    let p = &products[0];
    let no_scores = Candidate::text("a summary".into());
    assert!(
        features(p, &no_scores, 0.2)
            .unwrap_err()
            .contains("has no domain scores")
    );
    let mut nan = p.candidates[0].clone();
    nan.scores
        .as_mut()
        .unwrap()
        .insert("relevance".into(), f64::NAN);
    assert!(
        features(p, &nan, 0.2)
            .unwrap_err()
            .contains("score `relevance` is not a finite number")
    );
    let mut missing = p.candidates[0].clone();
    missing.scores.as_mut().unwrap().remove("hallucination");
    assert!(
        features(p, &missing, 0.2)
            .unwrap_err()
            .contains("score `hallucination` is missing")
    );

    // A pair whose two summaries are the same text is skipped and counted.
    let s = Sandbox::new("rm-identical");
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/data/opinpref-identical");
    s.experiment(&format!(
        "stage \"prefs\" kind=\"dataset\" {{\n    source \"opinpref\" path=\"{}\"\n}}\nstage \"rm\" kind=\"reward-model\" {{\n    input \"prefs\"\n    hidden\n    epochs 2\n}}\n",
        fixture.display()
    ));
    s.ok(&["run", "exp.kdl"]);
    let v = show(&s, &[]);
    assert_eq!(metric(&v, "rm", "skipped_identical"), 1.0);
    assert_eq!(metric(&v, "rm", "train_pairs"), 5.0);
    // Asking for more pairs than exist is an error, not a silent shortfall.
    s.experiment(&format!(
        "stage \"prefs\" kind=\"dataset\" {{\n    source \"opinpref\" path=\"{}\"\n}}\nstage \"rm\" kind=\"reward-model\" {{\n    input \"prefs\"\n    train-pairs 50\n}}\n",
        fixture.display()
    ));
    let out = s.run(&["run", "exp.kdl"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("`train-pairs` is 50 but only 5 training pairs exist")
    );
}
