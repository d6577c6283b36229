//! The arithmetic of the critic-free online methods (ALGORITHMS.md §2, §3,
//! §7): GRPO's group-normalised advantages, RLOO's leave-one-out baseline,
//! Dr. GRPO's unscaled one, REINFORCE++'s whitened returns, the KL terms
//! (k1 folded into the reward, or k3 in the loss), the asymmetrically
//! clipped token loss and the four ways TRL aggregates it. Host-side
//! arithmetic in f64; the losses are tensors, for autodiff.

use burn::tensor::Tensor;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::ppo::whiten;

/// TRL's ε in `(r − mean)/(std + ε)`.
pub const STD_EPS: f64 = 1e-4;

/// How a completion's advantage is formed from the rewards of its group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
pub enum Advantage {
    /// GRPO (Shao et al. 2024): the group's mean subtracted, divided by its std.
    #[default]
    #[serde(rename = "grpo")]
    Grpo,
    /// RLOO (Ahmadian et al. 2024): the mean of the group's other rewards subtracted.
    #[serde(rename = "rloo")]
    Rloo,
    /// REINFORCE++ (Hu 2025, OpenRLHF `reinforce`): no baseline; returns
    /// whitened over every completion token of the batch.
    #[serde(rename = "reinforce++")]
    ReinforcePlusPlus,
    /// Dr. GRPO (Liu et al. 2025): the group's mean subtracted, not scaled.
    #[serde(rename = "dr-grpo")]
    DrGrpo,
}

impl Advantage {
    /// The manifest's name.
    pub fn name(self) -> &'static str {
        match self {
            Advantage::Grpo => "grpo",
            Advantage::Rloo => "rloo",
            Advantage::ReinforcePlusPlus => "reinforce++",
            Advantage::DrGrpo => "dr-grpo",
        }
    }

    /// Whether it compares the completions of a group (and needs two or more).
    pub fn needs_groups(self) -> bool {
        self != Advantage::ReinforcePlusPlus
    }
}

/// What the centred rewards are divided by (TRL's `scale_rewards`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ScaleRewards {
    /// The estimator's own: `group` for GRPO, none for the others (RLOO
    /// and Dr. GRPO do not scale; REINFORCE++ whitens its returns).
    #[default]
    Auto,
    /// The standard deviation of the group's rewards (Bessel-corrected).
    Group,
    /// The standard deviation of the whole batch's rewards.
    Batch,
    /// Not divided.
    None,
}

impl ScaleRewards {
    fn resolve(self, estimator: Advantage) -> ScaleRewards {
        match (self, estimator) {
            (ScaleRewards::Auto, Advantage::Grpo) => ScaleRewards::Group,
            (ScaleRewards::Auto, _) => ScaleRewards::None,
            (other, _) => other,
        }
    }
}

/// How token losses become the loss of an optimizer step (TRL's `loss_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum LossAggregation {
    /// Each completion's token mean, then the mean over completions.
    Grpo,
    /// The sum over the step's tokens divided by their number.
    Bnpo,
    /// The sum divided by completions × `max-new-tokens` (no length bias).
    DrGrpo,
    /// The sum divided by the tokens of the optimizer step (TRL's default;
    /// with one process and no accumulation it equals `bnpo`).
    #[default]
    Dapo,
}

/// Where the KL from the reference enters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum KlPlacement {
    /// `β·k3` per token in the loss, `k3 = e^d − d − 1` with
    /// `d = log π_ref − log π_θ` (TRL's GRPO, verl's `use_kl_loss`).
    #[default]
    Loss,
    /// `−β·k1` in the reward, `k1 = log π_old − log π_ref`: summed over the
    /// completion before the baseline for the group estimators (TRL's RLOO),
    /// per token for REINFORCE++ (OpenRLHF).
    Reward,
}

/// The mean and the Bessel-corrected standard deviation.
pub fn mean_std(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n.max(1.0);
    if xs.len() < 2 {
        return (mean, 0.0);
    }
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt())
}

/// One advantage per completion from the rewards of `rewards.len() / group`
/// groups of `group` adjacent completions (REINFORCE++: the rewards as they are).
pub fn sequence_advantages(
    rewards: &[f64],
    group: usize,
    estimator: Advantage,
    scale: ScaleRewards,
) -> Vec<f64> {
    let g = group.max(1);
    let mut adv = Vec::with_capacity(rewards.len());
    for chunk in rewards.chunks(g) {
        let (mean, std) = mean_std(chunk);
        let k = chunk.len() as f64;
        for &r in chunk {
            adv.push(match estimator {
                Advantage::Grpo | Advantage::DrGrpo => r - mean,
                // r − (Σ − r)/(k − 1) = k/(k − 1)·(r − mean).
                Advantage::Rloo if k > 1.0 => k / (k - 1.0) * (r - mean),
                Advantage::Rloo => 0.0,
                Advantage::ReinforcePlusPlus => r,
            });
        }
        if scale.resolve(estimator) == ScaleRewards::Group {
            let n = adv.len();
            for a in &mut adv[n - chunk.len()..] {
                *a /= std + STD_EPS;
            }
        }
    }
    if scale.resolve(estimator) == ScaleRewards::Batch {
        let (_, std) = mean_std(rewards);
        for a in &mut adv {
            *a /= std + STD_EPS;
        }
    }
    adv
}

