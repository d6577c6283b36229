//! The `ppo` stage kind: PPO of an SFT summarizer against a reward model.
//!
//! Inputs by role: the `policy` (an sft stage's model), the `reward-model`,
//! and `datasets`. The policy and the frozen KL reference both start from
//! the SFT model (with `reference "previous"` the reference then follows the
//! policy one update behind). Online, each update samples one summary per
//! product, scores it with the lexical featurizer and the reward model;
//! offline, it replays one stored candidate per product with its stored
//! scores. Checkpoints after every `checkpoint-every` updates make a killed
//! run resume exactly.

use burn::optim::{AdamWConfig, ModuleOptimizer};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokenizers::Tokenizer;

use crate::ml::bart::ValueHead;
use crate::ml::decoding::GenerateOptions;
use crate::ml::lm::{LanguageModel, WithModel};
use crate::ml::lora;
use crate::ml::peft::Base;
use crate::ml::ppo::{KlController, RewardNorm, RunningMoments};
use crate::ml::precision::Precision;
use crate::ml::rlhf::{PolicyValue, PpoModules, PpoSettings, PpoState, UpdateStats, ppo_update};
use crate::ml::train::{Checkpoints, epoch_order};
use crate::rng::Rng;
use crate::stages::formats::adapter::LoraParams;
use crate::stages::formats::dataset::{DatasetInput, GoodTarget, Product, features, products_of};
use crate::stages::formats::model::{ModelInput, Sampling, decode, save_model_folder};
use crate::stages::formats::prompt::Prompter;
use crate::stages::formats::reward::{RewardModelInput, Scorer, ToScore};
use crate::stages::kind::{Kind, Metrics, StageContext, eta, progress_bar, write_jsonl};
use crate::text::lexical::{Lexical, ReviewProfile};

/// The `ppo` kind.
pub struct PpoStage;

/// Where the summaries PPO learns from come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Sample from the policy, featurize the samples, score them.
    #[default]
    Online,
    /// Replay stored candidates with their stored scores.
    Offline,
}

/// The KL penalty's reference model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Reference {
    /// The frozen SFT model.
    #[default]
    Sft,
    /// The policy as it was before the last update.
    Previous,
}

/// The parameters of `plugins/builtin/ppo.kdl` (the runner passes exactly
/// the manifest's, which the manifest tests keep equal to these fields).
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case", default)]
pub struct Params {
    /// Online or offline.
    pub mode: Mode,
    /// PPO updates.
    #[schemars(range(min = 1, max = 10000000))]
    pub updates: i64,
    /// Products (rollouts) per update.
    #[schemars(range(min = 1, max = 1000000))]
    pub batch: i64,
    /// Rollouts per optimizer step.
    #[schemars(range(min = 1, max = 1000000))]
    pub minibatch: i64,
    /// Passes over each batch of rollouts.
    #[schemars(range(min = 1, max = 1000))]
    pub ppo_epochs: i64,
    /// Learning rate of policy and value head.
    #[schemars(range(min = 0))]
    pub lr: f64,
    /// β of the per-token KL penalty.
    #[schemars(range(min = 0))]
    pub kl_coef: f64,
    /// The KL penalty's reference.
    pub reference: Reference,
    /// Adaptive KL: target sequence KL (0: β stays fixed).
    #[schemars(range(min = 0))]
    pub kl_target: f64,
    /// Adaptive KL: horizon.
    #[schemars(range(min = 1))]
    pub kl_horizon: f64,
    /// Discount.
    #[schemars(range(min = 0, max = 1))]
    pub gamma: f64,
    /// GAE λ.
    #[schemars(range(min = 0, max = 1))]
    pub lambda: f64,
    /// Policy ratio clip.
    #[schemars(range(min = 0))]
    pub clip: f64,
    /// Value clip.
    #[schemars(range(min = 0))]
    pub value_clip: f64,
    /// Weight of the value loss.
    #[schemars(range(min = 0))]
    pub vf_coef: f64,
    /// Weight of the supervised cross-entropy.
    #[schemars(range(min = 0))]
    pub ce_mix: f64,
    /// The summary the cross-entropy term teaches.
    pub ce_target: GoodTarget,
    /// Global gradient-norm clip (0: off).
    #[schemars(range(min = 0))]
    pub max_grad_norm: f64,
    /// How scores are normalised into rewards.
    pub reward_norm: RewardNorm,
    /// Arithmetic of rollouts, scoring and updates.
    pub precision: Precision,
    /// Subtracted from the score of a sample without EOS.
    #[schemars(range(min = 0))]
    pub missing_eos_penalty: f64,
    /// How rollouts are sampled.
    #[serde(flatten)]
    pub sampling: RolloutSampling,
    /// What the model reads: a Jinja template over `reviews` and `product` (empty: the model's default).
    pub prompt: String,
    /// Source tokens kept.
    #[schemars(range(min = 8, max = 1000000))]
    pub max_source: i64,
    /// Checkpoint every N updates (0: never).
    #[schemars(range(min = 0))]
    pub checkpoint_every: i64,
    /// Split the rollouts are drawn from.
    pub train_split: String,
    /// LoRA and activation checkpointing.
    #[serde(flatten)]
    pub lora: LoraParams,
}

