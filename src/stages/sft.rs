//! The `sft` stage kind: supervised fine-tuning of the summarizer, BART or
//! a causal model of the Llama family (`ml::lm` is the seam: nothing here
//! knows the family).
//!
//! BART: source = a product's reviews joined by spaces, `<s> ... </s>`, cut
//! at `max-source` tokens; target = `<s> summary </s>` as `transformers`'
//! BART tokenizer makes labels. A causal model: source = the `prompt`
//! rendered (through the chat template when the tokenizer has one), target
//! = the summary and EOS, loss on the summary only (TRL's default).
//! Validation generates and scores ROUGE (with stemming, max over
//! references) next to two baselines that copy a review. The output is a
//! Hugging Face model folder.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use schemars::JsonSchema;
use serde::Deserialize;
use tokenizers::Tokenizer;

use crate::ml::bart::generation_config::GenerationConfig;
use crate::ml::causal::Sizes;
use crate::ml::decoding::GenerateOptions;
use crate::ml::lm::{self, LanguageModel, Scratch, WithModel};
use crate::ml::peft::Base;
use crate::ml::precision::Precision;
use crate::ml::train::{
    Checkpoints, Example, Observer, SftSettings, StepLog, Trained, Validation, mean_loss, train_sft,
};
use crate::rng::Rng;
use crate::stages::formats::adapter::LoraParams;
use crate::stages::formats::dataset::{DatasetInput, Product, Target, products_of};
use crate::stages::formats::model::{Decoding, decode, save_model_folder};
use crate::stages::formats::prompt::Prompter;
use crate::stages::formats::tokenizer::{self, TokenizerInput, special};
use crate::stages::kind::{Kind, Metrics, StageContext, eta, progress_bar, write_jsonl};
use crate::text::rouge::{MultiRef, RougeScorer, RougeScores, mean};

/// The `sft` kind.
pub struct SftStage;

/// The parameters of `plugins/builtin/sft.kdl`.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct Params {
    /// What the model learns to write.
    pub target: Target,
    /// A Hugging Face folder to start from (empty: from scratch); its config.json decides the architecture.
    pub pretrained: PathBuf,
    /// From scratch: `bart`, or a causal `llama`, `qwen2` or `qwen3`.
    pub architecture: Architecture,
    /// From scratch: model width.
    #[schemars(range(min = 8, max = 65536))]
    pub d_model: i64,
    /// From scratch: encoder and decoder layers.
    #[schemars(range(min = 1, max = 1024))]
    pub layers: i64,
    /// From scratch: attention heads.
    #[schemars(range(min = 1, max = 1024))]
    pub heads: i64,
    /// From scratch, causal: key/value heads (0: as many as `heads`).
    #[schemars(range(min = 0, max = 1024))]
    pub kv_heads: i64,
    /// From scratch: feed-forward width (0: 4 x d-model).
    #[schemars(range(min = 0, max = 1048576))]
    pub ffn: i64,
    /// From scratch: dropout.
    #[schemars(range(min = 0, max = 0.9))]
    pub dropout: f64,
    /// Passes over the training examples.
    #[schemars(range(min = 1, max = 1000000))]
    pub epochs: i64,
    /// Peak learning rate.
    #[schemars(range(min = 0))]
    pub lr: f64,
    /// Examples per forward pass.
    #[schemars(range(min = 1, max = 1000000))]
    pub batch: i64,
    /// Forward passes per optimizer step.
    #[schemars(range(min = 1, max = 1000000))]
    pub grad_accum: i64,
    /// Share of all steps in linear warm-up.
    #[schemars(range(min = 0, max = 1))]
    pub warmup: f64,
    /// The cosine decays to lr x this.
    #[schemars(range(min = 0, max = 1))]
    pub min_lr_ratio: f64,
    /// AdamW weight decay.
    #[schemars(range(min = 0))]
    pub weight_decay: f64,
    /// Global gradient-norm clip (0: off).
    #[schemars(range(min = 0))]
    pub max_grad_norm: f64,
    /// Arithmetic of the forward and backward passes.
    pub precision: Precision,
    /// What the model reads: a Jinja template over `reviews` and `product` (empty: the model's default).
    pub prompt: String,
    /// Source tokens kept.
    #[schemars(range(min = 8, max = 1000000))]
    pub max_source: i64,
    /// Target tokens kept; also the validation generation limit.
    #[schemars(range(min = 4, max = 1000000))]
    pub max_target: i64,
    /// Validate every N optimizer steps (0: once per epoch).
    #[schemars(range(min = 0))]
    pub eval_every: i64,
    /// Validate on the first N validation products (0: all).
    #[schemars(range(min = 0))]
    pub val_products: i64,
    /// Keep the best validation ROUGE-L model (else the last).
    pub keep_best: bool,
    /// Checkpoint every N steps (0: only at validations).
    #[schemars(range(min = 0))]
    pub checkpoint_every: i64,
    /// Split trained on.
    pub train_split: String,
    /// Split validated on.
    pub validation_split: String,
    /// How validation summaries are decoded (saved with the model as its default).
    #[serde(flatten)]
    pub decoding: Decoding,
    /// LoRA and activation checkpointing.
    #[serde(flatten)]
    pub lora: LoraParams,
}

