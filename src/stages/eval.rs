//! The `eval` stage kind: every input model (role `models`: sft or ppo
//! stages) summarizes the held-out products; ROUGE against references
//! (best reference, and the first one as the authors scored), mean reward
//! under a score-reading reward model with lexical scores, the seven lexical
//! scores, KL from the first model (per summary, summed over its tokens),
//! length in words, and how often each model's summary beats the first
//! model's under the reward. Stored system outputs (FewSum, AceSum) get the
//! same ROUGE, as an outside anchor. Metrics are named `<model>.<metric>`.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

use crate::ml::bt::pairwise_accuracy;
use crate::ml::decoding::GenerateOptions;
use crate::ml::lm::{LanguageModel, WithModel};
use crate::ml::rlhf::score_responses;
use crate::rng::Rng;
use crate::stages::formats::dataset::{
    DOMAIN_KEYS, DatasetInput, GoodTarget, Product, products_of,
};
use crate::stages::formats::model::{Decoding, ModelInput, Sampling, decode};
use crate::stages::formats::prompt::Prompter;
use crate::stages::formats::reward::{RewardModelInput, Scorer, ToScore};
use crate::stages::kind::{Kind, Metrics, StageContext};
use crate::stats::mean;
use crate::text::lexical::{Lexical, ReviewProfile};
use crate::text::rouge::{MultiRef, RougeScorer};

/// The `eval` kind.
pub struct EvalStage;

/// The parameters of `plugins/builtin/eval.kdl` (the runner passes exactly
/// the manifest's, which the manifest tests keep equal to these fields).
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case", default)]
pub struct Params {
    /// Which products to summarize.
    pub split: String,
    /// What ROUGE compares with.
    pub reference: GoodTarget,
    /// Evaluate the first N products (0: all).
    #[schemars(range(min = 0))]
    pub max_products: i64,
    /// Sample (else decode greedily).
    pub sample: bool,
    /// How summaries are sampled.
    #[serde(flatten)]
    pub sampling: Sampling,
    /// What the model reads: a Jinja template over `reviews` and `product` (empty: the model's default).
    pub prompt: String,
    /// Source tokens kept.
    #[schemars(range(min = 8, max = 1000000))]
    pub max_source: i64,
    /// Beam search and length controls (with `sample #false`).
    #[serde(flatten)]
    pub decoding: Decoding,
}

impl Default for Params {
    fn default() -> Params {
        Params {
            split: "test".into(),
            reference: GoodTarget::Reference,
            max_products: 0,
            sample: true,
            sampling: Sampling::default(),
            prompt: String::new(),
            max_source: 512,
            decoding: Decoding::default(),
        }
    }
}

impl Params {
    fn generation(&self) -> GenerateOptions {
        self.decoding.options(self.sampling.options(self.sample))
    }

    /// The decoding of `model`: these settings, and its `generation_config.json` where they are defaults.
    fn generation_for(&self, model: &impl LanguageModel) -> GenerateOptions {
        let base_default = Sampling::default().options(self.sample);
        self.decoding
            .options_for(self.sampling.options(self.sample), &base_default, model)
    }
}

/// The inputs of an eval stage.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Inputs {
    /// The summarizers compared; the first is the baseline.
    pub models: Vec<ModelInput>,
    /// What the reward and the win rate are measured with (the first is the
    /// headline; each is reported, so reward hacking shows as disagreement).
    pub reward_model: Vec<RewardModelInput>,
    /// Datasets with the held-out products.
    pub datasets: Vec<DatasetInput>,
}

/// A held-out product with the summaries ROUGE compares with.
type TestItem<'a> = (&'a Product, Vec<String>);

fn test_items<'a>(p: &Params, products: &'a [Product]) -> Result<Vec<TestItem<'a>>, String> {
    let mut test: Vec<TestItem> = products
        .iter()
        .filter(|x| x.split == p.split)
        .filter_map(|x| {
            let refs = x.targets(p.reference.target());
            (!refs.is_empty()).then_some((x, refs))
        })
        .collect();
    if p.max_products > 0 {
        test.truncate(p.max_products as usize);
    }
    if test.is_empty() {
        return Err(format!(
            "no `{}` products with a `{}` summary",
            p.split,
            p.reference.target().name()
        ));
    }
    Ok(test)
}

