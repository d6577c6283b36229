//! Models and datasets by `hf://` name, against a stand-in Hub on 127.0.0.1
//! (`tests/fixtures/hub/standin_hub.py`, started and stopped here) serving the
//! tiny BART fixture and a small PromptOpinSumm repository over the Hub's
//! real endpoints. Python's `huggingface_hub` downloads from the same
//! stand-in (proof that it is faithful), and the two share one cache both
//! ways. Then: a run by name equals the run from local folders; a moved
//! branch reruns and says so, a pinned commit does not; offline plans and
//! reruns send no request; a killed download resumes; and every bad case
//! (unknown repo or file, gated, truncated, wrong or stalled bytes, a name
//! that escapes the cache, a full disk) fails clearly with nothing half-written.

#![allow(clippy::print_stderr)]

mod common;
use common::*;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const MODEL: &str = "efrlhf-test/tiny-bart";
const DATA: &str = "efrlhf-test/pos-mini";
const ADAPTER: &str = "efrlhf-test/tiny-bart-lora";
const TOKEN: &str = "hf_standin_secret_0123456789";

/// The stand-in Hub; stopped (by its PID) when dropped.
struct StandIn {
    child: Child,
    port: u16,
}

impl StandIn {
    fn start(sb: &Sandbox) -> StandIn {
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let model = sb.path("repos/model");
        std::fs::create_dir_all(&model).unwrap();
        for f in [
            "config.json",
            "generation_config.json",
            "model.safetensors",
            "tokenizer.json",
        ] {
            std::fs::copy(fixture.join("bart/tiny").join(f), model.join(f)).unwrap();
        }
        // What a snapshot leaves out: other weight formats, folders.
        sb.write("repos/model/pytorch_model.bin", "not read");
        sb.write("repos/model/onnx/model.onnx", "not read");
        sb.write("repos/model/README.md", "# tiny BART\n");
        let ds = sb.path("repos/ds");
        std::fs::create_dir_all(&ds).unwrap();
        std::fs::copy(
            fixture.join("data/prompt-opin-summ-valid.jsonl"),
            ds.join("prompt-opin-summ-valid.jsonl"),
        )
        .unwrap();
        sb.write("repos/ds/README.md", "# mini\n");
        // A LoRA adapter of the tiny BART, as PEFT wrote it (tests/fixtures/lora).
        let adapter = sb.path("repos/adapter");
        std::fs::create_dir_all(&adapter).unwrap();
        for f in ["adapter_config.json", "adapter_model.safetensors"] {
            std::fs::copy(fixture.join("lora/peft_bart").join(f), adapter.join(f)).unwrap();
        }
        let mut child = Command::new("python3")
            .arg(fixture.join("hub/standin_hub.py"))
            .arg("--repo")
            .arg(format!("models/{MODEL}={}", model.display()))
            .arg("--repo")
            .arg(format!("datasets/{DATA}={}", ds.display()))
            .arg("--repo")
            .arg(format!("models/{ADAPTER}={}", adapter.display()))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 runs the stand-in Hub");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line.trim().parse().expect("the stand-in prints its port");
        StandIn { child, port }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn post(&self, path: &str, body: serde_json::Value) -> serde_json::Value {
        let mut resp = ureq_agent()
            .post(format!("{}{path}", self.endpoint()))
            .header("Content-Type", "application/json")
            .send(body.to_string())
            .unwrap();
        serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap()
    }

    /// The requests so far.
    fn log(&self) -> Vec<serde_json::Value> {
        let mut resp = ureq_agent()
            .get(format!("{}/_log", self.endpoint()))
            .call()
            .unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .filter(|r| {
                let p = r["path"].as_str().unwrap_or("");
                !p.starts_with("/_log") && !p.starts_with("/_control")
            })
            .cloned()
            .collect()
    }

    fn clear_log(&self) {
        self.post("/_log/clear", serde_json::json!({}));
    }

    /// Moves `main` of `repo` (`models/ORG/NAME`) to a new commit with `set` changed.
    fn move_main(&self, repo: &str, set: serde_json::Value) -> String {
        let v = self.post(
            "/_control",
            serde_json::json!({"move": {"repo": repo, "set": set}}),
        );
        v["sha"].as_str().unwrap().to_string()
    }

    fn control(&self, body: serde_json::Value) {
        self.post("/_control", body);
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ureq_agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into()
}

/// `efrlhf ARGS` in `sb` against `hub`, with the Hub cache at `hf_cache`.
fn efrlhf(sb: &Sandbox, hub: &str, hf_cache: &Path, args: &[&str]) -> Command {
    let mut c = sb.cmd(args);
    c.env("HF_ENDPOINT", hub)
        .env("HF_HUB_CACHE", hf_cache)
        .env("HF_HOME", sb.path("hf-home"))
        .env("EFRLHF_HUB_BACKOFF_MS", "20")
        .env("HF_HUB_DOWNLOAD_TIMEOUT", "2")
        .env_remove("HF_TOKEN")
        .env_remove("HF_HUB_OFFLINE");
    c
}

fn output(mut c: Command) -> Output {
    let out = c.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "efrlhf panicked:\n{stderr}");
    out
}

fn ok(c: Command) -> String {
    let out = output(c);
    assert!(
        out.status.success(),
        "failed ({:?}):\n{}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn fails(c: Command) -> (i32, String) {
    let out = output(c);
    assert!(!out.status.success(), "expected a failure");
    (
        out.status.code().unwrap_or(-1),
        unwrapped(&String::from_utf8_lossy(&out.stderr)),
    )
}

/// A message with miette's line wrapping undone (it breaks lines at spaces and after hyphens).
fn unwrapped(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let line = line.trim().trim_start_matches('│').trim();
        if !out.is_empty() && !out.ends_with('-') {
            out.push(' ');
        }
        out.push_str(line);
    }
    out
}

/// The pipeline: the dataset and a pretrained model by name (or from local
/// folders), and a greedy evaluation of the model on three products.
fn pipeline(data: &str, model: &str) -> String {
    format!(
        r#"
stage "data" kind="dataset" {{
    source "prompt-opin-summ" path="{data}"
}}
stage "bart" kind="model" {{
    pretrained "{model}"
}}
stage "ev" kind="eval" {{
    input "bart" "data"
    split "validation"
    max-products 3
    sample #false
    reference "good"
    max-new-tokens 8
    max-source 64
}}
"#
    )
}

fn by_name(model_rev: &str) -> String {
    pipeline(
        &format!("hf://datasets/{DATA}"),
        &format!("hf://{MODEL}{model_rev}"),
    )
}

fn plan_json(sb: &Sandbox, hub: &str, hf: &Path) -> serde_json::Value {
    serde_json::from_str(&ok(efrlhf(sb, hub, hf, &["plan", "exp.kdl", "--json"]))).unwrap()
}

fn stage<'a>(plan: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    plan["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id)
        .unwrap()
}

