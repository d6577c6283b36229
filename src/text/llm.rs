//! The client of an LLM behind any OpenAI-compatible chat-completions
//! endpoint (vLLM, llama.cpp server, Ollama, hosted APIs), shared by the
//! kinds that ask one: featurize's `llm-judge` scores and the `preference`
//! kind's pairwise judge.
//!
//! Every answer is saved under a memo folder by a blake3 key of (endpoint,
//! model, prompt) the moment it arrives, so reruns and other experiments
//! never ask twice and a server that dies halfway loses nothing already
//! answered. Requests run on several threads with a timeout and retries with
//! exponential backoff; the first failure stops the others.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

/// Where and how the LLM is asked.
#[derive(Debug, Clone)]
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

impl Endpoint {
    /// The endpoint of a base URL (`http://127.0.0.1:8000/v1`), with the key
    /// read from the environment variable `api_key_env` when it is set.
    pub fn new(base: &str, model: &str, api_key_env: &str, timeout: f64, retries: i64) -> Endpoint {
        Endpoint {
            url: format!("{}/chat/completions", base.trim_end_matches('/')),
            model: model.to_string(),
            api_key: std::env::var(api_key_env).ok().filter(|k| !k.is_empty()),
            timeout: Duration::from_secs_f64(timeout.max(0.1)),
            retries: retries.clamp(0, 1000) as u32,
        }
    }
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
                    last = format!("HTTP {status} from {}: {}", ep.url, head(&text, 200));
                    continue;
                }
                if status != 200 {
                    return Err(format!(
                        "HTTP {status} from {}: {}",
                        ep.url,
                        head(&text, 300)
                    ));
                }
                return content_of(&text);
            }
            Err(e) => last = format!("cannot reach {}: {e}", ep.url),
        }
    }
    Err(format!(
        "{last} (after {} attempts; is the server running?)",
        ep.retries + 1
    ))
}

fn head(text: &str, n: usize) -> String {
    text.chars().take(n).collect()
}

/// `choices[0].message.content` of a chat-completions answer.
fn content_of(text: &str) -> Result<String, String> {
    let v: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| format!("the answer is not JSON ({e}): {}", head(text, 200)))?;
    v["choices"][0]["message"]["content"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| {
            format!(
                "the answer has no choices[0].message.content: {}",
                head(text, 200)
            )
        })
}

/// The memo file of a prompt's answer under `dir`.
pub fn memo_path(dir: &Path, ep: &Endpoint, prompt: &str) -> PathBuf {
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

/// The remembered answer at `path`, if any.
pub fn recall(path: &Path) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    v["answer"].as_str().map(str::to_string)
}

/// One prompt and where its answer is remembered.
pub struct Question {
    /// What is sent.
    pub prompt: String,
    /// Its memo file ([`memo_path`]).
    pub memo: PathBuf,
}

impl Question {
    /// The question of `prompt`, remembered under `dir`.
    pub fn new(dir: &Path, ep: &Endpoint, prompt: String) -> Question {
        let memo = memo_path(dir, ep, &prompt);
        Question { prompt, memo }
    }

    /// Whether it was answered before.
    pub fn answered(&self) -> bool {
        self.memo.is_file()
    }
}

/// What [`ask_all`] did: how many it asked, and the first failure.
struct Asked {
    /// Answers received (and saved) in this call.
    received: usize,
    /// Why it stopped early, if it did.
    failure: Option<String>,
}

/// Asks every question not answered before, on `concurrency` threads,
/// saving each answer as it arrives; the first failure stops the rest.
fn ask_all(ep: &Endpoint, questions: &[Question], concurrency: usize) -> Asked {
    let todo: Vec<&Question> = questions.iter().filter(|q| !q.answered()).collect();
    let next = AtomicUsize::new(0);
    let received = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let failure: Mutex<Option<String>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..concurrency.max(1).min(todo.len().max(1)) {
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    let Some(q) = todo.get(next.fetch_add(1, Ordering::Relaxed)) else {
                        break;
                    };
                    match ask(ep, &q.prompt).and_then(|answer| remember(&q.memo, &answer)) {
                        Ok(()) => {
                            received.fetch_add(1, Ordering::Relaxed);
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
    Asked {
        received: received.load(Ordering::Relaxed),
        failure: failure.into_inner().ok().flatten(),
    }
}

/// How many answers [`ask_remaining`] received now and found remembered.
pub struct Answered {
    /// Received in this call.
    pub received: usize,
    /// Answered before.
    pub reused: usize,
}

/// [`ask_all`], saying in `log` how many were answered before; a failure
/// becomes the error `who` reports, saying that what arrived is kept.
pub fn ask_remaining(
    ep: &Endpoint,
    questions: &[Question],
    concurrency: usize,
    log: &mut dyn std::io::Write,
    who: &str,
) -> Result<Answered, String> {
    let reused = questions.iter().filter(|q| q.answered()).count();
    let _ = writeln!(
        log,
        "{} prompts, {reused} answered before, {} to ask {} ({})",
        questions.len(),
        questions.len() - reused,
        ep.url,
        ep.model
    );
    let asked = ask_all(ep, questions, concurrency);
    match asked.failure {
        Some(e) => Err(format!(
            "{who}: {e}\n  {} answers received in this run are saved; rerun to ask only the remaining ones",
            asked.received
        )),
        None => Ok(Answered {
            received: asked.received,
            reused,
        }),
    }
}

/// The reviews as the prompts show them: numbered, one per line.
pub fn numbered_reviews(reviews: &[String]) -> String {
    reviews
        .iter()
        .enumerate()
        .map(|(i, r)| format!("{}. {}", i + 1, r.replace('\n', " ")))
        .collect::<Vec<_>>()
        .join("\n")
}
