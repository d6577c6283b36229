//! Built-in stage kinds: one module per kind, each implementing
//! [`kind::Kind`], all listed in [`builtins::BUILTINS`]. That table drives
//! the registry (their manifests live in `plugins/builtin/` and are embedded
//! in the binary), `efrlhf plugins`, and dispatch.
//!
//! A kind reaches only [`kind`] (the interface), [`formats`] (the artifacts
//! it reads and writes) and the shared code in `ml`, `text`, `rng` and
//! `stats`, never another kind: a kind's identity in the cache key is the
//! code it reaches ([`identity`]), so this file declares modules and nothing else.

pub mod builtins;
pub mod dataset;
pub mod dpo;
pub mod eval;
pub mod featurize;
pub mod formats;
pub mod grpo;
pub mod identity;
pub mod kind;
pub mod model;
pub mod ppo;
pub mod preference;
pub mod reward;
pub mod sft;
pub mod tokenizer;
