//! What a remote cache needs of the place its objects live, and nothing
//! more: read an object, ask whether one exists, store a file, create a
//! small object only where none is (the commit point of a result), list
//! names where the place can. Folders, S3 and HTTP caches implement it.

use std::io::Write;
use std::path::Path;

/// A failed request to a remote.
#[derive(Debug, Clone)]
pub struct StoreError {
    /// What went wrong, without credentials.
    pub message: String,
    /// The remote refused the request (401, 403, a read-only folder).
    pub denied: bool,
}

impl StoreError {
    pub fn new(message: impl Into<String>) -> StoreError {
        StoreError {
            message: message.into(),
            denied: false,
        }
    }

    pub fn denied(message: impl Into<String>) -> StoreError {
        StoreError {
            message: message.into(),
            denied: true,
        }
    }
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Objects named by `/`-separated relative names (`cas/ab/abcd...`).
pub trait ObjectStore: Send + Sync {
    /// Writes the object `name` to `to`; `Ok(false)` when there is none.
    fn get(&self, name: &str, to: &mut dyn Write) -> Result<bool, StoreError>;
    /// Whether the object `name` exists.
    fn exists(&self, name: &str) -> Result<bool, StoreError>;
    /// Stores the file `src` as `name`, whole or not at all (a reader never
    /// sees part of it). Content-addressed names make a replaced object equal.
    fn put_file(&self, name: &str, src: &Path) -> Result<(), StoreError>;
    /// Stores `bytes` as `name` only if nothing is there: `Ok(false)` when
    /// something was (another writer won).
    fn create(&self, name: &str, bytes: &[u8]) -> Result<bool, StoreError>;
    /// Every name below `prefix`, or `None` where the remote cannot list (a plain HTTP cache).
    fn list(&self, prefix: &str) -> Result<Option<Vec<String>>, StoreError>;
    /// Removes what killed writers left behind, where the remote keeps such things.
    fn tidy(&self) {}
}

/// An object read whole into memory (manifests: small).
pub fn get_bytes(store: &dyn ObjectStore, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
    let mut buf = Vec::new();
    Ok(store.get(name, &mut buf)?.then_some(buf))
}
