//! The PPO arithmetic, as TRL and lm-human-preferences compute it
//! (RLHF-NOTES.md §3): KL-shaped per-token rewards, GAE, whitening, the
//! adaptive KL controller (host-side, per sequence) and the clipped policy
//! and value losses (tensors, for autodiff).

use burn::tensor::Tensor;

/// Per-token rewards of one response: `-β·(log π_old - log π_ref)` on every
/// token (the k1 KL estimate) plus `score` on the last token.
pub fn shaped_rewards(logprobs: &[f64], ref_logprobs: &[f64], score: f64, beta: f64) -> Vec<f64> {
    let mut r: Vec<f64> = logprobs
        .iter()
        .zip(ref_logprobs)
        .map(|(lp, rlp)| -beta * (lp - rlp))
        .collect();
    if let Some(last) = r.last_mut() {
        *last += score;
    }
    r
}

/// The sequence-level KL estimate `Σ_t (log π - log π_ref)`.
pub fn sequence_kl(logprobs: &[f64], ref_logprobs: &[f64]) -> f64 {
    logprobs.iter().zip(ref_logprobs).map(|(a, b)| a - b).sum()
}

/// Generalised advantage estimation over one response (`V` after the last token is 0).
/// Returns (advantages, returns = advantages + values), computed before any whitening.
pub fn gae(rewards: &[f64], values: &[f64], gamma: f64, lambda: f64) -> (Vec<f64>, Vec<f64>) {
    let n = rewards.len();
    let mut adv = vec![0.0; n];
    let mut next_adv = 0.0;
    for t in (0..n).rev() {
        let next_value = if t + 1 < n { values[t + 1] } else { 0.0 };
        let delta = rewards[t] + gamma * next_value - values[t];
        next_adv = delta + gamma * lambda * next_adv;
        adv[t] = next_adv;
    }
    let returns = adv.iter().zip(values).map(|(a, v)| a + v).collect();
    (adv, returns)
}

/// Whitens in place over all values given (the valid tokens of a batch):
/// `(x - mean) / sqrt(var + 1e-8)` with the unbiased variance, as TRL does;
/// `shift_mean = false` adds the mean back.
pub fn whiten(values: &mut [f64], shift_mean: bool) {
    let n = values.len();
    if n < 2 {
        return;
    }
    let mean = values.iter().sum::<f64>() / n as f64;
    let var = values.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    let scale = 1.0 / (var + 1e-8).sqrt();
    for x in values.iter_mut() {
        *x = (*x - mean) * scale + if shift_mean { 0.0 } else { mean };
    }
}

/// The KL coefficient: fixed, or adaptive (Ziegler et al. 2019).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct KlController {
    /// β, the current coefficient.
    pub value: f64,
    /// `Some((target, horizon))` for the adaptive controller.
    pub adaptive: Option<(f64, f64)>,
}

impl KlController {
    /// After a batch: `β ← β·(1 + clip(KL/target - 1, ±0.2)·n/horizon)`.
    pub fn update(&mut self, observed_kl: f64, n_samples: usize) {
        if let Some((target, horizon)) = self.adaptive {
            let e = (observed_kl / target - 1.0).clamp(-0.2, 0.2);
            self.value *= 1.0 + e * n_samples as f64 / horizon;
        }
    }
}

/// Running mean and standard deviation of sequence scores, merged batch by
/// batch (Chan et al.), as trlx's `RunningMoments` keeps them for
/// `scale_reward="running"`: starts at mean 0, variance 1, count ~0.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RunningMoments {
    /// Running mean.
    pub mean: f64,
    /// Population variance of everything seen.
    pub var: f64,
    /// Values seen.
    pub count: f64,
}

impl Default for RunningMoments {
    fn default() -> RunningMoments {
        RunningMoments {
            mean: 0.0,
            var: 1.0,
            count: 1e-24,
        }
    }
}

impl RunningMoments {
    /// Merges a batch.
    pub fn update(&mut self, xs: &[f64]) {
        if xs.is_empty() {
            return;
        }
        let n = xs.len() as f64;
        let mean = xs.iter().sum::<f64>() / n;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
        let delta = mean - self.mean;
        let total = self.count + n;
        let old_sum = self.var * self.count + delta * delta * self.count * n / total;
        self.mean += delta * n / total;
        self.var = (old_sum + var * n) / total;
        self.count = total;
    }

    /// The unbiased standard deviation of everything seen.
    pub fn std(&self) -> f64 {
        if self.count <= 1.0 {
            return 1.0;
        }
        (self.var * self.count / (self.count - 1.0)).sqrt()
    }
}

