//! The `evaluation` format: what an `eval` stage wrote, `comparison.json`
//! (the models in order, the baseline first, and the reward models) and
//! `summaries.jsonl` (per product, every model's summary and the references).

use std::collections::BTreeMap;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::Deserialize;

/// An input in the `evaluation` format.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[schemars(rename = "evaluation")]
pub struct EvaluationInput {
    /// The upstream stage's declared name.
    pub stage: String,
    /// Its result folder.
    pub path: PathBuf,
}

/// The models an evaluation compared, as `comparison.json` lists them.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Comparison {
    /// The models in order.
    pub models: Vec<String>,
    /// The first model.
    #[serde(default)]
    pub baseline: Option<String>,
    /// The reward models it measured with.
    #[serde(default)]
    pub reward_models: Vec<String>,
}

/// One line of `summaries.jsonl`.
#[derive(Debug, Clone, Deserialize)]
pub struct ProductSummaries {
    /// The product's id.
    pub product: String,
    /// Each model's summary, by the model's stage name.
    pub summaries: BTreeMap<String, String>,
    /// What ROUGE compared with.
    #[serde(default)]
    pub references: Vec<String>,
}

impl EvaluationInput {
    /// The comparison and the summaries, in the evaluation's product order.
    pub fn read(&self) -> Result<(Comparison, Vec<ProductSummaries>), String> {
        let at = |name: &str| {
            let p = self.path.join(name);
            std::fs::read_to_string(&p).map_err(|e| {
                format!(
                    "input `{}`: cannot read {name} (is it an eval stage?): {e}",
                    self.stage
                )
            })
        };
        let comparison: Comparison = serde_json::from_str(&at("comparison.json")?)
            .map_err(|e| format!("input `{}`: comparison.json: {e}", self.stage))?;
        let rows = at("summaries.jsonl")?
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| {
                serde_json::from_str(l).map_err(|e| {
                    format!(
                        "input `{}`: summaries.jsonl line {}: {e}",
                        self.stage,
                        i + 1
                    )
                })
            })
            .collect::<Result<Vec<ProductSummaries>, String>>()?;
        Ok((comparison, rows))
    }
}
