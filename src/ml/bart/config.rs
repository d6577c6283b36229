//! `config.json` of a Hugging Face BART checkpoint, with HF's field names and
//! defaults, so a downloaded `facebook/bart-large` folder loads as is and a
//! saved folder loads back in `transformers`.

use serde::{Deserialize, Serialize};

fn d_model() -> usize {
    1024
}
fn layers() -> usize {
    12
}
fn heads() -> usize {
    16
}
fn ffn() -> usize {
    4096
}
fn max_positions() -> usize {
    1024
}
fn gelu() -> String {
    "gelu".into()
}
fn dropout() -> f64 {
    0.1
}
fn init_std() -> f64 {
    0.02
}
fn vocab() -> usize {
    50265
}
fn pad() -> u32 {
    1
}
fn bos() -> u32 {
    0
}
fn eos() -> u32 {
    2
}

/// The architecture's sizes and special token ids.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BartConfig {
    #[serde(default = "vocab")]
    /// Tokens in the vocabulary (the embedding's rows).
    pub vocab_size: usize,
    #[serde(default = "d_model")]
    /// Model width.
    pub d_model: usize,
    #[serde(default = "layers")]
    /// Encoder blocks.
    pub encoder_layers: usize,
    #[serde(default = "layers")]
    /// Decoder blocks.
    pub decoder_layers: usize,
    #[serde(default = "heads")]
    /// Attention heads per encoder block.
    pub encoder_attention_heads: usize,
    #[serde(default = "heads")]
    /// Attention heads per decoder block.
    pub decoder_attention_heads: usize,
    #[serde(default = "ffn")]
    /// Feed-forward width of the encoder.
    pub encoder_ffn_dim: usize,
    #[serde(default = "ffn")]
    /// Feed-forward width of the decoder.
    pub decoder_ffn_dim: usize,
    #[serde(default = "max_positions")]
    /// Longest sequence (learned positions, offset by 2 as in BART).
    pub max_position_embeddings: usize,
    #[serde(default = "gelu")]
    /// `gelu`, `gelu_new`, `relu` or `silu`.
    pub activation_function: String,
    #[serde(default)]
    /// Multiply token embeddings by sqrt(d_model).
    pub scale_embedding: bool,
    #[serde(default = "dropout")]
    /// Dropout on hidden states.
    pub dropout: f64,
    #[serde(default)]
    /// Dropout on attention weights.
    pub attention_dropout: f64,
    #[serde(default)]
    /// Dropout inside the feed-forward block.
    pub activation_dropout: f64,
    #[serde(default = "init_std")]
    /// Standard deviation of initial weights.
    pub init_std: f64,
    #[serde(default = "pad")]
    /// The padding token.
    pub pad_token_id: u32,
    #[serde(default = "bos")]
    /// `<s>`.
    pub bos_token_id: u32,
    #[serde(default = "eos")]
    /// `</s>`.
    pub eos_token_id: u32,
    #[serde(default = "eos")]
    /// The first decoder input (BART: `</s>`).
    pub decoder_start_token_id: u32,
    #[serde(default)]
    /// A token forced first in generation, if any.
    pub forced_bos_token_id: Option<u32>,
    #[serde(default)]
    /// A token forced at the length limit, if any.
    pub forced_eos_token_id: Option<u32>,
    /// mBART-style pre-norm blocks: not part of BART, refused on load.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub normalize_before: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    /// A layer norm after the last block (mBART); plain BART has none.
    pub add_final_layer_norm: bool,
    /// Every other field of the file, written back unchanged on save.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
    /// The decoding defaults of `generation_config.json` (another file).
    #[serde(skip)]
    pub generation: super::generation_config::GenerationConfig,
}

impl BartConfig {
    /// A small model for training from scratch: `d_model` wide, `layers`
    /// encoder and decoder layers, 4x feed-forward, HF's default special ids
    /// for a tokenizer whose specials are `<s> <pad> </s> <unk> <mask>`.
    pub fn small(vocab_size: usize, d_model: usize, layers: usize, heads: usize) -> BartConfig {
        BartConfig {
            vocab_size,
            d_model,
            encoder_layers: layers,
            decoder_layers: layers,
            encoder_attention_heads: heads,
            decoder_attention_heads: heads,
            encoder_ffn_dim: 4 * d_model,
            decoder_ffn_dim: 4 * d_model,
            max_position_embeddings: 1024,
            activation_function: gelu(),
            scale_embedding: false,
            dropout: 0.1,
            attention_dropout: 0.0,
            activation_dropout: 0.0,
            init_std: 0.02,
            pad_token_id: 1,
            bos_token_id: 0,
            eos_token_id: 2,
            decoder_start_token_id: 2,
            forced_bos_token_id: None,
            forced_eos_token_id: None,
            normalize_before: false,
            add_final_layer_norm: false,
            extra: serde_json::Map::new(),
            generation: Default::default(),
        }
    }

