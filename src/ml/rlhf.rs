//! One PPO update of the summarizer against a sequence-level reward: sample
//! responses, score them, compute the policy's and the frozen reference's
//! log-probabilities and the values, shape rewards with the KL penalty, GAE,
//! whiten, then clipped policy and value losses (plus an optional supervised
//! cross-entropy term) over a few epochs of minibatches. The arithmetic is
//! in [`super::ppo`]; this file moves tensors around it.

use burn::module::Module;
use burn::optim::ModuleOptimizer;
use burn::tensor::{Device, Tensor, TensorData};

use super::bart::model::{ValueHead, label_logprobs, label_logprobs_and_entropy};
use super::decoding::{GenerateOptions, Generated};
use super::lm::{LanguageModel, cross_entropy};
use super::ppo::{
    KlController, RewardNorm, RunningMoments, gae, masked_mean, policy_loss, sequence_kl,
    shaped_rewards, value_loss, whiten,
};
use super::precision::{LossScaler, Precision};
use super::train::optimizer_step;
use crate::rng::Rng;
use crate::stats::{mean, sample_std};

/// The trained pair: the policy and its critic, optimised together.
#[derive(Module, Debug)]
pub struct PolicyValue<M: Module> {
    /// The summarizer being trained.
    pub policy: M,
    /// Its critic.
    pub value: ValueHead,
}

/// What a PPO checkpoint holds besides the optimizer: the trained pair and,
/// when the KL reference is the previous policy, that policy.
#[derive(Module, Debug)]
pub struct PpoModules<M: Module> {
    /// Policy and critic.
    pub trained: PolicyValue<M>,
    /// The policy one update behind, when it is the KL reference.
    pub previous: Option<M>,
}

/// PPO settings (the authors' values as defaults in the stage manifest).
#[derive(Debug, Clone)]
pub struct PpoSettings {
    /// Discount.
    pub gamma: f64,
    /// GAE λ.
    pub lambda: f64,
    /// Policy ratio clip.
    pub clip: f64,
    /// Value clip.
    pub value_clip: f64,
    /// Weight of the value loss.
    pub vf_coef: f64,
    /// Weight of the supervised cross-entropy term.
    pub ce_mix: f64,
    /// Passes over each batch of rollouts.
    pub ppo_epochs: usize,
    /// Rollouts per optimizer step.
    pub minibatch: usize,
    /// Learning rate.
    pub lr: f64,
    /// Global gradient-norm clip (0: off).
    pub max_grad_norm: f64,
    /// Subtracted from the (normalised) score of a response that did not reach EOS.
    pub missing_eos_penalty: f64,
    /// How scores are normalised before they become the last token's reward.
    pub reward_norm: RewardNorm,
    /// How rollouts are sampled.
    pub generation: GenerateOptions,
    /// The arithmetic of rollouts, scoring and the updates (weights stay f32).
    pub precision: Precision,
}

/// Scores a batch of responses (token ids), one score each.
pub type RewardFn<'a> = dyn FnMut(&[Vec<u32>]) -> Result<Vec<f64>, String> + 'a;

/// What PPO carries from one update to the next besides weights and
/// optimizer moments: the KL coefficient and the reward statistics.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PpoState {
    /// The KL coefficient and its controller.
    pub kl: KlController,
    #[serde(default)]
    /// Running moments of the scores (for `reward-norm`).
    pub reward_moments: RunningMoments,
    /// f16's loss scale (None until the first f16 update).
    #[serde(default)]
    pub loss_scale: Option<LossScaler>,
}

