//! An MLflow tracking server through its REST API (`/api/2.0/mlflow/...`):
//! one MLflow run per stage execution, named after the stage, with the
//! efrlhf experiment, stage, kind and key as tags, the parameters, every
//! curve as stepped metrics and the final metrics, and the result folder's
//! small files as artifacts when the server proxies artifacts (`mlflow
//! server`'s default); the folder's path is always a tag.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value as Json, json};

use super::{Scalar, StageRun, final_step};

/// MLflow's limits per `log-batch` request.
const MAX_METRICS: usize = 1000;
const MAX_PARAMS: usize = 100;
/// Longest parameter value MLflow stores.
const MAX_PARAM_VALUE: usize = 6000;
/// Files larger than this stay in the cache; their folder is a tag.
const MAX_ARTIFACT: u64 = 1 << 20;

pub struct Client {
    base: String,
    experiment: String,
    experiment_id: Option<String>,
    agent: ureq::Agent,
    down: bool,
}

impl Client {
    pub fn new(base: &str, experiment: &str) -> Client {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(15)))
            .http_status_as_error(false)
            .build()
            .into();
        Client {
            base: base.to_string(),
            experiment: experiment.to_string(),
            experiment_id: None,
            agent,
            down: false,
        }
    }

    /// A request failed: the server is not asked again.
    pub fn is_down(&self) -> bool {
        self.down
    }

    /// Logs one stage execution as one finished MLflow run.
    pub fn log(&mut self, run: &StageRun, curves: &[Scalar]) -> Result<(), String> {
        let r = self.log_run(run, curves);
        self.down = r.is_err();
        r
    }

    fn log_run(&mut self, run: &StageRun, curves: &[Scalar]) -> Result<(), String> {
        let experiment_id = self.experiment_id()?;
        let tag = |k: &str, v: &str| json!({"key": k, "value": v});
        let created = self.post(
            "runs/create",
            &json!({
                "experiment_id": experiment_id,
                "run_name": run.stage,
                "start_time": run.started_ms,
                "tags": [
                    tag("efrlhf.experiment", &run.experiment),
                    tag("efrlhf.stage", &run.stage),
                    tag("efrlhf.kind", &run.kind),
                    tag("efrlhf.key", &run.key),
                    tag("efrlhf.result_dir", &run.dir.display().to_string()),
                ],
            }),
        )?;
        let info = &created["run"]["info"];
        let run_id = info["run_id"]
            .as_str()
            .ok_or("the server's answer to runs/create has no run_id")?
            .to_string();
        self.log_params(&run_id, run)?;
        self.log_metrics(&run_id, run, curves)?;
        if let Some(path) = info["artifact_uri"]
            .as_str()
            .and_then(proxied_artifact_path)
        {
            self.upload_artifacts(&path, &run.dir)?;
        }
        self.post(
            "runs/update",
            &json!({"run_id": run_id, "status": "FINISHED", "end_time": run.finished_ms}),
        )?;
        Ok(())
    }

    /// The MLflow experiment's id, created on first use.
    fn experiment_id(&mut self) -> Result<String, String> {
        if let Some(id) = &self.experiment_id {
            return Ok(id.clone());
        }
        let url = format!("{}/api/2.0/mlflow/experiments/get-by-name", self.base);
        let found = self
            .agent
            .get(&url)
            .query("experiment_name", &self.experiment)
            .call();
        let id = match answer(&url, found) {
            Ok(v) => v["experiment"]["experiment_id"]
                .as_str()
                .map(str::to_string),
            Err(e) if e.contains("RESOURCE_DOES_NOT_EXIST") => {
                let made = self.post("experiments/create", &json!({"name": self.experiment}))?;
                made["experiment_id"].as_str().map(str::to_string)
            }
            Err(e) => return Err(e),
        }
        .ok_or("the server's answer has no experiment_id")?;
        self.experiment_id = Some(id.clone());
        Ok(id)
    }

    fn log_params(&self, run_id: &str, run: &StageRun) -> Result<(), String> {
        let params: Vec<Json> = run
            .params
            .iter()
            .map(|(k, v)| json!({"key": k, "value": clip(v, MAX_PARAM_VALUE)}))
            .collect();
        for chunk in params.chunks(MAX_PARAMS) {
            self.post(
                "runs/log-batch",
                &json!({"run_id": run_id, "params": chunk}),
            )?;
        }
        Ok(())
    }

    /// Curves as `<curve>/<field>` at their steps; final metrics by their own
    /// names at the last step.
    fn log_metrics(&self, run_id: &str, run: &StageRun, curves: &[Scalar]) -> Result<(), String> {
        let step = final_step(curves);
        let metric = |key: &str, value: f64, step: i64| json!({"key": key, "value": value, "timestamp": run.finished_ms, "step": step});
        let mut all: Vec<Json> = curves
            .iter()
            .map(|s| metric(&s.tag, s.value, s.step))
            .collect();
        all.extend(run.metrics.iter().map(|(k, v)| metric(k, *v, step)));
        for chunk in all.chunks(MAX_METRICS) {
            self.post(
                "runs/log-batch",
                &json!({"run_id": run_id, "metrics": chunk}),
            )?;
        }
        Ok(())
    }

    /// The result folder's top-level files up to 1 MiB, through the server's artifact proxy.
    fn upload_artifacts(&self, path: &str, dir: &Path) -> Result<(), String> {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .map_err(|e| format!("reading {}: {e}", dir.display()))?
            .flatten()
            .filter(|e| {
                e.metadata()
                    .is_ok_and(|m| m.is_file() && m.len() <= MAX_ARTIFACT)
            })
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        files.sort();
        for name in files {
            let bytes = std::fs::read(dir.join(&name))
                .map_err(|e| format!("reading {}: {e}", dir.join(&name).display()))?;
            let url = format!(
                "{}/api/2.0/mlflow-artifacts/artifacts/{path}/{}",
                self.base,
                percent_encode(&name)
            );
            answer(&url, self.agent.put(&url).send(&bytes[..]))?;
        }
        Ok(())
    }

    fn post(&self, endpoint: &str, body: &Json) -> Result<Json, String> {
        let url = format!("{}/api/2.0/mlflow/{endpoint}", self.base);
        let sent = self
            .agent
            .post(&url)
            .header("Content-Type", "application/json")
            .send(body.to_string().as_str());
        answer(&url, sent)
    }
}

