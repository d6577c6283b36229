//! The `reward-model` stage kind: the paper's domain-knowledge φ, its
//! baselines, and a text-reading reward model, trained and evaluated on the
//! same preference pairs.
//!
//! Pairs come from the input datasets: `train` products give training pairs,
//! `validation` products give the evaluation pairs (always human preferences).
//! - `domain-knowledge`: φ over the seven scores / 5, Bradley-Terry loss.
//! - `naive-mean`: the mean of the seven scores; nothing is trained.
//! - `synthetic`: φ trained on pairs ordered by the prompt category that
//!   produced each candidate (good > slightly-bad > very-bad).
//! - `text`: a transformer encoder over the summary and the reviews (needs a
//!   tokenizer input).
//!
//! Pairs whose two summaries are the same text are skipped and counted; a
//! candidate without scores, or with a non-finite score, is an error for the
//! score-reading methods.

use std::fmt::Write as _;
use std::path::Path;

use burn::module::Module;
use schemars::JsonSchema;
use serde::Deserialize;

pub use crate::stages::formats::dataset::features;
pub use crate::stages::formats::reward::{RewardSpec, load_phi, load_text_rm, read_spec};

use crate::ml::bt::{PairwiseLoop, bt_loss_values, pairwise_accuracy};
use crate::ml::causal::CausalConfig;
use crate::ml::causal::reward::{CausalRm, train_causal_rm};
use crate::ml::phi::{FeaturePairs, PhiTrainConfig, train_phi};
use crate::ml::text_rm::{TextRmConfig, TextTrainConfig, pair_sequence, train_text_rm};
use crate::rng::Rng;
use crate::stages::formats::dataset::{
    Candidate, DOMAIN_KEYS, DatasetInput, PairRef, Product, collect_pairs, products_of,
};
use crate::stages::formats::model::copy_tokenizer_files;
use crate::stages::formats::reward::{CausalReader, CausalRmSpec};
use crate::stages::formats::tokenizer::TokenizerInput;
use crate::stages::kind::{Kind, Metrics, StageContext};

/// The `reward-model` kind.
pub struct RewardStage;

/// Token sequences of the preferred and of the rejected side of each pair.
type SequencePairs = (Vec<Vec<u32>>, Vec<Vec<u32>>);

/// The plain mean of the seven scores, compared exactly (scores have at most
/// a few decimals: summing hundredths as integers keeps ties ties).
pub fn naive_mean_key(product: &Product, c: &Candidate) -> Result<f64, String> {
    let f = features(product, c, 100.0)?;
    Ok(f.iter().map(|x| x.round() as i64).sum::<i64>() as f64)
}

fn feature_pairs(products: &[Product], pairs: &[PairRef]) -> Result<FeaturePairs, String> {
    let mut fp = FeaturePairs::default();
    for pr in pairs {
        let p = &products[pr.product];
        fp.preferred
            .push(features(p, &p.candidates[pr.preferred], 0.2)?);
        fp.rejected
            .push(features(p, &p.candidates[pr.rejected], 0.2)?);
    }
    Ok(fp)
}

fn default_if_zero(v: f64, d: f64) -> f64 {
    if v == 0.0 { d } else { v }
}

/// What reads a pair and how it is trained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// φ over the seven domain scores, trained on human preferences.
    #[default]
    DomainKnowledge,
    /// The mean of the seven scores; nothing is trained.
    NaiveMean,
    /// φ trained on pairs ordered by the prompt category.
    Synthetic,
    /// A transformer encoder over the summary and the reviews.
    Text,
}

impl Method {
    /// The name `reward.json` records.
    pub fn name(self) -> &'static str {
        match self {
            Method::DomainKnowledge => "domain-knowledge",
            Method::NaiveMean => "naive-mean",
            Method::Synthetic => "synthetic",
            Method::Text => "text",
        }
    }
}

