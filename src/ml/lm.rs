//! The model seam: what the stages need from a language model they train
//! and sample, whatever its family. A source (the prompt) and a response
//! (the target, the summary) are token ids; the model says which hidden
//! states predict each response token, and everything above that (SFT's
//! cross-entropy, PPO's log-probabilities and values, eval's KL) is written
//! once. BART reads the source with its encoder; a causal model reads the
//! source and the response as one left-padded sequence.
//!
//! Stages stay generic over [`LanguageModel`] and get their model through
//! [`load`] or [`create`], the one place that knows the families.

use std::path::Path;

use burn::module::{Module, ModuleDisplay};
use burn::tensor::{Device, Int, Tensor, TensorData};

use super::bart::generation_config::GenerationConfig;
use super::bart::{Bart, BartConfig, Batch, Targets};
use super::causal::{CausalConfig, CausalLm, Family, Inputs, Sizes};
use super::decoding::{GenerateOptions, Generated, in_batches};
use super::lora::{self, AdapterConfig, HostTensors, Projections};
use super::peft;
use crate::rng::Rng;

/// The labels a batch of hidden states predicts: response token j of row i
/// at `[i, j]`, padded, with a mask of real tokens.
#[derive(Debug, Clone)]
pub struct Labels {
    /// `[b, t]` token ids.
    pub ids: Tensor<2, Int>,
    /// 1 where a response token is, 0 on padding.
    pub mask: Tensor<2>,
}

/// A language model the stages train and sample.
pub trait LanguageModel:
    Module + ModuleDisplay + Projections + Clone + std::fmt::Debug + Send + Sync + 'static
{
    /// The architecture, for messages and metrics (`bart`, `llama`, `qwen2`, `qwen3`).
    fn architecture(&self) -> &'static str;
    /// PEFT's `task_type` for an adapter of this model.
    fn peft_task(&self) -> &'static str {
        "CAUSAL_LM"
    }
    /// Hidden states `[b, t, d]` of which position `[i, j]` predicts
    /// `responses[i][j]` after `sources[i]`, on `device`.
    fn response_hidden(
        &self,
        sources: &[Vec<u32>],
        responses: &[Vec<u32>],
        device: &Device,
    ) -> (Tensor<3>, Labels);
    /// Logits `[b, t, vocab]` of hidden states, in f32.
    fn logits(&self, hidden: Tensor<3>) -> Tensor<3>;
    /// Width of the hidden states (a value head's input).
    fn hidden_size(&self) -> usize;
    /// Rows of the output projection.
    fn vocab_size(&self) -> usize;
    /// The token a target ends with.
    fn eos(&self) -> u32;
    /// Weights, for the log.
    fn parameters(&self) -> usize;
    /// Longest sequence the model's positions cover (source and response
    /// together for a causal model; each on its own for BART).
    fn max_positions(&self) -> usize;
    /// Whether source and response share the positions (a causal model).
    fn shares_positions(&self) -> bool;
    /// One continuation per source, in batches of `batch` rows drawing from `rng` in order.
    fn generate(
        &self,
        sources: &[Vec<u32>],
        opts: &GenerateOptions,
        batch: usize,
        rng: &mut Rng,
        device: &Device,
    ) -> Vec<Generated>;
    /// The decoding defaults the checkpoint carries (`generation_config.json`).
    fn generation(&self) -> GenerationConfig;
    /// Replaces them (saved with the model).
    fn set_generation(&mut self, generation: GenerationConfig);
    /// Sets every dropout probability (PPO trains without dropout).
    fn set_dropout(&mut self, p: f64);
    /// Activation checkpointing by blocks when training (see `ml::recompute`).
    fn set_checkpointing(&mut self, on: bool);
    /// Writes an HF folder (config, generation config, safetensors).
    fn save(&self, dir: &Path) -> Result<(), String>;
    /// Reads an HF folder; returns the tensors it did not use.
    fn load(dir: &Path, device: &Device) -> Result<(Self, Vec<String>), String>;
}

/// Mean token cross-entropy of the labels under `logits` (masked).
pub fn cross_entropy(logits: Tensor<3>, labels: &Labels) -> Tensor<1> {
    let lp = super::fused::label_logprobs(logits, labels.ids.clone(), 1.0);
    let n = labels.mask.clone().sum().clamp_min(1.0);
    -(lp * labels.mask.clone()).sum() / n
}

