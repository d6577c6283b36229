//! The plan's view of the Hub: every `hf://` parameter of the pipeline,
//! resolved once per plan (so a branch is asked for once per run), what is
//! still to download, and the local snapshot paths stages are handed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use crate::cache::Cache;
use crate::error::{Diag, Diags};
use crate::hub::{Hub, HubConfig, HubError, HubUri, Missing, Provenance, RemoteFile, Resolution};

/// One `hf://` parameter of one node.
#[derive(Debug, Clone)]
pub struct HubUse {
    pub node: usize,
    /// `pretrained`, or `path[1]` in a list.
    pub param: String,
    pub uri: HubUri,
    /// The resolution and the files the URI selects; `None` when it could not
    /// be resolved now (offline with nothing known), `why` says so.
    pub resolved: Option<(Resolution, Vec<RemoteFile>)>,
    pub why: Option<String>,
}

/// The Hub side of a plan.
pub struct HubPlan {
    records: PathBuf,
    hub: Option<Hub>,
    pub uses: Vec<HubUse>,
}

impl HubPlan {
    pub fn new(cache: &Cache) -> HubPlan {
        HubPlan {
            records: cache.root().join("hub"),
            hub: None,
            uses: Vec::new(),
        }
    }

    /// The Hub, created on first use (a pipeline without `hf://` never reads its settings).
    fn hub(&mut self) -> &mut Hub {
        let records = self.records.clone();
        self.hub
            .get_or_insert_with(|| Hub::new(HubConfig::from_env(), &records))
    }

    /// Resolves node `n`'s parameter `param`; a refusal by the Hub is an error.
    pub fn resolve(&mut self, node: usize, param: &str, uri: HubUri) -> Result<&HubUse, Diag> {
        let (resolved, why) = match self.hub().resolve(&uri) {
            Ok(r) => {
                let files = crate::hub::select(&uri, &r)
                    .map_err(|e| Diag::input("E-HUB-FILE", format!("parameter `{param}`: {e}")))?;
                (Some((r, files)), None)
            }
            Err(HubError::Unreachable { why, .. }) => (None, Some(why)),
            Err(e @ (HubError::Disk { .. } | HubError::BadReply { .. })) => {
                return Err(Diag::env("E-HUB", format!("parameter `{param}`: {e}")));
            }
            Err(e) => {
                return Err(Diag::input("E-HUB", format!("parameter `{param}`: {e}"))
                    .with_help("check the name on the Hub; `hf://ORG/NAME` is a model, `hf://datasets/ORG/NAME` a dataset"));
            }
        };
        self.uses.push(HubUse {
            node,
            param: param.to_string(),
            uri,
            resolved,
            why,
        });
        Ok(self
            .uses
            .last()
            .unwrap_or_else(|| unreachable!("just pushed")))
    }

    /// The local path node `n` reads for the `hf://` value `value`.
    pub fn local_path(&self, n: usize, value: &str) -> Option<PathBuf> {
        let u = self
            .uses
            .iter()
            .find(|u| u.node == n && u.uri.to_string() == canonical(value))?;
        let (r, _) = u.resolved.as_ref()?;
        let hub = self.hub.as_ref()?;
        let snap = hub
            .repo_cache(r.repo_type, &r.repo_id)
            .snapshot_dir(&r.commit);
        Some(match &u.uri.path {
            Some(p) => snap.join(p),
            None => snap,
        })
    }

    /// Requests sent to the Hub while planning.
    pub fn requests(&self) -> usize {
        self.hub.as_ref().map_or(0, |h| h.requests)
    }

    /// Files the nodes in `nodes` read that are not in the Hub cache, one entry per blob.
    pub fn missing(&self, nodes: &BTreeSet<usize>) -> Vec<Missing> {
        let Some(hub) = &self.hub else {
            return Vec::new();
        };
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for u in self.uses.iter().filter(|u| nodes.contains(&u.node)) {
            let Some((r, files)) = &u.resolved else {
                continue;
            };
            for m in crate::hub::missing(hub, &u.uri, r, files) {
                if seen.insert((m.uri.repo_label(), m.commit.clone(), m.file.path.clone())) {
                    out.push(m);
                }
            }
        }
        out
    }

