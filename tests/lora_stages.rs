//! LoRA through the stages: SFT and PPO of a pretrained Llama-architecture
//! model train adapters that name their base and hold none of its weights,
//! PPO's reference is the base with the adapters off, eval loads adapters of
//! adapters, `merge` writes a whole model, a killed LoRA run resumes to the
//! same adapter, and contradictory settings fail at `plan`.

mod common;
use common::*;

use std::path::{Path, PathBuf};

fn llama() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/causal/llama")
}

fn sft(name: &str, extra: &str) -> String {
    format!(
        r#"
stage "{name}" kind="sft" {{
    input "train"
    pretrained "{f}"
    epochs 1
    lr 0.003
    batch 8
    max-source 224
    max-target 24
    train-split "train"
    validation-split "train"
    val-products 4
    checkpoint-every 0
{extra}
}}
"#,
        f = llama().display()
    )
}

fn datasets() -> String {
    format!(
        r#"
stage "train" kind="dataset" {{
    source "opinpref" path="{p}"
    split "train"
    limit 24
}}
stage "val" kind="dataset" {{
    source "opinpref" path="{p}"
    split "validation"
    limit 8
}}
"#,
        p = data("opinpref").display()
    )
}

fn pipeline() -> String {
    datasets()
        + &sft(
            "sft",
            "    lora-rank 4\n    lora-alpha 16\n    lora-targets \"all-linear\"\n",
        )
        + &sft("merged", "    lora-rank 4\n    merge #true\n")
        + &sft(
            "recomputed",
            "    lora-rank 4\n    lora-alpha 16\n    lora-targets \"all-linear\"\n    activation-checkpointing #true\n",
        )
        + r#"
stage "phi" kind="reward-model" {
    input "train" "val"
    hidden 6 4 2
    epochs 5
}
stage "ppo" kind="ppo" {
    input "sft" "phi" "train"
    updates 2
    batch 4
    minibatch 2
    max-source 224
    max-new-tokens 12
    checkpoint-every 0
    lora-rank 4
    lora-targets "q_proj, v_proj"
}
stage "dpo" kind="dpo" {
    input "sft" "train"
    batch 8
    lr 0.003
    max-source 224
    max-target 24
    eval-split ""
    checkpoint-every 0
    lora-rank 4
}
stage "grpo" kind="grpo" {
    input "sft" "phi" "train"
    updates 2
    batch 2
    group-size 2
    beta 0.04
    max-source 224
    max-new-tokens 12
    checkpoint-every 0
    lora-rank 4
    activation-checkpointing #true
}
stage "eval" kind="eval" {
    input "sft" "merged" "ppo" "dpo" "grpo" "phi" "val"
    split "validation"
    reference "preferred"
    max-products 4
    max-source 224
    max-new-tokens 12
}
"#
}

/// Every value of a safetensors file's tensors, in name order.
fn adapter_values(bytes: &[u8]) -> Vec<f32> {
    let st = safetensors::SafeTensors::deserialize(bytes).unwrap();
    let mut names: Vec<String> = st.names().into_iter().map(str::to_string).collect();
    names.sort();
    names
        .iter()
        .flat_map(|n| {
            st.tensor(n)
                .unwrap()
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect::<Vec<_>>()
        })
        .collect()
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn folder_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum()
}

/// The stored result folder of stage `id`.
fn output_of(s: &Sandbox, id: &str) -> PathBuf {
    let v: serde_json::Value =
        serde_json::from_str(&s.ok(&["show", "exp.kdl", "--format", "json"])).unwrap();
    let stage = v["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"] == id);
    PathBuf::from(
        stage
            .and_then(|x| x["output"].as_str())
            .unwrap_or_else(|| panic!("no output of `{id}`: {v}")),
    )
}

