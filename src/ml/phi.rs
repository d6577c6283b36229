//! φ, the domain-knowledge reward model of the paper: an MLP (or a linear
//! model) over the seven domain scores of a (reviews, summary) pair, each
//! divided by 5, trained with the Bradley-Terry loss. The RL reward is
//! `sigmoid(φ)`.

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::store::{ModuleSnapshot, SafetensorsStore};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};

use super::bt::{PairwiseLoop, bt_loss, train_pairwise};
use super::{matrix, to_vec};

/// Number of input features (the seven domain scores).
pub const FEATURES: usize = 7;

#[derive(Module, Debug)]
/// φ: an MLP (or a linear model) from the seven domain scores to a scalar reward.
pub struct Phi {
    layers: Vec<Linear>,
}

impl Phi {
    /// `FEATURES -> hidden... -> 1`, ReLU between layers; `hidden` empty is linear.
    pub fn new(hidden: &[usize], device: &Device) -> Phi {
        let mut sizes = vec![FEATURES];
        sizes.extend_from_slice(hidden);
        sizes.push(1);
        let layers = sizes
            .windows(2)
            .map(|w| LinearConfig::new(w[0], w[1]).init(device))
            .collect();
        Phi { layers }
    }

    /// One score per row of `x` (`[n, 7]`, already scaled to 0..1).
    pub fn forward(&self, x: Tensor<2>) -> Tensor<1> {
        let n = x.dims()[0];
        let mut h = x;
        let last = self.layers.len() - 1;
        for (i, layer) in self.layers.iter().enumerate() {
            h = layer.forward(h);
            if i < last {
                h = relu(h);
            }
        }
        h.reshape([n])
    }

    /// Scores for rows of features, on a device without gradients.
    pub fn score(&self, feats: &[[f32; FEATURES]], device: &Device) -> Vec<f32> {
        if feats.is_empty() {
            return Vec::new();
        }
        to_vec(self.forward(features_tensor(feats, device)))
    }

    /// The linear model's weights (one per feature), when there is no hidden layer.
    pub fn linear_weights(&self) -> Option<Vec<f32>> {
        match self.layers.as_slice() {
            [only] => Some(to_vec(only.weight.val())),
            _ => None,
        }
    }

    /// Number of trainable parameters.
    pub fn parameters(&self) -> usize {
        self.num_params()
    }

    /// Saves the weights as safetensors.
    pub fn save(&self, path: &std::path::Path) -> Result<(), String> {
        let mut store = crate::ml::safetensors_writer(path);
        self.save_into(&mut store)
            .map_err(|e| format!("cannot save `{}`: {e}", path.display()))
    }

    /// Loads weights saved by [`Phi::save`] into a φ of the given hidden sizes.
    pub fn load(path: &std::path::Path, hidden: &[usize], device: &Device) -> Result<Phi, String> {
        let mut model = Phi::new(hidden, device);
        let mut store = SafetensorsStore::from_file(path);
        model
            .load_from(&mut store)
            .map_err(|e| format!("cannot load `{}`: {e}", path.display()))?;
        Ok(model)
    }
}

/// A `[n, 7]` tensor of feature rows.
pub fn features_tensor(feats: &[[f32; FEATURES]], device: &Device) -> Tensor<2> {
    matrix(
        feats.iter().flatten().copied().collect(),
        feats.len(),
        FEATURES,
        device,
    )
}

#[derive(Debug, Clone)]
/// How to train φ.
pub struct PhiTrainConfig {
    /// Hidden layer sizes (empty: linear).
    pub hidden: Vec<usize>,
    /// The pairwise training loop.
    pub training: PairwiseLoop,
}

/// Training pairs: features of the preferred and of the rejected candidate.
#[derive(Debug, Clone, Default)]
pub struct FeaturePairs {
    /// Features of each pair's preferred side.
    pub preferred: Vec<[f32; FEATURES]>,
    /// Features of each pair's rejected side.
    pub rejected: Vec<[f32; FEATURES]>,
}

impl FeaturePairs {
    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.preferred.len()
    }
    /// Whether there are no pairs.
    pub fn is_empty(&self) -> bool {
        self.preferred.is_empty()
    }
}

/// A trained φ and what training found.
pub struct TrainedPhi {
    /// The model.
    pub model: Phi,
    /// Mean training loss per epoch.
    pub epoch_losses: Vec<f64>,
    /// Per feature: the linear weight, or for an MLP the mean of gradient x input over the training candidates.
    pub importance: [f64; FEATURES],
    /// How many initial weight draws it took to get a φ that is not constant.
    pub init_draws: usize,
}

/// Trains φ on `pairs` with AdamW and a warm-up + cosine schedule.
pub fn train_phi(
    cfg: &PhiTrainConfig,
    pairs: &FeaturePairs,
    device: &Device,
    mut on_epoch: impl FnMut(usize, f64),
) -> TrainedPhi {
    let train_dev = device.clone().autodiff();
    // With inputs in [0, 1] and narrow ReLU layers (6-4-2), a random draw can
    // leave every unit of a layer dead, so φ is constant and never learns.
    // Draw again (deterministically) until φ varies over the training inputs.
    let mut all = pairs.preferred.clone();
    all.extend_from_slice(&pairs.rejected);
    let mut init_draws = 0;
    let model = loop {
        init_draws += 1;
        train_dev.seed(cfg.training.seed.wrapping_add(init_draws - 1));
        let candidate = Phi::new(&cfg.hidden, &train_dev);
        let scores = candidate.clone().valid().score(&all, device);
        let (lo, hi) = scores
            .iter()
            .fold((f32::MAX, f32::MIN), |(lo, hi), x| (lo.min(*x), hi.max(*x)));
        if hi - lo > 1e-6 || init_draws >= 100 || all.is_empty() {
            break candidate;
        }
    };
    let pick = |idx: &[usize], side: &[[f32; FEATURES]]| -> Vec<[f32; FEATURES]> {
        idx.iter().map(|&i| side[i]).collect()
    };
    let (model, epoch_losses) = train_pairwise(
        model,
        pairs.len(),
        &cfg.training,
        |m: &Phi, idx| {
            bt_loss(
                m.forward(features_tensor(&pick(idx, &pairs.preferred), &train_dev)),
                m.forward(features_tensor(&pick(idx, &pairs.rejected), &train_dev)),
            )
        },
        &mut on_epoch,
    );
    let model = model.valid();
    let importance = match model.linear_weights() {
        Some(w) => std::array::from_fn(|k| w[k] as f64),
        None => gradient_times_input(&model, &all, device),
    };
    TrainedPhi {
        model,
        epoch_losses,
        importance,
        init_draws: init_draws as usize,
    }
}

/// Mean over rows of dφ/dx_k * x_k: how much each feature contributes to the score.
pub fn gradient_times_input(
    model: &Phi,
    feats: &[[f32; FEATURES]],
    device: &Device,
) -> [f64; FEATURES] {
    if feats.is_empty() {
        return [0.0; FEATURES];
    }
    let dev = device.clone().autodiff();
    let m = model.clone().fork(&dev);
    let x = features_tensor(feats, &dev).require_grad();
    let grads = m.forward(x.clone()).sum().backward();
    let Some(g) = x.grad(&grads) else {
        return [0.0; FEATURES];
    };
    let g = to_vec(g);
    let mut out = [0.0; FEATURES];
    for (row, f) in feats.iter().enumerate() {
        for k in 0..FEATURES {
            out[k] += g[row * FEATURES + k] as f64 * f[k] as f64;
        }
    }
    out.map(|v| v / feats.len() as f64)
}
