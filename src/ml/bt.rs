//! The Bradley-Terry pairwise loss and pairwise accuracy.

use burn::tensor::Tensor;
use burn::tensor::activation::log_sigmoid;

/// `mean(-log sigmoid(r_preferred - r_rejected))`.
pub fn bt_loss(preferred: Tensor<1>, rejected: Tensor<1>) -> Tensor<1> {
    log_sigmoid(preferred - rejected).mean().neg()
}

/// The same loss on plain numbers (for reporting), computed stably.
pub fn bt_loss_values(preferred: &[f32], rejected: &[f32]) -> f64 {
    if preferred.is_empty() {
        return 0.0;
    }
    let total: f64 = preferred
        .iter()
        .zip(rejected)
        .map(|(p, r)| {
            let d = (*p - *r) as f64;
            // -log sigmoid(d) = log(1 + e^-d)
            if d > 0.0 {
                (-d).exp().ln_1p()
            } else {
                -d + d.exp().ln_1p()
            }
        })
        .sum();
    total / preferred.len() as f64
}

/// Share of pairs where the preferred side scores higher; ties count half.
pub fn pairwise_accuracy(preferred: &[f64], rejected: &[f64]) -> f64 {
    if preferred.is_empty() {
        return 0.0;
    }
    let right: f64 = preferred
        .iter()
        .zip(rejected)
        .map(|(p, r)| {
            if p > r {
                1.0
            } else if p == r {
                0.5
            } else {
                0.0
            }
        })
        .sum();
    right / preferred.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accuracy_counts_ties_half() {
        // right, wrong, tie, right -> (2 + 0.5) / 4
        assert_eq!(
            pairwise_accuracy(&[2.0, 0.0, 1.0, 5.0], &[1.0, 1.0, 1.0, 4.0]),
            0.625
        );
        assert_eq!(pairwise_accuracy(&[], &[]), 0.0);
    }

    #[test]
    fn loss_matches_hand_values() {
        // d = 0: log 2; d = 2: log(1 + e^-2) = 0.126928; d = -2: 2.126928.
        assert!((bt_loss_values(&[0.0], &[0.0]) - std::f64::consts::LN_2).abs() < 1e-9);
        assert!((bt_loss_values(&[3.0], &[1.0]) - 0.126_928_011).abs() < 1e-6);
        assert!((bt_loss_values(&[1.0], &[3.0]) - 2.126_928_011).abs() < 1e-6);
        let dev = crate::ml::device(None, 0).unwrap();
        let t = bt_loss(
            crate::ml::vector(vec![3.0, 1.0], &dev),
            crate::ml::vector(vec![1.0, 3.0], &dev),
        );
        let v = crate::ml::to_vec(t)[0] as f64;
        assert!(
            (v - (0.126_928_011 + 2.126_928_011) / 2.0).abs() < 1e-5,
            "{v}"
        );
    }
}

/// Settings of a pairwise training loop.
#[derive(Debug, Clone)]
pub struct PairwiseLoop {
    /// Passes over the pairs.
    pub epochs: usize,
    /// Pairs per optimizer step.
    pub batch: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// AdamW weight decay.
    pub weight_decay: f64,
    /// Linear warm-up steps before the cosine decay.
    pub warmup_steps: usize,
    /// Seeds initialisation and pair order.
    pub seed: u64,
}

/// Trains `model` on `n` pairs with AdamW, a warm-up + cosine schedule and a
/// seeded reshuffle every epoch. `loss` returns the Bradley-Terry loss of the
/// pairs whose indices it is given. Returns the model and the mean loss per epoch.
pub fn train_pairwise<M: burn::module::Module>(
    mut model: M,
    n: usize,
    cfg: &PairwiseLoop,
    loss: impl Fn(&M, &[usize]) -> Tensor<1>,
    mut on_epoch: impl FnMut(usize, f64),
) -> (M, Vec<f64>) {
    use burn::optim::{AdamWConfig, GradientsParams};
    let mut optim = AdamWConfig::new()
        .with_weight_decay(cfg.weight_decay as f32)
        .init();
    let mut rng = crate::rng::Rng::new(cfg.seed);
    let batch = cfg.batch.max(1);
    let total = n.div_ceil(batch) * cfg.epochs;
    let mut order: Vec<usize> = (0..n).collect();
    let mut losses = Vec::with_capacity(cfg.epochs);
    let mut step = 0;
    for epoch in 0..cfg.epochs {
        rng.shuffle(&mut order);
        let mut sum = 0.0;
        for chunk in order.chunks(batch) {
            let l = loss(&model, chunk);
            sum += super::to_vec(l.clone())[0] as f64 * chunk.len() as f64;
            let grads = GradientsParams::from_grads(l.backward(), &model);
            model = optim.step(
                super::schedule::cosine_lr(step, total, cfg.warmup_steps, cfg.lr, 0.0),
                model,
                grads,
            );
            step += 1;
        }
        let mean = sum / n.max(1) as f64;
        losses.push(mean);
        on_epoch(epoch, mean);
    }
    (model, losses)
}
