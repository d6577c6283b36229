//! Full fine-tuning against LoRA, with and without activation checkpointing,
//! for benches/lora.sh. Prints one JSON object.
//!
//!   cargo run --release --example lora_bench -- SHAPE MODE PHASE [SOURCE]
//!
//! SHAPE: `bart-large` (facebook/bart-large: d_model 1024, 12 + 12 layers,
//! FFN 4096, vocabulary 50,265), `qwen2.5-0.5b` (hidden 896, 24 layers, 14
//! heads, 2 key/value heads, intermediate 4,864, vocabulary 151,936, tied)
//! or `qwen2.5-1.5b` (hidden 1,536, 28 layers, 12 heads, 2 key/value heads,
//! intermediate 8,960, tied); random weights. MODE: `full`, `lora` (rank 16,
//! alpha 32, every linear layer of the blocks, as TRL's examples) or
//! `lora-ckpt` (the same with activation checkpointing). PHASE: `sft` (one
//! warm-up and one timed step: forward, backward, AdamW) or `ppo` (one
//! update: sampled rollouts of 128 tokens, policy, reference and value
//! passes, one step of the clipped losses). Batch 2; BART reads SOURCE
//! tokens (default 512) and writes 128, a causal model reads SOURCE - 128
//! prompt tokens and the 128 completion tokens. One process per run gives
//! each its own peak memory.
#![allow(clippy::print_stdout)]

#[path = "common/mod.rs"]
mod common;
#[path = "common/ppo.rs"]
mod ppo;
use common::{Materialise, peak_rss_mib};

use std::time::Instant;

use burn::optim::{AdamWConfig, GradientsParams};
use burn::tensor::Device;
use efrlhf::ml::bart::{Bart, BartConfig, ValueHead};
use efrlhf::ml::causal::{CausalConfig, CausalLm, Family, Sizes};
use efrlhf::ml::lm::{LanguageModel, cross_entropy};
use efrlhf::ml::lora::{self, LoraSpec, Targets};
use efrlhf::ml::precision::Precision;
use efrlhf::ml::rlhf::PolicyValue;
use efrlhf::rng::Rng;
use serde_json::{Map, Value, json};

const BATCH: usize = 2;
const TARGET: usize = 128;

struct Run {
    mode: String,
    phase: String,
    source: usize,
    device: Device,
}

/// Resident memory now (`VmRSS`), in MiB.
fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

fn causal(hidden: usize, inter: usize, layers: usize, heads: usize) -> CausalConfig {
    let sizes = Sizes {
        vocab: 151_936,
        hidden,
        intermediate: inter,
        layers,
        heads,
        kv_heads: 2,
        max_positions: 32_768,
        bos: None,
        eos: 151_643,
        pad: Some(151_643),
    };
    CausalConfig::new(Family::Qwen2, &sizes).unwrap_or_else(|e| panic!("{e}"))
}

fn tokens(rng: &mut Rng, n: usize, vocab: usize) -> Vec<u32> {
    (0..n)
        .map(|_| 4 + rng.below(vocab as u64 - 8) as u32)
        .collect()
}

impl Run {
    fn checkpointing(&self) -> bool {
        self.mode == "lora-ckpt"
    }

    /// The model as the mode trains it: adapters on every linear layer, or all of it.
    fn prepare<M: LanguageModel>(&self, model: M, out: &mut Map<String, Value>) -> M {
        let mut model = model.valid();
        model.visit(&mut Materialise);
        model.set_checkpointing(self.checkpointing());
        out.insert("parameters".into(), json!(model.parameters()));
        if self.mode == "full" {
            return model;
        }
        let spec = LoraSpec {
            rank: 16,
            alpha: 32.0,
            dropout: 0.0,
            targets: Targets::AllLinear,
        };
        let (model, trained) = lora::attach(model, &spec, 1).unwrap_or_else(|e| panic!("{e}"));
        out.insert("trainable_parameters".into(), json!(trained));
        model
    }