fn metrics(sb: &Sandbox, hub: &str, hf: &Path, id: &str) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_str(&ok(efrlhf(
        sb,
        hub,
        hf,
        &["show", "exp.kdl", "--format", "json"],
    )))
    .unwrap();
    v["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id)
        .unwrap()["metrics"]
        .clone()
}

/// Every file under `dir` (following nothing), for "nothing half-written".
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn a_run_by_name_equals_the_run_from_local_folders() {
    let sb = Sandbox::new("hub-by-name");
    let hub = StandIn::start(&sb);
    let hf = sb.path("hf");
    sb.experiment(&by_name(""));
    let plan = ok(efrlhf(&sb, &hub.endpoint(), &hf, &["plan", "exp.kdl"]));
    assert!(
        plan.contains("run would first download 6 file(s) from the Hub"),
        "{plan}"
    );
    assert!(plan.contains("efrlhf-test/tiny-bart@"), "{plan}");
    let out = ok(efrlhf(
        &sb,
        &hub.endpoint(),
        &hf,
        &["run", "exp.kdl", "--json"],
    ));
    let all: Vec<serde_json::Value> = out
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let start = all.iter().find(|e| e["event"] == "download-start").unwrap();
    // Config, generation config, weights, tokenizer; the dataset's JSONL and README.
    assert_eq!(start["files"], 6, "{out}");
    let done = all.iter().find(|e| e["event"] == "download-done").unwrap();
    assert_eq!(done["bytes"], start["bytes"]);
    assert!(all.iter().any(|e| e["event"] == "download-progress"));
    // The snapshot holds what transformers reads and nothing else.
    let snaps = hf.join("models--efrlhf-test--tiny-bart/snapshots");
    let snap = std::fs::read_dir(&snaps)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut names: Vec<String> = std::fs::read_dir(&snap)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "config.json",
            "generation_config.json",
            "model.safetensors",
            "tokenizer.json"
        ]
    );
    let by_name_metrics = metrics(&sb, &hub.endpoint(), &hf, "ev");
    let model_metrics = metrics(&sb, &hub.endpoint(), &hf, "bart");
    assert_eq!(model_metrics["files"], 4.0);
    assert_eq!(
        model_metrics["linked"], 4.0,
        "the weights are hard-linked, not copied"
    );
    // The same pipeline from the local folders the stand-in serves: the model
    // and the dataset come out byte-identical, so the evaluation is reused.
    sb.experiment(&pipeline("repos/ds", "repos/model"));
    let out = ok(efrlhf(
        &sb,
        &hub.endpoint(),
        &hf,
        &["run", "exp.kdl", "--json"],
    ));
    let ev = events(&out);
    assert!(
        with_event(&ev, "stage-done").contains(&"bart".to_string()),
        "{out}"
    );
    assert_eq!(with_event(&ev, "stage-cached"), ["ev"], "{out}");
    assert_eq!(metrics(&sb, &hub.endpoint(), &hf, "ev"), by_name_metrics);
    assert!(
        by_name_metrics["rouge-l"].is_number() || by_name_metrics.as_object().unwrap().len() > 3
    );
}

