//! A plain HTTP cache: `GET`, `HEAD` and `PUT` of `<base>/<name>`, as
//! WebDAV servers, nginx's `dav_methods PUT` and sccache's WebDAV mode
//! speak it. The commit point is a `PUT` with `If-None-Match: *` (a server
//! that honours it answers 412 where the name exists); such a cache cannot
//! list. Credentials come from the URL (`https://user:password@host/...`,
//! sent as Basic) or `$EFRLHF_REMOTE_TOKEN` (sent as Bearer); neither is
//! ever part of a message. The S3 remote sends its signed requests through
//! [`Http`] too.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use super::store::{ObjectStore, StoreError};

/// Tries of a request that failed to connect or got a 5xx or 429.
const ATTEMPTS: u32 = 4;

/// An agent and the retry policy both HTTP remotes use.
pub struct Http {
    agent: ureq::Agent,
}

/// One answer: the status and, for a success with a body, the body.
pub type Reply = ureq::http::Response<ureq::Body>;

/// What a request sends.
#[derive(Clone, Copy)]
pub enum Body<'a> {
    None,
    /// A file, streamed with its length.
    File(&'a Path),
    Bytes(&'a [u8]),
}

impl Http {
    pub fn new() -> Http {
        let agent = ureq::Agent::config_builder()
            .timeout_connect(Some(Duration::from_secs(20)))
            .timeout_recv_response(Some(Duration::from_secs(120)))
            .timeout_per_read(Some(Duration::from_secs(120)))
            .http_status_as_error(false)
            .user_agent(format!("efrlhf/{}", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Http { agent }
    }

    /// Sends `method url` with `headers` and `body`, again after a
    /// connection error, a 5xx or a 429 (with a growing pause). `shown`
    /// names it in messages (never the URL, which may be signed).
    pub fn send(
        &self,
        shown: &str,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Body<'_>,
    ) -> Result<Reply, StoreError> {
        let once = || {
            let mut req = ureq::http::Request::builder().method(method).uri(url);
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            match body {
                Body::File(path) => {
                    let file = std::fs::File::open(path)?;
                    self.agent.run(req.body(file).map_err(ureq::Error::from)?)
                }
                Body::Bytes(b) => self
                    .agent
                    .run(req.body(b.to_vec()).map_err(ureq::Error::from)?),
                Body::None => self.agent.run(req.body(()).map_err(ureq::Error::from)?),
            }
        };
        let mut last = String::new();
        for n in 0..ATTEMPTS {
            if n > 0 {
                std::thread::sleep(Duration::from_millis(250 << n));
            }
            match once() {
                Ok(r) if r.status().is_server_error() || r.status().as_u16() == 429 => {
                    last = format!("HTTP {}", r.status().as_u16());
                }
                Ok(r) => return Ok(r),
                Err(e) => last = scrub_error(&e),
            }
        }
        Err(StoreError::new(format!(
            "{shown}: {last} ({ATTEMPTS} attempts)"
        )))
    }
}

/// A ureq error's text without any URL in it (signed URLs carry an access key id).
fn scrub_error(e: &ureq::Error) -> String {
    let text = e.to_string();
    text.split_whitespace()
        .map(|w| if w.contains("://") { "<url>" } else { w })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A failure status as a store error: 401 and 403 are refusals.
pub fn status_error(shown: &str, status: u16, what: &str) -> StoreError {
    let message = format!("{shown}: {what} answered HTTP {status}");
    if status == 401 || status == 403 {
        StoreError::denied(message)
    } else {
        StoreError::new(message)
    }
}

/// Copies a successful reply's body to `to`.
pub fn copy_body(shown: &str, reply: Reply, to: &mut dyn Write) -> Result<(), StoreError> {
    let mut body = reply.into_body();
    std::io::copy(&mut body.as_reader(), to)
        .map(|_| ())
        .map_err(|e| StoreError::new(format!("{shown}: the download broke off: {e}")))
}

pub struct HttpStore {
    base: String,
    http: Http,
    /// The `Authorization` header's value.
    auth: Option<String>,
}

impl HttpStore {
    pub fn new(base: &str, basic: Option<&(String, String)>) -> HttpStore {
        let auth = match basic {
            Some((user, password)) => Some(format!(
                "Basic {}",
                base64(format!("{user}:{password}").as_bytes())
            )),
            None => std::env::var("EFRLHF_REMOTE_TOKEN")
                .ok()
                .filter(|t| !t.is_empty())
                .map(|t| format!("Bearer {t}")),
        };
        HttpStore {
            base: base.to_string(),
            http: Http::new(),
            auth,
        }
    }

    fn url(&self, name: &str) -> String {
        format!("{}/{name}", self.base)
    }

    fn request(
        &self,
        method: &str,
        name: &str,
        headers: &[(&str, &str)],
        body: Body<'_>,
    ) -> Result<Reply, StoreError> {
        let url = self.url(name);
        let mut all: Vec<(&str, &str)> = self
            .auth
            .as_deref()
            .map(|a| vec![("Authorization", a)])
            .unwrap_or_default();
        all.extend_from_slice(headers);
        self.http.send(&url, method, &url, &all, body)
    }
}

impl ObjectStore for HttpStore {
    fn get(&self, name: &str, to: &mut dyn Write) -> Result<bool, StoreError> {
        let url = self.url(name);
        let reply = self.request("GET", name, &[], Body::None)?;
        match reply.status().as_u16() {
            200 => copy_body(&url, reply, to).map(|_| true),
            404 => Ok(false),
            s => Err(status_error(&url, s, "the cache")),
        }
    }

    fn exists(&self, name: &str) -> Result<bool, StoreError> {
        let url = self.url(name);
        match self
            .request("HEAD", name, &[], Body::None)?
            .status()
            .as_u16()
        {
            200..=299 => Ok(true),
            404 => Ok(false),
            s => Err(status_error(&url, s, "the cache")),
        }
    }

    fn put_file(&self, name: &str, src: &Path) -> Result<(), StoreError> {
        let url = self.url(name);
        match self
            .request("PUT", name, &[], Body::File(src))?
            .status()
            .as_u16()
        {
            200..=299 => Ok(()),
            s => Err(status_error(&url, s, "the cache")),
        }
    }

    fn create(&self, name: &str, bytes: &[u8]) -> Result<bool, StoreError> {
        let url = self.url(name);
        let headers = [("If-None-Match", "*"), ("Content-Type", "application/json")];
        match self
            .request("PUT", name, &headers, Body::Bytes(bytes))?
            .status()
            .as_u16()
        {
            200..=299 => Ok(true),
            412 => Ok(false),
            s => Err(status_error(&url, s, "the cache")),
        }
    }

    fn list(&self, _prefix: &str) -> Result<Option<Vec<String>>, StoreError> {
        Ok(None)
    }
}

/// Standard base64 with padding (Basic credentials).
fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_as_rfc_4648() {
        // RFC 4648, section 10.
        for (plain, coded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(super::base64(plain.as_bytes()), coded);
        }
    }
}
