//! An S3-compatible remote (AWS, MinIO, R2, Ceph, GCS's S3 mode): requests
//! signed as presigned URLs (SigV4, by rusty-s3) and sent over ureq. The
//! commit point is a `PutObject` with `If-None-Match: *` (412 where the key
//! exists). A file larger than one part (16 MiB; `$EFRLHF_S3_PART_MIB`, at least 5) goes
//! up as a multipart upload, which S3 needs above 5 GB; the object appears
//! only when the upload completes. Keys follow the AWS credential chain
//! ([`super::aws_keys`]) and are never part of a message.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use rusty_s3::{Bucket, S3Action, UrlStyle};

use super::aws_keys::{Keys, aws_config, env};
use super::http::{Body, Http, copy_body, status_error};
use super::store::{ObjectStore, StoreError};
use crate::dsl::RemoteDecl;

/// How long a signed URL stays valid (a slow upload must start within it).
const SIGNED_FOR: Duration = Duration::from_secs(3600);

/// S3 takes at most this many parts in one upload.
const MAX_PARTS: u64 = 10_000;

/// The size of a multipart upload's parts (and the size above which one is used).
fn part_size() -> u64 {
    let mib = std::env::var("EFRLHF_S3_PART_MIB")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        // S3 refuses parts under 5 MiB (but the last).
        .map(|m| m.max(5))
        .unwrap_or(16);
    mib << 20
}

pub struct S3Store {
    bucket: Bucket,
    keys: Keys,
    prefix: String,
    http: Http,
    /// `s3://bucket/prefix`, for naming objects in messages.
    shown: String,
}

impl S3Store {
    pub fn new(decl: &RemoteDecl, bucket: &str, prefix: &str) -> Result<S3Store, String> {
        let profile = decl
            .profile
            .clone()
            .or_else(|| env("AWS_PROFILE"))
            .unwrap_or_else(|| "default".into());
        let config = aws_config(&profile);
        let region = decl
            .region
            .clone()
            .or_else(|| env("AWS_REGION"))
            .or_else(|| env("AWS_DEFAULT_REGION"))
            .or_else(|| config.get("region").cloned())
            .unwrap_or_else(|| "us-east-1".into());
        let custom = decl
            .endpoint
            .clone()
            .or_else(|| env("AWS_ENDPOINT_URL_S3"))
            .or_else(|| env("AWS_ENDPOINT_URL"))
            .or_else(|| config.get("endpoint_url").cloned());
        // Other services address buckets by path; AWS by host, unless the name has dots.
        let (endpoint, style) = match custom {
            Some(e) => (e, UrlStyle::Path),
            None if bucket.contains('.') => {
                (format!("https://s3.{region}.amazonaws.com"), UrlStyle::Path)
            }
            None => (
                format!("https://s3.{region}.amazonaws.com"),
                UrlStyle::VirtualHost,
            ),
        };
        let url = url::Url::parse(&endpoint)
            .map_err(|e| format!("endpoint `{}`: {e}", crate::dsl::redact(&endpoint)))?;
        let bucket_handle = Bucket::new(url, style, bucket.to_string(), region).map_err(|e| {
            format!(
                "bucket `{bucket}` at `{}`: {e}",
                crate::dsl::redact(&endpoint)
            )
        })?;
        Ok(S3Store {
            bucket: bucket_handle,
            keys: Keys::find(&profile, &config),
            prefix: prefix.to_string(),
            http: Http::new(),
            shown: match prefix {
                "" => format!("s3://{bucket}"),
                p => format!("s3://{bucket}/{p}"),
            },
        })
    }

    fn key(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}/{name}", self.prefix)
        }
    }

    fn shown(&self, name: &str) -> String {
        format!("{}/{name}", self.shown)
    }

    /// A failure status as an error, with S3's own code where it sent one.
    fn failure(&self, name: &str, reply: super::http::Reply) -> StoreError {
        let status = reply.status().as_u16();
        let code = reply
            .into_body()
            .read_to_string()
            .ok()
            .and_then(|xml| between(&xml, "<Code>", "</Code>").map(str::to_string));
        let mut e = status_error(&self.shown(name), status, "S3");
        if let Some(code) = code {
            e.message.push_str(&format!(" ({code})"));
            if code == "NoSuchBucket" {
                e.message
                    .push_str(": create the bucket first (`aws s3 mb s3://BUCKET`)");
            }
            if matches!(
                code.as_str(),
                "InvalidAccessKeyId" | "SignatureDoesNotMatch" | "AccessDenied"
            ) && self.keys.none()
            {
                e.message.push_str(
                    ": no credentials were found (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, a profile of ~/.aws/credentials, a container's or an instance's role)",
                );
            }
        }
        e
    }

    fn send(
        &self,
        name: &str,
        method: &str,
        url: url::Url,
        headers: &[(&str, &str)],
        body: Body<'_>,
    ) -> Result<super::http::Reply, StoreError> {
        self.http
            .send(&self.shown(name), method, url.as_str(), headers, body)
    }
}

