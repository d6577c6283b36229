//! The fused ops as a burn backend extension: the trait, its CPU (Flex)
//! implementation over [`super::kernels`], and its autodiff implementation,
//! which registers each op's hand-written backward as one graph node where
//! burn's autodiff would record the 5-9 ops it decomposes the op into.

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, NodeGuard, Ops, OpsKind, unary};
use burn::backend::flex::{Flex, FlexTensor};
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::{AutodiffBackend, Backend, TensorMetadata, backend_extension};
use burn::tensor::{Shape, TensorData};

use std::borrow::Cow;

use super::gemm::{self, Operand};
use super::kernels::{self, BiasLayout};

/// Ops that burn's autodiff would otherwise decompose; each forward has a
/// `_backward` that the autodiff implementation calls.
#[backend_extension(Flex, Autodiff)]
pub trait FusedOps: Backend {
    /// `[n, v]` logits and `[n]` labels -> (`[n]` log-probabilities of the
    /// labels under `softmax(logits * scale)`, `[n]` log-sum-exps).
    fn fused_label_logprobs(
        logits: FloatTensor<Self>,
        labels: IntTensor<Self>,
        scale: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);
    /// The gradient of the logits from that of the log-probabilities.
    fn fused_label_logprobs_backward(
        logits: FloatTensor<Self>,
        labels: IntTensor<Self>,
        lse: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        scale: f32,
    ) -> FloatTensor<Self>;
    /// Softmax over the last dimension.
    fn fused_softmax(x: FloatTensor<Self>) -> FloatTensor<Self>;
    /// Softmax over the last dimension of `[b, h, q, k]` scores plus a
    /// constant bias that broadcasts to them (an attention mask).
    fn fused_biased_softmax(x: FloatTensor<Self>, bias: FloatTensor<Self>) -> FloatTensor<Self>;
    /// The gradient of the input from the output `y` and its gradient.
    fn fused_softmax_backward(y: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self>;
    /// GELU (exact erf).
    fn fused_gelu(x: FloatTensor<Self>) -> FloatTensor<Self>;
    /// The gradient of GELU's input.
    fn fused_gelu_backward(x: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self>;
    /// Layer norm over the last dimension -> (output, row means, row 1/std).
    fn fused_layer_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        eps: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
    /// Gradients of the input, gamma and beta.
    fn fused_layer_norm_backward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        rstd: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
    /// `[..., m, k] @ [..., k, n]` over equal batch dims (any strides).
    fn fused_matmul(lhs: FloatTensor<Self>, rhs: FloatTensor<Self>) -> FloatTensor<Self>;
    /// `[rows, k] @ [k, n] + [n]`: a linear layer.
    fn fused_linear(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self>;
}

/// The f32 values of a tensor in row-major order (a copy only where the
/// layout is strided). Callers gate on f32 before dispatching here.
fn values(t: &FlexTensor) -> Cow<'_, [f32]> {
    match t.as_slice::<f32>() {
        Some(s) => Cow::Borrowed(s),
        None => Cow::Owned(
            t.to_contiguous()
                .into_data()
                .try_into_vec::<f32>()
                .expect("fused ops are dispatched for f32 tensors only"),
        ),
    }
}

/// `t` with storage this op may overwrite: its own where nothing else
/// holds it and it is dense, else a copy.
fn writable(t: FlexTensor) -> FlexTensor {
    let layout = t.layout();
    let dense = layout.is_contiguous()
        && layout.start_offset() == 0
        && t.bytes().len() == layout.num_elements() * size_of::<f32>();
    if dense && t.is_unique() {
        t
    } else {
        tensor(values(&t).into_owned(), t.shape())
    }
}

/// The storage of a tensor from [`writable`].
fn storage(t: &mut FlexTensor) -> &mut [f32] {
    t.try_storage_mut::<f32>()
        .expect("a writable f32 tensor is uniquely owned")
}

fn tensor(values: Vec<f32>, shape: impl Into<Shape>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
}

fn last_dim(t: &FlexTensor) -> usize {
    t.shape().as_slice().last().copied().unwrap_or(1)
}

/// `lhs @ rhs (+ bias)` through [`gemm::matmul`], on row-major copies of
/// the operands where their layout is one it refuses.
fn product(lhs: &FlexTensor, rhs: &FlexTensor, bias: Option<&FlexTensor>) -> FlexTensor {
    let operand = |t: &FlexTensor| {
        let layout = t.layout();
        (
            layout.shape().as_slice().to_vec(),
            layout.start_offset(),
            layout.strides().to_vec(),
        )
    };
    let bias = bias.map(values);
    let run = |l: &FlexTensor, r: &FlexTensor| {
        let ((ls, lo, lst), (rs, ro, rst)) = (operand(l), operand(r));
        let lhs = Operand {
            data: l.storage::<f32>(),
            offset: lo,
            strides: &lst,
        };
        let rhs = Operand {
            data: r.storage::<f32>(),
            offset: ro,
            strides: &rst,
        };
        let out = gemm::matmul(lhs, &ls, rhs, &rs, bias.as_deref())?;
        let mut shape = ls;
        let last = shape.len() - 1;
        shape[last] = rs[last];
        Some(tensor(out, shape))
    };
    run(lhs, rhs)
        .or_else(|| run(&lhs.to_contiguous(), &rhs.to_contiguous()))
        .expect("fused matmul operands agree in shape (checked before dispatch)")
}

fn labels(t: IntTensor<Flex>) -> Vec<i64> {
    t.into_data().iter::<i64>().collect()
}

impl FusedOps for Flex {
    fn fused_label_logprobs(
        logits: FlexTensor,
        labels_: FlexTensor,
        scale: f32,
    ) -> (FlexTensor, FlexTensor) {
        let labels = labels(labels_);
        let n = labels.len();
        let (lp, lse) =
            kernels::label_logprobs(&values(&logits), last_dim(&logits), &labels, scale);
        (tensor(lp, [n]), tensor(lse, [n]))
    }

    fn fused_label_logprobs_backward(
        logits: FlexTensor,
        labels_: FlexTensor,
        lse: FlexTensor,
        grad: FlexTensor,
        scale: f32,
    ) -> FlexTensor {
        let cols = last_dim(&logits);
        let mut dx = writable(logits);
        kernels::label_logprobs_backward_in_place(
            storage(&mut dx),
            cols,
            &labels(labels_),
            &values(&lse),
            &values(&grad),
            scale,
        );
        dx
    }

    fn fused_softmax(x: FlexTensor) -> FlexTensor {
        let cols = last_dim(&x);
        let mut y = writable(x);
        kernels::softmax_in_place(storage(&mut y), cols, None);
        y
    }

    fn fused_biased_softmax(x: FlexTensor, bias: FlexTensor) -> FlexTensor {
        let layout = BiasLayout {
            scores: x.shape().dims(),
            bias: bias.shape().dims(),
        };
        let cols = last_dim(&x);
        let mut y = writable(x);
        kernels::softmax_in_place(storage(&mut y), cols, Some((&values(&bias), layout)));
        y
    }

    fn fused_softmax_backward(y: FlexTensor, grad: FlexTensor) -> FlexTensor {
        let mut dx = writable(grad);
        kernels::softmax_backward_in_place(&values(&y), storage(&mut dx), last_dim(&y));
        dx
    }

    fn fused_gelu(x: FlexTensor) -> FlexTensor {
        tensor(kernels::gelu(&values(&x)), x.shape())
    }

    fn fused_gelu_backward(x: FlexTensor, grad: FlexTensor) -> FlexTensor {
        let mut dx = writable(grad);
        kernels::gelu_backward_in_place(&values(&x), storage(&mut dx));
        dx
    }

    fn fused_layer_norm(
        x: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        eps: f32,
    ) -> (FlexTensor, FlexTensor, FlexTensor) {
        let (y, mean, rstd) =
            kernels::layer_norm(&values(&x), &values(&gamma), &values(&beta), eps);
        let rows = mean.len();
        (
            tensor(y, x.shape()),
            tensor(mean, [rows]),
            tensor(rstd, [rows]),
        )
    }

    fn fused_layer_norm_backward(
        x: FlexTensor,
        gamma: FlexTensor,
        mean: FlexTensor,
        rstd: FlexTensor,
        grad: FlexTensor,
    ) -> (FlexTensor, FlexTensor, FlexTensor) {
        let mut dx = writable(grad);
        let (dgamma, dbeta) = kernels::layer_norm_backward_in_place(
            &values(&x),
            &values(&gamma),
            &values(&mean),
            &values(&rstd),
            storage(&mut dx),
        );
        let cols = dgamma.len();
        (dx, tensor(dgamma, [cols]), tensor(dbeta, [cols]))
    }

    fn fused_matmul(lhs: FlexTensor, rhs: FlexTensor) -> FlexTensor {
        product(&lhs, &rhs, None)
    }

    fn fused_linear(x: FlexTensor, weight: FlexTensor, bias: FlexTensor) -> FlexTensor {
        product(&x, &weight, Some(&bias))
    }
}

/// What the label log-probabilities' backward keeps.
#[derive(Debug, Clone)]
struct LabelLogprobsState<B: Backend> {
    logits: FloatTensor<B>,
    labels: IntTensor<B>,
    lse: FloatTensor<B>,
    scale: f32,
}

#[derive(Debug)]
struct LabelLogprobsBackward;

impl<B: FusedOps> Backward<B, 1> for LabelLogprobsBackward {
    type State = LabelLogprobsState<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let s = ops.state;
        unary::<B, _>(ops.parents, ops.node, grads, |grad| {
            B::fused_label_logprobs_backward(s.logits, s.labels, s.lse, grad, s.scale)
        });
    }
}

#[derive(Debug)]
struct SoftmaxBackward;

impl<B: FusedOps> Backward<B, 1> for SoftmaxBackward {
    type State = FloatTensor<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let y = ops.state;
        unary::<B, _>(ops.parents, ops.node, grads, |grad| {
            B::fused_softmax_backward(y, grad)
        });
    }
}

