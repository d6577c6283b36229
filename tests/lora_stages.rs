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
    let sft = s.output_of("sft");
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
    let merged = s.output_of("merged");
    assert!(merged.join("model/model.safetensors").is_file());
    assert!(!merged.join("model/adapter_config.json").exists());

    // PPO adapts the SFT model (a result, named by its digest).
    let ppo = s.output_of("ppo");
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
        let dir = s.output_of(curve.split('_').next().unwrap());
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
    let ckpt = s.output_of("recomputed");
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

/// The logits that predict `response` after `source`, of the model folder `dir`.
struct Logits(Vec<u32>, Vec<u32>);

impl efrlhf::ml::lm::WithModel for Logits {
    type Output = Vec<f32>;
    fn run<M: efrlhf::ml::lm::LanguageModel>(self, model: M, _: Vec<String>) -> Vec<f32> {
        let dev = efrlhf::ml::device(None, 0).unwrap();
        let (hidden, _) = model.response_hidden(&[self.0], &[self.1], &dev);
        efrlhf::ml::to_vec(model.logits(hidden))
    }
}

const PEFT_LOGITS: &str = r#"
import json, sys, torch
from peft import PeftModel
from transformers import AutoModelForCausalLM
base = AutoModelForCausalLM.from_pretrained(sys.argv[1], dtype=torch.float32)
model = PeftModel.from_pretrained(base, sys.argv[2]).eval()
source, response = json.loads(sys.argv[3]), json.loads(sys.argv[4])
with torch.no_grad():
    logits = model(input_ids=torch.tensor([source + response])).logits[0]
s = len(source)
print(json.dumps(logits[s - 1 : s - 1 + len(response)].flatten().tolist()))
"#;

/// With `EFRLHF_PEFT_PYTHON` (an interpreter with torch, transformers and
/// peft): an adapter trained by a LoRA sft stage, loaded by
/// `PeftModel.from_pretrained` onto its base, gives efrlhf's logits.
#[test]
fn a_trained_adapter_loaded_by_peft_gives_efrlhfs_logits() {
    let Some(python) = std::env::var_os("EFRLHF_PEFT_PYTHON") else {
        #[allow(clippy::print_stderr)]
        {
            eprintln!("skipped: EFRLHF_PEFT_PYTHON is not set");
        }
        return;
    };
    let s = Sandbox::new("lora-peft");
    s.experiment(&(datasets() + &sft("sft", "    lora-rank 4\n    lora-targets \"all-linear\"\n")));
    s.ok(&["run", "exp.kdl"]);
    let adapter = s.output_of("sft").join("model");
    let (source, response) = (vec![5u32, 9, 17, 33, 40, 21, 2], vec![11u32, 7, 29, 3, 2]);
    let dev = efrlhf::ml::device(None, 0).unwrap();
    let ours =
        efrlhf::ml::lm::load(&adapter, &dev, Logits(source.clone(), response.clone())).unwrap();
    let out = std::process::Command::new(python)
        .args(["-c", PEFT_LOGITS])
        .arg(llama())
        .arg(&adapter)
        .arg(serde_json::to_string(&source).unwrap())
        .arg(serde_json::to_string(&response).unwrap())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let theirs: Vec<f32> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(ours.len(), theirs.len());
    let max_diff = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max)
    };
    let diff = max_diff(&ours, &theirs);
    assert!(diff < 1e-4, "PEFT's logits differ from efrlhf's by {diff}");
    // The trained adapter moved the model: the comparison is not of the base with itself.
    let base = efrlhf::ml::lm::load(&llama(), &dev, Logits(source, response)).unwrap();
    assert!(max_diff(&ours, &base) > 1e-4);
}
