//! Activation checkpointing by blocks, as transformers' gradient
//! checkpointing does it: the forward pass runs each transformer block
//! without recording the graph and keeps only the block's input; the loss's
//! backward stops at the last block's output; then each block, last first,
//! is run again with the graph recorded and backpropagated with the
//! gradient of its output, which gives its parameters' gradients and its
//! input's. Peak memory holds the block inputs and one block's activations
//! instead of every block's.
//!
//! A model records its blocks on a per-thread tape while it computes on the
//! training device with checkpointing on; [`gradients`] is the backward
//! pass that replays the tape. Gradients equal those of the plain backward.

use std::cell::RefCell;

use burn::module::Module;
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::{Gradients, Tensor};

/// Blocks to run again in the backward pass: given the gradients of the
/// loss's backward, returns the gradients of the replayed part (one
/// backward per block) through `collect`.
pub trait Replay {
    /// Replays, handing each block's gradients to `collect`.
    fn replay(self: Box<Self>, grads: &Gradients, collect: &mut dyn FnMut(Gradients));
}

thread_local! {
    static TAPE: RefCell<Vec<Box<dyn Replay>>> = const { RefCell::new(Vec::new()) };
}

/// Records `replay` for the next [`gradients`] on this thread.
pub fn record(replay: Box<dyn Replay>) {
    TAPE.with(|t| t.borrow_mut().push(replay));
}

/// Drops what was recorded and not backpropagated (a forward whose loss was dropped).
pub fn clear() {
    TAPE.with(|t| t.borrow_mut().clear());
}

/// The gradients of `loss` for the parameters of `model`, replaying the
/// checkpointed blocks recorded since the last call.
pub fn gradients<M: Module>(loss: Tensor<1>, model: &M) -> GradientsParams {
    let tape: Vec<Box<dyn Replay>> = TAPE.with(|t| std::mem::take(&mut *t.borrow_mut()));
    let grads = loss.backward();
    if tape.is_empty() {
        return GradientsParams::from_grads(grads, model);
    }
    let mut acc = GradientsAccumulator::new();
    for r in tape.into_iter().rev() {
        r.replay(&grads, &mut |mut g| {
            acc.accumulate(model, GradientsParams::from_module(&mut g, model));
        });
    }
    acc.accumulate(model, GradientsParams::from_grads(grads, model));
    acc.grads()
}

/// Runs `block` again on a fresh leaf of `input` and backpropagates the
/// gradient `g` of its output; hands the gradients to `collect` and returns
/// the input's gradient (`None` when the output does not depend on it).
pub fn replay_block(
    input: Tensor<3>,
    g: Tensor<3>,
    block: impl FnOnce(Tensor<3>) -> Tensor<3>,
    collect: &mut dyn FnMut(Gradients),
) -> Option<Tensor<3>> {
    let x = leaf(input);
    let grads = (block(x.clone()) * untracked(g)).sum().backward();
    let gx = x.grad(&grads);
    collect(grads);
    gx
}

/// Backpropagates `g` through `embedded` (the embeddings rebuilt with their
/// graph) when they train.
pub fn into_embeddings(embedded: Tensor<3>, g: Tensor<3>, collect: &mut dyn FnMut(Gradients)) {
    if embedded.is_tracked() {
        collect((embedded * untracked(g)).sum().backward());
    }
}

/// A fresh leaf holding `x`'s values, tracked: where a replayed part
/// starts or ends (its gradient is what the replay hands on).
pub fn leaf<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    untracked(x).require_grad()
}

/// `x`'s values on the training device, outside any graph: a block run on
/// it (with its parameters `no_grad`) records nothing, yet computes exactly
/// as when it is recorded (the same kernels, dropout included).
pub fn untracked<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    Tensor::from_inner(x.inner())
}

/// Seeds `device` for block `i` of a pass whose seed is `base`: the replay
/// draws the same dropout masks as the first run.
pub fn seed_block(device: &burn::tensor::Device, base: u64, i: usize) {
    device.seed(base ^ (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
}

/// A seed for the blocks of one pass, drawn from `device` (so it follows the step's seed).
pub fn pass_seed(device: &burn::tensor::Device) -> u64 {
    let r: Tensor<1> = Tensor::random([2], burn::tensor::Distribution::Default, device);
    let v = crate::ml::to_vec(r.inner());
    (u64::from(v[0].to_bits()) << 32) | u64::from(v[1].to_bits())
}
