//! The fused kernels on plain row-major f32 slices, each one pass (two
//! for layer norm's parameter gradients) over its rows, split across the
//! rayon pool. Pure functions, so that tests can hold them against the
//! composed burn ops they replace. Each row's loop is compiled for the
//! widest vectors the CPU has ([`widest_simd`]).

use rayon::prelude::*;

use super::math::{self, erf, exp};

/// Defines `fn $name` three times over on x86-64: for AVX-512, for AVX2
/// with FMA and for the baseline, and runs the widest the CPU has. A
/// release build targets baseline x86-64 (SSE2: four lanes), and these
/// loops are arithmetic on data already in cache, so their speed is their
/// vector width. The features are detected once (std caches them).
macro_rules! widest_simd {
    ($(#[$doc:meta])* fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$doc])*
        fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                fn avx512($($arg: $ty),*) $(-> $ret)? $body
                #[target_feature(enable = "avx2,fma")]
                fn avx2($($arg: $ty),*) $(-> $ret)? $body
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU has the feature `avx512` is compiled for.
                    return unsafe { avx512($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: the CPU has the features `avx2` is compiled for.
                    return unsafe { avx2($($arg),*) };
                }
            }
            $body
        }
    };
}

/// Rows per rayon task: enough work per task that splitting pays.
fn rows_per_task(row_len: usize) -> usize {
    (16_384 / row_len.max(1)).max(1)
}

/// Log-probability of each row's label under `softmax(x * scale)`, and the
/// row's log-sum-exp (what the backward needs). A label outside the row
/// gives NaN.
pub fn label_logprobs(x: &[f32], cols: usize, labels: &[i64], scale: f32) -> (Vec<f32>, Vec<f32>) {
    let mut out = vec![(0.0f32, 0.0f32); labels.len()];
    out.par_iter_mut()
        .with_min_len(rows_per_task(cols))
        .zip(x.par_chunks(cols).zip(labels.par_iter()))
        .for_each(|(o, (row, &label))| {
            let lse = log_sum_exp(row, scale);
            let picked = usize::try_from(label).ok().and_then(|l| row.get(l));
            *o = (picked.map_or(f32::NAN, |&v| v * scale - lse), lse);
        });
    out.into_iter().unzip()
}

widest_simd! {
    fn log_sum_exp(row: &[f32], scale: f32) -> f32 {
        let max = math::max_by(row, |v| v * scale);
        // exp into a small buffer, then sum it: a loop the compiler
        // vectorises, where exp inside the eight-lane sum stayed scalar
        // (a fifth of the fused kernels' samples).
        let mut buf = [0.0f32; 64];
        let mut sum = 0.0f32;
        for chunk in row.chunks(buf.len()) {
            let buf = &mut buf[..chunk.len()];
            for (e, &v) in buf.iter_mut().zip(chunk) {
                *e = exp(v * scale - max);
            }
            sum += math::sum(buf);
        }
        max + sum.ln()
    }
}

widest_simd! {
    /// `row = -g * exp(row * scale - lse)`: minus `g` times the softmax.
    fn scaled_softmax_times(row: &mut [f32], g: f32, scale: f32, lse: f32) {
        for v in row.iter_mut() {
            *v = -g * exp(*v * scale - lse);
        }
    }
}

/// Overwrites the logits `x` with their gradient under [`label_logprobs`],
/// given the gradient `grad` of each row's log-probability:
/// `grad * scale * (onehot - p)`.
pub fn label_logprobs_backward_in_place(
    x: &mut [f32],
    cols: usize,
    labels: &[i64],
    lse: &[f32],
    grad: &[f32],
    scale: f32,
) {
    x.par_chunks_mut(cols)
        .with_min_len(rows_per_task(cols))
        .enumerate()
        .for_each(|(r, row)| {
            let g = grad[r] * scale;
            scaled_softmax_times(row, g, scale, lse[r]);
            if let Some(d) = usize::try_from(labels[r]).ok().and_then(|l| row.get_mut(l)) {
                *d += g;
            }
        });
}

/// How a bias broadcasts over `[batch, heads, queries, keys]` scores: its
/// dims, each 1 (broadcast) or the scores' own.
#[derive(Debug, Clone, Copy)]
pub struct BiasLayout {
    /// The scores' `[batch, heads, queries, keys]`.
    pub scores: [usize; 4],
    /// The bias's dims, each 1 or equal to the scores'.
    pub bias: [usize; 4],
}