/// The parameters of `plugins/builtin/reward-model.kdl`.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct Params {
    /// What reads the pair and how it is trained.
    pub method: Method,
    /// φ's hidden layer sizes; empty for a linear model.
    #[schemars(inner(range(min = 1, max = 65536)))]
    pub hidden: Vec<i64>,
    /// Train on the first N pairs after a seeded shuffle (0: all).
    #[schemars(range(min = 0))]
    pub train_pairs: i64,
    /// Passes over the pairs (0: the method's default).
    #[schemars(range(min = 0, max = 1000000))]
    pub epochs: i64,
    /// Pairs per step (0: the method's default).
    #[schemars(range(min = 0))]
    pub batch: i64,
    /// Peak learning rate (0: the method's default).
    #[schemars(range(min = 0))]
    pub lr: f64,
    /// AdamW weight decay.
    #[schemars(range(min = 0))]
    pub weight_decay: f64,
    /// Linear warm-up steps before the cosine decay.
    #[schemars(range(min = 0))]
    pub warmup_steps: i64,
    /// text: model width.
    #[schemars(range(min = 8, max = 65536))]
    pub d_model: i64,
    /// text: encoder layers.
    #[schemars(range(min = 1, max = 1024))]
    pub layers: i64,
    /// text: attention heads.
    #[schemars(range(min = 1, max = 1024))]
    pub heads: i64,
    /// text: tokens read per pair.
    #[schemars(range(min = 16, max = 1000000))]
    pub max_tokens: i64,
    /// text: a decoder-only checkpoint to put a score head on (empty: a small encoder from scratch).
    pub backbone: std::path::PathBuf,
    /// text with a backbone: what the model reads before the summary (as sft's `prompt`).
    pub prompt: String,
}

impl Default for Params {
    fn default() -> Params {
        Params {
            method: Method::DomainKnowledge,
            hidden: vec![6, 4, 2],
            train_pairs: 0,
            epochs: 0,
            batch: 0,
            lr: 0.0,
            weight_decay: 0.01,
            warmup_steps: 0,
            d_model: 64,
            layers: 2,
            heads: 4,
            max_tokens: 256,
            backbone: std::path::PathBuf::new(),
            prompt: String::new(),
        }
    }
}

impl Params {
    /// The loop settings, with the method's defaults where a parameter is 0.
    fn training(&self, seed: u64, epochs: usize, batch: usize, lr: f64) -> PairwiseLoop {
        PairwiseLoop {
            epochs: if self.epochs == 0 {
                epochs
            } else {
                self.epochs as usize
            },
            batch: if self.batch == 0 {
                batch
            } else {
                self.batch as usize
            },
            lr: default_if_zero(self.lr, lr),
            weight_decay: self.weight_decay,
            warmup_steps: self.warmup_steps as usize,
            seed,
        }
    }

    fn hidden(&self) -> Vec<usize> {
        self.hidden.iter().map(|&h| h.max(1) as usize).collect()
    }
}

/// The inputs of a reward-model stage.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Inputs {
    /// Datasets with preference pairs (train and validation products).
    pub datasets: Vec<DatasetInput>,
    /// The tokenizer of the `text` method.
    pub tokenizer: Option<TokenizerInput>,
}

/// The pairs one stage trains and evaluates on.
struct Pairs {
    products: Vec<Product>,
    train: Vec<PairRef>,
    val: Vec<PairRef>,
}

/// Collects, shuffles and limits the pairs; counts them in `m`.
fn prepare_pairs(
    p: &Params,
    products: Vec<Product>,
    seed: i64,
    m: &mut Metrics,
) -> Result<Pairs, String> {
    let (mut train, identical_train) =
        collect_pairs(&products, "train", p.method == Method::Synthetic);
    let (val, identical_val) = collect_pairs(&products, "validation", false);
    if train.is_empty() && p.method != Method::NaiveMean {
        return Err("no training pairs: the inputs have no `train` products with preferences (or categories, for synthetic)".into());
    }
    if val.is_empty() {
        return Err(
            "no validation pairs: the inputs have no `validation` products with preferences".into(),
        );
    }
    Rng::new(seed as u64).shuffle(&mut train);
    let limit = p.train_pairs.max(0) as usize;
    if limit > 0 {
        if limit > train.len() {
            return Err(format!(
                "`train-pairs` is {limit} but only {} training pairs exist",
                train.len()
            ));
        }
        train.truncate(limit);
    }
    m.insert("train_pairs".into(), train.len() as f64);
    m.insert("val_pairs".into(), val.len() as f64);
    m.insert(
        "skipped_identical".into(),
        (identical_train + identical_val) as f64,
    );
    Ok(Pairs {
        products,
        train,
        val,
    })
}