#[test]
fn a_moved_branch_reruns_a_pinned_commit_does_not() {
    let sb = Sandbox::new("hub-moves");
    let hub = StandIn::start(&sb);
    let hf = sb.path("hf");
    sb.experiment(&by_name(""));
    ok(efrlhf(&sb, &hub.endpoint(), &hf, &["run", "exp.kdl"]));
    let first = stage(&plan_json(&sb, &hub.endpoint(), &hf), "bart").clone();
    assert_eq!(first["status"], "cached");
    let old = plan_json(&sb, &hub.endpoint(), &hf)["hub"]["resolved"][1]["commit"]
        .as_str()
        .unwrap()
        .to_string();
    let new = hub.move_main(
        &format!("models/{MODEL}"),
        serde_json::json!({"generation_config.json": "{\"max_length\": 20, \"num_beams\": 1}"}),
    );
    let plan = plan_json(&sb, &hub.endpoint(), &hf);
    let bart = stage(&plan, "bart");
    assert_eq!(bart["status"], "run");
    let reason = &bart["reasons"][0];
    assert_eq!(reason["kind"], "hub-revision-moved", "{bart}");
    assert_eq!(reason["repo"], MODEL);
    assert_eq!(reason["revision"], "main");
    assert_eq!(
        (
            reason["from"].as_str().unwrap(),
            reason["to"].as_str().unwrap()
        ),
        (old.as_str(), new.as_str())
    );
    let text = ok(efrlhf(
        &sb,
        &hub.endpoint(),
        &hf,
        &["explain", "exp.kdl", "bart"],
    ));
    assert!(
        text.contains(&format!(
            "`main` of {MODEL} moved from {} to {}",
            &old[..7],
            &new[..7]
        )),
        "{text}"
    );
    // The dataset's branch did not move: it stays cached.
    assert_eq!(stage(&plan, "data")["status"], "cached");
    // Pinned to the first commit: nothing reruns, however `main` moves, and
    // planning asks the Hub nothing (the commit's file list is recorded).
    sb.experiment(&by_name(&format!("@{old}")));
    hub.move_main(
        &format!("models/{MODEL}"),
        serde_json::json!({"README.md": "moved again"}),
    );
    let out = ok(efrlhf(
        &sb,
        &hub.endpoint(),
        &hf,
        &["run", "exp.kdl", "--json"],
    ));
    assert!(with_event(&events(&out), "stage-done").is_empty(), "{out}");
    hub.clear_log();
    let plan = plan_json(&sb, &hub.endpoint(), &hf);
    assert_eq!(stage(&plan, "bart")["status"], "cached");
    let asked: Vec<_> = hub
        .log()
        .into_iter()
        .filter(|r| r["path"].as_str().unwrap().contains("tiny-bart"))
        .collect();
    assert!(
        asked.is_empty(),
        "a pinned commit needs no request: {asked:?}"
    );
}