/// How rollouts are sampled: eval's [`Sampling`] with other defaults. The
/// whole distribution is sampled, as TRL samples rollouts: with top-k or
/// top-p the sampled tokens are likelier under the policy than it says, the
/// KL estimate goes negative and the penalty pays the policy for entropy.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case", default)]
pub struct RolloutSampling {
    /// Sampling temperature (also divides the logits of log-probabilities).
    #[schemars(range(min = 0.01))]
    pub temperature: f64,
    /// Keep the k most likely tokens (0: all).
    #[schemars(range(min = 0))]
    pub top_k: i64,
    /// Nucleus mass.
    #[schemars(range(min = 0.01, max = 1))]
    pub top_p: f64,
    /// The longest summary.
    #[schemars(range(min = 1, max = 1000000))]
    pub max_new_tokens: i64,
}

impl Default for RolloutSampling {
    fn default() -> RolloutSampling {
        RolloutSampling {
            temperature: 0.9,
            top_k: 0,
            top_p: 1.0,
            max_new_tokens: 150,
        }
    }
}

impl RolloutSampling {
    /// The same settings as eval's sampling parameters.
    pub fn sampling(&self) -> Sampling {
        Sampling {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            max_new_tokens: self.max_new_tokens,
        }
    }
}

impl Default for Params {
    fn default() -> Params {
        Params {
            mode: Mode::Online,
            updates: 20,
            batch: 8,
            minibatch: 4,
            ppo_epochs: 2,
            lr: 0.0001,
            kl_coef: 0.2,
            reference: Reference::Sft,
            kl_target: 0.0,
            kl_horizon: 10000.0,
            gamma: 0.99,
            lambda: 0.95,
            clip: 0.2,
            value_clip: 0.2,
            vf_coef: 0.75,
            ce_mix: 0.35,
            ce_target: GoodTarget::Preferred,
            max_grad_norm: 1.0,
            reward_norm: RewardNorm::None,
            precision: Precision::F32,
            missing_eos_penalty: 1.0,
            sampling: RolloutSampling::default(),
            prompt: String::new(),
            max_source: 512,
            checkpoint_every: 5,
            train_split: "train".into(),
            lora: LoraParams::default(),
        }
    }
}

impl Params {
    fn generation(&self) -> GenerateOptions {
        self.sampling.sampling().options(true)
    }

    fn settings(&self) -> PpoSettings {
        PpoSettings {
            gamma: self.gamma,
            lambda: self.lambda,
            clip: self.clip,
            value_clip: self.value_clip,
            vf_coef: self.vf_coef,
            ce_mix: self.ce_mix,
            ppo_epochs: self.ppo_epochs as usize,
            minibatch: self.minibatch as usize,
            lr: self.lr,
            max_grad_norm: self.max_grad_norm,
            missing_eos_penalty: self.missing_eos_penalty,
            reward_norm: self.reward_norm,
            generation: self.generation(),
            precision: self.precision,
        }
    }

