//! From an `hf://` URI to a content identity: the commit its revision is at
//! and the content hashes of the files it selects, decided once per run and
//! without reading a byte of those files.
//!
//! - A 40-hex revision is a commit: once its file list is recorded, no request.
//! - A branch or tag is asked of the Hub once per run (`Hub` memoizes).
//! - Offline (`HF_HUB_OFFLINE`, or the Hub unreachable), the commit
//!   `huggingface_hub`'s `refs/<revision>` last recorded is used, and the
//!   plan says so.
//!
//! File lists are recorded in efrlhf's cache (`hub/<repo folder>/<commit>.json`),
//! since the Hub cache keeps only the files that were downloaded; failing a
//! record, a snapshot folder's entries stand in for the list.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::config::HubConfig;
use super::http::{Client, HubError, RemoteFile};
use super::layout::{RepoCache, is_commit};
use super::uri::{HubUri, RepoType};

/// How a revision's commit was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Provenance {
    /// Asked of the Hub in this run.
    Hub,
    /// A commit hash whose file list was already recorded: no request.
    Pinned,
    /// The last resolution in the local cache, because of `why` (offline, unreachable).
    LastKnown { why: String },
}

/// A revision resolved: its commit and every file there.
#[derive(Debug, Clone)]
pub struct Resolution {
    pub repo_type: RepoType,
    pub repo_id: String,
    pub revision: String,
    pub commit: String,
    pub files: Vec<RemoteFile>,
    pub provenance: Provenance,
}

/// What goes into a stage's key for one `hf://` parameter: the content
/// (repository, commit, the file or folder read and each file's hash), not
/// how it was named, so pinning the commit a branch is at reruns nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HubIdentity {
    /// `ORG/NAME` or `datasets/ORG/NAME`.
    pub repo: String,
    /// The file or folder inside the repository (`None`: the snapshot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    pub commit: String,
    /// Each selected file's content hash (LFS sha256 or git blob sha1).
    pub files: BTreeMap<String, String>,
    /// The revision as written (`main`, a tag, a commit): kept with the key's
    /// parts for `explain`, left out of the key itself.
    pub revision: String,
}

impl HubIdentity {
    /// The identity without what names it (what the key hashes).
    pub fn content(&self) -> HubIdentity {
        HubIdentity {
            revision: String::new(),
            ..self.clone()
        }
    }

    /// `repo@revision[/path]`, for messages.
    pub fn label(&self) -> String {
        match &self.path {
            Some(p) => format!("{}@{}/{p}", self.repo, self.revision),
            None => format!("{}@{}", self.repo, self.revision),
        }
    }
}

/// `hf://` URIs of one run, resolved against one Hub and two caches.
pub struct Hub {
    pub cfg: HubConfig,
    client: Client,
    /// efrlhf's record of file lists.
    records: PathBuf,
    memo: HashMap<(RepoType, String, String), Result<Resolution, HubError>>,
    /// Set once a request failed to connect: later ones use what is known.
    unreachable: Option<String>,
    /// Requests this process sent (shown by `plan` in debug output and tests).
    pub requests: usize,
}

#[derive(Serialize, Deserialize)]
struct Record {
    commit: String,
    files: Vec<RemoteFile>,
}

