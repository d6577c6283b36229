//! BART throughput on one backend, for benches/bart.sh and benches/bart_large.sh.
//! Prints one JSON object.
//!
//!   cargo run --release --example bart_bench -- [cpu|gpu] [small|large] [PHASES] [f32|bf16|f16]
//!
//! `small` (fixed, the same as benches/bart_torch.py): vocabulary 8000,
//! d_model 256, 2 encoder + 2 decoder layers, 4 heads, FFN 1024 (about 6.0M
//! parameters); batch 8, source 512 tokens, target 128 tokens; AdamW.
//! `large`: the shape of facebook/bart-large (d_model 1024, 12 + 12 layers,
//! 16 heads, FFN 4096, vocabulary 50,265; 406M parameters), random weights,
//! batch 2. PHASES is a comma-separated subset of `train,generate,ppo,io`
//! (default `train,generate`); one process per phase gives each its own
//! peak memory. The precision is that of the arithmetic (f32 weights, as
//! the `precision` parameter of `sft` and `ppo`; default f32).
#![allow(clippy::print_stdout)]

#[path = "common/mod.rs"]
mod common;
#[path = "common/ppo.rs"]
mod ppo;
use common::{Materialise, peak_rss_mib};

use std::time::Instant;

use burn::module::Module;
use burn::optim::{AdamWConfig, GradientsParams};
use efrlhf::ml::bart::{
    Bart, BartConfig, Batch, GenerateOptions, Targets, ValueHead, cross_entropy, generate, io,
};
use efrlhf::ml::precision::Precision;
use efrlhf::ml::rlhf::PolicyValue;
use efrlhf::rng::Rng;
use serde_json::{Map, Value, json};

const SOURCE: usize = 512;
const TARGET: usize = 128;

/// Sizes of one benchmark shape.
struct Shape {
    name: &'static str,
    precision: Precision,
    config: BartConfig,
    batch: usize,
    train_steps: usize,
    warmup_steps: usize,
}

fn shape(name: &str, precision: Precision) -> Shape {
    let (name, mut config, batch, train_steps, warmup_steps) = match name {
        "large" => ("large", BartConfig::small(50265, 1024, 12, 16), 2, 2, 1),
        _ => ("small", BartConfig::small(8000, 256, 2, 4), 8, 5, 2),
    };
    config.max_position_embeddings = if name == "large" { 1024 } else { SOURCE };
    config.dropout = 0.0;
    Shape {
        name,
        precision,
        config,
        batch,
        train_steps,
        warmup_steps,
    }
}

fn tokens(rng: &mut Rng, n: usize, vocab: usize) -> Vec<u32> {
    let mut t = vec![0u32];
    t.extend((1..n - 1).map(|_| 4 + rng.below(vocab as u64 - 4) as u32));
    t.push(2);
    t
}

/// Forward, backward and an AdamW step on a fixed batch, timed after warm-up.
fn train(
    s: &Shape,
    model: Bart,
    sources: &[Vec<u32>],
    targets: &[Vec<u32>],
    out: &mut Map<String, Value>,
) -> Bart {
    let device = model.devices()[0].clone();
    let train_dev = device.clone().autodiff();
    let mut model = model.fork(&train_dev).train();
    let mut optim = AdamWConfig::new()
        .with_weight_decay(0.01)
        .with_epsilon(1e-8)
        .init();
    let src = Batch::new(sources, s.config.pad_token_id, &train_dev);
    let tg = Targets::new(targets, &s.config, &train_dev);
    // Per timed step: forward, backward, optimizer (the CPU backend is eager).
    let mut phases = Vec::new();
    let mut last_loss = 0.0;
    for step in 0..s.warmup_steps + s.train_steps {
        let t0 = Instant::now();
        let compute = s.precision.compute(&model);
        let loss = cross_entropy(compute.forward(&src, tg.decoder_input.clone()), &tg);
        let t1 = Instant::now();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let t2 = Instant::now();
        model = optim.step(1e-4, model, grads);
        last_loss = efrlhf::ml::to_vec(loss)[0];
        if step >= s.warmup_steps {
            phases.push([t1 - t0, t2 - t1, t2.elapsed()].map(|d| d.as_secs_f64()));
        }
    }
    let mean = |i: usize| phases.iter().map(|p| p[i]).sum::<f64>() / phases.len() as f64;
    let step_s = mean(0) + mean(1) + mean(2);
    out.insert("train_step_seconds".into(), json!(step_s));
    for (i, phase) in ["forward", "backward", "optimizer"].iter().enumerate() {
        out.insert(format!("train_{phase}_seconds"), json!(mean(i)));
    }
    out.insert(
        "train_tokens_per_second".into(),
        json!((s.batch * (SOURCE + TARGET)) as f64 / step_s),
    );
    out.insert(
        "train_target_tokens_per_second".into(),
        json!((s.batch * TARGET) as f64 / step_s),
    );
    out.insert("final_loss".into(), json!(last_loss));
    model.valid()
}