#[derive(Debug)]
struct GeluBackward;

impl<B: FusedOps> Backward<B, 1> for GeluBackward {
    type State = FloatTensor<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let x = ops.state;
        unary::<B, _>(ops.parents, ops.node, grads, |grad| {
            B::fused_gelu_backward(x, grad)
        });
    }
}

/// What layer norm's backward keeps: the input, gamma, and the row statistics.
type LayerNormState<B> = (
    FloatTensor<B>,
    FloatTensor<B>,
    FloatTensor<B>,
    FloatTensor<B>,
);

#[derive(Debug)]
struct LayerNormBackward;

impl<B: FusedOps> Backward<B, 3> for LayerNormBackward {
    type State = LayerNormState<B>;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (x, gamma, mean, rstd) = ops.state;
        let grad = grads.consume::<B>(&ops.node);
        let (dx, dgamma, dbeta) = B::fused_layer_norm_backward(x, gamma, mean, rstd, grad);
        for (parent, g) in ops.parents.into_iter().zip([dx, dgamma, dbeta]) {
            if let Some(parent) = parent {
                grads.register::<B>(parent.id, g);
            }
        }
    }
}

/// `t` with its last two dimensions swapped (a view).
fn transposed<B: Backend>(t: FloatTensor<B>) -> FloatTensor<B> {
    let r = t.shape().num_dims();
    B::float_swap_dims(t, r - 2, r - 1)
}