impl S3Store {
    /// Uploads a large file in parts; an upload that fails is aborted (a
    /// killed one leaves parts S3's lifecycle rules remove, never an object).
    fn put_multipart(&self, name: &str, src: &Path, size: u64) -> Result<(), StoreError> {
        let part = part_size().max(size.div_ceil(MAX_PARTS));
        let key = self.key(name);
        let keys = self.keys.current();
        let creds = keys.as_ref();
        let url = self
            .bucket
            .create_multipart_upload(creds, &key)
            .sign(SIGNED_FOR);
        let reply = self.send(name, "POST", url, &[], Body::None)?;
        if !reply.status().is_success() {
            return Err(self.failure(name, reply));
        }
        let text = self.text(name, reply)?;
        let created =
            rusty_s3::actions::CreateMultipartUpload::parse_response(&text).map_err(|e| {
                StoreError::new(format!(
                    "{}: S3's reply cannot be read: {e}",
                    self.shown(name)
                ))
            })?;
        let id = created.upload_id().to_string();
        let done = self
            .upload_parts(name, &key, &id, src, (size, part))
            .and_then(|etags| self.complete(name, &key, &id, &etags));
        if done.is_err() {
            let url = self
                .bucket
                .abort_multipart_upload(creds, &key, &id)
                .sign(SIGNED_FOR);
            let _ = self.send(name, "DELETE", url, &[], Body::None);
        }
        done
    }

    /// Sends the file's parts in order; returns their ETags.
    fn upload_parts(
        &self,
        name: &str,
        key: &str,
        id: &str,
        src: &Path,
        (size, part): (u64, u64),
    ) -> Result<Vec<String>, StoreError> {
        use std::io::Read;
        let io =
            |e: std::io::Error| StoreError::new(format!("cannot read `{}`: {e}", src.display()));
        let mut file = std::fs::File::open(src).map_err(io)?;
        let mut buf = vec![0u8; part as usize];
        let mut etags = Vec::new();
        let mut offset = 0;
        while offset < size {
            let n = part.min(size - offset) as usize;
            file.read_exact(&mut buf[..n]).map_err(io)?;
            let number = u16::try_from(etags.len() + 1)
                .map_err(|_| StoreError::new("too many parts for one upload"))?;
            let url = self
                .bucket
                .upload_part(self.keys.current().as_ref(), key, number, id)
                .sign(SIGNED_FOR);
            let reply = self.send(name, "PUT", url, &[], Body::Bytes(&buf[..n]))?;
            if !reply.status().is_success() {
                return Err(self.failure(name, reply));
            }
            let etag = reply
                .headers()
                .get("etag")
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| {
                    StoreError::new(format!("{}: a part's reply has no ETag", self.shown(name)))
                })?;
            etags.push(etag.to_string());
            offset += n as u64;
        }
        Ok(etags)
    }

    /// Completes an upload: the object appears whole, or not at all.
    fn complete(
        &self,
        name: &str,
        key: &str,
        id: &str,
        etags: &[String],
    ) -> Result<(), StoreError> {
        let keys = self.keys.current();
        let action = self.bucket.complete_multipart_upload(
            keys.as_ref(),
            key,
            id,
            etags.iter().map(String::as_str),
        );
        let url = action.sign(SIGNED_FOR);
        let body = action.body();
        let reply = self.send(name, "POST", url, &[], Body::Bytes(body.as_bytes()))?;
        if !reply.status().is_success() {
            return Err(self.failure(name, reply));
        }
        // S3 may answer 200 and put the error in the body.
        let text = self.text(name, reply)?;
        match between(&text, "<Code>", "</Code>") {
            Some(code) if text.contains("<Error>") => Err(StoreError::new(format!(
                "{}: completing the upload failed ({code})",
                self.shown(name)
            ))),
            _ => Ok(()),
        }
    }

    fn text(&self, name: &str, reply: super::http::Reply) -> Result<String, StoreError> {
        reply
            .into_body()
            .read_to_string()
            .map_err(|e| StoreError::new(format!("{}: the reply broke off: {e}", self.shown(name))))
    }
}