impl Default for Params {
    fn default() -> Params {
        Params {
            target: Target::Preferred,
            pretrained: PathBuf::new(),
            architecture: Architecture::Bart,
            d_model: 128,
            layers: 2,
            heads: 4,
            kv_heads: 0,
            ffn: 0,
            dropout: 0.1,
            epochs: 4,
            lr: 0.0005,
            batch: 8,
            grad_accum: 1,
            warmup: 0.06,
            min_lr_ratio: 0.0,
            weight_decay: 0.05,
            max_grad_norm: 1.0,
            precision: Precision::F32,
            prompt: String::new(),
            max_source: 512,
            max_target: 128,
            eval_every: 0,
            val_products: 0,
            keep_best: true,
            checkpoint_every: 50,
            train_split: "train".into(),
            validation_split: "validation".into(),
            decoding: Decoding::default(),
            lora: LoraParams::default(),
        }
    }
}

impl Params {
    fn settings(&self, seed: i64) -> SftSettings {
        SftSettings {
            epochs: self.epochs as usize,
            lr: self.lr,
            batch: self.batch as usize,
            grad_accum: self.grad_accum as usize,
            warmup: self.warmup,
            min_lr_ratio: self.min_lr_ratio,
            weight_decay: self.weight_decay,
            max_grad_norm: self.max_grad_norm,
            eval_every: self.eval_every as usize,
            checkpoint_every: self.checkpoint_every as usize,
            keep_best: self.keep_best,
            seed: seed as u64,
            precision: self.precision,
        }
    }
}

/// What a model trained from scratch is built as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Architecture {
    /// BART, encoder-decoder.
    Bart,
    /// Llama (plain pre-norm decoder).
    Llama,
    /// Qwen2 (biases on q, k, v).
    Qwen2,
    /// Qwen3 (q/k norms).
    Qwen3,
}

impl Architecture {
    /// The name `ml::lm` builds it by.
    pub fn name(self) -> &'static str {
        match self {
            Architecture::Bart => "bart",
            Architecture::Llama => "llama",
            Architecture::Qwen2 => "qwen2",
            Architecture::Qwen3 => "qwen3",
        }
    }
}

/// The inputs of an sft stage.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Inputs {
    /// Datasets with the training and validation products.
    pub datasets: Vec<DatasetInput>,
    /// The tokenizer of a model trained from scratch.
    pub tokenizer: Option<TokenizerInput>,
}

/// A product turned into model text: its source and the summaries it teaches or is scored against.
#[derive(Debug, Clone)]
pub struct Pair {
    /// The product's id.
    pub product: String,
    /// The summaries `target` names.
    pub targets: Vec<String>,
    /// Its reviews.
    pub reviews: Vec<String>,
}

/// The pairs of the products in `split` that have a `target` summary.
pub fn pairs(products: &[Product], split: &str, target: Target) -> Vec<Pair> {
    products
        .iter()
        .filter(|p| p.split == split)
        .filter_map(|p| {
            let targets = p.targets(target);
            (!targets.is_empty()).then(|| Pair {
                product: p.id.clone(),
                targets,
                reviews: p.reviews.clone(),
            })
        })
        .collect()
}

/// ROUGE of `predictions` against each pair's targets (max over references).
pub fn rouge_against(pairs: &[Pair], predictions: &[String]) -> RougeScores {
    let scorer = RougeScorer::new(true);
    let all: Vec<RougeScores> = pairs
        .iter()
        .zip(predictions)
        .map(|(p, pred)| scorer.score_multi(&p.targets, pred, MultiRef::Max))
        .collect();
    mean(&all)
}