    fn go<M: LanguageModel>(&self, model: M, out: &mut Map<String, Value>) {
        let model = self.prepare(model, out);
        let mut rng = Rng::new(3);
        let vocab = model.vocab_size();
        let prompt = if model.shares_positions() {
            self.source - TARGET
        } else {
            self.source
        };
        let sources: Vec<Vec<u32>> = (0..BATCH)
            .map(|_| tokens(&mut rng, prompt, vocab))
            .collect();
        out.insert("static_rss_mib".into(), json!(rss_mib()));
        match self.phase.as_str() {
            "sft" => {
                let targets: Vec<Vec<u32>> = (0..BATCH)
                    .map(|_| tokens(&mut rng, TARGET, vocab))
                    .collect();
                self.sft(model, &sources, &targets, out);
            }
            _ => self.ppo(model, &sources, &mut rng, out),
        }
    }

    fn sft<M: LanguageModel>(
        &self,
        model: M,
        sources: &[Vec<u32>],
        targets: &[Vec<u32>],
        out: &mut Map<String, Value>,
    ) {
        let train_dev = self.device.clone().autodiff();
        let mut model = model.fork(&train_dev).train();
        let mut optim = AdamWConfig::new().with_epsilon(1e-8).init();
        let mut times = Vec::new();
        for _ in 0..2 {
            let t0 = Instant::now();
            let (hidden, labels) = model.response_hidden(sources, targets, &train_dev);
            let loss = cross_entropy(model.logits(hidden), &labels);
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(1e-4, model, grads);
            times.push(t0.elapsed().as_secs_f64());
        }
        out.insert("sft_step_seconds".into(), json!(times[1]));
    }

    fn ppo<M: LanguageModel>(
        &self,
        model: M,
        sources: &[Vec<u32>],
        rng: &mut Rng,
        out: &mut Map<String, Value>,
    ) {
        // With LoRA the reference is the base with the adapters off; in full
        // fine-tuning it shares the weights until the first step replaces them.
        let reference = lora::base_of(&model);
        let trained = PolicyValue {
            value: ValueHead::new(model.hidden_size(), &self.device),
            policy: model,
        };
        let result = ppo::timed_update(
            trained,
            &reference,
            sources,
            TARGET,
            Precision::F32,
            rng,
            &self.device,
        );
        let (seconds, stats) = result.unwrap_or_else(|e| panic!("{e}"));
        out.insert("ppo_update_seconds".into(), json!(seconds));
        out.insert("ppo_response_length".into(), json!(stats.response_length));
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize, d: &str| args.get(i).cloned().unwrap_or_else(|| d.to_string());
    let shape = arg(1, "bart-large");
    let run = Run {
        mode: arg(2, "lora"),
        phase: arg(3, "sft"),
        source: arg(4, "512").parse().unwrap_or(512),
        device: efrlhf::ml::device(None, 1).unwrap_or_else(|e| panic!("{e}")),
    };
    let mut out = Map::new();
    for (k, v) in [
        ("framework", "efrlhf".to_string()),
        ("shape", shape.clone()),
        ("mode", run.mode.clone()),
        ("phase", run.phase.clone()),
    ] {
        out.insert(k.into(), json!(v));
    }
    out.insert("source".into(), json!(run.source));
    out.insert("batch".into(), json!(BATCH));
    match shape.as_str() {
        "bart-large" => {
            let mut config = BartConfig::small(50265, 1024, 12, 16);
            config.max_position_embeddings = 1024;
            config.dropout = 0.0;
            run.go(Bart::new(&config, &run.device).unwrap(), &mut out);
        }
        "qwen2.5-1.5b" => run.go(
            CausalLm::new(&causal(1536, 8960, 28, 12), &run.device).unwrap(),
            &mut out,
        ),
        _ => run.go(
            CausalLm::new(&causal(896, 4864, 24, 14), &run.device).unwrap(),
            &mut out,
        ),
    }
    out.insert("peak_rss_mib".into(), json!(peak_rss_mib()));
    println!("{}", Value::Object(out));
}
