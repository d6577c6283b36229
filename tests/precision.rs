//! Mixed precision (`precision "bf16"` / `"f16"` of sft and ppo) against f32
//! on the fixture BART of tests/fixtures/bart, on the CPU backend (which
//! computes each half-precision op in f32 and rounds its result, as a GPU's
//! half-precision kernels do): the loss curve of a few AdamW steps stays
//! within a stated tolerance of f32's, the arithmetic really is half
//! precision (the curves are not f32's to the bit), and the weights stay f32.

#[path = "common/bart_fixture.rs"]
mod bart_fixture;
use bart_fixture::*;

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{DType, Tensor};
use efrlhf::ml::precision::Precision;

/// Relative tolerances on each step's loss: bf16 keeps 8 bits of mantissa
/// (a relative rounding of 2^-9 per op), f16 11 bits (2^-12). Measured over
/// these 8 steps: 1.3e-2 (bf16) and 8.1e-4 (f16); the bounds leave 2x and 6x.
const BF16_TOLERANCE: f64 = 0.03;
const F16_TOLERANCE: f64 = 0.005;

fn curve(precision: Precision) -> (Vec<f64>, DType) {
    let cpu = efrlhf::ml::device(Some("cpu"), 0).unwrap();
    let mut s = settings(8, 1, 1, 1.0);
    s.precision = precision;
    let (model, rec) = train_tiny(&s, &cpu, &format!("precision-{precision}"));
    let mut dtypes = ParamDtypes(Vec::new());
    model.visit(&mut dtypes);
    dtypes.0.dedup();
    assert_eq!(dtypes.0.len(), 1, "{:?}", dtypes.0);
    (rec.losses, dtypes.0[0])
}

/// The dtype of each float parameter.
struct ParamDtypes(Vec<DType>);

impl ModuleVisitor for ParamDtypes {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.0.push(param.val().dtype());
    }
}

fn max_relative_gap(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() / y.abs())
        .fold(0.0, f64::max)
}

#[test]
#[allow(clippy::print_stderr)]
fn half_precision_loss_curves_stay_within_tolerance_of_f32() {
    let (f32_curve, f32_dtype) = curve(Precision::F32);
    assert_eq!(f32_dtype, DType::F32);
    assert!(f32_curve.last() < f32_curve.first(), "{f32_curve:?}");
    for (precision, tolerance) in [
        (Precision::Bf16, BF16_TOLERANCE),
        (Precision::F16, F16_TOLERANCE),
    ] {
        let (half, dtype) = curve(precision);
        let gap = max_relative_gap(&half, &f32_curve);
        eprintln!("{precision}: {half:?}\nf32: {f32_curve:?}\nlargest relative gap {gap:e}");
        assert_eq!(
            dtype,
            DType::F32,
            "{precision}: master weights must stay f32"
        );
        assert!(gap <= tolerance, "{precision}: {gap} > {tolerance}");
        assert!(
            gap > 1e-6,
            "{precision} gave f32's curve: not computed in half precision"
        );
    }
}
