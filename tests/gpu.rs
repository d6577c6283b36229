//! The wgpu backend against the CPU backend (built with `--features gpu`;
//! CI runs it on Mesa's software Vulkan driver, lavapipe): the same forward
//! pass and the same training steps, to float32 tolerance.
#![cfg(feature = "gpu")]

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use efrlhf::ml::bart::train::{
    Checkpoints, Example, Observer, SftSettings, StepLog, Validation, train_sft,
};
use efrlhf::ml::bart::{Bart, Batch, Targets, io};
use efrlhf::ml::to_vec;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bart")
}

fn rows(key: &str) -> Vec<Vec<u32>> {
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture().join("expected.json")).unwrap())
            .unwrap();
    serde_json::from_value(meta[key].clone()).unwrap()
}

fn devices() -> (Device, Device) {
    let gpu = efrlhf::ml::gpu().unwrap_or_else(|e| {
        panic!("{e}: the gpu tests need a Vulkan driver (Linux without a GPU: apt-get install mesa-vulkan-drivers)")
    });
    eprintln!("wgpu adapter: {} (software: {})", gpu.adapter, gpu.software);
    (efrlhf::ml::device(Some("cpu"), 0).unwrap(), gpu.device)
}

fn logits(model: &Bart, dev: &Device) -> Vec<f32> {
    let source = Batch::new(&rows("sources"), 1, dev);
    let targets = Targets::new(&rows("targets"), &model.config, dev);
    to_vec(model.forward(&source, targets.decoder_input))
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn wgpu_forward_pass_equals_cpu() {
    let (cpu, gpu) = devices();
    let (on_cpu, _) = io::load(&fixture().join("tiny"), &cpu).unwrap();
    let (on_gpu, _) = io::load(&fixture().join("tiny"), &gpu).unwrap();
    let (a, b) = (logits(&on_cpu, &cpu), logits(&on_gpu, &gpu));
    let d = max_diff(&a, &b);
    eprintln!("max |logit difference| wgpu vs cpu: {d:e}");
    assert!(d < 1e-4, "{d}");
}

struct Losses(Vec<f64>);

impl Observer for Losses {
    fn step(&mut self, log: &StepLog, _: usize) {
        self.0.push(log.loss);
    }
    fn validate(&mut self, _: &Bart, step: usize) -> Validation {
        Validation {
            step,
            loss: 0.0,
            score: 0.0,
            extra: Default::default(),
        }
    }
}

#[test]
fn wgpu_training_steps_equal_cpu() {
    let (cpu, gpu) = devices();
    let train: Vec<Example> = rows("sources")
        .into_iter()
        .zip(rows("targets"))
        .map(|(source, target)| Example { source, target })
        .collect();
    let settings = SftSettings {
        epochs: 3,
        lr: 1e-3,
        batch: 3,
        grad_accum: 1,
        warmup: 0.0,
        min_lr_ratio: 1.0,
        weight_decay: 0.01,
        max_grad_norm: 1.0,
        eval_every: 100,
        checkpoint_every: 0,
        keep_best: false,
        seed: 1,
    };
    let run = |dev: &Device, name: &str| {
        let (mut model, _) = io::load(&fixture().join("tiny"), dev).unwrap();
        model.set_dropout(0.0);
        let dir = std::env::temp_dir().join(format!("efrlhf-gpu-{name}-{}", std::process::id()));
        let mut losses = Losses(Vec::new());
        let trained = train_sft(
            model,
            &train,
            &settings,
            &Checkpoints { dir: dir.clone() },
            &mut losses,
            dev,
        )
        .unwrap();
        std::fs::remove_dir_all(&dir).ok();
        (losses.0, logits(&trained.model, dev))
    };
    let (cpu_losses, cpu_logits) = run(&cpu, "cpu");
    let (gpu_losses, gpu_logits) = run(&gpu, "gpu");
    for (a, b) in cpu_losses.iter().zip(&gpu_losses) {
        assert!((a - b).abs() < 1e-4, "{cpu_losses:?} vs {gpu_losses:?}");
    }
    let d = max_diff(&cpu_logits, &gpu_logits);
    eprintln!("after 3 steps, max |logit difference| wgpu vs cpu: {d:e}");
    assert!(d < 1e-3, "{d}");
}