/// How sequence scores are normalised before they enter the rewards.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    serde::Deserialize,
    serde::Serialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum RewardNorm {
    /// As the reward model gives them.
    #[default]
    None,
    /// Divided by the running standard deviation (trlx `scale_reward="running"`).
    Scale,
    /// Running mean subtracted, then divided by the running standard deviation.
    Normalize,
}

impl RewardNorm {
    /// Updates `moments` with the batch, then normalises it in place.
    pub fn apply(self, scores: &mut [f64], moments: &mut RunningMoments) {
        if self == RewardNorm::None {
            return;
        }
        moments.update(scores);
        let (shift, std) = (
            if self == RewardNorm::Normalize {
                moments.mean
            } else {
                0.0
            },
            moments.std().max(1e-8),
        );
        for s in scores.iter_mut() {
            *s = (*s - shift) / std;
        }
    }
}

/// Masked mean of a `[b, t]` tensor.
pub fn masked_mean(x: Tensor<2>, mask: Tensor<2>) -> Tensor<1> {
    (x * mask.clone()).sum() / mask.sum().clamp_min(1.0)
}

/// The clipped surrogate: `masked_mean(max(-A·ρ, -A·clip(ρ, 1±ε)))` with
/// `ρ = exp(log π_new - log π_old)`. Returns (loss, clip fraction, mean ratio).
pub fn policy_loss(
    new_logprobs: Tensor<2>,
    old_logprobs: Tensor<2>,
    advantages: Tensor<2>,
    mask: Tensor<2>,
    clip: f64,
) -> (Tensor<1>, Tensor<1>, Tensor<1>) {
    let ratio = (new_logprobs - old_logprobs).exp();
    let unclipped = -advantages.clone() * ratio.clone();
    let clipped = -advantages * ratio.clone().clamp(1.0 - clip, 1.0 + clip);
    let clipfrac = masked_mean(
        clipped.clone().greater(unclipped.clone()).float(),
        mask.clone(),
    );
    let loss = masked_mean(unclipped.max_pair(clipped), mask.clone());
    (loss, clipfrac, masked_mean(ratio, mask).detach())
}

