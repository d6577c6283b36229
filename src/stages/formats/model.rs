//! The `model` format: a summarizer. Its folder holds `model/`, a Hugging
//! Face BART folder (`config.json`, `model.safetensors`, `tokenizer.json`),
//! and whatever else the producing kind writes beside it.

use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokenizers::Tokenizer;

use crate::ml::bart::{Bart, GenerateOptions, io};

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

    /// Loads the model and its tokenizer.
    pub fn load(&self, device: &burn::tensor::Device) -> Result<(Bart, Tokenizer), String> {
        let dir = self.folder();
        let (model, _) =
            io::load(&dir, device).map_err(|e| format!("input `{}`: {e}", self.stage))?;
        let tk = super::tokenizer::load(&dir.join("tokenizer.json"))?;
        Ok((model, tk))
    }
}

/// Tokenizes with the special tokens and cuts to `max` tokens, keeping the final EOS.
pub fn encode(tk: &Tokenizer, text: &str, max: usize, eos: u32) -> Result<Vec<u32>, String> {
    let mut ids = tk
        .encode(text, true)
        .map_err(|e| format!("cannot tokenize: {e}"))?
        .get_ids()
        .to_vec();
    if ids.len() > max {
        ids.truncate(max - 1);
        ids.push(eos);
    }
    Ok(ids)
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
