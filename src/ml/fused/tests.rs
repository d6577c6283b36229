//! Each fused op against the composed burn ops it replaces, in value and
//! in gradient (of a random weighting of the output, so that every output
//! element's gradient path counts).

use burn::nn::LayerNormConfig;
use burn::tensor::{Distribution, Int, Tensor, TensorData, activation as act};

use super::*;

fn device() -> Device {
    let d = Device::flex().autodiff();
    d.seed(7);
    d
}

fn random<const D: usize>(shape: [usize; D], scale: f64) -> Tensor<D> {
    Tensor::random(shape, Distribution::Normal(0.0, scale), &device())
}

/// A fixed weighting of an output, the same in every run: the backward
/// passes are compared through `(y * cotangent).sum()`. Not drawn from the
/// device's RNG, which the tests running in parallel share.
fn cotangent<const D: usize>(dims: [usize; D]) -> Tensor<D> {
    let n = dims.iter().product::<usize>();
    let values = (0..n)
        .map(|i| (i as f32 * 0.731 + 0.4).sin() * 1.3)
        .collect();
    Tensor::from_data(TensorData::new(values, dims), &device())
}

fn max_diff<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
    let (a, b) = (crate::ml::to_vec(a), crate::ml::to_vec(b));
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Values and input gradients of `fused` and `composed` on `x`.
fn compare<const D: usize, const E: usize>(
    x: Tensor<D>,
    fused: impl Fn(Tensor<D>) -> Tensor<E>,
    composed: impl Fn(Tensor<D>) -> Tensor<E>,
) -> (f32, f32) {
    let run = |f: &dyn Fn(Tensor<D>) -> Tensor<E>| {
        let x = x.clone().detach().require_grad();
        let y = f(x.clone());
        let weights = cotangent(y.dims());
        let grads = (y.clone() * weights).sum().backward();
        (
            y,
            x.grad(&grads).expect("the input takes part in the graph"),
        )
    };
    let (y1, g1) = run(&fused);
    let (y2, g2) = run(&composed);
    (max_diff(y1, y2), max_diff(g1, g2))
}

#[test]
fn label_logprobs_match_log_softmax_and_gather() {
    let labels: Vec<i64> = (0..3 * 5).map(|i| (i * 37 % 50) as i64).collect();
    let labels = Tensor::<2, Int>::from_data(TensorData::new(labels, [3, 5]), &device());
    for temperature in [1.0, 0.7] {
        let (value, grad) = compare(
            random([3, 5, 50], 3.0),
            |x| label_logprobs(x, labels.clone(), temperature),
            |x| {
                act::log_softmax(x / temperature, 2)
                    .gather(2, labels.clone().reshape([3, 5, 1]))
                    .reshape([3, 5])
            },
        );
        assert!(
            value < 1e-5 && grad < 1e-6,
            "T={temperature}: {value} {grad}"
        );
    }
}

#[test]
fn label_outside_the_vocabulary_gives_nan_not_a_panic() {
    let labels = Tensor::<2, Int>::from_data(TensorData::new(vec![3i64, 99], [1, 2]), &device());
    let lp = label_logprobs(random([1, 2, 10], 1.0), labels, 1.0);
    let lp = crate::ml::to_vec(lp);
    assert!(lp[0].is_finite() && lp[0] < 0.0 && lp[1].is_nan(), "{lp:?}");
}

#[test]
fn softmax_matches_burn_with_masked_scores() {
    // Scores as attention sees them: some positions at the mask value.
    let mask = Tensor::<4>::from_data(
        TensorData::new(
            (0..12)
                .map(|i| if i % 4 == 3 { -1e9f32 } else { 0.0 })
                .collect(),
            [1, 1, 1, 12],
        ),
        &device(),
    );
    let (value, grad) = compare(
        random([2, 3, 5, 12], 2.0),
        |x| softmax(x + mask.clone()),
        |x| act::softmax(x + mask.clone(), 3),
    );
    assert!(value < 1e-6 && grad < 1e-6, "{value} {grad}");
    // The same with the mask fused, broadcast per batch row and per query.
    for bias_shape in [[1, 1, 1, 12], [2, 1, 1, 12], [2, 1, 5, 12], [1, 3, 5, 12]] {
        let bias = random(bias_shape, 1.0) + mask.clone();
        let (value, grad) = compare(
            random([2, 3, 5, 12], 2.0),
            |x| biased_softmax(x, bias.clone()),
            |x| act::softmax(x + bias.clone(), 3),
        );
        assert!(
            value < 1e-6 && grad < 1e-6,
            "{bias_shape:?}: {value} {grad}"
        );
    }
}

#[test]
fn gelu_matches_burn() {
    let (value, grad) = compare(random([4, 7, 33], 3.0), gelu, act::gelu);
    assert!(value < 1e-6 && grad < 1e-6, "{value} {grad}");
}

