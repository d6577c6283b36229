//! Learning-rate schedules.

/// Linear warm-up to `lr` over `warmup` steps, then cosine decay to `lr * min_ratio` at `total`.
pub fn cosine_lr(step: usize, total: usize, warmup: usize, lr: f64, min_ratio: f64) -> f64 {
    if warmup > 0 && step < warmup {
        return lr * (step + 1) as f64 / warmup as f64;
    }
    let span = total.saturating_sub(warmup).max(1) as f64;
    let progress = ((step - warmup.min(step)) as f64 / span).min(1.0);
    let min = lr * min_ratio;
    min + 0.5 * (lr - min) * (1.0 + (std::f64::consts::PI * progress).cos())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warms_up_then_decays_by_half_a_cosine() {
        assert!((cosine_lr(0, 100, 10, 1.0, 0.0) - 0.1).abs() < 1e-12);
        assert!((cosine_lr(9, 100, 10, 1.0, 0.0) - 1.0).abs() < 1e-12);
        assert!((cosine_lr(10, 100, 10, 1.0, 0.0) - 1.0).abs() < 1e-12);
        // Half way through the decay: cos(pi/2) = 0, so the mean of max and min.
        assert!((cosine_lr(55, 100, 10, 1.0, 0.1) - 0.55).abs() < 1e-12);
        assert!((cosine_lr(100, 100, 10, 1.0, 0.1) - 0.1).abs() < 1e-12);
    }
}