    /// The uses of `nodes` that could not be resolved.
    pub fn unresolved(&self, nodes: &BTreeSet<usize>) -> Vec<&HubUse> {
        self.uses
            .iter()
            .filter(|u| nodes.contains(&u.node) && u.resolved.is_none())
            .collect()
    }

    /// What people should know about how revisions were resolved (offline, last known).
    pub fn notes(&self) -> Vec<String> {
        let mut out = BTreeMap::new();
        for u in &self.uses {
            let line = match &u.resolved {
                Some((r, _)) => match &r.provenance {
                    Provenance::LastKnown { why } => format!(
                        "{why}: `{}` of {} taken at {}, its last resolution in the local cache",
                        r.revision,
                        u.uri.repo_label(),
                        &r.commit[..7]
                    ),
                    _ => continue,
                },
                None => format!(
                    "cannot resolve `{}` of {}: {}",
                    u.uri.revision(),
                    u.uri.repo_label(),
                    u.why.as_deref().unwrap_or("unknown")
                ),
            };
            out.insert(line, ());
        }
        out.into_keys().collect()
    }

    /// Fetches `todo`, reporting to `t`; every failure is an environment error.
    pub fn fetch(&self, todo: &[Missing], t: &mut dyn crate::hub::Transfer) -> Result<(), Diags> {
        let Some(hub) = &self.hub else {
            return Ok(());
        };
        if hub.cfg.offline && !todo.is_empty() {
            return Err(Diag::env(
                "E-HUB-OFFLINE",
                format!(
                    "HF_HUB_OFFLINE is set and {} file(s) the stages need are not in the Hub cache:\n{}",
                    todo.len(),
                    missing_list(todo)
                ),
            )
            .with_help("unset HF_HUB_OFFLINE (or download them with `hf download` where there is a network)")
            .into());
        }
        crate::hub::fetch_all(hub, todo, t).map_err(|e| {
            let (code, help) = match e {
                HubError::Disk { .. } => (
                    "E-HUB-DISK",
                    "nothing of the file was kept; nothing was computed",
                ),
                HubError::BadReply { .. } => (
                    "E-HUB-DOWNLOAD",
                    "nothing of the file was kept; nothing was computed",
                ),
                _ => (
                    "E-HUB-DOWNLOAD",
                    "nothing was computed; what arrived stays in the Hub cache as `.incomplete`, and the next run resumes from it",
                ),
            };
            Diags::from(Diag::env(code, e.to_string()).with_help(help))
        })?;
        for u in &self.uses {
            if let Some((r, _)) = &u.resolved {
                let repo = hub.repo_cache(r.repo_type, &r.repo_id);
                // Python reads `refs/<revision>` to find what it downloaded; best effort.
                let _ = repo.write_ref(&r.revision, &r.commit);
            }
        }
        Ok(())
    }
}

/// `hf://...` as `HubUri` prints it (so `hf://models/a/b` finds `hf://a/b`).
fn canonical(value: &str) -> String {
    HubUri::parse(value).map_or_else(|_| value.to_string(), |u| u.to_string())
}

/// `  facebook/bart-large@1a2b3c4  model.safetensors  1.6 GB`, a line per file, and the total.
pub fn missing_list(todo: &[Missing]) -> String {
    let mut out = String::new();
    for m in todo {
        out.push_str(&format!(
            "  {}@{}  {}  {}\n",
            m.uri.repo_label(),
            &m.commit[..7],
            m.file.path,
            human_bytes(m.file.size)
        ));
    }
    let total: u64 = todo.iter().map(|m| m.file.size).sum();
    out.push_str(&format!("  total {}", human_bytes(total)));
    out
}

/// `1.6 GB`, `12.0 kB`: decimal units, as the Hub shows sizes.
pub fn human_bytes(b: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1000.0 && i + 1 < units.len() {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", units[i])
    }
}
