//! The `grpo` stage kind: critic-free online RL of a summarizer (GRPO,
//! RLOO, REINFORCE++, Dr. GRPO) against one or more reward models.
//!
//! Inputs by role: the `policy` (an sft or model stage), the `reward-model`s
//! and `datasets`. Each update samples `group-size` summaries of each of
//! `batch` products, scores them (the lexical featurizer's seven scores for
//! φ and the naive mean; the text itself for a text reward model), weighs
//! the rewards, and optimises the clipped token loss on advantages formed
//! within each group. With `beta` above 0 a frozen copy of the starting
//! policy is the KL reference. Checkpoints after every `checkpoint-every`
//! updates make a killed run resume exactly.

use std::collections::BTreeMap;

use burn::optim::{AdamWConfig, ModuleOptimizer};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokenizers::Tokenizer;

use crate::ml::decoding::GenerateOptions;
use crate::ml::grpo::{Advantage, KlPlacement, LossAggregation, ScaleRewards};
use crate::ml::grpo_step::{GrpoSettings, GrpoState, GrpoStats, grpo_update};
use crate::ml::lm::{LanguageModel, WithModel};
use crate::ml::lora;
use crate::ml::peft::Base;
use crate::ml::ppo::RewardNorm;
use crate::ml::precision::Precision;
use crate::ml::train::{Checkpoints, epoch_order};
use crate::rng::Rng;
use crate::stages::formats::adapter::LoraParams;
use crate::stages::formats::dataset::{DatasetInput, Product, products_of};
use crate::stages::formats::model::{ModelInput, Sampling, decode, save_model_folder};
use crate::stages::formats::prompt::Prompter;
use crate::stages::formats::reward::{RewardModelInput, Scorer, ToScore};
use crate::stages::kind::{Kind, Metrics, StageContext, eta, progress_bar, write_jsonl};
use crate::text::lexical::{Lexical, ReviewProfile};

/// The `grpo` kind.
pub struct GrpoStage;

/// The parameters of `plugins/builtin/grpo.kdl`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case", default)]
pub struct Params {
    /// Updates.
    #[schemars(range(min = 1, max = 10000000))]
    pub updates: i64,
    /// Products (prompts) per update.
    #[schemars(range(min = 1, max = 1000000))]
    pub batch: i64,
    /// Summaries sampled per product.
    #[schemars(range(min = 1, max = 4096))]
    pub group_size: i64,
    /// Completions per optimizer step (0: all of an update's).
    #[schemars(range(min = 0, max = 100000000))]
    pub minibatch: i64,
    /// Passes over each update's completions (μ).
    #[schemars(range(min = 1, max = 1000))]
    pub iterations: i64,
    /// The advantage estimator.
    pub advantage: Advantage,
    /// What the centred rewards are divided by.
    pub scale_rewards: ScaleRewards,
    /// How token losses are aggregated.
    pub loss_aggregation: LossAggregation,
    /// Lower clip ε.
    #[schemars(range(min = 0))]
    pub epsilon: f64,
    /// Upper clip ε (0: as `epsilon`).
    #[schemars(range(min = 0))]
    pub epsilon_high: f64,
    /// KL coefficient β (0: no reference model).
    #[schemars(range(min = 0))]
    pub beta: f64,
    /// Where the KL enters.
    pub kl: KlPlacement,
    /// Weight of each reward model, in input order (empty: 1 each).
    pub reward_weights: Vec<f64>,
    /// Learning rate.
    #[schemars(range(min = 0))]
    pub lr: f64,
    /// Global gradient-norm clip (0: off).
    #[schemars(range(min = 0))]
    pub max_grad_norm: f64,
    /// How the weighted rewards are normalised.
    pub reward_norm: RewardNorm,
    /// Subtracted from the reward of a summary without EOS.
    #[schemars(range(min = 0))]
    pub missing_eos_penalty: f64,
    /// Arithmetic of sampling, scoring and updates.
    pub precision: Precision,
    /// How summaries are sampled.
    #[serde(flatten)]
    pub sampling: GroupSampling,
    /// What the model reads (as sft's `prompt`).
    pub prompt: String,
    /// Source tokens kept.
    #[schemars(range(min = 8, max = 1000000))]
    pub max_source: i64,
    /// Checkpoint every N updates (0: never).
    #[schemars(range(min = 0))]
    pub checkpoint_every: i64,
    /// Split the prompts are drawn from.
    pub train_split: String,
    /// LoRA and activation checkpointing.
    #[serde(flatten)]
    pub lora: LoraParams,
}

