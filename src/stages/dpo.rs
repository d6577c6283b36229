//! The `dpo` stage kind: direct preference optimisation of a summarizer on
//! human preference pairs (OpinPref: the expert-preferred candidate is
//! chosen, the other rejected), BART or a decoder-only model.
//!
//! Inputs by role: the `policy` (a model stage), an optional frozen
//! `reference` (else the policy as it starts), and `datasets` with pairs.
//! The reference's log-probabilities are computed once, before training;
//! then epochs of AdamW steps over shuffled batches of pairs, logged under
//! TRL's metric names, with checkpoints that make a killed run resume
//! exactly. The result is a `model` that `eval`, `preference` and `ppo` take.

use burn::optim::{AdamWConfig, ModuleOptimizer};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokenizers::Tokenizer;

use crate::ml::dpo::{DpoLoss, DpoSettings, DpoStats, Pair, dpo_step, evaluate, sequence_logps};
use crate::ml::lm::{LanguageModel, WithModel};
use crate::ml::peft::Base;
use crate::ml::precision::{LossScaler, Precision};
use crate::ml::schedule::cosine_lr;
use crate::ml::train::{Checkpoints, epoch_order};
use crate::stages::formats::adapter::LoraParams;
use crate::stages::formats::dataset::{DatasetInput, Product, collect_pairs, products_of};
use crate::stages::formats::model::{ModelInput, save_model_folder};
use crate::stages::formats::prompt::Prompter;
use crate::stages::kind::{Kind, Metrics, StageContext, eta, progress_bar, write_jsonl};

/// The `dpo` kind.
pub struct DpoStage;

/// The parameters of `plugins/builtin/dpo.kdl`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case", default)]
pub struct Params {
    /// The pairwise loss.
    pub loss: DpoLoss,
    /// β.
    #[schemars(range(min = 0.000001))]
    pub beta: f64,
    /// ε of `sigmoid` (conservative DPO) and `robust`.
    #[schemars(range(min = 0, max = 0.499))]
    pub label_smoothing: f64,
    /// Weight of the cross-entropy on the chosen summary (RPO).
    #[schemars(range(min = 0))]
    pub sft_weight: f64,
    /// Passes over the pairs.
    #[schemars(range(min = 1, max = 1000000))]
    pub epochs: i64,
    /// Pairs per optimizer step.
    #[schemars(range(min = 1, max = 1000000))]
    pub batch: i64,
    /// Peak learning rate.
    #[schemars(range(min = 0))]
    pub lr: f64,
    /// Share of the steps in linear warm-up (then a cosine decay to 0).
    #[schemars(range(min = 0, max = 1))]
    pub warmup: f64,
    /// Global gradient-norm clip (0: off).
    #[schemars(range(min = 0))]
    pub max_grad_norm: f64,
    /// Arithmetic of the passes.
    pub precision: Precision,
    /// What the model reads (as sft's `prompt`).
    pub prompt: String,
    /// Source tokens kept.
    #[schemars(range(min = 8, max = 1000000))]
    pub max_source: i64,
    /// Summary tokens kept.
    #[schemars(range(min = 4, max = 1000000))]
    pub max_target: i64,
    /// Checkpoint every N steps (0: never).
    #[schemars(range(min = 0))]
    pub checkpoint_every: i64,
    /// Split trained on.
    pub train_split: String,
    /// Split whose pairs are evaluated at the end (empty: none).
    pub eval_split: String,
    /// LoRA and activation checkpointing.
    #[serde(flatten)]
    pub lora: LoraParams,
}

impl Default for Params {
    fn default() -> Params {
        Params {
            loss: DpoLoss::Sigmoid,
            beta: 0.1,
            label_smoothing: 0.0,
            sft_weight: 0.0,
            epochs: 1,
            batch: 8,
            lr: 1e-6,
            warmup: 0.1,
            max_grad_norm: 1.0,
            precision: Precision::F32,
            prompt: String::new(),
            max_source: 512,
            max_target: 128,
            checkpoint_every: 50,
            train_split: "train".into(),
            eval_split: "validation".into(),
            lora: LoraParams::default(),
        }
    }
}