/// What every model is measured against.
struct Bench<'a> {
    p: &'a Params,
    test: Vec<TestItem<'a>>,
    profiles: Vec<ReviewProfile>,
    lexical: Lexical,
    rouge: RougeScorer,
    /// Each reward model, by its stage name.
    scorers: Vec<(String, Scorer)>,
    seed: u64,
    device: burn::tensor::Device,
}

/// Log-probabilities of responses (token ids) under a model, given its own
/// sources, at a temperature.
type LogProbs = Box<dyn Fn(&[Vec<u32>], f64) -> Vec<Vec<f64>>>;

/// What one model produced, and what the next models compare with.
struct Measured {
    texts: Vec<String>,
    /// Per reward model, each summary's reward.
    rewards: Vec<Vec<f64>>,
    /// Scores responses under this model (the baseline's KL reference).
    logprobs: LogProbs,
    /// Its tokenizer's vocabulary (token ids mean the same only under the same one).
    vocab: Vec<(String, u32)>,
}

/// One model measured, generic over its family.
struct Measure<'a, 'b> {
    bench: &'a Bench<'b>,
    input: &'a ModelInput,
    base: Option<&'a Measured>,
    base_name: &'a str,
    m: &'a mut Metrics,
}

impl WithModel for Measure<'_, '_> {
    type Output = Result<Measured, String>;

    fn run<M: LanguageModel>(self, model: M, _unused: Vec<String>) -> Result<Measured, String> {
        self.bench
            .measure_model(model, self.input, self.base, self.base_name, self.m)
    }
}

fn sorted_vocab(tk: &tokenizers::Tokenizer) -> Vec<(String, u32)> {
    let mut v: Vec<(String, u32)> = tk.get_vocab(true).into_iter().collect();
    v.sort();
    v
}