impl Kind for RewardStage {
    type Params = Params;
    type Inputs = Inputs;

    fn check(&self, p: &Params) -> Result<(), String> {
        if p.method == Method::Text && p.d_model % p.heads != 0 {
            return Err(format!(
                "`d-model` {} is not divisible by `heads` {}",
                p.d_model, p.heads
            ));
        }
        Ok(())
    }

    fn run(
        &self,
        p: &Params,
        inputs: &Inputs,
        ctx: &mut StageContext<'_>,
    ) -> Result<Metrics, String> {
        let mut m = Metrics::new();
        let pairs = prepare_pairs(p, products_of(&inputs.datasets)?, ctx.seed, &mut m)?;
        let _ = writeln!(
            ctx.log,
            "{}: {} training pairs, {} validation pairs",
            p.method.name(),
            pairs.train.len(),
            pairs.val.len()
        );
        let mut curve = String::from("epoch,loss\n");
        let spec = match p.method {
            Method::NaiveMean => naive_mean(&pairs, &mut m)?,
            Method::DomainKnowledge | Method::Synthetic => {
                train_phi_method(p, &pairs, ctx, &mut curve, &mut m)?
            }
            Method::Text if !p.backbone.as_os_str().is_empty() => train_causal_text_method(
                p,
                &pairs,
                inputs.tokenizer.as_ref(),
                ctx,
                &mut curve,
                &mut m,
            )?,
            Method::Text => {
                let tk = inputs
                    .tokenizer
                    .as_ref()
                    .ok_or("method `text` needs a tokenizer stage among the inputs")?;
                train_text_method(p, &pairs, tk, ctx, &mut curve, &mut m)?
            }
        };
        write(
            ctx.output,
            "reward.json",
            &serde_json::to_string_pretty(&spec).map_err(|e| e.to_string())?,
        )?;
        write(ctx.output, "curve.csv", &curve)?;
        let _ = writeln!(
            ctx.log,
            "validation accuracy {:.4}",
            m.get("accuracy").copied().unwrap_or(0.0)
        );
        Ok(m)
    }
}

/// `naive-mean`: accuracy of the plain mean on both splits; nothing to train.
fn naive_mean(pairs: &Pairs, m: &mut Metrics) -> Result<RewardSpec, String> {
    let products = &pairs.products;
    let score = |pr: &PairRef, which: usize| {
        naive_mean_key(
            &products[pr.product],
            &products[pr.product].candidates[which],
        )
    };
    let sides = |list: &[PairRef]| -> Result<(Vec<f64>, Vec<f64>), String> {
        let a = list
            .iter()
            .map(|pr| score(pr, pr.preferred))
            .collect::<Result<_, _>>()?;
        let b = list
            .iter()
            .map(|pr| score(pr, pr.rejected))
            .collect::<Result<_, _>>()?;
        Ok((a, b))
    };
    let (sp, sr) = sides(&pairs.val)?;
    m.insert("accuracy".into(), pairwise_accuracy(&sp, &sr));
    m.insert(
        "val_ties".into(),
        sp.iter().zip(&sr).filter(|(a, b)| a == b).count() as f64,
    );
    let (tp, tr) = sides(&pairs.train)?;
    m.insert("train_accuracy".into(), pairwise_accuracy(&tp, &tr));
    Ok(RewardSpec {
        method: Method::NaiveMean.name().into(),
        hidden: vec![],
        features: keys(),
        scale: 0.2,
        text: None,
        causal: None,
        reward: "mean(scores * scale)".into(),
    })
}

