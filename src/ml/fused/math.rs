//! `exp` and `erf` for f32 without branches or library calls, so that the
//! kernels' loops over a row vectorize. glibc's `expf` and libm's `erff`
//! are scalar calls: a tenth of a training step's samples before this.
//!
//! `exp` is Cephes' `expf` (Cody-Waite reduction, degree-6 polynomial;
//! within 2 ulp); `erf` is the rational approximation that Eigen and XLA
//! use for f32 (within 5e-7
//! absolute). Both are held to the library
//! functions over a dense grid in the tests.

const LOG2_E: f32 = std::f32::consts::LOG2_E;
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// Below this, exp underflows to 0 (it would be subnormal).
const EXP_MIN: f32 = -87.336_55;
/// Inputs are clamped here (exp(88) = 1.65e38); the kernels only pass
/// values at or below 0.
const EXP_MAX: f32 = 88.0;
/// 1.5 * 2^23: adding and subtracting it rounds to the nearest integer
/// without a call (SSE2 has no rounding instruction).
const ROUND_MAGIC: f32 = 12_582_912.0;

/// e^x; 0 below -87.34, NaN for NaN.
#[inline(always)]
// `max`/`min` rather than `clamp`: a NaN input becomes a finite `c` here
// (and NaN is returned below), so the arithmetic stays branch-free.
#[allow(clippy::manual_clamp)]
pub fn exp(x: f32) -> f32 {
    let c = x.max(EXP_MIN).min(EXP_MAX);
    let rounded = c * LOG2_E + ROUND_MAGIC;
    let n = rounded - ROUND_MAGIC;
    // The integer n sits in the low mantissa bits of `rounded` (its ulp is
    // 1): reading it from the bits keeps the loop vectorised, where `as
    // i32`'s saturating conversion is a scalar one per element.
    let n_bits = rounded.to_bits().wrapping_sub(ROUND_MAGIC.to_bits());
    let r = c - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    let scale = f32::from_bits(n_bits.wrapping_add(127) << 23);
    let e = y * scale;
    if x.is_nan() {
        x
    } else if x < EXP_MIN {
        0.0
    } else {
        e
    }
}

/// The error function (NaN for NaN).
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = -2.726_142_3e-10_f32;
    p = p * x2 + 2.770_681_4e-8;
    p = p * x2 - 2.101_024e-6;
    p = p * x2 - 5.692_506_4e-5;
    p = p * x2 - 7.349_906_3e-4;
    p = p * x2 - 2.954_600_1e-3;
    p = p * x2 - 1.609_603_3e-2;
    let mut q = -1.456_607_2e-5_f32;
    q = q * x2 - 2.133_740_6e-4;
    q = q * x2 - 1.682_827e-3;
    q = q * x2 - 7.373_329e-3;
    q = q * x2 - 1.426_474e-2;
    x * p / q
}

/// Σ values.
#[inline(always)]
pub fn sum(values: &[f32]) -> f32 {
    sum_by(values, |v| v)
}

/// Σ f(value), in eight interleaved partial sums so that it vectorizes
/// (one running f32 sum is a dependency chain the compiler must keep).
#[inline(always)]
pub fn sum_by(values: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut lanes = [0.0f32; 8];
    let chunks = values.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().map(|&v| f(v)).sum();
    for c in chunks {
        for (l, &v) in lanes.iter_mut().zip(c) {
            *l += f(v);
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// Σ a·b.
#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for ((l, x), y) in lanes.iter_mut().zip(x).zip(y) {
            *l += x * y;
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// The largest value, -inf for none; NaNs are skipped.
#[inline(always)]
pub fn max(values: &[f32]) -> f32 {
    max_by(values, |v| v)
}

/// The largest f(value), -inf for none; NaNs are skipped.
#[inline(always)]
pub fn max_by(values: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 8];
    let chunks = values.chunks_exact(8);
    let tail = chunks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |m, &v| m.max(f(v)));
    for c in chunks {
        for (l, &v) in lanes.iter_mut().zip(c) {
            *l = l.max(f(v));
        }
    }
    lanes.iter().fold(tail, |m, &v| m.max(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid(lo: f32, hi: f32, n: usize) -> impl Iterator<Item = f32> {
        (0..=n).map(move |i| lo + (hi - lo) * i as f32 / n as f32)
    }

    #[test]
    fn exp_is_within_two_ulp_of_the_library() {
        for x in grid(-87.0, 88.0, 400_000) {
            let (ours, theirs) = (exp(x), x.exp());
            let ulp = (theirs.to_bits() as i64 - ours.to_bits() as i64).abs();
            assert!(ulp <= 2, "exp({x}) = {ours}, library {theirs}");
        }
    }

    #[test]
    fn exp_edges_underflow_to_zero_and_keep_nan() {
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(-100.0), 0.0);
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(f32::NAN).is_nan());
    }

    #[test]
    fn erf_is_within_5e7_of_the_library() {
        for x in grid(-6.0, 6.0, 400_000) {
            let (ours, theirs) = (erf(x), libm::erf(f64::from(x)));
            assert!(
                (f64::from(ours) - theirs).abs() < 5e-7,
                "erf({x}) = {ours}, library {theirs}"
            );
        }
        assert!(erf(f32::NAN).is_nan());
        assert!((erf(f32::INFINITY) - 1.0).abs() < 5e-7);
        assert!((erf(f32::NEG_INFINITY) + 1.0).abs() < 5e-7);
    }

    #[test]
    fn sum_and_max_match_the_plain_loops() {
        let v: Vec<f32> = grid(-3.0, 5.0, 1000).map(|x| (x * 7.3).sin()).collect();
        for n in [0, 1, 7, 8, 9, 100, 1001] {
            let s = &v[..n];
            let plain: f64 = s.iter().map(|&x| f64::from(x)).sum();
            assert!((f64::from(sum(s)) - plain).abs() < 1e-4, "sum of {n}");
            assert_eq!(max(s), s.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x)));
            let plain_dot: f64 = s.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
            assert!(
                (f64::from(dot(s, s)) - plain_dot).abs() < 1e-4,
                "dot of {n}"
            );
        }
    }
}
