//! The wgpu backend against the CPU backend (built with `--features gpu`;
//! CI runs it on Mesa's software Vulkan driver, lavapipe): the same forward
//! pass and the same training steps, to float32 tolerance.
#![allow(clippy::print_stderr)]
#![cfg(feature = "gpu")]

#[path = "common/bart_fixture.rs"]
mod bart_fixture;
use bart_fixture::*;

use burn::tensor::Device;

fn devices() -> (Device, Device) {
    let gpu = efrlhf::ml::gpu().unwrap_or_else(|e| {
        panic!(
            "{e}: the gpu tests need a Vulkan driver (without a GPU: apt-get install mesa-vulkan-drivers)"
        )
    });
    eprintln!("wgpu adapter: {} (software: {})", gpu.adapter, gpu.software);
    // benches/gpu-check.sh: a run on a GPU machine must not pass on a software driver.
    if std::env::var_os("EFRLHF_REQUIRE_HARDWARE_GPU").is_some() {
        assert!(!gpu.software, "{} is a software renderer", gpu.adapter);
    }
    (efrlhf::ml::device(Some("cpu"), 0).unwrap(), gpu.device)
}

#[test]
fn wgpu_forward_pass_equals_cpu_and_transformers() {
    let (cpu, gpu) = devices();
    let e = expected();
    let on_cpu = teacher_forced(&tiny(&cpu, true), &e, &cpu);
    let on_gpu = teacher_forced(&tiny(&gpu, true), &e, &gpu);
    let d = max_diff(&on_cpu, &on_gpu);
    eprintln!("max |logit difference| wgpu vs cpu: {d:e}");
    assert!(d < 1e-4, "{d}");
    assert!(max_diff(&on_gpu, &e.logits) < 1e-4);
}

#[test]
fn wgpu_training_steps_equal_cpu() {
    let (cpu, gpu) = devices();
    let e = expected();
    let s = settings(3, 3, 1, 1.0);
    let (cpu_model, cpu_rec) = train_tiny(&s, &cpu, "gpu-test-cpu");
    let (gpu_model, gpu_rec) = train_tiny(&s, &gpu, "gpu-test-gpu");
    // The first loss is the same forward pass; after that, AdamW turns tiny
    // gradient differences (float32 sums in another order) into steps of up
    // to lr on near-zero gradients, so later losses agree to about 1e-4.
    eprintln!("losses cpu {:?} wgpu {:?}", cpu_rec.losses, gpu_rec.losses);
    assert!((cpu_rec.losses[0] - gpu_rec.losses[0]).abs() < 1e-5);
    for (a, b) in cpu_rec.losses.iter().zip(&gpu_rec.losses) {
        assert!(
            (a - b).abs() < 1e-3,
            "{:?} vs {:?}",
            cpu_rec.losses,
            gpu_rec.losses
        );
    }
    assert!(gpu_rec.losses[2] < gpu_rec.losses[0] - 0.5);
    let d = max_diff(
        &teacher_forced(&cpu_model, &e, &cpu),
        &teacher_forced(&gpu_model, &e, &gpu),
    );
    eprintln!("after 3 steps, max |logit difference| wgpu vs cpu: {d:e}");
    assert!(d < 2e-2, "{d}");
}
