//! Models, tokenizers and datasets from the Hugging Face Hub, by name.
//!
//! A `path` parameter may be an `hf://` URI ([`uri`]). Before any key is
//! computed, the planner resolves it ([`resolve`]) to a content identity:
//! the commit its revision is at and the content hashes the Hub lists for
//! the files it selects, so the cache never re-reads those bytes and a moved
//! branch is a typed reason to rerun. Before a stage that reads it runs, the
//! files are brought into the Hub cache ([`fetch`]), in the layout Python's
//! `huggingface_hub` uses ([`layout`]), and the stage is handed the
//! snapshot's local path. Settings come from the same environment variables
//! as Python's ([`config`]); the wire protocol is in [`http`].

pub mod config;
pub mod fetch;
pub mod http;
pub mod layout;
pub mod resolve;
pub mod uri;

pub use config::HubConfig;
pub use fetch::{Missing, Transfer, fetch_all, missing};
pub use http::{HubError, RemoteFile};
pub use resolve::{Hub, HubIdentity, Provenance, Resolution, identity, select};
pub use uri::{HubUri, is_hub};
