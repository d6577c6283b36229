//! Tracking, read back by the trackers' own Python packages: TensorBoard
//! event files (the `tensorboard` package's event reader) and runs on a real
//! `mlflow server` (SQLite store, on 127.0.0.1, stopped by its PID) hold
//! exactly `metrics.json` and the curve files of every stage a run computes;
//! a rerun logs nothing, a changed parameter logs only what reran, and a
//! server that is down costs a warning, not the run. CI installs both
//! packages in a venv and sets `EFRLHF_TRACKING_PYTHON`; elsewhere the test
//! uses `python3` and is skipped when it lacks them (unless
//! `EFRLHF_REQUIRE_TRACKING` is set).

#![allow(clippy::print_stderr)]

mod common;
use common::*;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use serde_json::Value as Json;

fn experiment(s: &Sandbox, ppo_updates: usize) {
    s.write(
        "exp.kdl",
        &format!(
            r#"
experiment "tracked" {{
    tracking {{
        tensorboard dir="tb"
    }}
}}
{tiny}stage "phi" kind="reward-model" {{
    input "train" "val"
    hidden 6 4 2
    epochs 5
}}
stage "ppo" kind="ppo" {{
    input "sft" "phi" "train"
    updates {ppo_updates}
    batch 4
    minibatch 2
    max-source 64
    max-new-tokens 16
    checkpoint-every 0
}}
"#,
            tiny = tiny_summarizer()
        ),
    );
}

/// A Python with `tensorboard` and `mlflow`, or `None` (the test is skipped).
fn tracking_python() -> Option<PathBuf> {
    python_with("tensorboard, mlflow")
}

/// `mlflow server` on a free port of 127.0.0.1, in its own process group.
struct MlflowServer {
    child: Child,
    uri: String,
}