/// `domain-knowledge` and `synthetic`: trains φ over the seven scores.
fn train_phi_method(
    p: &Params,
    pairs: &Pairs,
    ctx: &mut StageContext<'_>,
    curve: &mut String,
    m: &mut Metrics,
) -> Result<RewardSpec, String> {
    let device = crate::ml::device(ctx.backend, ctx.seed as u64)?;
    let cfg = PhiTrainConfig {
        hidden: p.hidden(),
        training: p.training(ctx.seed as u64, 30, 32, 0.01),
    };
    let tp = feature_pairs(&pairs.products, &pairs.train)?;
    let vp = feature_pairs(&pairs.products, &pairs.val)?;
    let log = &mut *ctx.log;
    let mut first_bad = None;
    let trained = train_phi(&cfg, &tp, &device, |e, l| {
        let _ = writeln!(log, "epoch {} loss {l:.5}", e + 1);
        let _ = writeln!(curve, "{},{l}", e + 1);
        if !l.is_finite() {
            first_bad.get_or_insert((e + 1, l));
        }
    });
    diverged(p, first_bad, cfg.training.lr)?;
    let acc = |fp: &FeaturePairs| {
        evaluate(
            &trained.model.score(&fp.preferred, &device),
            &trained.model.score(&fp.rejected, &device),
        )
    };
    put_fit(m, acc(&vp), acc(&tp), trained.model.parameters());
    m.insert("init_draws".into(), trained.init_draws as f64);
    for (k, key) in DOMAIN_KEYS.iter().enumerate() {
        m.insert(format!("importance.{key}"), trained.importance[k]);
    }
    trained.model.save(&ctx.output.join("model.safetensors"))?;
    Ok(RewardSpec {
        method: p.method.name().into(),
        hidden: p.hidden(),
        features: keys(),
        scale: 0.2,
        text: None,
        causal: None,
        reward: "sigmoid(phi)".into(),
    })
}

/// An error naming the epoch and the settings when the loss stopped being a number.
fn diverged(p: &Params, first_bad: Option<(usize, f64)>, lr: f64) -> Result<(), String> {
    match first_bad {
        None => Ok(()),
        Some((epoch, loss)) => Err(format!(
            "training diverged: the loss is {loss} after epoch {epoch}; lower `lr` (now {}) or `weight-decay` (now {})",
            short_number(lr),
            short_number(p.weight_decay)
        )),
    }
}

/// `0.01`, `1e30`: very large and very small settings in exponent form.
fn short_number(x: f64) -> String {
    if x != 0.0 && (x.abs() >= 1e5 || x.abs() < 1e-4) {
        format!("{x:e}")
    } else {
        format!("{x}")
    }
}

/// Token sequences `<s> summary </s> reviews </s>` of both sides of each pair.
struct PairEncoder<'a> {
    tk: &'a tokenizers::Tokenizer,
    bos: u32,
    eos: u32,
    max_tokens: usize,
    reviews: std::collections::HashMap<usize, Vec<u32>>,
}

impl PairEncoder<'_> {
    fn ids(&self, t: &str) -> Result<Vec<u32>, String> {
        Ok(self
            .tk
            .encode(t, false)
            .map_err(|e| e.to_string())?
            .get_ids()
            .to_vec())
    }

    fn encode(&mut self, products: &[Product], pairs: &[PairRef]) -> Result<SequencePairs, String> {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for pr in pairs {
            let prod = &products[pr.product];
            if !self.reviews.contains_key(&pr.product) {
                let r = self.ids(&prod.reviews.join(" "))?;
                self.reviews.insert(pr.product, r);
            }
            let r = &self.reviews[&pr.product];
            let seq = |text: &str| -> Result<Vec<u32>, String> {
                Ok(pair_sequence(
                    &self.ids(text)?,
                    r,
                    self.bos,
                    self.eos,
                    self.max_tokens,
                ))
            };
            a.push(seq(&prod.candidates[pr.preferred].text)?);
            b.push(seq(&prod.candidates[pr.rejected].text)?);
        }
        Ok((a, b))
    }
}

