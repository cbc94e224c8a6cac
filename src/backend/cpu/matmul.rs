//! Matmul and bias. `out[b] (+)= alpha * op(a[b]) @ op(b[b])`, row-major, `op(a)` `[m, k]`
//! (stored `[k, m]` when `trans_a`), `op(b)` `[k, n]` (stored `[n, k]` when `trans_b`), through the
//! `gemm` crate (packed, SIMD micro-kernels, rayon). A linear layer's backward is two more calls:
//! `dx = dy @ W` and `dW += dy^T @ x` (with the transposes that match W's storage).
//! Bias: `out[i, j] += bias[j]`; backward `dbias[j] += sum_i dout[i, j]` reduced per column.
//!
//! Batch invariance: row `i` of an (untransposed-`a`) product is the same bits whatever the number
//! of rows, the row's position among them and the thread count, because products too small for
//! `gemm`'s general kernel run zero-padded to the fewest rows that take it (see [`min_rows`]). The
//! training forward and the rollout engine's prefill/decode steps therefore agree bit for bit
//! (DESIGN principle 6); `tests/ops/main.rs` (`matmul_rows_batch_invariant`) guards this against
//! `gemm` changes.

use super::{check, profile, CpuBackend};
use crate::backend::ops::family;
use crate::backend::ops::{BiasParams, MatmulParams};
use crate::error::Result;
use gemm::Parallelism;
use rayon::prelude::*;

/// (row stride, column stride) of a row-major `[rows, cols]` matrix read as its transpose or not.
fn strides(transposed: bool, cols_of_op: usize, rows_of_op: usize) -> (isize, isize) {
    if transposed {
        // stored [cols_of_op, rows_of_op]: element (i, j) of op at j * rows_of_op + i
        (1, rows_of_op as isize)
    } else {
        (cols_of_op as isize, 1)
    }
}

/// The fewest rows a single (untransposed-`a`) product of width `n` and depth `k` runs with, so
/// that every output row is the same bits whatever the number of rows (batch invariance). From
/// `gemm` 0.19's dispatch (`gemm-common/src/gemm.rs`), the only choices that depend on `m` are:
/// - `m * n <= 256` with unit-stride `a` rows and a unit row stride of `b` (`trans_b`, or `n == 1`):
///   "horizontal" kernels that reduce each dot product across SIMD lanes;
/// - `m <= 1`: a matrix-vector kernel;
/// - `m <= 64 && n <= 64`: depth blocked by 512 instead of `kernel_params`' even split of `k`
///   (the same when `k <= 512`).
///
/// Everything else runs the packed micro-kernel, which accumulates each output element over `k`
/// with one FMA chain per depth block (the blocks depend on `k`, `n` and the cache sizes only),
/// so a row's bits do not depend on `m`, on the row's position or on the threads.
fn min_rows(n: usize, k: usize, unit_b_rows: bool) -> usize {
    let mut rows = 2;
    if unit_b_rows {
        rows = rows.max(256 / n.max(1) + 1);
    }
    if n <= 64 && k > 512 {
        rows = rows.max(65);
    }
    rows
}

pub fn matmul(out: &mut [f32], a: &[f32], b: &[f32], p: MatmulParams) {
    let (m, n, k) = (p.m as usize, p.n as usize, p.k as usize);
    let batch = p.batch.max(1) as usize;
    let rows = min_rows(n, k, p.trans_b != 0 || n == 1);
    if batch == 1 && p.trans_a == 0 && m > 0 && m < rows && k > 0 {
        // zero-padded copy of a (and of out when accumulating), product, first m rows back
        let mut a_pad = vec![0f32; rows * k];
        a_pad[..m * k].copy_from_slice(&a[..m * k]);
        let mut o_pad = vec![0f32; rows * n];
        if p.accumulate != 0 {
            o_pad[..m * n].copy_from_slice(&out[..m * n]);
        }
        matmul(&mut o_pad, &a_pad, b, MatmulParams { m: rows as u32, ..p });
        out[..m * n].copy_from_slice(&o_pad[..m * n]);
        return;
    }
    let batch = p.batch.max(1) as usize;
    let (a_rs, a_cs) = strides(p.trans_a != 0, k, m);
    let (b_rs, b_cs) = strides(p.trans_b != 0, n, k);
    let read_dst = p.accumulate != 0;
    let one = |out: &mut [f32], a: &[f32], b: &[f32], par: Parallelism| {
        assert!(out.len() >= m * n && a.len() >= m * k && b.len() >= k * n, "matmul operand too small");
        if k == 0 {
            if !read_dst {
                out[..m * n].fill(0.0);
            }
            return;
        }
        // SAFETY: the asserts above bound every index the strides can reach.
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                out.as_mut_ptr(),
                1,
                n as isize,
                read_dst,
                a.as_ptr(),
                a_cs,
                a_rs,
                b.as_ptr(),
                b_cs,
                b_rs,
                1.0,
                p.alpha,
                false,
                false,
                false,
                par,
            );
        }
    };
    if batch == 1 {
        one(out, a, b, Parallelism::Rayon(0));
        return;
    }
    let (sa, sb, so) = (p.stride_a as usize, p.stride_b as usize, p.stride_out as usize);
    assert!(so >= m * n, "matmul: output batches overlap");
    out[..so * batch].par_chunks_mut(so).enumerate().for_each(|(i, o)| {
        one(o, &a[i * sa..], &b[i * sb..], Parallelism::None);
    });
}