impl Bench<'_> {
    /// Generates with `input`'s model and measures its summaries into `m`.
    fn measure(
        &self,
        input: &ModelInput,
        base: Option<&Measured>,
        base_name: &str,
        m: &mut Metrics,
    ) -> Result<Measured, String> {
        let work = Measure {
            bench: self,
            input,
            base,
            base_name,
            m,
        };
        input.with_model(&self.device, work)?
    }

    fn measure_model<M: LanguageModel>(
        &self,
        model: M,
        input: &ModelInput,
        base: Option<&Measured>,
        base_name: &str,
        m: &mut Metrics,
    ) -> Result<Measured, String> {
        let name = &input.stage;
        let tk = input.tokenizer()?;
        let prompter =
            Prompter::for_model(&self.p.prompt, &input.folder(), &model, self.p.max_source)
                .map_err(|e| format!("input `{name}`: {e}"))?;
        let mut cut = 0usize;
        let mut sources = Vec::with_capacity(self.test.len());
        for (x, _) in &self.test {
            let s = prompter.source(&tk, x)?;
            cut += usize::from(s.cut);
            sources.push(s.ids);
        }
        m.insert(format!("{name}.prompts_cut"), cut as f64);
        let opts = self.p.generation_for(&model);
        opts.check().map_err(|e| format!("input `{name}`: {e}"))?;
        let mut rng = Rng::new(self.seed);
        let tokens: Vec<Vec<u32>> = model
            .generate(&sources, &opts, 16, &mut rng, &self.device)
            .into_iter()
            .map(|g| g.tokens)
            .collect();
        let texts: Vec<String> = tokens.iter().map(|t| decode(&tk, t)).collect();
        let scores7 = self.text_metrics(name, &texts, m);
        let rewards = self.rewards(name, &texts, &scores7, base, base_name, m)?;
        // KL from the first model on this model's own summaries; log-probabilities
        // of sampled summaries use the sampling temperature, as in PPO.
        let temperature = if opts.sample { opts.temperature } else { 1.0 };
        let vocab = sorted_vocab(&tk);
        let device = self.device.clone();
        let own_sources = sources.clone();
        let logprobs: LogProbs = Box::new(move |responses, temperature| {
            score_responses(&model, None, &own_sources, responses, temperature, &device).0
        });
        if let Some(base) = base.filter(|b| b.vocab == vocab) {
            let lp = logprobs(&tokens, temperature);
            let lp0 = (base.logprobs)(&tokens, temperature);
            let kl: Vec<f64> = lp
                .iter()
                .zip(&lp0)
                .map(|(a, b)| crate::ml::ppo::sequence_kl(a, b))
                .collect();
            m.insert(format!("{name}.kl_vs_{base_name}"), mean(&kl));
        }
        Ok(Measured {
            texts,
            rewards,
            logprobs,
            vocab,
        })
    }

    /// ROUGE, length and the seven lexical scores; returns the lexical scores.
    fn text_metrics(&self, name: &str, texts: &[String], m: &mut Metrics) -> Vec<[f64; 7]> {
        let (mut r1, mut r2, mut rl, mut rl_first, mut len) =
            (vec![], vec![], vec![], vec![], vec![]);
        let mut dims = vec![Vec::new(); DOMAIN_KEYS.len()];
        let mut scores7 = Vec::new();
        for (i, ((_, refs), text)) in self.test.iter().zip(texts).enumerate() {
            let best = self.rouge.score_multi(refs, text, MultiRef::Max);
            r1.push(best.rouge1.fmeasure);
            r2.push(best.rouge2.fmeasure);
            rl.push(best.rouge_l.fmeasure);
            rl_first.push(
                self.rouge
                    .score_multi(refs, text, MultiRef::First)
                    .rouge_l
                    .fmeasure,
            );
            len.push(text.split_whitespace().count() as f64);
            let s = self.lexical.score(&self.profiles[i], text);
            for (k, v) in s.iter().enumerate() {
                dims[k].push(*v);
            }
            scores7.push(s);
        }
        m.insert(format!("{name}.rouge1"), mean(&r1));
        m.insert(format!("{name}.rouge2"), mean(&r2));
        m.insert(format!("{name}.rougeL"), mean(&rl));
        m.insert(format!("{name}.rougeL_first_ref"), mean(&rl_first));
        m.insert(format!("{name}.length"), mean(&len));
        for (k, key) in DOMAIN_KEYS.iter().enumerate() {
            m.insert(format!("{name}.lexical.{key}"), mean(&dims[k]));
        }
        scores7
    }

    /// Each summary's reward under each reward model, and the win rates
    /// over the baseline's: `NAME.reward` and `NAME.win_rate_vs_BASE` under
    /// the first, and with `.RM` appended under every one when there are several.
    fn rewards(
        &self,
        name: &str,
        texts: &[String],
        scores7: &[[f64; 7]],
        base: Option<&Measured>,
        base_name: &str,
        m: &mut Metrics,
    ) -> Result<Vec<Vec<f64>>, String> {
        let items: Vec<ToScore> = self
            .test
            .iter()
            .zip(texts)
            .zip(scores7)
            .map(|(((x, _), text), s)| ToScore {
                product: &x.id,
                reviews: &x.reviews,
                summary: text,
                features: Some(*s),
            })
            .collect();
        let several = self.scorers.len() > 1;
        let mut all = Vec::with_capacity(self.scorers.len());
        for (r, (rm, sc)) in self.scorers.iter().enumerate() {
            let rewards = sc.rewards(&items, &self.device)?;
            let mut put = |key: String, v: f64| {
                if r == 0 {
                    m.insert(key.clone(), v);
                }
                if several {
                    m.insert(format!("{key}.{rm}"), v);
                }
            };
            put(format!("{name}.reward"), mean(&rewards));
            if let Some(base) = base {
                // Ties count half, as in a reward model's pairwise accuracy.
                put(
                    format!("{name}.win_rate_vs_{base_name}"),
                    pairwise_accuracy(&rewards, &base.rewards[r]),
                );
            }
            all.push(rewards);
        }
        Ok(all)
    }

    /// ROUGE-L of the stored system outputs (FewSum, AceSum).
    fn stored_systems(&self, m: &mut Metrics) {
        let mut systems: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for (x, refs) in &self.test {
            for (name, c) in x
                .candidates
                .iter()
                .filter_map(|c| Some((c.system.clone()?, c)))
            {
                systems.entry(name).or_default().push(
                    self.rouge
                        .score_multi(refs, &c.text, MultiRef::Max)
                        .rouge_l
                        .fmeasure,
                );
            }
        }
        for (name, v) in systems {
            m.insert(format!("system.{name}.rougeL"), mean(&v));
        }
    }
}

