//! Where a shared remote cache lives. The experiment block's `remote` node,
//! a user's `remote.kdl`, `--remote=URL` and `$EFRLHF_REMOTE` all name one
//! the same way: a folder (a path or `file://`), S3-compatible storage
//! (`s3://bucket/prefix`) or an HTTP cache (`http(s)://host/path`). Parsing
//! only; `cache::remote` talks to it. A remote never enters a cache key.

use std::path::{Path, PathBuf};

use kdl::{KdlNode, KdlValue};

use super::kdl_util as k;
use crate::error::{Diag, SourceFile};

/// The place a remote's objects live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteLocation {
    /// A shared folder (NFS, a cluster filesystem).
    Folder(PathBuf),
    /// A bucket and a key prefix (no leading or trailing `/`).
    S3 { bucket: String, prefix: String },
    /// A base URL without credentials or a trailing `/`.
    Http { url: String },
}

/// A remote and how to reach it.
#[derive(Clone, PartialEq, Eq)]
pub struct RemoteDecl {
    pub location: RemoteLocation,
    /// S3: a non-AWS service's URL (MinIO, R2, Ceph); else `$AWS_ENDPOINT_URL_S3`
    /// or `$AWS_ENDPOINT_URL`, else AWS.
    pub endpoint: Option<String>,
    /// S3: the region; else `$AWS_REGION`, the profile's, or `us-east-1`.
    pub region: Option<String>,
    /// S3: the profile of `~/.aws/credentials` and `~/.aws/config`.
    pub profile: Option<String>,
    /// Pull only: `--push` and `cache push` are refused.
    pub read_only: bool,
    /// `user:password` of an http(s) URL: sent, never shown.
    pub http_auth: Option<(String, String)>,
}

impl std::fmt::Debug for RemoteDecl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the credentials, even in a debug print.
        write!(f, "RemoteDecl({})", self.display())
    }
}

const HELP: &str = "name a folder (`/mnt/shared/efrlhf` or `file:///...`), S3-compatible storage (`s3://bucket/prefix`, with `endpoint=` for MinIO, R2 or Ceph) or an HTTP cache (`https://host/path`)";

impl RemoteDecl {
    /// A remote at `url`; relative folders start at `base`.
    pub fn parse(url: &str, base: &Path) -> Result<RemoteDecl, String> {
        let url = url.trim();
        let location_and_auth = match url.split_once("://") {
            None if url.is_empty() => return Err("an empty remote".into()),
            None => (RemoteLocation::Folder(base.join(url)), None),
            Some(("file", rest)) => (RemoteLocation::Folder(base.join(rest)), None),
            Some(("s3", rest)) => (parse_s3(rest)?, None),
            Some(("http" | "https", _)) => parse_http(url)?,
            Some((scheme, _)) => {
                return Err(format!(
                    "`{scheme}://` is not a kind of remote efrlhf knows (Google Cloud Storage speaks S3 at `endpoint=\"https://storage.googleapis.com\"`)"
                ));
            }
        };
        Ok(RemoteDecl {
            location: location_and_auth.0,
            endpoint: None,
            region: None,
            profile: None,
            read_only: false,
            http_auth: location_and_auth.1,
        })
    }

    /// The remote as messages show it: never its credentials.
    pub fn display(&self) -> String {
        match &self.location {
            RemoteLocation::Folder(p) => crate::error::display_path(p).display().to_string(),
            RemoteLocation::S3 { bucket, prefix } => {
                let url = format!("s3://{bucket}/{prefix}");
                match &self.endpoint {
                    Some(e) => format!("{} at {}", url.trim_end_matches('/'), redact(e)),
                    None => url.trim_end_matches('/').to_string(),
                }
            }
            RemoteLocation::Http { url } => url.clone(),
        }
    }
}

/// A URL with any `user:password@` taken out.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if !u.username().is_empty() || u.password().is_some() => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.to_string()
        }
        _ => url.to_string(),
    }
}

/// `bucket/prefix` of an `s3://` URL.
fn parse_s3(rest: &str) -> Result<RemoteLocation, String> {
    if rest.contains(['?', '#']) {
        return Err("an `s3://` remote takes no `?query` or `#fragment` (set `endpoint=`, `region=` and `profile=` as properties, or AWS_ENDPOINT_URL and AWS_REGION)".into());
    }
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let valid = (3..=63).contains(&bucket.len())
        && bucket
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && !bucket.starts_with(['-', '.'])
        && !bucket.ends_with(['-', '.']);
    if !valid {
        return Err(format!(
            "`{bucket}` is not an S3 bucket name (3 to 63 lower-case letters, digits, `-` and `.`)"
        ));
    }
    Ok(RemoteLocation::S3 {
        bucket: bucket.to_string(),
        prefix: prefix.trim_matches('/').to_string(),
    })
}

/// An http(s) base URL, and its credentials if it carries some.
fn parse_http(url: &str) -> Result<(RemoteLocation, Option<(String, String)>), String> {
    let mut u = url::Url::parse(url).map_err(|e| format!("`{}`: {e}", redact(url)))?;
    if u.query().is_some() || u.fragment().is_some() {
        return Err("an HTTP cache's URL takes no `?query` or `#fragment`".into());
    }
    let auth = (!u.username().is_empty()).then(|| {
        let decode = |s: &str| percent_decode(s).unwrap_or_else(|| s.to_string());
        (decode(u.username()), decode(u.password().unwrap_or("")))
    });
    let _ = u.set_username("");
    let _ = u.set_password(None);
    let url = u.as_str().trim_end_matches('/').to_string();
    Ok((RemoteLocation::Http { url }, auth))
}