impl BiasLayout {
    /// The offset of the bias row that score row `r` adds.
    fn row_offset(&self, r: usize) -> usize {
        let [_, h, q, k] = self.scores;
        let [_, bh, bq, _] = self.bias;
        let pick = |i: usize, dim: usize| if dim == 1 { 0 } else { i };
        let (b, hi, qi) = (r / (h * q), (r / q) % h, r % q);
        ((pick(b, self.bias[0]) * bh + pick(hi, bh)) * bq + pick(qi, bq)) * k
    }
}

/// Softmax over each row of `cols` values, in place, after adding the
/// broadcast `bias` where there is one.
pub fn softmax_in_place(x: &mut [f32], cols: usize, bias: Option<(&[f32], BiasLayout)>) {
    x.par_chunks_mut(cols)
        .with_min_len(rows_per_task(cols))
        .enumerate()
        .for_each(|(r, row)| {
            let bias = bias.map(|(values, layout)| {
                let at = layout.row_offset(r);
                &values[at..at + cols]
            });
            softmax_row(row, bias);
        });
}

widest_simd! {
    fn softmax_row(row: &mut [f32], bias: Option<&[f32]>) {
        if let Some(bias) = bias {
            row.iter_mut().zip(bias).for_each(|(v, b)| *v += b);
        }
        let max = math::max(row);
        row.iter_mut().for_each(|v| *v = exp(*v - max));
        let inv = 1.0 / math::sum(row);
        row.iter_mut().for_each(|v| *v *= inv);
    }
}

/// Overwrites `grad` with the input's gradient under [`softmax_in_place`],
/// from its output `y`: `y * (grad - Σ grad·y)`.
pub fn softmax_backward_in_place(y: &[f32], grad: &mut [f32], cols: usize) {
    grad.par_chunks_mut(cols)
        .with_min_len(rows_per_task(cols))
        .zip(y.par_chunks(cols))
        .for_each(|(g, y)| softmax_grad_row(g, y));
}

widest_simd! {
    fn softmax_grad_row(g: &mut [f32], y: &[f32]) {
        let dot = math::dot(y, g);
        for (g, &y) in g.iter_mut().zip(y) {
            *g = y * (*g - dot);
        }
    }
}

const CHUNK: usize = 16_384;
const FRAC_1_SQRT_2PI: f32 = 0.398_942_3;

/// GELU with the exact erf (HF's `gelu`).
pub fn gelu(x: &[f32]) -> Vec<f32> {
    let mut y = vec![0.0f32; x.len()];
    y.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .for_each(|(y, x)| gelu_chunk(y, x));
    y
}

widest_simd! {
    fn gelu_chunk(y: &mut [f32], x: &[f32]) {
        for (y, &x) in y.iter_mut().zip(x) {
            *y = 0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2));
        }
    }
}

/// Overwrites `grad` with the input's gradient under [`gelu`]:
/// `grad * (Φ(x) + x φ(x))`.
pub fn gelu_backward_in_place(x: &[f32], grad: &mut [f32]) {
    grad.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .for_each(|(g, x)| gelu_grad_chunk(g, x));
}

widest_simd! {
    fn gelu_grad_chunk(g: &mut [f32], x: &[f32]) {
        for (g, &x) in g.iter_mut().zip(x) {
            let cdf = 0.5 * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2));
            let pdf = FRAC_1_SQRT_2PI * exp(-0.5 * x * x);
            *g *= cdf + x * pdf;
        }
    }
}

/// Layer norm over rows of `cols`: the output, and each row's mean and
/// reciprocal standard deviation (what the backward needs).
pub fn layer_norm(
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let cols = gamma.len();
    let rows = x.len() / cols.max(1);
    let mut y = vec![0.0f32; x.len()];
    let mut stats = vec![(0.0f32, 0.0f32); rows];
    y.par_chunks_mut(cols)
        .with_min_len(rows_per_task(cols))
        .zip(x.par_chunks(cols).zip(stats.par_iter_mut()))
        .for_each(|(y, (row, stat))| *stat = layer_norm_row(y, row, gamma, beta, eps));
    let (mean, rstd) = stats.into_iter().unzip();
    (y, mean, rstd)
}

