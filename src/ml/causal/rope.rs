//! Rotary position tables as transformers computes them, in f32 and in the
//! same order of operations (`inv_freq = 1 / theta^(2i/d)`, then the
//! `llama3` or `linear` scaling, then `cos`/`sin` of `position * inv_freq`
//! repeated over the two halves of a head), so that greedy and beam search
//! pick the same tokens. Built on the host per forward, for each row's own
//! positions.

use burn::tensor::{Device, Tensor, TensorData};

use super::config::{CausalConfig, RopeScaling};

/// The inverse frequencies of one head's rotary pairs.
#[derive(Debug, Clone, PartialEq)]
pub struct Rope {
    inv_freq: Vec<f32>,
}

/// transformers' `_compute_llama3_parameters`, op for op in f32.
fn llama3(inv: f32, factor: f32, low: f32, high: f32, original: f32) -> f32 {
    let low_wavelen = original / low;
    let high_wavelen = original / high;
    let wavelen = std::f32::consts::TAU / inv;
    let scaled = if wavelen > low_wavelen {
        inv / factor
    } else {
        inv
    };
    // Neither high nor low frequency (torch: `~(w < high) * ~(w > low)`; no NaN here).
    let medium = wavelen >= high_wavelen && wavelen <= low_wavelen;
    if medium {
        let smooth = (original / wavelen - low) / (high - low);
        (1.0 - smooth) * scaled / factor + smooth * scaled
    } else {
        scaled
    }
}

impl Rope {
    /// The frequencies `config` implies.
    pub fn new(config: &CausalConfig) -> Rope {
        let d = config.head_dim;
        let theta = config.rope_theta as f32;
        let base = (0..d)
            .step_by(2)
            .map(|i| 1.0 / theta.powf(i as f32 / d as f32));
        let inv_freq = match config.rope_scaling {
            RopeScaling::None => base.collect(),
            RopeScaling::Linear { factor } => base.map(|f| f / factor as f32).collect(),
            RopeScaling::Llama3 {
                factor,
                low,
                high,
                original,
            } => base
                .map(|f| llama3(f, factor as f32, low as f32, high as f32, original as f32))
                .collect(),
        };
        Rope { inv_freq }
    }

    /// `cos` and `sin` `[b, 1, t, head_dim]` at `positions` (`b * t`, row-major).
    pub fn tables(
        &self,
        positions: &[i64],
        b: usize,
        t: usize,
        device: &Device,
    ) -> (Tensor<4>, Tensor<4>) {
        let half = self.inv_freq.len();
        let d = 2 * half;
        let mut cos = Vec::with_capacity(b * t * d);
        let mut sin = Vec::with_capacity(b * t * d);
        for &p in positions {
            let start = cos.len();
            for &f in &self.inv_freq {
                let angle = p as f32 * f;
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
            cos.extend_from_within(start..start + half);
            sin.extend_from_within(start..start + half);
        }
        let table = |v: Vec<f32>| {
            Tensor::<1>::from_data(TensorData::new(v, [b * t * d]), device).reshape([b, 1, t, d])
        };
        (table(cos), table(sin))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llama3_scaling_keeps_high_divides_low_and_blends_between() {
        // Llama 3.2's settings: factor 32, low 1, high 4, original 8192.
        let f = |inv: f32| llama3(inv, 32.0, 1.0, 4.0, 8192.0);
        // Wavelength 2π (short): kept.
        assert_eq!(f(1.0), 1.0);
        // Wavelength 2π·10⁵ (> 8192): divided by the factor.
        assert_eq!(f(1e-5), 1e-5 / 32.0);
        // Wavelength 4096 (between 2048 and 8192): smooth = (8192/4096 - 1) / 3 = 1/3.
        let inv = std::f32::consts::TAU / 4096.0;
        let expected = (2.0 / 3.0) * inv / 32.0 + (1.0 / 3.0) * inv;
        assert!((f(inv) - expected).abs() < 1e-9, "{} vs {expected}", f(inv));
    }
}
