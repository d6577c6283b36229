//! `generation_config.json`: the decoding defaults a Hugging Face checkpoint
//! carries (`facebook/bart-large-cnn`: 4 beams, length penalty 2, n-gram
//! blocking). Read with the model (from `config.json` for older checkpoints
//! without the file, as `transformers` does), written with it, and applied
//! to a stage's decoding wherever the stage leaves a setting at its default,
//! which is `generate`'s own rule.

use std::path::Path;

use serde_json::{Map, Value, json};

use super::config::BartConfig;
use super::generate::{EarlyStopping, GenerateOptions};

/// The decoding fields of `generation_config.json` that efrlhf uses; `None`
/// where the file says nothing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GenerationConfig {
    /// `num_beams`.
    pub num_beams: Option<usize>,
    /// `length_penalty`.
    pub length_penalty: Option<f64>,
    /// `early_stopping`: true, false or `"never"`.
    pub early_stopping: Option<EarlyStopping>,
    /// `no_repeat_ngram_size`.
    pub no_repeat_ngram_size: Option<usize>,
    /// `min_new_tokens`, or `min_length` less the decoder start token.
    pub min_new_tokens: Option<usize>,
    /// `max_new_tokens`, or `max_length` less the decoder start token.
    pub max_new_tokens: Option<usize>,
}