/// `%XX` escapes decoded (credentials in URLs are percent-encoded).
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

const REMOTE_PROPS: &[&str] = &["endpoint", "region", "profile", "read-only"];

/// `remote "s3://bucket/prefix" endpoint="..." region="..." profile="..." read-only=#true`;
/// a relative folder starts at `dir` (the file's folder).
pub fn parse_remote_node(src: &SourceFile, node: &KdlNode, dir: &Path) -> Result<RemoteDecl, Diag> {
    k::no_children(src, node)?;
    k::only_props(src, node, REMOTE_PROPS)?;
    let (url, span) = k::string_arg(src, node, "the remote's location")?;
    let mut decl = RemoteDecl::parse(&url, dir).map_err(|why| {
        Diag::input(
            "E-REMOTE",
            format!("cannot use remote `{}`: {why}", redact(&url)),
        )
        .at(src, span, "not a remote")
        .with_help(HELP)
    })?;
    decl.endpoint = k::string_prop(src, node, "endpoint")?.map(|(e, _)| e);
    decl.region = k::string_prop(src, node, "region")?.map(|(r, _)| r);
    decl.profile = k::string_prop(src, node, "profile")?.map(|(p, _)| p);
    for (name, entry) in k::props(node) {
        if name != "read-only" {
            continue;
        }
        let KdlValue::Bool(b) = entry.value() else {
            return Err(Diag::input("E-SHAPE", "`read-only` is #true or #false").at(
                src,
                entry.span(),
                "not a boolean",
            ));
        };
        decl.read_only = *b;
    }
    let s3_only = [&decl.endpoint, &decl.region, &decl.profile];
    if !matches!(decl.location, RemoteLocation::S3 { .. }) && s3_only.iter().any(|p| p.is_some()) {
        return Err(Diag::input(
            "E-REMOTE",
            "`endpoint`, `region` and `profile` are settings of an S3 remote",
        )
        .at(src, span, "not an `s3://` remote")
        .with_help("remove them, or name the bucket as `s3://bucket/prefix`"));
    }
    Ok(decl)
}

/// The user's remote file (`$EFRLHF_REMOTE_CONFIG`, else
/// `~/.config/efrlhf/remote.kdl`): one `remote` node. `None` when there is no file.
pub fn load_remote_config() -> Result<Option<RemoteDecl>, crate::error::Diags> {
    let path = match std::env::var_os("EFRLHF_REMOTE_CONFIG") {
        Some(p) => PathBuf::from(p),
        None => match std::env::var_os("HOME") {
            Some(h) => Path::new(&h).join(".config/efrlhf/remote.kdl"),
            None => return Ok(None),
        },
    };
    if !path.exists() {
        return Ok(None);
    }
    let src = SourceFile::read(&path)?;
    let doc = k::parse(&src)?;
    let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let mut found = None;
    for node in doc.nodes() {
        match k::name(node) {
            "remote" if found.is_none() => found = Some(parse_remote_node(&src, node, &dir)?),
            "remote" => {
                return Err(Diag::input("E-REMOTE", "a remote file names one remote")
                    .at(&src, k::name_span(node), "second one")
                    .into());
            }
            _ => return Err(k::unknown_node(&src, node, "a remote file", &["remote"]).into()),
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_their_kind() {
        let base = Path::new("/exp");
        let folder = RemoteDecl::parse("shared/cache", base).unwrap();
        assert_eq!(
            folder.location,
            RemoteLocation::Folder("/exp/shared/cache".into())
        );
        let file = RemoteDecl::parse("file:///mnt/team", base).unwrap();
        assert_eq!(file.location, RemoteLocation::Folder("/mnt/team".into()));
        let s3 = RemoteDecl::parse("s3://team-bucket/efrlhf/runs/", base).unwrap();
        assert_eq!(
            s3.location,
            RemoteLocation::S3 {
                bucket: "team-bucket".into(),
                prefix: "efrlhf/runs".into()
            }
        );
        assert_eq!(s3.display(), "s3://team-bucket/efrlhf/runs");
        assert!(RemoteDecl::parse("s3://Team_Bucket", base).is_err());
        assert!(
            RemoteDecl::parse("gs://bucket", base)
                .unwrap_err()
                .contains("endpoint")
        );
    }

    #[test]
    fn http_credentials_are_kept_apart_and_never_shown() {
        let d = RemoteDecl::parse(
            "https://ci:s%40cret@cache.example:8080/efrlhf/",
            Path::new("/"),
        )
        .unwrap();
        assert_eq!(
            d.location,
            RemoteLocation::Http {
                url: "https://cache.example:8080/efrlhf".into()
            }
        );
        assert_eq!(d.http_auth, Some(("ci".into(), "s@cret".into())));
        assert!(!d.display().contains("cret"));
        assert!(!format!("{d:?}").contains("cret"));
        assert_eq!(redact("http://a:b@h/x"), "http://h/x");
    }
}
