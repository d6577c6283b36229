//! The `preference` stage kind: which of two models' summaries of the same
//! reviews is better, the paper's human evaluation done by a judge. Input:
//! an `eval` stage's summaries (and the datasets with the reviews).
//!
//! Methods: `llm-judge` asks an LLM behind an OpenAI-compatible endpoint
//! (`text::llm`, memoised), each pair in both orders so a judge that favours
//! one position cancels out, ties allowed; `reward-model` prefers the summary
//! a reward model scores higher (offline, deterministic). Identical summaries
//! are a tie without asking. A product's score for the model is the mean
//! over the orders of win 1, tie 1/2, loss 0; the win rate is their mean
//! over products, with a bootstrap interval over products.
//!
//! Metrics, for each model against the baseline: `M.win_rate_vs_B` with
//! `.low` and `.high` (the interval), `M.wins_vs_B`, `M.ties_vs_B`,
//! `M.losses_vs_B` (products by their score), `M.unjudged_vs_B` (no
//! verdict in either order) and, for the LLM, `M.order_agreement_vs_B`
//! (both orders gave the same verdict) and `M.first_position_share_vs_B`
//! (of decisive answers, how many chose the summary shown first). With
//! several reward models each metric also gets `.RM` appended.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::Deserialize;

use crate::rng::Rng;
use crate::stages::formats::dataset::{DatasetInput, Product, products_of};
use crate::stages::formats::evaluation::{EvaluationInput, ProductSummaries};
use crate::stages::formats::reward::{RewardModelInput, ToScore};
use crate::stages::kind::{Kind, Metrics, StageContext};
use crate::stats::mean;
use crate::text::lexical::Lexical;
use crate::text::llm::{Endpoint, Question, ask_remaining, numbered_reviews, recall};

/// The built-in pairwise prompt.
pub const PAIRWISE_PROMPT: &str = include_str!("../../plugins/judge/pairwise.txt");

/// The `preference` kind.
pub struct PreferenceStage;

/// Why `llm-judge` cannot run, and what to do.
const NEEDS_ENDPOINT: &str = "method `llm-judge` needs `endpoint`, e.g. \"http://127.0.0.1:8000/v1\" (or use method \"reward-model\" offline)";

/// Who judges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// An LLM behind an OpenAI-compatible endpoint.
    LlmJudge,
    /// The reward models given as inputs (offline: runs anywhere, so the default).
    #[default]
    RewardModel,
}

/// The parameters of `plugins/builtin/preference.kdl`.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct Params {
    /// Who judges.
    pub method: Method,
    /// The models judged against the baseline (empty: every other model).
    pub models: Vec<String>,
    /// The model they are compared with (empty: the evaluation's baseline).
    pub baseline: String,
    /// llm-judge: base URL of the API.
    pub endpoint: String,
    /// llm-judge: the model name.
    pub model: String,
    /// llm-judge: environment variable holding the API key.
    pub api_key_env: String,
    /// llm-judge: the prompt file (empty: the built-in one).
    pub prompt: PathBuf,
    /// llm-judge: requests in flight.
    #[schemars(range(min = 1, max = 1024))]
    pub concurrency: i64,
    /// llm-judge: seconds per request.
    #[schemars(range(min = 0.1))]
    pub timeout: f64,
    /// llm-judge: retries with backoff.
    #[schemars(range(min = 0, max = 100))]
    pub retries: i64,
    /// reward-model: rewards this close are a tie.
    #[schemars(range(min = 0))]
    pub tie_margin: f64,
    /// Bootstrap resamples of the products for the interval.
    #[schemars(range(min = 0, max = 1000000))]
    pub bootstrap: i64,
    /// The interval's coverage.
    #[schemars(range(min = 0.5, max = 0.999))]
    pub confidence: f64,
}