#[test]
fn offline_plans_and_reruns_send_no_request() {
    let sb = Sandbox::new("hub-offline");
    let hub = StandIn::start(&sb);
    let hf = sb.path("hf");
    sb.experiment(&by_name(""));
    ok(efrlhf(&sb, &hub.endpoint(), &hf, &["run", "exp.kdl"]));
    hub.clear_log();
    let mut plan = efrlhf(&sb, &hub.endpoint(), &hf, &["plan", "exp.kdl"]);
    plan.env("HF_HUB_OFFLINE", "1");
    let text = ok(plan);
    assert!(
        text.contains("HF_HUB_OFFLINE is set: `main` of efrlhf-test/tiny-bart taken at"),
        "{text}"
    );
    assert!(!text.contains("  run "), "{text}");
    let mut run = efrlhf(&sb, &hub.endpoint(), &hf, &["run", "exp.kdl", "--json"]);
    run.env("HF_HUB_OFFLINE", "1");
    let out = ok(run);
    assert!(with_event(&events(&out), "stage-done").is_empty(), "{out}");
    assert!(hub.log().is_empty(), "offline sent {:?}", hub.log());
    // A Hub that does not answer (a closed port) falls back the same way, and says so.
    let closed = "http://127.0.0.1:9";
    let text = ok(efrlhf(&sb, closed, &hf, &["plan", "exp.kdl"]));
    assert!(text.contains("the Hub is unreachable"), "{text}");
    assert!(!text.contains("  run "), "{text}");
}

#[test]
fn offline_with_nothing_cached_fails_before_computing_anything() {
    let sb = Sandbox::new("hub-nothing");
    let hub = StandIn::start(&sb);
    let hf = sb.path("hf");
    sb.experiment(
        &(by_name("")
            + "stage \"local\" kind=\"dataset\" {\n    source \"opinpref\" path=\""
            + &data("opinpref").display().to_string()
            + "\"\n}\n"),
    );
    let mut plan = efrlhf(&sb, &hub.endpoint(), &hf, &["plan", "exp.kdl"]);
    plan.env("HF_HUB_OFFLINE", "1");
    let text = ok(plan);
    assert!(
        text.contains("needs the Hub to resolve `hf://efrlhf-test/tiny-bart`"),
        "{text}"
    );
    assert!(text.contains("size unknown until then"), "{text}");
    let mut run = efrlhf(&sb, &hub.endpoint(), &hf, &["run", "exp.kdl"]);
    run.env("HF_HUB_OFFLINE", "1");
    let (code, err) = fails(run);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("nothing was computed"), "{err}");
    assert!(err.contains("hf://datasets/efrlhf-test/pos-mini"), "{err}");
    assert!(
        !sb.path("cache").join("artifacts").exists()
            || files_under(&sb.path("cache/artifacts")).is_empty()
    );
    // Resolved once (so the file list is known), then offline with the files
    // gone: the run lists each missing file with its size, before computing.
    ok(efrlhf(&sb, &hub.endpoint(), &hf, &["plan", "exp.kdl"]));
    let mut run = efrlhf(&sb, &hub.endpoint(), &hf, &["run", "exp.kdl"]);
    run.env("HF_HUB_OFFLINE", "1");
    let (_, err) = fails(run);
    assert!(
        err.contains("`main` of efrlhf-test/tiny-bart") || err.contains("HF_HUB_OFFLINE"),
        "{err}"
    );
    assert!(
        hub.log()
            .iter()
            .all(|r| r["method"] == "GET" && r["path"].as_str().unwrap().starts_with("/api/")),
        "{:?}",
        hub.log()
    );
}

/// The Python with `huggingface_hub` (CI's tracking venv), if there is one.
fn hf_python() -> Option<PathBuf> {
    python_with("huggingface_hub")
}

fn python_hub(py: &Path, hub: &str, hf: &Path, code: &str) -> Output {
    Command::new(py)
        .args(["-c", code])
        .env("HF_ENDPOINT", hub)
        .env("HF_HUB_CACHE", hf)
        .env("HF_HUB_DISABLE_TELEMETRY", "1")
        .env("HF_HUB_DISABLE_XET", "1")
        .env_remove("HF_HUB_OFFLINE")
        .env_remove("HF_TOKEN")
        .output()
        .unwrap()
}

