//! Where a stage's computation happens: in a thread of this process (the
//! local executor), or as a job on a Slurm cluster. Both compute from the
//! same [`StageSpec`] and leave the same output folder, which the scheduler
//! then commits; only the waiting differs.

use std::sync::Arc;

use super::events::Event;
use super::slurm::{JobEvent, Slurm};
use super::spec::{StageSpec, execute};
use crate::dsl::{Manifest, Metrics, Requests};

#[derive(Debug, Clone, Default)]
pub enum Executor {
    /// Threads (built-ins) and child processes (programs) of `efrlhf run`.
    #[default]
    Local,
    Slurm(Arc<Slurm>),
}

impl Executor {
    /// Whether stages of `kind` run elsewhere (they then hold no local resources).
    pub fn is_remote(&self, kind: &Manifest) -> bool {
        matches!(self, Executor::Slurm(s) if !s.runs_locally(&kind.name))
    }

    /// Computes plan node `node` from its spec, reporting when it starts.
    pub fn compute(
        &self,
        node: usize,
        kind: &Manifest,
        requests: &Requests,
        spec: &StageSpec,
        notify: &dyn Fn(Event),
        stopped: &dyn Fn() -> bool,
    ) -> Result<Metrics, String> {
        match self {
            Executor::Slurm(s) if !s.runs_locally(&kind.name) => {
                let requests = s.requests(&kind.name, requests);
                let events = |e: JobEvent| match e {
                    JobEvent::Queued(job) => notify(Event::Queued { node, job }),
                    JobEvent::Running { job, host } => notify(Event::Start {
                        node,
                        log: spec.log.clone(),
                        job: Some((job, host)),
                    }),
                    JobEvent::Note(message) => notify(Event::Warning { node, message }),
                };
                s.run(spec, &requests, &events, stopped)
            }
            _ => {
                notify(Event::Start {
                    node,
                    log: spec.log.clone(),
                    job: None,
                });
                execute(spec)
            }
        }
    }

    /// Stops whatever this executor started elsewhere (one `scancel`).
    pub fn cancel_all(&self) {
        if let Executor::Slurm(s) = self {
            s.cancel_all();
        }
    }
}
