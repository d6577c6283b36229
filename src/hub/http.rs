//! The Hub's HTTP contract, over `ureq`: a revision's commit and file list
//! (`/api/{models,datasets}/ORG/NAME/revision/REV?blobs=true`), and file
//! bytes (`/resolve/COMMIT/PATH`, resumed with `Range`).
//!
//! Every request has a time limit per read, and transient failures (no
//! connection, a timeout, 429, 5xx, a body cut short) are retried with
//! backoff. Redirects are followed here, not by `ureq`, so that the token
//! goes to the endpoint's own origin only: a redirect to a CDN or any other
//! host is followed without `Authorization`.

use std::io::{Read, Write};
use std::time::Duration;

use serde::Deserialize;

use super::config::{HubConfig, host_of};
use super::layout::{check_relative, normalize_etag};
use super::uri::{HubUri, url_encode};

/// Attempts per request (the first and three retries).
const ATTEMPTS: u32 = 4;
const MAX_REDIRECTS: usize = 5;

/// What went wrong talking to the Hub, in the user's terms.
#[derive(Debug, Clone, PartialEq)]
pub enum HubError {
    /// 404/401 on the repository: it does not exist, or it is private.
    RepoNotFound {
        repo: String,
    },
    RevisionNotFound {
        repo: String,
        revision: String,
    },
    /// Gated (terms to accept) or forbidden with the token given.
    Gated {
        repo: String,
        with_token: bool,
    },
    /// The endpoint could not be reached (after retries).
    Unreachable {
        url: String,
        why: String,
    },
    /// The server answered something this client cannot use.
    BadReply {
        url: String,
        why: String,
    },
    /// A local file could not be written or read.
    Disk {
        path: String,
        why: String,
    },
}

impl std::fmt::Display for HubError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HubError::RepoNotFound { repo } => write!(
                f,
                "repository `{repo}` was not found on the Hub (if it is private, set HF_TOKEN to a token that can read it)"
            ),
            HubError::RevisionNotFound { repo, revision } => write!(
                f,
                "revision `{revision}` of `{repo}` was not found: name a branch, a tag or a full commit hash"
            ),
            HubError::Gated {
                repo,
                with_token: false,
            } => write!(
                f,
                "`{repo}` is gated: accept its terms on the Hub and set HF_TOKEN (or log in with `hf auth login`)"
            ),
            HubError::Gated {
                repo,
                with_token: true,
            } => write!(
                f,
                "the token in use may not read `{repo}`: accept the repository's terms on the Hub with that account, or use another token"
            ),
            HubError::Unreachable { url, why } => {
                write!(f, "cannot reach the Hub at {url}: {why}")
            }
            HubError::BadReply { url, why } => write!(f, "the Hub's reply to {url}: {why}"),
            HubError::Disk { path, why } => write!(f, "cannot write `{path}`: {why}"),
        }
    }
}

/// One file of a repository at a commit, as the revision API lists it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, Deserialize)]
pub struct RemoteFile {
    pub path: String,
    pub size: u64,
    /// Its blob name: the LFS sha256, or the git blob sha1 of a small file.
    pub etag: String,
    pub lfs: bool,
}

/// A revision's commit and its files.
#[derive(Debug, Clone, PartialEq)]
pub struct RepoInfo {
    pub commit: String,
    pub files: Vec<RemoteFile>,
}

#[derive(Deserialize)]
struct RevisionReply {
    sha: String,
    #[serde(default)]
    siblings: Vec<Sibling>,
}

#[derive(Deserialize)]
struct Sibling {
    rfilename: String,
    size: Option<u64>,
    #[serde(rename = "blobId")]
    blob_id: Option<String>,
    lfs: Option<Lfs>,
}

#[derive(Deserialize)]
struct Lfs {
    sha256: String,
    size: u64,
}

