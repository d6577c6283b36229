//! The summarizer: BART, architecture and checkpoint format as Hugging Face
//! `transformers` defines them, so a local `facebook/bart-large` folder
//! loads as is and everything saved here loads back in `transformers`.

pub mod config;
pub mod generate;
pub mod generation_config;
pub mod io;
pub mod model;

/// The training loop is shared by every family (`ml::train`).
pub use crate::ml::train;
pub use config::BartConfig;
pub use generate::{EarlyStopping, GenerateOptions, Generated, generate, generate_batched};
pub use model::{Bart, Batch, Targets, ValueHead, cross_entropy, label_logprobs};
