//! The normalized dataset format every later stage reads: `products.jsonl`,
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
pub struct Product {
    pub id: String,
    pub source: String,
    pub split: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    pub reviews: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub review_ratings: Vec<f64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub references: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub aspect_references: BTreeMap<String, Vec<String>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub candidates: Vec<Candidate>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub preferences: Vec<Preference>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Category {
    Good,
    SlightlyBad,
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
pub struct Candidate {
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scores: Option<BTreeMap<String, f64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<Category>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub human: Option<BTreeMap<String, f64>>,
}

impl Candidate {
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
pub struct Preference {
    pub preferred: usize,
    pub rejected: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
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