pub fn bias_add(out: &mut [f32], bias: &[f32], p: BiasParams) {
    let (n, c) = (p.n as usize, p.c as usize);
    out[..n * c].par_chunks_mut(c).for_each(|row| row.iter_mut().zip(bias).for_each(|(o, b)| *o += b));
}

pub fn bias_bwd(dbias: &mut [f32], dout: &[f32], p: BiasParams) {
    let (n, c) = (p.n as usize, p.c as usize);
    const BLOCK: usize = 64;
    dbias[..c].par_chunks_mut(BLOCK).enumerate().for_each(|(blk, d)| {
        let j0 = blk * BLOCK;
        let mut acc = vec![0f32; d.len()];
        for i in 0..n {
            let row = &dout[i * c + j0..i * c + j0 + d.len()];
            acc.iter_mut().zip(row).for_each(|(a, g)| *a += g);
        }
        d.iter_mut().zip(acc).for_each(|(d, a)| *d += a);
    });
}

/// A strided view of a matrix for [`gemm_view`]: base pointer, row stride, column stride.
#[derive(Clone, Copy)]
pub struct View {
    pub ptr: *const f32,
    pub rs: isize,
    pub cs: isize,
}

/// `dst (+)= alpha * a @ b` on strided views, single-threaded (for use inside parallel tasks).
///
/// # Safety
/// Every element the shapes and strides address must be valid; `dst` must not alias `a` or `b`.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm_view(m: usize, n: usize, k: usize, dst: *mut f32, dst_rs: isize, accumulate: bool, a: View, b: View, alpha: f32) {
    if m == 0 || n == 0 {
        return;
    }
    gemm::gemm(m, n, k, dst, 1, dst_rs, accumulate, a.ptr, a.cs, a.rs, b.ptr, b.cs, b.rs, 1.0, alpha, false, false, false, Parallelism::None);
}

impl family::Matmul for CpuBackend {
    fn matmul(&self, out: &mut Vec<f32>, a: &Vec<f32>, b: &Vec<f32>, p: MatmulParams) -> Result<()> {
        let _t = profile::OpTimer::start("matmul");
        let (m, n, k, batch) = (p.m as usize, p.n as usize, p.k as usize, p.batch.max(1) as usize);
        let last = |stride: u32, size: usize| (batch - 1) * stride as usize + size;
        check(out.len() >= last(p.stride_out, m * n), "matmul", "output buffer too small")?;
        check(a.len() >= last(p.stride_a, m * k), "matmul", "operand a too small")?;
        check(b.len() >= last(p.stride_b, k * n), "matmul", "operand b too small")?;
        matmul(out, a, b, p);
        Ok(())
    }
    fn bias_add(&self, out: &mut Vec<f32>, bias: &Vec<f32>, p: BiasParams) -> Result<()> {
        let _t = profile::OpTimer::start("bias_add");
        bias_add(out, bias, p);
        Ok(())
    }
    fn bias_bwd(&self, dbias: &mut Vec<f32>, dout: &Vec<f32>, p: BiasParams) -> Result<()> {
        let _t = profile::OpTimer::start("bias_bwd");
        bias_bwd(dbias, dout, p);
        Ok(())
    }
}