    fn kl_controller(&self) -> KlController {
        KlController {
            value: self.kl_coef,
            adaptive: (self.kl_target > 0.0).then_some((self.kl_target, self.kl_horizon)),
        }
    }
}

/// The inputs of a ppo stage.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Inputs {
    /// The initial policy and frozen reference (an sft stage).
    pub policy: ModelInput,
    /// What scores the samples.
    pub reward_model: RewardModelInput,
    /// Datasets with the products to roll out on.
    pub datasets: Vec<DatasetInput>,
}

/// Everything a resumed run needs besides weights and optimizer moments.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Progress {
    update: usize,
    state: PpoState,
    curve: Vec<UpdateStats>,
}

/// One rollout product: its tokenized source, reviews profile, CE target, stored candidates.
struct Rollout<'a> {
    product: &'a Product,
    source: Vec<u32>,
    ce_target: Vec<u32>,
    /// The reviews' lexical profile, built once: online, every sample is scored against it.
    profile: ReviewProfile,
}

/// What stays fixed across updates.
struct Setup<'a, M> {
    p: &'a Params,
    tk: Tokenizer,
    prompter: Prompter,
    scorer: Scorer,
    lexical: Lexical,
    reference: M,
    adapter_base: Option<Base>,
    settings: PpoSettings,
    device: burn::tensor::Device,
}

/// The products of the training split that can be rolled out.
fn rollouts<'a, M>(s: &Setup<'_, M>, products: &'a [Product]) -> Result<Vec<Rollout<'a>>, String> {
    let p = s.p;
    let max_new = p.sampling.max_new_tokens as usize;
    let mut out = Vec::new();
    for prod in products.iter().filter(|x| x.split == p.train_split) {
        if p.mode == Mode::Offline && !prod.candidates.iter().any(|c| c.scores.is_some()) {
            continue;
        }
        let Some(target) = prod.targets(p.ce_target.target()).into_iter().next() else {
            continue;
        };
        out.push(Rollout {
            product: prod,
            source: s.prompter.source(&s.tk, prod)?.ids,
            ce_target: s.prompter.target(&s.tk, &target, max_new + 1)?,
            profile: s.lexical.profile(&prod.reviews),
        });
    }
    if out.is_empty() {
        return Err(format!(
            "no `{}` products with a `{}` summary{}",
            p.train_split,
            p.ce_target.target().name(),
            if p.mode == Mode::Offline {
                " and scored candidates"
            } else {
                ""
            }
        ));
    }
    Ok(out)
}

/// The trained pair, the previous policy, the optimizer and the progress:
/// from the checkpoint when one is there, else fresh from the SFT policy.
type Resumed<M> = (PolicyValue<M>, Option<M>, ModuleOptimizer, Progress);

fn resume_or_start<M: LanguageModel>(
    s: &Setup<'_, M>,
    policy: M,
    ckpt: &Checkpoints,
    log: &mut dyn std::io::Write,
) -> Result<Resumed<M>, String> {
    let updates = s.p.updates as usize;
    let new_optim = || {
        AdamWConfig::new()
            .with_weight_decay(0.0)
            .with_epsilon(1e-8)
            .init()
    };
    let fresh = PpoModules {
        previous: (s.p.reference == Reference::Previous).then(|| policy.clone()),
        trained: PolicyValue {
            value: ValueHead::new(policy.hidden_size(), &s.device),
            policy,
        },
    };
    match ckpt.load_progress::<Progress>() {
        Some(pr) if pr.update > 0 && pr.update <= updates => {
            let (m, o) = ckpt.load(fresh, new_optim())?;
            let _ = writeln!(
                log,
                "resuming from the checkpoint after update {}",
                pr.update
            );
            Ok((m.trained, m.previous, o, pr))
        }
        _ => Ok((
            fresh.trained,
            fresh.previous,
            new_optim(),
            Progress {
                update: 0,
                state: PpoState {
                    kl: s.p.kl_controller(),
                    reward_moments: RunningMoments::default(),
                    loss_scale: None,
                },
                curve: Vec::new(),
            },
        )),
    }
}