fn put_rouge(m: &mut Metrics, prefix: &str, r: &RougeScores) {
    m.insert(format!("{prefix}rouge1"), r.rouge1.fmeasure);
    m.insert(format!("{prefix}rouge2"), r.rouge2.fmeasure);
    m.insert(format!("{prefix}rougeL"), r.rouge_l.fmeasure);
}

/// Summaries of `sources` (greedy, or beam search), in batches.
pub fn summarize<M: LanguageModel>(
    model: &M,
    tk: &Tokenizer,
    sources: &[Vec<u32>],
    opts: &GenerateOptions,
    device: &burn::tensor::Device,
) -> Vec<String> {
    model
        .generate(sources, opts, 16, &mut Rng::new(0), device)
        .iter()
        .map(|g| decode(tk, &g.tokens))
        .collect()
}

/// Writes one progress line per step (the live display shows the last) and scores validations.
struct StageObserver<'a, 'b> {
    log: &'a mut dyn Write,
    tk: &'b Tokenizer,
    val: &'b [Pair],
    val_examples: &'b [Example],
    decoding: GenerateOptions,
    batch: usize,
    device: burn::tensor::Device,
    started: Instant,
    first_step: Option<usize>,
}

impl<M: LanguageModel> Observer<M> for StageObserver<'_, '_> {
    fn step(&mut self, log: &StepLog, total: usize) {
        let first = *self.first_step.get_or_insert(log.step - 1);
        let _ = writeln!(
            self.log,
            "{} step {}/{} epoch {} loss {:.4} lr {:.2e} |g| {:.2} ETA {}",
            progress_bar(log.step, total),
            log.step,
            total,
            log.epoch + 1,
            log.loss,
            log.lr,
            log.grad_norm,
            eta(self.started, log.step - first, total - log.step)
        );
    }

    fn validate(&mut self, model: &M, step: usize) -> Validation {
        let loss = mean_loss(model, self.val_examples, self.batch, &self.device);
        let sources: Vec<Vec<u32>> = self.val_examples.iter().map(|e| e.source.clone()).collect();
        let preds = summarize(model, self.tk, &sources, &self.decoding, &self.device);
        let r = rouge_against(self.val, &preds);
        let _ = writeln!(
            self.log,
            "validation at step {step}: loss {loss:.4} ROUGE-1/2/L {:.4}/{:.4}/{:.4}",
            r.rouge1.fmeasure, r.rouge2.fmeasure, r.rouge_l.fmeasure
        );
        Validation {
            step,
            loss,
            score: r.rouge_l.fmeasure,
            extra: [
                ("rouge1".to_string(), r.rouge1.fmeasure),
                ("rouge2".to_string(), r.rouge2.fmeasure),
                ("rougeL".to_string(), r.rouge_l.fmeasure),
            ]
            .into(),
        }
    }

    fn checkpointed(&mut self, step: usize) {
        let _ = writeln!(self.log, "checkpoint at step {step}");
    }

    fn resumed(&mut self, step: usize) {
        let _ = writeln!(self.log, "resuming from the checkpoint at step {step}");
    }
}

/// The tokenizer a model trains with, and the folder it came from (whose
/// `tokenizer_config.json` may hold a chat template): the checkpoint's own,
/// else the input's.
fn tokenizer_of(
    p: &Params,
    input: Option<&TokenizerInput>,
    log: &mut dyn Write,
) -> Result<(Tokenizer, PathBuf), String> {
    let dir = &p.pretrained;
    if !dir.as_os_str().is_empty() && dir.join("tokenizer.json").is_file() {
        if input.is_some() {
            let _ = writeln!(
                log,
                "using the checkpoint's own tokenizer.json, not the tokenizer input"
            );
        }
        return Ok((tokenizer::load(&dir.join("tokenizer.json"))?, dir.clone()));
    }
    let input = input.ok_or_else(|| {
        if dir.as_os_str().is_empty() {
            "training from scratch needs a tokenizer input (a `tokenizer` stage)".to_string()
        } else {
            format!(
                "`{}` has no tokenizer.json and no tokenizer input is given",
                dir.display()
            )
        }
    })?;
    Ok((input.load()?, input.path.clone()))
}

