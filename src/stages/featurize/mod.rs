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
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::Deserialize;

use crate::stages::formats::dataset::{
    DOMAIN_KEYS, DatasetInput, Product, products_of, write_products,
};
use crate::stages::kind::{Kind, Metrics, StageContext};
use crate::stats::spearman;
use crate::text::lexical::Lexical;

/// The `featurize` kind.
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

/// How the seven scores are obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// The stored scores.
    FromData,
    /// The deterministic lexical extractors.
    #[default]
    Lexical,
    /// An LLM behind an OpenAI-compatible endpoint.
    LlmJudge,
    /// A small model trained to reproduce the stored scores.
    Distilled,
}

impl Method {
    fn name(self) -> &'static str {
        match self {
            Method::FromData => "from-data",
            Method::Lexical => "lexical",
            Method::LlmJudge => "llm-judge",
            Method::Distilled => "distilled",
        }
    }
}

/// The parameters of `plugins/builtin/featurize.kdl`.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct Params {
    /// How the scores are obtained.
    pub method: Method,
    /// llm-judge: base URL of the API.
    pub endpoint: String,
    /// llm-judge: the model name.
    pub model: String,
    /// llm-judge: environment variable holding the API key.
    pub api_key_env: String,
    /// llm-judge: a folder of rubrics (empty: the built-in ones).
    pub rubrics: PathBuf,
    /// llm-judge: requests in flight.
    #[schemars(range(min = 1, max = 1024))]
    pub concurrency: i64,
    /// llm-judge: seconds per request.
    #[schemars(range(min = 0.1))]
    pub timeout: f64,
    /// llm-judge: retries with backoff.
    #[schemars(range(min = 0, max = 100))]
    pub retries: i64,
    /// distilled: hidden layer sizes.
    #[schemars(inner(range(min = 1, max = 65536)))]
    pub distill_hidden: Vec<i64>,
    /// distilled: passes over the training summaries.
    #[schemars(range(min = 1, max = 1000000))]
    pub distill_epochs: i64,
    /// distilled: peak learning rate.
    #[schemars(range(min = 0))]
    pub distill_lr: f64,
}

impl Default for Params {
    fn default() -> Params {
        Params {
            method: Method::Lexical,
            endpoint: String::new(),
            model: String::new(),
            api_key_env: "OPENAI_API_KEY".into(),
            rubrics: PathBuf::new(),
            concurrency: 4,
            timeout: 120.0,
            retries: 3,
            distill_hidden: vec![32],
            distill_epochs: 300,
            distill_lr: 0.003,
        }
    }
}

/// The inputs of a featurize stage.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Inputs {
    /// Datasets whose candidate summaries are scored.
    pub datasets: Vec<DatasetInput>,
}

/// The stored scores of every candidate; an error where one has none.
fn stored_scores(products: &[Product]) -> Result<Vec<Vec<[f64; 7]>>, String> {
    let mut out = Vec::new();
    for p in products {
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
    Ok(out)
}

impl Kind for FeaturizeStage {
    type Params = Params;
    type Inputs = Inputs;

    fn check(&self, p: &Params) -> Result<(), String> {
        if p.method == Method::LlmJudge && p.endpoint.is_empty() {
            return Err(
                "method `llm-judge` needs `endpoint`, e.g. \"http://127.0.0.1:8000/v1\"".into(),
            );
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
        let n_candidates: usize = products.iter().map(|p| p.candidates.len()).sum();
        if n_candidates == 0 {
            return Err("the inputs have no candidate summaries to score".into());
        }
        let started = std::time::Instant::now();
        let (computed, mut extra) = match p.method {
            Method::FromData => (stored_scores(&products)?, Metrics::new()),
            Method::Lexical => (lexical_scores(&products), Metrics::new()),
            Method::LlmJudge => judge::run(p, ctx, &products)?,
            Method::Distilled => distill::run(p, ctx, &products)?,
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
            "{}: scored {n_candidates} summaries in {seconds:.2}s ({:.0}/s)",
            p.method.name(),
            n_candidates as f64 / seconds.max(1e-9)
        );
        Ok(m)
    }
}