impl Hub {
    /// A Hub with `cfg`, recording file lists under `records`.
    pub fn new(cfg: HubConfig, records: &Path) -> Hub {
        Hub {
            client: Client::new(&cfg),
            cfg,
            records: records.to_path_buf(),
            memo: HashMap::new(),
            unreachable: None,
            requests: 0,
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn repo_cache(&self, repo_type: RepoType, repo_id: &str) -> RepoCache {
        RepoCache::new(&self.cfg.cache_dir, repo_type, repo_id)
    }

    fn record_path(&self, repo: &RepoCache, commit: &str) -> PathBuf {
        self.records
            .join(&repo.folder)
            .join(format!("{commit}.json"))
    }

    /// Records a commit's file list (once; it never changes).
    pub fn record(&self, r: &Resolution) {
        let repo = self.repo_cache(r.repo_type, &r.repo_id);
        let path = self.record_path(&repo, &r.commit);
        if path.is_file() {
            return;
        }
        let rec = Record {
            commit: r.commit.clone(),
            files: r.files.clone(),
        };
        // A record that cannot be written costs a request next time, nothing more.
        if let (Some(dir), Ok(bytes)) = (path.parent(), serde_json::to_vec_pretty(&rec)) {
            let tmp = path.with_extension(format!("tmp{}", std::process::id()));
            let _ = fs::create_dir_all(dir)
                .and_then(|_| fs::write(&tmp, bytes))
                .and_then(|_| fs::rename(&tmp, &path));
        }
    }

    /// The recorded file list of `commit`, or the entries of its snapshot folder.
    fn known_files(&self, repo: &RepoCache, commit: &str) -> Option<Vec<RemoteFile>> {
        if let Ok(bytes) = fs::read(self.record_path(repo, commit))
            && let Ok(rec) = serde_json::from_slice::<Record>(&bytes)
            && rec.commit == commit
        {
            return Some(rec.files);
        }
        python_tree(repo, commit).or_else(|| snapshot_files(repo, commit))
    }

    /// Resolves `uri`'s repository and revision (memoized for the run).
    pub fn resolve(&mut self, uri: &HubUri) -> Result<Resolution, HubError> {
        let key = (
            uri.repo_type,
            uri.repo_id.clone(),
            uri.revision().to_string(),
        );
        if let Some(r) = self.memo.get(&key) {
            return r.clone();
        }
        let r = self.resolve_uncached(uri);
        if let Ok(res) = &r
            && res.provenance == Provenance::Hub
        {
            self.record(res);
            // As `huggingface_hub` does once it has asked: the revision's last known commit.
            let repo = self.repo_cache(res.repo_type, &res.repo_id);
            let _ = repo.write_ref(&res.revision, &res.commit);
        }
        self.memo.insert(key, r.clone());
        r
    }

    fn resolve_uncached(&mut self, uri: &HubUri) -> Result<Resolution, HubError> {
        let repo = self.repo_cache(uri.repo_type, &uri.repo_id);
        let rev = uri.revision();
        let make = |commit: String, files, provenance| Resolution {
            repo_type: uri.repo_type,
            repo_id: uri.repo_id.clone(),
            revision: rev.to_string(),
            commit,
            files,
            provenance,
        };
        if is_commit(rev)
            && let Some(files) = self.known_files(&repo, rev)
        {
            return Ok(make(rev.to_string(), files, Provenance::Pinned));
        }
        let offline_why = if self.cfg.offline {
            Some("HF_HUB_OFFLINE is set".to_string())
        } else {
            self.unreachable.clone()
        };
        if offline_why.is_none() {
            self.requests += 1;
            match self.client.repo_info(uri) {
                Ok(info) => return Ok(make(info.commit, info.files, Provenance::Hub)),
                Err(HubError::Unreachable { why, .. }) => {
                    self.unreachable = Some(format!("the Hub is unreachable ({why})"));
                }
                Err(e) => return Err(e),
            }
        }
        let why = offline_why
            .or_else(|| self.unreachable.clone())
            .unwrap_or_default();
        let commit = if is_commit(rev) {
            Some(rev.to_string())
        } else {
            repo.read_ref(rev)
        };
        match commit.and_then(|c| self.known_files(&repo, &c).map(|f| (c, f))) {
            Some((c, files)) => Ok(make(c, files, Provenance::LastKnown { why })),
            None => Err(HubError::Unreachable {
                url: self.cfg.endpoint.clone(),
                why: format!(
                    "{why}, and the local cache has no earlier resolution of `{rev}` of `{}`",
                    uri.repo_label()
                ),
            }),
        }
    }
}

/// The file list `huggingface_hub` (2.x) keeps in `trees/<commit>.json`:
/// `{"format_version": 1, "files": {path: {"size", "blob_id", "lfs_sha256"?}}}`.
fn python_tree(repo: &RepoCache, commit: &str) -> Option<Vec<RemoteFile>> {
    let path = repo.root().join("trees").join(format!("{commit}.json"));
    let v: serde_json::Value = serde_json::from_slice(&fs::read(path).ok()?).ok()?;
    if v.get("format_version")?.as_u64()? != 1 {
        return None;
    }
    let mut out = Vec::new();
    for (path, f) in v.get("files")?.as_object()? {
        super::layout::check_relative(path).ok()?;
        let size = f.get("size")?.as_u64()?;
        let (etag, lfs) = match f.get("lfs_sha256").and_then(|s| s.as_str()) {
            Some(sha) => (sha, true),
            None => (f.get("blob_id")?.as_str()?, false),
        };
        out.push(RemoteFile {
            path: path.clone(),
            size,
            etag: super::layout::normalize_etag(etag)?,
            lfs,
        });
    }
    out.sort();
    Some(out)
}

/// A snapshot folder's entries as a file list (each a link to its blob).
fn snapshot_files(repo: &RepoCache, commit: &str) -> Option<Vec<RemoteFile>> {
    let root = repo.snapshot_dir(commit);
    let mut out = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).ok()?.flatten() {
            let p = entry.path();
            let Ok(ft) = entry.file_type() else { continue };
            if ft.is_dir() {
                stack.push(p);
                continue;
            }
            let Some(etag) = fs::read_link(&p)
                .ok()
                .and_then(|t| t.file_name().and_then(|n| n.to_str()).map(str::to_string))
            else {
                continue;
            };
            let Ok(meta) = fs::metadata(repo.blob(&etag)) else {
                continue;
            };
            let rel = p.strip_prefix(&root).ok()?.to_str()?.to_string();
            out.push(RemoteFile {
                path: rel,
                size: meta.len(),
                lfs: etag.len() == 64,
                etag,
            });
        }
    }
    out.sort();
    (!out.is_empty()).then_some(out)
}