/// How summaries are sampled (TRL's GRPO samples the whole distribution at temperature 1).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case", default)]
pub struct GroupSampling {
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

impl Default for GroupSampling {
    fn default() -> GroupSampling {
        GroupSampling {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            max_new_tokens: 150,
        }
    }
}

impl Default for Params {
    fn default() -> Params {
        Params {
            updates: 20,
            batch: 4,
            group_size: 4,
            minibatch: 0,
            iterations: 1,
            advantage: Advantage::Grpo,
            scale_rewards: ScaleRewards::Auto,
            loss_aggregation: LossAggregation::Dapo,
            epsilon: 0.2,
            epsilon_high: 0.0,
            beta: 0.0,
            kl: KlPlacement::Loss,
            reward_weights: Vec::new(),
            lr: 1e-6,
            max_grad_norm: 1.0,
            reward_norm: RewardNorm::None,
            missing_eos_penalty: 0.0,
            precision: Precision::F32,
            sampling: GroupSampling::default(),
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
        Sampling {
            temperature: self.sampling.temperature,
            top_k: self.sampling.top_k,
            top_p: self.sampling.top_p,
            max_new_tokens: self.sampling.max_new_tokens,
        }
        .options(true)
    }

    fn completions(&self) -> usize {
        (self.batch * self.group_size) as usize
    }

    fn settings(&self, reward_models: usize) -> GrpoSettings {
        let mut weights = self.reward_weights.clone();
        weights.resize(reward_models, 1.0);
        GrpoSettings {
            group_size: self.group_size as usize,
            advantage: self.advantage,
            scale_rewards: self.scale_rewards,
            loss_aggregation: self.loss_aggregation,
            epsilon: self.epsilon,
            epsilon_high: if self.epsilon_high > 0.0 {
                self.epsilon_high
            } else {
                self.epsilon
            },
            iterations: self.iterations as usize,
            minibatch: match self.minibatch {
                0 => self.completions(),
                m => m as usize,
            },
            beta: self.beta,
            kl: self.kl,
            reward_weights: weights,
            reward_norm: self.reward_norm,
            missing_eos_penalty: self.missing_eos_penalty,
            lr: self.lr,
            max_grad_norm: self.max_grad_norm,
            generation: self.generation(),
            precision: self.precision,
        }
    }
}

/// The inputs of a grpo stage.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Inputs {
    /// The initial policy (and KL reference).
    pub policy: ModelInput,
    /// What scores the summaries.
    pub reward_model: Vec<RewardModelInput>,
    /// Datasets with the products to sample on.
    pub datasets: Vec<DatasetInput>,
}

/// One point of the curve: the update's numbers and each reward model's mean reward.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CurvePoint {
    update: usize,
    #[serde(flatten)]
    stats: GrpoStats,
    /// `rewards/<stage>/mean`.
    #[serde(flatten)]
    per_model: BTreeMap<String, f64>,
}

/// Everything a resumed run needs besides weights and optimizer moments.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Progress {
    update: usize,
    curve: Vec<CurvePoint>,
    state: GrpoState,
}

impl Kind for GrpoStage {
    type Params = Params;
    type Inputs = Inputs;

    fn check(&self, p: &Params) -> Result<(), String> {
        p.lora.check(p.precision)?;
        if p.group_size < 2 && p.advantage.needs_groups() {
            return Err(format!(
                "`advantage \"{}\"` compares the summaries of a product with each other: `group-size` must be at least 2 (TRL uses 8), not {}",
                p.advantage.name(),
                p.group_size
            ));
        }
        let n = p.completions();
        if p.minibatch > 0 && !n.is_multiple_of(p.minibatch as usize) {
            return Err(format!(
                "an update's {n} summaries (batch {} × group-size {}) do not split into minibatches of {}: pick a divisor of {n}",
                p.batch, p.group_size, p.minibatch
            ));
        }
        if p.epsilon_high > 0.0 && p.epsilon_high < p.epsilon {
            return Err(format!(
                "`epsilon-high` ({}) is below `epsilon` ({}): the upper clip is the wider one (DAPO's clip-higher uses 0.28 over 0.2)",
                p.epsilon_high, p.epsilon
            ));
        }
        p.generation().check()
    }

