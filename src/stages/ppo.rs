//! The `ppo` stage kind: PPO of an SFT summarizer against a reward model.
//!
//! Inputs, told apart by their files: the SFT stage (`model/`), the reward
//! model (`reward.json`), and datasets (`products.jsonl`). The policy and
//! the frozen KL reference both start from the SFT model (with `reference
//! "previous"` the reference then follows the policy one update behind). Online, each update
//! samples one summary per product, scores it with the lexical featurizer
//! and the reward model; offline, it replays one stored candidate per
//! product with its stored scores. Checkpoints after every
//! `checkpoint-every` updates make a killed run resume exactly.

use std::path::{Path, PathBuf};

use burn::optim::AdamWConfig;
use serde::{Deserialize, Serialize};
use tokenizers::Tokenizer;

use super::dataset::Product;
use super::reward::{features, phi_of, read_spec, text_rm_of};
use super::sft::{decode, encode, load_tokenizer, source_text, targets_of};
use super::{Stage, StageContext, param_f64, param_i64, param_str};
use crate::dsl::Metrics;
use crate::ml::bart::train::Checkpoints;
use crate::ml::bart::{GenerateOptions, ValueHead, io};
use crate::ml::phi::{FEATURES, Phi};
use crate::ml::ppo::{KlController, RewardNorm, RunningMoments};
use crate::ml::rlhf::{PolicyValue, PpoModules, PpoSettings, PpoState, UpdateStats, ppo_update};
use crate::ml::text_rm::{TextRm, pair_sequence};
use crate::rng::Rng;
use crate::text::lexical::{Lexical, ReviewProfile};

pub struct PpoStage;

/// One summary to score: the product's reviews, the text, and its seven
/// scores on 0..5 when the scorer reads scores.
pub struct ToScore<'a> {
    pub reviews: &'a [String],
    pub summary: &'a str,
    pub features: Option<[f64; FEATURES]>,
}

/// How a summary becomes a reward, from a reward-model stage's output.
pub enum Scorer {
    /// `sigmoid(φ(scores · scale))`, the paper's reward.
    Phi { phi: Phi, scale: f64 },
    /// The plain mean of the seven scores, divided by 5.
    NaiveMean,
    /// `sigmoid(score)` of the text-reading reward model over
    /// `<s> summary </s> reviews </s>`, tokenized with its own tokenizer.
    Text {
        model: Box<TextRm>,
        tokenizer: Box<Tokenizer>,
        special: [u32; 3],
        max_tokens: usize,
    },
}

impl Scorer {
    /// Builds the scorer from a reward-model stage's folder.
    pub fn load(dir: &Path, device: &burn::tensor::Device) -> Result<Scorer, String> {
        let spec = read_spec(dir)?;
        match spec.method.as_str() {
            "naive-mean" => Ok(Scorer::NaiveMean),
            "text" => {
                let (cfg, model) = text_rm_of(&spec, dir, device)?;
                let tokenizer = load_tokenizer(&dir.join("tokenizer.json"))?;
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
        !matches!(self, Scorer::Text { .. })
    }

    /// Rewards of summaries.
    pub fn rewards(
        &self,
        items: &[ToScore<'_>],
        device: &burn::tensor::Device,
    ) -> Result<Vec<f64>, String> {
        let features = || -> Result<Vec<[f64; FEATURES]>, String> {
            items
                .iter()
                .map(|t| {
                    t.features.ok_or_else(|| {
                        "this reward model reads the seven scores, and a summary has none"
                            .to_string()
                    })
                })
                .collect()
        };
        let sigmoid = |x: f32| 1.0 / (1.0 + (-(x as f64)).exp());
        match self {
            Scorer::NaiveMean => Ok(features()?
                .iter()
                .map(|s| s.iter().sum::<f64>() / (5.0 * FEATURES as f64))
                .collect()),
            Scorer::Phi { phi, scale } => {
                let f: Vec<[f32; FEATURES]> = features()?
                    .iter()
                    .map(|s| s.map(|x| (x * scale) as f32))
                    .collect();
                Ok(phi.score(&f, device).into_iter().map(sigmoid).collect())
            }
            Scorer::Text {
                model,
                tokenizer,
                special: [bos, eos, pad],
                max_tokens,
            } => {
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
                            *bos,
                            *eos,
                            *max_tokens,
                        ))
                    })
                    .collect::<Result<Vec<_>, String>>()?;
                Ok(model
                    .score(&seqs, *pad, 16, device)
                    .into_iter()
                    .map(sigmoid)
                    .collect())
            }
        }
    }
}

