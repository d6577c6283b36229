//! The experiment language: KDL text -> typed declarations with spans, and
//! stage-kind manifests -> the registry of kinds.
//!
//! Everything here is pure: it reads files and returns values or diagnostics
//! that point at `file:line:column`.

mod experiment;
pub(crate) mod kdl_util;
mod limits;
mod manifest;
mod overrides;
mod remote;
mod requests;
mod tracking;
pub mod value;

pub use experiment::{
    Experiment, InputDecl, ParamAssign, RESERVED_STAGE_CHILDREN, StageDecl, SweepDecl, VaryDecl,
    load_experiment,
};
#[cfg(test)]
pub(crate) use manifest::ParamSpec;
pub use manifest::{Exec, InputRole, Manifest, Registry};
pub use overrides::{apply_sets, glob_set};
pub use remote::{RemoteDecl, RemoteLocation, load_remote_config, redact};
pub use requests::{Requests, parse_requests};
pub use tracking::{TrackTarget, parse_track_flags};
pub use value::{Metrics, ParamType, Value};