/// The files `uri` selects from its resolution, or why none.
pub fn select(uri: &HubUri, r: &Resolution) -> Result<Vec<RemoteFile>, String> {
    let files = &r.files;
    let short = &r.commit[..7.min(r.commit.len())];
    let picked: Vec<RemoteFile> = match &uri.path {
        Some(p) => {
            let prefix = format!("{p}/");
            files
                .iter()
                .filter(|f| &f.path == p || f.path.starts_with(&prefix))
                .filter(|f| &f.path == p || keep(uri.repo_type, &f.path[prefix.len()..]))
                .cloned()
                .collect()
        }
        None => files
            .iter()
            .filter(|f| keep(uri.repo_type, &f.path))
            .cloned()
            .collect(),
    };
    if !picked.is_empty() {
        return Ok(picked);
    }
    let names: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
    let wanted = uri.path.as_deref().unwrap_or("");
    let near = names
        .iter()
        .map(|n| (strsim::jaro_winkler(wanted, n), *n))
        .filter(|(s, _)| *s > 0.7)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, n)| format!("; did you mean `{n}`?"))
        .unwrap_or_default();
    let mut listed: Vec<&str> = names.iter().take(20).copied().collect();
    if names.len() > 20 {
        listed.push("...");
    }
    Err(match &uri.path {
        Some(p) => format!(
            "`{}` at {short} has no file or folder `{p}`{near} (it has: {})",
            uri.repo_label(),
            listed.join(", ")
        ),
        None => format!(
            "`{}` at {short} has no files to read (it has: {})",
            uri.repo_label(),
            listed.join(", ")
        ),
    })
}

/// Whether a repository file belongs to a snapshot: a dataset's files all
/// do (but git's own); a model's top-level configuration, weights and tokenizer.
fn keep(repo_type: RepoType, path: &str) -> bool {
    match repo_type {
        RepoType::Dataset => path != ".gitattributes",
        RepoType::Model => {
            !path.contains('/') && crate::stages::formats::model::is_model_file(path)
        }
    }
}

/// The key part of `uri` resolved as `r` with `files` selected.
pub fn identity(uri: &HubUri, r: &Resolution, files: &[RemoteFile]) -> HubIdentity {
    HubIdentity {
        repo: uri.repo_label(),
        path: uri.path.clone(),
        revision: r.revision.clone(),
        commit: r.commit.clone(),
        files: files
            .iter()
            .map(|f| (f.path.clone(), f.etag.clone()))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(path: &str) -> RemoteFile {
        RemoteFile {
            path: path.into(),
            size: 1,
            etag: "ab".into(),
            lfs: false,
        }
    }

    fn res(files: &[&str]) -> Resolution {
        Resolution {
            repo_type: RepoType::Model,
            repo_id: "o/n".into(),
            revision: "main".into(),
            commit: "0123456789abcdef0123456789abcdef01234567".into(),
            files: files.iter().map(|p| f(p)).collect(),
            provenance: Provenance::Hub,
        }
    }

    #[test]
    fn a_model_snapshot_is_config_weights_and_tokenizer() {
        let r = res(&[
            ".gitattributes",
            "README.md",
            "config.json",
            "flax_model.msgpack",
            "merges.txt",
            "model.safetensors",
            "onnx/model.onnx",
            "pytorch_model.bin",
            "tf_model.h5",
            "tokenizer.json",
        ]);
        let uri = HubUri::parse("hf://o/n").unwrap();
        let got: Vec<String> = select(&uri, &r)
            .unwrap()
            .into_iter()
            .map(|f| f.path)
            .collect();
        assert_eq!(
            got,
            [
                "config.json",
                "merges.txt",
                "model.safetensors",
                "tokenizer.json"
            ]
        );
    }

    #[test]
    fn an_unknown_file_lists_the_repo_and_suggests_the_nearest() {
        let r = res(&["config.json", "tokenizer.json"]);
        let uri = HubUri::parse("hf://o/n/tokenizr.json").unwrap();
        let e = select(&uri, &r).unwrap_err();
        assert!(e.contains("did you mean `tokenizer.json`"), "{e}");
        assert!(e.contains("config.json, tokenizer.json"), "{e}");
    }
}