#[test]
fn huggingface_hub_and_efrlhf_share_one_cache_both_ways() {
    let Some(py) = hf_python() else { return };
    let sb = Sandbox::new("hub-python");
    let hub = StandIn::start(&sb);
    // Python downloads from the stand-in as from the Hub.
    let theirs = sb.path("hf-python");
    let out = python_hub(
        &py,
        &hub.endpoint(),
        &theirs,
        &format!(
            "from huggingface_hub import snapshot_download as s\n\
             print(s('{MODEL}'))\nprint(s('{DATA}', repo_type='dataset'))"
        ),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // efrlhf runs offline on what Python downloaded.
    sb.experiment(&by_name(""));
    let mut run = efrlhf(&sb, &hub.endpoint(), &theirs, &["run", "exp.kdl"]);
    run.env("HF_HUB_OFFLINE", "1");
    hub.clear_log();
    ok(run);
    assert!(hub.log().is_empty(), "{:?}", hub.log());
    // And Python finds what efrlhf downloaded, without the network (into another
    // Hub cache: the stages are forced, since their results are stored already).
    let ours = sb.path("hf-ours");
    ok(efrlhf(
        &sb,
        &hub.endpoint(),
        &ours,
        &[
            "run", "exp.kdl", "--only", "bart", "--only", "data", "--force", "bart", "--force",
            "data",
        ],
    ));
    let check = python_hub(
        &py,
        &hub.endpoint(),
        &ours,
        &format!(
            "from huggingface_hub import hf_hub_download as h, snapshot_download as s\n\
             print(h('{MODEL}', 'model.safetensors', local_files_only=True))\n\
             print(s('{DATA}', repo_type='dataset', local_files_only=True))"
        ),
    );
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let text = String::from_utf8_lossy(&check.stdout).into_owned();
    let weights = PathBuf::from(text.lines().next().unwrap());
    assert!(weights.starts_with(&ours), "{text}");
    assert_eq!(
        std::fs::read(&weights).unwrap(),
        std::fs::read(sb.path("repos/model/model.safetensors")).unwrap()
    );
}

#[test]
fn a_killed_download_resumes_where_it_stopped() {
    let sb = Sandbox::new("hub-resume");
    let hub = StandIn::start(&sb);
    let hf = sb.path("hf");
    sb.experiment(&by_name(""));
    hub.control(
        serde_json::json!({"fault": {"path": "model.safetensors", "kind": "stall", "times": 1}}),
    );
    let mut run = efrlhf(&sb, &hub.endpoint(), &hf, &["run", "exp.kdl"]);
    run.env("HF_HUB_DOWNLOAD_TIMEOUT", "60");
    let mut child = run
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let blobs = hf.join("models--efrlhf-test--tiny-bart/blobs");
    let deadline = Instant::now() + Duration::from_secs(30);
    let part = loop {
        let found = files_under(&blobs).into_iter().find(|p| {
            p.to_string_lossy().ends_with(".incomplete") && p.metadata().unwrap().len() > 0
        });
        if let Some(p) = found {
            break p;
        }
        assert!(Instant::now() < deadline, "no partial download appeared");
        std::thread::sleep(Duration::from_millis(50));
    };
    std::thread::sleep(Duration::from_millis(300));
    child.kill().unwrap();
    child.wait().unwrap();
    let had = part.metadata().unwrap().len();
    assert!(had > 0);
    hub.clear_log();
    ok(efrlhf(&sb, &hub.endpoint(), &hf, &["run", "exp.kdl"]));
    let ranges: Vec<String> = hub
        .log()
        .iter()
        .filter_map(|r| r["range"].as_str().map(str::to_string))
        .collect();
    assert!(
        ranges.contains(&format!("bytes={had}-")),
        "{ranges:?} (had {had})"
    );
    assert!(!part.exists());
    let weights = std::fs::read(sb.path("repos/model/model.safetensors")).unwrap();
    let snap = files_under(&hf.join("models--efrlhf-test--tiny-bart/snapshots"));
    let stored = snap
        .iter()
        .find(|p| p.ends_with("model.safetensors"))
        .unwrap();
    assert_eq!(std::fs::read(stored).unwrap(), weights);
}

/// Runs `exp.kdl` expecting a failure; returns stderr.
fn run_fails(sb: &Sandbox, hub: &StandIn, hf: &Path, env: &[(&str, &str)]) -> String {
    let mut c = efrlhf(sb, &hub.endpoint(), hf, &["run", "exp.kdl"]);
    for (k, v) in env {
        c.env(k, v);
    }
    fails(c).1
}

/// No blob and no snapshot entry of `model.safetensors` exist.
fn weights_not_stored(hf: &Path) -> bool {
    let all = files_under(hf);
    let weights = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bart/tiny/model.safetensors"),
    )
    .unwrap();
    !all.iter().any(|p| {
        !p.to_string_lossy().ends_with(".incomplete")
            && std::fs::metadata(p).is_ok_and(|m| m.len() == weights.len() as u64)
    })
}