#[test]
fn lora_sft_and_ppo_train_adapters_on_a_base_they_name_and_eval_loads_them() {
    let s = Sandbox::new("lora-pipeline");
    s.experiment(&pipeline());
    s.ok(&["run", "exp.kdl"]);
    let m = s.stage_metrics("sft");
    let f = |m: &serde_json::Value, k: &str| m[k].as_f64().unwrap_or_else(|| panic!("{k}: {m}"));
    assert!(f(&m, "val_loss_last") < f(&m, "val_loss_initial"), "{m}");
    assert!(s.all_logs().contains("LoRA: "), "the log says what trains");

    // SFT's result: a PEFT folder on the pretrained folder, no copy of it.
    let sft = output_of(&s, "sft");
    let model = sft.join("model");
    assert!(!model.join("model.safetensors").exists());
    let config = json(&model.join("adapter_config.json"));
    assert_eq!(config["r"], 4);
    assert_eq!(config["lora_alpha"], 16.0);
    assert_eq!(config["task_type"], "CAUSAL_LM");
    assert_eq!(config["target_modules"].as_array().unwrap().len(), 7);
    let base = json(&model.join("efrlhf-base.json"));
    assert_eq!(
        base["folder"]["path"].as_str().unwrap(),
        llama().to_str().unwrap()
    );
    let weights = std::fs::metadata(llama().join("model.safetensors"))
        .unwrap()
        .len();
    assert!(
        folder_size(&model) < weights / 2,
        "{} bytes against the base's {weights}",
        folder_size(&model)
    );
    assert!(model.join("tokenizer.json").is_file());

    // `merge`: a whole model, loadable as any.
    let merged = output_of(&s, "merged");
    assert!(merged.join("model/model.safetensors").is_file());
    assert!(!merged.join("model/adapter_config.json").exists());

    // PPO adapts the SFT model (a result, named by its digest).
    let ppo = output_of(&s, "ppo");
    let base = json(&ppo.join("model/efrlhf-base.json"));
    assert_eq!(
        base["result"]["digest"].as_str().unwrap(),
        sft.file_name().unwrap().to_str().unwrap()
    );
    assert!(!ppo.join("model/model.safetensors").exists());
    // Its reference is the policy with the adapters off: before the first
    // step the adapters add exactly zero, so the first KL is exactly 0.
    let curve = std::fs::read_to_string(ppo.join("ppo_curve.jsonl")).unwrap();
    let first: serde_json::Value = serde_json::from_str(curve.lines().next().unwrap()).unwrap();
    assert_eq!(first["kl"].as_f64(), Some(0.0), "{first}");
    let second: serde_json::Value = serde_json::from_str(curve.lines().nth(1).unwrap()).unwrap();
    assert!(second["kl"].as_f64().unwrap() != 0.0, "{second}");

    // DPO and GRPO too: adapters on the SFT model, whose reference is that
    // model: DPO's first loss is ln 2 and GRPO's first KL 0, exactly.
    for (curve, key, value) in [
        ("dpo_curve.jsonl", "loss", std::f64::consts::LN_2),
        ("grpo_curve.jsonl", "kl", 0.0),
    ] {
        let dir = output_of(&s, curve.split('_').next().unwrap());
        let base = json(&dir.join("model/efrlhf-base.json"));
        assert_eq!(
            base["result"]["digest"].as_str().unwrap(),
            sft.file_name().unwrap().to_str().unwrap(),
            "{curve}"
        );
        let text = std::fs::read_to_string(dir.join(curve)).unwrap();
        let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        let got = first[key].as_f64().unwrap();
        assert!((got - value).abs() < 1e-6, "{curve}: {key} {got}");
    }

    // Activation checkpointing changes the memory, not the result.
    let stored = |dir: &Path| std::fs::read(dir.join("model/adapter_model.safetensors")).unwrap();
    let ckpt = output_of(&s, "recomputed");
    let (a, b) = (
        adapter_values(&stored(&sft)),
        adapter_values(&stored(&ckpt)),
    );
    assert_eq!(a.len(), b.len());
    let diff = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    assert!(diff < 1e-4, "checkpointed and plain SFT differ by {diff}");

    // eval loads them all (PPO's adapter onto SFT's onto the folder).
    let ev = s.stage_metrics("eval");
    for k in [
        "sft.rougeL",
        "merged.rougeL",
        "ppo.rougeL",
        "dpo.rougeL",
        "grpo.rougeL",
        "ppo.kl_vs_sft",
    ] {
        assert!(f(&ev, k).is_finite(), "{k}: {ev}");
    }
}

#[test]
fn a_killed_lora_sft_resumes_to_the_identical_adapter() {
    let body = datasets()
        + &sft("sft", "    lora-rank 4\n")
            .replace("epochs 1", "epochs 3")
            .replace("checkpoint-every 0", "checkpoint-every 1")
            .replace("batch 8", "batch 4");
    let whole = Sandbox::new("lora-whole");
    whole.experiment(&body);
    whole.ok(&["run", "exp.kdl"]);
    let s = Sandbox::new("lora-killed");
    s.experiment(&body);
    s.kill_run_when(|| s.has_checkpoint_with("\"step\":4"));
    s.ok(&["run", "exp.kdl"]);
    assert!(s.all_logs().contains("resuming from the checkpoint"));
    let a = whole.artifact_with("model/adapter_model.safetensors");
    let b = s.artifact_with("model/adapter_model.safetensors");
    assert_eq!(
        std::fs::read(a.join("model/adapter_model.safetensors")).unwrap(),
        std::fs::read(b.join("model/adapter_model.safetensors")).unwrap()
    );
}

#[test]
fn contradictory_lora_settings_fail_at_plan_naming_the_file() {
    for (extra, says) in [
        (
            "    lora-alpha 16\n",
            "`lora-alpha` is set but `lora-rank` is 0",
        ),
        ("    merge #true\n", "`merge` folds a LoRA adapter"),
        (
            "    lora-rank 40\n    lora-targets \"k_proj\"\n",
            "above the width of `model.layers.0.self_attn.k_proj` (64 -> 32)",
        ),
        (
            "    lora-rank 4\n    lora-targets \"qproj\"\n",
            "`qproj` that match no layer of this model; its linear layers are down_proj, gate_proj, k_proj, o_proj, q_proj, up_proj, v_proj",
        ),
    ] {
        let s = Sandbox::new("lora-plan");
        s.experiment(&(datasets() + &sft("sft", extra)));
        let out = s.run(&["plan", "exp.kdl"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{extra}");
        assert!(err.contains(says), "{extra}: {err}");
        assert!(err.contains("exp.kdl"), "{err}");
    }
}
