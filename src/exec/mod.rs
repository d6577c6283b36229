//! Deciding what to compute and computing it.
//!
//! [`plan`] is pure with respect to results: it reads the index and stats
//! artifacts, and returns a typed status per stage ("cached", or "run"
//! with a [`Reason`]) that `plan`, `explain` and `show` all read.
//! [`run`] is the one place that starts threads and processes: a scheduler
//! with `--jobs N` workers, early cut-off (a stage whose inputs were
//! recomputed to identical bytes is not rerun), per-key claims so concurrent
//! runs compute each key once, and events for an [`EventSink`]. Nothing here prints.

mod backend;
mod events;
mod executor;
mod hub_plan;
mod plan;
mod run;
pub mod slurm;
mod spec;
mod subprocess;
mod supervise;

pub use backend::resolve_backend;
pub use events::{DownloadEvent, Event, EventSink, RunEvent, signal_name};
pub use executor::Executor;
pub use hub_plan::{human_bytes, missing_list};
pub use plan::{ClassOf, Plan, PlanOptions, Reason, ReasonItem, Status, plan};
pub use run::{RunOptions, RunSummary, run};
pub use spec::exec_stage;
pub use supervise::supervise;