#[derive(Debug)]
struct MatmulBackward;

impl<B: FusedOps> Backward<B, 2> for MatmulBackward {
    type State = (FloatTensor<B>, FloatTensor<B>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (lhs, rhs) = ops.state;
        let grad = grads.consume::<B>(&ops.node);
        let [lhs_node, rhs_node] = ops.parents;
        if let Some(node) = lhs_node {
            grads.register::<B>(node.id, B::fused_matmul(grad.clone(), transposed::<B>(rhs)));
        }
        if let Some(node) = rhs_node {
            grads.register::<B>(node.id, B::fused_matmul(transposed::<B>(lhs), grad));
        }
    }
}

#[derive(Debug)]
struct LinearBackward;

impl<B: FusedOps> Backward<B, 3> for LinearBackward {
    type State = (FloatTensor<B>, FloatTensor<B>);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (x, weight) = ops.state;
        let grad = grads.consume::<B>(&ops.node);
        let [x_node, weight_node, bias_node] = ops.parents;
        if let Some(node) = x_node {
            let dx = B::fused_matmul(grad.clone(), transposed::<B>(weight));
            grads.register::<B>(node.id, dx);
        }
        if let Some(node) = weight_node {
            grads.register::<B>(node.id, B::fused_matmul(transposed::<B>(x), grad.clone()));
        }
        if let Some(node) = bias_node {
            let n = grad.shape().dims::<2>()[1];
            let db = B::float_reshape(B::float_sum_dim(grad, 0), Shape::new([n]));
            grads.register::<B>(node.id, db);
        }
    }
}