/// A connection to one Hub endpoint.
pub struct Client {
    cfg: HubConfig,
    agent: ureq::Agent,
    /// Pause before retry `n` is `backoff * 2^(n-1)`.
    backoff: Duration,
}

enum Attempt<T> {
    Done(T),
    Retry(String),
    Fail(HubError),
}

impl Client {
    pub fn new(cfg: &HubConfig) -> Client {
        let agent = ureq::Agent::config_builder()
            .timeout_resolve(Some(cfg.metadata_timeout))
            .timeout_connect(Some(cfg.metadata_timeout))
            .timeout_recv_response(Some(cfg.metadata_timeout))
            .timeout_per_read(Some(cfg.read_timeout))
            .http_status_as_error(false)
            .max_redirects(0)
            .user_agent(format!("efrlhf/{}", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        let backoff_ms = std::env::var("EFRLHF_HUB_BACKOFF_MS")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(1000);
        Client {
            cfg: cfg.clone(),
            agent,
            backoff: Duration::from_millis(backoff_ms),
        }
    }

    /// The endpoint's URL of `tail` (already encoded).
    fn url(&self, tail: &str) -> String {
        format!("{}/{tail}", self.cfg.endpoint)
    }

    /// Runs `attempt` up to [`ATTEMPTS`] times while it asks for a retry.
    fn retrying<T>(
        &self,
        url: &str,
        mut attempt: impl FnMut() -> Attempt<T>,
    ) -> Result<T, HubError> {
        let mut last = String::new();
        for n in 0..ATTEMPTS {
            if n > 0 {
                std::thread::sleep(self.backoff * (1 << (n - 1)));
            }
            match attempt() {
                Attempt::Done(v) => return Ok(v),
                Attempt::Fail(e) => return Err(e),
                Attempt::Retry(why) => last = why,
            }
        }
        Err(HubError::Unreachable {
            url: url.to_string(),
            why: format!("{last} ({ATTEMPTS} attempts)"),
        })
    }

    /// GET `url` with `headers`, following redirects; the token only to the endpoint's origin.
    fn get(
        &self,
        url: &str,
        headers: &[(&str, String)],
    ) -> Result<ureq::http::Response<ureq::Body>, String> {
        let home = self.cfg.endpoint_host();
        let mut url = url.to_string();
        for _ in 0..=MAX_REDIRECTS {
            let mut req = self.agent.get(&url);
            for (k, v) in headers {
                req = req.header(*k, v);
            }
            if let Some(t) = &self.cfg.token
                && host_of(&url) == home
            {
                req = req.header("Authorization", t.bearer());
            }
            let resp = req.call().map_err(|e| self.scrub(e.to_string()))?;
            if !resp.status().is_redirection() {
                return Ok(resp);
            }
            let loc = resp
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok())
                .ok_or("a redirect without a Location")?;
            url = join_url(&url, loc);
        }
        Err(format!("more than {MAX_REDIRECTS} redirects"))
    }

    /// A message that cannot carry the token, whatever the server echoed.
    fn scrub(&self, text: String) -> String {
        match &self.cfg.token {
            Some(t) if t.appears_in(&text) => "(a message that contained the token)".into(),
            _ => text,
        }
    }

    /// The commit `uri`'s revision is at, and every file there.
    pub fn repo_info(&self, uri: &HubUri) -> Result<RepoInfo, HubError> {
        let url = self.url(&format!(
            "api/{}/{}/revision/{}?blobs=true",
            uri.repo_type.plural(),
            uri.repo_id,
            url_encode(uri.revision(), false)
        ));
        let with_token = self.cfg.token.is_some();
        self.retrying(&url, || {
            // No answer at all means no Hub now: the caller falls back to what is
            // known at once (as `huggingface_hub` does), instead of waiting out retries.
            let resp = match self.get(&url, &[]) {
                Ok(r) => r,
                Err(why) => {
                    return Attempt::Fail(HubError::Unreachable {
                        url: url.clone(),
                        why,
                    });
                }
            };
            let status = resp.status().as_u16();
            let code = header(&resp, "x-error-code");
            match status {
                200 => {}
                429 | 500..=599 => return Attempt::Retry(format!("HTTP {status}")),
                _ => return Attempt::Fail(api_error(uri, status, &code, with_token, &url)),
            }
            let text = match resp.into_body().read_to_string() {
                Ok(t) => t,
                Err(e) => return Attempt::Retry(format!("the reply broke off: {e}")),
            };
            let reply: RevisionReply = match serde_json::from_str(&text) {
                Ok(r) => r,
                Err(e) => return Attempt::Retry(format!("unreadable JSON: {e}")),
            };
            Attempt::Done(reply)
        })
        .and_then(|r| to_info(r, &url))
    }

    /// Appends `file`'s bytes at `commit` to `part` (resuming from its
    /// length), calling `progress` with each chunk's size. Returns when
    /// `part` holds `file.size` bytes; the caller verifies them.
    pub fn download(
        &self,
        uri: &HubUri,
        commit: &str,
        file: &RemoteFile,
        part: &std::path::Path,
        progress: &mut dyn FnMut(u64),
    ) -> Result<(), HubError> {
        let url = self.url(&format!(
            "{}{}/resolve/{commit}/{}",
            uri.repo_type.url_prefix(),
            uri.repo_id,
            url_encode(&file.path, true)
        ));
        self.retrying(&url, || self.download_once(&url, file, part, progress))
    }

    fn download_once(
        &self,
        url: &str,
        file: &RemoteFile,
        part: &std::path::Path,
        progress: &mut dyn FnMut(u64),
    ) -> Attempt<()> {
        let disk = |e: std::io::Error| {
            Attempt::Fail(HubError::Disk {
                path: part.display().to_string(),
                why: disk_why(&e),
            })
        };
        let have = std::fs::metadata(part).map(|m| m.len()).unwrap_or(0);
        if have == file.size {
            return Attempt::Done(());
        }
        if have > file.size {
            if let Err(e) = std::fs::remove_file(part) {
                return disk(e);
            }
            return Attempt::Retry("a partial download longer than the file".into());
        }
        let headers = [
            ("Range", format!("bytes={have}-")),
            ("Accept-Encoding", "identity".to_string()),
        ];
        let resp = match self.get(url, &headers) {
            Ok(r) => r,
            Err(e) => return Attempt::Retry(e),
        };
        let status = resp.status().as_u16();
        let start = match status {
            206 => match content_range_start(&header(&resp, "content-range")) {
                Some(s) if s == have => have,
                _ => {
                    return Attempt::Retry(
                        "a Content-Range that does not match the request".into(),
                    );
                }
            },
            200 => 0,
            416 if have == file.size => return Attempt::Done(()),
            429 | 500..=599 | 416 => return Attempt::Retry(format!("HTTP {status}")),
            401 | 403 => {
                return Attempt::Fail(HubError::BadReply {
                    url: url.to_string(),
                    why: format!("HTTP {status}: the file may not be read with these credentials"),
                });
            }
            _ => {
                return Attempt::Fail(HubError::BadReply {
                    url: url.to_string(),
                    why: format!("HTTP {status} for `{}`", file.path),
                });
            }
        };
        let mut out = match std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(start == 0)
            .append(start > 0)
            .open(part)
        {
            Ok(f) => f,
            Err(e) => return disk(e),
        };
        let mut body = resp.into_body();
        let mut reader = body.as_reader();
        let mut buf = vec![0u8; 1 << 16];
        let mut got = start;
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => return Attempt::Retry(format!("the download broke off: {e}")),
            };
            if got + n as u64 > file.size {
                let _ = std::fs::remove_file(part);
                return Attempt::Retry("the server sent more bytes than the file has".into());
            }
            if let Err(e) = out.write_all(&buf[..n]) {
                return disk(e);
            }
            got += n as u64;
            progress(n as u64);
        }
        if let Err(e) = out.flush() {
            return disk(e);
        }
        if got < file.size {
            return Attempt::Retry(format!(
                "the server ended the file after {got} of {} bytes",
                file.size
            ));
        }
        Attempt::Done(())
    }
}

