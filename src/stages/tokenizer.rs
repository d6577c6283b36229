//! The `tokenizer` stage kind: byte-level BPE as BART and RoBERTa use it
//! (GPT-2 byte-to-unicode pre-tokenizer, no prefix space, `<s> X </s>`
//! post-processing), trained with Hugging Face `tokenizers`, saved as a
//! standard `tokenizer.json`.

use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::Deserialize;

use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::processors::roberta::RobertaProcessing;
use tokenizers::{AddedToken, Tokenizer, TokenizerBuilder};

use crate::stages::formats::dataset::{DatasetInput, Product, products_of};
use crate::stages::kind::{Kind, Metrics, StageContext};

/// The `tokenizer` kind.
pub struct TokenizerStage;

/// Training settings.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// Vocabulary size, specials and byte symbols included.
    pub vocab_size: usize,
    /// Pairs seen fewer times are not merged.
    pub min_frequency: u64,
    /// Added first, in order.
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

/// Which texts of a product a tokenizer trains on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Field {
    /// The reviews.
    Reviews,
    /// The human reference summaries.
    References,
    /// The candidate summaries.
    Candidates,
}

/// The texts of `products` from the given fields, in order.
pub fn collect_texts(products: &[Product], fields: &[Field], max: usize) -> Vec<String> {
    let mut texts = Vec::new();
    for p in products {
        for f in fields {
            match f {
                Field::Reviews => texts.extend(p.reviews.iter().cloned()),
                Field::References => texts.extend(p.references.iter().cloned()),
                Field::Candidates => texts.extend(p.candidates.iter().map(|c| c.text.clone())),
            }
        }
    }
    if max > 0 {
        texts.truncate(max);
    }
    texts
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

/// The parameters of `plugins/builtin/tokenizer.kdl`.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct Params {
    /// An existing tokenizer.json (or a folder holding one).
    pub path: PathBuf,
    /// Vocabulary size, specials and byte symbols included.
    #[schemars(range(min = 260, max = 1_000_000))]
    pub vocab_size: i64,
    /// Pairs seen fewer times are not merged.
    #[schemars(range(min = 0))]
    pub min_frequency: i64,
    /// Added first, in order.
    pub special_tokens: Vec<String>,
    /// Which texts to train on.
    pub fields: Vec<Field>,
    /// Train on at most this many texts (0: all).
    #[schemars(range(min = 0))]
    pub max_texts: i64,
}

impl Default for Params {
    fn default() -> Params {
        Params {
            path: PathBuf::new(),
            vocab_size: 8000,
            min_frequency: 2,
            special_tokens: ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
                .map(String::from)
                .to_vec(),
            fields: vec![Field::Reviews, Field::References, Field::Candidates],
            max_texts: 0,
        }
    }
}

/// The inputs of a tokenizer stage.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Inputs {
    /// Datasets whose texts it trains on.
    pub datasets: Vec<DatasetInput>,
}

impl Kind for TokenizerStage {
    type Params = Params;
    type Inputs = Inputs;

    fn run(
        &self,
        p: &Params,
        inputs: &Inputs,
        ctx: &mut StageContext<'_>,
    ) -> Result<Metrics, String> {
        let products = products_of(&inputs.datasets)?;
        let texts = collect_texts(&products, &p.fields, p.max_texts.max(0) as usize);
        let tokenizer = if !p.path.as_os_str().is_empty() {
            let _ = writeln!(ctx.log, "loading {}", p.path.display());
            load(&p.path)?
        } else {
            if texts.is_empty() {
                return Err("nothing to train on: give dataset inputs, or `path` to an existing tokenizer.json".into());
            }
            let opts = TrainOptions {
                vocab_size: p.vocab_size as usize,
                min_frequency: p.min_frequency as u64,
                special_tokens: p.special_tokens.clone(),
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
        metrics(&tokenizer, &texts)
    }
}

/// Vocabulary size, texts, round-trip rate and characters per token on a sample.
fn metrics(tokenizer: &Tokenizer, texts: &[String]) -> Result<Metrics, String> {
    let sample: Vec<String> = texts.iter().take(500).cloned().collect();
    let mut m = Metrics::new();
    m.insert("vocab_size".into(), tokenizer.get_vocab_size(true) as f64);
    m.insert("texts".into(), texts.len() as f64);
    m.insert("roundtrip".into(), roundtrip_rate(tokenizer, &sample)?);
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
