//! `distilled`: a small burn model (an MLP over the lexical statistics of a
//! summary against its reviews and a hashed bag of its words) trained to reproduce the stored LLM scores
//! of the training summaries, then applied to every summary. The model is
//! saved next to the scores (`distilled.safetensors`, `distilled.json`).

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::optim::{AdamWConfig, GradientsParams};
use burn::store::ModuleSnapshot;
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};

use super::Params;
use crate::ml::{matrix, to_vec};
use crate::rng::Rng;
use crate::stages::formats::dataset::{DOMAIN_KEYS, Product};
use crate::stages::kind::{Metrics, StageContext};
use crate::text::lexical::{DISTILL_INPUTS, Lexical, distill_inputs};

/// Inputs per summary.
pub const INPUTS: usize = DISTILL_INPUTS;

#[derive(Module, Debug)]
/// The distilled featurizer: an MLP from lexical statistics to the seven scores.
pub struct Distiller {
    layers: Vec<Linear>,
}

impl Distiller {
    /// A freshly initialised model with these hidden sizes.
    pub fn new(hidden: &[usize], device: &Device) -> Distiller {
        let mut sizes = vec![INPUTS];
        sizes.extend_from_slice(hidden);
        sizes.push(7);
        Distiller {
            layers: sizes
                .windows(2)
                .map(|w| LinearConfig::new(w[0], w[1]).init(device))
                .collect(),
        }
    }

    /// `[n, INPUTS]` -> `[n, 7]` scores on 0..1.
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let last = self.layers.len() - 1;
        let mut h = x;
        for (i, l) in self.layers.iter().enumerate() {
            h = l.forward(h);
            if i < last {
                h = relu(h);
            }
        }
        h
    }
}

fn rows(xs: &[[f32; INPUTS]], device: &Device) -> Tensor<2> {
    matrix(
        xs.iter().flatten().copied().collect(),
        xs.len(),
        INPUTS,
        device,
    )
}

fn mse(pred: &[f32], target: &[[f32; 7]]) -> f64 {
    let n = target.len().max(1) as f64 * 7.0;
    pred.iter()
        .zip(target.iter().flatten())
        .map(|(p, t)| ((p - t) as f64).powi(2))
        .sum::<f64>()
        / n
}

/// Trains on the stored scores of the training summaries, then scores every summary.
pub fn run(
    p: &Params,
    ctx: &mut StageContext<'_>,
    products: &[Product],
) -> Result<super::Scored, String> {
    let hidden: Vec<usize> = p
        .distill_hidden
        .iter()
        .map(|x| (*x).max(1) as usize)
        .collect();
    let epochs = p.distill_epochs.max(1) as usize;
    let lr = p.distill_lr;
    let lx = Lexical::new();
    let inputs: Vec<Vec<[f32; INPUTS]>> = products
        .iter()
        .map(|prod| {
            let profile = lx.profile(&prod.reviews);
            prod.candidates
                .iter()
                .map(|c| distill_inputs(&lx, &profile, &c.text))
                .collect()
        })
        .collect();
    let target = |prod: &Product, ci: usize| -> Option<[f32; 7]> {
        let s = prod.candidates[ci].scores.as_ref()?;
        let mut t = [0f32; 7];
        for (k, key) in DOMAIN_KEYS.iter().enumerate() {
            t[k] = (*s.get(*key)? / 5.0) as f32;
        }
        Some(t)
    };
    let mut train_x = Vec::new();
    let mut train_y = Vec::new();
    let mut val_x = Vec::new();
    let mut val_y = Vec::new();
    for (prod, xs) in products.iter().zip(&inputs) {
        for (ci, x) in xs.iter().enumerate() {
            if let Some(y) = target(prod, ci) {
                let (bx, by) = if prod.split == "train" {
                    (&mut train_x, &mut train_y)
                } else {
                    (&mut val_x, &mut val_y)
                };
                bx.push(*x);
                by.push(y);
            }
        }
    }
    if train_x.is_empty() {
        return Err("method `distilled` needs training summaries with stored scores among the inputs (e.g. OpinPref's train split)".into());
    }
    let device = crate::ml::device(ctx.backend, ctx.seed as u64)?;
    let dev = device.clone().autodiff();
    dev.seed(ctx.seed as u64);
    let mut model = Distiller::new(&hidden, &dev);
    let mut optim = AdamWConfig::new().with_weight_decay(0.01).init();
    let mut rng = Rng::new(ctx.seed as u64);
    let mut order: Vec<usize> = (0..train_x.len()).collect();
    let total = epochs * train_x.len().div_ceil(64);
    let mut step = 0;
    for epoch in 0..epochs {
        rng.shuffle(&mut order);
        for chunk in order.chunks(64) {
            let x: Vec<[f32; INPUTS]> = chunk.iter().map(|&i| train_x[i]).collect();
            let y: Vec<f32> = chunk.iter().flat_map(|&i| train_y[i]).collect();
            let diff = model.forward(rows(&x, &dev)) - matrix(y, chunk.len(), 7, &dev);
            let loss = (diff.clone() * diff).mean();
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(
                crate::ml::schedule::cosine_lr(step, total, 0, lr, 0.05),
                model,
                grads,
            );
            step += 1;
        }
        if (epoch + 1) % 50 == 0 {
            let _ = writeln!(ctx.log, "epoch {}", epoch + 1);
        }
    }
    let model = model.valid();
    let predict = |xs: &[[f32; INPUTS]]| -> Vec<f32> {
        if xs.is_empty() {
            vec![]
        } else {
            to_vec(model.forward(rows(xs, &device)))
        }
    };
    let mut m = Metrics::new();
    m.insert(
        "distill_train_mse".into(),
        mse(&predict(&train_x), &train_y),
    );
    if !val_x.is_empty() {
        m.insert("distill_val_mse".into(), mse(&predict(&val_x), &val_y));
    }
    let scores = inputs
        .iter()
        .map(|xs| {
            let flat = predict(xs);
            (0..xs.len())
                .map(|i| std::array::from_fn(|k| ((flat[i * 7 + k] as f64) * 5.0).clamp(0.0, 5.0)))
                .collect()
        })
        .collect();
    let mut store = crate::ml::safetensors_writer(&ctx.output.join("distilled.safetensors"));
    model
        .save_into(&mut store)
        .map_err(|e| format!("cannot save the distilled model: {e}"))?;
    let spec = serde_json::json!({"inputs": "text::lexical::distill_inputs", "hidden": hidden, "outputs": DOMAIN_KEYS, "scale": 5.0});
    std::fs::write(ctx.output.join("distilled.json"), spec.to_string())
        .map_err(|e| format!("cannot write distilled.json: {e}"))?;
    Ok((scores, m))
}
