//! A decoder-only model's throughput on one backend, for benches/causal.sh.
//! Prints one JSON object.
//!
//!   cargo run --release --example causal_bench -- [cpu|gpu] [qwen2.5-0.5b|tiny] [train|generate]
//!
//! `qwen2.5-0.5b`: the shape of Qwen/Qwen2.5-0.5B (hidden 896, 24 layers,
//! 14 heads, 2 key/value heads, intermediate 4,864, vocabulary 151,936,
//! tied; 494M parameters), random weights. Batch 2: SFT on 512-token rows
//! (384 prompt tokens, loss on the 128 completion tokens) with AdamW;
//! greedy generation of exactly 128 tokens after 512-token prompts. One
//! process per phase gives each its own peak memory (benches/causal.sh).
#![allow(clippy::print_stdout)]

#[path = "common/mod.rs"]
mod common;
use common::{Materialise, peak_rss_mib};

use std::time::Instant;

use burn::module::Module;
use burn::optim::{AdamWConfig, GradientsParams};
use efrlhf::ml::causal::{CausalConfig, CausalLm, Family, Sizes, generate};
use efrlhf::ml::decoding::{GenerateOptions, TokenRules};
use efrlhf::ml::lm::{LanguageModel, cross_entropy};
use efrlhf::rng::Rng;
use serde_json::{Map, Value, json};

const BATCH: usize = 2;
const PROMPT: usize = 384;
const COMPLETION: usize = 128;
const GEN_PROMPT: usize = 512;
const NEW_TOKENS: usize = 128;

fn config(shape: &str) -> CausalConfig {
    let (vocab, hidden, inter, layers, heads, kv) = match shape {
        "tiny" => (1000, 64, 256, 2, 4, 2),
        _ => (151_936, 896, 4864, 24, 14, 2),
    };
    let sizes = Sizes {
        vocab,
        hidden,
        intermediate: inter,
        layers,
        heads,
        kv_heads: kv,
        max_positions: 32_768,
        bos: None,
        eos: 151_643 % vocab as u32,
        pad: Some(151_643 % vocab as u32),
    };
    CausalConfig::new(Family::Qwen2, &sizes).unwrap_or_else(|e| panic!("{e}"))
}

fn tokens(rng: &mut Rng, n: usize, vocab: usize) -> Vec<u32> {
    (0..n).map(|_| rng.below(vocab as u64 - 1) as u32).collect()
}

/// One warm-up and two timed SFT steps: forward, backward, AdamW.
fn train(model: CausalLm, rng: &mut Rng, out: &mut Map<String, Value>) {
    let vocab = model.config.vocab_size;
    let device = model.devices()[0].clone();
    let train_dev = device.clone().autodiff();
    let mut model = model.fork(&train_dev).train();
    let mut optim = AdamWConfig::new()
        .with_weight_decay(0.01)
        .with_epsilon(1e-8)
        .init();
    let prompts: Vec<Vec<u32>> = (0..BATCH).map(|_| tokens(rng, PROMPT, vocab)).collect();
    let completions: Vec<Vec<u32>> = (0..BATCH).map(|_| tokens(rng, COMPLETION, vocab)).collect();
    let mut times = Vec::new();
    let mut last = 0.0;
    for step in 0..3 {
        let t0 = Instant::now();
        let (hidden, labels) = model.response_hidden(&prompts, &completions, &train_dev);
        let loss = cross_entropy(LanguageModel::logits(&model, hidden), &labels);
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(1e-5, model, grads);
        last = efrlhf::ml::to_vec(loss)[0];
        if step > 0 {
            times.push(t0.elapsed().as_secs_f64());
        }
    }
    let step = times.iter().sum::<f64>() / times.len() as f64;
    out.insert("train_step_seconds".into(), json!(step));
    out.insert(
        "train_tokens_per_second".into(),
        json!((BATCH * (PROMPT + COMPLETION)) as f64 / step),
    );
    out.insert("final_loss".into(), json!(last));
}

/// Greedy, exactly NEW_TOKENS per row (EOS never ends a row).
fn generation(model: &CausalLm, rng: &mut Rng, out: &mut Map<String, Value>) {
    let vocab = model.config.vocab_size;
    let device = model.devices()[0].clone();
    let prompts: Vec<Vec<u32>> = (0..BATCH).map(|_| tokens(rng, GEN_PROMPT, vocab)).collect();
    let rules = TokenRules {
        vocab,
        pad: model.pad(),
        ..TokenRules::default()
    };
    let opts = GenerateOptions::greedy(NEW_TOKENS);
    let t0 = Instant::now();
    let got = generate(model, &prompts, &opts, &rules, rng, &device);
    let secs = t0.elapsed().as_secs_f64();
    assert!(got.iter().all(|g| g.tokens.len() == NEW_TOKENS));
    out.insert("generation_seconds".into(), json!(secs));
    out.insert(
        "generation_tokens_per_second".into(),
        json!((BATCH * NEW_TOKENS) as f64 / secs),
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let backend = args.first().map_or("cpu", String::as_str).to_string();
    let shape = args
        .get(1)
        .map_or("qwen2.5-0.5b", String::as_str)
        .to_string();
    let phase = args.get(2).map_or("train", String::as_str).to_string();
    let device = efrlhf::ml::device(Some(&backend), 0).unwrap_or_else(|e| panic!("{e}"));
    let cfg = config(&shape);
    let t0 = Instant::now();
    let model = CausalLm::new(&cfg, &device).unwrap_or_else(|e| panic!("{e}"));
    model.visit(&mut Materialise);
    let mut out = Map::new();
    out.insert("framework".into(), json!("efrlhf (burn 0.22.1)"));
    out.insert("backend".into(), json!(backend));
    out.insert("shape".into(), json!(shape));
    out.insert("parameters".into(), json!(model.num_params()));
    out.insert("init_seconds".into(), json!(t0.elapsed().as_secs_f64()));
    let mut rng = Rng::new(1);
    match phase.as_str() {
        "train" => train(model, &mut rng, &mut out),
        "generate" => generation(&model, &mut rng, &mut out),
        other => panic!("unknown phase `{other}` (train, generate)"),
    }
    out.insert("peak_rss_mib".into(), json!(peak_rss_mib()));
    println!("{}", Value::Object(out));
}
