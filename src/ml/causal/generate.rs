//! Decoding a causal model: prompts left-padded into one batch, read in one
//! pass, then one token per row and step through the key/value cache, each
//! row at its own next position. Greedy, sampled and beam search are the
//! shared ones (`ml::decoding`, `ml::beam`); EOS ids come from
//! `generation_config.json` (a list is allowed), else `config.json`.

use burn::tensor::{Device, Int, Tensor, TensorData};

use super::model::{CausalLm, Inputs, LayerCache, causal_bias};
use crate::ml::beam::beam_search;
use crate::ml::decoding::{GenerateOptions, Generated, Stepper, TokenRules, decode};
use crate::rng::Rng;

/// The model over a batch of prompts, one row per sequence.
struct CausalStepper<'a> {
    model: &'a CausalLm,
    prompts: &'a [Vec<u32>],
    pad: u32,
    cache: Vec<LayerCache>,
    /// Per row: the index of its first real token (pads before it).
    starts: Vec<usize>,
    /// Per row: the position of its next token.
    next: Vec<i64>,
    /// Keys in the cache.
    past: usize,
    device: Device,
}

impl Stepper for CausalStepper<'_> {
    fn step(&mut self, last: Option<&[u32]>) -> Vec<f32> {
        let inputs = match last {
            None => {
                let inputs = Inputs::left_padded(self.prompts, self.pad, &self.device);
                let t = inputs.ids.dims()[1];
                self.starts = self.prompts.iter().map(|p| t - p.len()).collect();
                self.next = self.prompts.iter().map(|p| p.len() as i64).collect();
                inputs
            }
            Some(last) => {
                let b = last.len();
                let ids = last.iter().map(|&t| t as i64).collect();
                let inputs = Inputs {
                    ids: Tensor::from_data(TensorData::new(ids, [b, 1]), &self.device),
                    positions: self.next.clone(),
                    bias: causal_bias(&self.starts, 1, self.past, &self.device),
                };
                self.next.iter_mut().for_each(|p| *p += 1);
                inputs
            }
        };
        let [b, t] = inputs.ids.dims();
        let hidden = self.model.hidden(&inputs, &mut self.cache);
        self.past += t;
        let d = hidden.dims()[2];
        let last_hidden = hidden.slice([0..b, t - 1..t, 0..d]);
        crate::ml::to_vec(self.model.logits(last_hidden))
    }

    fn select(&mut self, index: &[usize], _dropped: bool) {
        let rows: Vec<i64> = index.iter().map(|&i| i as i64).collect();
        let rows = Tensor::<1, Int>::from_data(TensorData::new(rows, [index.len()]), &self.device);
        for c in self.cache.iter_mut() {
            if let Some((k, v)) = c.take() {
                *c = Some((k.select(0, rows.clone()), v.select(0, rows.clone())));
            }
        }
        self.starts = index.iter().map(|&i| self.starts[i]).collect();
        self.next = index.iter().map(|&i| self.next[i]).collect();
    }
}

/// Generates one continuation per prompt (token ids, the chat template
/// already applied), `rules` from [`CausalConfig::token_rules`].
pub fn generate(
    model: &CausalLm,
    prompts: &[Vec<u32>],
    opts: &GenerateOptions,
    rules: &TokenRules,
    rng: &mut Rng,
    device: &Device,
) -> Vec<Generated> {
    if prompts.is_empty() {
        return Vec::new();
    }
    let beams = opts.num_beams.max(1);
    // Rows i*k .. i*k+k are prompt i's beams.
    let rows: Vec<Vec<u32>> = prompts
        .iter()
        .flat_map(|p| std::iter::repeat_n(p.clone(), beams))
        .collect();
    let mut stepper = CausalStepper {
        model,
        prompts: &rows,
        pad: rules.pad,
        cache: model.start_cache(),
        starts: Vec::new(),
        next: Vec::new(),
        past: 0,
        device: device.clone(),
    };
    if beams > 1 {
        beam_search(&mut stepper, prompts, opts, rules)
    } else {
        decode(&mut stepper, prompts, opts, rules, rng)
    }
}