impl ObjectStore for S3Store {
    fn get(&self, name: &str, to: &mut dyn Write) -> Result<bool, StoreError> {
        let key = self.key(name);
        let url = self
            .bucket
            .get_object(self.keys.current().as_ref(), &key)
            .sign(SIGNED_FOR);
        let reply = self.send(name, "GET", url, &[], Body::None)?;
        match reply.status().as_u16() {
            200 => copy_body(&self.shown(name), reply, to).map(|_| true),
            404 => {
                // A missing key is an answer; a missing bucket is a mistake.
                let body = reply.into_body().read_to_string().unwrap_or_default();
                if body.contains("NoSuchBucket") {
                    Err(StoreError::new(format!(
                        "{}: S3 answered HTTP 404 (NoSuchBucket): create the bucket first (`aws s3 mb s3://BUCKET`)",
                        self.shown(name)
                    )))
                } else {
                    Ok(false)
                }
            }
            _ => Err(self.failure(name, reply)),
        }
    }

    fn exists(&self, name: &str) -> Result<bool, StoreError> {
        let key = self.key(name);
        let url = self
            .bucket
            .head_object(self.keys.current().as_ref(), &key)
            .sign(SIGNED_FOR);
        let reply = self.send(name, "HEAD", url, &[], Body::None)?;
        match reply.status().as_u16() {
            200..=299 => Ok(true),
            404 => Ok(false),
            _ => Err(self.failure(name, reply)),
        }
    }

    fn put_file(&self, name: &str, src: &Path) -> Result<(), StoreError> {
        let size = std::fs::metadata(src)
            .map_err(|e| StoreError::new(format!("cannot read `{}`: {e}", src.display())))?
            .len();
        if size > part_size() {
            return self.put_multipart(name, src, size);
        }
        let key = self.key(name);
        let url = self
            .bucket
            .put_object(self.keys.current().as_ref(), &key)
            .sign(SIGNED_FOR);
        let reply = self.send(name, "PUT", url, &[], Body::File(src))?;
        match reply.status().as_u16() {
            200..=299 => Ok(()),
            _ => Err(self.failure(name, reply)),
        }
    }

    fn create(&self, name: &str, bytes: &[u8]) -> Result<bool, StoreError> {
        let key = self.key(name);
        let url = self
            .bucket
            .put_object(self.keys.current().as_ref(), &key)
            .sign(SIGNED_FOR);
        let headers = [("If-None-Match", "*"), ("Content-Type", "application/json")];
        let reply = self.send(name, "PUT", url, &headers, Body::Bytes(bytes))?;
        match reply.status().as_u16() {
            200..=299 => Ok(true),
            // 409: a concurrent conditional write of the same key is in flight.
            412 | 409 => Ok(false),
            _ => Err(self.failure(name, reply)),
        }
    }

    fn list(&self, prefix: &str) -> Result<Option<Vec<String>>, StoreError> {
        let full = self.key(prefix);
        let strip = if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        };
        let mut names = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let keys = self.keys.current();
            let mut action = self.bucket.list_objects_v2(keys.as_ref());
            action.with_prefix(full.as_str());
            if let Some(t) = &token {
                action.with_continuation_token(t.as_str());
            }
            let url = action.sign(SIGNED_FOR);
            let reply = self.send(prefix, "GET", url, &[], Body::None)?;
            if reply.status().as_u16() != 200 {
                return Err(self.failure(prefix, reply));
            }
            let text = reply.into_body().read_to_string().map_err(|e| {
                StoreError::new(format!("{}: listing broke off: {e}", self.shown(prefix)))
            })?;
            let page = rusty_s3::actions::ListObjectsV2::parse_response(&text).map_err(|e| {
                StoreError::new(format!(
                    "{}: a listing S3 sent cannot be read: {e}",
                    self.shown(prefix)
                ))
            })?;
            names.extend(
                page.contents
                    .into_iter()
                    .filter_map(|c| c.key.strip_prefix(&strip).map(str::to_string)),
            );
            match page.next_continuation_token {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        Ok(Some(names))
    }
}

fn between<'a>(text: &'a str, open: &str, close: &str) -> Option<&'a str> {
    let start = text.find(open)? + open.len();
    let len = text[start..].find(close)?;
    Some(&text[start..start + len])
}
