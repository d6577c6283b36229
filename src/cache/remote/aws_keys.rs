//! Where an S3 remote's keys come from: the AWS credential chain. The
//! sources are tried in this order:
//! 1. `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY` (`AWS_SESSION_TOKEN`);
//! 2. the profile (`profile=`, `$AWS_PROFILE`, `default`) of
//!    `~/.aws/credentials` and `~/.aws/config`;
//! 3. a container's endpoint (`AWS_CONTAINER_CREDENTIALS_FULL_URI` or
//!    `..._RELATIVE_URI`, as ECS, EKS Pod Identity and Fargate set);
//! 4. the instance metadata service (IMDSv2; `AWS_EC2_METADATA_SERVICE_ENDPOINT`,
//!    off with `AWS_EC2_METADATA_DISABLED=true`);
//! 5. none (unsigned requests: a public bucket can be pulled from).
//!
//! Keys from a metadata service expire, so they are fetched again every
//! ten minutes: a push at the end of a day-long run still signs with valid
//! ones. Keys live in memory only.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rusty_s3::Credentials;
use serde::Deserialize;

/// Metadata services hand out keys that stay valid at least this long.
const REFRESH_EVERY: Duration = Duration::from_secs(600);

/// Where the keys come from.
enum Source {
    /// The environment, a profile, or nothing.
    Fixed(Option<Credentials>),
    /// A container's credentials endpoint, with its `Authorization` value.
    Container { url: String, auth: Option<String> },
    /// The instance metadata service at this base URL.
    Instance { endpoint: String },
}

/// The keys an S3 remote signs with.
pub struct Keys {
    source: Source,
    /// Keys from a metadata service, and when they were fetched.
    fetched: Mutex<Option<(Credentials, Instant)>>,
}

/// What the container and instance endpoints answer.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Answer {
    access_key_id: String,
    secret_access_key: String,
    token: Option<String>,
}

impl Keys {
    /// Follows the chain for `profile` (whose `~/.aws/config` section is `config`).
    pub fn find(profile: &str, config: &BTreeMap<String, String>) -> Keys {
        let source = match from_files(profile, config) {
            Some(c) => Source::Fixed(Some(c)),
            None => match container() {
                Some((url, auth)) => Source::Container { url, auth },
                None => instance().unwrap_or(Source::Fixed(None)),
            },
        };
        Keys {
            source,
            fetched: Mutex::new(None),
        }
    }

    /// Whether the chain found no keys at all.
    pub fn none(&self) -> bool {
        matches!(self.source, Source::Fixed(None))
    }

    /// The keys to sign with now (`None`: unsigned).
    pub fn current(&self) -> Option<Credentials> {
        let fetch = || match &self.source {
            Source::Fixed(c) => c.clone(),
            Source::Container { url, auth } => {
                let headers: Vec<(&str, &str)> = auth
                    .as_deref()
                    .map(|a| vec![("Authorization", a)])
                    .unwrap_or_default();
                metadata_get(url, &headers).and_then(|t| parse(&t))
            }
            Source::Instance { endpoint } => instance_keys(endpoint),
        };
        if let Source::Fixed(c) = &self.source {
            return c.clone();
        }
        let Ok(mut slot) = self.fetched.lock() else {
            return fetch();
        };
        if let Some((c, at)) = slot.as_ref()
            && at.elapsed() < REFRESH_EVERY
        {
            return Some(c.clone());
        }
        match fetch() {
            Some(c) => {
                *slot = Some((c.clone(), Instant::now()));
                Some(c)
            }
            // Unreachable for a moment: the keys held are still the best there are.
            None => slot.as_ref().map(|(c, _)| c.clone()),
        }
    }
}

/// A variable's value, where it is set and not empty.
pub fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// The environment's keys, else the profile's in `~/.aws/credentials`, else in `~/.aws/config`.
fn from_files(profile: &str, config: &BTreeMap<String, String>) -> Option<Credentials> {
    if let (Some(key), Some(secret)) = (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
        return Some(with_token(key, secret, env("AWS_SESSION_TOKEN")));
    }
    let creds = env("AWS_SHARED_CREDENTIALS_FILE")
        .map(PathBuf::from)
        .or_else(|| home(".aws/credentials"))
        .map(|f| ini_section(&f, profile))
        .unwrap_or_default();
    [&creds, config].into_iter().find_map(|s| {
        let key = s.get("aws_access_key_id")?.clone();
        let secret = s.get("aws_secret_access_key")?.clone();
        Some(with_token(key, secret, s.get("aws_session_token").cloned()))
    })
}

