//! The `model` format: a summarizer. Its folder holds `model/`, a Hugging
//! Face BART folder (`config.json`, `model.safetensors`, `tokenizer.json`),
//! and whatever else the producing kind writes beside it.

use std::path::PathBuf;

use schemars::JsonSchema;
use serde::Deserialize;
use tokenizers::Tokenizer;

use crate::ml::bart::{Bart, io};

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
