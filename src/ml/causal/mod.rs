//! Decoder-only language models of the Llama family (`LlamaForCausalLM`,
//! `Qwen2ForCausalLM`, `Qwen3ForCausalLM`: Llama 3.x, SmolLM2, Qwen2.5,
//! Qwen3), architecture and checkpoint format as transformers defines them,
//! so Hub folders load as is and everything saved here loads back there.

pub mod config;
pub mod generate;
pub mod io;
pub mod model;
pub mod reward;
pub mod rope;

pub use config::{CausalConfig, Family, RopeScaling, Sizes};
pub use generate::generate;
pub use model::{CausalLm, Inputs};
