//! The `sft` stage kind: supervised fine-tuning of the BART summarizer.
//!
//! Source = a product's reviews joined by spaces, `<s> ... </s>`, cut at
//! `max-source` tokens; target = `<s> summary </s>` as `transformers`'
//! BART tokenizer makes labels. Validation generates greedily and scores
//! ROUGE (with stemming, max over references) next to two baselines that
//! copy a review. The output is a Hugging Face model folder.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use tokenizers::Tokenizer;

use super::dataset::{Category, Product};
use super::{Stage, StageContext, param_bool, param_f64, param_i64, param_str};
use crate::dsl::Metrics;
use crate::ml::bart::train::{
    Checkpoints, Example, Observer, SftSettings, StepLog, Validation, mean_loss, train_sft,
};
use crate::ml::bart::{Bart, BartConfig, GenerateOptions, generate_batched, io};
use crate::rng::Rng;
use crate::text::rouge::{MultiRef, RougeScorer, RougeScores, mean};

pub struct SftStage;

/// A product turned into model text: its source and the summaries it teaches or is scored against.
#[derive(Debug, Clone)]
pub struct Pair {
    pub product: String,
    pub source: String,
    pub targets: Vec<String>,
    pub reviews: Vec<String>,
}

/// The summaries of `p` that `target` names.
pub fn targets_of(p: &Product, target: &str) -> Vec<String> {
    match target {
        "reference" => p.references.clone(),
        "preferred" => p
            .preferences
            .iter()
            .filter_map(|pref| p.candidates.get(pref.preferred))
            .map(|c| c.text.clone())
            .collect(),
        category => {
            let want = match category {
                "good" => Category::Good,
                "slightly-bad" => Category::SlightlyBad,
                _ => Category::VeryBad,
            };
            p.candidates
                .iter()
                .filter(|c| c.category == Some(want))
                .map(|c| c.text.clone())
                .collect()
        }
    }
}

