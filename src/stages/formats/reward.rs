//! The `reward-model` format: `reward.json` (how to rebuild the model and
//! turn its output into a reward) and the weights it describes; and the
//! [`Scorer`] that applies one to summaries.

use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokenizers::Tokenizer;

use super::prompt::Prompter;
use crate::ml::causal::reward::CausalRm;
use crate::ml::lm::LanguageModel;
use crate::ml::phi::{FEATURES, Phi};
use crate::ml::text_rm::{TextRm, TextRmConfig, pair_sequence};

/// What `reward.json` records, enough to rebuild and apply the model.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RewardSpec {
    /// The reward-model method that produced it.
    pub method: String,
    /// φ's hidden sizes (score-reading methods).
    #[serde(default)]
    pub hidden: Vec<usize>,
    /// Feature order of φ's input.
    #[serde(default)]
    pub features: Vec<String>,
    /// Each score is multiplied by this before φ reads it.
    #[serde(default)]
    pub scale: f64,
    /// The text model's architecture (`text` method).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<TextRmConfig>,
    /// A text model on a decoder-only backbone (`text` with `backbone`), in `model/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causal: Option<CausalRmSpec>,
    /// How the RL reward is derived from the model's output.
    pub reward: String,
}

/// How a reward model on a decoder-only backbone reads a summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CausalRmSpec {
    /// The prompt over the reviews (empty: the default).
    pub prompt: String,
    /// Tokens read per (reviews, summary): three quarters for the prompt, the rest the summary.
    pub max_tokens: usize,
}

/// Turns (reviews, summary) into the token row a causal reward model reads:
/// the prompt, then the summary and EOS.
pub struct CausalReader {
    prompter: Prompter,
    summary_tokens: usize,
}

impl CausalReader {
    /// The reader of `rm`, its prompt rendered through the chat template of `tokenizer_dir`.
    pub fn new(
        prompt: &str,
        tokenizer_dir: &Path,
        rm: &CausalRm,
        max_tokens: usize,
    ) -> Result<CausalReader, String> {
        let eos = LanguageModel::eos(&rm.trunk);
        let summary_tokens = (max_tokens / 4).max(2);
        Ok(CausalReader {
            prompter: Prompter::new(
                prompt,
                Some(tokenizer_dir),
                true,
                eos,
                max_tokens - summary_tokens,
            )?,
            summary_tokens,
        })
    }

    /// The row of one summary of a product.
    pub fn row(
        &self,
        tk: &Tokenizer,
        reviews: &[String],
        id: &str,
        summary: &str,
    ) -> Result<Vec<u32>, String> {
        let mut row = self.prompter.source_of(tk, reviews, id)?.ids;
        row.extend(self.prompter.target(tk, summary, self.summary_tokens)?);
        Ok(row)
    }
}

/// An input in the `reward-model` format.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[schemars(rename = "reward-model")]
pub struct RewardModelInput {
    /// The upstream stage's declared name.
    pub stage: String,
    /// Its result folder.
    pub path: PathBuf,
}

impl RewardModelInput {
    /// The scorer this reward model defines.
    pub fn scorer(&self, device: &burn::tensor::Device) -> Result<Scorer, String> {
        Scorer::load(&self.path, device).map_err(|e| format!("input `{}`: {e}", self.stage))
    }
}

/// Reads `reward.json` of a reward-model stage's output folder.
pub fn read_spec(dir: &Path) -> Result<RewardSpec, String> {
    let text = std::fs::read_to_string(dir.join("reward.json"))
        .map_err(|e| format!("cannot read reward.json: {e}"))?;
    serde_json::from_str(&text).map_err(|e| format!("reward.json: {e}"))
}

/// Loads a trained φ from a reward-model stage's output folder.
pub fn load_phi(
    dir: &Path,
    device: &burn::tensor::Device,
) -> Result<(RewardSpec, Option<Phi>), String> {
    let spec = read_spec(dir)?;
    let model = phi_of(&spec, dir, device)?;
    Ok((spec, model))
}

/// The φ that `spec` describes in `dir`, if its method is a φ.
pub fn phi_of(
    spec: &RewardSpec,
    dir: &Path,
    device: &burn::tensor::Device,
) -> Result<Option<Phi>, String> {
    Ok(match spec.method.as_str() {
        "domain-knowledge" | "synthetic" => Some(Phi::load(
            &dir.join("model.safetensors"),
            &spec.hidden,
            device,
        )?),
        _ => None,
    })
}

/// Loads a trained text reward model.
pub fn load_text_rm(
    dir: &Path,
    device: &burn::tensor::Device,
) -> Result<(RewardSpec, TextRm), String> {
    let spec = read_spec(dir)?;
    let (_, model) = text_rm_of(&spec, dir, device)?;
    Ok((spec, model))
}

/// The text reward model that `spec` describes in `dir`, with its configuration.
pub fn text_rm_of(
    spec: &RewardSpec,
    dir: &Path,
    device: &burn::tensor::Device,
) -> Result<(TextRmConfig, TextRm), String> {
    let cfg = spec.text.ok_or("reward.json describes no text model")?;
    Ok((
        cfg,
        TextRm::load(&dir.join("model.safetensors"), &cfg, device)?,
    ))
}

/// One summary to score: the product's reviews, the text, and its seven
/// scores on 0..5 when the scorer reads scores.
pub struct ToScore<'a> {
    /// The product's id.
    pub product: &'a str,
    /// The product's reviews.
    pub reviews: &'a [String],
    /// The summary.
    pub summary: &'a str,
    /// Its seven scores, for scorers that read them.
    pub features: Option<[f64; FEATURES]>,
}