/// A model from scratch, sized by the parameters, for the tokenizer.
fn scratch_spec(p: &Params, tk: &Tokenizer) -> Result<Scratch, String> {
    let bart = p.architecture == Architecture::Bart;
    let eos = special(tk, "</s>")?;
    let (d, heads) = (p.d_model as usize, p.heads as usize);
    let (source, target) = (p.max_source as usize, p.max_target as usize);
    let sizes = Sizes {
        vocab: tk.get_vocab_size(true),
        hidden: d,
        intermediate: if p.ffn > 0 { p.ffn as usize } else { 4 * d },
        layers: p.layers as usize,
        heads,
        kv_heads: if p.kv_heads > 0 {
            p.kv_heads as usize
        } else {
            heads
        },
        // BART positions source and target apart; a causal model, both in one sequence.
        max_positions: if bart {
            source.max(target + 1)
        } else {
            source + target
        },
        bos: Some(special(tk, "<s>")?),
        eos,
        pad: Some(special(tk, "<pad>")?),
    };
    Ok(Scratch {
        architecture: p.architecture.name().to_string(),
        sizes,
        dropout: p.dropout,
    })
}

/// Training examples (one per product and target summary) and validation ones (one per product).
struct Data {
    val_pairs: Vec<Pair>,
    train: Vec<Example>,
    train_products: usize,
    val: Vec<Example>,
    /// Sources whose reviews were cut to fit `max-source`.
    cut: usize,
}

fn examples(
    p: &Params,
    products: &[Product],
    tk: &Tokenizer,
    prompter: &Prompter,
) -> Result<Data, String> {
    let train_pairs = pairs(products, &p.train_split, p.target);
    let mut val_pairs = pairs(products, &p.validation_split, p.target);
    let target = p.target.name();
    if train_pairs.is_empty() {
        return Err(format!(
            "no `{}` products with a `{target}` summary in the inputs",
            p.train_split
        ));
    }
    if val_pairs.is_empty() {
        return Err(format!(
            "no `{}` products with a `{target}` summary: validation picks the model (set `validation-split`, or re-split the dataset with `validation-fraction`)",
            p.validation_split
        ));
    }
    if p.val_products > 0 {
        val_pairs.truncate(p.val_products as usize);
    }
    let max_target = p.max_target as usize;
    let mut cut = 0;
    let mut source_of = |pair: &Pair| -> Result<Vec<u32>, String> {
        let s = prompter.source_of(tk, &pair.reviews, &pair.product)?;
        cut += usize::from(s.cut);
        Ok(s.ids)
    };
    let mut train = Vec::new();
    for pair in &train_pairs {
        let source = source_of(pair)?;
        for t in &pair.targets {
            train.push(Example {
                source: source.clone(),
                target: prompter.target(tk, t, max_target)?,
            });
        }
    }
    let mut val = Vec::with_capacity(val_pairs.len());
    for pair in &val_pairs {
        val.push(Example {
            source: source_of(pair)?,
            target: prompter.target(tk, &pair.targets[0], max_target)?,
        });
    }
    Ok(Data {
        val_pairs,
        train,
        train_products: train_pairs.len(),
        val,
        cut,
    })
}

/// ROUGE of copying the first review, and a random one.
fn baselines(val_pairs: &[Pair], seed: i64, m: &mut Metrics) {
    let first: Vec<String> = val_pairs
        .iter()
        .map(|p| p.reviews.first().cloned().unwrap_or_default())
        .collect();
    let mut rng = Rng::new(seed as u64);
    let random: Vec<String> = val_pairs
        .iter()
        .map(|p| {
            let i = rng.below(p.reviews.len().max(1) as u64) as usize;
            p.reviews.get(i).cloned().unwrap_or_default()
        })
        .collect();
    put_rouge(
        m,
        "baseline_first_review_",
        &rouge_against(val_pairs, &first),
    );
    put_rouge(
        m,
        "baseline_random_review_",
        &rouge_against(val_pairs, &random),
    );
}

/// The model folder, curves and validation summaries; returns the summaries.
#[allow(clippy::too_many_arguments)]
fn write_outputs<M: LanguageModel>(
    out: &Path,
    kept: &M,
    tk: &Tokenizer,
    tokenizer_dir: &Path,
    trained: &Trained<M>,
    data: &Data,
    decoding: &GenerateOptions,
    device: &burn::tensor::Device,
    adapter_base: Option<&Base>,
) -> Result<Vec<String>, String> {
    save_model_folder(&out.join("model"), kept, tk, tokenizer_dir, adapter_base)?;
    write_jsonl(&out.join("train_curve.jsonl"), &trained.progress.curve)?;
    write_jsonl(
        &out.join("validation_curve.jsonl"),
        &trained.progress.validations,
    )?;
    let sources: Vec<Vec<u32>> = data.val.iter().map(|e| e.source.clone()).collect();
    let preds = summarize(kept, tk, &sources, decoding, device);
    let rows: Vec<serde_json::Value> = data
        .val_pairs
        .iter()
        .zip(&preds)
        .map(|(p, s)| serde_json::json!({"product": p.product, "summary": s, "targets": p.targets}))
        .collect();
    write_jsonl(&out.join("validation_summaries.jsonl"), &rows)?;
    Ok(preds)
}

