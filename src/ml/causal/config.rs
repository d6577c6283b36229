//! `config.json` of a Llama-family checkpoint (`LlamaForCausalLM`,
//! `Qwen2ForCausalLM`, `Qwen3ForCausalLM`): the switches that set the
//! architectures apart, read from HF's field names and defaults, with RoPE in
//! both of its forms (4.x `rope_theta` + `rope_scaling`, 5.x
//! `rope_parameters`). Every other field is kept and written back.

use serde_json::{Map, Value, json};

use crate::ml::bart::config::{Activation, activation};
use crate::ml::decoding::TokenRules;

/// The architectures this module implements, by `architectures[0]`.
pub const SUPPORTED: [&str; 3] = ["LlamaForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM"];

/// Which member of the family: it decides the defaults and the switches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Llama 2/3.x, SmolLM2: the plain architecture.
    Llama,
    /// Qwen2 / Qwen2.5: biases on q, k and v.
    Qwen2,
    /// Qwen3: RMSNorm on each head of q and k, an explicit `head_dim`.
    Qwen3,
}

impl Family {
    /// HF's `model_type`.
    pub fn model_type(self) -> &'static str {
        match self {
            Family::Llama => "llama",
            Family::Qwen2 => "qwen2",
            Family::Qwen3 => "qwen3",
        }
    }

    /// The `*ForCausalLM` class.
    pub fn class(self) -> &'static str {
        match self {
            Family::Llama => SUPPORTED[0],
            Family::Qwen2 => SUPPORTED[1],
            Family::Qwen3 => SUPPORTED[2],
        }
    }

    fn from_class(name: &str) -> Option<Family> {
        let base = ["ForCausalLM", "ForSequenceClassification", "Model"]
            .iter()
            .find_map(|s| name.strip_suffix(s))?;
        Family::from_model_type(&base.to_ascii_lowercase())
    }

    fn from_model_type(name: &str) -> Option<Family> {
        match name {
            "llama" => Some(Family::Llama),
            "qwen2" => Some(Family::Qwen2),
            "qwen3" => Some(Family::Qwen3),
            _ => None,
        }
    }
}

/// How RoPE frequencies are scaled (`rope_type`).
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    /// `default`: none.
    None,
    /// `linear`: every frequency divided by `factor`.
    Linear {
        /// The divisor.
        factor: f64,
    },
    /// `llama3`: low frequencies divided by `factor`, high ones kept, a
    /// smooth blend between.
    Llama3 {
        /// The divisor of low frequencies.
        factor: f64,
        /// `low_freq_factor`.
        low: f64,
        /// `high_freq_factor`.
        high: f64,
        /// `original_max_position_embeddings`.
        original: f64,
    },
}

/// The architecture's sizes, switches and special token ids.
#[derive(Debug, Clone, PartialEq)]
pub struct CausalConfig {
    /// Which member of the family.
    pub family: Family,
    /// Rows of the embedding and the output projection.
    pub vocab_size: usize,
    /// Model width.
    pub hidden_size: usize,
    /// Feed-forward width.
    pub intermediate_size: usize,
    /// Blocks.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (grouped-query attention when fewer than the query heads).
    pub num_key_value_heads: usize,
    /// Width of one head (not always hidden / heads: Qwen3).
    pub head_dim: usize,
    /// RMSNorm's epsilon.
    pub rms_norm_eps: f64,
    /// RoPE's base.
    pub rope_theta: f64,
    /// RoPE's frequency scaling.
    pub rope_scaling: RopeScaling,
    /// The output projection is the token embedding.
    pub tie_word_embeddings: bool,
    /// Biases on q, k and v.
    pub qkv_bias: bool,
    /// A bias on the attention's output projection.
    pub o_bias: bool,
    /// Biases in the MLP.
    pub mlp_bias: bool,
    /// RMSNorm on each head of q and k, before RoPE.
    pub qk_norm: bool,
    /// The MLP's gate activation.
    pub hidden_act: Activation,
    /// Std of initial weights.
    pub initializer_range: f64,
    /// Longest sequence the checkpoint was trained for.
    pub max_position_embeddings: usize,
    /// `bos_token_id`.
    pub bos_token_id: Option<u32>,
    /// `eos_token_id`, a list in many checkpoints.
    pub eos_token_ids: Vec<u32>,
    /// `pad_token_id`.
    pub pad_token_id: Option<u32>,
    /// The whole file, written back with the fields above updated.
    pub raw: Map<String, Value>,
}

fn count(m: &Map<String, Value>, key: &str) -> Result<Option<usize>, String> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .map(|n| Some(n as usize))
            .ok_or_else(|| format!("`{key}` must be a whole number, not {v}")),
    }
}

