//! Where the Hub is, where its files are kept and who we are: read from the
//! same environment variables as Python's `huggingface_hub`, so the two share
//! one cache and one login.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// A Hub access token. Its `Debug` and `Display` never show it: it must not
/// reach a log, a key, a report or an error message.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// The `Authorization` header's value.
    pub(crate) fn bearer(&self) -> String {
        format!("Bearer {}", self.0)
    }

    /// Whether `text` contains the token (a guard for messages built from server replies).
    pub(crate) fn appears_in(&self, text: &str) -> bool {
        !self.0.is_empty() && text.contains(&self.0)
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<hidden>)")
    }
}

/// The Hub settings of this process.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// `HF_ENDPOINT`, without a trailing `/`.
    pub endpoint: String,
    /// `HF_HUB_CACHE`: `models--ORG--NAME/{blobs,snapshots,refs}` live here.
    pub cache_dir: PathBuf,
    pub token: Option<Token>,
    /// `HF_HUB_OFFLINE`: no request at all.
    pub offline: bool,
    /// `HF_HUB_ETAG_TIMEOUT`: metadata requests (seconds, default 10).
    pub metadata_timeout: Duration,
    /// `HF_HUB_DOWNLOAD_TIMEOUT`: the longest a download may go without a byte (default 10).
    pub read_timeout: Duration,
}

/// How `huggingface_hub` reads a boolean variable.
fn truthy(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_uppercase().as_str(),
        "1" | "ON" | "YES" | "TRUE"
    )
}

impl HubConfig {
    /// From the process environment.
    pub fn from_env() -> HubConfig {
        HubConfig::from_vars(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
    }

    /// From any variable lookup (tests pass a map).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> HubConfig {
        let home = || var("HOME").map(PathBuf::from).unwrap_or_default();
        let hf_home = var("HF_HOME").map(PathBuf::from).unwrap_or_else(|| {
            var("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| home().join(".cache"))
                .join("huggingface")
        });
        let cache_dir = var("HF_HUB_CACHE")
            .or_else(|| var("HUGGINGFACE_HUB_CACHE"))
            .map(PathBuf::from)
            .unwrap_or_else(|| hf_home.join("hub"));
        let token = if var("HF_HUB_DISABLE_IMPLICIT_TOKEN").is_some_and(|v| truthy(&v)) {
            var("HF_TOKEN")
        } else {
            var("HF_TOKEN")
                .or_else(|| var("HUGGING_FACE_HUB_TOKEN"))
                .or_else(|| {
                    let path = var("HF_TOKEN_PATH")
                        .map(PathBuf::from)
                        .unwrap_or_else(|| hf_home.join("token"));
                    read_token_file(&path)
                })
        };
        let secs = |name: &str| {
            var(name)
                .and_then(|v| v.trim().parse::<f64>().ok())
                .filter(|s| s.is_finite() && *s > 0.0)
                .map_or(Duration::from_secs(10), Duration::from_secs_f64)
        };
        HubConfig {
            endpoint: var("HF_ENDPOINT")
                .unwrap_or_else(|| "https://huggingface.co".into())
                .trim_end_matches('/')
                .to_string(),
            cache_dir,
            token: token
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty())
                .map(Token),
            offline: var("HF_HUB_OFFLINE").is_some_and(|v| truthy(&v)),
            metadata_timeout: secs("HF_HUB_ETAG_TIMEOUT"),
            read_timeout: secs("HF_HUB_DOWNLOAD_TIMEOUT"),
        }
    }

    /// The host part of the endpoint (`huggingface.co:443` style), for the
    /// rule that the token goes to the endpoint's host only.
    pub(crate) fn endpoint_host(&self) -> String {
        host_of(&self.endpoint)
    }
}

fn read_token_file(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// `scheme://host:port` of a URL, lowercased (the origin a header may go to).
pub(crate) fn host_of(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    // Credentials in the authority are not part of the origin.
    let authority = authority.rsplit('@').next().unwrap_or_default();
    format!(
        "{}://{}",
        scheme.to_ascii_lowercase(),
        authority.to_ascii_lowercase()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn cfg(vars: &[(&str, &str)]) -> HubConfig {
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        HubConfig::from_vars(|k| m.get(k).cloned())
    }

    #[test]
    fn reads_the_variables_huggingface_hub_reads() {
        let c = cfg(&[("HOME", "/h")]);
        assert_eq!(c.cache_dir, PathBuf::from("/h/.cache/huggingface/hub"));
        assert_eq!(c.endpoint, "https://huggingface.co");
        assert!(!c.offline && c.token.is_none());
        let c = cfg(&[("HF_HOME", "/x"), ("HF_HUB_OFFLINE", "yes")]);
        assert_eq!(c.cache_dir, PathBuf::from("/x/hub"));
        assert!(c.offline);
        let c = cfg(&[
            ("HF_HOME", "/x"),
            ("HF_HUB_CACHE", "/c"),
            ("HF_ENDPOINT", "http://127.0.0.1:9/"),
            ("HF_TOKEN", "hf_secret"),
        ]);
        assert_eq!(c.cache_dir, PathBuf::from("/c"));
        assert_eq!(c.endpoint, "http://127.0.0.1:9");
        assert_eq!(
            c.token.as_ref().map(Token::bearer).as_deref(),
            Some("Bearer hf_secret")
        );
        assert!(!format!("{c:?}").contains("hf_secret"));
    }

    #[test]
    fn origins_compare_scheme_host_and_port() {
        assert_eq!(host_of("http://127.0.0.1:80/a?b"), "http://127.0.0.1:80");
        assert_ne!(
            host_of("http://localhost:80/x"),
            host_of("http://127.0.0.1:80/x")
        );
        assert_eq!(host_of("https://U:p@Hub.example/x"), "https://hub.example");
    }
}