fn with_token(key: String, secret: String, token: Option<String>) -> Credentials {
    match token {
        Some(t) => Credentials::new_with_token(key, secret, t),
        None => Credentials::new(key, secret),
    }
}

/// A container's credentials endpoint and its authorization, if the environment names one.
fn container() -> Option<(String, Option<String>)> {
    let url = env("AWS_CONTAINER_CREDENTIALS_FULL_URI").or_else(|| {
        env("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
            .map(|rel| format!("http://169.254.170.2{rel}"))
    })?;
    let auth = env("AWS_CONTAINER_AUTHORIZATION_TOKEN").or_else(|| {
        let file = env("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE")?;
        std::fs::read_to_string(file)
            .ok()
            .map(|t| t.trim().to_string())
    });
    Some((url, auth))
}

/// The instance metadata service, if it answers with keys now.
fn instance() -> Option<Source> {
    if env("AWS_EC2_METADATA_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return None;
    }
    let endpoint = env("AWS_EC2_METADATA_SERVICE_ENDPOINT")
        .unwrap_or_else(|| "http://169.254.169.254".into())
        .trim_end_matches('/')
        .to_string();
    instance_keys(&endpoint)?;
    Some(Source::Instance { endpoint })
}

/// IMDSv2: a session token, the instance role's name, then its keys.
fn instance_keys(endpoint: &str) -> Option<Credentials> {
    let token = metadata_call(
        "PUT",
        &format!("{endpoint}/latest/api/token"),
        &[("X-aws-ec2-metadata-token-ttl-seconds", "21600")],
    )?;
    let auth = [("X-aws-ec2-metadata-token", token.trim())];
    let roles = format!("{endpoint}/latest/meta-data/iam/security-credentials/");
    let role = metadata_get(&roles, &auth)?;
    let role = role.lines().next()?.trim();
    parse(&metadata_get(&format!("{roles}{role}"), &auth)?)
}

fn parse(text: &str) -> Option<Credentials> {
    let a: Answer = serde_json::from_str(text).ok()?;
    Some(with_token(a.access_key_id, a.secret_access_key, a.token))
}

fn metadata_get(url: &str, headers: &[(&str, &str)]) -> Option<String> {
    metadata_call("GET", url, headers)
}

/// One short request to a metadata service (which answers at once, or is not there).
fn metadata_call(method: &str, url: &str, headers: &[(&str, &str)]) -> Option<String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(2)))
        .timeout_connect(Some(Duration::from_secs(1)))
        .http_status_as_error(false)
        .build()
        .into();
    let mut req = ureq::http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let reply = agent.run(req.body(()).ok()?).ok()?;
    if !reply.status().is_success() {
        return None;
    }
    reply.into_body().read_to_string().ok()
}

/// The profile's settings in `~/.aws/config` (`[default]` or `[profile NAME]`).
pub fn aws_config(profile: &str) -> BTreeMap<String, String> {
    let Some(file) = env("AWS_CONFIG_FILE")
        .map(PathBuf::from)
        .or_else(|| home(".aws/config"))
    else {
        return BTreeMap::new();
    };
    let section = if profile == "default" {
        "default".to_string()
    } else {
        format!("profile {profile}")
    };
    ini_section(&file, &section)
}

fn home(rel: &str) -> Option<PathBuf> {
    std::env::var_os("HOME").map(|h| Path::new(&h).join(rel))
}

/// `key = value` lines of one `[section]` of an INI file (empty when absent).
fn ini_section(path: &Path, section: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let Ok(text) = std::fs::read_to_string(path) else {
        return out;
    };
    let mut inside = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') && line.ends_with(']') {
            inside = line[1..line.len() - 1].trim() == section;
        } else if inside
            && !line.starts_with(['#', ';'])
            && let Some((k, v)) = line.split_once('=')
        {
            out.insert(k.trim().to_string(), v.trim().to_string());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_are_read_from_ini_sections() {
        let dir = std::env::temp_dir().join(format!("efrlhf-ini-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("config");
        std::fs::write(
            &f,
            "[default]\nregion = eu-west-1\n\n[profile team]\n# a comment\nregion=us-west-2\nendpoint_url = http://127.0.0.1:9000\n",
        )
        .unwrap();
        assert_eq!(ini_section(&f, "default")["region"], "eu-west-1");
        let team = ini_section(&f, "profile team");
        assert_eq!(team["region"], "us-west-2");
        assert_eq!(team["endpoint_url"], "http://127.0.0.1:9000");
        assert!(ini_section(&f, "profile none").is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
