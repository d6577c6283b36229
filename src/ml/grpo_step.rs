//! One critic-free online update (GRPO, RLOO, REINFORCE++, Dr. GRPO):
//! sample `group-size` completions per prompt (the copies share the
//! prompt's encoder pass or key/value cache), score them with every reward
//! function, form advantages within each group, then `iterations` passes of
//! the clipped token loss (plus `β·k3` when the KL is in the loss) over
//! minibatches. The arithmetic is in [`super::grpo`].

use burn::optim::ModuleOptimizer;
use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::bart::model::label_logprobs_and_entropy;
use super::decoding::GenerateOptions;
use super::grpo::{
    Advantage, KlPlacement, LossAggregation, ScaleRewards, aggregate, clipped_token_loss, k1, k3,
    mean_group_std, token_advantages, zero_std_share,
};
use super::lm::LanguageModel;
use super::ppo::{RewardNorm, RunningMoments, masked_mean};
use super::precision::{LossScaler, Precision};
use super::rlhf::score_responses;
use super::train::optimizer_step;
use crate::rng::Rng;
use crate::stats::mean;

/// Settings of the update.
#[derive(Debug, Clone)]
pub struct GrpoSettings {
    /// Completions per prompt.
    pub group_size: usize,
    /// The advantage estimator.
    pub advantage: Advantage,
    /// What the centred rewards are divided by.
    pub scale_rewards: ScaleRewards,
    /// How token losses are aggregated.
    pub loss_aggregation: LossAggregation,
    /// Lower clip ε.
    pub epsilon: f64,
    /// Upper clip ε (DAPO's clip-higher).
    pub epsilon_high: f64,
    /// Passes over each batch of completions (μ).
    pub iterations: usize,
    /// Completions per optimizer step.
    pub minibatch: usize,
    /// KL coefficient β (0: no reference).
    pub beta: f64,
    /// Where the KL enters.
    pub kl: KlPlacement,
    /// Weight of each reward function.
    pub reward_weights: Vec<f64>,
    /// How the weighted rewards are normalised before advantages (and the KL) see them.
    pub reward_norm: RewardNorm,
    /// Subtracted from the (normalised) reward of a completion that never reached EOS.
    pub missing_eos_penalty: f64,
    /// Learning rate.
    pub lr: f64,
    /// Global gradient-norm clip (0: off).
    pub max_grad_norm: f64,
    /// How completions are sampled (one per copy; the group size is set here).
    pub generation: GenerateOptions,
    /// The arithmetic of sampling, scoring and the updates.
    pub precision: Precision,
}

/// What an update carries to the next besides weights and optimizer
/// moments: f16's loss scale and the running reward statistics.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GrpoState {
    /// f16's dynamic loss scale.
    pub loss_scale: Option<LossScaler>,
    /// Running mean and spread of the rewards (`reward_norm`).
    pub reward_moments: RunningMoments,
}

/// Scores completions (token ids, `group_size` adjacent ones per prompt):
/// one list of rewards per reward function.
pub type GroupRewardFn<'a> = dyn FnMut(&[Vec<u32>]) -> Result<Vec<Vec<f64>>, String> + 'a;

/// One update's numbers, under TRL's names where TRL has them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GrpoStats {
    /// Mean weighted reward (before any penalty).
    pub reward: f64,
    /// Mean over groups of the reward's standard deviation.
    pub reward_std: f64,
    /// Share of groups whose completions all got the same reward.
    pub frac_reward_zero_std: f64,
    /// Mean reward of each reward function.
    pub rewards: Vec<f64>,
    /// Mean per-token k3 KL from the reference, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kl: Option<f64>,
    /// Share of tokens where the clip took effect.
    pub clip_ratio: f64,
    /// Mean loss of the optimizer steps.
    pub loss: f64,
    /// Mean completion length in tokens.
    pub completion_length: f64,
    /// Share of completions that never reached EOS.
    pub clipped_ratio: f64,
    /// Mean entropy per completion token (nats).
    pub entropy: f64,
    /// f16 only: optimizer steps skipped because their gradients overflowed.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub skipped_steps: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// The rows of a batch: each prompt `group_size` times, in order.
fn expand(sources: &[Vec<u32>], group: usize) -> Vec<Vec<u32>> {
    sources
        .iter()
        .flat_map(|s| std::iter::repeat_n(s.clone(), group))
        .collect()
}

