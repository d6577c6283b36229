//! One GRPO update against one PPO update of the same number of sampled
//! summaries, for benches/algorithms.sh. Prints one JSON object.
//!
//!   cargo run --release --example algorithms_bench -- [cpu|gpu] [bart|qwen2] [quickstart|long-prompt]
//!
//! `quickstart`: the quickstart's shapes (vocabulary 2,000, width 64, 2
//! layers, 4 heads), 160-token sources, 16 summaries sampled to 96 tokens.
//! `long-prompt`: width 256, 4 layers, vocabulary 8,000, 1,024-token sources,
//! summaries of 32 tokens (where reading the prompt dominates). Random weights.
//! PPO: 16 products, one summary each, 2 epochs of minibatches of 4 with
//! the critic (experiments/algorithms.kdl's settings); GRPO: 4 products, 4
//! summaries each (the copies share the source's encoder pass or key/value
//! cache), one pass in minibatches of 4, k3 KL against a frozen reference.
//! Sampling alone is timed too: 16 distinct sources against 4 × 4 copies.
#![allow(clippy::print_stdout)]

#[path = "common/mod.rs"]
mod common;
use common::{Materialise, peak_rss_mib};

use std::time::Instant;

use burn::optim::AdamWConfig;
use efrlhf::ml::bart::{Bart, BartConfig, ValueHead};
use efrlhf::ml::causal::{CausalConfig, CausalLm, Family, Sizes};
use efrlhf::ml::decoding::GenerateOptions;
use efrlhf::ml::grpo::{Advantage, KlPlacement, LossAggregation, ScaleRewards};
use efrlhf::ml::grpo_step::{GrpoSettings, GrpoState, grpo_update};
use efrlhf::ml::lm::LanguageModel;
use efrlhf::ml::ppo::{KlController, RewardNorm, RunningMoments};
use efrlhf::ml::precision::Precision;
use efrlhf::ml::rlhf::{PolicyValue, PpoSettings, PpoState, ppo_update};
use efrlhf::rng::Rng;
use serde_json::{Map, Value, json};

const COMPLETIONS: usize = 16;
const GROUP: usize = 4;
const REPEATS: usize = 3;

/// The sizes of one benchmark shape.
#[derive(Clone, Copy)]
struct Shape {
    name: &'static str,
    vocab: usize,
    width: usize,
    layers: usize,
    source: usize,
    new_tokens: usize,
}

const QUICKSTART: Shape = Shape {
    name: "quickstart",
    vocab: 2000,
    width: 64,
    layers: 2,
    source: 160,
    new_tokens: 96,
};

const LONG_PROMPT: Shape = Shape {
    name: "long-prompt",
    vocab: 8000,
    width: 256,
    layers: 4,
    source: 1024,
    new_tokens: 32,
};

fn sampling(shape: Shape) -> GenerateOptions {
    GenerateOptions {
        sample: true,
        temperature: 0.9,
        // Every summary runs to the limit: EOS is banned, so both sides decode the same number of tokens.
        min_new_tokens: shape.new_tokens,
        ..GenerateOptions::greedy(shape.new_tokens)
    }
}

fn sources(n: usize, shape: Shape, rng: &mut Rng) -> Vec<Vec<u32>> {
    (0..n)
        .map(|_| {
            let mut s: Vec<u32> = (0..shape.source - 2)
                .map(|_| 4 + rng.below(shape.vocab as u64 - 4) as u32)
                .collect();
            s.insert(0, 0);
            s.push(2);
            s
        })
        .collect()
}

/// A reward that varies across summaries: the share of even token ids.
fn reward(rs: &[Vec<u32>]) -> Vec<f64> {
    rs.iter()
        .map(|r| r.iter().filter(|&&t| t % 2 == 0).count() as f64 / r.len().max(1) as f64)
        .collect()
}

/// Median seconds of `REPEATS` runs after one warm-up.
fn timed(mut f: impl FnMut()) -> f64 {
    f();
    let mut secs: Vec<f64> = (0..REPEATS)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect();
    secs.sort_by(f64::total_cmp);
    secs[REPEATS / 2]
}

fn ppo_settings(shape: Shape) -> PpoSettings {
    PpoSettings {
        gamma: 0.99,
        lambda: 0.95,
        clip: 0.2,
        value_clip: 0.2,
        vf_coef: 0.75,
        ce_mix: 0.0,
        ppo_epochs: 2,
        minibatch: 4,
        lr: 3e-4,
        max_grad_norm: 1.0,
        missing_eos_penalty: 0.0,
        reward_norm: RewardNorm::Normalize,
        generation: sampling(shape),
        precision: Precision::F32,
    }
}

fn grpo_settings(shape: Shape) -> GrpoSettings {
    GrpoSettings {
        group_size: GROUP,
        advantage: Advantage::Grpo,
        scale_rewards: ScaleRewards::Auto,
        loss_aggregation: LossAggregation::Dapo,
        epsilon: 0.2,
        epsilon_high: 0.2,
        iterations: 1,
        minibatch: 4,
        beta: 0.04,
        kl: KlPlacement::Loss,
        reward_weights: vec![1.0],
        reward_norm: RewardNorm::None,
        missing_eos_penalty: 0.0,
        lr: 3e-4,
        max_grad_norm: 1.0,
        generation: sampling(shape),
        precision: Precision::F32,
    }
}

