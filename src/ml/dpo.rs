//! Direct preference optimisation (Rafailov et al. 2023) and its pairwise
//! variants, as TRL and OpenRLHF compute them (ALGORITHMS.md §1, §7): the
//! losses over summed completion log-probabilities of a chosen and a
//! rejected summary under the policy and a frozen reference, TRL's metrics,
//! and one optimizer step of a language model on a batch of pairs.

use burn::optim::ModuleOptimizer;
use burn::tensor::activation::log_sigmoid;
use burn::tensor::{Device, Tensor};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::bart::model::label_logprobs;
use super::lm::LanguageModel;
use super::precision::{LossScaler, Precision};
use super::train::optimizer_step;

/// Which pairwise loss. `Δ = (s(c) − s_ref(c)) − (s(r) − s_ref(r))`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum DpoLoss {
    /// `−log σ(βΔ)`; with label smoothing ε the conservative DPO of
    /// OpenRLHF and TRL ≤ 0.28: `(1−ε)·softplus(−βΔ) + ε·softplus(βΔ)`.
    #[default]
    Sigmoid,
    /// IPO in TRL's length-normalised form: each log-ratio is divided by
    /// its completion's length, then `(Δ̄ − 1/(2β))²`.
    Ipo,
    /// `max(0, 1 − βΔ)` (SLiC).
    Hinge,
    /// Robust DPO (Chowdhury et al. 2024): `[(1−ε)·softplus(−βΔ) − ε·softplus(βΔ)] / (1−2ε)`.
    Robust,
}

/// What the losses read, one entry per pair.
#[derive(Debug, Clone)]
pub struct PairScores {
    /// `s(c) − s_ref(c)`: the chosen summary's summed log-ratio.
    pub chosen: Tensor<1>,
    /// `s(r) − s_ref(r)`.
    pub rejected: Tensor<1>,
    /// Completion tokens of the chosen summary (IPO's normaliser).
    pub chosen_len: Tensor<1>,
    /// Completion tokens of the rejected summary.
    pub rejected_len: Tensor<1>,
}

/// `softplus(x) = log(1 + eˣ)`, stably.
fn softplus(x: Tensor<1>) -> Tensor<1> {
    -log_sigmoid(-x)
}

/// The loss of each pair (the batch loss is their mean).
pub fn pair_losses(kind: DpoLoss, beta: f64, smoothing: f64, pairs: &PairScores) -> Tensor<1> {
    let delta = pairs.chosen.clone() - pairs.rejected.clone();
    match kind {
        DpoLoss::Sigmoid => {
            let bd = delta * beta;
            softplus(-bd.clone()) * (1.0 - smoothing) + softplus(bd) * smoothing
        }
        DpoLoss::Robust => {
            let bd = delta * beta;
            (softplus(-bd.clone()) * (1.0 - smoothing) - softplus(bd) * smoothing)
                / (1.0 - 2.0 * smoothing)
        }
        DpoLoss::Hinge => (-(delta * beta) + 1.0).clamp_min(0.0),
        DpoLoss::Ipo => {
            let normalised = pairs.chosen.clone() / pairs.chosen_len.clone().clamp_min(1.0)
                - pairs.rejected.clone() / pairs.rejected_len.clone().clamp_min(1.0);
            (normalised - 1.0 / (2.0 * beta)).powf_scalar(2.0)
        }
    }
}

/// DPO settings.
#[derive(Debug, Clone)]
pub struct DpoSettings {
    /// The loss.
    pub loss: DpoLoss,
    /// β: the strength of the implicit KL constraint.
    pub beta: f64,
    /// ε of `sigmoid` (conservative DPO) and `robust`.
    pub label_smoothing: f64,
    /// Weight of the mean token cross-entropy on the chosen summary (RPO).
    pub sft_weight: f64,
    /// Global gradient-norm clip (0: off).
    pub max_grad_norm: f64,
    /// The arithmetic of the forward and backward passes.
    pub precision: Precision,
}

/// One pair, tokenized, with its reference log-probabilities.
#[derive(Debug, Clone, PartialEq)]
pub struct Pair {
    /// The prompt.
    pub source: Vec<u32>,
    /// The chosen summary, ending in EOS.
    pub chosen: Vec<u32>,
    /// The rejected summary, ending in EOS.
    pub rejected: Vec<u32>,
    /// `s_ref(chosen)`.
    pub ref_chosen: f64,
    /// `s_ref(rejected)`.
    pub ref_rejected: f64,
}

