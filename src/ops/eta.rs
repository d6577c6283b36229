//! How long the rest of a run should take, from the stored durations of
//! earlier runs: each stage's last recorded time (its outdated result's),
//! else the mean over the same stage's other variants.
//! The estimate is the longer of the critical path through what is left and
//! the work left spread over the jobs.

use std::collections::BTreeMap;

use crate::exec::Plan;

/// Per-stage durations and the graph's shape, for the run-level ETA.
pub struct RunEta {
    seconds: Vec<Option<f64>>,
    inputs: Vec<Vec<usize>>,
    jobs: usize,
}

impl RunEta {
    pub fn new(plan: &Plan, jobs: usize) -> RunEta {
        let nodes = &plan.pipeline.nodes;
        let own: Vec<Option<f64>> = (0..nodes.len())
            .map(|i| plan.previous[i].as_ref().map(|r| r.seconds))
            .collect();
        // Each stage's mean over the variants that have a time of their own.
        let mut by_stage: BTreeMap<&str, (f64, usize)> = BTreeMap::new();
        for (node, secs) in nodes.iter().zip(&own) {
            if let Some(secs) = secs {
                let (sum, n) = by_stage.entry(node.stage.as_str()).or_default();
                *sum += secs;
                *n += 1;
            }
        }
        let seconds = nodes
            .iter()
            .zip(&own)
            .map(|(node, secs)| {
                secs.or_else(|| {
                    by_stage
                        .get(node.stage.as_str())
                        .map(|(sum, n)| sum / *n as f64)
                })
            })
            .collect();
        RunEta {
            seconds,
            inputs: nodes.iter().map(|n| n.inputs.clone()).collect(),
            jobs: jobs.max(1),
        }
    }

    /// What one stage took last time, if anything is known.
    pub fn of(&self, node: usize) -> Option<f64> {
        self.seconds.get(node).copied().flatten()
    }

    /// Seconds until the stages in `left` (node, seconds it has run so far;
    /// in topological order) are done, or `None` when one has no history.
    pub fn remaining(&self, left: &[(usize, f64)]) -> Option<f64> {
        let mut finish: Vec<f64> = vec![0.0; self.seconds.len()];
        let (mut path, mut work) = (0.0_f64, 0.0);
        for &(n, spent) in left {
            let w = (self.of(n)? - spent).max(0.0);
            let ready = self.inputs[n]
                .iter()
                .map(|&i| finish[i])
                .fold(0.0, f64::max);
            finish[n] = ready + w;
            path = path.max(finish[n]);
            work += w;
        }
        Some(path.max(work / self.jobs as f64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eta(seconds: &[f64], inputs: &[&[usize]], jobs: usize) -> RunEta {
        RunEta {
            seconds: seconds.iter().map(|&s| Some(s)).collect(),
            inputs: inputs.iter().map(|i| i.to_vec()).collect(),
            jobs,
        }
    }

    #[test]
    fn a_chain_adds_up_and_parallel_branches_share_the_jobs() {
        // a -> b -> c: 10 + 20 + 30, whatever the jobs.
        let chain = eta(&[10.0, 20.0, 30.0], &[&[], &[0], &[1]], 4);
        assert_eq!(chain.remaining(&[(0, 0.0), (1, 0.0), (2, 0.0)]), Some(60.0));
        // a running for 4 s of its 10.
        assert_eq!(chain.remaining(&[(0, 4.0), (1, 0.0), (2, 0.0)]), Some(56.0));
        // a -> {b, c, d} of 30 s each: 2 jobs need 10 + 45, 4 jobs 10 + 30.
        let fan = |jobs| eta(&[10.0, 30.0, 30.0, 30.0], &[&[], &[0], &[0], &[0]], jobs);
        let all = [(0, 0.0), (1, 0.0), (2, 0.0), (3, 0.0)];
        assert_eq!(fan(2).remaining(&all), Some(50.0));
        assert_eq!(fan(4).remaining(&all), Some(40.0));
        // Past its estimate, a running stage counts as about to finish.
        assert_eq!(chain.remaining(&[(2, 99.0)]), Some(0.0));
    }

    #[test]
    fn a_stage_without_history_leaves_the_eta_unknown() {
        let mut e = eta(&[10.0, 20.0], &[&[], &[0]], 1);
        e.seconds[1] = None;
        assert_eq!(e.remaining(&[(0, 0.0)]), Some(10.0));
        assert_eq!(e.remaining(&[(0, 0.0), (1, 0.0)]), None);
    }
}