/// `text` with a `backbone`: a score head on a decoder-only checkpoint, the
/// whole trained with the Bradley-Terry loss (TRL's `RewardTrainer`). Each
/// side reads the prompt over the product's reviews, then the summary and EOS.
fn train_causal_text_method(
    p: &Params,
    pairs: &Pairs,
    tk_input: Option<&TokenizerInput>,
    ctx: &mut StageContext<'_>,
    curve: &mut String,
    m: &mut Metrics,
) -> Result<RewardSpec, String> {
    let device = crate::ml::device(ctx.backend, ctx.seed as u64)?;
    let dir = &p.backbone;
    let config = std::fs::read_to_string(dir.join("config.json"))
        .map_err(|e| format!("cannot read `{}`: {e}", dir.join("config.json").display()))?;
    if !CausalConfig::is_causal(&config) {
        return Err(format!(
            "`backbone` `{}` is not a decoder-only checkpoint (LlamaForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM or their ForSequenceClassification)",
            dir.display()
        ));
    }
    let rm = CausalRm::load(dir, &device)?;
    let (tk, tk_dir) = if dir.join("tokenizer.json").is_file() {
        (
            crate::stages::formats::tokenizer::load(&dir.join("tokenizer.json"))?,
            dir.clone(),
        )
    } else {
        let t =
            tk_input.ok_or("the backbone has no tokenizer.json and no tokenizer input is given")?;
        (t.load()?, t.path.clone())
    };
    let max_tokens = p.max_tokens as usize;
    let reader = CausalReader::new(&p.prompt, &tk_dir, &rm, max_tokens)?;
    let sides = |refs: &[PairRef]| -> Result<SequencePairs, String> {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for pr in refs {
            let prod = &pairs.products[pr.product];
            let read =
                |i: usize| reader.row(&tk, &prod.reviews, &prod.id, &prod.candidates[i].text);
            a.push(read(pr.preferred)?);
            b.push(read(pr.rejected)?);
        }
        Ok((a, b))
    };
    let (tpa, tpb) = sides(&pairs.train)?;
    let (vpa, vpb) = sides(&pairs.val)?;
    let training = p.training(ctx.seed as u64, 1, 8, 1e-5);
    let log = &mut *ctx.log;
    let _ = writeln!(
        log,
        "text reward model on a {} backbone",
        rm.trunk.config.family.model_type()
    );
    let mut first_bad = None;
    let (model, _) = train_causal_rm(rm.trunk, &tpa, &tpb, &training, &device, |e, l| {
        let _ = writeln!(log, "epoch {} loss {l:.5}", e + 1);
        let _ = writeln!(curve, "{},{l}", e + 1);
        if !l.is_finite() {
            first_bad.get_or_insert((e + 1, l));
        }
    });
    diverged(p, first_bad, training.lr)?;
    let score = |a: &[Vec<u32>], b: &[Vec<u32>]| {
        evaluate(
            &model.score_rows(a, 8, &device),
            &model.score_rows(b, 8, &device),
        )
    };
    put_fit(m, score(&vpa, &vpb), score(&tpa, &tpb), model.num_params());
    let folder = ctx.output.join("model");
    model.save(&folder)?;
    tk.save(folder.join("tokenizer.json"), true)
        .map_err(|e| format!("cannot save tokenizer.json: {e}"))?;
    copy_tokenizer_files(&tk_dir, &folder)?;
    Ok(RewardSpec {
        method: Method::Text.name().into(),
        hidden: vec![],
        features: vec![],
        scale: 0.0,
        text: None,
        causal: Some(CausalRmSpec {
            prompt: p.prompt.clone(),
            max_tokens,
        }),
        reward: "sigmoid(score)".into(),
    })
}