fn header(resp: &ureq::http::Response<ureq::Body>, name: &str) -> String {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// `bytes START-END/TOTAL` -> START.
fn content_range_start(v: &str) -> Option<u64> {
    v.strip_prefix("bytes ")?
        .split('-')
        .next()?
        .trim()
        .parse()
        .ok()
}

/// The next URL of a redirect: absolute, or relative to the current one.
fn join_url(current: &str, location: &str) -> String {
    if location.contains("://") {
        return location.to_string();
    }
    let origin = host_of(current);
    if location.starts_with('/') {
        return format!("{origin}{location}");
    }
    let base = current.split('?').next().unwrap_or(current);
    let dir = base.rsplit_once('/').map_or(base, |(d, _)| d);
    format!("{dir}/{location}")
}

fn disk_why(e: &std::io::Error) -> String {
    if e.raw_os_error() == Some(libc::ENOSPC) {
        "the disk is full: free space where HF_HUB_CACHE points, or point it elsewhere".into()
    } else {
        e.to_string()
    }
}

/// A non-retryable answer of the revision API, in the user's terms.
fn api_error(uri: &HubUri, status: u16, code: &str, with_token: bool, url: &str) -> HubError {
    let repo = uri.repo_label();
    match (status, code) {
        (_, "GatedRepo") => HubError::Gated { repo, with_token },
        (404, "RevisionNotFound") => HubError::RevisionNotFound {
            repo,
            revision: uri.revision().to_string(),
        },
        (401 | 404, _) => HubError::RepoNotFound { repo },
        (403, _) => HubError::Gated { repo, with_token },
        _ => HubError::BadReply {
            url: url.to_string(),
            why: format!("HTTP {status}"),
        },
    }
}

/// The revision API's reply, checked: a full commit hash, safe file names, etags.
fn to_info(r: RevisionReply, url: &str) -> Result<RepoInfo, HubError> {
    let bad = |why: String| HubError::BadReply {
        url: url.to_string(),
        why,
    };
    if !super::layout::is_commit(&r.sha) {
        return Err(bad(format!("`{}` is not a commit hash", r.sha)));
    }
    let mut files = Vec::with_capacity(r.siblings.len());
    for s in r.siblings {
        check_relative(&s.rfilename).map_err(|e| bad(format!("refused: {e}")))?;
        let (etag, size, lfs) = match (s.lfs, s.blob_id, s.size) {
            (Some(l), _, _) => (normalize_etag(&l.sha256), l.size, true),
            (None, Some(b), Some(size)) => (normalize_etag(&b), size, false),
            _ => (None, 0, false),
        };
        let etag = etag.ok_or_else(|| {
            bad(format!(
                "no content hash for `{}` (the revision API must be asked with `blobs=true`)",
                s.rfilename
            ))
        })?;
        files.push(RemoteFile {
            path: s.rfilename,
            size,
            etag,
            lfs,
        });
    }
    files.sort();
    Ok(RepoInfo {
        commit: r.sha,
        files,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_join_like_a_browser() {
        assert_eq!(
            join_url("http://a:1/x/y?q", "/z"),
            "http://a:1/z".to_string()
        );
        assert_eq!(join_url("http://a:1/x/y", "w"), "http://a:1/x/w");
        assert_eq!(join_url("http://a:1/x", "https://b/c"), "https://b/c");
    }

    #[test]
    fn content_ranges_parse() {
        assert_eq!(content_range_start("bytes 10-19/20"), Some(10));
        assert_eq!(content_range_start("bytes */20"), None);
    }
}
