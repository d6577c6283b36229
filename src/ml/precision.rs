//! Mixed precision for training: the forward and backward run in bf16 or
//! f16 on a half-precision copy of the parameters, while the optimizer keeps
//! and updates f32 master weights (as `torch.autocast` with an f32 model
//! does). The copy is made by a cast inside the autodiff graph, so the
//! gradients arrive at the f32 parameters already in f32. Log-softmax, the
//! losses and the value head's output are f32 (see [`super::bart::Bart::logits`]).
//! f16's narrow exponent range needs loss scaling: [`LossScaler`] is
//! `torch.amp.GradScaler`'s dynamic scheme.

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::{FloatDType, Tensor};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The floating-point format of a training step's arithmetic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Everything in f32.
    #[default]
    F32,
    /// bfloat16 compute (f32's range, 8 bits of mantissa): no loss scaling needed.
    Bf16,
    /// IEEE half compute (11 bits of mantissa, range to 65504): with dynamic loss scaling.
    F16,
}

impl Precision {
    /// The compute dtype.
    pub fn dtype(self) -> FloatDType {
        match self {
            Precision::F32 => FloatDType::F32,
            Precision::Bf16 => FloatDType::BF16,
            Precision::F16 => FloatDType::F16,
        }
    }

    /// `model` with each float parameter cast to the compute dtype, the cast
    /// recorded by autodiff so that gradients flow back to `model`'s own
    /// (f32) parameters. Under f32, `model` itself.
    pub fn compute<M: Module>(self, model: &M) -> M {
        if self == Precision::F32 {
            return model.clone();
        }
        model.clone().map(&mut CastParams(self.dtype()))
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::F16 => "f16",
        })
    }
}

struct CastParams(FloatDType);

impl ModuleMapper for CastParams {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let dtype = self.0;
        // A parameter already in `dtype` (a frozen reference cast once per
        // stage) comes back as it is: burn's `cast` is then a no-op.
        param.map(|t| t.cast(dtype))
    }
}

/// `tensor` as f32 (itself when it already is: burn's `cast` is then a no-op).
pub fn to_f32<const D: usize>(tensor: Tensor<D>) -> Tensor<D> {
    tensor.cast(FloatDType::F32)
}

/// Dynamic loss scaling (`torch.amp.GradScaler`'s defaults): the loss is
/// multiplied by the scale before the backward and the gradients divided by
/// it after; a step whose gradients overflowed is skipped and the scale
/// halved; after 2000 good steps in a row it doubles. Off (a scale of 1,
/// nothing skipped) for f32 and bf16.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LossScaler {
    /// The current scale.
    pub scale: f64,
    /// Good steps since the scale last changed.
    pub good_steps: usize,
    enabled: bool,
}

const GROWTH_INTERVAL: usize = 2000;

impl LossScaler {
    /// The scaler for `precision`.
    pub fn new(precision: Precision) -> LossScaler {
        let enabled = precision == Precision::F16;
        LossScaler {
            scale: if enabled { 65536.0 } else { 1.0 },
            good_steps: 0,
            enabled,
        }
    }

    /// `loss` times the scale, for the backward (itself when scaling is off).
    pub fn scale_loss(&self, loss: Tensor<1>) -> Tensor<1> {
        if self.scale == 1.0 {
            loss
        } else {
            loss * self.scale
        }
    }

    /// Records whether this step's (unscaled) gradients were finite; returns
    /// whether the optimizer step should be taken. Without scaling every
    /// step is taken (a non-finite one is then the caller's divergence).
    pub fn update(&mut self, finite: bool) -> bool {
        if !self.enabled {
            return true;
        }
        if !finite {
            self.scale /= 2.0;
            self.good_steps = 0;
            return false;
        }
        self.good_steps += 1;
        if self.good_steps >= GROWTH_INTERVAL {
            self.scale *= 2.0;
            self.good_steps = 0;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scale_halves_on_overflow_and_doubles_after_2000_good_steps() {
        let mut s = LossScaler::new(Precision::F16);
        assert_eq!(s.scale, 65536.0);
        assert!(!s.update(false));
        assert_eq!(s.scale, 32768.0);
        for _ in 0..1999 {
            assert!(s.update(true));
        }
        assert_eq!(s.scale, 32768.0);
        assert!(s.update(true));
        assert_eq!(s.scale, 65536.0);
        let mut off = LossScaler::new(Precision::Bf16);
        assert!(off.update(false));
        assert_eq!(off.scale, 1.0);
    }
}