impl LanguageModel for Bart {
    fn architecture(&self) -> &'static str {
        "bart"
    }

    fn peft_task(&self) -> &'static str {
        "SEQ_2_SEQ_LM"
    }

    fn response_hidden(
        &self,
        sources: &[Vec<u32>],
        responses: &[Vec<u32>],
        device: &Device,
    ) -> (Tensor<3>, Labels) {
        let src = Batch::new(sources, self.config.pad_token_id, device);
        let tg = Targets::new(responses, &self.config, device);
        let hidden = self.forward_hidden(&src, tg.decoder_input);
        (
            hidden,
            Labels {
                ids: tg.labels,
                mask: tg.mask,
            },
        )
    }

    fn logits(&self, hidden: Tensor<3>) -> Tensor<3> {
        Bart::logits(self, hidden)
    }

    fn hidden_size(&self) -> usize {
        self.config.d_model
    }

    fn vocab_size(&self) -> usize {
        self.config.vocab_size
    }

    fn eos(&self) -> u32 {
        self.config.eos_token_id
    }

    fn parameters(&self) -> usize {
        self.config.parameters()
    }

    fn max_positions(&self) -> usize {
        self.config.max_position_embeddings
    }

    fn shares_positions(&self) -> bool {
        false
    }

    fn generate(
        &self,
        sources: &[Vec<u32>],
        opts: &GenerateOptions,
        batch: usize,
        rng: &mut Rng,
        device: &Device,
    ) -> Vec<Generated> {
        super::bart::generate_batched(self, sources, opts, batch, rng, device)
    }

    fn generation(&self) -> GenerationConfig {
        self.config.generation.clone()
    }

    fn set_generation(&mut self, generation: GenerationConfig) {
        self.config.generation = generation;
    }

    fn set_dropout(&mut self, p: f64) {
        Bart::set_dropout(self, p);
    }

    fn set_checkpointing(&mut self, on: bool) {
        self.checkpointing = on;
    }

    fn save(&self, dir: &Path) -> Result<(), String> {
        super::bart::io::save(self, dir)
    }

    fn load(dir: &Path, device: &Device) -> Result<(Self, Vec<String>), String> {
        super::bart::io::load(dir, device).map(|(m, r)| (m, r.unused))
    }
}

/// Rows `[pads][source][response][pads]`: sources left-padded to one
/// length, responses right-padded after them. Returns the inputs and the
/// common source length.
fn joined(
    sources: &[Vec<u32>],
    responses: &[Vec<u32>],
    pad: u32,
    device: &Device,
) -> (Inputs, usize) {
    let s = sources.iter().map(Vec::len).max().unwrap_or(0).max(1);
    let r = responses.iter().map(Vec::len).max().unwrap_or(0);
    let t = s + r;
    let mut ids = Vec::with_capacity(sources.len() * t);
    let mut starts = Vec::with_capacity(sources.len());
    for (src, resp) in sources.iter().zip(responses) {
        starts.push(s - src.len());
        ids.extend(std::iter::repeat_n(pad as i64, s - src.len()));
        ids.extend(src.iter().chain(resp).map(|&x| x as i64));
        ids.extend(std::iter::repeat_n(pad as i64, r - resp.len()));
    }
    (Inputs::with_starts(ids, &starts, t, device), s)
}

