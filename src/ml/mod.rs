//! Models and training loops on burn.
//!
//! burn 0.22 has one tensor type whose backend is chosen at run time by a
//! `Device`; the CPU device is burn-flex. Parameters are created on the
//! autodiff device to train, and used through `valid()` to evaluate.

pub mod alloc;
pub mod bart;
pub mod beam;
pub mod bt;
pub mod causal;
pub(crate) mod checkpoint;
pub mod decoding;
pub mod dpo;
pub mod fused;
pub mod grpo;
pub mod grpo_step;
pub mod lm;
pub mod lora;
pub mod peft;
pub mod phi;
pub mod ppo;
pub mod precision;
pub mod recompute;
pub mod rlhf;
pub mod schedule;
pub mod text_rm;
pub mod train;

use burn::tensor::{Device, Tensor, TensorData};

/// The device for a backend class (`cpu`; `gpu` when built with GPU support), seeded.
pub fn device(backend: Option<&str>, seed: u64) -> Result<Device, String> {
    alloc::tune_for_tensors();
    let d = match backend.unwrap_or("cpu") {
        "cpu" => Device::flex(),
        "gpu" => gpu()?.device,
        other => return Err(format!("backend `{other}` is not available in this build")),
    };
    d.seed(seed);
    Ok(d)
}

/// The wgpu device of this process and what its adapter is.
#[derive(Clone)]
pub struct Gpu {
    /// The device, seeded per stage by [`device`].
    pub device: Device,
    /// Adapter name and graphics API, e.g. `NVIDIA H100 (Vulkan)`.
    pub adapter: String,
    /// A software rasterizer (Mesa llvmpipe/lavapipe): correct but slower than the CPU backend.
    pub software: bool,
}

/// Initialises wgpu once per process (its runtime can be set up only once).
#[cfg(feature = "gpu")]
pub fn gpu() -> Result<Gpu, String> {
    use burn::tensor::wgpu::wgpu as w;
    static GPU: std::sync::OnceLock<Result<Gpu, String>> = std::sync::OnceLock::new();
    GPU.get_or_init(|| {
        let (device, setup) = Device::wgpu_options()
            .init_with_setup()
            .map_err(|e| format!("no usable GPU adapter: {e:?}"))?;
        let info = setup.adapter.get_info();
        Ok(Gpu {
            device,
            adapter: format!("{} ({:?})", info.name, info.backend),
            software: info.device_type == w::DeviceType::Cpu,
        })
    })
    .clone()
}

#[cfg(not(feature = "gpu"))]
/// Without the `gpu` feature there is no GPU.
pub fn gpu() -> Result<Gpu, String> {
    Err("this build has no GPU support (build with `--features gpu`)".into())
}

/// A store that writes `path` byte for byte the same for the same weights:
/// burn's default metadata is a `HashMap`, written in a different order by
/// every process, which would give identical results different digests.
pub fn safetensors_writer(path: &std::path::Path) -> burn::store::SafetensorsStore {
    burn::store::SafetensorsStore::from_file(path)
        .overwrite(true)
        .clear_metadata()
        .metadata("format", "safetensors")
}

/// A `[rows, cols]` float tensor from row-major values.
pub fn matrix(values: Vec<f32>, rows: usize, cols: usize, device: &Device) -> Tensor<2> {
    Tensor::from_data(TensorData::new(values, [rows, cols]), device)
}

/// A 1-d float tensor.
pub fn vector(values: Vec<f32>, device: &Device) -> Tensor<1> {
    let n = values.len();
    Tensor::from_data(TensorData::new(values, [n]), device)
}

/// The values of a float tensor.
pub fn to_vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .unwrap_or_default()
}