    fn run(
        &self,
        p: &Params,
        inputs: &Inputs,
        ctx: &mut StageContext<'_>,
    ) -> Result<Metrics, String> {
        if !p.reward_weights.is_empty() && p.reward_weights.len() != inputs.reward_model.len() {
            return Err(format!(
                "`reward-weights` has {} weights for {} reward models: give one per `reward-model` input, in their order",
                p.reward_weights.len(),
                inputs.reward_model.len()
            ));
        }
        let products = products_of(&inputs.datasets)?;
        let device = crate::ml::device(ctx.backend, ctx.seed as u64)?;
        let work = Grpo {
            p,
            inputs,
            ctx,
            products: &products,
            device: device.clone(),
        };
        inputs.policy.with_model(&device, work)?
    }
}

/// One grpo run, generic over the policy's family.
struct Grpo<'a, 'c> {
    p: &'a Params,
    inputs: &'a Inputs,
    ctx: &'a mut StageContext<'c>,
    products: &'a [Product],
    device: burn::tensor::Device,
}

/// A product to sample on: its tokenized prompt and its reviews' lexical profile.
struct Prompt<'a> {
    product: &'a Product,
    source: Vec<u32>,
    profile: ReviewProfile,
}

/// What stays fixed across updates.
struct Setup<'a, M> {
    p: &'a Params,
    tk: Tokenizer,
    scorers: Vec<(String, Scorer)>,
    lexical: Lexical,
    reference: Option<M>,
    adapter_base: Option<Base>,
    settings: GrpoSettings,
    device: burn::tensor::Device,
}

impl WithModel for Grpo<'_, '_> {
    type Output = Result<Metrics, String>;

    fn run<M: LanguageModel>(self, mut policy: M, _unused: Vec<String>) -> Result<Metrics, String> {
        let Grpo {
            p,
            inputs,
            ctx,
            products,
            device,
        } = self;
        let tk = inputs.policy.tokenizer()?;
        let tokenizer_dir = inputs.policy.folder();
        policy.set_dropout(0.0);
        let prompter = Prompter::for_model(&p.prompt, &tokenizer_dir, &policy, p.max_source)?;
        let lexical = Lexical::new();
        let mut prompts = Vec::new();
        for prod in products.iter().filter(|x| x.split == p.train_split) {
            prompts.push(Prompt {
                product: prod,
                source: prompter.source(&tk, prod)?.ids,
                profile: lexical.profile(&prod.reviews),
            });
        }
        if prompts.is_empty() {
            return Err(format!("no `{}` products to sample on", p.train_split));
        }
        let scorers = inputs
            .reward_model
            .iter()
            .map(|r| Ok((r.stage.clone(), r.scorer(&device)?)))
            .collect::<Result<Vec<_>, String>>()?;
        let policy = p
            .lora
            .prepare(policy, ctx.seed as u64, &device, &mut *ctx.log)?;
        let adapter_base = p
            .lora
            .base(|| Ok(Base::of_result(&inputs.policy.path, "model")))?;
        let setup = Setup {
            p,
            // With LoRA the reference is the policy with its adapters off: no second copy.
            reference: (p.beta > 0.0).then(|| p.precision.compute(&lora::base_of(&policy))),
            adapter_base,
            tk,
            settings: p.settings(scorers.len()),
            scorers,
            lexical,
            device,
        };
        train(&setup, &prompts, policy, ctx, &tokenizer_dir)
    }
}

/// The rewards of `completions` (`group` adjacent ones per prompt of `picked`), one list per reward model.
fn score<M>(
    s: &Setup<'_, M>,
    picked: &[&Prompt<'_>],
    completions: &[Vec<u32>],
) -> Result<Vec<Vec<f64>>, String> {
    let g = s.settings.group_size.max(1);
    let texts: Vec<String> = completions.iter().map(|c| decode(&s.tk, c)).collect();
    let needs_features = s.scorers.iter().any(|(_, sc)| sc.reads_features());
    let items: Vec<ToScore> = texts
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let prompt = picked[i / g];
            ToScore {
                product: &prompt.product.id,
                reviews: &prompt.product.reviews,
                summary: text,
                features: needs_features.then(|| s.lexical.score(&prompt.profile, text)),
            }
        })
        .collect();
    s.scorers
        .iter()
        .map(|(_, sc)| sc.rewards(&items, &s.device))
        .collect()
}

