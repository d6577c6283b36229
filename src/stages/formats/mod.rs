//! The artifact formats stages exchange, and how to open them: one module
//! per format, each with the input type a kind's `Inputs` struct names
//! (`DatasetInput`, `ModelInput`, ...).
//!
//! A manifest says which format its kind produces (`produces "model"`) and
//! which each input role accepts (`input "policy" format="model"`), so the
//! graph can reject a wrong wiring at plan time. This file holds only the
//! names: a kind that opens datasets reaches `dataset` and nothing else.

pub mod adapter;
pub mod dataset;
pub mod evaluation;
pub mod model;
pub mod prompt;
pub mod reward;
pub mod tokenizer;

use std::fmt;

/// What a stage's output folder holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Format {
    /// `products.jsonl`: normalized products ([`dataset::Product`]).
    Dataset,
    /// `tokenizer.json`.
    Tokenizer,
    /// A summarizer: `model/` as a Hugging Face BART folder with its tokenizer.
    Model,
    /// `reward.json` and the weights it describes.
    RewardModel,
    /// Summaries and comparison tables of an evaluation.
    Evaluation,
    /// Pairwise verdicts between models' summaries (`preference.json`).
    Preference,
    /// Anything else (external kinds that do not declare a format).
    Files,
}

impl Format {
    /// Every format, in the order messages list them.
    pub const ALL: [Format; 7] = [
        Format::Dataset,
        Format::Tokenizer,
        Format::Model,
        Format::RewardModel,
        Format::Evaluation,
        Format::Preference,
        Format::Files,
    ];

    /// The name manifests use.
    pub fn name(self) -> &'static str {
        match self {
            Format::Dataset => "dataset",
            Format::Tokenizer => "tokenizer",
            Format::Model => "model",
            Format::RewardModel => "reward-model",
            Format::Evaluation => "evaluation",
            Format::Preference => "preference",
            Format::Files => "files",
        }
    }

    /// Parses a manifest's format name.
    pub fn parse(name: &str) -> Option<Format> {
        Format::ALL.into_iter().find(|f| f.name() == name)
    }

    /// The format with its article, for messages ("a dataset").
    pub fn described(self) -> &'static str {
        match self {
            Format::Dataset => "a dataset",
            Format::Tokenizer => "a tokenizer",
            Format::Model => "a model",
            Format::RewardModel => "a reward model",
            Format::Evaluation => "an evaluation",
            Format::Preference => "pairwise preferences",
            Format::Files => "files of an external kind that declares no format",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
