//! The site's cluster settings, kept out of experiment files so they stay
//! portable: `--executor-config FILE`, else `$EFRLHF_EXECUTOR_CONFIG`, else
//! `~/.config/efrlhf/executor.kdl`, else defaults.
//!
//! ```kdl
//! executor "slurm" {
//!     partition "gpu"
//!     account "proj123"
//!     gpu-flag "gpus"                  // or "gres" (--gres=gpu:N), for sites that reject --gpus
//!     max-jobs 50                      // stages in flight at once (the default of --jobs)
//!     poll 2.0                         // seconds between queue queries
//!     latency-wait 60                  // seconds a finished job's result may take to appear (NFS)
//!     extra "--qos=normal"             // more sbatch arguments, each a string
//!     setup "module load cuda"         // shell lines run before the stage in the job
//!     binary "/shared/bin/efrlhf"      // default: this binary (the nodes must see it)
//!     local "dataset" "tokenizer"      // kinds run on the coordinator (replaces the default list)
//!     kind "sft" gpus=1 cpus=8 mem="64G" time="8h"   // requests per kind on this cluster
//! }
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kdl::{KdlNode, KdlValue};

use crate::dsl::kdl_util as k;
use crate::dsl::{Requests, parse_requests};
use crate::error::{Diag, Diags, SourceFile};

/// Kinds that run on the coordinator unless the config says otherwise: they
/// read and write small files (datasets, tokenizers, featurizers calling an
/// LLM endpoint that compute nodes often cannot reach, reward models of a
/// few hundred parameters), so a queue wait would cost more than they do.
pub const DEFAULT_LOCAL_KINDS: &[&str] = &["dataset", "tokenizer", "featurize", "reward-model"];

#[derive(Debug, Clone, PartialEq)]
pub enum GpuFlag {
    /// `--gpus=N`
    Gpus,
    /// `--gres=gpu:N`
    Gres,
}

/// How to use the cluster.
#[derive(Debug, Clone)]
pub struct SlurmConfig {
    pub partition: Option<String>,
    pub account: Option<String>,
    pub gpu_flag: GpuFlag,
    pub max_jobs: usize,
    pub poll: Duration,
    pub latency_wait: Duration,
    pub extra: Vec<String>,
    pub setup: Vec<String>,
    pub binary: PathBuf,
    pub local_kinds: Vec<String>,
    pub kind_requests: BTreeMap<String, Requests>,
}

impl Default for SlurmConfig {
    fn default() -> SlurmConfig {
        SlurmConfig {
            partition: None,
            account: None,
            gpu_flag: GpuFlag::Gpus,
            max_jobs: 50,
            poll: Duration::from_secs(2),
            latency_wait: Duration::from_secs(60),
            extra: Vec::new(),
            setup: Vec::new(),
            binary: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("efrlhf")),
            local_kinds: DEFAULT_LOCAL_KINDS.iter().map(|s| s.to_string()).collect(),
            kind_requests: BTreeMap::new(),
        }
    }
}

impl SlurmConfig {
    /// Whether stages of `kind` run on the coordinator.
    pub fn runs_locally(&self, kind: &str) -> bool {
        self.local_kinds.iter().any(|k| k == kind)
    }

    /// A stage's requests on this cluster: its own, else the site's for its kind.
    pub fn requests(&self, kind: &str, stage: &Requests) -> Requests {
        match self.kind_requests.get(kind) {
            Some(site) => stage.or(site),
            None => stage.clone(),
        }
    }

    /// The backend class of a stage computed on the cluster: `gpu` when it
    /// asks for GPUs, else `cpu` (the coordinator's own adapters do not
    /// matter); `None` for stages that run on the coordinator.
    pub fn class_of(&self, kind: &str, stage: &Requests) -> Option<&'static str> {
        if self.runs_locally(kind) {
            return None;
        }
        Some(if self.requests(kind, stage).gpus.unwrap_or(0) > 0 {
            "gpu"
        } else {
            "cpu"
        })
    }

    /// The settings from `explicit`, else the environment's or the user's file, else defaults.
    pub fn load(explicit: Option<&Path>) -> Result<SlurmConfig, Diags> {
        let from_env = std::env::var_os("EFRLHF_EXECUTOR_CONFIG").map(PathBuf::from);
        let from_home = std::env::var_os("HOME")
            .map(|h| PathBuf::from(h).join(".config/efrlhf/executor.kdl"))
            .filter(|p| p.is_file());
        match explicit.map(Path::to_path_buf).or(from_env).or(from_home) {
            Some(p) => {
                let src = crate::error::SourceFile::read(&p)?;
                parse(&src)
            }
            None => Ok(SlurmConfig::default()),
        }
    }
}

const NODES: &[&str] = &[
    "partition",
    "account",
    "gpu-flag",
    "max-jobs",
    "poll",
    "latency-wait",
    "extra",
    "setup",
    "binary",
    "local",
    "kind",
];