/// The clipped value loss: `0.5·masked_mean(max((V - R)², (clip(V, V_old ± ε) - R)²))`.
pub fn value_loss(
    values: Tensor<2>,
    old_values: Tensor<2>,
    returns: Tensor<2>,
    mask: Tensor<2>,
    clip: f64,
) -> Tensor<1> {
    let clipped = old_values.clone() + (values.clone() - old_values).clamp(-clip, clip);
    let a = (values - returns.clone()).powf_scalar(2.0);
    let b = (clipped - returns).powf_scalar(2.0);
    masked_mean(a.max_pair(b), mask) * 0.5
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ml::{device, matrix, to_vec};

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-6, "{a} vs {b}");
    }

    #[test]
    fn kl_shaped_rewards_by_hand() {
        // β = 0.2; KL terms 0.5 and -1.0; score 0.8 on the last token.
        let r = shaped_rewards(&[-1.0, -2.0], &[-1.5, -1.0], 0.8, 0.2);
        close(r[0], -0.1);
        close(r[1], 0.2 + 0.8);
        close(sequence_kl(&[-1.0, -2.0], &[-1.5, -1.0]), -0.5);
    }

    #[test]
    fn gae_by_hand() {
        // γ 0.99, λ 0.95; rewards 0, 0, 1; values 0.5, 0.4, 0.3.
        // δ2 = 1 - 0.3 = 0.7;            A2 = 0.7
        // δ1 = 0.99·0.3 - 0.4 = -0.103;  A1 = -0.103 + 0.9405·0.7 = 0.55535
        // δ0 = 0.99·0.4 - 0.5 = -0.104;  A0 = -0.104 + 0.9405·0.55535 = 0.418306675
        let (a, r) = gae(&[0.0, 0.0, 1.0], &[0.5, 0.4, 0.3], 0.99, 0.95);
        close(a[2], 0.7);
        close(a[1], 0.55535);
        close(a[0], 0.418306675);
        close(r[0], 0.918306675);
        close(r[1], 0.95535);
        close(r[2], 1.0);
        // λ = 1, γ = 1: advantages are reward-to-go minus value.
        let (a, _) = gae(&[1.0, 2.0, 3.0], &[0.0, 1.0, 2.0], 1.0, 1.0);
        assert_eq!(a, vec![6.0, 4.0, 1.0]);
    }

    #[test]
    fn whitening_uses_the_unbiased_variance() {
        // mean 2.5, unbiased variance 5/3, std 1.2909944.
        let mut x = vec![1.0, 2.0, 3.0, 4.0];
        whiten(&mut x, true);
        close(x[0], -1.161_895_003_862_225);
        close(x[3], 1.161_895_003_862_225);
        let mut y = vec![1.0, 2.0, 3.0, 4.0];
        whiten(&mut y, false);
        close(y[0], 2.5 - 1.161_895_003_862_225);
    }

    #[test]
    fn running_moments_and_reward_scaling_by_hand() {
        // One batch 1, 2, 3, 4: mean 2.5, population variance 1.25, unbiased std
        // sqrt(5/3) = 1.2909944 (the prior of count 1e-24 vanishes).
        let mut m = RunningMoments::default();
        m.update(&[1.0, 2.0, 3.0, 4.0]);
        close(m.mean, 2.5);
        close(m.var, 1.25);
        close(m.std(), 1.290_994_448_735_805_6);
        // A second batch 5, 6 merges to the moments of 1..6: mean 3.5,
        // population variance 35/12, unbiased std sqrt(3.5) = 1.8708287.
        m.update(&[5.0, 6.0]);
        close(m.mean, 3.5);
        close(m.var, 35.0 / 12.0);
        close(m.std(), 3.5f64.sqrt());
        // Scaling divides by the std including the batch; normalising also centres.
        let mut s = vec![1.0, 2.0, 3.0, 4.0];
        RewardNorm::Scale.apply(&mut s, &mut RunningMoments::default());
        close(s[3], 4.0 / 1.290_994_448_735_805_6);
        let mut s = vec![1.0, 2.0, 3.0, 4.0];
        RewardNorm::Normalize.apply(&mut s, &mut RunningMoments::default());
        close(s[0], -1.5 / 1.290_994_448_735_805_6);
        let mut s = vec![1.0, 2.0];
        let mut untouched = RunningMoments::default();
        RewardNorm::None.apply(&mut s, &mut untouched);
        assert_eq!((s, untouched), (vec![1.0, 2.0], RunningMoments::default()));
    }

    #[test]
    fn adaptive_kl_controller_by_hand() {
        // RLHF-NOTES §3.3: β 0.2, target 6, horizon 10000, batch 128, KL 12 -> β·1.00256.
        let mut c = KlController {
            value: 0.2,
            adaptive: Some((6.0, 10_000.0)),
        };
        c.update(12.0, 128);
        close(c.value, 0.2 * 1.00256);
        let mut fixed = KlController {
            value: 0.2,
            adaptive: None,
        };
        fixed.update(12.0, 128);
        close(fixed.value, 0.2);
    }

    #[test]
    fn clipped_losses_by_hand() {
        let dev = device(None, 0).unwrap();
        // ρ = 1.5 (clipped to 1.2) and 0.5 (not clipped, since A > 0 takes the min of ρA).
        let old = matrix(vec![0.0, 0.0], 1, 2, &dev);
        let new = matrix(vec![1.5f32.ln(), 0.5f32.ln()], 1, 2, &dev);
        let adv = matrix(vec![1.0, 1.0], 1, 2, &dev);
        let mask = matrix(vec![1.0, 1.0], 1, 2, &dev);
        let (loss, clipfrac, ratio) = policy_loss(new, old, adv, mask.clone(), 0.2);
        // max(-1.5, -1.2) = -1.2; max(-0.5, -0.8) = -0.5; mean -0.85.
        assert!((to_vec(loss)[0] + 0.85).abs() < 1e-6);
        assert!((to_vec(clipfrac)[0] - 0.5).abs() < 1e-6);
        assert!((to_vec(ratio)[0] - 1.0).abs() < 1e-6);
        // V 1.0 and 0.0, V_old 0.5 and 0.5, R 2.0 and 0.0, ε 0.2:
        // (1-2)² = 1 vs (0.7-2)² = 1.69 -> 1.69; 0 vs 0.3² = 0.09 -> 0.09; 0.5·mean = 0.445.
        let v = value_loss(
            matrix(vec![1.0, 0.0], 1, 2, &dev),
            matrix(vec![0.5, 0.5], 1, 2, &dev),
            matrix(vec![2.0, 0.0], 1, 2, &dev),
            mask.clone(),
            0.2,
        );
        assert!((to_vec(v)[0] - 0.445).abs() < 1e-6);
        // A masked token changes nothing.
        let (loss, _, _) = policy_loss(
            matrix(vec![1.5f32.ln(), 9.0], 1, 2, &dev),
            matrix(vec![0.0, 0.0], 1, 2, &dev),
            matrix(vec![1.0, -5.0], 1, 2, &dev),
            matrix(vec![1.0, 0.0], 1, 2, &dev),
            0.2,
        );
        assert!((to_vec(loss)[0] + 1.2).abs() < 1e-6);
    }
}
