//! Models and training loops on burn.
//!
//! burn 0.22 has one tensor type whose backend is chosen at run time by a
//! `Device`; the CPU device is burn-flex. Parameters are created on the
//! autodiff device to train, and used through `valid()` to evaluate.

pub mod bart;
pub mod bt;
pub mod phi;
pub mod schedule;
pub mod text_rm;

use burn::tensor::{Device, Tensor, TensorData};

/// The device for a backend class (`cpu`; `gpu` when built with GPU support), seeded.
pub fn device(backend: Option<&str>, seed: u64) -> Result<Device, String> {
    match backend.unwrap_or("cpu") {
        "cpu" => {
            let d = Device::flex();
            d.seed(seed);
            Ok(d)
        }
        other => Err(format!("backend `{other}` is not available in this build")),
    }
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