impl LanguageModel for CausalLm {
    fn architecture(&self) -> &'static str {
        self.config.family.model_type()
    }

    fn response_hidden(
        &self,
        sources: &[Vec<u32>],
        responses: &[Vec<u32>],
        device: &Device,
    ) -> (Tensor<3>, Labels) {
        let pad = self.pad();
        let (inputs, s) = joined(sources, responses, pad, device);
        let [b, t] = inputs.ids.dims();
        let r = t - s;
        let hidden = self.hidden(&inputs, &mut self.start_cache());
        let d = hidden.dims()[2];
        // The state at the source's last token predicts the first response token.
        let hidden = hidden.slice([0..b, s - 1..s - 1 + r.max(1), 0..d]);
        let width = r.max(1);
        let mut ids = Vec::with_capacity(b * width);
        let mut mask = Vec::with_capacity(b * width);
        for resp in responses {
            for j in 0..width {
                ids.push(resp.get(j).copied().unwrap_or(pad) as i64);
                mask.push(if j < resp.len() { 1.0f32 } else { 0.0 });
            }
        }
        let labels = Labels {
            ids: Tensor::from_data(TensorData::new(ids, [b, width]), device),
            mask: Tensor::from_data(TensorData::new(mask, [b, width]), device),
        };
        (hidden, labels)
    }

    fn logits(&self, hidden: Tensor<3>) -> Tensor<3> {
        CausalLm::logits(self, hidden)
    }

    fn hidden_size(&self) -> usize {
        self.config.hidden_size
    }

    fn vocab_size(&self) -> usize {
        self.config.vocab_size
    }

    fn eos(&self) -> u32 {
        let rules = self.config.token_rules(&self.generation);
        rules.eos.first().copied().unwrap_or(rules.pad)
    }

    fn parameters(&self) -> usize {
        self.num_params()
    }

    fn max_positions(&self) -> usize {
        self.config.max_position_embeddings
    }

    fn shares_positions(&self) -> bool {
        true
    }

    fn generate(
        &self,
        sources: &[Vec<u32>],
        opts: &GenerateOptions,
        batch: usize,
        rng: &mut Rng,
        device: &Device,
    ) -> Vec<Generated> {
        let rules = self.config.token_rules(&self.generation);
        in_batches(sources, batch, |chunk| {
            super::causal::generate(self, chunk, opts, &rules, rng, device)
        })
    }

    fn generation(&self) -> GenerationConfig {
        // max_length / min_length count the prompt here: only the *_new_tokens fields apply.
        let mut fields = self.generation.clone();
        fields.remove("max_length");
        fields.remove("min_length");
        GenerationConfig::from_fields(&fields).unwrap_or_default()
    }

    fn set_generation(&mut self, generation: GenerationConfig) {
        generation.write_into(&mut self.generation);
    }

    fn set_dropout(&mut self, _p: f64) {
        // The Llama family trains without dropout (attention_dropout 0 in every checkpoint).
    }

    fn set_checkpointing(&mut self, on: bool) {
        self.checkpointing = on;
    }

    fn save(&self, dir: &Path) -> Result<(), String> {
        super::causal::io::save(self, dir)
    }

    fn load(dir: &Path, device: &Device) -> Result<(Self, Vec<String>), String> {
        super::causal::io::load(dir, device).map(|(m, r)| (m, r.unused))
    }
}

/// Work a stage does with a model of whichever family (Rust has no generic
/// closures: the stage implements this, [`load`] or [`create`] calls it).
pub trait WithModel {
    /// What the work returns.
    type Output;
    /// Does the work.
    fn run<M: LanguageModel>(self, model: M, unused: Vec<String>) -> Self::Output;
}

/// Loads the HF folder `dir` as the family its `config.json` names and runs
/// `work` on it. An adapter folder efrlhf wrote loads as its base with the
/// adapter merged in (a model to start from or sample, like any other).
pub fn load<W: WithModel>(dir: &Path, device: &Device, work: W) -> Result<W::Output, String> {
    // An adapter's base may be an adapter too: apply them innermost first.
    let mut chain = Vec::new();
    let mut full = dir.to_path_buf();
    while peft::is_adapter(&full) {
        let (config, tensors) = peft::read(&full)?;
        let base = peft::base_of(&full)?.locate(&full)?;
        chain.push((full, config, tensors));
        if chain.len() > 64 {
            return Err(format!(
                "`{}`: adapters of adapters go 64 deep",
                dir.display()
            ));
        }
        full = base;
    }
    if chain.is_empty() {
        return load_full(dir, device, work);
    }
    chain.reverse();
    load_full(
        &full,
        device,
        Merged {
            chain,
            device,
            work,
        },
    )?
}

fn load_full<W: WithModel>(dir: &Path, device: &Device, work: W) -> Result<W::Output, String> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    if CausalConfig::is_causal(&text) {
        let (m, unused) = CausalLm::load(dir, device)?;
        Ok(work.run(m, unused))
    } else {
        let (m, unused) = Bart::load(dir, device)?;
        Ok(work.run(m, unused))
    }
}

