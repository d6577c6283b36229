//! One PPO update as the benchmarks time it (benches/bart_large.sh and
//! benches/lora.sh): sampled rollouts of exactly `target` tokens, policy,
//! reference and value passes over them, then one minibatch step of the
//! clipped losses over the whole batch, scored by the rollouts' length.

use std::time::Instant;

use burn::optim::AdamWConfig;
use burn::tensor::Device;
use efrlhf::ml::decoding::GenerateOptions;
use efrlhf::ml::lm::LanguageModel;
use efrlhf::ml::ppo::{KlController, RewardNorm, RunningMoments};
use efrlhf::ml::precision::Precision;
use efrlhf::ml::rlhf::{PolicyValue, PpoSettings, PpoState, UpdateStats, ppo_update};
use efrlhf::rng::Rng;

/// Times one update of `trained` against `reference`; returns its seconds and statistics.
pub fn timed_update<M: LanguageModel>(
    trained: PolicyValue<M>,
    reference: &M,
    sources: &[Vec<u32>],
    target: usize,
    precision: Precision,
    rng: &mut Rng,
    device: &Device,
) -> Result<(f64, UpdateStats), String> {
    let settings = PpoSettings {
        gamma: 1.0,
        lambda: 0.95,
        clip: 0.2,
        value_clip: 0.2,
        vf_coef: 0.1,
        ce_mix: 0.0,
        ppo_epochs: 1,
        minibatch: sources.len(),
        lr: 1e-5,
        max_grad_norm: 1.0,
        missing_eos_penalty: 0.0,
        reward_norm: RewardNorm::None,
        generation: GenerateOptions {
            sample: true,
            min_new_tokens: target,
            ..GenerateOptions::greedy(target)
        },
        precision,
    };
    let mut state = PpoState {
        kl: KlController {
            value: 0.05,
            adaptive: None,
        },
        reward_moments: RunningMoments::default(),
        loss_scale: None,
    };
    let mut optim = AdamWConfig::new().with_epsilon(1e-8).init();
    let mut reward = |rs: &[Vec<u32>]| -> Result<Vec<f64>, String> {
        Ok(rs.iter().map(|r| r.len() as f64 / target as f64).collect())
    };
    let t0 = Instant::now();
    let (_, stats) = ppo_update(
        trained,
        &mut optim,
        reference,
        sources,
        None,
        None,
        &mut reward,
        &mut state,
        &settings,
        rng,
        device,
    )?;
    Ok((t0.elapsed().as_secs_f64(), stats))
}