/// How a summary becomes a reward, from a reward-model stage's output.
pub enum Scorer {
    /// `sigmoid(φ(scores · scale))`, the paper's reward.
    Phi {
        /// The trained φ.
        phi: Phi,
        /// What each score is multiplied by before φ reads it.
        scale: f64,
    },
    /// The plain mean of the seven scores, divided by 5.
    NaiveMean,
    /// `sigmoid(score)` of the text-reading reward model over
    /// `<s> summary </s> reviews </s>`, tokenized with its own tokenizer.
    Text {
        /// The trained model.
        model: Box<TextRm>,
        /// Its tokenizer.
        tokenizer: Box<Tokenizer>,
        /// `<s>`, `</s>`, `<pad>`.
        special: [u32; 3],
        /// Tokens read per (summary, reviews) pair.
        max_tokens: usize,
    },
    /// `sigmoid(score)` of a reward model on a decoder-only backbone, read
    /// at the last token of the prompt, summary and EOS.
    CausalText {
        /// The trained model.
        model: Box<CausalRm>,
        /// Its tokenizer.
        tokenizer: Box<Tokenizer>,
        /// How it reads a summary.
        reader: Box<CausalReader>,
    },
}

impl Scorer {
    /// Builds the scorer from a reward-model stage's folder.
    pub fn load(dir: &Path, device: &burn::tensor::Device) -> Result<Scorer, String> {
        let spec = read_spec(dir)?;
        match spec.method.as_str() {
            "naive-mean" => Ok(Scorer::NaiveMean),
            "text" if let Some(c) = &spec.causal => {
                let folder = dir.join("model");
                let model = CausalRm::load(&folder, device)?;
                let tokenizer = super::tokenizer::load(&folder.join("tokenizer.json"))?;
                let reader = CausalReader::new(&c.prompt, &folder, &model, c.max_tokens)?;
                Ok(Scorer::CausalText {
                    model: Box::new(model),
                    tokenizer: Box::new(tokenizer),
                    reader: Box::new(reader),
                })
            }
            "text" => {
                let (cfg, model) = text_rm_of(&spec, dir, device)?;
                let tokenizer = super::tokenizer::load(&dir.join("tokenizer.json"))?;
                let id = |t: &str| {
                    tokenizer
                        .token_to_id(t)
                        .ok_or_else(|| format!("the reward model's tokenizer has no `{t}` token"))
                };
                let special = [id("<s>")?, id("</s>")?, id("<pad>")?];
                Ok(Scorer::Text {
                    model: Box::new(model),
                    tokenizer: Box::new(tokenizer),
                    special,
                    max_tokens: cfg.max_tokens,
                })
            }
            method => match phi_of(&spec, dir, device)? {
                Some(phi) => Ok(Scorer::Phi {
                    phi,
                    scale: spec.scale,
                }),
                None => Err(format!(
                    "the `{method}` reward model cannot score summaries (domain-knowledge, synthetic, naive-mean or text can)"
                )),
            },
        }
    }

    /// Whether the scorer reads the seven scores (then every [`ToScore`] needs them).
    pub fn reads_features(&self) -> bool {
        !matches!(self, Scorer::Text { .. } | Scorer::CausalText { .. })
    }

    /// Rewards of summaries.
    pub fn rewards(
        &self,
        items: &[ToScore<'_>],
        device: &burn::tensor::Device,
    ) -> Result<Vec<f64>, String> {
        match self {
            Scorer::NaiveMean => Ok(features_of(items)?
                .iter()
                .map(|s| s.iter().sum::<f64>() / (5.0 * FEATURES as f64))
                .collect()),
            Scorer::Phi { phi, scale } => {
                let f: Vec<[f32; FEATURES]> = features_of(items)?
                    .iter()
                    .map(|s| s.map(|x| (x * scale) as f32))
                    .collect();
                Ok(phi.score(&f, device).into_iter().map(sigmoid).collect())
            }
            Scorer::Text {
                model,
                tokenizer,
                special,
                max_tokens,
            } => text_rewards(model, tokenizer, *special, *max_tokens, items, device),
            Scorer::CausalText {
                model,
                tokenizer,
                reader,
            } => {
                let rows = items
                    .iter()
                    .map(|t| reader.row(tokenizer, t.reviews, t.product, t.summary))
                    .collect::<Result<Vec<_>, String>>()?;
                Ok(model
                    .score_rows(&rows, 8, device)
                    .into_iter()
                    .map(sigmoid)
                    .collect())
            }
        }
    }
}

fn sigmoid(x: f32) -> f64 {
    1.0 / (1.0 + (-(x as f64)).exp())
}

fn features_of(items: &[ToScore<'_>]) -> Result<Vec<[f64; FEATURES]>, String> {
    items
        .iter()
        .map(|t| {
            t.features.ok_or_else(|| {
                "this reward model reads the seven scores, and a summary has none".to_string()
            })
        })
        .collect()
}

fn text_rewards(
    model: &TextRm,
    tokenizer: &Tokenizer,
    [bos, eos, pad]: [u32; 3],
    max_tokens: usize,
    items: &[ToScore<'_>],
    device: &burn::tensor::Device,
) -> Result<Vec<f64>, String> {
    let ids = |t: &str| -> Result<Vec<u32>, String> {
        Ok(tokenizer
            .encode(t, false)
            .map_err(|e| format!("cannot tokenize for the reward model: {e}"))?
            .get_ids()
            .to_vec())
    };
    let seqs = items
        .iter()
        .map(|t| {
            Ok(pair_sequence(
                &ids(t.summary)?,
                &ids(&t.reviews.join(" "))?,
                bos,
                eos,
                max_tokens,
            ))
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(model
        .score(&seqs, pad, 16, device)
        .into_iter()
        .map(sigmoid)
        .collect())
}