/// Adapter folders merged, in order, into the base model handed over, then `work`.
struct Merged<'a, W> {
    chain: Vec<(std::path::PathBuf, AdapterConfig, HostTensors)>,
    device: &'a Device,
    work: W,
}

impl<W: WithModel> WithModel for Merged<'_, W> {
    type Output = Result<W::Output, String>;

    fn run<M: LanguageModel>(self, mut model: M, unused: Vec<String>) -> Self::Output {
        for (dir, config, tensors) in self.chain {
            let at = |e: String| format!("{}: {e}", dir.display());
            let (adapted, _) =
                lora::attach_peft(model, tensors, &config, self.device).map_err(at)?;
            model = lora::merge(adapted).set_require_grad(true);
            let fields = super::causal::io::read_generation_config(&dir).map_err(at)?;
            if !fields.is_empty() {
                model.set_generation(GenerationConfig::from_fields(&fields).map_err(at)?);
            }
        }
        Ok(self.work.run(model, unused))
    }
}

/// Writes `model`'s adapters as a PEFT folder `dir` on `base`, with the
/// model's decoding defaults (`generation_config.json`).
pub fn save_adapter<M: LanguageModel>(
    model: &M,
    dir: &Path,
    base: &peft::Base,
) -> Result<(), String> {
    peft::save(model, dir, model.peft_task(), base)?;
    let mut fields = serde_json::Map::new();
    model.generation().write_into(&mut fields);
    let text = serde_json::to_string_pretty(&serde_json::Value::Object(fields)).unwrap_or_default();
    std::fs::write(dir.join("generation_config.json"), text + "\n")
        .map_err(|e| format!("cannot write generation_config.json: {e}"))
}

/// Names and shapes of the projections of the model `dir`'s config
/// describes (no weights are read or allocated: burn initialises lazily).
pub fn projection_shapes(dir: &Path) -> Result<Vec<(String, [usize; 2])>, String> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    let device = Device::flex();
    if CausalConfig::is_causal(&text) {
        let cfg = CausalConfig::from_json(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(lora::shapes(&CausalLm::new(&cfg, &device)?))
    } else {
        let cfg = BartConfig::from_json(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(lora::shapes(&Bart::new(&cfg, &device)?))
    }
}

/// The architectures a model can be built from scratch as.
pub const ARCHITECTURES: [&str; 4] = ["bart", "llama", "qwen2", "qwen3"];

/// Sizes of a model from scratch, whatever its family.
#[derive(Debug, Clone, PartialEq)]
pub struct Scratch {
    /// One of [`ARCHITECTURES`].
    pub architecture: String,
    /// The causal sizes (vocabulary and special tokens included); BART
    /// reads width, layers, heads and the feed-forward width from them.
    pub sizes: Sizes,
    /// BART's dropout.
    pub dropout: f64,
}

/// Builds a fresh model of `spec` and runs `work` on it.
pub fn create<W: WithModel>(spec: &Scratch, device: &Device, work: W) -> Result<W::Output, String> {
    let s = &spec.sizes;
    let family = match spec.architecture.as_str() {
        "bart" => {
            let mut cfg = BartConfig::small(s.vocab, s.hidden, s.layers, s.heads);
            cfg.encoder_ffn_dim = s.intermediate;
            cfg.decoder_ffn_dim = s.intermediate;
            cfg.dropout = spec.dropout;
            cfg.pad_token_id = s.pad.unwrap_or(s.eos);
            cfg.bos_token_id = s.bos.unwrap_or(s.eos);
            cfg.eos_token_id = s.eos;
            cfg.decoder_start_token_id = s.eos;
            cfg.max_position_embeddings = s.max_positions;
            cfg.check()?;
            return Ok(work.run(Bart::new(&cfg, device)?, Vec::new()));
        }
        "llama" => Family::Llama,
        "qwen2" => Family::Qwen2,
        "qwen3" => Family::Qwen3,
        other => {
            return Err(format!(
                "architecture `{other}` is not one efrlhf builds (use {})",
                ARCHITECTURES.join(", ")
            ));
        }
    };
    let cfg = CausalConfig::new(family, s)?;
    Ok(work.run(CausalLm::new(&cfg, device)?, Vec::new()))
}