impl Default for Params {
    fn default() -> Params {
        Params {
            method: Method::RewardModel,
            models: Vec::new(),
            baseline: String::new(),
            endpoint: String::new(),
            model: String::new(),
            api_key_env: "OPENAI_API_KEY".into(),
            prompt: PathBuf::new(),
            concurrency: 4,
            timeout: 120.0,
            retries: 3,
            tie_margin: 0.0,
            bootstrap: 2000,
            confidence: 0.95,
        }
    }
}

/// The inputs of a preference stage.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Inputs {
    /// The evaluation whose summaries are compared.
    pub evaluation: EvaluationInput,
    /// The datasets with the products' reviews.
    pub datasets: Vec<DatasetInput>,
    /// reward-model: the judges.
    pub reward_model: Vec<RewardModelInput>,
}

/// A verdict on one order: which position won.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The summary shown first.
    A,
    /// The summary shown second.
    B,
    /// Neither is better.
    Tie,
}

impl Verdict {
    fn name(self) -> &'static str {
        match self {
            Verdict::A => "A",
            Verdict::B => "B",
            Verdict::Tie => "tie",
        }
    }

    /// The score of the summary shown first: win 1, tie 1/2, loss 0.
    fn first_score(self) -> f64 {
        match self {
            Verdict::A => 1.0,
            Verdict::B => 0.0,
            Verdict::Tie => 0.5,
        }
    }
}

/// The verdict in the last `<preference>...</preference>` of an answer.
pub fn parse_verdict(answer: &str) -> Option<Verdict> {
    let lower = answer.to_ascii_lowercase();
    let start = lower.rfind("<preference>")? + "<preference>".len();
    let end = lower[start..].find("</preference>")? + start;
    let inner = lower[start..end]
        .trim()
        .trim_matches(|c: char| !c.is_alphanumeric());
    match inner {
        "a" | "summary a" => Some(Verdict::A),
        "b" | "summary b" => Some(Verdict::B),
        "tie" | "equal" | "neither" | "both" | "same" => Some(Verdict::Tie),
        _ => None,
    }
}

/// The prompt for one order.
pub fn pairwise_prompt(template: &str, reviews: &[String], a: &str, b: &str) -> String {
    template
        .replace("{reviews}", &numbered_reviews(reviews))
        .replace("{summary_a}", a)
        .replace("{summary_b}", b)
}

fn template(p: &Params) -> Result<String, String> {
    if p.prompt.as_os_str().is_empty() {
        return Ok(PAIRWISE_PROMPT.to_string());
    }
    let text = std::fs::read_to_string(&p.prompt)
        .map_err(|e| format!("cannot read prompt `{}`: {e}", p.prompt.display()))?;
    for slot in ["{reviews}", "{summary_a}", "{summary_b}"] {
        if !text.contains(slot) {
            return Err(format!(
                "prompt `{}` must contain {slot} (see plugins/judge/pairwise.txt)",
                p.prompt.display()
            ));
        }
    }
    Ok(text)
}

/// One product's judgement of one pair.
#[derive(Debug, Clone)]
struct Judged {
    /// Per order asked (model first, then baseline first); `None`: no verdict.
    verdicts: Vec<Option<Verdict>>,
    /// The model's score: the mean over orders with a verdict.
    score: Option<f64>,
}

impl Judged {
    fn tie_unasked() -> Judged {
        Judged {
            verdicts: Vec::new(),
            score: Some(0.5),
        }
    }

    /// From the two orders' verdicts: (model first, baseline first).
    fn of_orders(model_first: Option<Verdict>, base_first: Option<Verdict>) -> Judged {
        let scores: Vec<f64> = [
            model_first.map(Verdict::first_score),
            base_first.map(|v| 1.0 - v.first_score()),
        ]
        .into_iter()
        .flatten()
        .collect();
        Judged {
            verdicts: vec![model_first, base_first],
            score: (!scores.is_empty()).then(|| mean(&scores)),
        }
    }
}

/// One judge's name and its judgements, per pair, per product.
type JudgeVerdicts = (String, Vec<Vec<Judged>>);

