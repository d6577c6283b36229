//! The `dataset` format, which every later stage reads: `products.jsonl`,
//! one JSON object per product.
//!
//! ```json
//! {"id": "B0013EQ20Y", "source": "copycat-amazon", "split": "test", "domain": "cloth",
//!  "reviews": ["..."], "review_ratings": [5, 4],
//!  "references": ["human summary", "..."],
//!  "aspect_references": {"fit": ["..."]},
//!  "candidates": [{"text": "...", "scores": {"aspect-coverage": 4.5, "...": 0},
//!                  "category": "good", "system": "fewsum", "index": 3, "human": {"fluency": 4.33}}],
//!  "preferences": [{"preferred": 0, "rejected": 1, "annotator": "common"}]}
//! ```
//! Empty lists, empty maps and absent values are omitted. `split` is one of
//! `train`, `validation`, `test`, or `unsplit` for sources without splits.
//! `scores` are the seven domain-knowledge scores on 0..5 ([`DOMAIN_KEYS`]);
//! `category` is the PromptOpinSumm prompt that produced a candidate;
//! `human` holds human ratings where a source has them (SummEval-OP, 1..5);
//! `preferences` index into `candidates`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The seven domain-knowledge dimensions, in the paper's order (5 = best for all).
pub const DOMAIN_KEYS: [&str; 7] = [
    "aspect-coverage",
    "opinion-faithfulness",
    "opinion-coverage",
    "conciseness",
    "relevance",
    "hallucination",
    "language-correctness",
];

