//! The experiment as a DAG: validation against the kinds' manifests, cycle
//! detection, sweep expansion into variants, a topological order, and export
//! to DOT and Mermaid.
//!
//! Planning is pure: no cache, no threads. A sweep is one axis; the `vary`
//! lines inside one sweep move together (zipped), and several sweeps multiply.
//! A stage gets one variant per combination of the axes that touch it or any
//! of its ancestors, so stages a sweep does not reach exist once.

mod build;
mod export;
mod roles;
mod sweep;

pub use build::{Node, Pipeline, build};
pub use export::{to_dot, to_mermaid};