/// `[rows, t]` from ragged rows (zeros after each row's end).
fn padded(rows: &[&Vec<f64>], t: usize, device: &Device) -> Tensor<2> {
    let mut v = Vec::with_capacity(rows.len() * t);
    for r in rows {
        v.extend((0..t).map(|j| r.get(j).copied().unwrap_or(0.0) as f32));
    }
    Tensor::from_data(TensorData::new(v, [rows.len(), t]), device)
}

/// The weighted reward of each completion, and each function's mean.
fn combine(per_fn: &[Vec<f64>], weights: &[f64], n: usize) -> Result<(Vec<f64>, Vec<f64>), String> {
    let mut total = vec![0.0; n];
    for (k, scores) in per_fn.iter().enumerate() {
        if scores.len() != n {
            return Err(format!(
                "reward function {k} gave {} rewards for {n} completions",
                scores.len()
            ));
        }
        let w = weights.get(k).copied().unwrap_or(1.0);
        for (t, s) in total.iter_mut().zip(scores) {
            *t += w * s;
        }
    }
    Ok((total, per_fn.iter().map(|s| mean(s)).collect()))
}

/// What the optimisation passes read.
struct Batch<'a> {
    rows: &'a [Vec<u32>],
    completions: &'a [Vec<u32>],
    advantages: &'a [Vec<f64>],
    old_lp: Option<&'a [Vec<f64>]>,
    ref_lp: Option<&'a [Vec<f64>]>,
}

/// One optimizer step on completions `mb`; adds to `stats`.
fn minibatch_step<M: LanguageModel>(
    master: M,
    optim: &mut ModuleOptimizer,
    mb: &[usize],
    data: &Batch<'_>,
    settings: &GrpoSettings,
    scaler: &mut LossScaler,
    stats: &mut GrpoStats,
) -> M {
    let device = master.devices()[0].clone();
    let model = settings.precision.compute(&master);
    let rows: Vec<Vec<u32>> = mb.iter().map(|&i| data.rows[i].clone()).collect();
    let completions: Vec<Vec<u32>> = mb.iter().map(|&i| data.completions[i].clone()).collect();
    let (hidden, labels) = model.response_hidden(&rows, &completions, &device);
    let t = labels.ids.dims()[1];
    let (lp, entropy) = label_logprobs_and_entropy(
        model.logits(hidden),
        labels.ids.clone(),
        settings.generation.temperature,
    );
    let mask = labels.mask;
    stats.entropy += super::to_vec(masked_mean(entropy, mask.clone()))[0] as f64;
    let pick = |v: &[Vec<f64>]| padded(&mb.iter().map(|&i| &v[i]).collect::<Vec<_>>(), t, &device);
    // With one pass over one minibatch the policy is the one that sampled: ρ = 1 in value.
    let old = data.old_lp.map_or_else(|| lp.clone().detach(), pick);
    let (token_loss, region) = clipped_token_loss(
        lp.clone(),
        old,
        pick(data.advantages),
        settings.epsilon,
        settings.epsilon_high,
    );
    stats.clip_ratio += super::to_vec(masked_mean(region, mask.clone()))[0] as f64;
    let mut total = token_loss;
    if let Some(reference) = data.ref_lp {
        let kl = k3(lp, pick(reference));
        *stats.kl.get_or_insert(0.0) +=
            super::to_vec(masked_mean(kl.clone().detach(), mask.clone()))[0] as f64;
        if settings.kl == KlPlacement::Loss {
            total = total + kl * settings.beta;
        }
    }
    let max_new = settings.generation.max_new_tokens;
    let loss = aggregate(total, mask, settings.loss_aggregation, max_new);
    stats.loss += super::to_vec(loss.clone())[0] as f64;
    let (master, norm) = optimizer_step(
        master,
        optim,
        loss,
        settings.lr,
        settings.max_grad_norm,
        scaler,
    );
    if !norm.is_finite() {
        stats.skipped_steps += 1;
    }
    master
}

/// Completions, their rewards after penalties, and the update's statistics so far.
type Sampled = (Vec<Vec<u32>>, Vec<f64>, GrpoStats);

