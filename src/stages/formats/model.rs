//! The `model` format: a summarizer. Its folder holds `model/`, a Hugging
//! Face BART folder (`config.json`, `model.safetensors`, `tokenizer.json`),
//! and whatever else the producing kind writes beside it.

use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokenizers::Tokenizer;

use crate::ml::decoding::{EarlyStopping, GenerateOptions};
use crate::ml::lm::{self, LanguageModel, WithModel};
use crate::ml::lora;
use crate::ml::peft::Base;

/// The files of a Hugging Face model folder that the loaders read, by name
/// ending: configuration, safetensors weights (and their index), tokenizer and
/// generation files. Weights in other formats (`.bin`, `.h5`, `.msgpack`, ONNX) are not.
pub const MODEL_FILE_ENDINGS: &[&str] = &[
    ".json",
    ".safetensors",
    ".txt",
    ".model",
    ".jinja",
    ".tiktoken",
];

/// Whether a model folder's file `name` is one the loaders read.
pub fn is_model_file(name: &str) -> bool {
    MODEL_FILE_ENDINGS.iter().any(|e| name.ends_with(e))
}

/// An input in the `model` format.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[schemars(rename = "model")]
pub struct ModelInput {
    /// The upstream stage's declared name.
    pub stage: String,
    /// Its result folder.
    pub path: PathBuf,
}

impl ModelInput {
    /// The Hugging Face folder inside the result.
    pub fn folder(&self) -> PathBuf {
        self.path.join("model")
    }

    /// The model's tokenizer.
    pub fn tokenizer(&self) -> Result<Tokenizer, String> {
        super::tokenizer::load(&self.folder().join("tokenizer.json"))
            .map_err(|e| format!("input `{}`: {e}", self.stage))
    }

    /// Loads the model, whatever its family, and runs `work` on it.
    pub fn with_model<W: WithModel>(
        &self,
        device: &burn::tensor::Device,
        work: W,
    ) -> Result<W::Output, String> {
        lm::load(&self.folder(), device, work).map_err(|e| format!("input `{}`: {e}", self.stage))
    }
}

/// Writes `model` as the Hugging Face folder `dir`, with its tokenizer and
/// the tokenizer's own files from `tokenizer_dir` (config, chat template).
/// A model with LoRA adapters is written as a PEFT adapter folder on
/// `adapter_base`, or, without one (`merge`), whole with them folded in.
pub fn save_model_folder<M: LanguageModel>(
    dir: &std::path::Path,
    model: &M,
    tk: &Tokenizer,
    tokenizer_dir: &std::path::Path,
    adapter_base: Option<&Base>,
) -> Result<(), String> {
    if !lora::has_adapters(model) {
        model.save(dir)?;
    } else if let Some(base) = adapter_base {
        lm::save_adapter(model, dir, base)?;
    } else {
        lora::merge(model.clone()).save(dir)?;
    }
    tk.save(dir.join("tokenizer.json"), true)
        .map_err(|e| format!("cannot save tokenizer.json: {e}"))?;
    copy_tokenizer_files(tokenizer_dir, dir)
}

/// Copies the tokenizer's own files besides `tokenizer.json` (its config,
/// chat template, special tokens) from `from` into the model folder `to`.
pub fn copy_tokenizer_files(from: &std::path::Path, to: &std::path::Path) -> Result<(), String> {
    for name in [
        "tokenizer_config.json",
        "chat_template.jinja",
        "special_tokens_map.json",
    ] {
        let src = from.join(name);
        if src.is_file() && from != to {
            std::fs::copy(&src, to.join(name))
                .map_err(|e| format!("cannot copy `{}`: {e}", src.display()))?;
        }
    }
    Ok(())
}

/// Tokenizes with the special tokens and cuts to `max` tokens, keeping the final EOS.
pub fn encode(tk: &Tokenizer, text: &str, max: usize, eos: u32) -> Result<Vec<u32>, String> {
    let mut ids = tk
        .encode(text, true)
        .map_err(|e| format!("cannot tokenize: {e}"))?
        .get_ids()
        .to_vec();
    cut_keeping_eos(&mut ids, max, eos);
    Ok(ids)
}