/// Sizes, losses and the kept model's validation scores.
fn final_metrics<M>(
    m: &mut Metrics,
    parameters: usize,
    trained: &Trained<M>,
    data: &Data,
    keep_best: bool,
) {
    let progress = &trained.progress;
    let best = progress
        .best_step
        .and_then(|b| progress.validations.iter().find(|v| v.step == b));
    let curve = &progress.curve;
    let head = curve.len().clamp(1, 10);
    let mean_loss_of =
        |xs: &[StepLog]| xs.iter().map(|s| s.loss).sum::<f64>() / xs.len().max(1) as f64;
    m.insert("parameters".into(), parameters as f64);
    m.insert("train_examples".into(), data.train.len() as f64);
    m.insert("prompts_cut".into(), data.cut as f64);
    m.insert("val_products".into(), data.val.len() as f64);
    m.insert("steps".into(), curve.len() as f64);
    m.insert(
        "train_tokens".into(),
        curve.iter().map(|s| s.tokens).sum::<usize>() as f64,
    );
    m.insert("train_loss_first".into(), mean_loss_of(&curve[..head]));
    m.insert(
        "train_loss_last".into(),
        mean_loss_of(&curve[curve.len() - head..]),
    );
    if let Some(b) = best.filter(|_| keep_best) {
        m.insert("best_step".into(), b.step as f64);
        m.insert("val_loss".into(), b.loss);
    } else if let Some(last) = progress.validations.last() {
        m.insert("val_loss".into(), last.loss);
    }
    if let Some(last) = progress.validations.last() {
        m.insert("val_loss_last".into(), last.loss);
    }
}

impl Kind for SftStage {
    type Params = Params;
    type Inputs = Inputs;

    fn check(&self, p: &Params) -> Result<(), String> {
        p.decoding
            .options(GenerateOptions::greedy(p.max_target as usize))
            .check()?;
        p.lora.check(p.precision)?;
        if p.lora.is_on() && !p.lora.merge && p.pretrained.as_os_str().is_empty() {
            return Err("LoRA adapts a pretrained model, but `pretrained` is empty: an adapter of a model trained from scratch would have no base to load onto (set `pretrained`, or `merge #true`)".into());
        }
        p.lora.check_model(&p.pretrained)?;
        if p.pretrained.as_os_str().is_empty() {
            if p.d_model % p.heads != 0 {
                return Err(format!(
                    "`d-model` {} is not divisible by `heads` {}",
                    p.d_model, p.heads
                ));
            }
            if p.kv_heads > 0 && p.heads % p.kv_heads != 0 {
                return Err(format!(
                    "`heads` {} is not a multiple of `kv-heads` {}",
                    p.heads, p.kv_heads
                ));
            }
        }
        Ok(())
    }

    fn run(
        &self,
        p: &Params,
        inputs: &Inputs,
        ctx: &mut StageContext<'_>,
    ) -> Result<Metrics, String> {
        let products = products_of(&inputs.datasets)?;
        let device = crate::ml::device(ctx.backend, ctx.seed as u64)?;
        let (tk, tokenizer_dir) = tokenizer_of(p, inputs.tokenizer.as_ref(), &mut *ctx.log)?;
        let work = Sft {
            p,
            ctx,
            products: &products,
            tk,
            tokenizer_dir,
            device: device.clone(),
        };
        if p.pretrained.as_os_str().is_empty() {
            let spec = scratch_spec(p, &work.tk)?;
            lm::create(&spec, &device, work)?
        } else {
            lm::load(&p.pretrained, &device, work)?
        }
    }
}

/// One sft run, generic over the model's family.
struct Sft<'a, 'c> {
    p: &'a Params,
    ctx: &'a mut StageContext<'c>,
    products: &'a [Product],
    tk: Tokenizer,
    tokenizer_dir: PathBuf,
    device: burn::tensor::Device,
}

