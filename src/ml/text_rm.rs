//! The conventional reward model the paper argues against: a small
//! transformer encoder that reads `<s> summary </s> reviews </s>` and returns a
//! scalar (masked mean over tokens, then a linear head), trained with the same
//! Bradley-Terry loss on the same pairs as φ.

use burn::module::Module;
use burn::nn::transformer::{
    TransformerEncoder, TransformerEncoderConfig, TransformerEncoderInput,
};
use burn::nn::{
    Embedding, EmbeddingConfig, Initializer, LayerNorm, LayerNormConfig, Linear, LinearConfig,
};
use burn::store::{ModuleSnapshot, SafetensorsStore};
use burn::tensor::{Bool, Device, Int, Tensor, TensorData};

use super::bt::{PairwiseLoop, bt_loss, train_pairwise};
use super::to_vec;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
/// The text reward model's architecture.
pub struct TextRmConfig {
    /// Vocabulary size of its tokenizer.
    pub vocab: usize,
    /// Model width.
    pub d_model: usize,
    /// Encoder layers.
    pub layers: usize,
    /// Attention heads.
    pub heads: usize,
    /// Tokens read per (summary, reviews) pair.
    pub max_tokens: usize,
}

#[derive(Module, Debug)]
/// A transformer encoder over `<s> summary </s> reviews </s>` with a scalar head.
pub struct TextRm {
    tokens: Embedding,
    positions: Embedding,
    encoder: TransformerEncoder,
    norm: LayerNorm,
    head: Linear,
}

/// A batch of token sequences, padded to one length.
pub struct TokenBatch {
    /// Token ids, one row per sequence.
    pub ids: Vec<Vec<u32>>,
    /// The padding id.
    pub pad: u32,
}

impl TextRm {
    /// A freshly initialised model.
    pub fn new(cfg: &TextRmConfig, device: &Device) -> TextRm {
        let init = Initializer::Normal {
            mean: 0.0,
            std: 0.02,
        };
        TextRm {
            tokens: EmbeddingConfig::new(cfg.vocab, cfg.d_model)
                .with_initializer(init.clone())
                .init(device),
            positions: EmbeddingConfig::new(cfg.max_tokens, cfg.d_model)
                .with_initializer(init)
                .init(device),
            encoder: TransformerEncoderConfig::new(
                cfg.d_model,
                4 * cfg.d_model,
                cfg.heads,
                cfg.layers,
            )
            .with_dropout(0.0)
            .with_norm_first(true)
            .init(device),
            norm: LayerNormConfig::new(cfg.d_model).init(device),
            head: LinearConfig::new(cfg.d_model, 1).init(device),
        }
    }

    /// One score per sequence.
    pub fn forward(&self, batch: &TokenBatch, device: &Device) -> Tensor<1> {
        let b = batch.ids.len();
        let s = batch.ids.iter().map(Vec::len).max().unwrap_or(1).max(1);
        let mut flat = Vec::with_capacity(b * s);
        let mut pad = Vec::with_capacity(b * s);
        for row in &batch.ids {
            for j in 0..s {
                let id = row.get(j).copied();
                flat.push(id.unwrap_or(batch.pad) as i64);
                pad.push(id.is_none());
            }
        }
        let ids: Tensor<2, Int> = Tensor::from_data(TensorData::new(flat, [b, s]), device);
        let mask_pad: Tensor<2, Bool> =
            Tensor::from_data(TensorData::new(pad.clone(), [b, s]), device);
        let pos: Tensor<2, Int> = Tensor::<1, Int>::arange(0..s as i64, device)
            .reshape([1, s])
            .repeat_dim(0, b);
        let x = self.tokens.forward(ids) + self.positions.forward(pos);
        let h = self.norm.forward(
            self.encoder
                .forward(TransformerEncoderInput::new(x).mask_pad(mask_pad)),
        );
        // Masked mean over real tokens.
        let keep: Vec<f32> = pad.iter().map(|p| if *p { 0.0 } else { 1.0 }).collect();
        let keep: Tensor<3> =
            Tensor::<2>::from_data(TensorData::new(keep, [b, s]), device).reshape([b, s, 1]);
        let counts = keep.clone().sum_dim(1).clamp_min(1.0);
        let pooled = (h * keep).sum_dim(1) / counts; // [b, 1, d]
        let d = pooled.dims()[2];
        self.head.forward(pooled.reshape([b, d])).reshape([b])
    }