/// Samples the groups and scores them: completions, the weighted rewards
/// (normalised, then the missing-EOS penalty) and the stats of the raw ones.
fn sample_and_score<M: LanguageModel>(
    policy: &M,
    sources: &[Vec<u32>],
    reward: &mut GroupRewardFn<'_>,
    moments: &mut RunningMoments,
    settings: &GrpoSettings,
    rng: &mut Rng,
    device: &Device,
) -> Result<Sampled, String> {
    let g = settings.group_size.max(1);
    let opts = GenerateOptions {
        num_return_sequences: g,
        ..settings.generation.clone()
    };
    let generated = policy.generate(sources, &opts, sources.len(), rng, device);
    let completions: Vec<Vec<u32>> = generated.iter().map(|x| x.tokens.clone()).collect();
    let n = completions.len();
    let (raw, per_fn) = combine(&reward(&completions)?, &settings.reward_weights, n)?;
    let unfinished = generated.iter().filter(|x| !x.finished).count();
    let stats = GrpoStats {
        reward: mean(&raw),
        reward_std: mean_group_std(&raw, g),
        frac_reward_zero_std: zero_std_share(&raw, g),
        rewards: per_fn,
        completion_length: completions.iter().map(Vec::len).sum::<usize>() as f64 / n.max(1) as f64,
        clipped_ratio: unfinished as f64 / n.max(1) as f64,
        ..Default::default()
    };
    let mut normalised = raw;
    settings.reward_norm.apply(&mut normalised, moments);
    let penalised = normalised
        .iter()
        .zip(&generated)
        .map(|(r, x)| {
            r - if x.finished {
                0.0
            } else {
                settings.missing_eos_penalty
            }
        })
        .collect();
    Ok((completions, penalised, stats))
}