/// Cuts `ids` to `max` tokens, the last one `eos`; whether it cut.
pub fn cut_keeping_eos(ids: &mut Vec<u32>, max: usize, eos: u32) -> bool {
    let cut = ids.len() > max;
    if cut {
        ids.truncate(max - 1);
        ids.push(eos);
    }
    cut
}

/// The text of generated ids, special tokens dropped.
pub fn decode(tk: &Tokenizer, ids: &[u32]) -> String {
    tk.decode(ids, true).unwrap_or_default().trim().to_string()
}

/// How summaries are sampled: the parameters `ppo` and `eval` share
/// (flattened into theirs, so manifests name them directly).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case", default)]
pub struct Sampling {
    /// Sampling temperature (also divides the logits of log-probabilities).
    #[schemars(range(min = 0.01))]
    pub temperature: f64,
    /// Keep the k most likely tokens (0: all).
    #[schemars(range(min = 0))]
    pub top_k: i64,
    /// Nucleus mass.
    #[schemars(range(min = 0.01, max = 1))]
    pub top_p: f64,
    /// The longest summary.
    #[schemars(range(min = 1, max = 1000000))]
    pub max_new_tokens: i64,
}

impl Default for Sampling {
    fn default() -> Sampling {
        Sampling {
            temperature: 0.9,
            top_k: 50,
            top_p: 0.9,
            max_new_tokens: 150,
        }
    }
}

impl Sampling {
    /// The generation settings, sampling or (`sample` false) greedy.
    pub fn options(&self, sample: bool) -> GenerateOptions {
        GenerateOptions {
            sample,
            temperature: self.temperature,
            top_k: self.top_k as usize,
            top_p: self.top_p,
            ..GenerateOptions::greedy(self.max_new_tokens as usize)
        }
    }
}

/// Beam search and length controls (HF `generate` names). A setting left at
/// its default takes the model's `generation_config.json` value, as
/// `generate` does.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case", default)]
pub struct Decoding {
    /// Beams of beam search (1: none; 0: the model's, else 1); needs `sample #false`.
    #[schemars(range(min = 0, max = 64))]
    pub num_beams: i64,
    /// A finished beam's score is its log-probability over length^this.
    pub length_penalty: f64,
    /// When beam search stops.
    pub early_stopping: EarlyStop,
    /// Never repeat an n-gram of this size (0: off).
    #[schemars(range(min = 0, max = 16))]
    pub no_repeat_ngram: i64,
    /// No EOS before this many tokens.
    #[schemars(range(min = 0, max = 1000000))]
    pub min_new_tokens: i64,
}

impl Default for Decoding {
    fn default() -> Decoding {
        Decoding {
            num_beams: 0,
            length_penalty: 1.0,
            early_stopping: EarlyStop::False,
            no_repeat_ngram: 0,
            min_new_tokens: 0,
        }
    }
}

/// `early_stopping` as `transformers` spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum EarlyStop {
    /// Stop when the best running beam cannot beat the finished ones at its length.
    False,
    /// Stop once `num-beams` beams have finished.
    True,
    /// Stop only when no beam can improve at any length.
    Never,
}

impl Decoding {
    /// `base` with these settings.
    pub fn options(&self, base: GenerateOptions) -> GenerateOptions {
        GenerateOptions {
            num_beams: if self.num_beams == 0 {
                base.num_beams
            } else {
                self.num_beams as usize
            },
            length_penalty: self.length_penalty,
            early_stopping: match self.early_stopping {
                EarlyStop::False => EarlyStopping::Heuristic,
                EarlyStop::True => EarlyStopping::Done,
                EarlyStop::Never => EarlyStopping::Never,
            },
            no_repeat_ngram: self.no_repeat_ngram as usize,
            min_new_tokens: self.min_new_tokens as usize,
            ..base
        }
    }

    /// The options for `model`: these settings over `base`, and the model's
    /// `generation_config.json` wherever both this and `base`'s length are defaults.
    pub fn options_for(
        &self,
        base: GenerateOptions,
        base_default: &GenerateOptions,
        model: &impl LanguageModel,
    ) -> GenerateOptions {
        let defaults = Decoding::default().options(base_default.clone());
        let mut o = model.generation().apply(&self.options(base), &defaults);
        if self.num_beams > 0 {
            o.num_beams = self.num_beams as usize; // 1 is greedy even on a beam model
        }
        o
    }
}