widest_simd! {
    /// One row of [`layer_norm`] into `y`; its mean and 1/std.
    fn layer_norm_row(y: &mut [f32], row: &[f32], gamma: &[f32], beta: &[f32], eps: f32) -> (f32, f32) {
        let n = row.len() as f32;
        let mean = math::sum(row) / n;
        let var = math::sum_by(row, |v| (v - mean) * (v - mean)) / n;
        let rstd = 1.0 / (var + eps).sqrt();
        for (((y, &v), &g), &b) in y.iter_mut().zip(row).zip(gamma).zip(beta) {
            *y = (v - mean) * rstd * g + b;
        }
        (mean, rstd)
    }
}

/// The gradients of [`layer_norm`]'s `gamma` and `beta`, then `grad`
/// overwritten with that of `x`.
pub fn layer_norm_backward_in_place(
    x: &[f32],
    gamma: &[f32],
    mean: &[f32],
    rstd: &[f32],
    grad: &mut [f32],
) -> (Vec<f32>, Vec<f32>) {
    let cols = gamma.len();
    let params = layer_norm_param_grads(x, cols, mean, rstd, grad);
    grad.par_chunks_mut(cols)
        .with_min_len(rows_per_task(cols))
        .zip(x.par_chunks(cols))
        .enumerate()
        .for_each(|(r, (g, row))| layer_norm_grad_row(g, row, gamma, mean[r], rstd[r]));
    params
}

widest_simd! {
    /// One row's input gradient under [`layer_norm`], over its output's `g`.
    fn layer_norm_grad_row(g: &mut [f32], row: &[f32], gamma: &[f32], mean: f32, rstd: f32) {
        let n = row.len() as f32;
        // Σ g·w and Σ g·w·x̂, in eight partial sums so that they vectorise.
        let (mut dh, mut dh_h) = ([0.0f32; 8], [0.0f32; 8]);
        let (gs, rows, ws) = (g.chunks_exact(8), row.chunks_exact(8), gamma.chunks_exact(8));
        let tail = gs.remainder().iter().zip(rows.remainder()).zip(ws.remainder());
        let (mut tail_dh, mut tail_dh_h) = (0.0f32, 0.0f32);
        for ((&g, &v), &w) in tail {
            tail_dh += g * w;
            tail_dh_h += g * w * (v - mean) * rstd;
        }
        for ((g, v), w) in gs.zip(rows).zip(ws) {
            for i in 0..8 {
                dh[i] += g[i] * w[i];
                dh_h[i] += g[i] * w[i] * (v[i] - mean) * rstd;
            }
        }
        let a = (dh.iter().sum::<f32>() + tail_dh) / n;
        let b = (dh_h.iter().sum::<f32>() + tail_dh_h) / n;
        for ((g, &v), &w) in g.iter_mut().zip(row).zip(gamma) {
            let h = (v - mean) * rstd;
            *g = rstd * (*g * w - a - h * b);
        }
    }
}

/// `Σ_rows grad · x̂` and `Σ_rows grad`: gamma's and beta's gradients.
fn layer_norm_param_grads(
    x: &[f32],
    cols: usize,
    mean: &[f32],
    rstd: &[f32],
    grad: &[f32],
) -> (Vec<f32>, Vec<f32>) {
    x.par_chunks(cols)
        .zip(grad.par_chunks(cols))
        .enumerate()
        .with_min_len(rows_per_task(cols))
        .fold(
            || (vec![0.0f32; cols], vec![0.0f32; cols]),
            |(mut dg, mut db), (r, (row, g))| {
                accumulate_param_grads(&mut dg, &mut db, row, g, mean[r], rstd[r]);
                (dg, db)
            },
        )
        .reduce(
            || (vec![0.0f32; cols], vec![0.0f32; cols]),
            |(mut a, mut b), (c, d)| {
                a.iter_mut().zip(c).for_each(|(a, c)| *a += c);
                b.iter_mut().zip(d).for_each(|(b, d)| *b += d);
                (a, b)
            },
        )
}

widest_simd! {
    /// Adds one row's `g · x̂` to `dg` and its `g` to `db`.
    fn accumulate_param_grads(dg: &mut [f32], db: &mut [f32], row: &[f32], g: &[f32], mean: f32, rstd: f32) {
        for (((dg, db), &v), &g) in dg.iter_mut().zip(db.iter_mut()).zip(row).zip(g) {
            *dg += g * (v - mean) * rstd;
            *db += g;
        }
    }
}