/// A response as JSON, or what went wrong (with MLflow's `error_code`).
fn answer(
    url: &str,
    sent: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
) -> Result<Json, String> {
    let mut resp = sent.map_err(|e| format!("cannot reach {url}: {e}"))?;
    let status = resp.status().as_u16();
    let text = resp
        .body_mut()
        .read_to_string()
        .map_err(|e| format!("reading the answer of {url}: {e}"))?;
    if !(200..300).contains(&status) {
        return Err(format!("HTTP {status} from {url}: {}", clip(&text, 300)));
    }
    if text.trim().is_empty() {
        return Ok(Json::Null);
    }
    serde_json::from_str(&text).map_err(|e| format!("{url} did not answer JSON: {e}"))
}

/// `mlflow-artifacts:/1/abc/artifacts` (or with a host) -> `1/abc/artifacts`;
/// `None` for stores the server does not proxy (a local path, S3, ...).
fn proxied_artifact_path(uri: &str) -> Option<String> {
    let rest = uri.strip_prefix("mlflow-artifacts:")?;
    let path = match rest.strip_prefix("//") {
        Some(with_host) => with_host.split_once('/').map_or("", |(_, p)| p),
        None => rest,
    };
    Some(path.trim_matches('/').to_string()).filter(|p| !p.is_empty())
}

fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// A file name as one URL path segment.
fn percent_encode(name: &str) -> String {
    name.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifact_uris_of_the_proxy_and_others() {
        assert_eq!(
            proxied_artifact_path("mlflow-artifacts:/1/abc/artifacts").as_deref(),
            Some("1/abc/artifacts")
        );
        assert_eq!(
            proxied_artifact_path("mlflow-artifacts://host:5000/2/x/artifacts").as_deref(),
            Some("2/x/artifacts")
        );
        assert_eq!(proxied_artifact_path("/srv/mlruns/1/abc/artifacts"), None);
        assert_eq!(proxied_artifact_path("s3://b/1/abc"), None);
        assert_eq!(percent_encode("a b.json"), "a%20b.json");
        assert_eq!(clip("ééé", 3), "é");
    }
}
