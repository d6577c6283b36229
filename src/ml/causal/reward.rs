//! A reward model on a causal trunk, as transformers'
//! `*ForSequenceClassification` (one label) and TRL's `RewardTrainer`
//! define it: the trunk's last hidden state at each row's last token,
//! through a bias-free `score` projection. Trained with the Bradley-Terry
//! loss on (preferred, rejected) pairs; saved as a folder transformers
//! loads with `AutoModelForSequenceClassification`.

use std::path::Path;

use burn::module::Module;
use burn::nn::{Initializer, Linear, LinearConfig};
use burn::tensor::{Device, Tensor};
use serde_json::json;

use super::io;
use super::model::{CausalLm, Inputs};
use crate::ml::bt::{PairwiseLoop, bt_loss, train_pairwise};
use crate::ml::checkpoint::{Checkpoint, param2, transpose, write, write_file};

/// The trunk and its scalar head.
#[derive(Module, Debug)]
pub struct CausalRm {
    /// The decoder (its `lm_head`, if any, is not used).
    pub trunk: CausalLm,
    /// `score`: hidden -> 1, no bias.
    pub score: Linear,
}

impl CausalRm {
    /// A head on `trunk`, initialised as transformers does (normal, the config's std).
    pub fn new(trunk: CausalLm, device: &Device) -> CausalRm {
        let std = trunk.config.initializer_range;
        let score = LinearConfig::new(trunk.config.hidden_size, 1)
            .with_bias(false)
            .with_initializer(Initializer::Normal { mean: 0.0, std })
            .init(device);
        CausalRm { trunk, score }
    }

    /// One score per row. Rows are left-padded, so each one's last token is
    /// the last column (transformers reads the last non-pad token).
    pub fn forward(&self, rows: &[Vec<u32>], device: &Device) -> Tensor<1> {
        let inputs = Inputs::left_padded(rows, self.trunk.pad(), device);
        let hidden = self.trunk.hidden(&inputs, &mut self.trunk.start_cache());
        let [b, t, d] = hidden.dims();
        let last = hidden.slice([0..b, t - 1..t, 0..d]).reshape([b, d]);
        crate::ml::precision::to_f32(self.score.forward(last)).reshape([b])
    }

    /// Scores many rows in batches, without gradients.
    pub fn score_rows(&self, rows: &[Vec<u32>], batch: usize, device: &Device) -> Vec<f32> {
        rows.chunks(batch.max(1))
            .flat_map(|chunk| crate::ml::to_vec(self.forward(chunk, device)))
            .collect()
    }

    /// Loads a `*ForSequenceClassification` folder with one label (or a
    /// `*ForCausalLM` one, whose head is then fresh).
    pub fn load(dir: &Path, device: &Device) -> Result<CausalRm, String> {
        let (trunk, report) = io::load(dir, device)?;
        let mut rm = CausalRm::new(trunk, device);
        if report.unused.iter().any(|n| n == "score.weight") {
            let mut ckpt = Checkpoint::open(dir)?;
            let d = rm.trunk.config.hidden_size;
            let w = ckpt.take_shaped("score.weight", &[1, d]).map_err(|e| {
                format!("{e} (a reward model has one label: `score.weight` is [1, hidden])")
            })?;
            rm.score.weight = param2(transpose(&w), device);
        }
        Ok(rm)
    }

    /// Writes the folder transformers loads as `XForSequenceClassification`.
    pub fn save(&self, dir: &Path) -> Result<(), String> {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create `{}`: {e}", dir.display()))?;
        let mut tensors = io::tensors(&self.trunk, false);
        tensors.insert(
            "score.weight".into(),
            transpose(&crate::ml::checkpoint::host(self.score.weight.val())),
        );
        write(&tensors, &dir.join("model.safetensors"))?;
        let config = &self.trunk.config;
        let mut raw = config.raw.clone();
        let class = config
            .family
            .class()
            .replace("ForCausalLM", "ForSequenceClassification");
        raw.insert("architectures".into(), json!([class]));
        raw.insert("id2label".into(), json!({"0": "LABEL_0"}));
        raw.insert("label2id".into(), json!({"LABEL_0": 0}));
        let mut c = config.clone();
        c.raw = raw;
        write_file(&dir.join("config.json"), c.to_json().as_bytes())
    }
}

/// Trains a head on `trunk` (and the trunk) on pairs of token rows.
pub fn train_causal_rm(
    trunk: CausalLm,
    preferred: &[Vec<u32>],
    rejected: &[Vec<u32>],
    training: &PairwiseLoop,
    device: &Device,
    on_epoch: impl FnMut(usize, f64),
) -> (CausalRm, Vec<f64>) {
    let dev = device.clone().autodiff();
    dev.seed(training.seed);
    let rm = CausalRm::new(trunk, device).fork(&dev).train();
    let (model, losses) = train_pairwise(
        rm,
        preferred.len(),
        training,
        |m: &CausalRm, idx| {
            // One forward over both sides: preferred first, then rejected.
            let mut rows: Vec<Vec<u32>> = idx.iter().map(|&i| preferred[i].clone()).collect();
            rows.extend(idx.iter().map(|&i| rejected[i].clone()));
            let scores = m.forward(&rows, &dev);
            let k = idx.len();
            bt_loss(scores.clone().narrow(0, 0, k), scores.narrow(0, k, k))
        },
        on_epoch,
    );
    (model.valid(), losses)
}