impl MlflowServer {
    fn start(python: &Path, dir: &Path) -> MlflowServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = std::fs::File::create(dir.join("mlflow.log")).unwrap();
        let child = {
            use std::os::unix::process::CommandExt;
            Command::new(python)
                .args(["-m", "mlflow", "server", "--host", "127.0.0.1"])
                .args(["--port", &port.to_string(), "--workers", "1"])
                .arg("--backend-store-uri")
                .arg(format!("sqlite:///{}", dir.join("mlflow.db").display()))
                .arg("--artifacts-destination")
                .arg(dir.join("mlartifacts"))
                .current_dir(dir)
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .process_group(0)
                .spawn()
                .unwrap()
        };
        let server = MlflowServer {
            child,
            uri: format!("http://127.0.0.1:{port}"),
        };
        let start = Instant::now();
        while !healthy(port) {
            assert!(
                start.elapsed() < Duration::from_secs(180),
                "mlflow server did not come up:\n{}",
                std::fs::read_to_string(dir.join("mlflow.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
        server
    }

    /// Stops the server and everything it started.
    fn stop(&mut self) {
        let group = self.child.id() as i32;
        unsafe { libc::kill(-group, libc::SIGTERM) };
        let start = Instant::now();
        while self.child.try_wait().ok().flatten().is_none() {
            if start.elapsed() > Duration::from_secs(10) {
                unsafe { libc::kill(-group, libc::SIGKILL) };
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        unsafe { libc::kill(-group, libc::SIGKILL) };
    }
}

impl Drop for MlflowServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn healthy(port: u16) -> bool {
    let Ok(mut conn) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    let mut answer = String::new();
    conn.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_ok()
        && conn.read_to_string(&mut answer).is_ok()
        && answer.starts_with("HTTP/1.1 200") | answer.starts_with("HTTP/1.0 200")
}

/// What the trackers hold, through their Python packages.
fn read_back(s: &Sandbox, python: &Path, uri: &str) -> Json {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tracking/read_back.py");
    let out = Command::new(python)
        .arg(script)
        .arg(s.path("tb"))
        .args([uri, "tracked"])
        .output()
        .unwrap();
    assert_success(&out);
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `run --json`'s stage-done events: stage -> (key, metrics).
fn computed(stdout: &str) -> BTreeMap<String, (String, Json)> {
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Json>(l).ok())
        .filter(|v| v["event"] == "stage-done")
        .map(|v| {
            let stage = v["stage"].as_str().unwrap().to_string();
            (
                stage,
                (v["key"].as_str().unwrap().to_string(), v["metrics"].clone()),
            )
        })
        .collect()
}

type Points = Vec<(i64, f64)>;

/// The curves of a result folder as tags, read from its files here:
/// `train_curve.jsonl` -> `train/<field>` (nested fields dotted, the step
/// field or else the line number as step), `curve.csv` -> `curve/<column>`.
fn curves_in(dir: &Path) -> BTreeMap<String, Points> {
    let mut tags: BTreeMap<String, Points> = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        let text = std::fs::read_to_string(dir.join(&name)).unwrap_or_default();
        if let Some(prefix) = name.strip_suffix("_curve.jsonl") {
            for (i, line) in text.lines().enumerate() {
                let v: Json = serde_json::from_str(line).unwrap();
                let step = v.get("step").and_then(Json::as_i64).unwrap_or(i as i64 + 1);
                let mut leaves = Vec::new();
                leaves_of("", &v, &mut leaves);
                for (field, y) in leaves.into_iter().filter(|(f, _)| f != "step") {
                    tags.entry(format!("{prefix}/{field}"))
                        .or_default()
                        .push((step, y));
                }
            }
        } else if name == "curve.csv" {
            let mut lines = text.lines();
            let header: Vec<&str> = lines.next().unwrap().split(',').collect();
            for line in lines {
                let cells: Vec<f64> = line.split(',').map(|c| c.parse().unwrap()).collect();
                for (col, y) in header.iter().zip(&cells).skip(1) {
                    tags.entry(format!("curve/{col}"))
                        .or_default()
                        .push((cells[0] as i64, *y));
                }
            }
        }
    }
    tags
}

fn leaves_of(prefix: &str, v: &Json, out: &mut Vec<(String, f64)>) {
    match v {
        Json::Object(m) => {
            for (k, v) in m {
                let name = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                leaves_of(&name, v, out);
            }
        }
        Json::Number(n) => out.push((prefix.to_string(), n.as_f64().unwrap())),
        _ => {}
    }
}

fn points(v: &Json) -> Points {
    let mut p: Points = v
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p[0].as_i64().unwrap(), p[1].as_f64().unwrap()))
        .collect();
    p.sort_by(|a, b| a.partial_cmp(b).unwrap());
    p
}

fn sorted(mut p: Points) -> Points {
    p.sort_by(|a, b| a.partial_cmp(b).unwrap());
    p
}

/// TensorBoard stores 32-bit floats.
fn as_f32(p: &Points) -> Points {
    p.iter().map(|&(s, y)| (s, y as f32 as f64)).collect()
}

/// One stage's TensorBoard run and MLflow run hold its metrics and curves.
fn check_stage(stage: &str, key: &str, metrics: &Json, dir: &Path, back: &Json) {
    let stored: Json =
        serde_json::from_str(&std::fs::read_to_string(dir.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(
        &stored, metrics,
        "{stage}: metrics.json and the run's event"
    );
    let curves = curves_in(dir);
    let last = curves.values().flatten().map(|p| p.0).max().unwrap_or(0);
    let tb = &back["tensorboard"][format!("tracked/{stage}/{}", &key[..12])];
    assert!(
        tb.is_object(),
        "{stage}: no TensorBoard run in {:?}",
        back["tensorboard"]
    );
    let ml: Vec<&Json> = back["mlflow"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["tags"]["efrlhf.key"] == key)
        .collect();
    assert_eq!(ml.len(), 1, "{stage}: MLflow runs with its key");
    let ml = ml[0];
    assert_eq!(ml["name"], stage);
    assert_eq!(ml["status"], "FINISHED");
    assert_eq!(ml["tags"]["efrlhf.stage"], stage);
    assert_eq!(ml["tags"]["efrlhf.experiment"], "tracked");
    assert!(
        ml["artifacts"]
            .as_array()
            .unwrap()
            .contains(&Json::from("metrics.json"))
    );
    let mut expected_tb = 0;
    for (name, value) in stored.as_object().unwrap() {
        let value = value.as_f64().unwrap();
        assert_eq!(
            points(&tb[format!("metrics/{name}")]),
            as_f32(&vec![(last, value)]),
            "{stage} {name}"
        );
        assert_eq!(
            points(&ml["metrics"][name]),
            vec![(last, value)],
            "{stage} {name}"
        );
        expected_tb += 1;
    }
    for (tag, p) in &curves {
        assert_eq!(
            points(&tb[tag]),
            as_f32(&sorted(p.clone())),
            "{stage} {tag}"
        );
        assert_eq!(
            points(&ml["metrics"][tag]),
            sorted(p.clone()),
            "{stage} {tag}"
        );
        expected_tb += 1;
    }
    assert_eq!(
        tb.as_object().unwrap().len(),
        expected_tb,
        "{stage}: TensorBoard tags"
    );
    assert_eq!(
        ml["metrics"].as_object().unwrap().len(),
        expected_tb,
        "{stage}: MLflow metrics"
    );
}

#[test]
fn tensorboard_and_mlflow_hold_exactly_what_each_computed_stage_stored() {
    let Some(python) = tracking_python() else {
        return;
    };
    let s = Sandbox::new("tracking");
    let mut server = MlflowServer::start(&python, &s.dir);
    let track = format!("mlflow={}", server.uri);
    experiment(&s, 3);
    let first = computed(&s.ok(&["run", "exp.kdl", "--json", "--track", &track]));
    assert_eq!(first.len(), 6);
    let back = read_back(&s, &python, &server.uri);
    let dirs = result_dirs(&s);
    for (stage, (key, metrics)) in &first {
        check_stage(stage, key, metrics, &dirs[stage], &back);
    }
    assert_eq!(back["tensorboard"].as_object().unwrap().len(), 6);
    assert_eq!(back["mlflow"].as_array().unwrap().len(), 6);
    let ppo = &back["mlflow"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "ppo")
        .unwrap()["params"];
    assert_eq!(
        (&ppo["updates"], &ppo["batch"], &ppo["seed"]),
        (&"3".into(), &"4".into(), &"0".into())
    );

    // A rerun reuses everything and logs nothing.
    let again = s.ok(&["run", "exp.kdl", "--json", "--track", &track]);
    assert!(
        computed(&again).is_empty() && !again.contains("stage-warning"),
        "{again}"
    );
    let back = read_back(&s, &python, &server.uri);
    assert_eq!(back["tensorboard"].as_object().unwrap().len(), 6);
    assert_eq!(back["mlflow"].as_array().unwrap().len(), 6);

    // A changed parameter logs only the stage that reran.
    experiment(&s, 4);
    let changed = computed(&s.ok(&["run", "exp.kdl", "--json", "--track", &track]));
    assert_eq!(changed.keys().collect::<Vec<_>>(), ["ppo"]);
    let back = read_back(&s, &python, &server.uri);
    let (key, metrics) = &changed["ppo"];
    check_stage("ppo", key, metrics, &result_dirs(&s)["ppo"], &back);
    assert_eq!(back["tensorboard"].as_object().unwrap().len(), 7);
    assert_eq!(back["mlflow"].as_array().unwrap().len(), 7);

    // The server goes away: the run still succeeds and stores its result;
    // the tracking says so as a warning; TensorBoard still gets the run.
    server.stop();
    experiment(&s, 5);
    let down = s.ok(&["run", "exp.kdl", "--json", "--track", &track]);
    assert_eq!(computed(&down).keys().collect::<Vec<_>>(), ["ppo"]);
    let warnings: Vec<Json> = down
        .lines()
        .filter_map(|l| serde_json::from_str::<Json>(l).ok())
        .filter(|v| v["event"] == "stage-warning")
        .collect();
    assert_eq!(warnings.len(), 1, "{down}");
    let text = warnings[0]["message"].as_str().unwrap();
    assert!(
        text.contains("MLflow") && text.contains("results are unaffected"),
        "{text}"
    );
    assert_eq!(s.plan().iter().filter(|(_, st)| st == "cached").count(), 6);
    let back = read_back(&s, &python, "-");
    assert_eq!(back["tensorboard"].as_object().unwrap().len(), 8);
}

/// Each stage's stored result folder, from `show --format json`.
fn result_dirs(s: &Sandbox) -> BTreeMap<String, PathBuf> {
    let shown: Json =
        serde_json::from_str(&s.ok(&["show", "exp.kdl", "--format", "json"])).unwrap();
    shown["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|st| {
            (
                st["id"].as_str().unwrap().to_string(),
                PathBuf::from(st["output"].as_str().unwrap()),
            )
        })
        .collect()
}

#[test]
fn a_tracking_block_with_a_typo_is_an_error_at_its_line() {
    let s = Sandbox::new("tracking-typo");
    s.write(
        "exp.kdl",
        "experiment \"x\" {\n    tracking {\n        tensorboard folder=\"tb\"\n    }\n}\n",
    );
    let out = s.run(&["plan", "exp.kdl"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("`tensorboard` has no property `folder`"),
        "{err}"
    );
    assert!(err.contains("exp.kdl:3:"), "{err}");
    s.write("exp.kdl", "experiment \"x\"\n");
    let out = s.run(&["run", "exp.kdl", "--track", "wandb"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("`--track wandb` is not a tracker"));
}
