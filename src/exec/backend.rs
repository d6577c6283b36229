//! Which compute backend a run uses, and its class in stage keys.

use crate::error::Diag;

/// The backend chosen for a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// What the user asked for (`auto`, `cpu`, `wgpu`).
    pub requested: String,
    /// The class recorded in keys of backend-sensitive kinds: `cpu` or `gpu`.
    pub class: &'static str,
    /// One line saying what was chosen and why.
    pub note: String,
}

/// Resolves `--backend` (or the experiment's `backend`, or `auto`).
pub fn resolve_backend(requested: Option<&str>) -> Result<Backend, Diag> {
    let requested = requested.unwrap_or("auto").to_string();
    match requested.as_str() {
        "cpu" => Ok(Backend { requested, class: "cpu", note: "backend: cpu (requested)".into() }),
        "auto" => Ok(Backend {
            requested,
            class: "cpu",
            note: "backend: cpu (auto: this build has no GPU support; build with `--features gpu` for wgpu)".into(),
        }),
        "wgpu" => Err(Diag::env("E-BACKEND", "backend `wgpu` is not available in this build")
            .with_help("rebuild with `cargo build --release --features gpu`, or use `--backend cpu`")),
        other => Err(Diag::input("E-BACKEND", format!("unknown backend `{other}`")).with_help("use auto, cpu or wgpu")),
    }
}
