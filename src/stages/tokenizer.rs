//! The `tokenizer` stage kind: byte-level BPE as BART and RoBERTa use it
//! (GPT-2 byte-to-unicode pre-tokenizer, no prefix space, `<s> X </s>`
//! post-processing), trained with Hugging Face `tokenizers`, saved as a
//! standard `tokenizer.json`.

use std::path::{Path, PathBuf};

use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::processors::roberta::RobertaProcessing;
use tokenizers::{AddedToken, Tokenizer, TokenizerBuilder};

use super::dataset::read_products;
use super::{Stage, StageContext, param_i64, param_str, param_strs};
use crate::dsl::Metrics;

pub struct TokenizerStage;

/// Training settings.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    pub vocab_size: usize,
    pub min_frequency: u64,
    pub special_tokens: Vec<String>,
}

/// Trains a byte-level BPE tokenizer on `texts`.
pub fn train(texts: &[String], opts: &TrainOptions) -> Result<Tokenizer, String> {
    let specials: Vec<AddedToken> = opts
        .special_tokens
        .iter()
        .map(|t| AddedToken::from(t.clone(), true))
        .collect();
    let mut trainer = BpeTrainerBuilder::new()
        .show_progress(false)
        .vocab_size(opts.vocab_size)
        .min_frequency(opts.min_frequency)
        .special_tokens(specials)
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build();
    let mut tk = TokenizerBuilder::new()
        .with_model(BPE::default())
        .with_normalizer(None::<tokenizers::NormalizerWrapper>)
        .with_pre_tokenizer(Some(ByteLevel::default().add_prefix_space(false)))
        .with_post_processor(None::<tokenizers::PostProcessorWrapper>)
        .with_decoder(Some(ByteLevel::default()))
        .build()
        .map_err(|e| format!("cannot build tokenizer: {e}"))?;
    tk.train(&mut trainer, texts.iter())
        .map_err(|e| format!("training failed: {e}"))?;
    let mut tokenizer: Tokenizer = tk.into();
    // `<s> X </s>` like BART, when both tokens exist.
    let id = |t: &str| tokenizer.token_to_id(t);
    if let (Some(bos), Some(eos)) = (id("<s>"), id("</s>")) {
        let post = RobertaProcessing::new(("</s>".into(), eos), ("<s>".into(), bos))
            .add_prefix_space(false);
        tokenizer.with_post_processor(Some(post));
    }
    Ok(tokenizer)
}

/// The texts of the products in `dirs`, from the given fields, in order.
pub fn collect_texts(
    dirs: &[(String, PathBuf)],
    fields: &[String],
    max: usize,
) -> Result<Vec<String>, String> {
    let mut texts = Vec::new();
    for (id, dir) in dirs {
        for p in read_products(dir).map_err(|e| format!("input `{id}`: {e}"))? {
            for f in fields {
                match f.as_str() {
                    "reviews" => texts.extend(p.reviews.iter().cloned()),
                    "references" => texts.extend(p.references.iter().cloned()),
                    "candidates" => texts.extend(p.candidates.iter().map(|c| c.text.clone())),
                    other => return Err(format!("unknown field `{other}`")),
                }
            }
        }
    }
    if max > 0 {
        texts.truncate(max);
    }
    Ok(texts)
}

/// Share of `texts` that decode back to themselves exactly.
pub fn roundtrip_rate(tk: &Tokenizer, texts: &[String]) -> Result<f64, String> {
    if texts.is_empty() {
        return Ok(1.0);
    }
    let mut ok = 0;
    for t in texts {
        let enc = tk.encode(t.as_str(), false).map_err(|e| e.to_string())?;
        let back = tk.decode(enc.get_ids(), false).map_err(|e| e.to_string())?;
        if &back == t {
            ok += 1;
        }
    }
    Ok(ok as f64 / texts.len() as f64)
}

fn load(path: &Path) -> Result<Tokenizer, String> {
    let file = if path.is_dir() {
        path.join("tokenizer.json")
    } else {
        path.to_path_buf()
    };
    Tokenizer::from_file(&file).map_err(|e| format!("cannot load `{}`: {e}", file.display()))
}

impl Stage for TokenizerStage {
    fn run(&self, ctx: &mut StageContext<'_>) -> Result<Metrics, String> {
        let p = ctx.params;
        let fields = param_strs(p, "fields")?;
        let max = param_i64(p, "max-texts")?.max(0) as usize;
        let texts = collect_texts(ctx.inputs, &fields, max)?;
        let path = param_str(p, "path")?;
        let tokenizer = if !path.is_empty() {
            let _ = writeln!(ctx.log, "loading {path}");
            load(Path::new(path))?
        } else {
            if texts.is_empty() {
                return Err("nothing to train on: give dataset inputs, or `path` to an existing tokenizer.json".into());
            }
            let opts = TrainOptions {
                vocab_size: param_i64(p, "vocab-size")? as usize,
                min_frequency: param_i64(p, "min-frequency")? as u64,
                special_tokens: param_strs(p, "special-tokens")?,
            };
            let _ = writeln!(
                ctx.log,
                "training byte-level BPE (vocab {}) on {} texts",
                opts.vocab_size,
                texts.len()
            );
            train(&texts, &opts)?
        };
        tokenizer
            .save(ctx.output.join("tokenizer.json"), true)
            .map_err(|e| format!("cannot save tokenizer.json: {e}"))?;
        let sample: Vec<String> = texts.iter().take(500).cloned().collect();
        let mut m = Metrics::new();
        m.insert("vocab_size".into(), tokenizer.get_vocab_size(true) as f64);
        m.insert("texts".into(), texts.len() as f64);
        m.insert("roundtrip".into(), roundtrip_rate(&tokenizer, &sample)?);
        if !sample.is_empty() {
            let mut tokens = 0usize;
            let mut chars = 0usize;
            for t in &sample {
                tokens += tokenizer
                    .encode(t.as_str(), false)
                    .map_err(|e| e.to_string())?
                    .len();
                chars += t.chars().count();
            }
            m.insert(
                "chars_per_token".into(),
                chars as f64 / tokens.max(1) as f64,
            );
        }
        Ok(m)
    }
}
