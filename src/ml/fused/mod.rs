//! Fused CPU kernels for the ops that dominate a training step once the
//! matmuls are multithreaded: the log-softmax over the vocabulary with its
//! label pick, the attention softmax, GELU and layer norm; and the matmuls
//! themselves (with a linear layer's bias), writing their output once. burn's autodiff
//! records each of these as 5-9 single-threaded elementwise ops (each
//! allocating its output); here each is one multithreaded pass forward and
//! one backward, through burn's backend-extension interface (see `ops.rs`).
//!
//! They run on the CPU backend in f32. Elsewhere (a GPU, where burn fuses
//! on its own, or half precision) the same functions fall back to burn's
//! composed ops, which compute the same math.

mod gemm;
mod kernels;
mod math;
mod ops;

use burn::backend::Dispatch;
use burn::nn::LayerNorm;

use crate::ml::lora::Proj;
use burn::tensor::{DType, Device, Int, Tensor, activation as act};

use ops::FusedOps;

/// Whether `x` lives where the fused kernels run: the CPU backend, in f32.
fn fusable<const D: usize>(x: &Tensor<D>) -> bool {
    x.dtype() == DType::F32 && x.device().without_autodiff() == Device::flex()
}

/// Log-probabilities `[b, t]` of `labels` under `softmax(logits / temperature)`.
pub fn label_logprobs(logits: Tensor<3>, labels: Tensor<2, Int>, temperature: f64) -> Tensor<2> {
    let [b, t, v] = logits.dims();
    if !fusable(&logits) {
        let logits = if temperature != 1.0 {
            logits / temperature
        } else {
            logits
        };
        return act::log_softmax(logits, 2)
            .gather(2, labels.reshape([b, t, 1]))
            .reshape([b, t]);
    }
    let (lp, _lse) = <Dispatch as FusedOps>::fused_label_logprobs(
        logits.reshape([b * t, v]).into_dispatch(),
        labels.reshape([b * t]).into_dispatch(),
        (1.0 / temperature) as f32,
    );
    Tensor::<1>::from_dispatch(lp).reshape([b, t])
}

/// Softmax over the last dimension.
pub fn softmax<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if !fusable(&x) {
        return act::softmax(x, D - 1);
    }
    Tensor::from_dispatch(<Dispatch as FusedOps>::fused_softmax(x.into_dispatch()))
}

/// Softmax over the last dimension of `[b, h, q, k]` attention scores plus
/// `bias` (`[b or 1, h or 1, q or 1, k]`, a constant: it gets no gradient).
pub fn biased_softmax(scores: Tensor<4>, bias: Tensor<4>) -> Tensor<4> {
    let [b, h, q, k] = scores.dims();
    let dims = bias.dims();
    let broadcasts = dims[3] == k && (0..3).all(|i| dims[i] == 1 || dims[i] == [b, h, q][i]);
    if !fusable(&scores) || bias.dtype() != DType::F32 || !broadcasts {
        return act::softmax(scores + bias, 3);
    }
    Tensor::from_dispatch(<Dispatch as FusedOps>::fused_biased_softmax(
        scores.into_dispatch(),
        bias.detach().into_dispatch(),
    ))
}

/// GELU with the exact erf.
pub fn gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if !fusable(&x) {
        return act::gelu(x);
    }
    Tensor::from_dispatch(<Dispatch as FusedOps>::fused_gelu(x.into_dispatch()))
}

/// `norm` applied to `x` (whose epsilon is `eps`), fused under autodiff,
/// where burn would decompose it; burn's own kernel is already one pass
/// for inference.
pub fn layer_norm<const D: usize>(norm: &LayerNorm, x: Tensor<D>, eps: f64) -> Tensor<D> {
    let Some(beta) = norm
        .beta
        .as_ref()
        .filter(|_| fusable(&x) && x.device().is_autodiff())
    else {
        return norm.forward(x);
    };
    let (y, _mean, _rstd) = <Dispatch as FusedOps>::fused_layer_norm(
        x.into_dispatch(),
        norm.gamma.val().into_dispatch(),
        beta.val().into_dispatch(),
        eps as f32,
    );
    Tensor::from_dispatch(y)
}

/// `lhs @ rhs` over equal batch dims; the operands may be transposed
/// views (no copy is made of them).
pub fn matmul<const D: usize>(lhs: Tensor<D>, rhs: Tensor<D>) -> Tensor<D> {
    let (l, r) = (lhs.dims(), rhs.dims());
    let agree = D >= 2 && l[..D - 2] == r[..D - 2] && l[D - 1] == r[D - 2];
    if !(agree && fusable(&lhs) && fusable(&rhs)) {
        return lhs.matmul(rhs);
    }
    Tensor::from_dispatch(<Dispatch as FusedOps>::fused_matmul(
        lhs.into_dispatch(),
        rhs.into_dispatch(),
    ))
}

/// `layer`'s forward over the last dimension of `x`, its adapter's update added.
pub fn linear<const D: usize>(layer: &Proj, x: Tensor<D>) -> Tensor<D> {
    match &layer.lora {
        Some(adapter) => dense(layer, x.clone()) + adapter.delta(x),
        None => dense(layer, x),
    }
}

/// `x @ weight + bias` over the last dimension of `x`.
fn dense<const D: usize>(layer: &Proj, x: Tensor<D>) -> Tensor<D> {
    let Some(bias) = layer.bias.as_ref().filter(|_| fusable(&x)) else {
        return burn::tensor::module::linear(
            x,
            layer.weight.val(),
            layer.bias.as_ref().map(|b| b.val()),
        );
    };
    let dims = x.dims();
    let rows = dims[..D - 1].iter().product();
    let y = affine(
        x.reshape([rows, dims[D - 1]]),
        layer.weight.val(),
        bias.val(),
    );
    let mut out = dims;
    out[D - 1] = y.dims()[1];
    y.reshape(out)
}

/// `x @ weight + bias` for `x` `[rows, k]`, `weight` `[k, n]` (a view is
/// fine: the tied output projection passes a transposed embedding).
pub fn affine(x: Tensor<2>, weight: Tensor<2>, bias: Tensor<1>) -> Tensor<2> {
    let [[_, k], [k2, n]] = [x.dims(), weight.dims()];
    if !(k == k2 && bias.dims() == [n] && fusable(&x) && fusable(&weight) && fusable(&bias)) {
        return x.matmul(weight) + bias.unsqueeze();
    }
    Tensor::from_dispatch(<Dispatch as FusedOps>::fused_linear(
        x.into_dispatch(),
        weight.into_dispatch(),
        bias.into_dispatch(),
    ))
}

#[cfg(test)]
mod tests;