/// `text`: trains the text-reading reward model.
fn train_text_method(
    p: &Params,
    pairs: &Pairs,
    tk_input: &TokenizerInput,
    ctx: &mut StageContext<'_>,
    curve: &mut String,
    m: &mut Metrics,
) -> Result<RewardSpec, String> {
    let device = crate::ml::device(ctx.backend, ctx.seed as u64)?;
    let tk = tk_input.load()?;
    let id = |t: &str| {
        tk.token_to_id(t)
            .ok_or_else(|| format!("the tokenizer has no `{t}` token"))
    };
    let (bos, eos, pad) = (id("<s>")?, id("</s>")?, id("<pad>")?);
    let model_cfg = TextRmConfig {
        vocab: tk.get_vocab_size(true),
        d_model: p.d_model as usize,
        layers: p.layers as usize,
        heads: p.heads as usize,
        max_tokens: p.max_tokens as usize,
    };
    let mut enc = PairEncoder {
        tk: &tk,
        bos,
        eos,
        max_tokens: model_cfg.max_tokens,
        reviews: Default::default(),
    };
    let (tpa, tpb) = enc.encode(&pairs.products, &pairs.train)?;
    let (vpa, vpb) = enc.encode(&pairs.products, &pairs.val)?;
    let cfg = TextTrainConfig {
        model: model_cfg,
        training: p.training(ctx.seed as u64, 4, 8, 3e-4),
    };
    let log = &mut *ctx.log;
    let mut first_bad = None;
    let (model, _) = train_text_rm(&cfg, &tpa, &tpb, pad, &device, |e, l| {
        let _ = writeln!(log, "epoch {} loss {l:.5}", e + 1);
        let _ = writeln!(curve, "{},{l}", e + 1);
        if !l.is_finite() {
            first_bad.get_or_insert((e + 1, l));
        }
    });
    diverged(p, first_bad, cfg.training.lr)?;
    let score = |a: &[Vec<u32>], b: &[Vec<u32>]| {
        evaluate(
            &model.score(a, pad, 16, &device),
            &model.score(b, pad, 16, &device),
        )
    };
    put_fit(m, score(&vpa, &vpb), score(&tpa, &tpb), model.num_params());
    model.save(&ctx.output.join("model.safetensors"))?;
    std::fs::copy(tk_input.file(), ctx.output.join("tokenizer.json"))
        .map_err(|e| format!("cannot copy the tokenizer: {e}"))?;
    Ok(RewardSpec {
        method: Method::Text.name().into(),
        hidden: vec![],
        features: vec![],
        scale: 0.0,
        text: Some(model_cfg),
        causal: None,
        reward: "sigmoid(score)".into(),
    })
}
fn keys() -> Vec<String> {
    DOMAIN_KEYS.iter().map(|k| k.to_string()).collect()
}

fn write(dir: &Path, name: &str, text: &str) -> Result<(), String> {
    std::fs::write(dir.join(name), text).map_err(|e| format!("cannot write {name}: {e}"))
}

/// Validation and training (accuracy, loss) of a fitted reward model, and its size.
fn put_fit(m: &mut Metrics, (va, vl): (f64, f64), (ta, tl): (f64, f64), parameters: usize) {
    m.insert("accuracy".into(), va);
    m.insert("val_loss".into(), vl);
    m.insert("train_accuracy".into(), ta);
    m.insert("train_loss".into(), tl);
    m.insert("parameters".into(), parameters as f64);
}

/// Pairwise accuracy (ties half) and Bradley-Terry loss of model scores.
fn evaluate(preferred: &[f32], rejected: &[f32]) -> (f64, f64) {
    let wide = |v: &[f32]| v.iter().map(|x| *x as f64).collect::<Vec<_>>();
    (
        pairwise_accuracy(&wide(preferred), &wide(rejected)),
        bt_loss_values(preferred, rejected),
    )
}
