//! The tiny BART fixture of tests/fixtures/bart and a training helper,
//! shared by tests/bart.rs and tests/gpu.rs.
#![allow(dead_code)]

use std::path::PathBuf;

use burn::tensor::Device;
use efrlhf::ml::bart::train::{
    Checkpoints, Example, Observer, SftSettings, StepLog, Validation, train_sft,
};
use efrlhf::ml::bart::{Bart, Batch, Targets, io};
use efrlhf::ml::to_vec;

/// The fixture folder: under the checkout the test binary runs in (cargo sets
/// `CARGO_MANIFEST_DIR` when it runs a test; benches/gpu-check.sh sets it where
/// a prebuilt binary runs without cargo), else under the one it was built in.
pub fn fixture() -> PathBuf {
    let root = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    root.join("tests/fixtures/bart")
}

/// What transformers recorded: inputs, teacher-forced logits, greedy outputs.
pub struct Expected {
    pub sources: Vec<Vec<u32>>,
    pub targets: Vec<Vec<u32>>,
    pub greedy: Vec<Vec<u32>>,
    pub max_new_tokens: usize,
    pub logits: Vec<f32>,
    pub shape: Vec<usize>,
}

pub fn expected() -> Expected {
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture().join("expected.json")).unwrap())
            .unwrap();
    let rows = |k: &str| -> Vec<Vec<u32>> { serde_json::from_value(meta[k].clone()).unwrap() };
    let bytes = std::fs::read(fixture().join("expected.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let view = st.tensor("logits").unwrap();
    let logits = view
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Expected {
        sources: rows("sources"),
        targets: rows("targets"),
        greedy: rows("greedy"),
        max_new_tokens: meta["max_new_tokens"].as_u64().unwrap() as usize,
        logits,
        shape: view.shape().to_vec(),
    }
}

/// The fixture model on `dev`, dropout off when asked.
pub fn tiny(dev: &Device, dropout: bool) -> Bart {
    let (mut model, report) = io::load(&fixture().join("tiny"), dev).unwrap();
    assert!(report.unused.is_empty(), "{:?}", report.unused);
    if !dropout {
        model.set_dropout(0.0);
    }
    model
}

/// Teacher-forced logits of the fixture inputs.
pub fn teacher_forced(model: &Bart, e: &Expected, dev: &Device) -> Vec<f32> {
    let source = Batch::new(&e.sources, model.config.pad_token_id, dev);
    let targets = Targets::new(&e.targets, &model.config, dev);
    to_vec(model.forward(&source, targets.decoder_input))
}

pub fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Losses and gradient norms, step by step.
#[derive(Default)]
pub struct Recorder {
    pub losses: Vec<f64>,
    pub grad_norms: Vec<f64>,
}

impl Observer<Bart> for Recorder {
    fn step(&mut self, log: &StepLog, _: usize) {
        self.losses.push(log.loss);
        self.grad_norms.push(log.grad_norm);
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

/// Constant learning rate 1e-3, weight decay 0.01, no warm-up.
pub fn settings(epochs: usize, batch: usize, grad_accum: usize, max_grad_norm: f64) -> SftSettings {
    SftSettings {
        epochs,
        lr: 1e-3,
        batch,
        grad_accum,
        warmup: 0.0,
        min_lr_ratio: 1.0,
        weight_decay: 0.01,
        max_grad_norm,
        eval_every: 100,
        checkpoint_every: 0,
        keep_best: false,
        seed: 1,
        precision: efrlhf::ml::precision::Precision::F32,
    }
}

/// Trains the fixture model (dropout off) on the fixture pairs; returns the
/// trained model and what was recorded.
pub fn train_tiny(settings: &SftSettings, dev: &Device, name: &str) -> (Bart, Recorder) {
    let e = expected();
    let train: Vec<Example> = e
        .sources
        .iter()
        .zip(&e.targets)
        .map(|(s, t)| Example {
            source: s.clone(),
            target: t.clone(),
        })
        .collect();
    let dir = std::env::temp_dir().join(format!("efrlhf-{name}-{}", std::process::id()));
    let mut rec = Recorder::default();
    let trained = train_sft(
        tiny(dev, false),
        &train,
        settings,
        &Checkpoints { dir: dir.clone() },
        &mut rec,
        dev,
    )
    .unwrap();
    std::fs::remove_dir_all(&dir).ok();
    (trained.model, rec)
}
