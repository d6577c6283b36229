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