/// The pairs judged, (model, baseline), checked against the evaluation.
fn pairs(p: &Params, models: &[String]) -> Result<Vec<(String, String)>, String> {
    let base = if p.baseline.is_empty() {
        models
            .first()
            .cloned()
            .ok_or("the evaluation has no models")?
    } else {
        p.baseline.clone()
    };
    let known = |m: &String| {
        if models.contains(m) {
            Ok(())
        } else {
            Err(format!(
                "the evaluation has no model `{m}` (it has {}): fix `models` or `baseline`",
                models.join(", ")
            ))
        }
    };
    known(&base)?;
    let chosen: Vec<String> = if p.models.is_empty() {
        models.iter().filter(|m| **m != base).cloned().collect()
    } else {
        p.models.clone()
    };
    for m in &chosen {
        known(m)?;
        if *m == base {
            return Err(format!(
                "`{m}` is the baseline: it cannot be judged against itself"
            ));
        }
    }
    if chosen.is_empty() {
        return Err("the evaluation has only its baseline: nothing to compare".into());
    }
    Ok(chosen.into_iter().map(|m| (m, base.clone())).collect())
}

/// `model`'s summary of one product.
fn summary_of<'a>(row: &'a ProductSummaries, model: &str) -> Result<&'a str, String> {
    row.summaries
        .get(model)
        .map(String::as_str)
        .ok_or_else(|| format!("product `{}` has no summary by `{model}`", row.product))
}

/// The summaries of a pair for one product.
fn texts<'a>(
    row: &'a ProductSummaries,
    pair: &(String, String),
) -> Result<(&'a str, &'a str), String> {
    Ok((summary_of(row, &pair.0)?, summary_of(row, &pair.1)?))
}

/// Every judgement by the LLM, asking only what is not remembered.
fn judge_llm(
    p: &Params,
    ctx: &mut StageContext<'_>,
    rows: &[(&ProductSummaries, &Product)],
    pairs: &[(String, String)],
    m: &mut Metrics,
) -> Result<Vec<Vec<Judged>>, String> {
    if p.endpoint.is_empty() {
        return Err(NEEDS_ENDPOINT.into());
    }
    let ep = Endpoint::new(&p.endpoint, &p.model, &p.api_key_env, p.timeout, p.retries);
    let template = template(p)?;
    let memo = ctx.memo_dir.join("pairwise");
    // Per pair, per product: the two questions, or none for identical summaries.
    let mut questions: Vec<Question> = Vec::new();
    let mut slots: Vec<Vec<Option<usize>>> = Vec::new();
    for pair in pairs {
        let mut per_product = Vec::new();
        for (row, product) in rows {
            let (a, b) = texts(row, pair)?;
            if a.trim() == b.trim() {
                per_product.push(None);
                continue;
            }
            per_product.push(Some(questions.len()));
            for (x, y) in [(a, b), (b, a)] {
                let text = pairwise_prompt(&template, &product.reviews, x, y);
                questions.push(Question::new(&memo, &ep, text));
            }
        }
        slots.push(per_product);
    }
    let asked = ask_remaining(
        &ep,
        &questions,
        p.concurrency.max(1) as usize,
        ctx.log,
        "preference",
    )?;
    m.insert("requests".into(), asked.received as f64);
    m.insert("answers_reused".into(), asked.reused as f64);
    let verdict = |q: &Question| recall(&q.memo).as_deref().and_then(parse_verdict);
    let mut unparsed = 0;
    let judged = slots
        .iter()
        .map(|per_product| {
            per_product
                .iter()
                .map(|slot| match slot {
                    None => Judged::tie_unasked(),
                    Some(i) => {
                        let (first, second) = (verdict(&questions[*i]), verdict(&questions[i + 1]));
                        unparsed += usize::from(first.is_none()) + usize::from(second.is_none());
                        Judged::of_orders(first, second)
                    }
                })
                .collect()
        })
        .collect();
    m.insert("unparsed_answers".into(), unparsed as f64);
    Ok(judged)
}

