//! Supervised fine-tuning: token cross-entropy on (source -> target) pairs
//! with AdamW, warm-up + cosine schedule, gradient accumulation, global
//! gradient-norm clipping, periodic validation with best-model selection,
//! and checkpoints that resume bit-exactly on the CPU backend.
//!
//! Exact resumption rests on three things: the epoch order is a pure
//! function of (seed, epoch); the device RNG (dropout) is reseeded from
//! (seed, step) before every step; the model and optimizer are saved in
//! burn's native format, which keeps parameter ids, so AdamW's moments
//! reattach to their parameters.

use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::optim::{AdamWConfig, GradientsAccumulator, GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::ml::lm::{LanguageModel, cross_entropy};
use crate::ml::precision::{LossScaler, Precision};
use crate::ml::schedule::cosine_lr;
use crate::rng::Rng;

/// One training pair, tokenized: the source with its special tokens, the target ending in EOS.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    /// Source token ids.
    pub source: Vec<u32>,
    /// Target token ids, `<s> ... </s>`.
    pub target: Vec<u32>,
}

/// Optimisation settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SftSettings {
    /// Passes over the examples.
    pub epochs: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Examples per forward pass.
    pub batch: usize,
    /// Forward passes per optimizer step.
    pub grad_accum: usize,
    /// Share of all steps spent warming up.
    pub warmup: f64,
    /// The cosine ends at `lr * min_lr_ratio`.
    pub min_lr_ratio: f64,
    /// AdamW weight decay.
    pub weight_decay: f64,
    /// Global gradient-norm clip (0: off).
    pub max_grad_norm: f64,
    /// Validate every N steps (0: once per epoch).
    pub eval_every: usize,
    /// Checkpoint every N steps (0: only at validation points).
    pub checkpoint_every: usize,
    /// Return the model of the best validation (else the last one).
    pub keep_best: bool,
    /// Seeds the example order.
    pub seed: u64,
    /// The arithmetic of the forward and backward (the weights stay f32).
    #[serde(default)]
    pub precision: Precision,
}

impl SftSettings {
    /// Optimizer steps per epoch over `n` examples.
    pub fn steps_per_epoch(&self, n: usize) -> usize {
        n.div_ceil(self.batch.max(1) * self.grad_accum.max(1))
            .max(1)
    }
}

/// One point of the training curve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepLog {
    /// Optimizer step, from 1.
    pub step: usize,
    /// Epoch, from 0.
    pub epoch: usize,
    /// Mean token cross-entropy of the step.
    pub loss: f64,
    /// Learning rate used.
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Target tokens seen.
    pub tokens: usize,
    /// f16 only: the gradients overflowed, so the step was skipped and the
    /// loss scale halved (loss and norm are then 0).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skipped: bool,
}

/// One validation: loss and whatever the caller measured (ROUGE).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Validation {
    /// Optimizer step it followed.
    pub step: usize,
    /// Validation cross-entropy.
    pub loss: f64,
    /// The number that picks the best model (higher is better).
    pub score: f64,
    #[serde(default)]
    /// Further scores (ROUGE-1/2/L).
    pub extra: std::collections::BTreeMap<String, f64>,
}

/// Everything besides the weights and optimizer moments that a resumed run needs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Progress {
    /// Steps done.
    pub step: usize,
    /// Every step so far.
    pub curve: Vec<StepLog>,
    /// Every validation so far.
    pub validations: Vec<Validation>,
    /// Step of the best validation so far; its model is in `best/`.
    pub best_step: Option<usize>,
    /// f16's loss scale, carried so that a resumed run scales as it would have.
    #[serde(default)]
    pub loss_scale: Option<LossScaler>,
}

/// What the caller sees while training runs.
pub trait Observer<M> {
    /// After each optimizer step.
    fn step(&mut self, log: &StepLog, total_steps: usize);
    /// Scores the model on the validation set (called with the inference model).
    fn validate(&mut self, model: &M, step: usize) -> Validation;
    /// A checkpoint was written after `step`.
    fn checkpointed(&mut self, _step: usize) {}
    /// Says where training resumed from.
    fn resumed(&mut self, _step: usize) {}
}

/// A folder of checkpoints: `state.json` (the caller's progress record),
/// `model.bpk`, `optim.bpk` (burn's format, which keeps parameter ids so the
/// optimizer moments reattach), and `best/model.bpk` for SFT's best model.
pub struct Checkpoints {
    /// The folder (it survives a killed run).
    pub dir: PathBuf,
}

