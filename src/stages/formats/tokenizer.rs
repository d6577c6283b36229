//! The `tokenizer` format: a folder holding a Hugging Face `tokenizer.json`.

use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::Deserialize;
use tokenizers::Tokenizer;

/// An input in the `tokenizer` format.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[schemars(rename = "tokenizer")]
pub struct TokenizerInput {
    /// The upstream stage's declared name.
    pub stage: String,
    /// Its result folder.
    pub path: PathBuf,
}

impl TokenizerInput {
    /// The `tokenizer.json` file.
    pub fn file(&self) -> PathBuf {
        self.path.join("tokenizer.json")
    }

    /// Loads the tokenizer.
    pub fn load(&self) -> Result<Tokenizer, String> {
        load(&self.file()).map_err(|e| format!("input `{}`: {e}", self.stage))
    }
}

/// Loads a `tokenizer.json` file.
pub fn load(path: &Path) -> Result<Tokenizer, String> {
    Tokenizer::from_file(path).map_err(|e| format!("cannot load `{}`: {e}", path.display()))
}

/// The id of a special token, which BART needs.
pub fn special(tk: &Tokenizer, token: &str) -> Result<u32, String> {
    tk.token_to_id(token).ok_or_else(|| {
        format!("the tokenizer has no `{token}` token, which BART needs (train it with the default special tokens)")
    })
}
