//! `hf://` URIs, in the form of `huggingface_hub`'s `HfFileSystem`:
//! `hf://[datasets/]ORG/NAME[@REVISION][/PATH]`. A revision with a `/` in it
//! is written percent-encoded (`@refs%2Fconvert%2Fparquet`), as the Hub's
//! own URLs do.

use std::fmt;

/// The scheme every Hub path starts with.
pub const SCHEME: &str = "hf://";

/// What kind of repository a URI names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RepoType {
    Model,
    Dataset,
}

impl RepoType {
    /// The plural the API's paths use (`/api/models/...`).
    pub fn plural(self) -> &'static str {
        match self {
            RepoType::Model => "models",
            RepoType::Dataset => "datasets",
        }
    }

    /// The prefix of `resolve` URLs (`/datasets/ORG/NAME/resolve/...`).
    pub fn url_prefix(self) -> &'static str {
        match self {
            RepoType::Model => "",
            RepoType::Dataset => "datasets/",
        }
    }
}

/// A parsed `hf://` URI.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HubUri {
    pub repo_type: RepoType,
    /// `ORG/NAME`.
    pub repo_id: String,
    /// As written (decoded); `None` means the default branch, `main`.
    pub revision: Option<String>,
    /// A file or folder inside the repository; `None` means the whole snapshot.
    pub path: Option<String>,
}

/// Whether a parameter value names a Hub path.
pub fn is_hub(value: &str) -> bool {
    value.starts_with(SCHEME)
}

impl HubUri {
    /// Parses `hf://...`; the error says what is wrong and how it should look.
    pub fn parse(text: &str) -> Result<HubUri, String> {
        let rest = text
            .strip_prefix(SCHEME)
            .ok_or_else(|| format!("`{text}` does not start with `{SCHEME}`"))?;
        let (repo_type, rest) = match rest.split_once('/') {
            Some(("datasets", r)) => (RepoType::Dataset, r),
            Some(("spaces", _)) => {
                return Err(format!(
                    "`{text}` names a Space; models and datasets can be read"
                ));
            }
            Some(("models", r)) => (RepoType::Model, r),
            _ => (RepoType::Model, rest),
        };
        let mut parts = rest.splitn(3, '/');
        let org = parts.next().unwrap_or_default();
        let name_rev = parts.next().unwrap_or_default();
        let path = parts.next().map(|p| p.trim_end_matches('/').to_string());
        let (name, revision) = match name_rev.split_once('@') {
            Some((n, r)) => (n, Some(percent_decode(r)?)),
            None => (name_rev, None),
        };
        if org.is_empty() || name.is_empty() {
            return Err(format!(
                "`{text}` does not name a repository: write `hf://ORG/NAME` for a model or `hf://datasets/ORG/NAME` for a dataset"
            ));
        }
        check_id_part(org, text)?;
        check_id_part(name, text)?;
        if revision.as_deref() == Some("") {
            return Err(format!("`{text}` has an empty revision after `@`"));
        }
        let path = path.filter(|p| !p.is_empty());
        if let Some(p) = &path {
            super::layout::check_relative(p).map_err(|e| format!("`{text}`: {e}"))?;
        }
        Ok(HubUri {
            repo_type,
            repo_id: format!("{org}/{name}"),
            revision,
            path,
        })
    }

    /// The revision asked for: the branch `main` when none is written.
    pub fn revision(&self) -> &str {
        self.revision.as_deref().unwrap_or("main")
    }

    /// `datasets/ORG/NAME` or `ORG/NAME`, as people write it in messages.
    pub fn repo_label(&self) -> String {
        format!("{}{}", self.repo_type.url_prefix(), self.repo_id)
    }
}

impl fmt::Display for HubUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCHEME}{}", self.repo_label())?;
        if let Some(r) = &self.revision {
            write!(f, "@{}", r.replace('/', "%2F"))?;
        }
        if let Some(p) = &self.path {
            write!(f, "/{p}")?;
        }
        Ok(())
    }
}

/// A repository id's part: what the Hub allows (letters, digits, `-`, `_`, `.`).
fn check_id_part(part: &str, text: &str) -> Result<(), String> {
    let ok = part
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !part.starts_with('.')
        && !part.contains("..");
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{part}` in `{text}` is not a repository name: use letters, digits, `-`, `_` and `.`"
        ))
    }
}

/// `%2F` and friends in a revision.
fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad percent-escape in revision `{s}`"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("revision `{s}` is not UTF-8"))
}

/// Percent-encodes a revision or a file path segment for a URL (keeps `/` in paths).
pub fn url_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b'/' if keep_slash => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_hf_file_system_forms() {
        let u = HubUri::parse("hf://facebook/bart-large").unwrap();
        assert_eq!(
            (
                u.repo_type,
                u.repo_id.as_str(),
                u.revision(),
                u.path.as_deref()
            ),
            (RepoType::Model, "facebook/bart-large", "main", None)
        );
        let u = HubUri::parse("hf://datasets/a/b@refs%2Fconvert%2Fparquet/default/train").unwrap();
        assert_eq!(u.repo_type, RepoType::Dataset);
        assert_eq!(u.revision(), "refs/convert/parquet");
        assert_eq!(u.path.as_deref(), Some("default/train"));
        assert_eq!(
            u.to_string(),
            "hf://datasets/a/b@refs%2Fconvert%2Fparquet/default/train"
        );
        let u = HubUri::parse("hf://o/n@v1.0/config.json").unwrap();
        assert_eq!(
            (u.revision(), u.path.as_deref()),
            ("v1.0", Some("config.json"))
        );
    }

    #[test]
    fn refuses_what_is_not_a_repository() {
        for bad in [
            "hf://bart-large",
            "hf://datasets/x",
            "hf://spaces/a/b",
            "hf://a/b@",
            "hf://a/b/../../etc/passwd",
            "hf://a/b c",
            "hf://../b",
        ] {
            assert!(HubUri::parse(bad).is_err(), "{bad}");
        }
    }
}