#[test]
fn layer_norm_matches_burn_in_value_and_all_three_gradients() {
    let mut ln = LayerNormConfig::new(24).init(&device());
    // Parameters away from their 1/0 init so their gradients are not trivial.
    ln.gamma = burn::module::Param::from_tensor(random([24], 1.0) + 1.0);
    ln.beta = Some(burn::module::Param::from_tensor(random([24], 1.0)));
    let x = random([3, 9, 24], 2.0) + 0.5;
    let run = |fused_path: bool| {
        let input = x.clone().detach().require_grad();
        let y = if fused_path {
            layer_norm(&ln, input.clone(), 1e-5)
        } else {
            ln.forward(input.clone())
        };
        let weights = cotangent(y.dims());
        let grads = (y.clone() * weights).sum().backward();
        let gamma = ln.gamma.val().grad(&grads).expect("gamma has a gradient");
        let beta = ln.beta.as_ref().and_then(|b| b.val().grad(&grads));
        let dx = input.grad(&grads).expect("the input has a gradient");
        (y, dx, gamma, beta.expect("beta has a gradient"))
    };
    let (y1, x1, g1, b1) = run(true);
    let (y2, x2, g2, b2) = run(false);
    assert!(max_diff(y1, y2) < 1e-5);
    assert!(max_diff(x1, x2) < 1e-5);
    assert!(max_diff(g1, g2) < 1e-4);
    assert!(max_diff(b1, b2) < 1e-4);
}

/// Values and the gradients of both inputs of `fused` and `composed`.
fn compare_two<const D: usize, const E: usize, const F: usize>(
    a: Tensor<D>,
    b: Tensor<E>,
    fused: impl Fn(Tensor<D>, Tensor<E>) -> Tensor<F>,
    composed: impl Fn(Tensor<D>, Tensor<E>) -> Tensor<F>,
) -> [f32; 3] {
    let run = |f: &dyn Fn(Tensor<D>, Tensor<E>) -> Tensor<F>| {
        let (a, b) = (
            a.clone().detach().require_grad(),
            b.clone().detach().require_grad(),
        );
        let y = f(a.clone(), b.clone());
        let weights = cotangent(y.dims());
        let grads = (y.clone() * weights).sum().backward();
        let ga = a.grad(&grads).expect("the first input has a gradient");
        let gb = b.grad(&grads).expect("the second input has a gradient");
        (y, ga, gb)
    };
    let (y1, a1, b1) = run(&fused);
    let (y2, a2, b2) = run(&composed);
    [max_diff(y1, y2), max_diff(a1, a2), max_diff(b1, b2)]
}

#[test]
fn matmul_matches_burn_on_batched_and_transposed_views() {
    // Attention's two products: scores against transposed keys, then values.
    let keys = random([2, 3, 7, 8], 1.0);
    let diffs = compare_two(
        random([2, 3, 5, 8], 1.0),
        keys,
        |q, k| matmul(q, k.swap_dims(2, 3)),
        |q, k| q.matmul(k.swap_dims(2, 3)),
    );
    assert!(diffs.iter().all(|&d| d < 1e-5), "{diffs:?}");
    let diffs = compare_two(
        random([2, 3, 5, 7], 1.0),
        random([2, 3, 7, 8], 1.0),
        matmul,
        Tensor::matmul,
    );
    assert!(diffs.iter().all(|&d| d < 1e-5), "{diffs:?}");
}

#[test]
fn linear_matches_burn_in_value_and_all_three_gradients() {
    let layer = burn::nn::LinearConfig::new(16, 12).init(&device());
    let layer = burn::nn::Linear {
        bias: Some(burn::module::Param::from_tensor(random([12], 1.0))),
        ..layer
    };
    let x = random([3, 5, 16], 1.0);
    let run = |fused_path: bool| {
        let input = x.clone().detach().require_grad();
        let y = if fused_path {
            linear(&crate::ml::lora::Proj::from(layer.clone()), input.clone())
        } else {
            layer.forward(input.clone())
        };
        let weights = cotangent(y.dims());
        let grads = (y.clone() * weights).sum().backward();
        let dw = layer
            .weight
            .val()
            .grad(&grads)
            .expect("the weight has a gradient");
        let db = layer.bias.as_ref().and_then(|b| b.val().grad(&grads));
        let dx = input.grad(&grads).expect("the input has a gradient");
        (y, dx, dw, db.expect("the bias has a gradient"))
    };
    let (y1, x1, w1, b1) = run(true);
    let (y2, x2, w2, b2) = run(false);
    assert!(max_diff(y1, y2) < 1e-5);
    assert!(max_diff(x1, x2) < 1e-5);
    assert!(max_diff(w1, w2) < 1e-4);
    assert!(max_diff(b1, b2) < 1e-4);
}

#[test]
fn affine_matches_burn_through_a_transposed_weight() {
    // The tied output projection: hidden states against the embedding's transpose.
    let bias = random([12], 1.0);
    let diffs = compare_two(
        random([6, 16], 1.0),
        random([12, 16], 1.0),
        |x, w| affine(x, w.transpose(), bias.clone()),
        |x, w| x.matmul(w.transpose()) + bias.clone().unsqueeze(),
    );
    assert!(diffs.iter().all(|&d| d < 1e-5), "{diffs:?}");
}

#[test]
fn composed_ops_are_used_off_the_cpu_or_in_half_precision() {
    let x = random([2, 8], 1.0);
    assert!(fusable(&x));
    assert!(!fusable(&x.clone().cast(DType::BF16)));
    assert!(fusable(&x.clone().detach()));
    // Half precision takes the composed path and still computes softmax.
    let half = softmax(x.clone().cast(DType::BF16)).cast(DType::F32);
    assert!(max_diff(half, act::softmax(x, 1)) < 1e-2);
}
