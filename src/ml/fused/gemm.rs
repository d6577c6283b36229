//! Strided, batched f32 matmul into a fresh buffer, on the `gemm` crate
//! that burn-flex itself calls. burn-flex's own matmul allocates its output
//! with `FlexTensor::empty`, which zero-fills a byte vector and then copies
//! it once more to align it: two extra passes over every matmul's output,
//! a third of a training step's single-threaded time (BENCHMARKS.md). Here
//! the output is written once, by the gemm, with an optional bias row
//! broadcast into it first (the bias add of a linear layer, for free).

use std::mem::MaybeUninit;

use gemm::Parallelism;
use rayon::prelude::*;

/// One operand: its storage, the offset of its first element, and its
/// strides in elements, outermost first; the last two are the matrix's
/// row and column strides.
#[derive(Debug, Clone, Copy)]
pub struct Operand<'a> {
    /// The whole storage the offsets and strides index into.
    pub data: &'a [f32],
    /// Where element `[0, ..., 0]` is.
    pub offset: usize,
    /// Elements between neighbours along each dimension.
    pub strides: &'a [isize],
}

/// A single matrix product costs this many multiply-adds before gemm's own
/// threads pay off (burn-flex's threshold).
const PARALLEL_OPS: usize = 192 * 192 * 192;
/// A batch of small products is split across threads above this total.
const BATCH_PARALLEL_OPS: usize = 128 * 128 * 128;

impl Operand<'_> {
    /// Whether every element of `shape` lies inside the storage with
    /// non-negative strides: what makes the pointer arithmetic below sound.
    fn fits(&self, shape: &[usize]) -> bool {
        if shape.len() != self.strides.len() || self.strides.iter().any(|&s| s < 0) {
            return false;
        }
        if shape.contains(&0) {
            return true;
        }
        let last = shape
            .iter()
            .zip(self.strides)
            .try_fold(self.offset, |at, (&d, &s)| {
                (d - 1)
                    .checked_mul(s as usize)
                    .and_then(|x| at.checked_add(x))
            });
        last.is_some_and(|last| last < self.data.len())
    }

    /// Offsets of each matrix in the batch dims (all but the last two).
    fn matrix_offsets(&self, batch: &[usize]) -> Vec<usize> {
        let mut offsets = vec![self.offset];
        for (&d, &s) in batch.iter().zip(self.strides) {
            offsets = offsets
                .iter()
                .flat_map(|&o| (0..d).map(move |i| o + i * s as usize))
                .collect();
        }
        offsets
    }

    fn matrix_strides(&self) -> (isize, isize) {
        let r = self.strides.len();
        (self.strides[r - 2], self.strides[r - 1])
    }
}

/// `lhs @ rhs (+ bias)` for `lhs` `[..., m, k]` and `rhs` `[..., k, n]` with
/// the same batch dims, row-major `[..., m, n]`; `bias` (`n` values) is
/// added to every row. `None` where an operand does not fit its storage.
pub fn matmul(
    lhs: Operand<'_>,
    lhs_shape: &[usize],
    rhs: Operand<'_>,
    rhs_shape: &[usize],
    bias: Option<&[f32]>,
) -> Option<Vec<f32>> {
    let r = lhs_shape.len();
    let agree = r >= 2
        && rhs_shape.len() == r
        && lhs_shape[..r - 2] == rhs_shape[..r - 2]
        && lhs_shape[r - 1] == rhs_shape[r - 2]
        && bias.is_none_or(|b| b.len() == rhs_shape[r - 1]);
    if !agree || !lhs.fits(lhs_shape) || !rhs.fits(rhs_shape) {
        return None;
    }
    let (m, k, n) = (lhs_shape[r - 2], lhs_shape[r - 1], rhs_shape[r - 1]);
    let batch = &lhs_shape[..r - 2];
    let count: usize = batch.iter().product();
    let len = count * m * n;
    let mut out = Vec::with_capacity(len);
    let dst = &mut out.spare_capacity_mut()[..len];
    if let Some(b) = bias.filter(|_| n > 0) {
        for row in dst.chunks_mut(n) {
            row.iter_mut().zip(b).for_each(|(d, &v)| {
                d.write(v);
            });
        }
    } else if k == 0 {
        dst.iter_mut().for_each(|d| {
            d.write(0.0);
        });
    }
    if k > 0 && len > 0 {
        let (l_off, r_off) = (lhs.matrix_offsets(batch), rhs.matrix_offsets(batch));
        let product = Product {
            dims: (m, k, n),
            lhs,
            rhs,
            accumulate: bias.is_some(),
        };
        run_batch(&product, &l_off, &r_off, dst);
    }
    // SAFETY: every one of the `len` elements was written: by the bias or
    // zero fill, or by the gemm over all outputs.
    unsafe { out.set_len(len) };
    Some(out)
}

/// One batch's shared shape and operands.
struct Product<'a> {
    dims: (usize, usize, usize),
    lhs: Operand<'a>,
    rhs: Operand<'a>,
    accumulate: bool,
}

