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
//!   tokenizer stage among the inputs).
//!
//! Pairs whose two summaries are the same text are skipped and counted; a
//! candidate without scores, or with a non-finite score, is an error for the
//! score-reading methods.

use burn::module::Module;
use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::dataset::{Candidate, DOMAIN_KEYS, Product};
use super::{Stage, StageContext, param_f64, param_i64, param_str};
use crate::dsl::{Metrics, Value};
use crate::ml::bt::{PairwiseLoop, bt_loss_values, pairwise_accuracy};
use crate::ml::phi::{FEATURES, FeaturePairs, Phi, PhiTrainConfig, train_phi};
use crate::ml::text_rm::{TextRm, TextRmConfig, TextTrainConfig, pair_sequence, train_text_rm};
use crate::rng::Rng;

pub struct RewardStage;

/// Token sequences of the preferred and of the rejected side of each pair.
type SequencePairs = (Vec<Vec<u32>>, Vec<Vec<u32>>);

/// What `reward.json` records, enough to rebuild and apply the model.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RewardSpec {
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<TextRmConfig>,
    /// How the RL reward is derived from the model's output.
    pub reward: String,
}

/// One preference: (product index, preferred candidate, rejected candidate).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PairRef {
    pub product: usize,
    pub preferred: usize,
    pub rejected: usize,
}

/// Pairs of a split: human preferences, or (`by_category`) every two
/// candidates of different prompt categories, the better category first.
pub fn collect_pairs(
    products: &[Product],
    split: &str,
    by_category: bool,
) -> (Vec<PairRef>, usize) {
    let mut pairs = Vec::new();
    let mut identical = 0;
    for (pi, p) in products
        .iter()
        .enumerate()
        .filter(|(_, p)| p.split == split)
    {
        let mut push = |a: usize, b: usize| {
            if p.candidates[a].text.trim() == p.candidates[b].text.trim() {
                identical += 1;
            } else {
                pairs.push(PairRef {
                    product: pi,
                    preferred: a,
                    rejected: b,
                });
            }
        };
        if by_category {
            for a in 0..p.candidates.len() {
                for b in 0..p.candidates.len() {
                    if let (Some(ca), Some(cb)) =
                        (p.candidates[a].category, p.candidates[b].category)
                        && ca < cb
                    {
                        push(a, b);
                    }
                }
            }
        } else {
            for pref in &p.preferences {
                if pref.preferred < p.candidates.len() && pref.rejected < p.candidates.len() {
                    push(pref.preferred, pref.rejected);
                }
            }
        }
    }
    (pairs, identical)
}

/// The seven scores of a candidate times `scale`, in [`DOMAIN_KEYS`] order.
pub fn features(product: &Product, c: &Candidate, scale: f64) -> Result<[f32; FEATURES], String> {
    let scores = c
        .scores
        .as_ref()
        .ok_or_else(|| format!("product `{}`: a candidate has no domain scores; add a featurize stage or use a source that has them", product.id))?;
    let mut out = [0f32; FEATURES];
    for (k, key) in DOMAIN_KEYS.iter().enumerate() {
        let v = *scores
            .get(*key)
            .ok_or_else(|| format!("product `{}`: score `{key}` is missing", product.id))?;
        if !v.is_finite() {
            return Err(format!(
                "product `{}`: score `{key}` is not a finite number ({v})",
                product.id
            ));
        }
        out[k] = (v * scale) as f32;
    }
    Ok(out)
}

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