#[test]
fn bad_names_and_gated_repositories_fail_clearly() {
    let sb = Sandbox::new("hub-bad-names");
    let hub = StandIn::start(&sb);
    let hf = sb.path("hf");
    sb.experiment(&pipeline(
        &format!("hf://datasets/{DATA}"),
        "hf://efrlhf-test/no-such-model",
    ));
    let err = run_fails(&sb, &hub, &hf, &[]);
    assert!(
        err.contains("`efrlhf-test/no-such-model` was not found on the Hub"),
        "{err}"
    );
    assert!(
        err.contains("exp.kdl"),
        "the error points into the experiment: {err}"
    );
    sb.experiment(&pipeline(
        &format!("hf://datasets/{DATA}"),
        &format!("hf://{MODEL}@v9"),
    ));
    let err = run_fails(&sb, &hub, &hf, &[]);
    assert!(
        err.contains("revision `v9` of `efrlhf-test/tiny-bart` was not found"),
        "{err}"
    );
    sb.experiment(&pipeline(
        &format!("hf://datasets/{DATA}/prompt-opin-summ-vaild.jsonl"),
        &format!("hf://{MODEL}"),
    ));
    let err = run_fails(&sb, &hub, &hf, &[]);
    assert!(
        err.contains("did you mean `prompt-opin-summ-valid.jsonl`?"),
        "{err}"
    );
    assert!(
        err.contains("README.md, prompt-opin-summ-valid.jsonl"),
        "{err}"
    );
    // Gated: without a token, then with one; the token goes to the Hub's own
    // origin only (never to the CDN it redirects to) and is written nowhere.
    hub.control(serde_json::json!({"gated": format!("models/{MODEL}"), "token": TOKEN}));
    sb.experiment(&by_name(""));
    let err = run_fails(&sb, &hub, &hf, &[]);
    assert!(
        err.contains("is gated: accept its terms on the Hub and set HF_TOKEN"),
        "{err}"
    );
    hub.clear_log();
    let mut run = efrlhf(&sb, &hub.endpoint(), &hf, &["run", "exp.kdl", "--json"]);
    run.env("HF_TOKEN", TOKEN);
    let out = output(run);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = hub.log();
    assert!(
        log.iter()
            .any(|r| r["auth"] == true && r["host"].as_str().unwrap().starts_with("127.0.0.1"))
    );
    let cdn: Vec<_> = log
        .iter()
        .filter(|r| r["path"].as_str().unwrap().starts_with("/_cdn"))
        .collect();
    assert!(
        !cdn.is_empty() && cdn.iter().all(|r| r["auth"] == false),
        "{cdn:?}"
    );
    for text in [
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    ] {
        assert!(!text.contains(TOKEN));
    }
    for f in files_under(&sb.path("cache"))
        .into_iter()
        .chain(files_under(&hf))
    {
        let bytes = std::fs::read(&f).unwrap_or_default();
        assert!(
            !bytes.windows(TOKEN.len()).any(|w| w == TOKEN.as_bytes()),
            "the token is in {}",
            f.display()
        );
    }
}