impl GenerationConfig {
    /// From `dir/generation_config.json`, else from the generation fields of `config.json`.
    pub fn read(dir: &Path, config_json: &Map<String, Value>) -> Result<GenerationConfig, String> {
        let path = dir.join("generation_config.json");
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let v: Value = serde_json::from_str(&text)
                    .map_err(|e| format!("{}: invalid JSON: {e}", path.display()))?;
                let m = v
                    .as_object()
                    .ok_or_else(|| format!("{}: not a JSON object", path.display()))?;
                GenerationConfig::from_fields(m).map_err(|e| format!("{}: {e}", path.display()))
            }
            Err(_) => GenerationConfig::from_fields(config_json),
        }
    }

    /// The fields of a parsed `generation_config.json`.
    pub fn from_fields(m: &Map<String, Value>) -> Result<GenerationConfig, String> {
        let count = |k: &str| -> Result<Option<usize>, String> {
            match m.get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => v
                    .as_u64()
                    .map(|n| Some(n as usize))
                    .ok_or_else(|| format!("`{k}` must be a whole number, not {v}")),
            }
        };
        let early_stopping = match m.get("early_stopping") {
            None | Some(Value::Null) => None,
            Some(Value::Bool(true)) => Some(EarlyStopping::Done),
            Some(Value::Bool(false)) => Some(EarlyStopping::Heuristic),
            Some(Value::String(s)) if s == "never" => Some(EarlyStopping::Never),
            Some(v) => {
                return Err(format!(
                    "`early_stopping` must be true, false or \"never\", not {v}"
                ));
            }
        };
        let less_start = |n: Option<usize>| n.map(|n| n.saturating_sub(1));
        Ok(GenerationConfig {
            num_beams: count("num_beams")?,
            length_penalty: m.get("length_penalty").and_then(Value::as_f64),
            early_stopping,
            no_repeat_ngram_size: count("no_repeat_ngram_size")?,
            min_new_tokens: count("min_new_tokens")?.or(less_start(count("min_length")?)),
            max_new_tokens: count("max_new_tokens")?.or(less_start(count("max_length")?)),
        })
    }

    /// The file's JSON: the model's special tokens and the settings it has.
    pub fn to_json(&self, cfg: &BartConfig) -> String {
        let mut m = Map::new();
        m.insert("_from_model_config".into(), false.into());
        m.insert("bos_token_id".into(), cfg.bos_token_id.into());
        m.insert(
            "decoder_start_token_id".into(),
            cfg.decoder_start_token_id.into(),
        );
        m.insert("eos_token_id".into(), cfg.eos_token_id.into());
        m.insert("pad_token_id".into(), cfg.pad_token_id.into());
        for (k, v) in [
            ("forced_bos_token_id", cfg.forced_bos_token_id),
            ("forced_eos_token_id", cfg.forced_eos_token_id),
        ] {
            if let Some(v) = v {
                m.insert(k.into(), v.into());
            }
        }
        self.write_into(&mut m);
        let mut text = serde_json::to_string_pretty(&Value::Object(m)).unwrap_or_default();
        text.push('\n');
        text
    }

    /// Sets the decoding fields this config has in `m` (a `generation_config.json`).
    pub fn write_into(&self, m: &mut Map<String, Value>) {
        let mut put = |k: &str, v: Option<Value>| {
            if let Some(v) = v {
                m.insert(k.into(), v);
            }
        };
        put("num_beams", self.num_beams.map(|n| json!(n)));
        put("length_penalty", self.length_penalty.map(|x| json!(x)));
        put(
            "early_stopping",
            self.early_stopping.map(|e| match e {
                EarlyStopping::Heuristic => json!(false),
                EarlyStopping::Done => json!(true),
                EarlyStopping::Never => json!("never"),
            }),
        );
        put(
            "no_repeat_ngram_size",
            self.no_repeat_ngram_size.map(|n| json!(n)),
        );
        put("min_new_tokens", self.min_new_tokens.map(|n| json!(n)));
        put("max_new_tokens", self.max_new_tokens.map(|n| json!(n)));
    }

    /// `opts` with the model's settings wherever `opts` has `defaults`' value
    /// (the stage did not set it). Sampling keeps one beam: beam settings are
    /// for deterministic decoding.
    pub fn apply(&self, opts: &GenerateOptions, defaults: &GenerateOptions) -> GenerateOptions {
        let mut o = opts.clone();
        fn take<T: PartialEq + Copy>(field: &mut T, default: T, model: Option<T>) {
            if *field == default
                && let Some(m) = model
            {
                *field = m;
            }
        }
        if !o.sample {
            take(&mut o.num_beams, defaults.num_beams, self.num_beams);
        }
        take(
            &mut o.length_penalty,
            defaults.length_penalty,
            self.length_penalty,
        );
        take(
            &mut o.early_stopping,
            defaults.early_stopping,
            self.early_stopping,
        );
        take(
            &mut o.no_repeat_ngram,
            defaults.no_repeat_ngram,
            self.no_repeat_ngram_size,
        );
        take(
            &mut o.min_new_tokens,
            defaults.min_new_tokens,
            self.min_new_tokens,
        );
        take(
            &mut o.max_new_tokens,
            defaults.max_new_tokens,
            self.max_new_tokens,
        );
        o
    }

    /// The settings of `opts` as a model saved after decoding with them keeps them.
    pub fn of(opts: &GenerateOptions) -> GenerationConfig {
        GenerationConfig {
            num_beams: Some(opts.num_beams),
            length_penalty: Some(opts.length_penalty),
            early_stopping: Some(opts.early_stopping),
            no_repeat_ngram_size: Some(opts.no_repeat_ngram),
            min_new_tokens: Some(opts.min_new_tokens),
            max_new_tokens: Some(opts.max_new_tokens),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_as_transformers_writes_and_applies_where_the_stage_left_defaults() {
        // facebook/bart-large-cnn's generation_config.json, as published.
        let cnn = r#"{"bos_token_id": 0, "decoder_start_token_id": 2, "early_stopping": true,
            "eos_token_id": 2, "forced_bos_token_id": 0, "forced_eos_token_id": 2,
            "length_penalty": 2.0, "max_length": 142, "min_length": 56,
            "no_repeat_ngram_size": 3, "num_beams": 4, "pad_token_id": 1}"#;
        let m: Map<String, Value> = serde_json::from_str(cnn).unwrap();
        let g = GenerationConfig::from_fields(&m).unwrap();
        assert_eq!(g.num_beams, Some(4));
        assert_eq!(g.early_stopping, Some(EarlyStopping::Done));
        assert_eq!(g.min_new_tokens, Some(55));
        assert_eq!(g.max_new_tokens, Some(141));
        let defaults = GenerateOptions::greedy(150);
        let stage = GenerateOptions {
            length_penalty: 0.8,
            ..defaults.clone()
        };
        let o = g.apply(&stage, &defaults);
        assert_eq!(
            (
                o.num_beams,
                o.length_penalty,
                o.no_repeat_ngram,
                o.max_new_tokens
            ),
            (4, 0.8, 3, 141)
        );
        let sampled = GenerateOptions {
            sample: true,
            ..defaults.clone()
        };
        assert_eq!(g.apply(&sampled, &defaults).num_beams, 1);
        let bad: Map<String, Value> =
            serde_json::from_str(r#"{"early_stopping": "soon"}"#).unwrap();
        assert!(
            GenerationConfig::from_fields(&bad)
                .unwrap_err()
                .contains("early_stopping")
        );
        // What is written reads back the same.
        let cfg = BartConfig::small(100, 16, 1, 2);
        let text = GenerationConfig::of(&o).to_json(&cfg);
        let back: Map<String, Value> = serde_json::from_str(&text).unwrap();
        assert_eq!(
            GenerationConfig::from_fields(&back).unwrap(),
            GenerationConfig::of(&o)
        );
    }
}