/// Everything a resumed run needs besides weights and optimizer moments.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Progress {
    update: usize,
    state: PpoState,
    curve: Vec<UpdateStats>,
}

fn read_inputs(inputs: &[(String, PathBuf)]) -> Result<(PathBuf, PathBuf, Vec<Product>), String> {
    let (mut sft, mut rm, mut products) = (None, None, Vec::new());
    for (id, dir) in inputs {
        if dir.join("model").join("config.json").is_file() {
            sft = Some(dir.join("model"));
        } else if dir.join("reward.json").is_file() {
            rm = Some(dir.clone());
        } else if dir.join("products.jsonl").is_file() {
            products.extend(super::dataset::read_products(dir)?);
        } else {
            return Err(format!(
                "input `{id}` is not an sft stage, a reward-model stage or a dataset"
            ));
        }
    }
    Ok((
        sft.ok_or("no input is an sft stage (its `model/` folder is the initial policy)")?,
        rm.ok_or("no input is a reward-model stage")?,
        products,
    ))
}

/// One rollout product: its tokenized source, reviews profile, CE target, stored candidates.
struct Rollout<'a> {
    product: &'a Product,
    source: Vec<u32>,
    ce_target: Vec<u32>,
    /// The reviews' lexical profile, built once: online, every sample is scored against it.
    profile: ReviewProfile,
}