#[test]
fn a_bad_server_never_leaves_half_a_file() {
    let sb = Sandbox::new("hub-bad-server");
    let hub = StandIn::start(&sb);
    let hf = sb.path("hf");
    sb.experiment(&by_name(""));
    let fault = |kind: &str| {
        hub.control(serde_json::json!({"clear_faults": true}));
        hub.control(
            serde_json::json!({"fault": {"path": "model.safetensors", "kind": kind, "times": 100}}),
        );
    };
    fault("truncate");
    let err = run_fails(&sb, &hub, &hf, &[]);
    assert!(
        err.contains("ended the file after") || err.contains("broke off"),
        "{err}"
    );
    assert!(err.contains("4 attempts"), "{err}");
    assert!(weights_not_stored(&hf));
    fault("corrupt");
    let err = run_fails(&sb, &hub, &hf, &[]);
    assert!(err.contains("do not match its sha256"), "{err}");
    assert!(err.contains("nothing was stored"), "{err}");
    assert!(weights_not_stored(&hf));
    fault("stall");
    let started = Instant::now();
    let err = run_fails(&sb, &hub, &hf, &[("HF_HUB_DOWNLOAD_TIMEOUT", "1")]);
    assert!(
        err.contains("cannot reach the Hub") || err.contains("broke off"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(60));
    assert!(weights_not_stored(&hf));
    fault("error");
    let err = run_fails(&sb, &hub, &hf, &[]);
    assert!(err.contains("HTTP 500"), "{err}");
    // A file name that would leave the cache is refused before anything is fetched.
    hub.control(serde_json::json!({"clear_faults": true}));
    hub.control(serde_json::json!({"escape": format!("models/{MODEL}")}));
    let err = run_fails(&sb, &hub, &hf, &[]);
    assert!(
        err.contains("`../evil.json` is not a safe file name"),
        "{err}"
    );
    assert!(!hf.join("evil.json").exists() && !sb.path("evil.json").exists());
    // And with a good server the same run completes.
    hub.control(serde_json::json!({"clear_faults": true}));
    ok(efrlhf(&sb, &hub.endpoint(), &hf, &["run", "exp.kdl"]));
}

#[test]
fn a_full_disk_is_a_clear_error_and_keeps_nothing() {
    let sb = Sandbox::new("hub-disk-full");
    let small = sb.path("small");
    std::fs::create_dir_all(&small).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
        .arg(&small)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("skipped: cannot mount a small tmpfs here (not root)");
        return;
    }
    let hub = StandIn::start(&sb);
    sb.experiment(&by_name(""));
    let err = run_fails(&sb, &hub, &small, &[]);
    let left = files_under(&small);
    let _ = Command::new("umount").arg(&small).status();
    assert!(err.contains("the disk is full"), "{err}");
    assert!(
        !left
            .iter()
            .any(|p| p.to_string_lossy().contains(".incomplete")
                || p.to_string_lossy().ends_with("model.safetensors")),
        "{left:?}"
    );
}

#[test]
fn a_peft_adapter_from_the_hub_trains_on_a_base_from_the_hub() {
    let sb = Sandbox::new("hub-adapter");
    let hub = StandIn::start(&sb);
    let hf = sb.path("hf");
    sb.experiment(&format!(
        r#"
stage "data" kind="dataset" {{
    source "prompt-opin-summ" path="hf://datasets/{DATA}"
}}
stage "sft" kind="sft" {{
    input "data"
    pretrained "hf://{MODEL}"
    pretrained-adapter "hf://{ADAPTER}"
    target "good"
    epochs 1
    batch 4
    lr 0.001
    max-source 64
    max-target 16
    train-split "validation"
    validation-split "validation"
    val-products 2
    checkpoint-every 0
}}
"#
    ));
    ok(efrlhf(&sb, &hub.endpoint(), &hf, &["run", "exp.kdl"]));
    let shown: serde_json::Value = serde_json::from_str(&ok(efrlhf(
        &sb,
        &hub.endpoint(),
        &hf,
        &["show", "exp.kdl", "--format", "json"],
    )))
    .unwrap();
    let model = PathBuf::from(stage(&shown, "sft")["output"].as_str().unwrap()).join("model");
    let read = |f: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(model.join(f)).unwrap()).unwrap()
    };
    // PEFT's adapter went on training: its rank and targets, on the Hub's base.
    let config = read("adapter_config.json");
    assert_eq!(config["r"], 4, "{config}");
    assert_eq!(config["base_model_name_or_path"], MODEL, "{config}");
    assert_eq!(
        config["target_modules"],
        serde_json::json!(["fc1", "q_proj"])
    );
    let base = read("efrlhf-base.json");
    let path = base["folder"]["path"].as_str().unwrap();
    assert!(
        path.contains("models--efrlhf-test--tiny-bart/snapshots/"),
        "{base}"
    );
    // Trained: the adapter is not PEFT's any more.
    let theirs = read_safetensors(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/lora/peft_bart/adapter_model.safetensors"),
    );
    let ours = read_safetensors(&model.join("adapter_model.safetensors"));
    assert_eq!(ours.len(), theirs.len());
    assert!(ours.iter().any(|(k, v)| theirs[k] != *v));
}