/// The source text of a product: its reviews joined by spaces.
pub fn source_text(p: &Product) -> String {
    p.reviews
        .iter()
        .map(|r| r.trim())
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn pairs(products: &[Product], split: &str, target: &str) -> Vec<Pair> {
    products
        .iter()
        .filter(|p| p.split == split)
        .filter_map(|p| {
            let targets = targets_of(p, target);
            (!targets.is_empty()).then(|| Pair {
                product: p.id.clone(),
                source: source_text(p),
                targets,
                reviews: p.reviews.clone(),
            })
        })
        .collect()
}

/// Tokenizes with the special tokens and cuts to `max` tokens, keeping the final EOS.
pub fn encode(tk: &Tokenizer, text: &str, max: usize, eos: u32) -> Result<Vec<u32>, String> {
    let mut ids = tk
        .encode(text, true)
        .map_err(|e| format!("cannot tokenize: {e}"))?
        .get_ids()
        .to_vec();
    if ids.len() > max {
        ids.truncate(max - 1);
        ids.push(eos);
    }
    Ok(ids)
}

pub fn decode(tk: &Tokenizer, ids: &[u32]) -> String {
    tk.decode(ids, true).unwrap_or_default().trim().to_string()
}

/// Reads the tokenizer and the special ids BART needs from it.
pub fn load_tokenizer(path: &Path) -> Result<Tokenizer, String> {
    Tokenizer::from_file(path).map_err(|e| format!("cannot load `{}`: {e}", path.display()))
}

fn special(tk: &Tokenizer, token: &str) -> Result<u32, String> {
    tk.token_to_id(token).ok_or_else(|| {
        format!("the tokenizer has no `{token}` token, which BART needs (train it with the default special tokens)")
    })
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

/// Greedy summaries of `sources`, in batches.
pub fn summarize(
    model: &Bart,
    tk: &Tokenizer,
    sources: &[Vec<u32>],
    max_new: usize,
    device: &burn::tensor::Device,
) -> Vec<String> {
    let greedy = GenerateOptions::greedy(max_new);
    generate_batched(model, sources, &greedy, 16, &mut Rng::new(0), device)
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
    max_target: usize,
    batch: usize,
    device: burn::tensor::Device,
    started: Instant,
    first_step: Option<usize>,
}

impl Observer for StageObserver<'_, '_> {
    fn step(&mut self, log: &StepLog, total: usize) {
        let first = *self.first_step.get_or_insert(log.step - 1);
        let _ = writeln!(
            self.log,
            "{} step {}/{} epoch {} loss {:.4} lr {:.2e} |g| {:.2} ETA {}",
            super::progress_bar(log.step, total),
            log.step,
            total,
            log.epoch + 1,
            log.loss,
            log.lr,
            log.grad_norm,
            super::eta(self.started, log.step - first, total - log.step)
        );
    }

    fn validate(&mut self, model: &Bart, step: usize) -> Validation {
        let loss = mean_loss(model, self.val_examples, self.batch, &self.device);
        let sources: Vec<Vec<u32>> = self.val_examples.iter().map(|e| e.source.clone()).collect();
        let preds = summarize(model, self.tk, &sources, self.max_target, &self.device);
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

fn write_jsonl<T: serde::Serialize>(path: &Path, rows: &[T]) -> Result<(), String> {
    let mut out = String::new();
    for r in rows {
        out.push_str(&serde_json::to_string(r).map_err(|e| e.to_string())?);
        out.push('\n');
    }
    std::fs::write(path, out).map_err(|e| format!("cannot write `{}`: {e}", path.display()))
}

impl Stage for SftStage {
    fn run(&self, ctx: &mut StageContext<'_>) -> Result<Metrics, String> {
        let p = ctx.params;
        let target = param_str(p, "target")?.to_string();
        let pretrained = param_str(p, "pretrained")?.to_string();
        let max_source = param_i64(p, "max-source")? as usize;
        let max_target = param_i64(p, "max-target")? as usize;

        let (products, tokenizer_path) = super::datasets_and_tokenizer(ctx.inputs)?;
        let device = crate::ml::device(ctx.backend, ctx.seed as u64)?;

        // The model and its tokenizer.
        let (initial, tk) = if pretrained.is_empty() {
            let tk_path = tokenizer_path
                .ok_or("training from scratch needs a tokenizer input (a `tokenizer` stage)")?;
            let tk = load_tokenizer(&tk_path)?;
            let mut cfg = BartConfig::small(
                tk.get_vocab_size(true),
                param_i64(p, "d-model")? as usize,
                param_i64(p, "layers")? as usize,
                param_i64(p, "heads")? as usize,
            );
            let ffn = param_i64(p, "ffn")? as usize;
            if ffn > 0 {
                cfg.encoder_ffn_dim = ffn;
                cfg.decoder_ffn_dim = ffn;
            }
            cfg.dropout = param_f64(p, "dropout")?;
            cfg.pad_token_id = special(&tk, "<pad>")?;
            cfg.bos_token_id = special(&tk, "<s>")?;
            cfg.eos_token_id = special(&tk, "</s>")?;
            cfg.decoder_start_token_id = cfg.eos_token_id;
            cfg.max_position_embeddings = max_source.max(max_target + 1);
            cfg.check()
                .map_err(|e| format!("{e} (check `d-model` and `heads`)"))?;
            (Bart::new(&cfg, &device)?, tk)
        } else {
            let dir = PathBuf::from(&pretrained);
            let (model, report) = io::load(&dir, &device)?;
            if !report.unused.is_empty() {
                let _ = writeln!(
                    ctx.log,
                    "unused tensors in the checkpoint: {:?}",
                    report.unused
                );
            }
            let tk = if dir.join("tokenizer.json").is_file() {
                if tokenizer_path.is_some() {
                    let _ = writeln!(
                        ctx.log,
                        "using the checkpoint's own tokenizer.json, not the tokenizer input"
                    );
                }
                load_tokenizer(&dir.join("tokenizer.json"))?
            } else {
                load_tokenizer(&tokenizer_path.ok_or(format!(
                    "`{}` has no tokenizer.json and no tokenizer input is given",
                    dir.display()
                ))?)?
            };
            let positions = model.config.max_position_embeddings;
            if max_source > positions || max_target + 1 > positions {
                return Err(format!(
                    "max-source {max_source} / max-target {max_target} exceed the checkpoint's {positions} positions"
                ));
            }
            (model, tk)
        };
        let cfg = initial.config.clone();
        if tk.get_vocab_size(true) > cfg.vocab_size {
            return Err(format!(
                "the tokenizer has {} tokens but the model only {}",
                tk.get_vocab_size(true),
                cfg.vocab_size
            ));
        }

        // Examples: one per (product, target summary) in training; one per product in validation.
        let train_split = param_str(p, "train-split")?;
        let val_split = param_str(p, "validation-split")?;
        let train_pairs = pairs(&products, train_split, &target);
        let mut val_pairs = pairs(&products, val_split, &target);
        if train_pairs.is_empty() {
            return Err(format!(
                "no `{train_split}` products with a `{target}` summary in the inputs"
            ));
        }
        if val_pairs.is_empty() {
            return Err(format!(
                "no `{val_split}` products with a `{target}` summary: validation picks the model (set `validation-split`, or re-split the dataset with `validation-fraction`)"
            ));
        }
        let val_limit = param_i64(p, "val-products")? as usize;
        if val_limit > 0 {
            val_pairs.truncate(val_limit);
        }
        let eos = cfg.eos_token_id;
        let mut train = Vec::new();
        for pair in &train_pairs {
            let source = encode(&tk, &pair.source, max_source, eos)?;
            for t in &pair.targets {
                train.push(Example {
                    source: source.clone(),
                    target: encode(&tk, t, max_target, eos)?,
                });
            }
        }
        let val: Vec<Example> = val_pairs
            .iter()
            .map(|pair| {
                Ok(Example {
                    source: encode(&tk, &pair.source, max_source, eos)?,
                    target: encode(&tk, &pair.targets[0], max_target, eos)?,
                })
            })
            .collect::<Result<_, String>>()?;

        let mean_len = |f: &dyn Fn(&Example) -> usize| {
            train.iter().map(f).sum::<usize>() as f64 / train.len() as f64
        };
        let _ = writeln!(
            ctx.log,
            "mean tokens per example: source {:.1}, target {:.1}",
            mean_len(&|e| e.source.len()),
            mean_len(&|e| e.target.len())
        );
        let settings = SftSettings {
            epochs: param_i64(p, "epochs")? as usize,
            lr: param_f64(p, "lr")?,
            batch: param_i64(p, "batch")? as usize,
            grad_accum: param_i64(p, "grad-accum")? as usize,
            warmup: param_f64(p, "warmup")?,
            min_lr_ratio: param_f64(p, "min-lr-ratio")?,
            weight_decay: param_f64(p, "weight-decay")?,
            max_grad_norm: param_f64(p, "max-grad-norm")?,
            eval_every: param_i64(p, "eval-every")? as usize,
            checkpoint_every: param_i64(p, "checkpoint-every")? as usize,
            keep_best: param_bool(p, "keep-best")?,
            seed: ctx.seed as u64,
        };
        let _ = writeln!(
            ctx.log,
            "sft: {} parameters, {} training examples from {} products, {} validation products, {} steps",
            cfg.parameters(),
            train.len(),
            train_pairs.len(),
            val.len(),
            settings.steps_per_epoch(train.len()) * settings.epochs
        );

        // Baselines: copy the first review; copy a random review.
        let mut m = Metrics::new();
        let first: Vec<String> = val_pairs
            .iter()
            .map(|p| p.reviews.first().cloned().unwrap_or_default())
            .collect();
        let mut rng = Rng::new(ctx.seed as u64);
        let random: Vec<String> = val_pairs
            .iter()
            .map(|p| {
                let i = rng.below(p.reviews.len().max(1) as u64) as usize;
                p.reviews.get(i).cloned().unwrap_or_default()
            })
            .collect();
        put_rouge(
            &mut m,
            "baseline_first_review_",
            &rouge_against(&val_pairs, &first),
        );
        put_rouge(
            &mut m,
            "baseline_random_review_",
            &rouge_against(&val_pairs, &random),
        );
        let initial_val_loss = mean_loss(&initial, &val, settings.batch, &device);
        m.insert("val_loss_initial".into(), initial_val_loss);

        let mut observer = StageObserver {
            log: &mut *ctx.log,
            tk: &tk,
            val: &val_pairs,
            val_examples: &val,
            max_target,
            batch: settings.batch,
            device: device.clone(),
            started: Instant::now(),
            first_step: None,
        };
        let checkpoints = Checkpoints {
            dir: ctx.checkpoint_dir.to_path_buf(),
        };
        let trained = train_sft(
            initial,
            &train,
            &settings,
            &checkpoints,
            &mut observer,
            &device,
        )?;
        let progress = &trained.progress;
        let kept = trained.model;

        // Outputs.
        let model_dir = ctx.output.join("model");
        io::save(&kept, &model_dir)?;
        tk.save(model_dir.join("tokenizer.json"), true)
            .map_err(|e| format!("cannot save tokenizer.json: {e}"))?;
        write_jsonl(&ctx.output.join("train_curve.jsonl"), &progress.curve)?;
        write_jsonl(
            &ctx.output.join("validation_curve.jsonl"),
            &progress.validations,
        )?;
        let sources: Vec<Vec<u32>> = val.iter().map(|e| e.source.clone()).collect();
        let preds = summarize(&kept, &tk, &sources, max_target, &device);
        let rows: Vec<serde_json::Value> = val_pairs
            .iter()
            .zip(&preds)
            .map(|(p, s)| serde_json::json!({"product": p.product, "summary": s, "targets": p.targets}))
            .collect();
        write_jsonl(&ctx.output.join("validation_summaries.jsonl"), &rows)?;

        let best = progress
            .best_step
            .and_then(|b| progress.validations.iter().find(|v| v.step == b));
        let curve = &progress.curve;
        let head = curve.len().clamp(1, 10);
        let mean_loss_of =
            |xs: &[StepLog]| xs.iter().map(|s| s.loss).sum::<f64>() / xs.len().max(1) as f64;
        m.insert("parameters".into(), cfg.parameters() as f64);
        m.insert("train_examples".into(), train.len() as f64);
        m.insert("val_products".into(), val.len() as f64);
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
        if let Some(b) = best.filter(|_| settings.keep_best) {
            m.insert("best_step".into(), b.step as f64);
            m.insert("val_loss".into(), b.loss);
        } else if let Some(last) = progress.validations.last() {
            m.insert("val_loss".into(), last.loss);
        }
        if let Some(last) = progress.validations.last() {
            m.insert("val_loss_last".into(), last.loss);
        }
        put_rouge(&mut m, "val_", &rouge_against(&val_pairs, &preds));
        Ok(m)
    }
}
