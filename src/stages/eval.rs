//! The `eval` stage kind: every input model (an `sft` or `ppo` stage's
//! `model/`) summarizes the held-out products; ROUGE against references
//! (best reference, and the first one as the authors scored), mean reward
//! under a score-reading reward model with lexical scores, the seven lexical
//! scores, KL from the first model (per summary, summed over its tokens),
//! length in words, and how often each model's summary beats the first
//! model's under the reward. Stored system outputs (FewSum, AceSum) get the
//! same ROUGE, as an outside anchor. Metrics are named `<model>.<metric>`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::dataset::{DOMAIN_KEYS, Product};
use super::ppo::{Scorer, ToScore};
use super::sft::{decode, encode, load_tokenizer, source_text, targets_of};
use super::{Stage, StageContext, param_bool, param_f64, param_i64, param_str};
use crate::dsl::Metrics;
use crate::ml::bart::{GenerateOptions, generate_batched, io};
use crate::ml::bt::pairwise_accuracy;
use crate::ml::rlhf::score_responses;
use crate::rng::Rng;
use crate::stats::mean;
use crate::text::lexical::Lexical;
use crate::text::rouge::{MultiRef, RougeScorer};

pub struct EvalStage;

impl Stage for EvalStage {
    fn run(&self, ctx: &mut StageContext<'_>) -> Result<Metrics, String> {
        let p = ctx.params;
        let device = crate::ml::device(ctx.backend, ctx.seed as u64)?;
        let (mut models, mut scorer, mut products): (
            Vec<(String, PathBuf)>,
            Option<Scorer>,
            Vec<Product>,
        ) = (Vec::new(), None, Vec::new());
        for (id, dir) in ctx.inputs {
            if dir.join("model").join("config.json").is_file() {
                models.push((id.clone(), dir.join("model")));
            } else if dir.join("reward.json").is_file() {
                if scorer.is_some() {
                    return Err(format!(
                        "input `{id}` is a second reward model: an eval stage scores with one (add another eval stage for another)"
                    ));
                }
                scorer = Some(Scorer::load(dir, &device)?);
            } else if dir.join("products.jsonl").is_file() {
                products.extend(super::dataset::read_products(dir)?);
            } else {
                return Err(format!(
                    "input `{id}` is not a model, a reward model or a dataset"
                ));
            }
        }
        if models.is_empty() {
            return Err("no input is a model (an sft or ppo stage)".into());
        }
        let split = param_str(p, "split")?;
        let reference = param_str(p, "reference")?;
        let mut test: Vec<(&Product, Vec<String>)> = products
            .iter()
            .filter(|x| x.split == split)
            .filter_map(|x| {
                let refs = targets_of(x, reference);
                (!refs.is_empty()).then_some((x, refs))
            })
            .collect();
        let limit = param_i64(p, "max-products")? as usize;
        if limit > 0 {
            test.truncate(limit);
        }
        if test.is_empty() {
            return Err(format!(
                "no `{split}` products with a `{reference}` summary"
            ));
        }
        let opts = GenerateOptions {
            sample: param_bool(p, "sample")?,
            temperature: param_f64(p, "temperature")?,
            top_k: param_i64(p, "top-k")? as usize,
            top_p: param_f64(p, "top-p")?,
            ..GenerateOptions::greedy(param_i64(p, "max-new-tokens")? as usize)
        };
        opts.check()?;
        let max_source = param_i64(p, "max-source")? as usize;
        let rouge = RougeScorer::new(true);
        let lexical = Lexical::new();
        let profiles: Vec<_> = test
            .iter()
            .map(|(x, _)| lexical.profile(&x.reviews))
            .collect();
        let mut m = Metrics::new();
        m.insert("products".into(), test.len() as f64);

        // Every model summarizes; the first model's tokens and rewards are the baseline.
        let mut summaries: Vec<BTreeMap<String, String>> = vec![BTreeMap::new(); test.len()];
        let mut first: Option<crate::ml::bart::Bart> = None;
        // Log-probabilities of sampled summaries use the sampling temperature, as in PPO.
        let temperature = if opts.sample { opts.temperature } else { 1.0 };
        let mut first_rewards: Vec<f64> = Vec::new();
        for (name, dir) in &models {
            let (model, _) = io::load(dir, &device)?;
            let tk = load_tokenizer(&dir.join("tokenizer.json"))?;
            let eos = model.config.eos_token_id;
            let sources: Vec<Vec<u32>> = test
                .iter()
                .map(|(x, _)| encode(&tk, &source_text(x), max_source, eos))
                .collect::<Result<_, _>>()?;
            let mut rng = Rng::new(ctx.seed as u64);
            let tokens: Vec<Vec<u32>> =
                generate_batched(&model, &sources, &opts, 16, &mut rng, &device)
                    .into_iter()
                    .map(|g| g.tokens)
                    .collect();
            let texts: Vec<String> = tokens.iter().map(|t| decode(&tk, t)).collect();
            let (mut r1, mut r2, mut rl, mut rl_first, mut len) =
                (vec![], vec![], vec![], vec![], vec![]);
            let mut dims = vec![Vec::new(); DOMAIN_KEYS.len()];
            let mut scores7 = Vec::new();
            for (i, ((_, refs), text)) in test.iter().zip(&texts).enumerate() {
                let best = rouge.score_multi(refs, text, MultiRef::Max);
                r1.push(best.rouge1.fmeasure);
                r2.push(best.rouge2.fmeasure);
                rl.push(best.rouge_l.fmeasure);
                rl_first.push(
                    rouge
                        .score_multi(refs, text, MultiRef::First)
                        .rouge_l
                        .fmeasure,
                );
                len.push(text.split_whitespace().count() as f64);
                let s = lexical.score(&profiles[i], text);
                for (k, v) in s.iter().enumerate() {
                    dims[k].push(*v);
                }
                scores7.push(s);
                summaries[i].insert(name.clone(), text.clone());
            }
            m.insert(format!("{name}.rouge1"), mean(&r1));
            m.insert(format!("{name}.rouge2"), mean(&r2));
            m.insert(format!("{name}.rougeL"), mean(&rl));
            m.insert(format!("{name}.rougeL_first_ref"), mean(&rl_first));
            m.insert(format!("{name}.length"), mean(&len));
            for (k, key) in DOMAIN_KEYS.iter().enumerate() {
                m.insert(format!("{name}.lexical.{key}"), mean(&dims[k]));
            }
            if let Some(sc) = &scorer {
                let items: Vec<ToScore> = test
                    .iter()
                    .zip(&texts)
                    .zip(&scores7)
                    .map(|(((x, _), text), s)| ToScore {
                        reviews: &x.reviews,
                        summary: text,
                        features: Some(*s),
                    })
                    .collect();
                let rewards = sc.rewards(&items, &device)?;
                m.insert(format!("{name}.reward"), mean(&rewards));
                if first_rewards.is_empty() {
                    first_rewards = rewards;
                } else {
                    // Ties count half, as in a reward model's pairwise accuracy.
                    m.insert(
                        format!("{name}.win_rate_vs_{}", models[0].0),
                        pairwise_accuracy(&rewards, &first_rewards),
                    );
                }
            }
            // KL from the first model on this model's own summaries.
            match &first {
                None => first = Some(model),
                Some(base) => {
                    let (lp, _) =
                        score_responses(&model, None, &sources, &tokens, temperature, &device);
                    let (lp0, _) =
                        score_responses(base, None, &sources, &tokens, temperature, &device);
                    let kl: Vec<f64> = lp
                        .iter()
                        .zip(&lp0)
                        .map(|(a, b)| crate::ml::ppo::sequence_kl(a, b))
                        .collect();
                    m.insert(format!("{name}.kl_vs_{}", models[0].0), mean(&kl));
                }
            }
        }
        // Stored system outputs, scored the same way.
        let mut systems: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for (x, refs) in &test {
            for (name, c) in x
                .candidates
                .iter()
                .filter_map(|c| Some((c.system.clone()?, c)))
            {
                systems.entry(name).or_default().push(
                    rouge
                        .score_multi(refs, &c.text, MultiRef::Max)
                        .rouge_l
                        .fmeasure,
                );
            }
        }
        for (name, v) in systems {
            m.insert(format!("system.{name}.rougeL"), mean(&v));
        }
        let table = comparison(
            &m,
            &models.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>(),
        );
        std::fs::write(ctx.output.join("comparison.txt"), table.to_text())
            .map_err(|e| format!("cannot write comparison.txt: {e}"))?;
        std::fs::write(ctx.output.join("comparison.md"), table.to_markdown())
            .map_err(|e| format!("cannot write comparison.md: {e}"))?;
        let mut out = String::new();
        for ((x, refs), s) in test.iter().zip(&summaries) {
            out.push_str(
                &serde_json::to_string(
                    &serde_json::json!({"product": x.id, "summaries": s, "references": refs}),
                )
                .map_err(|e| e.to_string())?,
            );
            out.push('\n');
        }
        std::fs::write(ctx.output.join("summaries.jsonl"), out)
            .map_err(|e| format!("cannot write summaries.jsonl: {e}"))?;
        Ok(m)
    }
}