fn need(m: &Map<String, Value>, key: &str) -> Result<usize, String> {
    count(m, key)?.ok_or_else(|| format!("`{key}` is missing"))
}

fn float(m: &Map<String, Value>, key: &str, default: f64) -> Result<f64, String> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => v
            .as_f64()
            .ok_or_else(|| format!("`{key}` must be a number, not {v}")),
    }
}

fn flag(m: &Map<String, Value>, key: &str, default: bool) -> Result<bool, String> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => v
            .as_bool()
            .ok_or_else(|| format!("`{key}` must be true or false, not {v}")),
    }
}

/// A token id, or a list of them (`eos_token_id: [151645, 151643]`).
pub(crate) fn token_ids(v: Option<&Value>) -> Result<Vec<u32>, String> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Number(n)) => n
            .as_u64()
            .map(|n| vec![n as u32])
            .ok_or_else(|| format!("a token id must be a whole number, not {n}")),
        Some(Value::Array(items)) => {
            items
                .iter()
                .map(|x| token_ids(Some(x)))
                .try_fold(Vec::new(), |mut all, ids| {
                    all.extend(ids?);
                    Ok(all)
                })
        }
        Some(other) => Err(format!(
            "a token id must be a number or a list, not {other}"
        )),
    }
}

/// The family a config names: `architectures[0]`, else `model_type`.
fn family(m: &Map<String, Value>) -> Result<Family, String> {
    let class = m
        .get("architectures")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
        .and_then(Value::as_str);
    let model_type = m.get("model_type").and_then(Value::as_str);
    class
        .and_then(Family::from_class)
        .or_else(|| model_type.and_then(Family::from_model_type))
        .ok_or_else(|| {
            format!(
                "architecture `{}` is not supported; supported: {} (and BartForConditionalGeneration)",
                class.or(model_type).unwrap_or("(none named)"),
                SUPPORTED.join(", ")
            )
        })
}