impl WithModel for Sft<'_, '_> {
    type Output = Result<Metrics, String>;

    fn run<M: LanguageModel>(self, initial: M, unused: Vec<String>) -> Result<Metrics, String> {
        let Sft {
            p,
            ctx,
            products,
            tk,
            tokenizer_dir,
            device,
        } = self;
        if !unused.is_empty() {
            let _ = writeln!(ctx.log, "unused tensors in the checkpoint: {unused:?}");
        }
        check_fits(p, &initial, &tk)?;
        let initial = p
            .lora
            .prepare(initial, ctx.seed as u64, &device, &mut *ctx.log)?;
        let adapter_base = p.lora.base(|| Base::of_folder(&p.pretrained))?;
        let prompter = Prompter::for_model(&p.prompt, &tokenizer_dir, &initial, p.max_source)?;
        let data = examples(p, products, &tk, &prompter)?;
        let settings = p.settings(ctx.seed);
        let parameters = initial.parameters();
        log_sizes(
            ctx.log,
            initial.architecture(),
            parameters,
            &data,
            &settings,
        );

        let mut m = Metrics::new();
        baselines(&data.val_pairs, ctx.seed, &mut m);
        m.insert(
            "val_loss_initial".into(),
            mean_loss(&initial, &data.val, settings.batch, &device),
        );
        let greedy = |p: &Params| GenerateOptions::greedy(p.max_target as usize);
        let decoding = p
            .decoding
            .options_for(greedy(p), &greedy(&Params::default()), &initial);
        let mut observer = StageObserver {
            log: &mut *ctx.log,
            tk: &tk,
            val: &data.val_pairs,
            val_examples: &data.val,
            decoding: decoding.clone(),
            batch: settings.batch,
            device: device.clone(),
            started: Instant::now(),
            first_step: None,
        };
        let checkpoints = Checkpoints {
            dir: ctx.checkpoint_dir.to_path_buf(),
        };
        let mut trained = train_sft(
            initial,
            &data.train,
            &settings,
            &checkpoints,
            &mut observer,
            &device,
        )?;
        // The model's default decoding is how it was validated (its length limit is eval's).
        trained.model.set_generation(GenerationConfig {
            max_new_tokens: None,
            ..GenerationConfig::of(&decoding)
        });
        let preds = write_outputs(
            ctx.output,
            &trained.model,
            &tk,
            &tokenizer_dir,
            &trained,
            &data,
            &decoding,
            &device,
            adapter_base.as_ref(),
        )?;
        final_metrics(&mut m, parameters, &trained, &data, settings.keep_best);
        put_rouge(&mut m, "val_", &rouge_against(&data.val_pairs, &preds));
        Ok(m)
    }
}

/// The tokenizer fits the model, and the lengths fit its positions.
fn check_fits<M: LanguageModel>(p: &Params, model: &M, tk: &Tokenizer) -> Result<(), String> {
    if tk.get_vocab_size(true) > model.vocab_size() {
        return Err(format!(
            "the tokenizer has {} tokens but the model only {}",
            tk.get_vocab_size(true),
            model.vocab_size()
        ));
    }
    let positions = model.max_positions();
    let (max_source, max_target) = (p.max_source as usize, p.max_target as usize);
    let too_long = if model.shares_positions() {
        max_source + max_target > positions
    } else {
        max_source > positions || max_target + 1 > positions
    };
    if too_long {
        return Err(format!(
            "max-source {max_source} / max-target {max_target} exceed the checkpoint's {positions} positions"
        ));
    }
    Ok(())
}

fn log_sizes(
    log: &mut dyn Write,
    architecture: &str,
    parameters: usize,
    data: &Data,
    settings: &SftSettings,
) {
    let train = &data.train;
    let mean_len = |f: &dyn Fn(&Example) -> usize| {
        train.iter().map(f).sum::<usize>() as f64 / train.len() as f64
    };
    let _ = writeln!(
        log,
        "mean tokens per example: source {:.1}, target {:.1}",
        mean_len(&|e| e.source.len()),
        mean_len(&|e| e.target.len())
    );
    let _ = writeln!(
        log,
        "sft ({architecture}): {parameters} parameters, {} training examples from {} products, {} validation products, {} steps",
        train.len(),
        data.train_products,
        data.val.len(),
        settings.steps_per_epoch(train.len()) * settings.epochs
    );
}