/// Every judgement by each reward model: the higher reward wins.
fn judge_by_rewards(
    p: &Params,
    ctx: &StageContext<'_>,
    inputs: &Inputs,
    rows: &[(&ProductSummaries, &Product)],
    pairs: &[(String, String)],
) -> Result<Vec<JudgeVerdicts>, String> {
    if inputs.reward_model.is_empty() {
        return Err(
            "method `reward-model` needs a reward-model input (a reward-model stage)".into(),
        );
    }
    let device = crate::ml::device(ctx.backend, ctx.seed as u64)?;
    // Each judged model's summaries with their lexical scores, once for every reward model.
    let lexical = Lexical::new();
    let profiles: Vec<_> = rows
        .iter()
        .map(|(_, x)| lexical.profile(&x.reviews))
        .collect();
    let models: BTreeSet<&str> = pairs
        .iter()
        .flat_map(|(m, b)| [m.as_str(), b.as_str()])
        .collect();
    let mut scored: BTreeMap<&str, Vec<(&str, [f64; 7])>> = BTreeMap::new();
    for m in models {
        let per_product = rows
            .iter()
            .zip(&profiles)
            .map(|((row, _), prof)| {
                let t = summary_of(row, m)?;
                Ok((t, lexical.score(prof, t)))
            })
            .collect::<Result<_, String>>()?;
        scored.insert(m, per_product);
    }
    let mut out = Vec::new();
    for rm in &inputs.reward_model {
        let scorer = rm.scorer(&device)?;
        let mut rewards: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
        for (m, per_product) in &scored {
            let items: Vec<ToScore> = rows
                .iter()
                .zip(per_product)
                .map(|((_, x), (t, f))| ToScore {
                    product: &x.id,
                    reviews: &x.reviews,
                    summary: t,
                    features: Some(*f),
                })
                .collect();
            rewards.insert(m, scorer.rewards(&items, &device)?);
        }
        let per_pair = pairs
            .iter()
            .map(|(m, b)| {
                rewards[m.as_str()]
                    .iter()
                    .zip(&rewards[b.as_str()])
                    .map(|(a, b)| by_margin(*a, *b, p.tie_margin))
                    .collect()
            })
            .collect();
        out.push((rm.stage.clone(), per_pair));
    }
    Ok(out)
}

/// The judgement of two rewards: the higher wins unless they are within `margin`.
fn by_margin(a: f64, b: f64, margin: f64) -> Judged {
    let v = if a - b > margin {
        Verdict::A
    } else if b - a > margin {
        Verdict::B
    } else {
        Verdict::Tie
    };
    Judged {
        verdicts: vec![Some(v)],
        score: Some(v.first_score()),
    }
}

/// The percentile bootstrap interval of the mean of `xs`.
pub fn bootstrap_interval(
    xs: &[f64],
    resamples: usize,
    confidence: f64,
    seed: u64,
) -> Option<(f64, f64)> {
    if xs.is_empty() || resamples == 0 {
        return None;
    }
    let mut rng = Rng::new(seed);
    let n = xs.len();
    let mut means: Vec<f64> = (0..resamples)
        .map(|_| {
            (0..n)
                .map(|_| xs[rng.below(n as u64) as usize])
                .sum::<f64>()
                / n as f64
        })
        .collect();
    means.sort_by(f64::total_cmp);
    let tail = (1.0 - confidence) / 2.0;
    let at = |q: f64| means[((q * (resamples - 1) as f64).round() as usize).min(resamples - 1)];
    Some((at(tail), at(1.0 - tail)))
}