/// What one update measured.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct UpdateStats {
    /// Mean reward-model score of the responses, as the reward model gives it.
    pub score: f64,
    /// Its standard deviation over the batch.
    #[serde(default)]
    pub score_std: f64,
    /// Mean sequence reward after normalisation and the missing-EOS penalty.
    #[serde(default)]
    pub reward: f64,
    /// Share of responses that never reached EOS.
    #[serde(default)]
    pub missing_eos: f64,
    /// Mean entropy of the policy per response token (nats).
    #[serde(default)]
    pub entropy: f64,
    /// Mean KL from the reference per response, summed over tokens.
    pub kl: f64,
    /// β used.
    pub kl_coef: f64,
    /// Mean clipped policy loss.
    pub policy_loss: f64,
    /// Mean clipped value loss.
    pub value_loss: f64,
    /// Mean supervised cross-entropy.
    pub ce_loss: f64,
    /// Share of tokens whose ratio was clipped.
    pub clipfrac: f64,
    /// Mean probability ratio new / old.
    pub ratio: f64,
    /// Mean response length in tokens.
    pub response_length: f64,
    /// f16 only: minibatch steps skipped because their gradients overflowed.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub skipped_steps: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

fn rows_to_tensor(rows: &[Vec<f64>], t: usize, device: &Device) -> Tensor<2> {
    let mut v = Vec::with_capacity(rows.len() * t);
    for r in rows {
        v.extend((0..t).map(|j| r.get(j).copied().unwrap_or(0.0) as f32));
    }
    Tensor::from_data(TensorData::new(v, [rows.len(), t]), device)
}

fn tensor_rows(t: Tensor<2>, lens: &[usize]) -> Vec<Vec<f64>> {
    let [_, w] = t.dims();
    let flat = super::to_vec(t);
    lens.iter()
        .enumerate()
        .map(|(i, &n)| flat[i * w..i * w + n].iter().map(|&x| x as f64).collect())
        .collect()
}

/// Per-token log-probabilities (logits divided by `temperature`, as TRL does)
/// and, with a value head, values of each response token.
pub fn score_responses<M: LanguageModel>(
    policy: &M,
    value: Option<&ValueHead>,
    sources: &[Vec<u32>],
    responses: &[Vec<u32>],
    temperature: f64,
    device: &Device,
) -> (Vec<Vec<f64>>, Option<Vec<Vec<f64>>>) {
    let lens: Vec<usize> = responses.iter().map(Vec::len).collect();
    let (hidden, labels) = policy.response_hidden(sources, responses, device);
    let lp = label_logprobs(policy.logits(hidden.clone()), labels.ids, temperature);
    let values = value.map(|v| tensor_rows(v.forward(hidden), &lens));
    (tensor_rows(lp, &lens), values)
}

/// What one update collects before optimising: the responses, their
/// scores (raw and as rewards), and the log-probabilities and values of
/// the policy that produced them and of the reference.
struct Experience {
    responses: Vec<Vec<u32>>,
    finished: Vec<bool>,
    raw_scores: Vec<f64>,
    scores: Vec<f64>,
    old_lp: Vec<Vec<f64>>,
    old_values: Vec<Vec<f64>>,
    ref_lp: Vec<Vec<f64>>,
}

/// Rolls out (or takes the `given` responses), scores and normalises.
#[allow(clippy::too_many_arguments)]
fn collect_experience<M: LanguageModel>(
    model: &PolicyValue<M>,
    reference: &M,
    sources: &[Vec<u32>],
    given: Option<&[Vec<u32>]>,
    reward: &mut RewardFn<'_>,
    state: &mut PpoState,
    settings: &PpoSettings,
    rng: &mut Rng,
    device: &Device,
) -> Result<Experience, String> {
    let temperature = settings.generation.temperature;
    // Rollout, without gradients.
    let frozen = settings.precision.compute(&model.clone().valid());
    let reference = &settings.precision.compute(reference);
    let generated = match given {
        Some(rows) => rows
            .iter()
            .map(|r| Generated {
                tokens: r.clone(),
                finished: true,
            })
            .collect(),
        // One batch: rollouts sample from one RNG stream in order.
        None => frozen
            .policy
            .generate(sources, &settings.generation, sources.len(), rng, device),
    };
    let responses: Vec<Vec<u32>> = generated.iter().map(|g| g.tokens.clone()).collect();
    let finished: Vec<bool> = generated.iter().map(|g| g.finished).collect();
    let raw_scores = reward(&responses)?;
    let mut scores = raw_scores.clone();
    settings
        .reward_norm
        .apply(&mut scores, &mut state.reward_moments);
    for (s, done) in scores.iter_mut().zip(&finished) {
        if !done {
            *s -= settings.missing_eos_penalty;
        }
    }
    let (old_lp, old_values) = score_responses(
        &frozen.policy,
        Some(&frozen.value),
        sources,
        &responses,
        temperature,
        device,
    );
    let (ref_lp, _) = score_responses(reference, None, sources, &responses, temperature, device);
    Ok(Experience {
        responses,
        finished,
        raw_scores,
        scores,
        old_lp,
        old_values: old_values.unwrap_or_default(),
        ref_lp,
    })
}