/// One update of `model` (f32 weights, not on an autodiff device) on
/// `sources`: `group_size` completions each. `reference` is needed when
/// `beta > 0`, and may already be in the compute precision.
#[allow(clippy::too_many_arguments)]
pub fn grpo_update<M: LanguageModel>(
    model: M,
    optim: &mut ModuleOptimizer,
    reference: Option<&M>,
    sources: &[Vec<u32>],
    reward: &mut GroupRewardFn<'_>,
    state: &mut GrpoState,
    settings: &GrpoSettings,
    rng: &mut Rng,
    device: &Device,
) -> Result<(M, GrpoStats), String> {
    let g = settings.group_size.max(1);
    let temperature = settings.generation.temperature;
    let frozen = settings.precision.compute(&model);
    let (completions, rewards, mut stats) = sample_and_score(
        &frozen,
        sources,
        reward,
        &mut state.reward_moments,
        settings,
        rng,
        device,
    )?;
    let rows = expand(sources, g);
    let n = rows.len();
    let steps_per_pass = n.div_ceil(settings.minibatch.max(1));
    // The sampling policy's log-probabilities: needed once the policy moves
    // within the update, or for the k1 KL in the reward.
    let kl_in_reward = settings.beta > 0.0 && settings.kl == KlPlacement::Reward;
    let needs_old = settings.iterations > 1 || steps_per_pass > 1 || kl_in_reward;
    let old_lp = needs_old
        .then(|| score_responses(&frozen, None, &rows, &completions, temperature, device).0);
    let ref_lp = match (settings.beta > 0.0, reference) {
        (true, Some(r)) => {
            Some(score_responses(r, None, &rows, &completions, temperature, device).0)
        }
        (true, None) => return Err("a KL coefficient above 0 needs a reference model".into()),
        (false, _) => None,
    };
    let lens: Vec<usize> = completions.iter().map(Vec::len).collect();
    let k1s = match (&old_lp, &ref_lp, kl_in_reward) {
        (Some(o), Some(r), true) => Some(k1(o, r)),
        _ => None,
    };
    let advantages = token_advantages(
        &rewards,
        &lens,
        g,
        settings.advantage,
        settings.scale_rewards,
        k1s.as_deref().map(|k| (k, settings.beta)),
    );
    let data = Batch {
        rows: &rows,
        completions: &completions,
        advantages: &advantages,
        old_lp: old_lp.as_deref(),
        ref_lp: ref_lp.as_deref(),
    };
    let train_dev = device.clone().autodiff();
    let mut trained = model.fork(&train_dev).train();
    let scaler = state
        .loss_scale
        .get_or_insert_with(|| LossScaler::new(settings.precision));
    let mut order: Vec<usize> = (0..n).collect();
    let mut steps = 0.0f64;
    for _ in 0..settings.iterations.max(1) {
        rng.shuffle(&mut order);
        for mb in order.chunks(settings.minibatch.max(1)) {
            trained = minibatch_step(trained, optim, mb, &data, settings, scaler, &mut stats);
            steps += 1.0;
        }
    }
    for v in [&mut stats.loss, &mut stats.clip_ratio, &mut stats.entropy] {
        *v /= steps.max(1.0);
    }
    if let Some(kl) = stats.kl.as_mut() {
        *kl /= steps.max(1.0);
    }
    Ok((trained.valid(), stats))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ml::bart::{Bart, BartConfig};
    use burn::optim::AdamWConfig;

    fn settings(advantage: Advantage, beta: f64, kl: KlPlacement) -> GrpoSettings {
        GrpoSettings {
            group_size: 4,
            advantage,
            scale_rewards: ScaleRewards::Auto,
            loss_aggregation: LossAggregation::Dapo,
            epsilon: 0.2,
            epsilon_high: 0.2,
            iterations: 1,
            minibatch: 16,
            beta,
            kl,
            reward_weights: vec![1.0],
            reward_norm: RewardNorm::None,
            missing_eos_penalty: 0.0,
            lr: 3e-3,
            max_grad_norm: 1.0,
            generation: GenerateOptions {
                sample: true,
                ..GenerateOptions::greedy(6)
            },
            precision: Precision::F32,
        }
    }

    /// Mean reward over the first and the last three of 40 updates, and the
    /// last updates' KL: the reward is the share of completion tokens equal to 7.
    fn run(s: &GrpoSettings) -> (f64, f64, f64) {
        let dev = crate::ml::device(None, 3).unwrap();
        let mut cfg = BartConfig::small(32, 16, 1, 2);
        cfg.max_position_embeddings = 32;
        cfg.init_std = 0.2;
        let mut base = Bart::new(&cfg, &dev).unwrap();
        base.set_dropout(0.0);
        let sources: Vec<Vec<u32>> = (0..4u32).map(|i| vec![0, 5 + i, 6 + i, 2]).collect();
        let mut model = base.clone();
        let mut optim = AdamWConfig::new().with_epsilon(1e-8).init();
        let mut rng = Rng::new(5);
        let mut state = GrpoState::default();
        let mut reward = |rs: &[Vec<u32>]| -> Result<Vec<Vec<f64>>, String> {
            Ok(vec![
                rs.iter()
                    .map(|r| r.iter().filter(|&&t| t == 7).count() as f64 / r.len().max(1) as f64)
                    .collect(),
            ])
        };
        let mut history = Vec::new();
        for _ in 0..40 {
            let (m, st) = grpo_update(
                model,
                &mut optim,
                Some(&base),
                &sources,
                &mut reward,
                &mut state,
                s,
                &mut rng,
                &dev,
            )
            .unwrap();
            model = m;
            history.push(st);
        }
        let avg = |xs: &[GrpoStats]| xs.iter().map(|x| x.reward).sum::<f64>() / xs.len() as f64;
        let kl = history[37..].iter().filter_map(|x| x.kl).sum::<f64>();
        (avg(&history[..3]), avg(&history[37..]), kl)
    }

    #[test]
    #[allow(clippy::print_stderr)]
    fn every_estimator_raises_a_simple_reward() {
        for (adv, kl) in [
            (Advantage::Grpo, KlPlacement::Loss),
            (Advantage::Rloo, KlPlacement::Reward),
            (Advantage::ReinforcePlusPlus, KlPlacement::Reward),
            (Advantage::DrGrpo, KlPlacement::Loss),
        ] {
            let (first, last, _) = run(&settings(adv, 0.01, kl));
            eprintln!("{adv:?}: reward {first:.3} -> {last:.3}");
            assert!(last > first + 0.3, "{adv:?}: reward {first} -> {last}");
        }
    }

    #[test]
    fn the_kl_term_holds_the_policy_back_in_the_loss_and_in_the_reward() {
        for kl in [KlPlacement::Loss, KlPlacement::Reward] {
            let (_, _, free) = run(&settings(Advantage::Grpo, 1e-6, kl));
            let (_, _, held) = run(&settings(Advantage::Grpo, 2.0, kl));
            assert!(held < free, "{kl:?}: KL with β 2 {held}, with β ~0 {free}");
        }
    }
}