/// Offline: one stored, scored candidate per product, as tokens, with its stored scores.
type Replayed = (Vec<Vec<u32>>, Vec<[f64; 7]>);

fn replay<M>(s: &Setup<'_, M>, picked: &[&Rollout<'_>], rng: &mut Rng) -> Result<Replayed, String> {
    let mut rows = Vec::new();
    let mut scores = Vec::new();
    for r in picked {
        let scored: Vec<_> = r
            .product
            .candidates
            .iter()
            .filter(|c| c.scores.is_some())
            .collect();
        let c = scored[rng.below(scored.len() as u64) as usize];
        let f = features(r.product, c, 1.0)?;
        scores.push(f.map(|x| x as f64));
        rows.push(
            s.prompter
                .target(&s.tk, &c.text, s.p.sampling.max_new_tokens as usize + 1)?,
        );
    }
    Ok((rows, scores))
}

/// One PPO update on the batch of update `u`.
fn one_update<M: LanguageModel>(
    s: &Setup<'_, M>,
    rollouts: &[Rollout<'_>],
    model: PolicyValue<M>,
    previous: Option<&M>,
    optim: &mut ModuleOptimizer,
    progress: &mut Progress,
    seed: u64,
) -> Result<(PolicyValue<M>, UpdateStats), String> {
    let u = progress.update;
    let batch = (s.p.batch as usize).min(rollouts.len());
    let per_epoch = rollouts.len().div_ceil(batch);
    let order = epoch_order(rollouts.len(), seed, u / per_epoch);
    let start = (u % per_epoch) * batch;
    let picked: Vec<&Rollout> = (0..batch)
        .map(|k| &rollouts[order[(start + k) % order.len()]])
        .collect();
    let mut rng = Rng::new(seed ^ (u as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let sources: Vec<Vec<u32>> = picked.iter().map(|r| r.source.clone()).collect();
    let ce: Vec<Vec<u32>> = picked.iter().map(|r| r.ce_target.clone()).collect();
    let (given, stored_scores) = match s.p.mode {
        Mode::Offline => {
            let (rows, scores) = replay(s, &picked, &mut rng)?;
            (Some(rows), scores)
        }
        Mode::Online => (None, Vec::new()),
    };
    let mut reward = |responses: &[Vec<u32>]| -> Result<Vec<f64>, String> {
        let texts: Vec<String> = responses.iter().map(|r| decode(&s.tk, r)).collect();
        let items: Vec<ToScore> = texts
            .iter()
            .zip(&picked)
            .enumerate()
            .map(|(i, (text, r))| ToScore {
                product: &r.product.id,
                reviews: &r.product.reviews,
                summary: text,
                features: if given.is_some() {
                    stored_scores.get(i).copied()
                } else if s.scorer.reads_features() {
                    Some(s.lexical.score(&r.profile, text))
                } else {
                    None
                },
            })
            .collect();
        s.scorer.rewards(&items, &s.device)
    };
    ppo_update(
        model,
        optim,
        previous.unwrap_or(&s.reference),
        &sources,
        given.as_deref(),
        (s.settings.ce_mix > 0.0).then_some(ce.as_slice()),
        &mut reward,
        &mut progress.state,
        &s.settings,
        &mut rng,
        &s.device,
    )
}

fn log_update(
    log: &mut dyn std::io::Write,
    stats: &UpdateStats,
    done: usize,
    total: usize,
    eta: String,
) {
    let _ = writeln!(
        log,
        "{} update {done}/{total} score {:.4} ±{:.4} reward {:.3} KL {:.3} β {:.3} pg {:.4} vf {:.4} ce {:.4} clip {:.3} entropy {:.3} len {:.1} ETA {eta}",
        progress_bar(done, total),
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
    );
}

/// The policy folder, the value head and the curve.
fn write_outputs<M: LanguageModel>(
    out: &std::path::Path,
    model: &PolicyValue<M>,
    setup: &Setup<'_, M>,
    tokenizer_dir: &std::path::Path,
    curve: &[UpdateStats],
) -> Result<(), String> {
    let (tk, base) = (&setup.tk, setup.adapter_base.as_ref());
    save_model_folder(&out.join("model"), &model.policy, tk, tokenizer_dir, base)?;
    let mut store = crate::ml::safetensors_writer(&out.join("value_head.safetensors"));
    burn::store::ModuleSnapshot::save_into(&model.value, &mut store)
        .map_err(|e| format!("cannot save the value head: {e}"))?;
    write_jsonl(&out.join("ppo_curve.jsonl"), curve)
}

/// An error naming the update and the settings when PPO's numbers are no longer finite.
fn diverged(stats: &UpdateStats, update: usize, p: &Params) -> Result<(), String> {
    let values = [
        ("policy loss", stats.policy_loss),
        ("value loss", stats.value_loss),
        ("cross-entropy", stats.ce_loss),
        ("KL", stats.kl),
        ("score", stats.score),
    ];
    match values.iter().find(|(_, v)| !v.is_finite()) {
        None => Ok(()),
        Some((what, v)) => Err(format!(
            "PPO diverged at update {update}: the {what} is {v}; lower `lr` (now {}) or `vf-coef` (now {}), or keep `max-grad-norm` on",
            p.lr, p.vf_coef
        )),
    }
}

/// Means over the first and last few updates.
/// Why truncated sampling and a KL penalty do not mix, when they are asked for together.
fn truncation_warning(p: &Params) -> Option<String> {
    let truncated = p.sampling.top_k > 0 || p.sampling.top_p < 1.0;
    (p.mode == Mode::Online && p.kl_coef > 0.0 && truncated).then(|| {
        format!(
            "warning: rollouts sample with top-k {} / top-p {}: the KL penalty's estimate is then biased \
             (negative KL, a penalty that pays for entropy); `top-k 0` and `top-p 1.0` sample the policy itself",
            p.sampling.top_k, p.sampling.top_p
        )
    })
}

fn curve_metrics(progress: &Progress) -> Metrics {
    let c = &progress.curve;
    let k = c.len().clamp(1, 3);
    let mean = |xs: &[UpdateStats], f: fn(&UpdateStats) -> f64| {
        xs.iter().map(f).sum::<f64>() / xs.len().max(1) as f64
    };
    let last = &c[c.len() - k..];
    let mut m = Metrics::new();
    m.insert("updates".into(), c.len() as f64);
    m.insert("reward_first".into(), mean(&c[..k], |s| s.score));
    m.insert("reward_last".into(), mean(last, |s| s.score));
    m.insert("kl_last".into(), mean(last, |s| s.kl));
    m.insert("kl_coef_last".into(), progress.state.kl.value);
    m.insert("entropy_last".into(), mean(last, |s| s.entropy));
    m.insert("missing_eos_last".into(), mean(last, |s| s.missing_eos));
    m.insert(
        "response_length_last".into(),
        mean(last, |s| s.response_length),
    );
    m.insert("clipfrac_mean".into(), mean(c, |s| s.clipfrac));
    m
}

impl Kind for PpoStage {
    type Params = Params;
    type Inputs = Inputs;

    fn check(&self, p: &Params) -> Result<(), String> {
        p.lora.check(p.precision)?;
        p.generation().check()
    }

    fn run(
        &self,
        p: &Params,
        inputs: &Inputs,
        ctx: &mut StageContext<'_>,
    ) -> Result<Metrics, String> {
        let products = products_of(&inputs.datasets)?;
        let device = crate::ml::device(ctx.backend, ctx.seed as u64)?;
        let work = Ppo {
            p,
            inputs,
            ctx,
            products: &products,
            device: device.clone(),
        };
        inputs.policy.with_model(&device, work)?
    }
}

/// One ppo run, generic over the policy's family.
struct Ppo<'a, 'c> {
    p: &'a Params,
    inputs: &'a Inputs,
    ctx: &'a mut StageContext<'c>,
    products: &'a [Product],
    device: burn::tensor::Device,
}

impl WithModel for Ppo<'_, '_> {
    type Output = Result<Metrics, String>;

    fn run<M: LanguageModel>(self, mut policy: M, _unused: Vec<String>) -> Result<Metrics, String> {
        let Ppo {
            p,
            inputs,
            ctx,
            products,
            device,
        } = self;
        let tk = inputs.policy.tokenizer()?;
        let tokenizer_dir = inputs.policy.folder();
        // PPO runs without dropout (TRL, lm-human-preferences).
        policy.set_dropout(0.0);
        let policy = p
            .lora
            .prepare(policy, ctx.seed as u64, &device, &mut *ctx.log)?;
        let setup = Setup {
            p,
            prompter: Prompter::for_model(&p.prompt, &tokenizer_dir, &policy, p.max_source)?,
            // Frozen: cast to the compute precision once, not every update. With
            // LoRA it is the policy with its adapters off: no second copy.
            reference: p.precision.compute(&lora::base_of(&policy)),
            adapter_base: p
                .lora
                .base(|| Ok(Base::of_result(&inputs.policy.path, "model")))?,
            tk,
            scorer: inputs.reward_model.scorer(&device)?,
            lexical: Lexical::new(),
            settings: p.settings(),
            device,
        };
        let rollouts = rollouts(&setup, products)?;
        train(&setup, &rollouts, policy, ctx, &tokenizer_dir)
    }
}

/// The updates, checkpoints and outputs.
fn train<M: LanguageModel>(
    setup: &Setup<'_, M>,
    rollouts: &[Rollout<'_>],
    policy: M,
    ctx: &mut StageContext<'_>,
    tokenizer_dir: &std::path::Path,
) -> Result<Metrics, String> {
    let p = setup.p;
    let updates = p.updates as usize;
    let ckpt = Checkpoints {
        dir: ctx.checkpoint_dir.to_path_buf(),
    };
    let (mut model, mut previous, mut optim, mut progress) =
        resume_or_start(setup, policy, &ckpt, ctx.log)?;
    let _ = writeln!(
        ctx.log,
        "ppo ({}, {}): {} products, {updates} updates of {}",
        model.policy.architecture(),
        match p.mode {
            Mode::Online => "online",
            Mode::Offline => "offline",
        },
        rollouts.len(),
        (p.batch as usize).min(rollouts.len())
    );
    if let Some(w) = truncation_warning(p) {
        let _ = writeln!(ctx.log, "{w}");
    }
    let seed = ctx.seed as u64;
    let (started, first_update) = (std::time::Instant::now(), progress.update);
    while progress.update < updates {
        let before = previous.is_some().then(|| model.policy.clone());
        let (m, stats) = one_update(
            setup,
            rollouts,
            model,
            previous.as_ref(),
            &mut optim,
            &mut progress,
            seed,
        )?;
        diverged(&stats, progress.update + 1, p)?;
        model = m;
        if before.is_some() {
            previous = before;
        }
        progress.update += 1;
        let left = eta(
            started,
            progress.update - first_update,
            updates - progress.update,
        );
        log_update(ctx.log, &stats, progress.update, updates, left);
        progress.curve.push(stats);
        let every = p.checkpoint_every as usize;
        if every > 0 && progress.update % every == 0 && progress.update < updates {
            let modules = PpoModules {
                trained: model.clone(),
                previous: previous.clone(),
            };
            ckpt.save(&modules, &optim, &progress)?;
            let _ = writeln!(ctx.log, "checkpoint after update {}", progress.update);
        }
    }
    write_outputs(ctx.output, &model, setup, tokenizer_dir, &progress.curve)?;
    Ok(curve_metrics(&progress))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rollouts_sample_the_whole_distribution_unless_asked_otherwise_and_then_it_warns() {
        let p = Params::default();
        assert_eq!((p.sampling.top_k, p.sampling.top_p), (0, 1.0));
        assert_eq!(truncation_warning(&p), None);
        let mut truncated = Params::default();
        truncated.sampling.top_p = 0.9;
        assert!(truncation_warning(&truncated).is_some_and(|w| w.contains("biased")));
        // Offline PPO replays stored summaries, and without a penalty nothing is biased.
        truncated.mode = Mode::Offline;
        assert_eq!(truncation_warning(&truncated), None);
        truncated.mode = Mode::Online;
        truncated.kl_coef = 0.0;
        assert_eq!(truncation_warning(&truncated), None);
    }
}