/// KL-shaped rewards -> GAE advantages (whitened over the batch's tokens) and
/// returns, with each response's KL from the reference.
type Advantages = (Vec<Vec<f64>>, Vec<Vec<f64>>, Vec<f64>);

fn advantages(exp: &Experience, beta: f64, settings: &PpoSettings) -> Advantages {
    let n = exp.responses.len();
    let mut advantages = Vec::with_capacity(n);
    let mut returns = Vec::with_capacity(n);
    let mut kls = Vec::with_capacity(n);
    for i in 0..n {
        let r = shaped_rewards(&exp.old_lp[i], &exp.ref_lp[i], exp.scores[i], beta);
        let (a, ret) = gae(&r, &exp.old_values[i], settings.gamma, settings.lambda);
        advantages.push(a);
        returns.push(ret);
        kls.push(sequence_kl(&exp.old_lp[i], &exp.ref_lp[i]));
    }
    let mut flat: Vec<f64> = advantages.iter().flatten().copied().collect();
    whiten(&mut flat, true);
    let mut k = 0;
    for a in advantages.iter_mut() {
        for x in a.iter_mut() {
            *x = flat[k];
            k += 1;
        }
    }
    (advantages, returns, kls)
}

/// The per-response data a minibatch is cut from.
struct Rollouts<'a> {
    sources: &'a [Vec<u32>],
    exp: &'a Experience,
    advantages: &'a [Vec<f64>],
    returns: &'a [Vec<f64>],
    ce_targets: Option<&'a [Vec<u32>]>,
}

