//! BART's side of decoding: a [`Stepper`] over the encoder's output and
//! the decoder's key/value cache, and the token rules of its config
//! (padding is never generated, nor `<s>` after the first token: neither is
//! ever a label there). Greedy, sampled and beam search are shared
//! (`ml::decoding`, `ml::beam`).

use burn::tensor::{Device, Int, Tensor, TensorData};

use super::config::BartConfig;
use super::model::{Bart, Batch, LayerCache};
use crate::ml::beam::beam_search;
use crate::ml::decoding::{Stepper, TokenRules, decode, in_batches};
use crate::rng::Rng;

pub use crate::ml::decoding::{EarlyStopping, GenerateOptions, Generated, choose};

impl BartConfig {
    /// What this config says about tokens while decoding.
    pub fn token_rules(&self) -> TokenRules {
        TokenRules {
            vocab: self.vocab_size,
            eos: vec![self.eos_token_id],
            banned: vec![self.pad_token_id],
            banned_after_first: if self.bos_token_id != self.eos_token_id {
                vec![self.bos_token_id]
            } else {
                Vec::new()
            },
            forced_bos: self.forced_bos_token_id,
            forced_eos: self.forced_eos_token_id,
            pad: self.pad_token_id,
        }
    }
}

/// The decoder of `model` over encoded sources, one row per sequence.
struct BartStepper<'a> {
    model: &'a Bart,
    cache: Vec<LayerCache>,
    bias: Tensor<4>,
    rows: usize,
    past: usize,
}

impl<'a> BartStepper<'a> {
    fn new(model: &'a Bart, sources: &[Vec<u32>], device: &Device) -> BartStepper<'a> {
        let source = Batch::new(sources, model.config.pad_token_id, device);
        let cache = model.start_cache(&model.encode(&source));
        BartStepper {
            model,
            cache,
            bias: source.key_bias(),
            rows: sources.len(),
            past: 0,
        }
    }
}

impl Stepper for BartStepper<'_> {
    fn step(&mut self, last: Option<&[u32]>) -> Vec<f32> {
        let start = [self.model.config.decoder_start_token_id];
        let ids: Vec<i64> = match last {
            Some(last) => last.iter().map(|&t| t as i64).collect(),
            None => start.repeat(self.rows).iter().map(|&t| t as i64).collect(),
        };
        let device = self.bias.device();
        let ids: Tensor<2, Int> = Tensor::from_data(TensorData::new(ids, [self.rows, 1]), &device);
        let hidden = self
            .model
            .decode(ids, self.past, &mut self.cache, &self.bias);
        self.past += 1;
        crate::ml::to_vec(self.model.logits(hidden))
    }

    fn select(&mut self, index: &[usize], dropped: bool) {
        let device = self.bias.device();
        let index: Vec<i64> = index.iter().map(|&i| i as i64).collect();
        self.rows = index.len();
        let index = Tensor::<1, Int>::from_data(TensorData::new(index, [self.rows]), &device);
        for c in self.cache.iter_mut() {
            if let Some((k, v)) = c.own.take() {
                c.own = Some((k.select(0, index.clone()), v.select(0, index.clone())));
            }
            // The encoder's part is the same for all of a source's beams.
            if dropped {
                let (k, v) = c.cross.clone();
                c.cross = (k.select(0, index.clone()), v.select(0, index.clone()));
            }
        }
        if dropped {
            self.bias = self.bias.clone().select(0, index);
        }
    }
}

/// Generates one sequence per source row. `sources` are token ids with their
/// special tokens (`<s> ... </s>`).
pub fn generate(
    model: &Bart,
    sources: &[Vec<u32>],
    opts: &GenerateOptions,
    rng: &mut Rng,
    device: &Device,
) -> Vec<Generated> {
    let cfg = &model.config;
    if sources.is_empty() {
        return Vec::new();
    }
    let rules = cfg.token_rules();
    let prefixes = vec![vec![cfg.decoder_start_token_id]; sources.len()];
    if opts.num_beams > 1 {
        // Rows i*k .. i*k+k are source i's beams.
        let rows: Vec<Vec<u32>> = sources
            .iter()
            .flat_map(|s| std::iter::repeat_n(s.clone(), opts.num_beams))
            .collect();
        let mut stepper = BartStepper::new(model, &rows, device);
        return beam_search(&mut stepper, &prefixes, opts, &rules);
    }
    let mut stepper = BartStepper::new(model, sources, device);
    decode(&mut stepper, &prefixes, opts, &rules, rng)
}

/// [`generate`] over `sources` in batches of `batch` rows, drawing from one
/// RNG stream in order.
pub fn generate_batched(
    model: &Bart,
    sources: &[Vec<u32>],
    opts: &GenerateOptions,
    batch: usize,
    rng: &mut Rng,
    device: &Device,
) -> Vec<Generated> {
    in_batches(sources, batch, |chunk| {
        generate(model, chunk, opts, rng, device)
    })
}