impl Params {
    fn settings(&self) -> DpoSettings {
        DpoSettings {
            loss: self.loss,
            beta: self.beta,
            label_smoothing: self.label_smoothing,
            sft_weight: self.sft_weight,
            max_grad_norm: self.max_grad_norm,
            precision: self.precision,
        }
    }
}

/// The inputs of a dpo stage.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Inputs {
    /// The model trained (an sft or model stage).
    pub policy: ModelInput,
    /// The frozen reference (default: the policy as it starts).
    pub reference: Option<ModelInput>,
    /// Datasets with preference pairs.
    pub datasets: Vec<DatasetInput>,
}

/// Everything a resumed run needs besides weights and optimizer moments.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Progress {
    step: usize,
    curve: Vec<DpoStats>,
    loss_scale: Option<LossScaler>,
}

impl Kind for DpoStage {
    type Params = Params;
    type Inputs = Inputs;

    fn check(&self, p: &Params) -> Result<(), String> {
        p.lora.check(p.precision)?;
        let smoothed = matches!(p.loss, DpoLoss::Sigmoid | DpoLoss::Robust);
        if p.label_smoothing > 0.0 && !smoothed {
            return Err(format!(
                "`label-smoothing` applies to the `sigmoid` and `robust` losses, not `{}`: remove it",
                serde_json::to_value(p.loss)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default()
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
        let products = products_of(&inputs.datasets)?;
        let device = crate::ml::device(ctx.backend, ctx.seed as u64)?;
        let work = Dpo {
            p,
            inputs,
            ctx,
            products: &products,
            device: device.clone(),
        };
        inputs.policy.with_model(&device, work)?
    }
}

/// One dpo run, generic over the policy's family.
struct Dpo<'a, 'c> {
    p: &'a Params,
    inputs: &'a Inputs,
    ctx: &'a mut StageContext<'c>,
    products: &'a [Product],
    device: burn::tensor::Device,
}

/// The pairs of `split`, tokenized (reference log-probabilities still 0).
fn tokenized_pairs(
    products: &[Product],
    split: &str,
    prompter: &Prompter,
    tk: &Tokenizer,
    max_target: usize,
) -> Result<Vec<Pair>, String> {
    let (refs, _identical) = collect_pairs(products, split, false);
    let mut out = Vec::with_capacity(refs.len());
    for r in refs {
        let prod = &products[r.product];
        out.push(Pair {
            source: prompter.source(tk, prod)?.ids,
            chosen: prompter.target(tk, &prod.candidates[r.preferred].text, max_target)?,
            rejected: prompter.target(tk, &prod.candidates[r.rejected].text, max_target)?,
            ref_chosen: 0.0,
            ref_rejected: 0.0,
        });
    }
    Ok(out)
}

/// Fills the reference log-probabilities of the pairs of every set under
/// `reference` (cast to the compute precision once).
fn score_reference<M: LanguageModel>(
    reference: &M,
    sets: [&mut Vec<Pair>; 2],
    p: &Params,
    device: &burn::tensor::Device,
) {
    let compute = p.precision.compute(reference);
    let batch = p.batch as usize;
    for pairs in sets {
        let side = |f: fn(&Pair) -> &Vec<u32>| -> Vec<Vec<u32>> {
            pairs.iter().map(|x| f(x).clone()).collect()
        };
        let sources = side(|x| &x.source);
        let chosen = sequence_logps(&compute, &sources, &side(|x| &x.chosen), batch, device);
        let rejected = sequence_logps(&compute, &sources, &side(|x| &x.rejected), batch, device);
        for ((pair, c), r) in pairs.iter_mut().zip(chosen).zip(rejected) {
            pair.ref_chosen = c;
            pair.ref_rejected = r;
        }
    }
}

/// The reference input: its log-probabilities of the policy's pairs.
struct ReferenceScores<'a> {
    sets: [&'a mut Vec<Pair>; 2],
    p: &'a Params,
    device: burn::tensor::Device,
    vocab: usize,
}

impl WithModel for ReferenceScores<'_> {
    type Output = Result<(), String>;

    fn run<M: LanguageModel>(self, model: M, _unused: Vec<String>) -> Result<(), String> {
        if model.vocab_size() != self.vocab {
            return Err(format!(
                "the reference has a vocabulary of {} tokens, the policy {}: DPO compares log-probabilities of the same tokens, so both need one tokenizer",
                model.vocab_size(),
                self.vocab
            ));
        }
        score_reference(&model, self.sets, self.p, &self.device);
        Ok(())
    }
}

impl WithModel for Dpo<'_, '_> {
    type Output = Result<Metrics, String>;

    fn run<M: LanguageModel>(self, mut policy: M, _unused: Vec<String>) -> Result<Metrics, String> {
        let Dpo {
            p,
            inputs,
            ctx,
            products,
            device,
        } = self;
        let tk = inputs.policy.tokenizer()?;
        let tokenizer_dir = inputs.policy.folder();
        // DPO trains without dropout (TRL's `disable_dropout`).
        policy.set_dropout(0.0);
        let prompter = Prompter::for_model(&p.prompt, &tokenizer_dir, &policy, p.max_source)?;
        let max_target = p.max_target as usize;
        let mut train = tokenized_pairs(products, &p.train_split, &prompter, &tk, max_target)?;
        if train.is_empty() {
            return Err(format!(
                "no preference pairs: the inputs have no `{}` products with a preferred and a rejected summary (dpo needs a dataset of pairs, such as OpinPref)",
                p.train_split
            ));
        }
        let mut held_out = match p.eval_split.as_str() {
            "" => Vec::new(),
            split => tokenized_pairs(products, split, &prompter, &tk, max_target)?,
        };
        match &inputs.reference {
            Some(reference) => {
                if reference.tokenizer()?.get_vocab(true) != tk.get_vocab(true) {
                    return Err(format!(
                        "the reference `{}` has another tokenizer than the policy `{}`: DPO compares log-probabilities of the same tokens",
                        reference.stage, inputs.policy.stage
                    ));
                }
                reference.with_model(
                    &device,
                    ReferenceScores {
                        sets: [&mut train, &mut held_out],
                        p,
                        device: device.clone(),
                        vocab: policy.vocab_size(),
                    },
                )??;
            }
            None => score_reference(&policy, [&mut train, &mut held_out], p, &device),
        }
        let _ = writeln!(
            ctx.log,
            "dpo ({}, loss {:?}, β {}): {} training pairs, {} held out; reference log-probabilities computed once",
            policy.architecture(),
            p.loss,
            p.beta,
            train.len(),
            held_out.len()
        );
        // The reference was scored without adapters: with LoRA it is the base.
        let policy = p
            .lora
            .prepare(policy, ctx.seed as u64, &device, &mut *ctx.log)?;
        let base = p
            .lora
            .base(|| Ok(Base::of_result(&inputs.policy.path, "model")))?;
        let trained = optimise(p, policy, &train, ctx, &device)?;
        save_model_folder(
            &ctx.output.join("model"),
            &trained.0,
            &tk,
            &tokenizer_dir,
            base.as_ref(),
        )?;
        write_jsonl(&ctx.output.join("dpo_curve.jsonl"), &trained.1.curve)?;
        Ok(metrics(
            p, &trained.0, &trained.1, &train, &held_out, &device,
        ))
    }
}

/// The steps, with checkpoints; returns the model and the progress.
fn optimise<M: LanguageModel>(
    p: &Params,
    policy: M,
    train: &[Pair],
    ctx: &mut StageContext<'_>,
    device: &burn::tensor::Device,
) -> Result<(M, Progress), String> {
    let settings = p.settings();
    let batch = p.batch as usize;
    let per_epoch = train.len().div_ceil(batch);
    let total = per_epoch * p.epochs as usize;
    let warmup = (p.warmup * total as f64).round() as usize;
    let ckpt = Checkpoints {
        dir: ctx.checkpoint_dir.to_path_buf(),
    };
    let train_dev = device.clone().autodiff();
    let new_optim = || {
        AdamWConfig::new()
            .with_weight_decay(0.0)
            .with_epsilon(1e-8)
            .init()
    };
    let fresh = policy.fork(&train_dev).train();
    let (mut model, mut optim, mut progress): (M, ModuleOptimizer, Progress) =
        match ckpt.load_progress::<Progress>() {
            Some(pr) if pr.step > 0 && pr.step <= total => {
                let (m, o) = ckpt.load(fresh, new_optim())?;
                let _ = writeln!(
                    ctx.log,
                    "resuming from the checkpoint after step {}",
                    pr.step
                );
                (m, o, pr)
            }
            _ => (fresh, new_optim(), Progress::default()),
        };
    let seed = ctx.seed as u64;
    let (started, first) = (std::time::Instant::now(), progress.step);
    while progress.step < total {
        let step = progress.step;
        let order = epoch_order(train.len(), seed, step / per_epoch);
        let start = (step % per_epoch) * batch;
        let picked: Vec<Pair> = order[start..(start + batch).min(order.len())]
            .iter()
            .map(|&i| train[i].clone())
            .collect();
        let lr = cosine_lr(step, total, warmup, p.lr, 0.0);
        let scaler = progress
            .loss_scale
            .get_or_insert_with(|| LossScaler::new(p.precision));
        let (m, mut stats) = dpo_step(model, &mut optim, &picked, &settings, lr, scaler);
        model = m;
        if !stats.loss.is_finite() {
            return Err(format!(
                "DPO diverged at step {}: the loss is {}; lower `lr` (now {}) or `beta` (now {}), or keep `max-grad-norm` on",
                step + 1,
                stats.loss,
                p.lr,
                p.beta
            ));
        }
        progress.step += 1;
        stats.step = progress.step;
        let left = eta(started, progress.step - first, total - progress.step);
        let _ = writeln!(
            ctx.log,
            "{} step {}/{total} loss {:.4} accuracy {:.2} margin {:.4} chosen {:.4} rejected {:.4} ETA {left}",
            progress_bar(progress.step, total),
            progress.step,
            stats.loss,
            stats.rewards_accuracies,
            stats.rewards_margins,
            stats.rewards_chosen,
            stats.rewards_rejected,
        );
        progress.curve.push(stats);
        let every = p.checkpoint_every as usize;
        if every > 0 && progress.step % every == 0 && progress.step < total {
            ckpt.save(&model, &optim, &progress)?;
            let _ = writeln!(ctx.log, "checkpoint after step {}", progress.step);
        }
    }
    Ok((model.valid(), progress))
}

/// The curve's first and last steps, and the trained model on the training
/// and the held-out pairs (TRL's names; `eval_` for the held-out ones).
fn metrics<M: LanguageModel>(
    p: &Params,
    model: &M,
    progress: &Progress,
    train: &[Pair],
    held_out: &[Pair],
    device: &burn::tensor::Device,
) -> Metrics {
    let settings = p.settings();
    let compute = p.precision.compute(model);
    let batch = p.batch as usize;
    let mut m = Metrics::new();
    m.insert("steps".into(), progress.step as f64);
    m.insert("pairs".into(), train.len() as f64);
    if let Some(first) = progress.curve.first() {
        m.insert("loss_first".into(), first.loss);
    }
    for (name, v) in evaluate(&compute, train, &settings, batch, device).named() {
        m.insert(format!("train_{name}"), v);
    }
    if !held_out.is_empty() {
        for (name, v) in evaluate(&compute, held_out, &settings, batch, device).named() {
            m.insert(format!("eval_{name}"), v);
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_smoothing_is_refused_where_the_loss_ignores_it() {
        let mut p = Params {
            label_smoothing: 0.1,
            ..Params::default()
        };
        assert!(DpoStage.check(&p).is_ok());
        p.loss = DpoLoss::Ipo;
        let e = DpoStage.check(&p).unwrap_err();
        assert!(e.contains("`ipo`"), "{e}");
    }
}
