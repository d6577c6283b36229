//! What the benchmark examples share: the process's peak memory, and the
//! visitor that initialises burn's lazy parameters before anything is timed.

use burn::module::{ModuleVisitor, Param};
use burn::tensor::Tensor;

/// Peak resident memory of this process (`VmHWM`), in MiB.
pub fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<f64>().ok())
            })
        })
        .map(|kib| kib / 1024.0)
        .unwrap_or(0.0)
}

/// Reads every parameter once: burn initialises a parameter when it is
/// first read, and PyTorch in its constructor, so no phase should time it.
pub struct Materialise;

impl ModuleVisitor for Materialise {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let _ = param.val();
    }
}