    /// Reads and checks `config.json`.
    pub fn from_json(text: &str) -> Result<BartConfig, String> {
        let cfg: BartConfig =
            serde_json::from_str(text).map_err(|e| format!("invalid config.json: {e}"))?;
        cfg.check()?;
        Ok(cfg)
    }

    /// The JSON written next to the weights, with the fields `transformers` needs.
    pub fn to_json(&self) -> String {
        let mut cfg = self.clone();
        let put = |m: &mut serde_json::Map<String, serde_json::Value>, k: &str, v| {
            m.entry(k.to_string()).or_insert(v);
        };
        put(&mut cfg.extra, "model_type", "bart".into());
        put(
            &mut cfg.extra,
            "architectures",
            serde_json::json!(["BartForConditionalGeneration"]),
        );
        put(&mut cfg.extra, "is_encoder_decoder", true.into());
        put(&mut cfg.extra, "tie_word_embeddings", true.into());
        put(&mut cfg.extra, "use_cache", true.into());
        let mut text = serde_json::to_string_pretty(&cfg).unwrap_or_default();
        text.push('\n');
        text
    }

    /// An error naming the setting that cannot work (heads not dividing the width, ...).
    pub fn check(&self) -> Result<(), String> {
        if let Some(t) = self.extra.get("model_type").and_then(|v| v.as_str())
            && t != "bart"
        {
            return Err(format!(
                "model_type `{t}` is not supported: only BART checkpoints (model_type \"bart\") load"
            ));
        }
        if self.normalize_before || self.add_final_layer_norm {
            return Err(
                "pre-norm (mBART-style) checkpoints are not supported: BART is post-norm".into(),
            );
        }
        activation(&self.activation_function)?;
        for (name, d, h) in [
            ("encoder", self.d_model, self.encoder_attention_heads),
            ("decoder", self.d_model, self.decoder_attention_heads),
        ] {
            if h == 0 || d % h != 0 {
                return Err(format!(
                    "d_model {d} is not divisible by {name}_attention_heads {h}"
                ));
            }
        }
        for (name, id) in [
            ("pad_token_id", self.pad_token_id),
            ("eos_token_id", self.eos_token_id),
            ("decoder_start_token_id", self.decoder_start_token_id),
        ] {
            if id as usize >= self.vocab_size {
                return Err(format!(
                    "{name} {id} is outside the vocabulary of {}",
                    self.vocab_size
                ));
            }
        }
        Ok(())
    }

    /// Number of parameters (the tied output projection counted once).
    pub fn parameters(&self) -> usize {
        let d = self.d_model;
        let attn = 4 * (d * d + d);
        let norm = 2 * d;
        let enc_layer =
            attn + norm + 2 * self.encoder_ffn_dim * d + self.encoder_ffn_dim + d + norm;
        let dec_layer =
            2 * attn + 2 * norm + 2 * self.decoder_ffn_dim * d + self.decoder_ffn_dim + d + norm;
        let positions = (self.max_position_embeddings + 2) * d;
        self.vocab_size * d
            + 2 * (positions + norm)
            + self.encoder_layers * enc_layer
            + self.decoder_layers * dec_layer
    }
}

/// The feed-forward activation named in `config.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// Exact GELU (`gelu`).
    Gelu,
    /// GELU's tanh approximation (`gelu_new`).
    GeluTanh,
    /// ReLU.
    Relu,
    /// SiLU (swish).
    Silu,
}

/// The activation `config.json` names.
pub fn activation(name: &str) -> Result<Activation, String> {
    match name {
        "gelu" => Ok(Activation::Gelu),
        "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Ok(Activation::GeluTanh),
        "relu" => Ok(Activation::Relu),
        "silu" | "swish" => Ok(Activation::Silu),
        other => Err(format!(
            "activation_function `{other}` is not supported (use gelu, gelu_new, relu or silu)"
        )),
    }
}
