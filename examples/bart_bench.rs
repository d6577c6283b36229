//! BART training and generation throughput on one backend, for
//! benches/bart.sh. Prints one JSON object.
//!
//!   cargo run --release --example bart_bench -- [cpu|gpu]
//!
//! Config (fixed, the same as benches/bart_torch.py): vocabulary 8000,
//! d_model 256, 2 encoder + 2 decoder layers, 4 heads, FFN 1024 (about 6.0M
//! parameters); batch 8, source 512 tokens, target 128 tokens; AdamW.
#![allow(clippy::print_stdout)]

use std::time::Instant;

use burn::module::Module;
use burn::optim::{AdamWConfig, GradientsParams};
use efrlhf::ml::bart::{
    Bart, BartConfig, Batch, GenerateOptions, Targets, cross_entropy, generate,
};
use efrlhf::rng::Rng;

const BATCH: usize = 8;
const SOURCE: usize = 512;
const TARGET: usize = 128;
const TRAIN_STEPS: usize = 5;
const WARMUP_STEPS: usize = 2;

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<f64>().ok())
            })
        })
        .map(|kib| kib / 1024.0)
        .unwrap_or(0.0)
}

fn tokens(rng: &mut Rng, n: usize, vocab: usize) -> Vec<u32> {
    let mut t = vec![0u32];
    t.extend((1..n - 1).map(|_| 4 + rng.below(vocab as u64 - 4) as u32));
    t.push(2);
    t
}

fn main() {
    let backend = std::env::args().nth(1).unwrap_or_else(|| "cpu".into());
    let device = efrlhf::ml::device(Some(&backend), 0).unwrap_or_else(|e| panic!("{e}"));
    let mut cfg = BartConfig::small(8000, 256, 2, 4);
    cfg.max_position_embeddings = SOURCE;
    cfg.dropout = 0.0;
    let mut rng = Rng::new(1);
    let sources: Vec<Vec<u32>> = (0..BATCH)
        .map(|_| tokens(&mut rng, SOURCE, cfg.vocab_size))
        .collect();
    let targets: Vec<Vec<u32>> = (0..BATCH)
        .map(|_| tokens(&mut rng, TARGET, cfg.vocab_size))
        .collect();

    // Training: forward, backward, AdamW step on a fixed batch.
    let train_dev = device.clone().autodiff();
    let mut model = Bart::new(&cfg, &device).unwrap().fork(&train_dev).train();
    let mut optim = AdamWConfig::new()
        .with_weight_decay(0.01)
        .with_epsilon(1e-8)
        .init();
    let src = Batch::new(&sources, cfg.pad_token_id, &train_dev);
    let tg = Targets::new(&targets, &cfg, &train_dev);
    let mut seconds = Vec::new();
    let mut last_loss = 0.0;
    for step in 0..WARMUP_STEPS + TRAIN_STEPS {
        let t0 = Instant::now();
        let loss = cross_entropy(model.forward(&src, tg.decoder_input.clone()), &tg);
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(1e-4, model, grads);
        last_loss = efrlhf::ml::to_vec(loss)[0];
        if step >= WARMUP_STEPS {
            seconds.push(t0.elapsed().as_secs_f64());
        }
    }
    let step_s = seconds.iter().sum::<f64>() / seconds.len() as f64;

    // Generation: greedy, exactly TARGET new tokens per row (EOS banned before).
    let model = model.valid();
    let opts = GenerateOptions {
        min_new_tokens: TARGET,
        ..GenerateOptions::greedy(TARGET)
    };
    let _ = generate(
        &model,
        &sources[..1],
        &GenerateOptions::greedy(4),
        &mut rng,
        &device,
    );
    let t0 = Instant::now();
    let out = generate(&model, &sources, &opts, &mut rng, &device);
    let gen_s = t0.elapsed().as_secs_f64();
    let generated: usize = out.iter().map(|g| g.tokens.len()).sum();

    println!(
        "{}",
        serde_json::json!({
            "framework": "efrlhf (burn 0.22.1)",
            "backend": backend,
            "parameters": cfg.parameters(),
            "batch": BATCH, "source": SOURCE, "target": TARGET,
            "train_step_seconds": step_s,
            "train_tokens_per_second": (BATCH * (SOURCE + TARGET)) as f64 / step_s,
            "train_target_tokens_per_second": (BATCH * TARGET) as f64 / step_s,
            "generation_seconds": gen_s,
            "generated_tokens": generated,
            "generation_tokens_per_second": generated as f64 / gen_s,
            "final_loss": last_loss,
            "peak_rss_mib": peak_rss_mib(),
        })
    );
}