impl Kind for EvalStage {
    type Params = Params;
    type Inputs = Inputs;

    fn check(&self, p: &Params) -> Result<(), String> {
        p.generation().check()
    }

    fn run(
        &self,
        p: &Params,
        inputs: &Inputs,
        ctx: &mut StageContext<'_>,
    ) -> Result<Metrics, String> {
        let device = crate::ml::device(ctx.backend, ctx.seed as u64)?;
        let scorers = inputs
            .reward_model
            .iter()
            .map(|r| Ok((r.stage.clone(), r.scorer(&device)?)))
            .collect::<Result<Vec<_>, String>>()?;
        let products = products_of(&inputs.datasets)?;
        let test = test_items(p, &products)?;
        let lexical = Lexical::new();
        let profiles = test
            .iter()
            .map(|(x, _)| lexical.profile(&x.reviews))
            .collect();
        let bench = Bench {
            p,
            test,
            profiles,
            lexical,
            rouge: RougeScorer::new(true),
            scorers,
            seed: ctx.seed as u64,
            device,
        };
        let mut m = Metrics::new();
        m.insert("products".into(), bench.test.len() as f64);
        let base_name = inputs
            .models
            .first()
            .map(|x| x.stage.clone())
            .ok_or("no input is a model (an sft or ppo stage)")?;
        let mut summaries: Vec<BTreeMap<String, String>> = vec![BTreeMap::new(); bench.test.len()];
        let mut base: Option<Measured> = None;
        for input in &inputs.models {
            let measured = bench.measure(input, base.as_ref(), &base_name, &mut m)?;
            for (row, text) in summaries.iter_mut().zip(&measured.texts) {
                row.insert(input.stage.clone(), text.clone());
            }
            if base.is_none() {
                base = Some(measured);
            }
        }
        bench.stored_systems(&mut m);
        let names: Vec<String> = inputs.models.iter().map(|x| x.stage.clone()).collect();
        let rms: Vec<String> = inputs
            .reward_model
            .iter()
            .map(|r| r.stage.clone())
            .collect();
        write_outputs(ctx.output, &names, &rms, &bench.test, &summaries)?;
        Ok(m)
    }
}

/// The models in order (what `show` builds the comparison from, with the
/// metrics) and every model's summaries.
fn write_outputs(
    out: &std::path::Path,
    models: &[String],
    reward_models: &[String],
    test: &[TestItem<'_>],
    summaries: &[BTreeMap<String, String>],
) -> Result<(), String> {
    let order = serde_json::json!({
        "models": models,
        "baseline": models.first(),
        "reward_models": reward_models,
    });
    std::fs::write(out.join("comparison.json"), order.to_string())
        .map_err(|e| format!("cannot write comparison.json: {e}"))?;
    let mut text = String::new();
    for ((x, refs), s) in test.iter().zip(summaries) {
        text.push_str(
            &serde_json::to_string(
                &serde_json::json!({"product": x.id, "summaries": s, "references": refs}),
            )
            .map_err(|e| e.to_string())?,
        );
        text.push('\n');
    }
    std::fs::write(out.join("summaries.jsonl"), text)
        .map_err(|e| format!("cannot write summaries.jsonl: {e}"))
}