/// Greedy, exactly TARGET new tokens per row (EOS banned before).
fn generation(
    model: &Bart,
    sources: &[Vec<u32>],
    precision: Precision,
    rng: &mut Rng,
    out: &mut Map<String, Value>,
) {
    let device = model.devices()[0].clone();
    let model = &precision.compute(model);
    let opts = GenerateOptions {
        min_new_tokens: TARGET,
        ..GenerateOptions::greedy(TARGET)
    };
    let _ = generate(
        model,
        &sources[..1],
        &GenerateOptions::greedy(4),
        rng,
        &device,
    );
    let t0 = Instant::now();
    let generated: usize = generate(model, sources, &opts, rng, &device)
        .iter()
        .map(|g| g.tokens.len())
        .sum();
    let gen_s = t0.elapsed().as_secs_f64();
    out.insert("generation_seconds".into(), json!(gen_s));
    out.insert("generated_tokens".into(), json!(generated));
    out.insert(
        "generation_tokens_per_second".into(),
        json!(generated as f64 / gen_s),
    );
}

/// One PPO update (see `common/ppo.rs`).
fn ppo(s: &Shape, model: Bart, sources: &[Vec<u32>], rng: &mut Rng, out: &mut Map<String, Value>) {
    let device = model.devices()[0].clone();
    let trained = PolicyValue {
        value: ValueHead::new(s.config.d_model, &device),
        policy: model.clone(),
    };
    match ppo::timed_update(trained, &model, sources, TARGET, s.precision, rng, &device) {
        Ok((seconds, stats)) => {
            out.insert("ppo_update_seconds".into(), json!(seconds));
            out.insert("ppo_response_length".into(), json!(stats.response_length));
        }
        Err(e) => {
            out.insert("ppo_error".into(), json!(e));
        }
    }
}

/// Saves the model as an HF folder and loads it back, timed.
fn save_and_load(model: &Bart, out: &mut Map<String, Value>) {
    let device = model.devices()[0].clone();
    let dir = std::env::temp_dir().join(format!("bart-bench-{}", std::process::id()));
    let t0 = Instant::now();
    let saved = io::save(model, &dir);
    let save_s = t0.elapsed().as_secs_f64();
    let bytes = std::fs::metadata(dir.join("model.safetensors")).map_or(0, |m| m.len());
    let t0 = Instant::now();
    let loaded = saved.and_then(|()| io::load(&dir, &device));
    let load_s = t0.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(&dir);
    match loaded {
        Ok(_) => {
            out.insert("save_seconds".into(), json!(save_s));
            out.insert("load_seconds".into(), json!(load_s));
            out.insert("safetensors_bytes".into(), json!(bytes));
        }
        Err(e) => {
            out.insert("io_error".into(), json!(e));
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let backend = args.first().map_or("cpu", String::as_str).to_string();
    let precision = match args.get(3).map_or("f32", String::as_str) {
        "f32" => Precision::F32,
        "bf16" => Precision::Bf16,
        "f16" => Precision::F16,
        other => panic!("unknown precision `{other}` (f32, bf16, f16)"),
    };
    let s = shape(args.get(1).map_or("small", String::as_str), precision);
    let phases = args
        .get(2)
        .map_or("train,generate", String::as_str)
        .to_string();
    let device = efrlhf::ml::device(Some(&backend), 0).unwrap_or_else(|e| panic!("{e}"));
    let mut rng = Rng::new(1);
    let sources: Vec<Vec<u32>> = (0..s.batch)
        .map(|_| tokens(&mut rng, SOURCE, s.config.vocab_size))
        .collect();
    let targets: Vec<Vec<u32>> = (0..s.batch)
        .map(|_| tokens(&mut rng, TARGET, s.config.vocab_size))
        .collect();
    let t0 = Instant::now();
    let mut model = Bart::new(&s.config, &device).unwrap_or_else(|e| panic!("{e}"));
    // burn initialises a parameter when it is first read: do it here, as
    // PyTorch does in its constructor, so that no phase times the random
    // initialisation of the weights.
    model.visit(&mut Materialise);
    let mut out = Map::new();
    out.insert("framework".into(), json!("efrlhf (burn 0.22.1)"));
    out.insert("backend".into(), json!(backend));
    out.insert("shape".into(), json!(s.name));
    out.insert("precision".into(), json!(precision.to_string()));
    out.insert("parameters".into(), json!(s.config.parameters()));
    out.insert("init_seconds".into(), json!(t0.elapsed().as_secs_f64()));
    for k in [("batch", s.batch), ("source", SOURCE), ("target", TARGET)] {
        out.insert(k.0.into(), json!(k.1));
    }
    for phase in phases.split(',') {
        match phase {
            "train" => model = train(&s, model, &sources, &targets, &mut out),
            "generate" => generation(&model, &sources, s.precision, &mut rng, &mut out),
            "ppo" => ppo(&s, model.clone(), &sources, &mut rng, &mut out),
            "io" => save_and_load(&model, &mut out),
            other => panic!("unknown phase `{other}` (train, generate, ppo, io)"),
        }
    }
    out.insert("peak_rss_mib".into(), json!(peak_rss_mib()));
    println!("{}", Value::Object(out));
}