/// One row per model and stored system, one column per measure.
pub fn comparison(m: &Metrics, models: &[String]) -> crate::report::Table {
    use crate::report::{Cell, Table};
    let base = models.first().cloned().unwrap_or_default();
    let cols: [(&str, String); 8] = [
        ("ROUGE-1", "rouge1".into()),
        ("ROUGE-2", "rouge2".into()),
        ("ROUGE-L", "rougeL".into()),
        ("ROUGE-L (1st ref)", "rougeL_first_ref".into()),
        ("reward", "reward".into()),
        ("win rate", format!("win_rate_vs_{base}")),
        ("KL", format!("kl_vs_{base}")),
        ("words", "length".into()),
    ];
    let mut t = Table {
        columns: std::iter::once("model".to_string())
            .chain(cols.iter().map(|(h, _)| h.to_string()))
            .collect(),
        rows: Vec::new(),
    };
    let cell = |k: String| m.get(&k).map(|v| Cell::Number(*v)).unwrap_or(Cell::Empty);
    for name in models {
        let mut row = vec![Cell::Text(name.clone())];
        row.extend(cols.iter().map(|(_, k)| cell(format!("{name}.{k}"))));
        t.rows.push(row);
    }
    for k in m
        .keys()
        .filter(|k| k.starts_with("system.") && k.ends_with(".rougeL"))
    {
        let name = &k["system.".len()..k.len() - ".rougeL".len()];
        let mut row = vec![Cell::Text(format!("{name} (stored outputs)"))];
        row.extend(cols.iter().map(|(_, c)| {
            if c == "rougeL" {
                cell(k.clone())
            } else {
                Cell::Empty
            }
        }));
        t.rows.push(row);
    }
    t
}