/// The per-token k1 estimate `log π_old − log π_ref` of each completion.
pub fn k1(old: &[Vec<f64>], reference: &[Vec<f64>]) -> Vec<Vec<f64>> {
    old.iter()
        .zip(reference)
        .map(|(o, r)| o.iter().zip(r).map(|(a, b)| a - b).collect())
        .collect()
}

/// Per-token advantages of every completion (lengths from `lens`). `k1_beta`
/// is the KL in the reward: the per-token k1 and its coefficient.
pub fn token_advantages(
    rewards: &[f64],
    lens: &[usize],
    group: usize,
    estimator: Advantage,
    scale: ScaleRewards,
    k1_beta: Option<(&[Vec<f64>], f64)>,
) -> Vec<Vec<f64>> {
    if estimator == Advantage::ReinforcePlusPlus {
        return reinforce_pp(rewards, lens, k1_beta);
    }
    let shaped: Vec<f64> = match k1_beta {
        Some((k1, beta)) => rewards
            .iter()
            .zip(k1)
            .map(|(r, kl)| r - beta * kl.iter().sum::<f64>())
            .collect(),
        None => rewards.to_vec(),
    };
    sequence_advantages(&shaped, group, estimator, scale)
        .into_iter()
        .zip(lens)
        .map(|(a, &n)| vec![a; n])
        .collect()
}

/// REINFORCE++: per-token rewards (`−β·k1` on every token, the score on the
/// last), returns-to-go with γ = 1, whitened over all tokens of the batch
/// (unbiased variance, as verl).
fn reinforce_pp(
    rewards: &[f64],
    lens: &[usize],
    k1_beta: Option<(&[Vec<f64>], f64)>,
) -> Vec<Vec<f64>> {
    let mut out: Vec<Vec<f64>> = Vec::with_capacity(rewards.len());
    for (i, (&r, &n)) in rewards.iter().zip(lens).enumerate() {
        let mut per_token: Vec<f64> = match k1_beta {
            Some((k1, beta)) => k1[i].iter().map(|k| -beta * k).collect(),
            None => vec![0.0; n],
        };
        if let Some(last) = per_token.last_mut() {
            *last += r;
        }
        let mut to_go = 0.0;
        for x in per_token.iter_mut().rev() {
            to_go += *x;
            *x = to_go;
        }
        out.push(per_token);
    }
    let mut flat: Vec<f64> = out.iter().flatten().copied().collect();
    whiten(&mut flat, true);
    let mut it = flat.into_iter();
    for row in &mut out {
        for x in row.iter_mut() {
            *x = it.next().unwrap_or(0.0);
        }
    }
    out
}

/// Share of groups whose rewards are all equal (their advantages are 0:
/// they teach nothing).
pub fn zero_std_share(rewards: &[f64], group: usize) -> f64 {
    let groups: Vec<&[f64]> = rewards.chunks(group.max(1)).collect();
    let flat = groups.iter().filter(|g| mean_std(g).1 < 1e-8).count();
    flat as f64 / groups.len().max(1) as f64
}

/// The mean over groups of their reward's standard deviation (TRL's `reward_std`).
pub fn mean_group_std(rewards: &[f64], group: usize) -> f64 {
    let groups: Vec<&[f64]> = rewards.chunks(group.max(1)).collect();
    groups.iter().map(|g| mean_std(g).1).sum::<f64>() / groups.len().max(1) as f64
}

/// The per-token k3 estimate `e^d − d − 1`, `d = log π_ref − log π_θ`.
pub fn k3(logprobs: Tensor<2>, ref_logprobs: Tensor<2>) -> Tensor<2> {
    let d = ref_logprobs - logprobs;
    d.clone().exp() - d - 1.0
}

/// The clipped surrogate per token, `−min(ρA, clip(ρ, 1 − ε_low, 1 + ε_high)·A)`
/// with `ρ = exp(log π_θ − log π_old)`, and where the clip took effect.
pub fn clipped_token_loss(
    logprobs: Tensor<2>,
    old_logprobs: Tensor<2>,
    advantages: Tensor<2>,
    eps_low: f64,
    eps_high: f64,
) -> (Tensor<2>, Tensor<2>) {
    let ratio = (logprobs - old_logprobs).exp();
    let unclipped = -advantages.clone() * ratio.clone();
    let clipped = -advantages * ratio.clamp(1.0 - eps_low, 1.0 + eps_high);
    let region = clipped.clone().greater(unclipped.clone()).float();
    (unclipped.max_pair(clipped), region)
}