/// `output` as the result of `op` on the inputs behind `nodes`, keeping
/// `state` for the backward where a gradient is wanted.
fn record<B: FusedOps, C: CheckpointStrategy, O: Backward<B, N>, const N: usize>(
    op: O,
    nodes: [NodeGuard; N],
    output: FloatTensor<B>,
    state: O::State,
) -> Tracked<B, C> {
    match op.prepare::<C>(nodes).compute_bound().stateful() {
        OpsKind::Tracked(prep) => prep.finish(state, output),
        OpsKind::UnTracked(prep) => prep.finish(output),
    }
}

/// A result that takes no part in the graph (statistics, backward outputs).
fn constant<B: Backend, C: CheckpointStrategy>(t: FloatTensor<B>) -> Tracked<B, C> {
    Autodiff::<B, C>::from_inner(t)
}

/// A float tensor of the autodiff backend over `B`.
type Tracked<B, C> = FloatTensor<Autodiff<B, C>>;

impl<B: FusedOps, C: CheckpointStrategy> FusedOps for Autodiff<B, C> {
    fn fused_label_logprobs(
        logits: Tracked<B, C>,
        labels: IntTensor<B>,
        scale: f32,
    ) -> (Tracked<B, C>, Tracked<B, C>) {
        let node = logits.node();
        let (lp, lse) = B::fused_label_logprobs(logits.primitive().clone(), labels.clone(), scale);
        let lp = match LabelLogprobsBackward
            .prepare::<C>([node])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let state = LabelLogprobsState {
                    logits: logits.into_primitive(),
                    labels,
                    lse: lse.clone(),
                    scale,
                };
                prep.finish(state, lp)
            }
            OpsKind::UnTracked(prep) => prep.finish(lp),
        };
        (lp, constant::<B, C>(lse))
    }

    fn fused_label_logprobs_backward(
        logits: Tracked<B, C>,
        labels: IntTensor<B>,
        lse: Tracked<B, C>,
        grad: Tracked<B, C>,
        scale: f32,
    ) -> Tracked<B, C> {
        constant::<B, C>(B::fused_label_logprobs_backward(
            logits.into_primitive(),
            labels,
            lse.into_primitive(),
            grad.into_primitive(),
            scale,
        ))
    }

    fn fused_softmax(x: Tracked<B, C>) -> Tracked<B, C> {
        let (x, node) = x.into_parts();
        let y = B::fused_softmax(x);
        let state = y.clone();
        record::<B, C, _, 1>(SoftmaxBackward, [node], y, state)
    }

    fn fused_biased_softmax(x: Tracked<B, C>, bias: Tracked<B, C>) -> Tracked<B, C> {
        // The bias is a mask, a constant: only the scores get a gradient.
        let (x, node) = x.into_parts();
        let y = B::fused_biased_softmax(x, bias.into_primitive());
        let state = y.clone();
        record::<B, C, _, 1>(SoftmaxBackward, [node], y, state)
    }

    fn fused_softmax_backward(y: Tracked<B, C>, grad: Tracked<B, C>) -> Tracked<B, C> {
        constant::<B, C>(B::fused_softmax_backward(
            y.into_primitive(),
            grad.into_primitive(),
        ))
    }

    fn fused_gelu(x: Tracked<B, C>) -> Tracked<B, C> {
        let (x, node) = x.into_parts();
        let y = B::fused_gelu(x.clone());
        record::<B, C, _, 1>(GeluBackward, [node], y, x)
    }

    fn fused_gelu_backward(x: Tracked<B, C>, grad: Tracked<B, C>) -> Tracked<B, C> {
        constant::<B, C>(B::fused_gelu_backward(
            x.into_primitive(),
            grad.into_primitive(),
        ))
    }

    fn fused_layer_norm(
        x: Tracked<B, C>,
        gamma: Tracked<B, C>,
        beta: Tracked<B, C>,
        eps: f32,
    ) -> (Tracked<B, C>, Tracked<B, C>, Tracked<B, C>) {
        let (x, x_node) = x.into_parts();
        let (gamma, gamma_node) = gamma.into_parts();
        let (beta, beta_node) = beta.into_parts();
        let (y, mean, rstd) = B::fused_layer_norm(x.clone(), gamma.clone(), beta, eps);
        let nodes = [x_node, gamma_node, beta_node];
        let state = (x, gamma, mean.clone(), rstd.clone());
        let y = record::<B, C, _, 3>(LayerNormBackward, nodes, y, state);
        (y, constant::<B, C>(mean), constant::<B, C>(rstd))
    }

    fn fused_matmul(lhs: Tracked<B, C>, rhs: Tracked<B, C>) -> Tracked<B, C> {
        let (lhs, lhs_node) = lhs.into_parts();
        let (rhs, rhs_node) = rhs.into_parts();
        let out = B::fused_matmul(lhs.clone(), rhs.clone());
        record::<B, C, _, 2>(MatmulBackward, [lhs_node, rhs_node], out, (lhs, rhs))
    }

    fn fused_linear(x: Tracked<B, C>, weight: Tracked<B, C>, bias: Tracked<B, C>) -> Tracked<B, C> {
        let (x, x_node) = x.into_parts();
        let (weight, weight_node) = weight.into_parts();
        let (bias, bias_node) = bias.into_parts();
        let out = B::fused_linear(x.clone(), weight.clone(), bias);
        let nodes = [x_node, weight_node, bias_node];
        record::<B, C, _, 3>(LinearBackward, nodes, out, (x, weight))
    }

    fn fused_layer_norm_backward(
        x: Tracked<B, C>,
        gamma: Tracked<B, C>,
        mean: Tracked<B, C>,
        rstd: Tracked<B, C>,
        grad: Tracked<B, C>,
    ) -> (Tracked<B, C>, Tracked<B, C>, Tracked<B, C>) {
        let (dx, dgamma, dbeta) = B::fused_layer_norm_backward(
            x.into_primitive(),
            gamma.into_primitive(),
            mean.into_primitive(),
            rstd.into_primitive(),
            grad.into_primitive(),
        );
        (
            constant::<B, C>(dx),
            constant::<B, C>(dgamma),
            constant::<B, C>(dbeta),
        )
    }
}