/// The metrics of one pair under one judge.
fn pair_metrics(
    p: &Params,
    pair: &(String, String),
    judged: &[Judged],
    seed: u64,
    suffix: &str,
    m: &mut Metrics,
) {
    let (model, base) = pair;
    let mut put = |what: &str, v: f64| {
        m.insert(format!("{model}.{what}_vs_{base}{suffix}"), v);
    };
    let scores: Vec<f64> = judged.iter().filter_map(|j| j.score).collect();
    if !scores.is_empty() {
        put("win_rate", mean(&scores));
    }
    put("wins", scores.iter().filter(|s| **s > 0.5).count() as f64);
    put("ties", scores.iter().filter(|s| **s == 0.5).count() as f64);
    put("losses", scores.iter().filter(|s| **s < 0.5).count() as f64);
    put("unjudged", (judged.len() - scores.len()) as f64);
    if p.method == Method::LlmJudge {
        let both: Vec<(Verdict, Verdict)> = judged
            .iter()
            .filter_map(|j| match j.verdicts.as_slice() {
                [Some(x), Some(y)] => Some((*x, *y)),
                _ => None,
            })
            .collect();
        if !both.is_empty() {
            // The same verdict in both orders: A then B (or B then A, or tie twice).
            let agree = both
                .iter()
                .filter(|(x, y)| x.first_score() + y.first_score() == 1.0)
                .count();
            put("order_agreement", agree as f64 / both.len() as f64);
        }
        let decisive: Vec<Verdict> = judged
            .iter()
            .flat_map(|j| j.verdicts.iter().flatten().copied())
            .filter(|v| *v != Verdict::Tie)
            .collect();
        if !decisive.is_empty() {
            let first = decisive.iter().filter(|v| **v == Verdict::A).count();
            put("first_position_share", first as f64 / decisive.len() as f64);
        }
    }
    let key = |what: &str| format!("{model}.win_rate_vs_{base}.{what}{suffix}");
    if let Some((lo, hi)) = bootstrap_interval(&scores, p.bootstrap as usize, p.confidence, seed) {
        m.insert(key("low"), lo);
        m.insert(key("high"), hi);
    }
}

/// `preferences.jsonl` (a line per product, pair and judge) and `preference.json`.
fn write_outputs(
    out: &Path,
    p: &Params,
    rows: &[(&ProductSummaries, &Product)],
    pairs: &[(String, String)],
    judges: &[JudgeVerdicts],
) -> Result<(), String> {
    let mut text = String::new();
    for (judge, per_pair) in judges {
        for (pair, judged) in pairs.iter().zip(per_pair) {
            for ((row, _), j) in rows.iter().zip(judged) {
                let verdicts: Vec<Option<&str>> =
                    j.verdicts.iter().map(|v| v.map(Verdict::name)).collect();
                let line = serde_json::json!({
                    "product": row.product, "model": pair.0, "baseline": pair.1,
                    "judge": judge, "verdicts": verdicts, "score": j.score,
                });
                text.push_str(&line.to_string());
                text.push('\n');
            }
        }
    }
    std::fs::write(out.join("preferences.jsonl"), text)
        .map_err(|e| format!("cannot write preferences.jsonl: {e}"))?;
    let summary = serde_json::json!({
        "method": p.method,
        "judges": judges.iter().map(|(j, _)| j).collect::<Vec<_>>(),
        "pairs": pairs,
        "confidence": p.confidence,
    });
    std::fs::write(out.join("preference.json"), summary.to_string())
        .map_err(|e| format!("cannot write preference.json: {e}"))
}

impl Kind for PreferenceStage {
    type Params = Params;
    type Inputs = Inputs;

    fn check(&self, p: &Params) -> Result<(), String> {
        if p.method == Method::LlmJudge && p.endpoint.is_empty() {
            return Err(NEEDS_ENDPOINT.into());
        }
        Ok(())
    }

