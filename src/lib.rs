//! efrlhf: declarative, incremental RLHF experiments.
//!
//! An experiment (`experiments/*.kdl`) is a graph of stages. The flow:
//!
//! ```text
//! dsl    KDL text + stage-kind manifests  -> Experiment, Registry (with spans)
//! graph  validation, sweep expansion      -> Pipeline (a petgraph DAG)
//! exec   plan: keys against the cache     -> Plan (cached / run + why)
//!        run: scheduler, workers, events  -> results in the cache
//! cache  keys (blake3), artifact store, sled index, verify, gc
//! stages built-in stage kinds (one module each, one table)
//! report tables for `show` and `cache ls`
//! ops    one function per command; cli parses and prints
//! ```
//!
//! A stage's result is reused when its key (kind, parameters, input
//! *output* digests, seed, backend class) is stored; see `cache::key`.

pub(crate) mod cache;
pub mod cli;
pub(crate) mod dsl;
pub(crate) mod error;
pub(crate) mod exec;
pub(crate) mod graph;
pub(crate) mod hub;
pub mod ml;
pub(crate) mod ops;
pub(crate) mod report;
pub mod rng;
pub mod stages;
pub(crate) mod stats;
pub mod text;
