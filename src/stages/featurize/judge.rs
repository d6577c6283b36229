//! `llm-judge`: the seven scores from an LLM behind any OpenAI-compatible
//! chat-completions endpoint (vLLM, llama.cpp server, Ollama, hosted APIs).
//!
//! One request per (summary, dimension) with that dimension's rubric
//! (`plugins/judge/<dimension>.txt`, or a folder given as `rubrics`); the
//! score is read from `<score>N</score>` in the answer. The client and its
//! memo of answers are `text::llm`'s: reruns never ask twice, and a server
//! that dies halfway loses nothing already answered.

use std::collections::BTreeMap;
use std::path::Path;

use super::Params;
use crate::stages::formats::dataset::{DOMAIN_KEYS, Product};
use crate::stages::kind::StageContext;
use crate::text::llm::{Endpoint, Question, ask_remaining, numbered_reviews, recall};

/// The built-in rubrics, one per dimension.
pub const RUBRICS: [(&str, &str); 7] = [
    (
        "aspect-coverage",
        include_str!("../../../plugins/judge/aspect-coverage.txt"),
    ),
    (
        "opinion-faithfulness",
        include_str!("../../../plugins/judge/opinion-faithfulness.txt"),
    ),
    (
        "opinion-coverage",
        include_str!("../../../plugins/judge/opinion-coverage.txt"),
    ),
    (
        "conciseness",
        include_str!("../../../plugins/judge/conciseness.txt"),
    ),
    (
        "relevance",
        include_str!("../../../plugins/judge/relevance.txt"),
    ),
    (
        "hallucination",
        include_str!("../../../plugins/judge/hallucination.txt"),
    ),
    (
        "language-correctness",
        include_str!("../../../plugins/judge/language-correctness.txt"),
    ),
];

/// Reads `<dimension>.txt` from `dir`, or the built-in rubrics when `dir` is empty.
pub fn rubrics(dir: &str) -> Result<Vec<String>, String> {
    if dir.is_empty() {
        return Ok(RUBRICS.iter().map(|(_, r)| r.to_string()).collect());
    }
    DOMAIN_KEYS
        .iter()
        .map(|k| {
            let p = Path::new(dir).join(format!("{k}.txt"));
            let text = std::fs::read_to_string(&p)
                .map_err(|e| format!("cannot read rubric `{}`: {e}", p.display()))?;
            if !text.contains("{summary}") || !text.contains("{reviews}") {
                return Err(format!(
                    "rubric `{}` must contain {{reviews}} and {{summary}}",
                    p.display()
                ));
            }
            Ok(text)
        })
        .collect()
}

/// The prompt of one dimension for one summary: the rubric, the reviews, the summary.
pub fn prompt(rubric: &str, reviews: &[String], summary: &str) -> String {
    rubric
        .replace("{reviews}", &numbered_reviews(reviews))
        .replace("{summary}", summary)
}

/// The score in `<score>...</score>` (first number inside, clamped to 0..5).
pub fn parse_score(answer: &str) -> Option<f64> {
    let lower = answer.to_ascii_lowercase();
    let start = lower.rfind("<score>")? + "<score>".len();
    let end = lower[start..]
        .find("</score>")
        .map(|e| start + e)
        .unwrap_or(lower.len());
    let inner = &answer[start..end];
    let num: String = inner
        .trim_start_matches(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-'))
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == '-')
        .collect();
    num.parse::<f64>()
        .ok()
        .filter(|x| x.is_finite())
        .map(|x| x.clamp(0.0, 5.0))
}

/// Asks for every (summary, dimension) not answered before; returns the scores.
pub fn run(
    p: &Params,
    ctx: &mut StageContext<'_>,
    products: &[Product],
) -> Result<super::Scored, String> {
    let endpoint = p.endpoint.as_str();
    if endpoint.is_empty() {
        return Err(
            "method `llm-judge` needs `endpoint`, e.g. \"http://127.0.0.1:8000/v1\"".into(),
        );
    }
    let ep = Endpoint::new(endpoint, &p.model, &p.api_key_env, p.timeout, p.retries);
    let rubrics = rubrics(&p.rubrics.to_string_lossy())?;
    let memo = ctx.memo_dir.join("judge");

    // Every (product, candidate, dimension) prompt.
    let mut jobs = Vec::new();
    let mut questions = Vec::new();
    for (pi, prod) in products.iter().enumerate() {
        for (ci, c) in prod.candidates.iter().enumerate() {
            for (k, rubric) in rubrics.iter().enumerate() {
                let text = prompt(rubric, &prod.reviews, &c.text);
                questions.push(Question::new(&memo, &ep, text));
                jobs.push((pi, ci, k));
            }
        }
    }
    let asked = ask_remaining(
        &ep,
        &questions,
        p.concurrency.max(1) as usize,
        ctx.log,
        "llm-judge",
    )?;
    let mut scores: Vec<Vec<[f64; 7]>> = products
        .iter()
        .map(|p| vec![[f64::NAN; 7]; p.candidates.len()])
        .collect();
    let mut parse_errors = 0;
    for ((pi, ci, k), q) in jobs.iter().zip(&questions) {
        match recall(&q.memo).as_deref().and_then(parse_score) {
            Some(v) => scores[*pi][*ci][*k] = v,
            None => {
                parse_errors += 1;
                let _ = writeln!(
                    ctx.log,
                    "no <score> tag: product `{}`, candidate {ci}, {}",
                    products[*pi].id, DOMAIN_KEYS[*k]
                );
            }
        }
    }
    let mut m = BTreeMap::new();
    m.insert("requests".into(), asked.received as f64);
    m.insert("answers_reused".into(), asked.reused as f64);
    m.insert("parse_errors".into(), parse_errors as f64);
    Ok((scores, m))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_scores_from_sloppy_answers() {
        assert_eq!(parse_score("Reasoning...\n<score>4.5</score>"), Some(4.5));
        assert_eq!(
            parse_score("<SCORE> 3 / 5 </SCORE> and more text"),
            Some(3.0)
        );
        assert_eq!(
            parse_score("first <score>1</score> then <score>2.25</score>"),
            Some(2.25)
        );
        assert_eq!(parse_score("<score>7</score>"), Some(5.0));
        assert_eq!(parse_score("I would give it a 4."), None);
        assert_eq!(parse_score("<score>n/a</score>"), None);
    }

    #[test]
    fn prompts_carry_reviews_and_summary() {
        let p = prompt(
            RUBRICS[0].1,
            &["Good fit.".into(), "Runs\nsmall.".into()],
            "Fits well.",
        );
        assert!(
            p.contains("1. Good fit.\n2. Runs small.")
                && p.contains("Summary:\nFits well.")
                && p.contains("<score>")
        );
    }
}