/// One update on the batch of update `u`.
fn one_update<M: LanguageModel>(
    s: &Setup<'_, M>,
    prompts: &[Prompt<'_>],
    model: M,
    optim: &mut ModuleOptimizer,
    progress: &mut Progress,
    seed: u64,
) -> Result<(M, GrpoStats), String> {
    let u = progress.update;
    let batch = (s.p.batch as usize).min(prompts.len());
    let per_epoch = prompts.len().div_ceil(batch);
    let order = epoch_order(prompts.len(), seed, u / per_epoch);
    let start = (u % per_epoch) * batch;
    let picked: Vec<&Prompt> = (0..batch)
        .map(|k| &prompts[order[(start + k) % order.len()]])
        .collect();
    let mut rng = Rng::new(seed ^ (u as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let sources: Vec<Vec<u32>> = picked.iter().map(|x| x.source.clone()).collect();
    let mut reward = |completions: &[Vec<u32>]| score(s, &picked, completions);
    grpo_update(
        model,
        optim,
        s.reference.as_ref(),
        &sources,
        &mut reward,
        &mut progress.state,
        &s.settings,
        &mut rng,
        &s.device,
    )
}

fn log_update(
    log: &mut dyn std::io::Write,
    st: &GrpoStats,
    done: usize,
    total: usize,
    eta: String,
) {
    let kl = st.kl.map_or_else(String::new, |k| format!(" KL {k:.4}"));
    let _ = writeln!(
        log,
        "{} update {done}/{total} reward {:.4} ±{:.4} zero-std {:.2}{kl} loss {:.4} clip {:.3} entropy {:.3} len {:.1} ETA {eta}",
        progress_bar(done, total),
        st.reward,
        st.reward_std,
        st.frac_reward_zero_std,
        st.loss,
        st.clip_ratio,
        st.entropy,
        st.completion_length,
    );
}

/// An error naming the update when the numbers are no longer finite.
fn diverged(st: &GrpoStats, update: usize, p: &Params) -> Result<(), String> {
    let values = [
        ("loss", st.loss),
        ("reward", st.reward),
        ("KL", st.kl.unwrap_or(0.0)),
    ];
    match values.iter().find(|(_, v)| !v.is_finite()) {
        None => Ok(()),
        Some((what, v)) => Err(format!(
            "{} diverged at update {update}: the {what} is {v}; lower `lr` (now {}), or keep `max-grad-norm` on",
            p.advantage.name(),
            p.lr
        )),
    }
}

/// The updates, checkpoints and outputs.
fn train<M: LanguageModel>(
    setup: &Setup<'_, M>,
    prompts: &[Prompt<'_>],
    policy: M,
    ctx: &mut StageContext<'_>,
    tokenizer_dir: &std::path::Path,
) -> Result<Metrics, String> {
    let p = setup.p;
    let updates = p.updates as usize;
    let ckpt = Checkpoints {
        dir: ctx.checkpoint_dir.to_path_buf(),
    };
    let new_optim = || {
        AdamWConfig::new()
            .with_weight_decay(0.0)
            .with_epsilon(1e-8)
            .init()
    };
    let (mut model, mut optim, mut progress) = match ckpt.load_progress::<Progress>() {
        Some(pr) if pr.update > 0 && pr.update <= updates => {
            let (m, o) = ckpt.load(policy, new_optim())?;
            let _ = writeln!(
                ctx.log,
                "resuming from the checkpoint after update {}",
                pr.update
            );
            (m, o, pr)
        }
        _ => (policy, new_optim(), Progress::default()),
    };
    let _ = writeln!(
        ctx.log,
        "{} ({}): {} products, {updates} updates of {} × {} summaries, β {} ({})",
        p.advantage.name(),
        model.architecture(),
        prompts.len(),
        (p.batch as usize).min(prompts.len()),
        p.group_size,
        p.beta,
        match p.kl {
            KlPlacement::Loss => "k3 in the loss",
            KlPlacement::Reward => "k1 in the reward",
        }
    );
    let seed = ctx.seed as u64;
    let (started, first) = (std::time::Instant::now(), progress.update);
    while progress.update < updates {
        let (m, stats) = one_update(setup, prompts, model, &mut optim, &mut progress, seed)?;
        diverged(&stats, progress.update + 1, p)?;
        model = m;
        progress.update += 1;
        let left = eta(started, progress.update - first, updates - progress.update);
        log_update(ctx.log, &stats, progress.update, updates, left);
        if stats.frac_reward_zero_std >= 0.5 {
            let _ = writeln!(
                ctx.log,
                "warning: in {:.0}% of the groups every summary got the same reward (frac_reward_zero_std): those teach nothing; a reward model that cannot tell summaries apart, or too low a temperature",
                100.0 * stats.frac_reward_zero_std
            );
        }
        let per_model = setup
            .scorers
            .iter()
            .zip(&stats.rewards)
            .map(|((name, _), r)| (format!("rewards/{name}/mean"), *r))
            .collect();
        progress.curve.push(CurvePoint {
            update: progress.update,
            stats,
            per_model,
        });
        let every = p.checkpoint_every as usize;
        if every > 0 && progress.update % every == 0 && progress.update < updates {
            ckpt.save(&model, &optim, &progress)?;
            let _ = writeln!(ctx.log, "checkpoint after update {}", progress.update);
        }
    }
    write_outputs(ctx.output, &model, setup, tokenizer_dir, &progress.curve)?;
    Ok(curve_metrics(&progress.curve))
}

fn write_outputs<M: LanguageModel>(
    out: &std::path::Path,
    model: &M,
    setup: &Setup<'_, M>,
    tokenizer_dir: &std::path::Path,
    curve: &[CurvePoint],
) -> Result<(), String> {
    let (tk, base) = (&setup.tk, setup.adapter_base.as_ref());
    save_model_folder(&out.join("model"), model, tk, tokenizer_dir, base)?;
    write_jsonl(&out.join("grpo_curve.jsonl"), curve)
}

/// Means over the first and last few updates.
fn curve_metrics(curve: &[CurvePoint]) -> Metrics {
    let k = curve.len().clamp(1, 3);
    let mean = |xs: &[CurvePoint], f: fn(&GrpoStats) -> f64| {
        xs.iter().map(|c| f(&c.stats)).sum::<f64>() / xs.len().max(1) as f64
    };
    let last = &curve[curve.len().saturating_sub(k)..];
    let mut m = Metrics::new();
    m.insert("updates".into(), curve.len() as f64);
    m.insert(
        "reward_first".into(),
        mean(&curve[..k.min(curve.len())], |s| s.reward),
    );
    m.insert("reward_last".into(), mean(last, |s| s.reward));
    m.insert("reward_std_last".into(), mean(last, |s| s.reward_std));
    m.insert(
        "frac_reward_zero_std_mean".into(),
        mean(curve, |s| s.frac_reward_zero_std),
    );
    m.insert("clip_ratio_mean".into(), mean(curve, |s| s.clip_ratio));
    m.insert(
        "completion_length_last".into(),
        mean(last, |s| s.completion_length),
    );
    m.insert("entropy_last".into(), mean(last, |s| s.entropy));
    if curve.iter().all(|c| c.stats.kl.is_some()) {
        m.insert("kl_last".into(), mean(last, |s| s.kl.unwrap_or(0.0)));
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_time_checks_name_the_fix() {
        let ok = Params::default();
        assert!(GrpoStage.check(&ok).is_ok());
        let one = Params {
            group_size: 1,
            ..Params::default()
        };
        let e = GrpoStage.check(&one).unwrap_err();
        assert!(e.contains("group-size") && e.contains("at least 2"), "{e}");
        // REINFORCE++ needs no groups.
        let reinforce = Params {
            advantage: Advantage::ReinforcePlusPlus,
            ..one
        };
        assert!(GrpoStage.check(&reinforce).is_ok());
        let uneven = Params {
            minibatch: 3,
            ..Params::default()
        };
        let e = GrpoStage.check(&uneven).unwrap_err();
        assert!(
            e.contains("16 summaries") && e.contains("minibatches of 3"),
            "{e}"
        );
        let narrow = Params {
            epsilon_high: 0.1,
            ..Params::default()
        };
        assert!(
            GrpoStage
                .check(&narrow)
                .unwrap_err()
                .contains("epsilon-high")
        );
    }

    #[test]
    fn a_loss_that_is_not_finite_stops_the_run_with_the_update_and_the_fix() {
        let p = Params::default();
        assert!(diverged(&GrpoStats::default(), 3, &p).is_ok());
        let nan = GrpoStats {
            loss: f64::NAN,
            ..GrpoStats::default()
        };
        let e = diverged(&nan, 3, &p).unwrap_err();
        assert!(
            e.contains("update 3") && e.contains("loss is NaN") && e.contains("`lr`"),
            "{e}"
        );
        let kl = GrpoStats {
            kl: Some(f64::INFINITY),
            ..GrpoStats::default()
        };
        assert!(diverged(&kl, 1, &p).unwrap_err().contains("KL is inf"));
    }
}