impl Checkpoints {
    fn state_path(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    /// Where the best model so far is kept.
    pub fn best_dir(&self) -> PathBuf {
        self.dir.join("best")
    }

    /// Keeps `model` as the best so far, in burn's format (a model with
    /// adapters has no HF form of its own: that needs its base).
    fn save_best<M: Module>(&self, model: &M) -> Result<(), String> {
        let dir = self.best_dir();
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create `{}`: {e}", dir.display()))?;
        model
            .clone()
            .save_file(dir.join("model.bpk"))
            .map_err(|e| format!("cannot write the best model: {e:?}"))
    }

    /// The best model, loaded into the structure of `like`.
    fn load_best<M: Module>(&self, like: &M) -> Result<M, String> {
        like.clone()
            .try_load_file(self.best_dir().join("model.bpk"))
            .map_err(|e| format!("cannot load the best model: {e:?}"))
    }

    /// The saved progress, if a complete checkpoint exists.
    pub fn load_progress<P: serde::de::DeserializeOwned>(&self) -> Option<P> {
        let text = std::fs::read_to_string(self.state_path()).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// The checkpoint's weights loaded into `fresh` (built on a plain device;
    /// the file's parameter ids come along) and its optimizer state into `optim`.
    pub fn load<M: Module>(
        &self,
        fresh: M,
        optim: ModuleOptimizer,
    ) -> Result<(M, ModuleOptimizer), String> {
        let model = fresh
            .try_load_file(self.dir.join("model.bpk"))
            .map_err(|e| format!("cannot load checkpoint weights: {e:?}"))?;
        let optim = optim
            .load(self.dir.join("optim.bpk"))
            .map_err(|e| format!("cannot load checkpoint optimizer: {e:?}"))?;
        Ok((model, optim))
    }

    /// Writes weights, optimizer state and `progress` so a rerun resumes exactly; atomic.
    pub fn save<M: Module, P: Serialize>(
        &self,
        model: &M,
        optim: &ModuleOptimizer,
        progress: &P,
    ) -> Result<(), String> {
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| format!("cannot create `{}`: {e}", self.dir.display()))?;
        let err = |e: burn::store::RecordError| format!("cannot write checkpoint: {e:?}");
        // Weights and moments first, then state.json last and by rename: a
        // checkpoint is complete exactly when state.json names its step.
        let model_tmp = self.dir.join("model.bpk.tmp");
        let optim_tmp = self.dir.join("optim.bpk.tmp");
        model.clone().save_file(&model_tmp).map_err(err)?;
        optim.save(&optim_tmp).map_err(err)?;
        let state_tmp = self.dir.join("state.json.tmp");
        std::fs::write(
            &state_tmp,
            serde_json::to_vec(progress).map_err(|e| e.to_string())?,
        )
        .map_err(|e| format!("cannot write checkpoint state: {e}"))?;
        let mv = |a: &Path, b: &str| {
            std::fs::rename(a, self.dir.join(b))
                .map_err(|e| format!("cannot write checkpoint: {e}"))
        };
        // state.json goes first and comes back last: a crash in between
        // leaves no checkpoint, never weights of one step with another's state.
        std::fs::remove_file(self.state_path()).ok();
        mv(&model_tmp, "model.bpk")?;
        mv(&optim_tmp, "optim.bpk")?;
        mv(&state_tmp, "state.json")
    }
}

/// Reseeds the device RNG (dropout masks) for one step.
fn seed_step(device: &Device, seed: u64, step: usize) {
    let mut r = Rng::new(seed ^ (step as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    device.seed(r.next_u64());
}

/// The order of examples in one epoch.
pub fn epoch_order(n: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    Rng::new(
        seed.wrapping_add(1 + epoch as u64)
            .wrapping_mul(0xA076_1D64_78BD_642F),
    )
    .shuffle(&mut order);
    order
}

/// Collects each float parameter's id and rank.
struct ParamIds(Vec<(ParamId, usize)>);

impl ModuleVisitor for ParamIds {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.0.push((param.id, D));
    }
}

fn sq_norm<const D: usize>(g: &GradientsParams, id: ParamId) -> Option<Tensor<1>> {
    g.get::<D>(id).map(|t| t.powf_scalar(2.0).sum())
}

fn scale<const D: usize>(g: &mut GradientsParams, id: ParamId, by: f64) {
    if let Some(t) = g.remove::<D>(id) {
        g.register::<D>(id, t * by);
    }
}

/// Scales all gradients so their global L2 norm is at most `max_norm`
/// (as `torch.nn.utils.clip_grad_norm_`); returns the norm before clipping.
pub fn clip_global_norm<M: Module>(
    grads: GradientsParams,
    model: &M,
    max_norm: f64,
) -> (GradientsParams, f64) {
    unscale_and_clip(grads, model, 1.0, max_norm)
}

/// Divides all gradients by `loss_scale` (see [`crate::ml::precision::LossScaler`])
/// and clips them as [`clip_global_norm`], in one pass; returns the unscaled
/// norm before clipping (not finite when the gradients overflowed).
pub fn unscale_and_clip<M: Module>(
    mut grads: GradientsParams,
    model: &M,
    loss_scale: f64,
    max_norm: f64,
) -> (GradientsParams, f64) {
    let mut ids = ParamIds(Vec::new());
    model.visit(&mut ids);
    let mut total: Option<Tensor<1>> = None;
    for &(id, rank) in &ids.0 {
        let part = match rank {
            1 => sq_norm::<1>(&grads, id),
            2 => sq_norm::<2>(&grads, id),
            3 => sq_norm::<3>(&grads, id),
            _ => sq_norm::<4>(&grads, id),
        };
        if let Some(p) = part {
            total = Some(match total {
                Some(t) => t + p,
                None => p,
            });
        }
    }
    let norm = total
        .map(|t| crate::ml::to_vec(t)[0] as f64)
        .unwrap_or(0.0)
        .sqrt()
        / loss_scale;
    let mut by = 1.0 / loss_scale;
    if max_norm > 0.0 && norm > max_norm {
        by *= max_norm / (norm + 1e-6);
    }
    if by != 1.0 && norm.is_finite() {
        for &(id, rank) in &ids.0 {
            match rank {
                1 => scale::<1>(&mut grads, id, by),
                2 => scale::<2>(&mut grads, id, by),
                3 => scale::<3>(&mut grads, id, by),
                _ => scale::<4>(&mut grads, id, by),
            }
        }
    }
    (grads, norm)
}

/// One optimizer step of the f32 master `model` on `loss` (computed from it,
/// possibly in half precision): the loss scaled by `scaler` and backpropagated,
/// the gradients unscaled and clipped to `max_grad_norm`, then AdamW, unless
/// f16's gradients overflowed (the step is skipped and the scale lowered).
/// Returns the model and the gradient norm before clipping (not finite for a skipped step).
pub fn optimizer_step<M: Module>(
    model: M,
    optim: &mut ModuleOptimizer,
    loss: Tensor<1>,
    lr: f64,
    max_grad_norm: f64,
    scaler: &mut LossScaler,
) -> (M, f64) {
    let grads = super::recompute::gradients(scaler.scale_loss(loss), &model);
    let (grads, norm) = unscale_and_clip(grads, &model, scaler.scale, max_grad_norm);
    if scaler.update(norm.is_finite()) {
        (optim.step(lr, model, grads), norm)
    } else {
        (model, norm)
    }
}

/// The gradients (of the loss scaled by `scaler`, for the f32 parameters of
/// `model`) and the loss of one optimizer step over the examples `picked`,
/// in micro-batches whose losses are weighted by their share of the tokens.
fn step_gradients<M: LanguageModel>(
    model: &M,
    train: &[Example],
    picked: &[usize],
    settings: &SftSettings,
    scaler: &LossScaler,
) -> (GradientsParams, f64) {
    let device = model.devices()[0].clone();
    let compute = settings.precision.compute(model);
    let tokens: usize = picked.iter().map(|&i| train[i].target.len()).sum();
    let mut acc = GradientsAccumulator::new();
    let mut loss_sum = 0.0;
    for micro in picked.chunks(settings.batch.max(1)) {
        let sources: Vec<Vec<u32>> = micro.iter().map(|&i| train[i].source.clone()).collect();
        let targets: Vec<Vec<u32>> = micro.iter().map(|&i| train[i].target.clone()).collect();
        let n: usize = targets.iter().map(Vec::len).sum();
        let (hidden, labels) = compute.response_hidden(&sources, &targets, &device);
        // Token-weighted across micro-batches: the step's loss is the mean over all its tokens.
        let loss =
            cross_entropy(compute.logits(hidden), &labels) * (n as f64 / tokens.max(1) as f64);
        loss_sum += crate::ml::to_vec(loss.clone())[0] as f64;
        let grads = super::recompute::gradients(scaler.scale_loss(loss), model);
        acc.accumulate(model, grads);
    }
    (acc.grads(), loss_sum)
}

/// Mean token cross-entropy of `model` on `examples`, in batches.
pub fn mean_loss<M: LanguageModel>(
    model: &M,
    examples: &[Example],
    batch: usize,
    device: &Device,
) -> f64 {
    let (mut sum, mut tokens) = (0.0, 0usize);
    for chunk in examples.chunks(batch.max(1)) {
        let sources: Vec<Vec<u32>> = chunk.iter().map(|e| e.source.clone()).collect();
        let targets: Vec<Vec<u32>> = chunk.iter().map(|e| e.target.clone()).collect();
        let n: usize = targets.iter().map(Vec::len).sum();
        let (hidden, labels) = model.response_hidden(&sources, &targets, device);
        sum += crate::ml::to_vec(cross_entropy(model.logits(hidden), &labels))[0] as f64 * n as f64;
        tokens += n;
    }
    sum / tokens.max(1) as f64
}

/// The result of a finished training run.
pub struct Trained<M> {
    /// The best model by validation score (the last one if never validated).
    pub model: M,
    /// Steps, curves and validations.
    pub progress: Progress,
    /// Step training resumed from (0 for a fresh start).
    pub resumed_from: usize,
}

/// Trains `initial` on `train`, resuming from `checkpoints` when they hold a
/// checkpoint of this same run (the caller keys the folder by everything
/// that defines the run).
pub fn train_sft<M: LanguageModel>(
    initial: M,
    train: &[Example],
    settings: &SftSettings,
    checkpoints: &Checkpoints,
    observer: &mut dyn Observer<M>,
    device: &Device,
) -> Result<Trained<M>, String> {
    if train.is_empty() {
        return Err("no training examples".into());
    }
    let train_dev = device.clone().autodiff();
    let per_epoch = settings.steps_per_epoch(train.len());
    let total = per_epoch * settings.epochs.max(1);
    let warmup = (settings.warmup * total as f64).round() as usize;
    let eval_every = if settings.eval_every == 0 {
        per_epoch
    } else {
        settings.eval_every
    };
    let new_optim = || {
        AdamWConfig::new()
            .with_weight_decay(settings.weight_decay as f32)
            .with_epsilon(1e-8)
            .init()
    };

    let (mut model, mut optim, mut progress) = match checkpoints.load_progress::<Progress>() {
        Some(p) if p.step > 0 && p.step <= total => {
            let (m, o) = checkpoints.load(initial, new_optim())?;
            observer.resumed(p.step);
            (m.fork(&train_dev).train(), o, p)
        }
        _ => (
            initial.fork(&train_dev).train(),
            new_optim(),
            Progress::default(),
        ),
    };
    let resumed_from = progress.step;

    while progress.step < total {
        let step = progress.step;
        let epoch = step / per_epoch;
        let pos = step % per_epoch;
        let order = epoch_order(train.len(), settings.seed, epoch);
        let per_step = settings.batch.max(1) * settings.grad_accum.max(1);
        let picked =
            &order[(pos * per_step).min(order.len())..((pos + 1) * per_step).min(order.len())];
        seed_step(&train_dev, settings.seed, step);
        let tokens: usize = picked.iter().map(|&i| train[i].target.len()).sum();
        let scaler = progress
            .loss_scale
            .get_or_insert_with(|| LossScaler::new(settings.precision));
        let (grads, loss_sum) = step_gradients(&model, train, picked, settings, scaler);
        let (grads, grad_norm) =
            unscale_and_clip(grads, &model, scaler.scale, settings.max_grad_norm);
        let lr = cosine_lr(step, total, warmup, settings.lr, settings.min_lr_ratio);
        let finite = loss_sum.is_finite() && grad_norm.is_finite();
        let skipped = !scaler.update(finite);
        if finite && !skipped {
            model = optim.step(lr, model, grads);
        } else if !skipped || scaler.scale < 1.0 {
            return Err(format!(
                "training diverged at step {}: the loss is {loss_sum} and the gradient norm {grad_norm} (learning rate {lr:e}, precision {}); lower `lr`, keep `max-grad-norm` on{}",
                progress.step + 1,
                settings.precision,
                if settings.precision == Precision::F16 {
                    ", or train in bf16 (f16 kept overflowing)"
                } else {
                    ""
                },
            ));
        }
        progress.step += 1;
        let log = StepLog {
            step: progress.step,
            epoch,
            loss: if skipped { 0.0 } else { loss_sum },
            lr,
            grad_norm: if skipped { 0.0 } else { grad_norm },
            tokens,
            skipped,
        };
        observer.step(&log, total);
        progress.curve.push(log);

        let validate_now = progress.step % eval_every == 0 || progress.step == total;
        if validate_now {
            let v = observer.validate(&model.valid(), progress.step);
            let better = progress
                .best_step
                .and_then(|b| progress.validations.iter().find(|x| x.step == b))
                // Ties (common early, when every summary scores 0) go to the lower loss.
                .is_none_or(|b| v.score > b.score || (v.score == b.score && v.loss < b.loss));
            if better && settings.keep_best {
                checkpoints.save_best(&model.valid())?;
                progress.best_step = Some(progress.step);
            }
            progress.validations.push(v);
        }
        let checkpoint_now = (settings.checkpoint_every > 0
            && progress.step % settings.checkpoint_every == 0)
            || (validate_now && progress.step < total);
        if checkpoint_now && progress.step < total {
            checkpoints.save(&model, &optim, &progress)?;
            observer.checkpointed(progress.step);
        }
    }
    let best = match progress.best_step.filter(|_| settings.keep_best) {
        Some(_) => checkpoints.load_best(&model.valid())?,
        None => model.valid(),
    };
    Ok(Trained {
        model: best,
        progress,
        resumed_from,
    })
}