/// Reads an executor file.
pub fn parse(src: &SourceFile) -> Result<SlurmConfig, Diags> {
    let doc = k::parse(src)?;
    let mut cfg = SlurmConfig::default();
    for node in doc.nodes() {
        if k::name(node) != "executor" {
            return Err(k::unknown_node(src, node, "an executor file", &["executor"]).into());
        }
        let (name, span) = k::string_arg(src, node, "the executor's name")?;
        if name != "slurm" {
            return Err(Diag::input("E-VALUE", format!("unknown executor `{name}`"))
                .at(src, span, "not an executor")
                .with_help("the executors are \"slurm\" (and \"local\", which needs no settings)")
                .into());
        }
        for child in k::children(node) {
            setting(src, child, &mut cfg)?;
        }
    }
    Ok(cfg)
}

fn setting(src: &SourceFile, node: &KdlNode, cfg: &mut SlurmConfig) -> Result<(), Diag> {
    let file = std::path::absolute(&src.path).unwrap_or_else(|_| src.path.clone());
    let dir = file.parent().unwrap_or(Path::new("/"));
    match k::name(node) {
        "partition" => cfg.partition = Some(k::string_arg(src, node, "a partition")?.0),
        "account" => cfg.account = Some(k::string_arg(src, node, "an account")?.0),
        "gpu-flag" => {
            cfg.gpu_flag = match k::string_arg(src, node, "\"gpus\" or \"gres\"")? {
                (s, _) if s == "gpus" => GpuFlag::Gpus,
                (s, _) if s == "gres" => GpuFlag::Gres,
                (s, span) => {
                    return Err(Diag::input("E-VALUE", format!("unknown gpu-flag `{s}`"))
                        .at(src, span, "here")
                        .with_help("use \"gpus\" (--gpus=N) or \"gres\" (--gres=gpu:N)"));
                }
            }
        }
        "max-jobs" => cfg.max_jobs = number(src, node)?.max(1.0) as usize,
        "poll" => cfg.poll = Duration::from_secs_f64(number(src, node)?.max(0.05)),
        "latency-wait" => cfg.latency_wait = Duration::from_secs_f64(number(src, node)?),
        "extra" => cfg.extra.extend(strings(src, node)?),
        "setup" => cfg.setup.extend(strings(src, node)?),
        "binary" => cfg.binary = dir.join(k::string_arg(src, node, "a path")?.0),
        "local" => cfg.local_kinds = strings(src, node)?,
        "kind" => {
            let (kind, _) = match k::args(node).first().map(|e| e.value()) {
                Some(KdlValue::String(s)) => (s.clone(), ()),
                _ => {
                    return Err(Diag::input(
                        "E-SHAPE",
                        "`kind` takes a kind's name, then requests",
                    )
                    .at(src, k::name_span(node), "here")
                    .with_help("write `kind \"sft\" gpus=1 cpus=8 mem=\"64G\" time=\"8h\"`"));
                }
            };
            let mut requests_only = node.clone();
            requests_only.entries_mut().retain(|e| e.name().is_some());
            cfg.kind_requests
                .insert(kind, parse_requests(src, &requests_only)?);
        }
        _ => return Err(k::unknown_node(src, node, "`executor \"slurm\"`", NODES)),
    }
    Ok(())
}

fn number(src: &SourceFile, node: &KdlNode) -> Result<f64, Diag> {
    match k::args(node).as_slice() {
        [one] => match one.value() {
            KdlValue::Integer(i) if *i >= 0 => Ok(*i as f64),
            KdlValue::Float(f) if *f >= 0.0 => Ok(*f),
            _ => Err(Diag::input(
                "E-VALUE",
                format!("`{}` takes a non-negative number", k::name(node)),
            )
            .at(src, one.span(), "here")),
        },
        _ => Err(
            Diag::input("E-SHAPE", format!("`{}` takes one number", k::name(node))).at(
                src,
                k::name_span(node),
                "here",
            ),
        ),
    }
}

fn strings(src: &SourceFile, node: &KdlNode) -> Result<Vec<String>, Diag> {
    k::args(node)
        .iter()
        .map(|e| match e.value() {
            KdlValue::String(s) => Ok(s.clone()),
            _ => Err(
                Diag::input("E-SHAPE", format!("`{}` takes strings", k::name(node))).at(
                    src,
                    e.span(),
                    "not a string",
                ),
            ),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_site_file_reads_into_settings() {
        let src = SourceFile::new(
            Path::new("/etc/efrlhf/executor.kdl"),
            r#"executor "slurm" {
    partition "gpu"
    gpu-flag "gres"
    max-jobs 8
    poll 0.5
    extra "--qos=normal" "--exclusive"
    local "dataset"
    kind "sft" gpus=1 cpus=8 mem="64G" time="8h"
}"#
            .into(),
        );
        let cfg = parse(&src).unwrap();
        assert_eq!(cfg.partition.as_deref(), Some("gpu"));
        assert_eq!(cfg.gpu_flag, GpuFlag::Gres);
        assert_eq!((cfg.max_jobs, cfg.poll), (8, Duration::from_millis(500)));
        assert_eq!(cfg.extra, ["--qos=normal", "--exclusive"]);
        assert_eq!(cfg.local_kinds, ["dataset"]);
        let sft = &cfg.kind_requests["sft"];
        assert_eq!((sft.gpus, sft.time.as_deref()), (Some(1), Some("480")));
        let bad = SourceFile::new(
            Path::new("x.kdl"),
            "executor \"slurm\" { partitoin \"gpu\" }".into(),
        );
        let e = parse(&bad).unwrap_err();
        assert!(e.0[0].help.as_deref().unwrap_or("").contains("partition"));
    }
}