fn measure<M: LanguageModel>(
    model: M,
    shape: Shape,
    dev: &burn::tensor::Device,
) -> Map<String, Value> {
    model.visit(&mut Materialise);
    let mut rng = Rng::new(1);
    let distinct = sources(COMPLETIONS, shape, &mut rng);
    let prompts = sources(COMPLETIONS / GROUP, shape, &mut rng);
    let mut out = Map::new();
    out.insert("architecture".into(), json!(model.architecture()));
    out.insert("parameters".into(), json!(model.parameters()));
    out.insert("shape".into(), json!(shape.name));
    out.insert("source_tokens".into(), json!(shape.source));
    out.insert("new_tokens".into(), json!(shape.new_tokens));
    let opts = sampling(shape);
    let grouped = GenerateOptions {
        num_return_sequences: GROUP,
        ..opts.clone()
    };
    let gen_distinct = timed(|| {
        model.generate(&distinct, &opts, COMPLETIONS, &mut rng, dev);
    });
    let gen_grouped = timed(|| {
        model.generate(&prompts, &grouped, prompts.len(), &mut rng, dev);
    });
    let mut pv = PolicyValue {
        policy: model.clone(),
        value: ValueHead::new(shape.width, dev),
    };
    let mut optim = AdamWConfig::new().init();
    let mut state = PpoState {
        kl: KlController {
            value: 0.2,
            adaptive: None,
        },
        reward_moments: RunningMoments::default(),
        loss_scale: None,
    };
    let ppo = ppo_settings(shape);
    let ppo_secs = timed(|| {
        let mut r = |rs: &[Vec<u32>]| -> Result<Vec<f64>, String> { Ok(reward(rs)) };
        let (m, _) = ppo_update(
            pv.clone(),
            &mut optim,
            &model,
            &distinct,
            None,
            None,
            &mut r,
            &mut state,
            &ppo,
            &mut rng,
            dev,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        pv = m;
    });
    let grpo = grpo_settings(shape);
    let mut policy = model.clone();
    let mut optim = AdamWConfig::new().init();
    let mut grpo_state = GrpoState::default();
    let grpo_secs = timed(|| {
        let mut r = |rs: &[Vec<u32>]| -> Result<Vec<Vec<f64>>, String> { Ok(vec![reward(rs)]) };
        let (m, _) = grpo_update(
            policy.clone(),
            &mut optim,
            Some(&model),
            &prompts,
            &mut r,
            &mut grpo_state,
            &grpo,
            &mut rng,
            dev,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        policy = m;
    });
    out.insert("completions".into(), json!(COMPLETIONS));
    out.insert("group_size".into(), json!(GROUP));
    out.insert("generate_distinct_seconds".into(), json!(gen_distinct));
    out.insert("generate_grouped_seconds".into(), json!(gen_grouped));
    out.insert("ppo_update_seconds".into(), json!(ppo_secs));
    out.insert("grpo_update_seconds".into(), json!(grpo_secs));
    out.insert("grpo_over_ppo".into(), json!(grpo_secs / ppo_secs));
    out.insert(
        "grouped_over_distinct_sampling".into(),
        json!(gen_grouped / gen_distinct),
    );
    out.insert("peak_rss_mib".into(), json!(peak_rss_mib()));
    out
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let backend = args.get(1).map_or("cpu", String::as_str);
    let family = args.get(2).map_or("bart", String::as_str);
    let shape = match args.get(3).map_or("quickstart", String::as_str) {
        "long-prompt" => LONG_PROMPT,
        _ => QUICKSTART,
    };
    let dev = efrlhf::ml::device(Some(backend), 0).unwrap_or_else(|e| panic!("{e}"));
    let positions = shape.source + shape.new_tokens + 8;
    let mut out = match family {
        "qwen2" => {
            let sizes = Sizes {
                vocab: shape.vocab,
                hidden: shape.width,
                intermediate: 4 * shape.width,
                layers: shape.layers,
                heads: 4,
                kv_heads: 4,
                max_positions: positions,
                bos: None,
                eos: 2,
                pad: Some(1),
            };
            let cfg = CausalConfig::new(Family::Qwen2, &sizes).unwrap_or_else(|e| panic!("{e}"));
            let model = CausalLm::new(&cfg, &dev).unwrap_or_else(|e| panic!("{e}"));
            measure(model, shape, &dev)
        }
        _ => {
            let mut cfg = BartConfig::small(shape.vocab, shape.width, shape.layers, 4);
            cfg.max_position_embeddings = positions;
            let mut model = Bart::new(&cfg, &dev).unwrap_or_else(|e| panic!("{e}"));
            model.set_dropout(0.0);
            measure(model, shape, &dev)
        }
    };
    out.insert("backend".into(), json!(backend));
    println!("{}", Value::Object(out));
}
