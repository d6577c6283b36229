//! The `sft` stage on shipped data: it learns, reports baselines, writes a
//! Hugging Face folder, and a killed run resumes to the identical result.

mod common;
use common::*;

use efrlhf::text::rouge::{MultiRef, RougeScorer};

/// 96 training and 16 validation OpinPref products, a tokenizer, and a tiny SFT.
fn experiment(s: &Sandbox, epochs: usize) {
    let opinpref = data("opinpref");
    s.experiment(&format!(
        r#"
stage "train" kind="dataset" {{
    source "opinpref" path="{p}"
    split "train"
    limit 96
}}
stage "val" kind="dataset" {{
    source "opinpref" path="{p}"
    split "validation"
    limit 16
}}
stage "tok" kind="tokenizer" {{
    input "train" "val"
    vocab-size 500
}}
stage "sft" kind="sft" {{
    input "train" "val" "tok"
    d-model 32
    layers 1
    heads 2
    epochs {epochs}
    lr 0.003
    batch 8
    max-source 96
    max-target 48
    eval-every 12
    checkpoint-every 4
}}
"#,
        p = opinpref.display()
    ));
}

#[test]
fn sft_learns_reports_baselines_and_writes_a_hugging_face_folder() {
    let s = Sandbox::new("sft-small");
    experiment(&s, 2);
    s.ok(&["run", "exp.kdl"]);
    let m = s.stage_metrics("sft");
    let f = |k: &str| {
        m[k].as_f64()
            .unwrap_or_else(|| panic!("no metric {k}: {m}"))
    };
    // 96 examples, batch 8, 2 epochs.
    assert_eq!(f("steps"), 24.0);
    assert_eq!(f("train_examples"), 96.0);
    assert_eq!(f("val_products"), 16.0);
    // Validation loss falls from the untrained model's.
    assert!(f("val_loss_last") < f("val_loss_initial") - 0.5, "{m}");
    assert!(f("val_loss") <= f("val_loss_initial"), "{m}");
    assert!(f("train_loss_last") < f("train_loss_first"), "{m}");
    // The baselines, recomputed here: ROUGE-L of the first review against the preferred summary.
    let products: Vec<efrlhf::stages::dataset::Product> =
        std::fs::read_dir(s.path("cache/artifacts"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.join("products.jsonl").is_file())
            .flat_map(|p| efrlhf::stages::dataset::read_products(&p).unwrap())
            .filter(|p| p.split == "validation")
            .collect();
    assert_eq!(products.len(), 16);
    let scorer = RougeScorer::new(true);
    let mean_l: f64 = products
        .iter()
        .map(|p| {
            let pref = &p.candidates[p.preferences[0].preferred].text;
            scorer
                .score_multi(std::slice::from_ref(pref), &p.reviews[0], MultiRef::Max)
                .rouge_l
                .fmeasure
        })
        .sum::<f64>()
        / 16.0;
    assert!((f("baseline_first_review_rougeL") - mean_l).abs() < 1e-9);
    assert!(f("baseline_random_review_rougeL") > 0.0);
    assert!(f("val_rougeL") >= 0.0);

    // The output: a folder transformers reads (config, weights, tokenizer), and the curves.
    let art = s.artifact_with("model");
    let dev = efrlhf::ml::device(None, 0).unwrap();
    let (model, report) = efrlhf::ml::bart::io::load(&art.join("model"), &dev).unwrap();
    assert!(report.unused.is_empty());
    assert_eq!(model.config.d_model, 32);
    assert!(art.join("model/tokenizer.json").is_file());
    let curve = std::fs::read_to_string(art.join("train_curve.jsonl")).unwrap();
    assert_eq!(curve.lines().count(), 24);
    let val = std::fs::read_to_string(art.join("validation_curve.jsonl")).unwrap();
    let steps: Vec<u64> = val
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["step"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(steps, [12, 24]);
    let summaries = std::fs::read_to_string(art.join("validation_summaries.jsonl")).unwrap();
    assert_eq!(summaries.lines().count(), 16);
    // A finished stage leaves no checkpoints behind, and reruns nothing.
    assert!(
        !s.path("cache/checkpoints").exists()
            || std::fs::read_dir(s.path("cache/checkpoints"))
                .unwrap()
                .count()
                == 0
    );
    let ev = s.run_events(&[]);
    assert_eq!(with_event(&ev, "stage-done"), Vec::<String>::new());
}

#[test]
fn a_killed_sft_resumes_from_its_checkpoint_to_the_identical_model() {
    // Uninterrupted reference.
    let whole = Sandbox::new("sft-whole");
    experiment(&whole, 6);
    whole.ok(&["run", "exp.kdl"]);

    // Killed after its first checkpoint, then run again.
    let s = Sandbox::new("sft-killed");
    experiment(&s, 6);
    let state = std::cell::RefCell::new(None);
    s.kill_run_when(|| {
        let found = std::fs::read_dir(s.path("cache/checkpoints"))
            .ok()
            .and_then(|mut d| d.next())
            .map(|e| e.unwrap().path().join("state.json"))
            .filter(|p| p.is_file());
        let ok = found.is_some();
        *state.borrow_mut() = found;
        ok
    });
    let state = state.into_inner().unwrap();
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    let at = saved["step"].as_u64().unwrap();
    assert!((4..72).contains(&at), "checkpoint at step {at}");
    assert!(
        !s.path("cache/artifacts").exists()
            || std::fs::read_dir(s.path("cache/artifacts"))
                .unwrap()
                .all(|e| !e.unwrap().path().join("model").exists())
    );

    s.ok(&["run", "exp.kdl"]);
    let logs = s.all_logs();
    assert!(
        logs.contains("resuming from the checkpoint at step"),
        "{logs}"
    );

    // Same weights, bit for bit; same curves and metrics.
    let (a, b) = (whole.artifact_with("model"), s.artifact_with("model"));
    assert_eq!(
        std::fs::read(a.join("model/model.safetensors")).unwrap(),
        std::fs::read(b.join("model/model.safetensors")).unwrap()
    );
    for f in [
        "train_curve.jsonl",
        "validation_curve.jsonl",
        "validation_summaries.jsonl",
    ] {
        assert_eq!(
            std::fs::read_to_string(a.join(f)).unwrap(),
            std::fs::read_to_string(b.join(f)).unwrap(),
            "{f}"
        );
    }
    assert_eq!(whole.stage_metrics("sft"), s.stage_metrics("sft"));
}
