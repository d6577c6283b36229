//! The experiment language: KDL text -> typed declarations with spans, and
//! stage-kind manifests -> the registry of kinds.
//!
//! Everything here is pure: it reads files and returns values or diagnostics
//! that point at `file:line:column`.

mod experiment;
pub(crate) mod kdl_util;
mod manifest;
pub mod value;

pub use experiment::{
    BACKENDS, Experiment, ParamAssign, RESERVED_STAGE_CHILDREN, StageDecl, SweepDecl, VaryDecl,
    load_experiment, parse_experiment,
};
pub use manifest::{Exec, Manifest, OutputDoc, ParamSpec, Registry, parse_manifest};
pub use value::{Metrics, ParamType, Value};