    fn run(
        &self,
        p: &Params,
        inputs: &Inputs,
        ctx: &mut StageContext<'_>,
    ) -> Result<Metrics, String> {
        if p.method == Method::LlmJudge && !inputs.reward_model.is_empty() {
            return Err("reward-model inputs are for method \"reward-model\"; the LLM judge reads the summaries alone".into());
        }
        let (comparison, summaries) = inputs.evaluation.read()?;
        let pairs = pairs(p, &comparison.models)?;
        let products: BTreeMap<String, Product> = products_of(&inputs.datasets)?
            .into_iter()
            .map(|x| (x.id.clone(), x))
            .collect();
        let rows = summaries
            .iter()
            .map(|s| {
                products.get(&s.product).map(|x| (s, x)).ok_or_else(|| {
                    format!("no dataset input has product `{}` of the evaluation: give the datasets the eval stage read", s.product)
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let mut m = Metrics::new();
        m.insert("products".into(), rows.len() as f64);
        let judges = match p.method {
            Method::LlmJudge => {
                vec![("llm".to_string(), judge_llm(p, ctx, &rows, &pairs, &mut m)?)]
            }
            Method::RewardModel => judge_by_rewards(p, ctx, inputs, &rows, &pairs)?,
        };
        for (r, (judge, per_pair)) in judges.iter().enumerate() {
            for (pair, judged) in pairs.iter().zip(per_pair) {
                let seed = ctx.seed as u64;
                if r == 0 {
                    pair_metrics(p, pair, judged, seed, "", &mut m);
                }
                if judges.len() > 1 {
                    pair_metrics(p, pair, judged, seed, &format!(".{judge}"), &mut m);
                }
            }
        }
        write_outputs(ctx.output, p, &rows, &pairs, &judges)?;
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_verdicts_from_sloppy_answers() {
        assert_eq!(
            parse_verdict("Reasoning.\n<preference>A</preference>"),
            Some(Verdict::A)
        );
        assert_eq!(
            parse_verdict("<PREFERENCE> b </PREFERENCE>"),
            Some(Verdict::B)
        );
        assert_eq!(
            parse_verdict("<preference>Tie</preference>"),
            Some(Verdict::Tie)
        );
        assert_eq!(
            parse_verdict("<preference>\"Summary A\"</preference>"),
            Some(Verdict::A)
        );
        assert_eq!(
            parse_verdict(
                "first <preference>A</preference>, on reflection <preference>B</preference>"
            ),
            Some(Verdict::B)
        );
        assert_eq!(parse_verdict("A is better."), None);
        assert_eq!(parse_verdict("<preference>C</preference>"), None);
        assert_eq!(parse_verdict("<preference>A"), None);
    }

    #[test]
    fn both_orders_cancel_a_judge_that_always_picks_the_first() {
        // A judge that always says A: the model wins in one order and loses in the other.
        let j = Judged::of_orders(Some(Verdict::A), Some(Verdict::A));
        assert_eq!(j.score, Some(0.5));
        // Consistent: the model first wins, and with the baseline first B wins.
        assert_eq!(
            Judged::of_orders(Some(Verdict::A), Some(Verdict::B)).score,
            Some(1.0)
        );
        // One order without a verdict: the other decides alone.
        assert_eq!(Judged::of_orders(None, Some(Verdict::Tie)).score, Some(0.5));
        assert_eq!(Judged::of_orders(None, None).score, None);
    }

    #[test]
    fn the_bootstrap_interval_holds_the_mean_and_narrows_with_more_products() {
        let few: Vec<f64> = (0..20).map(|i| f64::from(i % 2)).collect();
        let many: Vec<f64> = (0..2000).map(|i| f64::from(i % 2)).collect();
        let (lo, hi) = bootstrap_interval(&few, 2000, 0.95, 1).unwrap();
        let (lo2, hi2) = bootstrap_interval(&many, 2000, 0.95, 1).unwrap();
        assert!(lo < 0.5 && 0.5 < hi && lo2 < 0.5 && 0.5 < hi2);
        // The normal approximation: half-width 1.96 * 0.5 / sqrt(n).
        assert!(
            (hi - lo - 2.0 * 1.96 * 0.5 / 20f64.sqrt()).abs() < 0.08,
            "{lo} {hi}"
        );
        assert!(
            (hi2 - lo2 - 2.0 * 1.96 * 0.5 / 2000f64.sqrt()).abs() < 0.01,
            "{lo2} {hi2}"
        );
        assert_eq!(bootstrap_interval(&[], 100, 0.95, 1), None);
    }
}