/// One step's numbers, under TRL's names (see `to_metrics`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DpoStats {
    /// Optimizer step, from 1 (0 for an evaluation).
    pub step: usize,
    /// The loss (pairwise plus the weighted cross-entropy).
    pub loss: f64,
    /// Mean `β·(s(c) − s_ref(c))`.
    #[serde(rename = "rewards/chosen")]
    pub rewards_chosen: f64,
    /// Mean `β·(s(r) − s_ref(r))`.
    #[serde(rename = "rewards/rejected")]
    pub rewards_rejected: f64,
    /// Share of pairs whose chosen reward is strictly higher.
    #[serde(rename = "rewards/accuracies")]
    pub rewards_accuracies: f64,
    /// Mean chosen minus rejected reward.
    #[serde(rename = "rewards/margins")]
    pub rewards_margins: f64,
    /// Mean summed log-probability of the chosen summaries.
    #[serde(rename = "logps/chosen")]
    pub logps_chosen: f64,
    /// Mean summed log-probability of the rejected summaries.
    #[serde(rename = "logps/rejected")]
    pub logps_rejected: f64,
    /// The cross-entropy on the chosen summaries (with `sft-weight`).
    #[serde(default)]
    pub nll: f64,
    /// Global gradient norm before clipping.
    #[serde(default)]
    pub grad_norm: f64,
    /// Learning rate used.
    #[serde(default)]
    pub lr: f64,
}