    /// Saves the weights as safetensors.
    pub fn save(&self, path: &std::path::Path) -> Result<(), String> {
        let mut store = crate::ml::safetensors_writer(path);
        self.save_into(&mut store)
            .map_err(|e| format!("cannot save `{}`: {e}", path.display()))
    }

    /// Loads weights saved by [`TextRm::save`].
    pub fn load(
        path: &std::path::Path,
        cfg: &TextRmConfig,
        device: &Device,
    ) -> Result<TextRm, String> {
        let mut model = TextRm::new(cfg, device);
        let mut store = SafetensorsStore::from_file(path);
        model
            .load_from(&mut store)
            .map_err(|e| format!("cannot load `{}`: {e}", path.display()))?;
        Ok(model)
    }

    /// Scores many sequences in batches, without gradients.
    pub fn score(&self, seqs: &[Vec<u32>], pad: u32, batch: usize, device: &Device) -> Vec<f32> {
        let mut out = Vec::with_capacity(seqs.len());
        for chunk in seqs.chunks(batch.max(1)) {
            out.extend(to_vec(self.forward(
                &TokenBatch {
                    ids: chunk.to_vec(),
                    pad,
                },
                device,
            )));
        }
        out
    }
}

/// Builds `<s> summary </s> reviews </s>`, the summary capped at half the budget.
pub fn pair_sequence(
    summary: &[u32],
    reviews: &[u32],
    bos: u32,
    eos: u32,
    max_tokens: usize,
) -> Vec<u32> {
    let budget = max_tokens.saturating_sub(3);
    let s = summary
        .len()
        .min(budget / 2)
        .max(budget.saturating_sub(reviews.len()).min(summary.len()));
    let r = budget.saturating_sub(s).min(reviews.len());
    let mut out = Vec::with_capacity(s + r + 3);
    out.push(bos);
    out.extend_from_slice(&summary[..s]);
    out.push(eos);
    out.extend_from_slice(&reviews[..r]);
    out.push(eos);
    out
}

#[derive(Debug, Clone)]
/// How to train the text reward model.
pub struct TextTrainConfig {
    /// Its architecture.
    pub model: TextRmConfig,
    /// The pairwise training loop.
    pub training: PairwiseLoop,
}

/// Trains on (preferred, rejected) token sequences.
pub fn train_text_rm(
    cfg: &TextTrainConfig,
    preferred: &[Vec<u32>],
    rejected: &[Vec<u32>],
    pad: u32,
    device: &Device,
    mut on_epoch: impl FnMut(usize, f64),
) -> (TextRm, Vec<f64>) {
    let dev = device.clone().autodiff();
    dev.seed(cfg.training.seed);
    let (model, losses) = train_pairwise(
        TextRm::new(&cfg.model, &dev),
        preferred.len(),
        &cfg.training,
        |m: &TextRm, idx| {
            // One forward over both sides: preferred first, then rejected.
            let mut ids: Vec<Vec<u32>> = idx.iter().map(|&i| preferred[i].clone()).collect();
            ids.extend(idx.iter().map(|&i| rejected[i].clone()));
            let scores = m.forward(&TokenBatch { ids, pad }, &dev);
            let k = idx.len();
            bt_loss(scores.clone().narrow(0, 0, k), scores.narrow(0, k, k))
        },
        &mut on_epoch,
    );
    (model.valid(), losses)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequences_keep_the_summary_and_fit_the_budget() {
        let s: Vec<u32> = (10..20).collect();
        let r: Vec<u32> = (100..200).collect();
        let seq = pair_sequence(&s, &r, 0, 2, 32);
        assert_eq!(seq.len(), 32);
        assert_eq!(&seq[..12], &[0, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 2]);
        assert_eq!(*seq.last().unwrap(), 2);
        // A long summary gets half the budget when the reviews need the rest.
        let long: Vec<u32> = (10..60).collect();
        let seq = pair_sequence(&long, &r, 0, 2, 32);
        assert_eq!(seq.len(), 32);
        assert_eq!(seq[15], 2, "summary capped at (32 - 3) / 2 = 14 tokens");
        // Short reviews leave room for more summary.
        let seq = pair_sequence(&long, &[7, 7], 0, 2, 32);
        assert_eq!(seq.len(), 32);
        assert_eq!(&seq[seq.len() - 3..], &[7, 7, 2]);
    }
}