fn run_batch(p: &Product<'_>, l_off: &[usize], r_off: &[usize], dst: &mut [MaybeUninit<f32>]) {
    let (m, k, n) = p.dims;
    let per = m * n * k;
    let total = per * l_off.len();
    let batch_parallel = l_off.len() >= 4 && total >= BATCH_PARALLEL_OPS;
    let chunks = dst.chunks_mut(m * n).zip(l_off.iter().zip(r_off));
    if per >= PARALLEL_OPS && !batch_parallel {
        chunks.for_each(|(d, (&lo, &ro))| p.one(d, lo, ro, Parallelism::Rayon(0)));
    } else if total >= BATCH_PARALLEL_OPS && l_off.len() > 1 {
        dst.par_chunks_mut(m * n)
            .zip(l_off.par_iter().zip(r_off))
            .for_each(|(d, (&lo, &ro))| p.one(d, lo, ro, Parallelism::None));
    } else {
        chunks.for_each(|(d, (&lo, &ro))| p.one(d, lo, ro, Parallelism::None));
    }
}

impl Product<'_> {
    /// One `[m, k] @ [k, n]` into `dst` (`m * n`, row-major).
    fn one(&self, dst: &mut [MaybeUninit<f32>], lo: usize, ro: usize, par: Parallelism) {
        let (m, k, n) = self.dims;
        let (l_rs, l_cs) = self.lhs.matrix_strides();
        let (r_rs, r_cs) = self.rhs.matrix_strides();
        debug_assert_eq!(dst.len(), m * n);
        // SAFETY: `fits` checked that every element of both operands lies
        // in its storage; `dst` holds exactly the `m * n` outputs, written
        // with row stride n; gemm reads `dst` only when accumulating, and
        // then the bias fill initialized it.
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                dst.as_mut_ptr().cast::<f32>(),
                1,
                n as isize,
                self.accumulate,
                self.lhs.data.as_ptr().add(lo),
                l_cs,
                l_rs,
                self.rhs.data.as_ptr().add(ro),
                r_cs,
                r_rs,
                1.0,
                1.0,
                false,
                false,
                false,
                par,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The textbook triple loop.
    fn reference(a: &[f32], b: &[f32], (m, k, n): (usize, usize, usize)) -> Vec<f32> {
        let mut c = vec![0.0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
            }
        }
        c
    }

    fn values(n: usize, seed: f32) -> Vec<f32> {
        (0..n)
            .map(|i| (i as f32 * 0.37 + seed).sin() * 2.0)
            .collect()
    }

    #[test]
    fn products_match_the_triple_loop_with_bias_and_transposed_views() {
        let (m, k, n) = (37, 50, 29);
        let (a, b) = (values(m * k, 0.1), values(k * n, 0.7));
        let bias = values(n, 2.0);
        let want = reference(&a, &b, (m, k, n));
        let op = |data, strides| Operand {
            data,
            offset: 0,
            strides,
        };
        // b as the transposed view of its transpose: row stride 1.
        let bt: Vec<f32> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
        let got = matmul(
            op(&a, &[k as isize, 1]),
            &[m, k],
            op(&bt, &[1, k as isize]),
            &[k, n],
            Some(&bias),
        )
        .expect("operands fit");
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!((g - (w + bias[i % n])).abs() < 1e-4, "{i}: {g} vs {w}");
        }
    }

    #[test]
    fn batches_use_their_own_matrices_serially_and_in_parallel() {
        for (batch, m, k, n) in [(3, 5, 4, 6), (8, 130, 64, 130)] {
            let (a, b) = (values(batch * m * k, 0.3), values(batch * k * n, 1.1));
            let got = matmul(
                Operand {
                    data: &a,
                    offset: 0,
                    strides: &[(m * k) as isize, k as isize, 1],
                },
                &[batch, m, k],
                Operand {
                    data: &b,
                    offset: 0,
                    strides: &[(k * n) as isize, n as isize, 1],
                },
                &[batch, k, n],
                None,
            )
            .expect("operands fit");
            for i in 0..batch {
                let want = reference(
                    &a[i * m * k..][..m * k],
                    &b[i * k * n..][..k * n],
                    (m, k, n),
                );
                let diff = got[i * m * n..][..m * n]
                    .iter()
                    .zip(&want)
                    .map(|(g, w)| (g - w).abs())
                    .fold(0.0, f32::max);
                assert!(diff < 1e-3, "batch {i}: {diff}");
            }
        }
    }

    #[test]
    fn an_operand_outside_its_storage_is_refused() {
        let a = values(6, 0.0);
        let op = Operand {
            data: &a,
            offset: 1,
            strides: &[3, 1],
        };
        assert!(matmul(op, &[2, 3], op, &[3, 2], None).is_none());
        let ok = Operand {
            data: &a,
            offset: 0,
            strides: &[3, 1],
        };
        assert!(
            matmul(ok, &[2, 3], ok, &[2, 3], None).is_none(),
            "k must agree"
        );
    }

    #[test]
    fn an_empty_inner_dimension_gives_zeros_or_the_bias() {
        let none: [f32; 0] = [];
        let op = Operand {
            data: &none,
            offset: 0,
            strides: &[0, 1],
        };
        assert_eq!(matmul(op, &[2, 0], op, &[0, 2], None), Some(vec![0.0; 4]));
        assert_eq!(
            matmul(op, &[2, 0], op, &[0, 2], Some(&[1.0, 2.0])),
            Some(vec![1.0, 2.0, 1.0, 2.0])
        );
    }
}
