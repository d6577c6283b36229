//! The `featurize` stage kind: the seven domain-knowledge scores for every
//! (product, candidate summary) of its input datasets, so φ can score text it
//! has never seen. Output: the same products with `scores` replaced by the
//! computed ones (a dataset a reward-model stage reads as is).
//!
//! Methods: `from-data` (the stored scores; an error where there are none),
//! `lexical` (deterministic extractors, `text::lexical`), `llm-judge` (an
//! OpenAI-compatible chat endpoint, see [`judge`]), `distilled` (a small
//! model trained to predict the stored scores, see [`distill`]).
//!
//! Metrics: per dimension, the Spearman correlation of the computed scores
//! with the stored ones on `validation` candidates (`spearman.<key>`), and
//! with SummEval-OP's human ratings where a dimension matches
//! (`spearman_human.<key>`).

pub mod distill;
pub mod judge;

use std::collections::BTreeMap;

use super::dataset::{DOMAIN_KEYS, Product, read_products, write_products};
use super::{Stage, StageContext, param_str};
use crate::dsl::Metrics;
use crate::stats::spearman;
use crate::text::lexical::Lexical;

pub struct FeaturizeStage;

/// Scores per product, per candidate, per dimension, and the method's own metrics.
pub type Scored = (Vec<Vec<[f64; 7]>>, Metrics);

/// Our dimensions and the SummEval-OP human rating that measures the same thing.
pub const HUMAN_MATCH: [(&str, &str); 5] = [
    ("aspect-coverage", "aspect-coverage"),
    ("opinion-faithfulness", "sentiment-consistency"),
    ("relevance", "relevance"),
    ("hallucination", "faithfulness"),
    ("language-correctness", "fluency"),
];

/// Lexical scores for every candidate; the profile of a product's reviews is built once.
pub fn lexical_scores(products: &[Product]) -> Vec<Vec<[f64; 7]>> {
    let lx = Lexical::new();
    products
        .iter()
        .map(|p| {
            let profile = lx.profile(&p.reviews);
            p.candidates
                .iter()
                .map(|c| lx.score(&profile, &c.text))
                .collect()
        })
        .collect()
}

/// Correlations of computed scores with stored scores (validation) and human ratings.
pub fn agreement(products: &[Product], computed: &[Vec<[f64; 7]>]) -> Metrics {
    let mut m = Metrics::new();
    for (k, key) in DOMAIN_KEYS.iter().enumerate() {
        let (mut ours, mut stored) = (Vec::new(), Vec::new());
        for (p, scores) in products.iter().zip(computed) {
            if p.split != "validation" {
                continue;
            }
            for (c, s) in p.candidates.iter().zip(scores) {
                if let Some(v) = c.scores.as_ref().and_then(|x| x.get(*key)) {
                    ours.push(s[k]);
                    stored.push(*v);
                }
            }
        }
        if let Some(r) = spearman(&ours, &stored) {
            m.insert(format!("spearman.{key}"), r);
            m.insert("scored_validation_summaries".into(), ours.len() as f64);
        }
    }
    for (ours_key, human_key) in HUMAN_MATCH {
        let k = DOMAIN_KEYS.iter().position(|x| *x == ours_key).unwrap_or(0);
        let (mut ours, mut human) = (Vec::new(), Vec::new());
        for (p, scores) in products.iter().zip(computed) {
            for (c, s) in p.candidates.iter().zip(scores) {
                if let Some(v) = c.human.as_ref().and_then(|h| h.get(human_key)) {
                    ours.push(s[k]);
                    human.push(*v);
                }
            }
        }
        if let Some(r) = spearman(&ours, &human) {
            m.insert(format!("spearman_human.{ours_key}"), r);
            m.insert("human_rated_summaries".into(), ours.len() as f64);
        }
    }
    m
}

/// The products with `scores` replaced by the computed ones.
pub fn with_scores(mut products: Vec<Product>, computed: &[Vec<[f64; 7]>]) -> Vec<Product> {
    for (p, scores) in products.iter_mut().zip(computed) {
        for (c, s) in p.candidates.iter_mut().zip(scores) {
            // A dimension the method could not score (NaN) is left out, so a
            // reward model reading it reports the missing score.
            c.scores = Some(
                DOMAIN_KEYS
                    .iter()
                    .zip(s)
                    .filter(|(_, v)| v.is_finite())
                    .map(|(k, v)| (k.to_string(), *v))
                    .collect::<BTreeMap<_, _>>(),
            );
        }
    }
    products
}

impl Stage for FeaturizeStage {
    fn run(&self, ctx: &mut StageContext<'_>) -> Result<Metrics, String> {
        let method = param_str(ctx.params, "method")?.to_string();
        let mut products = Vec::new();
        for (id, dir) in ctx.inputs {
            products.extend(read_products(dir).map_err(|e| format!("input `{id}`: {e}"))?);
        }
        let n_candidates: usize = products.iter().map(|p| p.candidates.len()).sum();
        if n_candidates == 0 {
            return Err("the inputs have no candidate summaries to score".into());
        }
        let started = std::time::Instant::now();
        let (computed, mut extra) = match method.as_str() {
            "from-data" => {
                let mut out = Vec::new();
                for p in &products {
                    let mut scores = Vec::new();
                    for (i, c) in p.candidates.iter().enumerate() {
                        let s = c.scores.as_ref().ok_or_else(|| {
                            format!("product `{}`, candidate {i}: no stored scores (use method \"lexical\", \"llm-judge\" or \"distilled\")", p.id)
                        })?;
                        let mut row = [0.0; 7];
                        for (k, key) in DOMAIN_KEYS.iter().enumerate() {
                            row[k] = *s.get(*key).ok_or_else(|| {
                                format!(
                                    "product `{}`, candidate {i}: score `{key}` is missing",
                                    p.id
                                )
                            })?;
                        }
                        scores.push(row);
                    }
                    out.push(scores);
                }
                (out, Metrics::new())
            }
            "lexical" => (lexical_scores(&products), Metrics::new()),
            "llm-judge" => judge::run(ctx, &products)?,
            "distilled" => distill::run(ctx, &products)?,
            other => return Err(format!("unknown method `{other}`")),
        };
        let seconds = started.elapsed().as_secs_f64();
        let mut m = agreement(&products, &computed);
        m.append(&mut extra);
        m.insert("summaries".into(), n_candidates as f64);
        let products = with_scores(products, &computed);
        write_products(ctx.output, &products)?;
        // Timing goes to the log, not the metrics: outputs must not change between identical runs.
        let _ = writeln!(
            ctx.log,
            "{method}: scored {n_candidates} summaries in {seconds:.2}s ({:.0}/s)",
            n_candidates as f64 / seconds.max(1e-9)
        );
        Ok(m)
    }
}