impl DpoStats {
    /// `(name, value)` under TRL's metric names.
    pub fn named(&self) -> [(&'static str, f64); 7] {
        [
            ("loss", self.loss),
            ("rewards/chosen", self.rewards_chosen),
            ("rewards/rejected", self.rewards_rejected),
            ("rewards/accuracies", self.rewards_accuracies),
            ("rewards/margins", self.rewards_margins),
            ("logps/chosen", self.logps_chosen),
            ("logps/rejected", self.logps_rejected),
        ]
    }
}

/// The statistics of a batch from its summed log-probabilities.
fn batch_stats(beta: f64, pairs: &[Pair], chosen: &[f64], rejected: &[f64]) -> DpoStats {
    let n = pairs.len().max(1) as f64;
    let mut s = DpoStats::default();
    for ((p, c), r) in pairs.iter().zip(chosen).zip(rejected) {
        let (rc, rr) = (beta * (c - p.ref_chosen), beta * (r - p.ref_rejected));
        s.rewards_chosen += rc / n;
        s.rewards_rejected += rr / n;
        s.rewards_accuracies += f64::from(u8::from(rc > rr)) / n;
        s.rewards_margins += (rc - rr) / n;
        s.logps_chosen += c / n;
        s.logps_rejected += r / n;
    }
    s
}

/// Summed log-probabilities of each response (rows of `responses` after
/// the matching `sources`), and the tensor of per-token ones with its mask.
fn summed_logps<M: LanguageModel>(
    model: &M,
    sources: &[Vec<u32>],
    responses: &[Vec<u32>],
    device: &Device,
) -> (Tensor<1>, Tensor<2>, Tensor<2>) {
    let (hidden, labels) = model.response_hidden(sources, responses, device);
    let lp = label_logprobs(model.logits(hidden), labels.ids, 1.0) * labels.mask.clone();
    let [b, _] = lp.dims();
    (lp.clone().sum_dim(1).reshape([b]), lp, labels.mask)
}

/// `s(y)` of each response under `model`, without gradients, in batches.
pub fn sequence_logps<M: LanguageModel>(
    model: &M,
    sources: &[Vec<u32>],
    responses: &[Vec<u32>],
    batch: usize,
    device: &Device,
) -> Vec<f64> {
    let mut out = Vec::with_capacity(responses.len());
    for (src, resp) in sources
        .chunks(batch.max(1))
        .zip(responses.chunks(batch.max(1)))
    {
        let (sums, _, _) = summed_logps(model, src, resp, device);
        out.extend(super::to_vec(sums).into_iter().map(f64::from));
    }
    out
}

/// The loss of a batch of pairs under `model` (on its device), and its statistics.
fn batch_loss<M: LanguageModel>(
    model: &M,
    pairs: &[Pair],
    settings: &DpoSettings,
    device: &Device,
) -> (Tensor<1>, DpoStats) {
    let b = pairs.len();
    let sources: Vec<Vec<u32>> = pairs
        .iter()
        .chain(pairs)
        .map(|p| p.source.clone())
        .collect();
    let responses: Vec<Vec<u32>> = pairs
        .iter()
        .map(|p| p.chosen.clone())
        .chain(pairs.iter().map(|p| p.rejected.clone()))
        .collect();
    // Chosen and rejected in one forward pass: rows 0..b and b..2b.
    let (sums, token_lp, mask) = summed_logps(model, &sources, &responses, device);
    let host = |v: Vec<f64>| super::vector(v.into_iter().map(|x| x as f32).collect(), device);
    let lens = |f: fn(&Pair) -> usize| host(pairs.iter().map(|p| f(p) as f64).collect());
    let scores = PairScores {
        chosen: sums.clone().narrow(0, 0, b) - host(pairs.iter().map(|p| p.ref_chosen).collect()),
        rejected: sums.clone().narrow(0, b, b)
            - host(pairs.iter().map(|p| p.ref_rejected).collect()),
        chosen_len: lens(|p| p.chosen.len()),
        rejected_len: lens(|p| p.rejected.len()),
    };
    let mut loss = pair_losses(
        settings.loss,
        settings.beta,
        settings.label_smoothing,
        &scores,
    )
    .mean();
    let summed: Vec<f64> = super::to_vec(sums.detach())
        .into_iter()
        .map(f64::from)
        .collect();
    let mut stats = batch_stats(settings.beta, pairs, &summed[..b], &summed[b..]);
    if settings.sft_weight > 0.0 {
        let t = token_lp.dims()[1];
        let chosen_lp = token_lp.slice([0..b, 0..t]);
        let chosen_mask = mask.slice([0..b, 0..t]);
        let nll = -chosen_lp.sum() / chosen_mask.sum().clamp_min(1.0);
        stats.nll = super::to_vec(nll.clone())[0] as f64;
        loss = loss + nll * settings.sft_weight;
    }
    stats.loss = super::to_vec(loss.clone())[0] as f64;
    (loss, stats)
}

/// The statistics of `pairs` under `model` without training (an evaluation).
pub fn evaluate<M: LanguageModel>(
    model: &M,
    pairs: &[Pair],
    settings: &DpoSettings,
    batch: usize,
    device: &Device,
) -> DpoStats {
    let mut total = DpoStats::default();
    let n = pairs.len().max(1) as f64;
    for chunk in pairs.chunks(batch.max(1)) {
        let (_, s) = batch_loss(model, chunk, settings, device);
        let w = chunk.len() as f64 / n;
        total.loss += s.loss * w;
        total.rewards_chosen += s.rewards_chosen * w;
        total.rewards_rejected += s.rewards_rejected * w;
        total.rewards_accuracies += s.rewards_accuracies * w;
        total.rewards_margins += s.rewards_margins * w;
        total.logps_chosen += s.logps_chosen * w;
        total.logps_rejected += s.logps_rejected * w;
        total.nll += s.nll * w;
    }
    total
}

/// One optimizer step of `model` (f32 master weights on an autodiff device)
/// on `pairs`. Under f16 a step whose gradients overflowed is skipped and
/// its `grad_norm` is not finite.
pub fn dpo_step<M: LanguageModel>(
    model: M,
    optim: &mut ModuleOptimizer,
    pairs: &[Pair],
    settings: &DpoSettings,
    lr: f64,
    scaler: &mut LossScaler,
) -> (M, DpoStats) {
    let device = model.devices()[0].clone();
    let compute = settings.precision.compute(&model);
    let (loss, mut stats) = batch_loss(&compute, pairs, settings, &device);
    let (model, norm) = optimizer_step(model, optim, loss, lr, settings.max_grad_norm, scaler);
    stats.grad_norm = norm;
    stats.lr = lr;
    (model, stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ml::{device, to_vec, vector};

    fn scores(c: f32, r: f32, dev: &Device) -> PairScores {
        PairScores {
            chosen: vector(vec![c], dev),
            rejected: vector(vec![r], dev),
            chosen_len: vector(vec![1.0], dev),
            rejected_len: vector(vec![1.0], dev),
        }
    }

    fn close(a: f64, b: f64, tol: f64) {
        assert!((a - b).abs() < tol, "{a} vs {b}");
    }

    #[test]
    fn losses_match_the_hand_computation_of_algorithms_md() {
        // β 0.1; s(c) −10, s_ref(c) −11, s(r) −12, s_ref(r) −11: u_c 1, u_r −1, Δ 2.
        let dev = device(None, 0).unwrap();
        let s = scores(1.0, -1.0, &dev);
        let loss = |k, eps| to_vec(pair_losses(k, 0.1, eps, &s))[0] as f64;
        close(loss(DpoLoss::Sigmoid, 0.0), 0.598_139, 1e-6);
        close(loss(DpoLoss::Sigmoid, 0.1), 0.618_139, 1e-6);
        close(loss(DpoLoss::Robust, 0.1), 0.573_139, 1e-6);
        close(loss(DpoLoss::Hinge, 0.0), 0.8, 1e-6);
        // Lengths 1: the length-normalised IPO is (2 − 5)².
        close(loss(DpoLoss::Ipo, 0.0), 9.0, 1e-5);
        // Lengths 2 and 4 halve and quarter the log-ratios: (0.5 + 0.25 − 5)².
        let long = PairScores {
            chosen_len: vector(vec![2.0], &dev),
            rejected_len: vector(vec![4.0], &dev),
            ..s.clone()
        };
        close(
            to_vec(pair_losses(DpoLoss::Ipo, 0.1, 0.0, &long))[0] as f64,
            (0.75f64 - 5.0).powi(2),
            1e-5,
        );
        // With the policy equal to the reference every loss sees Δ = 0: ln 2 for sigmoid.
        let same = scores(0.0, 0.0, &dev);
        close(
            to_vec(pair_losses(DpoLoss::Sigmoid, 0.1, 0.0, &same))[0] as f64,
            std::f64::consts::LN_2,
            1e-6,
        );
        let st = batch_stats(
            0.1,
            &[Pair {
                source: vec![],
                chosen: vec![],
                rejected: vec![],
                ref_chosen: -11.0,
                ref_rejected: -11.0,
            }],
            &[-10.0],
            &[-12.0],
        );
        close(st.rewards_chosen, 0.1, 1e-12);
        close(st.rewards_rejected, -0.1, 1e-12);
        close(st.rewards_margins, 0.2, 1e-12);
        close(st.rewards_accuracies, 1.0, 1e-12);
    }

    #[test]
    fn gradients_match_finite_differences() {
        let dev = device(None, 0).unwrap();
        let train = dev.clone().autodiff();
        for (kind, eps) in [
            (DpoLoss::Sigmoid, 0.0),
            (DpoLoss::Sigmoid, 0.2),
            (DpoLoss::Robust, 0.1),
            (DpoLoss::Ipo, 0.0),
            (DpoLoss::Hinge, 0.0),
        ] {
            // βΔ = 0.5: away from the hinge's kink at 1.
            let (c, r) = (0.7f32, -0.3f32);
            let lens = (vector(vec![3.0], &train), vector(vec![2.0], &train));
            let at = |c: f32, r: f32, d: &Device| {
                let s = PairScores {
                    chosen: vector(vec![c], d).require_grad(),
                    rejected: vector(vec![r], d).require_grad(),
                    chosen_len: lens.0.clone(),
                    rejected_len: lens.1.clone(),
                };
                (pair_losses(kind, 0.5, eps, &s), s)
            };
            let (loss, s) = at(c, r, &train);
            let grads = loss.sum().backward();
            let g = |t: &Tensor<1>| to_vec(t.grad(&grads).unwrap())[0] as f64;
            let (gc, gr) = (g(&s.chosen), g(&s.rejected));
            let h = 1e-2f32;
            let f = |c: f32, r: f32| to_vec(at(c, r, &train).0)[0] as f64;
            let fd_c = (f(c + h, r) - f(c - h, r)) / (2.0 * h as f64);
            let fd_r = (f(c, r + h) - f(c, r - h)) / (2.0 * h as f64);
            close(gc, fd_c, 1e-3);
            close(gr, fd_r, 1e-3);
            // The pair's gradient pushes the chosen summary up and the rejected one down.
            assert!(gc < 0.0 && gr > 0.0, "{kind:?}: {gc} {gr}");
        }
    }
}