/// Version of this format, written to `dataset.json`.
pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
/// One product: its reviews, summaries and what is known of them.
pub struct Product {
    /// The product's id in its source.
    pub id: String,
    /// The source it was read from.
    pub source: String,
    /// `train`, `validation`, `test` or `unsplit`.
    pub split: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// Product domain, where the source has one.
    pub domain: Option<String>,
    /// The reviews.
    pub reviews: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    /// Each review's rating, where known.
    pub review_ratings: Vec<f64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    /// Human reference summaries.
    pub references: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    /// Per-aspect references (Oposum+).
    pub aspect_references: BTreeMap<String, Vec<String>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    /// Candidate summaries.
    pub candidates: Vec<Candidate>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    /// Human preferences between candidates.
    pub preferences: Vec<Preference>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
/// The PromptOpinSumm prompt that produced a candidate (better first).
pub enum Category {
    /// A good summary was asked for.
    Good,
    /// A slightly bad one.
    SlightlyBad,
    /// A very bad one.
    VeryBad,
}

impl Category {
    /// PromptOpinSumm's layout: candidates 0-2 good, 3-5 slightly bad, 6-8 very bad.
    pub fn from_index(index: u32) -> Option<Category> {
        match index {
            0..=2 => Some(Category::Good),
            3..=5 => Some(Category::SlightlyBad),
            6..=8 => Some(Category::VeryBad),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
/// A candidate summary.
pub struct Candidate {
    /// Its text.
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// The seven domain scores on 0..5, by [`DOMAIN_KEYS`].
    pub scores: Option<BTreeMap<String, f64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// The prompt category that produced it.
    pub category: Option<Category>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// The system that wrote it (stored outputs).
    pub system: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// Its index in the source.
    pub index: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// Human ratings (SummEval-OP, 1..5).
    pub human: Option<BTreeMap<String, f64>>,
}

impl Candidate {
    /// A candidate with only a text.
    pub fn text(text: String) -> Candidate {
        Candidate {
            text,
            scores: None,
            category: None,
            system: None,
            index: None,
            human: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
/// A human preference between two candidates.
pub struct Preference {
    /// Index of the preferred candidate.
    pub preferred: usize,
    /// Index of the rejected one.
    pub rejected: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// Who judged, where known.
    pub annotator: Option<String>,
}

/// Reads `products.jsonl` from a dataset stage's output folder.
pub fn read_products(dir: &std::path::Path) -> Result<Vec<Product>, String> {
    let path = dir.join("products.jsonl");
    let text = std::fs::read_to_string(&path).map_err(|e| {
        format!(
            "cannot read `{}`: {e} (is this input a dataset stage?)",
            path.display()
        )
    })?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| format!("{}:{}: {e}", path.display(), i + 1))
        })
        .collect()
}

/// Writes `products.jsonl` into a stage's output folder.
pub fn write_products(dir: &std::path::Path, products: &[Product]) -> Result<(), String> {
    let mut out = String::new();
    for p in products {
        out.push_str(&serde_json::to_string(p).map_err(|e| e.to_string())?);
        out.push('\n');
    }
    std::fs::write(dir.join("products.jsonl"), out)
        .map_err(|e| format!("cannot write products.jsonl: {e}"))
}

/// Maps source split names to ours: `val`, `valid`, `dev` -> `validation`.
pub fn normalize_split(name: &str) -> String {
    match name.to_ascii_lowercase().as_str() {
        "train" | "training" => "train".into(),
        "val" | "valid" | "validation" | "dev" => "validation".into(),
        "test" => "test".into(),
        other => other.to_string(),
    }
}

/// An input in the `dataset` format.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[schemars(rename = "dataset")]
pub struct DatasetInput {
    /// The upstream stage's declared name.
    pub stage: String,
    /// Its result folder.
    pub path: PathBuf,
}

impl DatasetInput {
    /// The products of this input.
    pub fn products(&self) -> Result<Vec<Product>, String> {
        read_products(&self.path).map_err(|e| format!("input `{}`: {e}", self.stage))
    }
}

/// The products of every input, in order.
pub fn products_of(inputs: &[DatasetInput]) -> Result<Vec<Product>, String> {
    let mut out = Vec::new();
    for i in inputs {
        out.extend(i.products()?);
    }
    Ok(out)
}

/// Which summaries of a product a stage learns from or compares with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Target {
    /// The human reference summaries.
    Reference,
    /// The candidate the annotators preferred, once per preference.
    Preferred,
    /// The candidates of PromptOpinSumm's "good" prompt.
    Good,
    /// The candidates of the "slightly bad" prompt.
    SlightlyBad,
    /// The candidates of the "very bad" prompt.
    VeryBad,
}

impl Target {
    /// The manifest's name of this choice.
    pub fn name(self) -> &'static str {
        match self {
            Target::Reference => "reference",
            Target::Preferred => "preferred",
            Target::Good => "good",
            Target::SlightlyBad => "slightly-bad",
            Target::VeryBad => "very-bad",
        }
    }
}

/// The summaries that count as good ones: what PPO's cross-entropy term
/// teaches and what an evaluation compares with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum GoodTarget {
    /// The human reference summaries.
    Reference,
    /// The annotators' preferred candidates.
    Preferred,
    /// The candidates of the "good" prompt.
    Good,
}

impl GoodTarget {
    /// As a [`Target`].
    pub fn target(self) -> Target {
        match self {
            GoodTarget::Reference => Target::Reference,
            GoodTarget::Preferred => Target::Preferred,
            GoodTarget::Good => Target::Good,
        }
    }
}

impl Product {
    /// The summaries of this product that `target` names.
    pub fn targets(&self, target: Target) -> Vec<String> {
        let category = match target {
            Target::Reference => return self.references.clone(),
            Target::Preferred => {
                return self
                    .preferences
                    .iter()
                    .filter_map(|pref| self.candidates.get(pref.preferred))
                    .map(|c| c.text.clone())
                    .collect();
            }
            Target::Good => Category::Good,
            Target::SlightlyBad => Category::SlightlyBad,
            Target::VeryBad => Category::VeryBad,
        };
        self.candidates
            .iter()
            .filter(|c| c.category == Some(category))
            .map(|c| c.text.clone())
            .collect()
    }
}

/// One preference: (product index, preferred candidate, rejected candidate).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PairRef {
    /// Index of the product.
    pub product: usize,
    /// Index of the preferred candidate.
    pub preferred: usize,
    /// Index of the rejected candidate.
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
pub fn features(product: &Product, c: &Candidate, scale: f64) -> Result<[f32; 7], String> {
    let scores = c
        .scores
        .as_ref()
        .ok_or_else(|| format!("product `{}`: a candidate has no domain scores; add a featurize stage or use a source that has them", product.id))?;
    let mut out = [0f32; 7];
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
