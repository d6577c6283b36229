//! The parameters every kind that trains a language model shares for
//! training it in less memory: LoRA (`lora-rank` and friends, or a PEFT
//! adapter to go on from), whether the result is the adapter or the model
//! with it merged, and activation checkpointing. Flattened into each kind's
//! parameters, so manifests name them directly.

use std::io::Write;
use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::ml::lm::{self, LanguageModel};
use crate::ml::lora::{self, LoraSpec, Targets};
use crate::ml::peft::{self, Base};
use crate::ml::precision::Precision;

/// LoRA and activation checkpointing.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case", default)]
pub struct LoraParams {
    /// LoRA rank (0: full fine-tuning).
    #[schemars(range(min = 0, max = 65536))]
    pub lora_rank: i64,
    /// LoRA alpha: the update is scaled by alpha / rank (0: PEFT's default, 8).
    #[schemars(range(min = 0))]
    pub lora_alpha: f64,
    /// Dropout on the adapters' input.
    #[schemars(range(min = 0, max = 0.9))]
    pub lora_dropout: f64,
    /// `all-linear`, or module names as PEFT spells them (empty: `q_proj v_proj`).
    pub lora_targets: String,
    /// A PEFT adapter folder to go on training (its rank and targets apply).
    pub pretrained_adapter: PathBuf,
    /// Write the model with the adapter folded in, not the adapter.
    pub merge: bool,
    /// Recompute activations in the backward pass instead of keeping them.
    pub activation_checkpointing: bool,
}

impl LoraParams {
    /// Whether the stage trains adapters.
    pub fn is_on(&self) -> bool {
        self.lora_rank > 0 || self.has_adapter()
    }

    fn has_adapter(&self) -> bool {
        !self.pretrained_adapter.as_os_str().is_empty()
    }

    /// The fresh adapters `lora-*` describe.
    pub fn spec(&self) -> LoraSpec {
        LoraSpec {
            rank: self.lora_rank.max(0) as usize,
            alpha: if self.lora_alpha > 0.0 {
                self.lora_alpha
            } else {
                8.0
            },
            dropout: self.lora_dropout,
            targets: Targets::parse(&self.lora_targets),
        }
    }

    /// Settings that contradict each other (plan time).
    pub fn check(&self, precision: Precision) -> Result<(), String> {
        if self.activation_checkpointing && precision != Precision::F32 {
            return Err(format!(
                "`activation-checkpointing` replays the layers of an f32 model; with `precision \"{precision}\"` train without it, or in f32"
            ));
        }
        let given: Vec<&str> = [
            ("lora-alpha", self.lora_alpha != 0.0),
            ("lora-dropout", self.lora_dropout != 0.0),
            ("lora-targets", !self.lora_targets.trim().is_empty()),
        ]
        .into_iter()
        .filter_map(|(name, set)| set.then_some(name))
        .collect();
        if self.has_adapter() && (self.lora_rank > 0 || !given.is_empty()) {
            let mut names = given.clone();
            if self.lora_rank > 0 {
                names.insert(0, "lora-rank");
            }
            return Err(format!(
                "`pretrained-adapter` brings its own LoRA settings; remove `{}`",
                names.join("`, `")
            ));
        }
        if !self.is_on() {
            if let Some(first) = given.first() {
                return Err(format!(
                    "`{first}` is set but `lora-rank` is 0 (full fine-tuning): set `lora-rank` (8 is PEFT's default) to train LoRA adapters, or remove `{first}`"
                ));
            }
            if self.merge {
                return Err("`merge` folds a LoRA adapter into the model, but there is none: set `lora-rank` or `pretrained-adapter`, or remove `merge`".into());
            }
        }
        Ok(())
    }

    /// Checks the targets and rank against the model `dir`'s config, when
    /// it is at hand at plan time (a `pretrained` folder).
    pub fn check_model(&self, dir: &Path) -> Result<(), String> {
        if self.lora_rank == 0 || !dir.join("config.json").is_file() {
            return Ok(());
        }
        lora::plan(&self.spec(), &lm::projection_shapes(dir)?).map(|_| ())
    }

    /// `model` frozen with adapters attached (fresh, or the pretrained
    /// adapter), or as it is without LoRA. Logs what trains.
    pub fn prepare<M: LanguageModel>(
        &self,
        model: M,
        seed: u64,
        device: &burn::tensor::Device,
        log: &mut dyn Write,
    ) -> Result<M, String> {
        let mut model = model;
        model.set_checkpointing(self.activation_checkpointing);
        if !self.is_on() {
            return Ok(model);
        }
        let total = model.parameters();
        let (model, trained) = if self.has_adapter() {
            let dir = &self.pretrained_adapter;
            let (config, tensors) = peft::read(dir)?;
            lora::attach_peft(model, tensors, &config, device)
                .map_err(|e| format!("`pretrained-adapter` {}: {e}", dir.display()))?
        } else {
            lora::attach(model, &self.spec(), seed)?
        };
        let _ = writeln!(
            log,
            "LoRA: {trained} trainable parameters ({:.2}% of {total}); the base is frozen",
            100.0 * trained as f64 / total.max(1) as f64
        );
        Ok(model)
    }

    /// What the saved adapter names as its base: `None` when the model is
    /// written whole (no LoRA, or `merge`).
    pub fn base(
        &self,
        base: impl FnOnce() -> Result<Base, String>,
    ) -> Result<Option<Base>, String> {
        if !self.is_on() || self.merge {
            return Ok(None);
        }
        base().map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lora_settings_without_a_rank_are_refused_by_name() {
        let p = LoraParams {
            lora_alpha: 16.0,
            ..LoraParams::default()
        };
        let e = p.check(Precision::F32).unwrap_err();
        assert!(
            e.contains("`lora-alpha` is set but `lora-rank` is 0"),
            "{e}"
        );
        let p = LoraParams {
            merge: true,
            ..LoraParams::default()
        };
        assert!(p.check(Precision::F32).unwrap_err().contains("`merge`"));
        let p = LoraParams {
            pretrained_adapter: "a".into(),
            lora_rank: 4,
            ..LoraParams::default()
        };
        assert!(
            p.check(Precision::F32)
                .unwrap_err()
                .contains("remove `lora-rank`")
        );
        let p = LoraParams {
            lora_rank: 4,
            lora_alpha: 16.0,
            ..LoraParams::default()
        };
        assert!(p.check(Precision::F32).is_ok());
        assert_eq!(p.spec().alpha, 16.0);
        assert_eq!(LoraParams::default().spec().alpha, 8.0);
    }
}
