//! `llm-judge`: the seven scores from an LLM behind any OpenAI-compatible
//! chat-completions endpoint (vLLM, llama.cpp server, Ollama, hosted APIs).
//!
//! One request per (summary, dimension) with that dimension's rubric
//! (`plugins/judge/<dimension>.txt`, or a folder given as `rubrics`); the
//! score is read from `<score>N</score>` in the answer. Every answer is saved
//! under the cache's memo folder by a blake3 key of (endpoint, model, prompt)
//! the moment it arrives, so reruns and other experiments never ask twice and
//! an unreachable server loses nothing already answered. Requests run on
//! `concurrency` threads with a timeout and retries with exponential backoff.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use super::Params;
use crate::stages::formats::dataset::{DOMAIN_KEYS, Product};
use crate::stages::kind::StageContext;

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
    let numbered: Vec<String> = reviews
        .iter()
        .enumerate()
        .map(|(i, r)| format!("{}. {}", i + 1, r.replace('\n', " ")))
        .collect();
    rubric
        .replace("{reviews}", &numbered.join("\n"))
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

#[derive(Debug, Clone)]
/// Where and how the judge is asked.
pub struct Endpoint {
    /// The chat-completions URL.
    pub url: String,
    /// The model name the server expects.
    pub model: String,
    /// Sent as a Bearer token when set.
    pub api_key: Option<String>,
    /// Per request.
    pub timeout: Duration,
    /// Retries with exponential backoff.
    pub retries: u32,
}

/// Sends one chat request; retries connection failures, 429 and 5xx with backoff.
pub fn ask(ep: &Endpoint, prompt: &str) -> Result<String, String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(ep.timeout))
        .http_status_as_error(false)
        .build()
        .into();
    let body = serde_json::json!({
        "model": ep.model,
        "messages": [{"role": "user", "content": prompt}],
        "temperature": 0.0,
    })
    .to_string();
    let mut last = String::new();
    for attempt in 0..=ep.retries {
        if attempt > 0 {
            std::thread::sleep(Duration::from_millis((250u64 << attempt.min(6)).min(8_000)));
        }
        let mut req = agent
            .post(&ep.url)
            .header("Content-Type", "application/json");
        if let Some(k) = &ep.api_key {
            req = req.header("Authorization", format!("Bearer {k}"));
        }
        match req.send(body.as_str()) {
            Ok(mut resp) => {
                let status = resp.status().as_u16();
                let text = resp
                    .body_mut()
                    .read_to_string()
                    .map_err(|e| format!("reading the answer: {e}"))?;
                if status == 429 || status >= 500 {
                    last = format!(
                        "HTTP {status} from {}: {}",
                        ep.url,
                        text.chars().take(200).collect::<String>()
                    );
                    continue;
                }
                if status != 200 {
                    return Err(format!(
                        "HTTP {status} from {}: {}",
                        ep.url,
                        text.chars().take(300).collect::<String>()
                    ));
                }
                let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
                    format!(
                        "the answer is not JSON ({e}): {}",
                        text.chars().take(200).collect::<String>()
                    )
                })?;
                return v["choices"][0]["message"]["content"]
                    .as_str()
                    .map(str::to_string)
                    .ok_or_else(|| {
                        format!(
                            "the answer has no choices[0].message.content: {}",
                            text.chars().take(200).collect::<String>()
                        )
                    });
            }
            Err(e) => last = format!("cannot reach {}: {e}", ep.url),
        }
    }
    Err(format!(
        "{last} (after {} attempts; is the server running?)",
        ep.retries + 1
    ))
}

/// The memo file of a prompt's answer.
fn memo_path(dir: &Path, ep: &Endpoint, prompt: &str) -> PathBuf {
    let key = blake3::hash(format!("{}\0{}\0{prompt}", ep.url, ep.model).as_bytes())
        .to_hex()
        .to_string();
    dir.join(&key[..2]).join(format!("{key}.json"))
}

fn remember(path: &Path, answer: &str) -> Result<(), String> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create `{}`: {e}", dir.display()))?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, serde_json::json!({ "answer": answer }).to_string())
        .map_err(|e| format!("cannot save an answer: {e}"))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("cannot save an answer: {e}"))
}

fn recall(path: &Path) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    v["answer"].as_str().map(str::to_string)
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
    let key_env = p.api_key_env.as_str();
    let ep = Endpoint {
        url: format!("{}/chat/completions", endpoint.trim_end_matches('/')),
        model: p.model.clone(),
        api_key: std::env::var(key_env).ok().filter(|k| !k.is_empty()),
        timeout: Duration::from_secs_f64(p.timeout.max(0.1)),
        retries: p.retries.clamp(0, 1000) as u32,
    };
    let rubrics = rubrics(&p.rubrics.to_string_lossy())?;
    let concurrency = p.concurrency.max(1) as usize;
    let memo = ctx.memo_dir.join("judge");

    // Every (product, candidate, dimension) prompt, and which are not answered yet.
    let mut jobs = Vec::new();
    for (pi, prod) in products.iter().enumerate() {
        for (ci, c) in prod.candidates.iter().enumerate() {
            for (k, rubric) in rubrics.iter().enumerate() {
                let text = prompt(rubric, &prod.reviews, &c.text);
                let path = memo_path(&memo, &ep, &text);
                jobs.push((pi, ci, k, text, path));
            }
        }
    }
    let todo: Vec<usize> = (0..jobs.len()).filter(|&j| !jobs[j].4.is_file()).collect();
    let _ = writeln!(
        ctx.log,
        "{} prompts, {} answered before, {} to ask {} ({})",
        jobs.len(),
        jobs.len() - todo.len(),
        todo.len(),
        ep.url,
        ep.model
    );
    let next = AtomicUsize::new(0);
    let asked = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let failure: Mutex<Option<String>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..concurrency.min(todo.len().max(1)) {
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&j) = todo.get(i) else { break };
                    let (_, _, _, text, path) = &jobs[j];
                    let result = ask(&ep, text).and_then(|answer| remember(path, &answer));
                    match result {
                        Ok(()) => {
                            asked.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            stop.store(true, Ordering::Relaxed);
                            if let Ok(mut f) = failure.lock() {
                                f.get_or_insert(e);
                            }
                        }
                    }
                }
            });
        }
    });
    let asked = asked.load(Ordering::Relaxed);
    if let Some(e) = failure.into_inner().ok().flatten() {
        return Err(format!(
            "llm-judge: {e}\n  {asked} answers received in this run are saved; rerun to ask only the remaining ones"
        ));
    }
    let mut scores: Vec<Vec<[f64; 7]>> = products
        .iter()
        .map(|p| vec![[f64::NAN; 7]; p.candidates.len()])
        .collect();
    let mut parse_errors = 0;
    for (pi, ci, k, _, path) in &jobs {
        match recall(path).as_deref().and_then(parse_score) {
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
    m.insert("requests".into(), asked as f64);
    m.insert("answers_reused".into(), (jobs.len() - todo.len()) as f64);
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