/// The step's loss from per-token losses `[b, t]` under `mask`.
pub fn aggregate(
    token_loss: Tensor<2>,
    mask: Tensor<2>,
    how: LossAggregation,
    max_new_tokens: usize,
) -> Tensor<1> {
    let [b, _] = token_loss.dims();
    let masked = token_loss * mask.clone();
    match how {
        LossAggregation::Grpo => {
            let per_row = masked.sum_dim(1) / mask.sum_dim(1).clamp_min(1.0);
            per_row.mean()
        }
        LossAggregation::Bnpo | LossAggregation::Dapo => masked.sum() / mask.sum().clamp_min(1.0),
        LossAggregation::DrGrpo => masked.sum() / (b * max_new_tokens.max(1)) as f64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ml::{device, matrix, to_vec};

    fn close(a: f64, b: f64, tol: f64) {
        assert!((a - b).abs() < tol, "{a} vs {b}");
    }

    #[test]
    fn advantages_match_the_hand_computations() {
        // Rewards [1, 0, 0, 1]: μ 0.5, Bessel σ 0.577350 → ±0.865875 (a population σ gives ±1).
        let a = sequence_advantages(
            &[1.0, 0.0, 0.0, 1.0],
            4,
            Advantage::Grpo,
            ScaleRewards::Auto,
        );
        for (x, s) in a.iter().zip([1.0, -1.0, -1.0, 1.0]) {
            close(*x, s * 0.865_875, 1e-6);
        }
        // RLOO: K = 4 → ±2/3; Dr. GRPO: ±0.5.
        let a = sequence_advantages(
            &[1.0, 0.0, 0.0, 1.0],
            4,
            Advantage::Rloo,
            ScaleRewards::Auto,
        );
        for (x, s) in a.iter().zip([1.0, -1.0, -1.0, 1.0]) {
            close(*x, s * 2.0 / 3.0, 1e-12);
        }
        let a = sequence_advantages(
            &[1.0, 0.0, 0.0, 1.0],
            4,
            Advantage::DrGrpo,
            ScaleRewards::Auto,
        );
        assert_eq!(a, vec![0.5, -0.5, -0.5, 0.5]);
        // Two groups of two: each centred on its own mean.
        let a = sequence_advantages(
            &[1.0, 0.0, 5.0, 5.0],
            2,
            Advantage::Grpo,
            ScaleRewards::Auto,
        );
        close(a[0], 0.5 / (0.5f64.sqrt() + STD_EPS), 1e-12);
        assert_eq!(&a[2..], &[0.0, 0.0]);
        // Batch scale: the group's mean, the std of all four rewards (mean 2.75, Bessel).
        let (_, std) = mean_std(&[1.0, 0.0, 5.0, 5.0]);
        close(
            std,
            (((1.0f64 - 2.75).powi(2) + 2.75f64.powi(2) + 2.0 * 2.25f64.powi(2)) / 3.0).sqrt(),
            1e-12,
        );
        let a = sequence_advantages(
            &[1.0, 0.0, 5.0, 5.0],
            2,
            Advantage::Grpo,
            ScaleRewards::Batch,
        );
        close(a[0], 0.5 / (std + STD_EPS), 1e-12);
        assert_eq!(zero_std_share(&[1.0, 0.0, 5.0, 5.0], 2), 0.5);
        close(
            mean_group_std(&[1.0, 0.0, 5.0, 5.0], 2),
            0.5f64.sqrt() / 2.0,
            1e-12,
        );
    }

    #[test]
    fn kl_in_the_reward_is_summed_before_the_baseline_and_reinforce_pp_whitens_returns() {
        // TRL's RLOO: R' = R − β Σ k1. K = 2, β 0.5: R [1, 0], k1 sums [2, 0] → R' [0, 0] → A 0.
        let k1s = vec![vec![1.0, 1.0], vec![0.0]];
        let a = token_advantages(
            &[1.0, 0.0],
            &[2, 1],
            2,
            Advantage::Rloo,
            ScaleRewards::Auto,
            Some((&k1s, 0.5)),
        );
        assert_eq!(a, vec![vec![0.0, 0.0], vec![0.0]]);
        // REINFORCE++: tokens of completion 0 get rewards [−0.5, 1 − 0.5] → returns [0, 0.5];
        // completion 1: [0 + 0] → [0]. Whitened over {0, 0.5, 0}: mean 1/6, unbiased var 1/12.
        let a = token_advantages(
            &[1.0, 0.0],
            &[2, 1],
            2,
            Advantage::ReinforcePlusPlus,
            ScaleRewards::Auto,
            Some((&k1s, 0.5)),
        );
        let s = 1.0 / (1.0f64 / 12.0 + 1e-8).sqrt();
        close(a[0][0], -s / 6.0, 1e-9);
        close(a[0][1], (0.5 - 1.0 / 6.0) * s, 1e-9);
        close(a[1][0], -s / 6.0, 1e-9);
    }

    #[test]
    fn k3_clipping_and_aggregation_match_the_hand_computations() {
        let dev = device(None, 0).unwrap();
        // log π −1.0, log π_ref −1.5 → d −0.5 → 0.106531.
        let k = k3(
            matrix(vec![-1.0], 1, 1, &dev),
            matrix(vec![-1.5], 1, 1, &dev),
        );
        close(to_vec(k)[0] as f64, 0.106_531, 1e-6);
        // ε 0.2: ρ 1.5, A +1 → −1.2 (clipped); ρ 0.5, A −1 → 0.8 (clipped); ρ 0.5, A +1 → −0.5.
        let lp = matrix(vec![1.5f32.ln(), 0.5f32.ln(), 0.5f32.ln()], 1, 3, &dev);
        let old = matrix(vec![0.0; 3], 1, 3, &dev);
        let adv = matrix(vec![1.0, -1.0, 1.0], 1, 3, &dev);
        let (l, region) = clipped_token_loss(lp, old, adv, 0.2, 0.2);
        let l = to_vec(l);
        close(l[0] as f64, -1.2, 1e-6);
        close(l[1] as f64, 0.8, 1e-6);
        close(l[2] as f64, -0.5, 1e-6);
        assert_eq!(to_vec(region), vec![1.0, 1.0, 0.0]);
        // Group rewards [1, 0] → A ±0.707007; lengths 2 and 3, ρ 1, β 0.
        let a = sequence_advantages(&[1.0, 0.0], 2, Advantage::Grpo, ScaleRewards::Auto);
        close(a[0], 0.707_007, 1e-6);
        let (p, n) = (a[0] as f32, a[1] as f32);
        let losses = matrix(vec![-p, -p, 0.0, -n, -n, -n], 2, 3, &dev);
        let mask = matrix(vec![1.0, 1.0, 0.0, 1.0, 1.0, 1.0], 2, 3, &dev);
        let agg = |how, l: Tensor<2>| to_vec(aggregate(l, mask.clone(), how, 4))[0] as f64;
        close(agg(LossAggregation::Grpo, losses.clone()), 0.0, 1e-6);
        close(agg(LossAggregation::Dapo, losses.clone()), 0.141_401, 1e-6);
        close(agg(LossAggregation::Bnpo, losses.clone()), 0.141_401, 1e-6);
        close(
            agg(LossAggregation::DrGrpo, losses.clone()),
            0.088_376,
            1e-6,
        );
        // β 0.04 with k3 0.106531 on every token: dapo 0.145663.
        let with_kl = losses + (mask.clone() * (0.04 * 0.106_531));
        close(agg(LossAggregation::Dapo, with_kl), 0.145_663, 1e-6);
    }

    #[test]
    fn the_token_loss_gradient_matches_finite_differences() {
        let dev = device(None, 0).unwrap().autodiff();
        let (old, adv) = ([0.0f32, -0.2, 0.1], [0.8f32, -1.1, 0.5]);
        let f = |lp: Vec<f32>, grad: bool| {
            let mut lp = matrix(lp, 1, 3, &dev);
            if grad {
                lp = lp.require_grad();
            }
            let (l, _) = clipped_token_loss(
                lp.clone(),
                matrix(old.to_vec(), 1, 3, &dev),
                matrix(adv.to_vec(), 1, 3, &dev),
                0.2,
                0.28,
            );
            let total = l + k3(lp.clone(), matrix(vec![-0.3, -0.1, 0.2], 1, 3, &dev)) * 0.04;
            (
                aggregate(
                    total,
                    matrix(vec![1.0; 3], 1, 3, &dev),
                    LossAggregation::Dapo,
                    3,
                ),
                lp,
            )
        };
        // Ratios inside the clip range: the gradient flows through every token.
        let at = vec![0.05f32, -0.15, 0.12];
        let (loss, lp) = f(at.clone(), true);
        let grads = loss.backward();
        let g = to_vec(lp.grad(&grads).unwrap());
        let h = 1e-2f32;
        for j in 0..3 {
            let mut up = at.clone();
            up[j] += h;
            let mut down = at.clone();
            down[j] -= h;
            let fd = (to_vec(f(up, false).0)[0] - to_vec(f(down, false).0)[0]) / (2.0 * h);
            close(g[j] as f64, fd as f64, 2e-3);
        }
    }
}