impl Stage for RewardStage {
    fn run(&self, ctx: &mut StageContext<'_>) -> Result<Metrics, String> {
        let p = ctx.params;
        let method = param_str(p, "method")?.to_string();
        let (products, tokenizer_path) = super::datasets_and_tokenizer(ctx.inputs)?;
        let (mut train, identical_train) = collect_pairs(&products, "train", method == "synthetic");
        let (val, identical_val) = collect_pairs(&products, "validation", false);
        if train.is_empty() && method != "naive-mean" {
            return Err("no training pairs: the inputs have no `train` products with preferences (or categories, for synthetic)".into());
        }
        if val.is_empty() {
            return Err(
                "no validation pairs: the inputs have no `validation` products with preferences"
                    .into(),
            );
        }
        Rng::new(ctx.seed as u64).shuffle(&mut train);
        let limit = param_i64(p, "train-pairs")?.max(0) as usize;
        if limit > 0 {
            if limit > train.len() {
                return Err(format!(
                    "`train-pairs` is {limit} but only {} training pairs exist",
                    train.len()
                ));
            }
            train.truncate(limit);
        }
        let _ = writeln!(
            ctx.log,
            "{method}: {} training pairs, {} validation pairs",
            train.len(),
            val.len()
        );
        let mut m = Metrics::new();
        m.insert("train_pairs".into(), train.len() as f64);
        m.insert("val_pairs".into(), val.len() as f64);
        m.insert(
            "skipped_identical".into(),
            (identical_train + identical_val) as f64,
        );
        let mut curve = String::from("epoch,loss\n");
        let hidden: Vec<usize> = match p.get("hidden") {
            Some(Value::List(items)) => items
                .iter()
                .filter_map(|v| v.as_i64())
                .map(|v| v.max(1) as usize)
                .collect(),
            _ => vec![],
        };
        let epochs = param_i64(p, "epochs")? as usize;
        let batch = param_i64(p, "batch")? as usize;
        let lr = param_f64(p, "lr")?;
        let weight_decay = param_f64(p, "weight-decay")?;
        let warmup_steps = param_i64(p, "warmup-steps")? as usize;
        let device = crate::ml::device(ctx.backend, ctx.seed as u64)?;
        let seed = ctx.seed as u64;
        // The loop settings, with the method's defaults where a parameter is 0.
        let training =
            |default_epochs: usize, default_batch: usize, default_lr: f64| PairwiseLoop {
                epochs: if epochs == 0 { default_epochs } else { epochs },
                batch: if batch == 0 { default_batch } else { batch },
                lr: default_if_zero(lr, default_lr),
                weight_decay,
                warmup_steps,
                seed,
            };

        let spec = match method.as_str() {
            "naive-mean" => {
                let score = |pr: &PairRef, which: usize| {
                    naive_mean_key(
                        &products[pr.product],
                        &products[pr.product].candidates[which],
                    )
                };
                let sp: Vec<f64> = val
                    .iter()
                    .map(|pr| score(pr, pr.preferred))
                    .collect::<Result<_, _>>()?;
                let sr: Vec<f64> = val
                    .iter()
                    .map(|pr| score(pr, pr.rejected))
                    .collect::<Result<_, _>>()?;
                m.insert("accuracy".into(), pairwise_accuracy(&sp, &sr));
                m.insert(
                    "val_ties".into(),
                    sp.iter().zip(&sr).filter(|(a, b)| a == b).count() as f64,
                );
                let tp: Vec<f64> = train
                    .iter()
                    .map(|pr| score(pr, pr.preferred))
                    .collect::<Result<_, _>>()?;
                let tr: Vec<f64> = train
                    .iter()
                    .map(|pr| score(pr, pr.rejected))
                    .collect::<Result<_, _>>()?;
                m.insert("train_accuracy".into(), pairwise_accuracy(&tp, &tr));
                RewardSpec {
                    method,
                    hidden: vec![],
                    features: keys(),
                    scale: 0.2,
                    text: None,
                    reward: "mean(scores * scale)".into(),
                }
            }
            "domain-knowledge" | "synthetic" => {
                let cfg = PhiTrainConfig {
                    hidden: hidden.clone(),
                    training: training(30, 32, 0.01),
                };
                let tp = feature_pairs(&products, &train)?;
                let vp = feature_pairs(&products, &val)?;
                let log = &mut *ctx.log;
                let trained = train_phi(&cfg, &tp, &device, |e, l| {
                    let _ = writeln!(log, "epoch {} loss {l:.5}", e + 1);
                    let _ = writeln!(curve, "{},{l}", e + 1);
                });
                let acc = |fp: &FeaturePairs| {
                    evaluate(
                        &trained.model.score(&fp.preferred, &device),
                        &trained.model.score(&fp.rejected, &device),
                    )
                };
                let (va, vl) = acc(&vp);
                let (ta, tl) = acc(&tp);
                m.insert("accuracy".into(), va);
                m.insert("val_loss".into(), vl);
                m.insert("train_accuracy".into(), ta);
                m.insert("train_loss".into(), tl);
                m.insert("parameters".into(), trained.model.parameters() as f64);
                m.insert("init_draws".into(), trained.init_draws as f64);
                for (k, key) in DOMAIN_KEYS.iter().enumerate() {
                    m.insert(format!("importance.{key}"), trained.importance[k]);
                }
                trained.model.save(&ctx.output.join("model.safetensors"))?;
                RewardSpec {
                    method,
                    hidden,
                    features: keys(),
                    scale: 0.2,
                    text: None,
                    reward: "sigmoid(phi)".into(),
                }
            }
            "text" => {
                let tk_path = tokenizer_path
                    .ok_or("method `text` needs a tokenizer stage among the inputs")?;
                let tk = tokenizers::Tokenizer::from_file(&tk_path)
                    .map_err(|e| format!("cannot load the tokenizer: {e}"))?;
                let id = |t: &str| {
                    tk.token_to_id(t)
                        .ok_or_else(|| format!("the tokenizer has no `{t}` token"))
                };
                let (bos, eos, pad) = (id("<s>")?, id("</s>")?, id("<pad>")?);
                let model_cfg = TextRmConfig {
                    vocab: tk.get_vocab_size(true),
                    d_model: param_i64(p, "d-model")? as usize,
                    layers: param_i64(p, "layers")? as usize,
                    heads: param_i64(p, "heads")? as usize,
                    max_tokens: param_i64(p, "max-tokens")? as usize,
                };
                if !model_cfg.d_model.is_multiple_of(model_cfg.heads) {
                    return Err(format!(
                        "`d-model` {} is not divisible by `heads` {}",
                        model_cfg.d_model, model_cfg.heads
                    ));
                }
                let encode = |t: &str| -> Result<Vec<u32>, String> {
                    Ok(tk
                        .encode(t, false)
                        .map_err(|e| e.to_string())?
                        .get_ids()
                        .to_vec())
                };
                let mut review_ids = std::collections::HashMap::new();
                let mut seqs = |pairs: &[PairRef]| -> Result<SequencePairs, String> {
                    let (mut a, mut b) = (Vec::new(), Vec::new());
                    for pr in pairs {
                        let prod = &products[pr.product];
                        let r: &Vec<u32> = match review_ids.entry(pr.product) {
                            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                            std::collections::hash_map::Entry::Vacant(e) => {
                                e.insert(encode(&prod.reviews.join(" "))?)
                            }
                        };
                        a.push(pair_sequence(
                            &encode(&prod.candidates[pr.preferred].text)?,
                            r,
                            bos,
                            eos,
                            model_cfg.max_tokens,
                        ));
                        b.push(pair_sequence(
                            &encode(&prod.candidates[pr.rejected].text)?,
                            r,
                            bos,
                            eos,
                            model_cfg.max_tokens,
                        ));
                    }
                    Ok((a, b))
                };
                let (tpa, tpb) = seqs(&train)?;
                let (vpa, vpb) = seqs(&val)?;
                let cfg = TextTrainConfig {
                    model: model_cfg,
                    training: training(4, 8, 3e-4),
                };
                let log = &mut *ctx.log;
                let (model, _) = train_text_rm(&cfg, &tpa, &tpb, pad, &device, |e, l| {
                    let _ = writeln!(log, "epoch {} loss {l:.5}", e + 1);
                    let _ = writeln!(curve, "{},{l}", e + 1);
                });
                let score = |a: &[Vec<u32>], b: &[Vec<u32>]| {
                    evaluate(
                        &model.score(a, pad, 16, &device),
                        &model.score(b, pad, 16, &device),
                    )
                };
                let (va, vl) = score(&vpa, &vpb);
                let (ta, tl) = score(&tpa, &tpb);
                m.insert("accuracy".into(), va);
                m.insert("val_loss".into(), vl);
                m.insert("train_accuracy".into(), ta);
                m.insert("train_loss".into(), tl);
                m.insert("parameters".into(), model.num_params() as f64);
                model.save(&ctx.output.join("model.safetensors"))?;
                std::fs::copy(&tk_path, ctx.output.join("tokenizer.json"))
                    .map_err(|e| format!("cannot copy the tokenizer: {e}"))?;
                RewardSpec {
                    method,
                    hidden: vec![],
                    features: vec![],
                    scale: 0.0,
                    text: Some(model_cfg),
                    reward: "sigmoid(score)".into(),
                }
            }
            other => return Err(format!("unknown method `{other}`")),
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

fn keys() -> Vec<String> {
    DOMAIN_KEYS.iter().map(|k| k.to_string()).collect()
}

fn write(dir: &Path, name: &str, text: &str) -> Result<(), String> {
    std::fs::write(dir.join(name), text).map_err(|e| format!("cannot write {name}: {e}"))
}

/// Reads `reward.json` of a reward-model stage's output folder.
pub fn read_spec(dir: &Path) -> Result<RewardSpec, String> {
    let text = std::fs::read_to_string(dir.join("reward.json"))
        .map_err(|e| format!("cannot read reward.json: {e}"))?;
    serde_json::from_str(&text).map_err(|e| format!("reward.json: {e}"))
}

/// Pairwise accuracy (ties half) and Bradley-Terry loss of model scores.
fn evaluate(preferred: &[f32], rejected: &[f32]) -> (f64, f64) {
    let wide = |v: &[f32]| v.iter().map(|x| *x as f64).collect::<Vec<_>>();
    (
        pairwise_accuracy(&wide(preferred), &wide(rejected)),
        bt_loss_values(preferred, rejected),
    )
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