/// RoPE's base and scaling from `rope_parameters` (5.x) or `rope_theta` +
/// `rope_scaling` (4.x; `type` is the older spelling of `rope_type`).
fn rope(m: &Map<String, Value>) -> Result<(f64, RopeScaling), String> {
    let empty = Map::new();
    let params = m
        .get("rope_parameters")
        .and_then(Value::as_object)
        .or_else(|| m.get("rope_scaling").and_then(Value::as_object))
        .unwrap_or(&empty);
    let theta = float(params, "rope_theta", float(m, "rope_theta", 10_000.0)?)?;
    let kind = params
        .get("rope_type")
        .or_else(|| params.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    let factor = || {
        float(params, "factor", f64::NAN).and_then(|f| {
            if f.is_finite() && f > 0.0 {
                Ok(f)
            } else {
                Err(format!("rope `{kind}` needs a positive `factor`"))
            }
        })
    };
    let scaling = match kind {
        "default" => RopeScaling::None,
        "linear" => RopeScaling::Linear { factor: factor()? },
        "llama3" => RopeScaling::Llama3 {
            factor: factor()?,
            low: float(params, "low_freq_factor", 1.0)?,
            high: float(params, "high_freq_factor", 4.0)?,
            original: float(
                params,
                "original_max_position_embeddings",
                float(m, "max_position_embeddings", 8192.0)?,
            )?,
        },
        other => {
            return Err(format!(
                "rope type `{other}` is not supported (supported: default, linear, llama3)"
            ));
        }
    };
    Ok((theta, scaling))
}

impl CausalConfig {
    /// Whether `config.json`'s text names a family this module implements.
    pub fn is_causal(text: &str) -> bool {
        serde_json::from_str::<Value>(text)
            .ok()
            .and_then(|v| v.as_object().map(|m| family(m).is_ok()))
            .unwrap_or(false)
    }

    /// Whether the file describes a `*ForSequenceClassification` (a reward model).
    pub fn is_classifier(&self) -> bool {
        self.raw
            .get("architectures")
            .and_then(Value::as_array)
            .and_then(|a| a.first())
            .and_then(Value::as_str)
            .is_some_and(|c| c.ends_with("ForSequenceClassification"))
    }

    /// Parses `config.json`.
    pub fn from_json(text: &str) -> Result<CausalConfig, String> {
        let v: Value = serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
        let m = v.as_object().ok_or("not a JSON object")?.clone();
        CausalConfig::from_map(m)
    }

    fn from_map(m: Map<String, Value>) -> Result<CausalConfig, String> {
        let family = family(&m)?;
        if flag(&m, "use_sliding_window", false)? {
            return Err(
                "`use_sliding_window` is true: sliding-window attention is not supported".into(),
            );
        }
        let hidden_size = need(&m, "hidden_size")?;
        let heads = need(&m, "num_attention_heads")?;
        let head_dim = match (count(&m, "head_dim")?, family) {
            (Some(d), _) => d,
            // Qwen3's class default, not hidden / heads.
            (None, Family::Qwen3) => 128,
            (None, _) => hidden_size / heads.max(1),
        };
        let (rope_theta, rope_scaling) = rope(&m)?;
        let attention_bias = flag(&m, "attention_bias", false)?;
        let act = m
            .get("hidden_act")
            .and_then(Value::as_str)
            .unwrap_or("silu");
        let config = CausalConfig {
            family,
            vocab_size: need(&m, "vocab_size")?,
            hidden_size,
            intermediate_size: need(&m, "intermediate_size")?,
            num_hidden_layers: need(&m, "num_hidden_layers")?,
            num_attention_heads: heads,
            num_key_value_heads: count(&m, "num_key_value_heads")?.unwrap_or(heads),
            head_dim,
            rms_norm_eps: float(&m, "rms_norm_eps", 1e-6)?,
            rope_theta,
            rope_scaling,
            tie_word_embeddings: flag(&m, "tie_word_embeddings", false)?,
            qkv_bias: family == Family::Qwen2 || attention_bias,
            o_bias: family == Family::Llama && attention_bias,
            mlp_bias: family == Family::Llama && flag(&m, "mlp_bias", false)?,
            qk_norm: family == Family::Qwen3,
            hidden_act: activation(act)
                .map_err(|e| e.replace("activation_function", "hidden_act"))?,
            initializer_range: float(&m, "initializer_range", 0.02)?,
            max_position_embeddings: count(&m, "max_position_embeddings")?.unwrap_or(2048),
            bos_token_id: token_ids(m.get("bos_token_id"))?.first().copied(),
            eos_token_ids: token_ids(m.get("eos_token_id"))?,
            pad_token_id: token_ids(m.get("pad_token_id"))?.first().copied(),
            raw: m,
        };
        config.check()?;
        Ok(config)
    }

    /// A config for a model trained from scratch, in the file form
    /// transformers 5 writes.
    pub fn new(family: Family, sizes: &Sizes) -> Result<CausalConfig, String> {
        let mut m = Map::new();
        m.insert("architectures".into(), json!([family.class()]));
        m.insert("model_type".into(), family.model_type().into());
        m.insert("hidden_act".into(), "silu".into());
        m.insert("vocab_size".into(), sizes.vocab.into());
        m.insert("hidden_size".into(), sizes.hidden.into());
        m.insert("intermediate_size".into(), sizes.intermediate.into());
        m.insert("num_hidden_layers".into(), sizes.layers.into());
        m.insert("num_attention_heads".into(), sizes.heads.into());
        m.insert("num_key_value_heads".into(), sizes.kv_heads.into());
        m.insert(
            "head_dim".into(),
            (sizes.hidden / sizes.heads.max(1)).into(),
        );
        m.insert("max_position_embeddings".into(), sizes.max_positions.into());
        m.insert("rms_norm_eps".into(), 1e-6.into());
        m.insert(
            "rope_parameters".into(),
            json!({"rope_type": "default", "rope_theta": 10000.0}),
        );
        m.insert("tie_word_embeddings".into(), true.into());
        m.insert("bos_token_id".into(), json!(sizes.bos));
        m.insert("eos_token_id".into(), json!(sizes.eos));
        m.insert("pad_token_id".into(), json!(sizes.pad));
        m.insert("dtype".into(), "float32".into());
        CausalConfig::from_map(m)
    }

    /// An error for sizes no model can have.
    pub fn check(&self) -> Result<(), String> {
        let (h, kv) = (self.num_attention_heads, self.num_key_value_heads);
        if h == 0 || kv == 0 || h % kv != 0 {
            return Err(format!(
                "num_attention_heads ({h}) must be a multiple of num_key_value_heads ({kv})"
            ));
        }
        if self.head_dim == 0 || !self.head_dim.is_multiple_of(2) {
            return Err(format!(
                "head_dim ({}) must be even for rotary positions",
                self.head_dim
            ));
        }
        if self.vocab_size == 0 || self.hidden_size == 0 || self.num_hidden_layers == 0 {
            return Err("vocab_size, hidden_size and num_hidden_layers must be at least 1".into());
        }
        for (name, id) in [("bos", self.bos_token_id), ("pad", self.pad_token_id)] {
            if id.is_some_and(|t| t as usize >= self.vocab_size) {
                return Err(format!("{name}_token_id is outside the vocabulary"));
            }
        }
        Ok(())
    }

    /// `config.json` as transformers writes it: the file read, updated.
    pub fn to_json(&self) -> String {
        let mut m = self.raw.clone();
        m.insert("vocab_size".into(), self.vocab_size.into());
        m.insert(
            "tie_word_embeddings".into(),
            self.tie_word_embeddings.into(),
        );
        m.insert("dtype".into(), "float32".into());
        m.remove("torch_dtype");
        serde_json::to_string_pretty(&Value::Object(m)).unwrap_or_default() + "\n"
    }
}

impl CausalConfig {
    /// What this config and `generation_config.json`'s fields say about
    /// tokens while decoding. Nothing is banned: transformers bans nothing
    /// for a decoder-only model.
    pub fn token_rules(&self, generation: &Map<String, Value>) -> TokenRules {
        let eos = token_ids(generation.get("eos_token_id"))
            .ok()
            .filter(|e| !e.is_empty())
            .unwrap_or_else(|| self.eos_token_ids.clone());
        let pad = token_ids(generation.get("pad_token_id"))
            .ok()
            .and_then(|p| p.first().copied())
            .or(self.pad_token_id)
            .or(eos.first().copied())
            .unwrap_or(0);
        TokenRules {
            vocab: self.vocab_size,
            eos,
            pad,
            ..TokenRules::default()
        }
    }
}

/// Sizes of a model trained from scratch.
#[derive(Debug, Clone, PartialEq)]
pub struct Sizes {
    /// Vocabulary (the tokenizer's size).
    pub vocab: usize,
    /// Width.
    pub hidden: usize,
    /// Feed-forward width.
    pub intermediate: usize,
    /// Blocks.
    pub layers: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// Longest sequence.
    pub max_positions: usize,
    /// `<s>`-like start token, if the tokenizer has one.
    pub bos: Option<u32>,
    /// End of sequence.
    pub eos: u32,
    /// Padding.
    pub pad: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const V4: &str = r#"{"architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "vocab_size": 128256, "hidden_size": 2048, "intermediate_size": 8192,
        "num_hidden_layers": 16, "num_attention_heads": 32, "num_key_value_heads": 8,
        "rms_norm_eps": 1e-05, "rope_theta": 500000.0, "tie_word_embeddings": true,
        "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
            "original_max_position_embeddings": 8192, "rope_type": "llama3"},
        "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009]}"#;

    const V5: &str = r#"{"architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "vocab_size": 128256, "hidden_size": 2048, "intermediate_size": 8192,
        "num_hidden_layers": 16, "num_attention_heads": 32, "num_key_value_heads": 8,
        "rms_norm_eps": 1e-05, "tie_word_embeddings": true,
        "rope_parameters": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
            "original_max_position_embeddings": 8192, "rope_type": "llama3", "rope_theta": 500000.0},
        "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009]}"#;

    #[test]
    fn both_rope_forms_read_the_same() {
        let a = CausalConfig::from_json(V4).unwrap();
        let b = CausalConfig::from_json(V5).unwrap();
        assert_eq!(a.rope_theta, 500000.0);
        assert_eq!(a.rope_scaling, b.rope_scaling);
        assert_eq!(a.rope_theta, b.rope_theta);
        assert_eq!(
            a.rope_scaling,
            RopeScaling::Llama3 {
                factor: 32.0,
                low: 1.0,
                high: 4.0,
                original: 8192.0
            }
        );
        assert_eq!(a.eos_token_ids, vec![128001, 128008, 128009]);
        assert_eq!(a.head_dim, 64);
    }

    #[test]
    fn unsupported_architectures_are_named_with_the_supported_ones() {
        let e = CausalConfig::from_json(r#"{"architectures": ["GPT2LMHeadModel"]}"#).unwrap_err();
        assert!(e.contains("`GPT2LMHeadModel` is not supported"), "{e}");
        assert!(e.contains("Qwen3ForCausalLM"), "{e}");
        let yarn = V5.replace("\"llama3\"", "\"yarn\"");
        let e = CausalConfig::from_json(&yarn).unwrap_err();
        assert!(e.contains("rope type `yarn`"), "{e}");
    }

    #[test]
    fn qwen3_defaults_head_dim_to_128_and_qwen2_has_qkv_bias() {
        let q3 = r#"{"model_type": "qwen3", "vocab_size": 10, "hidden_size": 64,
            "intermediate_size": 8, "num_hidden_layers": 1, "num_attention_heads": 4}"#;
        let c = CausalConfig::from_json(q3).unwrap();
        assert_eq!((c.head_dim, c.qk_norm, c.qkv_bias), (128, true, false));
        let c = CausalConfig::from_json(&q3.replace("qwen3", "qwen2")).unwrap();
        assert_eq!(
            (c.head_dim, c.qk_norm, c.qkv_bias, c.o_bias),
            (16, false, true, false)
        );
    }
}