impl Stage for PpoStage {
    fn run(&self, ctx: &mut StageContext<'_>) -> Result<Metrics, String> {
        let p = ctx.params;
        let mode = param_str(p, "mode")?.to_string();
        let (sft_dir, rm_dir, products) = read_inputs(ctx.inputs)?;
        let device = crate::ml::device(ctx.backend, ctx.seed as u64)?;
        let (mut policy, _) = io::load(&sft_dir, &device)?;
        // PPO runs without dropout (TRL, lm-human-preferences).
        policy.set_dropout(0.0);
        let reference = policy.clone();
        let tk: Tokenizer = load_tokenizer(&sft_dir.join("tokenizer.json"))?;
        let scorer = Scorer::load(&rm_dir, &device)?;
        let eos = policy.config.eos_token_id;
        let max_source = param_i64(p, "max-source")? as usize;
        let max_new = param_i64(p, "max-new-tokens")? as usize;
        let ce_target = param_str(p, "ce-target")?;
        let split = param_str(p, "train-split")?;

        let lexical = Lexical::new();
        let mut rollouts = Vec::new();
        for prod in products.iter().filter(|x| x.split == split) {
            let target = targets_of(prod, ce_target).into_iter().next();
            if mode == "offline" && !prod.candidates.iter().any(|c| c.scores.is_some()) {
                continue;
            }
            let Some(target) = target else { continue };
            rollouts.push(Rollout {
                product: prod,
                source: encode(&tk, &source_text(prod), max_source, eos)?,
                ce_target: encode(&tk, &target, max_new + 1, eos)?,
                profile: lexical.profile(&prod.reviews),
            });
        }
        if rollouts.is_empty() {
            return Err(format!(
                "no `{split}` products with a `{ce_target}` summary{}",
                if mode == "offline" {
                    " and scored candidates"
                } else {
                    ""
                }
            ));
        }

        let settings = PpoSettings {
            gamma: param_f64(p, "gamma")?,
            lambda: param_f64(p, "lambda")?,
            clip: param_f64(p, "clip")?,
            value_clip: param_f64(p, "value-clip")?,
            vf_coef: param_f64(p, "vf-coef")?,
            ce_mix: param_f64(p, "ce-mix")?,
            ppo_epochs: param_i64(p, "ppo-epochs")? as usize,
            minibatch: param_i64(p, "minibatch")? as usize,
            lr: param_f64(p, "lr")?,
            max_grad_norm: param_f64(p, "max-grad-norm")?,
            missing_eos_penalty: param_f64(p, "missing-eos-penalty")?,
            reward_norm: RewardNorm::parse(param_str(p, "reward-norm")?)?,
            generation: GenerateOptions {
                sample: true,
                temperature: param_f64(p, "temperature")?,
                top_k: param_i64(p, "top-k")? as usize,
                top_p: param_f64(p, "top-p")?,
                ..GenerateOptions::greedy(max_new)
            },
        };
        settings.generation.check()?;
        let kl_target = param_f64(p, "kl-target")?;
        let kl = KlController {
            value: param_f64(p, "kl-coef")?,
            adaptive: (kl_target > 0.0)
                .then(|| Ok::<_, String>((kl_target, param_f64(p, "kl-horizon")?)))
                .transpose()?,
        };
        let updates = param_i64(p, "updates")? as usize;
        let batch = (param_i64(p, "batch")? as usize).min(rollouts.len());
        let checkpoint_every = param_i64(p, "checkpoint-every")? as usize;
        let seed = ctx.seed as u64;

        // Resume or start.
        let ckpt = Checkpoints {
            dir: ctx.checkpoint_dir.to_path_buf(),
        };
        let new_optim = || {
            AdamWConfig::new()
                .with_weight_decay(0.0)
                .with_epsilon(1e-8)
                .init()
        };
        // The KL reference: the SFT model, or the policy before the last update.
        let follow_previous = param_str(p, "reference")? == "previous";
        let fresh = PpoModules {
            previous: follow_previous.then(|| policy.clone()),
            trained: PolicyValue {
                value: ValueHead::new(policy.config.d_model, &device),
                policy,
            },
        };
        let (mut model, mut previous, mut optim, mut progress) =
            match ckpt.load_progress::<Progress>() {
                Some(pr) if pr.update > 0 && pr.update <= updates => {
                    let (m, o) = ckpt.load(fresh, new_optim())?;
                    let (m, previous) = (m.trained, m.previous);
                    let _ = writeln!(
                        ctx.log,
                        "resuming from the checkpoint after update {}",
                        pr.update
                    );
                    (m, previous, o, pr)
                }
                _ => (
                    fresh.trained,
                    fresh.previous,
                    new_optim(),
                    Progress {
                        update: 0,
                        state: PpoState {
                            kl,
                            reward_moments: RunningMoments::default(),
                        },
                        curve: Vec::new(),
                    },
                ),
            };
        let _ = writeln!(
            ctx.log,
            "ppo ({mode}): {} products, {updates} updates of {batch}",
            rollouts.len()
        );

        let per_epoch = rollouts.len().div_ceil(batch);
        let (started, first_update) = (std::time::Instant::now(), progress.update);
        while progress.update < updates {
            let u = progress.update;
            let order = crate::ml::bart::train::epoch_order(rollouts.len(), seed, u / per_epoch);
            let start = (u % per_epoch) * batch;
            let picked: Vec<&Rollout> = (0..batch)
                .map(|k| &rollouts[order[(start + k) % order.len()]])
                .collect();
            let mut rng = Rng::new(seed ^ (u as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let sources: Vec<Vec<u32>> = picked.iter().map(|r| r.source.clone()).collect();
            let ce: Vec<Vec<u32>> = picked.iter().map(|r| r.ce_target.clone()).collect();
            // Offline: one stored, scored candidate per product, with its stored scores.
            let mut stored_scores = Vec::new();
            let given: Option<Vec<Vec<u32>>> = if mode == "offline" {
                let mut rows = Vec::new();
                for r in &picked {
                    let scored: Vec<_> = r
                        .product
                        .candidates
                        .iter()
                        .filter(|c| c.scores.is_some())
                        .collect();
                    let c = scored[rng.below(scored.len() as u64) as usize];
                    let f = features(r.product, c, 1.0)?;
                    stored_scores.push(f.map(|x| x as f64));
                    rows.push(encode(&tk, &c.text, max_new + 1, eos)?);
                }
                Some(rows)
            } else {
                None
            };
            let mut reward = |responses: &[Vec<u32>]| -> Result<Vec<f64>, String> {
                let texts: Vec<String> = responses.iter().map(|r| decode(&tk, r)).collect();
                let items: Vec<ToScore> = texts
                    .iter()
                    .zip(&picked)
                    .enumerate()
                    .map(|(i, (text, r))| ToScore {
                        reviews: &r.product.reviews,
                        summary: text,
                        features: if given.is_some() {
                            stored_scores.get(i).copied()
                        } else if scorer.reads_features() {
                            Some(lexical.score(&r.profile, text))
                        } else {
                            None
                        },
                    })
                    .collect();
                scorer.rewards(&items, &device)
            };
            let before = follow_previous.then(|| model.policy.clone());
            let (m, stats) = ppo_update(
                model,
                &mut optim,
                previous.as_ref().unwrap_or(&reference),
                &sources,
                given.as_deref(),
                (settings.ce_mix > 0.0).then_some(ce.as_slice()),
                &mut reward,
                &mut progress.state,
                &settings,
                &mut rng,
                &device,
            )?;
            model = m;
            if before.is_some() {
                previous = before;
            }
            progress.update += 1;
            let _ = writeln!(
                ctx.log,
                "{} update {}/{updates} score {:.4} ±{:.4} reward {:.3} KL {:.3} β {:.3} pg {:.4} vf {:.4} ce {:.4} clip {:.3} entropy {:.3} len {:.1} ETA {}",
                super::progress_bar(progress.update, updates),
                progress.update,
                stats.score,
                stats.score_std,
                stats.reward,
                stats.kl,
                stats.kl_coef,
                stats.policy_loss,
                stats.value_loss,
                stats.ce_loss,
                stats.clipfrac,
                stats.entropy,
                stats.response_length,
                super::eta(
                    started,
                    progress.update - first_update,
                    updates - progress.update
                )
            );
            progress.curve.push(stats);
            if checkpoint_every > 0
                && progress.update % checkpoint_every == 0
                && progress.update < updates
            {
                let modules = PpoModules {
                    trained: model.clone(),
                    previous: previous.clone(),
                };
                ckpt.save(&modules, &optim, &progress)?;
                let _ = writeln!(ctx.log, "checkpoint after update {}", progress.update);
            }
        }

        // Outputs.
        let model_dir = ctx.output.join("model");
        io::save(&model.policy, &model_dir)?;
        tk.save(model_dir.join("tokenizer.json"), true)
            .map_err(|e| format!("cannot save tokenizer.json: {e}"))?;
        let mut store =
            burn::store::SafetensorsStore::from_file(ctx.output.join("value_head.safetensors"))
                .overwrite(true);
        burn::store::ModuleSnapshot::save_into(&model.value, &mut store)
            .map_err(|e| format!("cannot save the value head: {e}"))?;
        let mut curve = String::new();
        for s in &progress.curve {
            curve.push_str(&serde_json::to_string(s).map_err(|e| e.to_string())?);
            curve.push('\n');
        }
        std::fs::write(ctx.output.join("ppo_curve.jsonl"), curve)
            .map_err(|e| format!("cannot write ppo_curve.jsonl: {e}"))?;
        let c = &progress.curve;
        let k = c.len().clamp(1, 3);
        let mean = |xs: &[UpdateStats], f: fn(&UpdateStats) -> f64| {
            xs.iter().map(f).sum::<f64>() / xs.len().max(1) as f64
        };
        let mut m = Metrics::new();
        m.insert("updates".into(), c.len() as f64);
        m.insert("reward_first".into(), mean(&c[..k], |s| s.score));
        m.insert("reward_last".into(), mean(&c[c.len() - k..], |s| s.score));
        m.insert("kl_last".into(), mean(&c[c.len() - k..], |s| s.kl));
        m.insert("kl_coef_last".into(), progress.state.kl.value);
        m.insert(
            "entropy_last".into(),
            mean(&c[c.len() - k..], |s| s.entropy),
        );
        m.insert(
            "missing_eos_last".into(),
            mean(&c[c.len() - k..], |s| s.missing_eos),
        );
        m.insert(
            "response_length_last".into(),
            mean(&c[c.len() - k..], |s| s.response_length),
        );
        m.insert("clipfrac_mean".into(), mean(c, |s| s.clipfrac));
        Ok(m)
    }
}