/// One optimizer step on the responses `mb`; adds its losses to `stats`.
/// Under f16 a step whose gradients overflowed is skipped (see [`LossScaler`]).
#[allow(clippy::too_many_arguments)]
fn minibatch_step<M: LanguageModel>(
    trained: PolicyValue<M>,
    optim: &mut ModuleOptimizer,
    mb: &[usize],
    data: &Rollouts<'_>,
    settings: &PpoSettings,
    scaler: &mut LossScaler,
    stats: &mut UpdateStats,
    train_dev: &Device,
) -> PolicyValue<M> {
    let master = trained;
    let trained = settings.precision.compute(&master);
    let temperature = settings.generation.temperature;
    let pick = |v: &[Vec<u32>]| -> Vec<Vec<u32>> { mb.iter().map(|&i| v[i].clone()).collect() };
    let pickf = |v: &[Vec<f64>]| -> Vec<Vec<f64>> { mb.iter().map(|&i| v[i].clone()).collect() };
    let (src_rows, resp_rows) = (pick(data.sources), pick(&data.exp.responses));
    let (hidden, labels) = trained
        .policy
        .response_hidden(&src_rows, &resp_rows, train_dev);
    let t = labels.ids.dims()[1];
    let (new_lp, entropy) = label_logprobs_and_entropy(
        trained.policy.logits(hidden.clone()),
        labels.ids.clone(),
        temperature,
    );
    stats.entropy += super::to_vec(masked_mean(entropy.detach(), labels.mask.clone()))[0] as f64;
    let values = trained.value.forward(hidden);
    let mask = labels.mask.clone();
    let (pg, clipfrac, ratio) = policy_loss(
        new_lp,
        rows_to_tensor(&pickf(&data.exp.old_lp), t, train_dev),
        rows_to_tensor(&pickf(data.advantages), t, train_dev),
        mask.clone(),
        settings.clip,
    );
    let vl = value_loss(
        values,
        rows_to_tensor(&pickf(&data.exp.old_values), t, train_dev),
        rows_to_tensor(&pickf(data.returns), t, train_dev),
        mask,
        settings.value_clip,
    );
    let mut loss = pg.clone() + vl.clone() * settings.vf_coef;
    if let (Some(targets), true) = (data.ce_targets, settings.ce_mix > 0.0) {
        let (ce_hidden, ce_labels) =
            trained
                .policy
                .response_hidden(&src_rows, &pick(targets), train_dev);
        let ce = cross_entropy(trained.policy.logits(ce_hidden), &ce_labels);
        stats.ce_loss += super::to_vec(ce.clone())[0] as f64;
        loss = loss + ce * settings.ce_mix;
    }
    stats.policy_loss += super::to_vec(pg)[0] as f64;
    stats.value_loss += super::to_vec(vl)[0] as f64;
    stats.clipfrac += super::to_vec(clipfrac)[0] as f64;
    stats.ratio += super::to_vec(ratio)[0] as f64;
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

/// One PPO update on `sources` (one response each). Responses are sampled
/// from the policy (online), or `given` (offline: stored summaries replayed,
/// as the authors did). `reward` scores the responses (token ids);
/// `ce_targets` are supervised targets for the cross-entropy term, one per
/// source. `reference` may already be in the compute precision (a caller
/// that keeps it for many updates casts it once). Returns the new model and
/// the update's statistics.
#[allow(clippy::too_many_arguments)]
pub fn ppo_update<M: LanguageModel>(
    model: PolicyValue<M>,
    optim: &mut ModuleOptimizer,
    reference: &M,
    sources: &[Vec<u32>],
    given: Option<&[Vec<u32>]>,
    ce_targets: Option<&[Vec<u32>]>,
    reward: &mut RewardFn<'_>,
    state: &mut PpoState,
    settings: &PpoSettings,
    rng: &mut Rng,
    device: &Device,
) -> Result<(PolicyValue<M>, UpdateStats), String> {
    let train_dev = device.clone().autodiff();
    let n = sources.len();
    let exp = collect_experience(
        &model, reference, sources, given, reward, state, settings, rng, device,
    )?;
    let (advantages, returns, kls) = advantages(&exp, state.kl.value, settings);
    let share = |k: usize| k as f64 / n.max(1) as f64;
    let mut stats = UpdateStats {
        score: mean(&exp.raw_scores),
        score_std: sample_std(&exp.raw_scores),
        reward: mean(&exp.scores),
        missing_eos: share(exp.finished.iter().filter(|f| !**f).count()),
        kl: mean(&kls),
        kl_coef: state.kl.value,
        response_length: share(exp.responses.iter().map(Vec::len).sum()),
        ..Default::default()
    };
    let data = Rollouts {
        sources,
        exp: &exp,
        advantages: &advantages,
        returns: &returns,
        ce_targets,
    };
    let mut trained = model.fork(&train_dev).train();
    let mut order: Vec<usize> = (0..n).collect();
    let mut minibatches = 0.0f64;
    let scaler = state
        .loss_scale
        .get_or_insert_with(|| LossScaler::new(settings.precision));
    for _ in 0..settings.ppo_epochs {
        rng.shuffle(&mut order);
        for mb in order.chunks(settings.minibatch.max(1)) {
            trained = minibatch_step(
                trained, optim, mb, &data, settings, scaler, &mut stats, &train_dev,
            );
            minibatches += 1.0;
        }
    }
    for v in [
        &mut stats.policy_loss,
        &mut stats.value_loss,
        &mut stats.ce_loss,
        &mut stats.clipfrac,
        &mut stats.ratio,
        &mut stats.entropy,
    ] {
        *v /= minibatches.max(1.0);
    }
    state.kl.update(stats.kl, n);
    Ok((trained.valid(), stats))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ml::bart::{Bart, BartConfig};
    use burn::optim::AdamWConfig;

    #[test]
    #[allow(clippy::print_stderr)]
    fn ppo_raises_a_simple_reward_and_the_kl_penalty_holds_the_policy_back() {
        // Reward: the share of response tokens equal to 7. Starting from a
        // random policy, PPO must raise it; with a large KL coefficient it
        // must stay closer to the reference.
        let dev = crate::ml::device(None, 3).unwrap();
        let mut cfg = BartConfig::small(32, 16, 1, 2);
        cfg.max_position_embeddings = 32;
        cfg.init_std = 0.2;
        let mut base = Bart::new(&cfg, &dev).unwrap();
        base.set_dropout(0.0);
        let sources: Vec<Vec<u32>> = (0..8u32).map(|i| vec![0, 5 + i, 6 + i, 2]).collect();
        let settings = PpoSettings {
            gamma: 1.0,
            lambda: 0.95,
            clip: 0.2,
            value_clip: 0.2,
            vf_coef: 0.5,
            ce_mix: 0.0,
            ppo_epochs: 2,
            minibatch: 4,
            lr: 3e-3,
            max_grad_norm: 1.0,
            missing_eos_penalty: 0.0,
            reward_norm: RewardNorm::None,
            generation: GenerateOptions {
                sample: true,
                temperature: 1.0,
                ..GenerateOptions::greedy(6)
            },
            precision: Precision::F32,
        };
        let run = |beta: f64| {
            let mut model = PolicyValue {
                policy: base.clone(),
                value: ValueHead::new(cfg.d_model, &dev),
            };
            let mut optim = AdamWConfig::new().with_epsilon(1e-8).init();
            let mut state = PpoState {
                kl: KlController {
                    value: beta,
                    adaptive: None,
                },
                reward_moments: RunningMoments::default(),
                loss_scale: None,
            };
            let mut rng = Rng::new(5);
            let mut reward = |rs: &[Vec<u32>]| -> Result<Vec<f64>, String> {
                Ok(rs
                    .iter()
                    .map(|r| r.iter().filter(|&&t| t == 7).count() as f64 / r.len() as f64)
                    .collect())
            };
            let mut history = Vec::new();
            for _ in 0..25 {
                let (m, s) = ppo_update(
                    model,
                    &mut optim,
                    &base,
                    &sources,
                    None,
                    None,
                    &mut reward,
                    &mut state,
                    &settings,
                    &mut rng,
                    &dev,
                )
                .unwrap();
                model = m;
                history.push(s);
            }
            history
        };
        let free = run(0.0);
        let first = free[..3].iter().map(|s| s.score).sum::<f64>() / 3.0;
        let last = free[22..].iter().map(|s| s.score).sum::<f64>() / 3.0;
        assert!(last > first + 0.3, "score {first} -> {last}");
        let held = run(1.0);
        let kl_free = free[22..].iter().map(|s| s.kl).sum::<f64>();
        let kl_held = held[22..].iter().map(|s| s.kl).sum::<f64>();
        eprintln!(
            "score {first:.3} -> {last:.3}; summed KL of the last 3 updates: beta 0 {kl_free:.3}, beta 1 {kl_held:.3}"
        );
        assert!(
            kl_held < kl_free,
            "KL with beta 1: {kl_held}, without: {kl_free}"
        );
    }
}
