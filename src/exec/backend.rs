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
        // auto takes a real GPU; a software rasterizer (llvmpipe) is slower than the CPU backend.
        "auto" => Ok(match crate::ml::gpu() {
            Ok(g) if !g.software => Backend {
                requested,
                class: "gpu",
                note: format!("backend: wgpu on {} (auto)", g.adapter),
            },
            Ok(g) => Backend {
                requested,
                class: "cpu",
                note: format!(
                    "backend: cpu (auto: the only adapter, {}, is a software renderer; `--backend wgpu` forces it)",
                    g.adapter
                ),
            },
            Err(e) => Backend {
                requested,
                class: "cpu",
                note: format!("backend: cpu (auto: {e})"),
            },
        }),
        "wgpu" => match crate::ml::gpu() {
            Ok(g) => Ok(Backend {
                requested,
                class: "gpu",
                note: format!("backend: wgpu on {} (requested)", g.adapter),
            }),
            Err(e) => Err(Diag::env("E-BACKEND", format!("backend `wgpu` is not available: {e}"))
                .with_help(if cfg!(feature = "gpu") {
                    "install a Vulkan, Metal or DX12 driver (on Linux without a GPU: `apt-get install mesa-vulkan-drivers`), or use `--backend cpu`"
                } else {
                    "rebuild with `cargo build --release --features gpu`, or use `--backend cpu`"
                })),
        },
        other => Err(Diag::input("E-BACKEND", format!("unknown backend `{other}`")).with_help("use auto, cpu or wgpu")),
    }
}
