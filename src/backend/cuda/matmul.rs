//! Matmul through cuBLAS (`sgemm_strided_batched`) with row-major operands, and the bias ops.
//! Row-major `C [m, n] = alpha op(A) op(B) (+ C)` is column-major `C^T = op(B)^T op(A)^T`: cuBLAS
//! gets B as its first operand (`n x k`, transposed when `trans_b`, leading dimension `k` when
//! transposed else `n`), A as its second (`k x m`, leading dimension `m` when `trans_a` else `k`),
//! and C with leading dimension `n`; `beta` is 1 when accumulating. Without libcublas the tiled
//! SIMT kernel `matmul` of kernels/matmul.cu runs instead (same params struct).
//! Launch configurations: see kernels/matmul.cu.

use super::context::{launch, linear, Context};
use super::kernels::err;
use crate::backend::ops::{BiasParams, MatmulParams};
use crate::error::Result;
use cudarc::cublas::sys::cublasOperation_t::{CUBLAS_OP_N, CUBLAS_OP_T};
use cudarc::cublas::{Gemm, GemmConfig, StridedBatchedConfig};
use cudarc::driver::{CudaSlice, CudaView, CudaViewMut, LaunchConfig};

/// Elements each operand needs: the last batch's matrix must fit.
fn extent(stride: u32, batch: u32, size: usize) -> usize {
    (batch.max(1) as usize - 1) * stride as usize + size
}

/// Checks that `out`, `a`, `b` (of the given lengths) hold every matrix `p` reads or writes.
pub fn check(p: &MatmulParams, out: usize, a: usize, b: usize) -> Result<()> {
    let (m, n, k) = (p.m as usize, p.n as usize, p.k as usize);
    let need = [("out", out, extent(p.stride_out, p.batch, m * n)), ("a", a, extent(p.stride_a, p.batch, m * k)), ("b", b, extent(p.stride_b, p.batch, k * n))];
    for (name, have, want) in need {
        if have < want {
            return Err(err(format!("matmul: `{name}` holds {have} values, {m}x{n}x{k} x{} needs {want}", p.batch)));
        }
    }
    Ok(())
}

/// `out (+)= alpha op(a) op(b)` on views (the log-prob gather multiplies vocabulary chunks).
pub fn gemm(ctx: &Context, out: &mut CudaViewMut<'_, f32>, a: &CudaView<'_, f32>, b: &CudaView<'_, f32>, p: MatmulParams) -> Result<()> {
    check(&p, out.len(), a.len(), b.len())?;
    if p.m == 0 || p.n == 0 || p.batch == 0 {
        return Ok(());
    }
    match &ctx.blas {
        Some(blas) => {
            let (m, n, k) = (p.m as i32, p.n as i32, p.k as i32);
            let cfg = StridedBatchedConfig {
                gemm: GemmConfig {
                    transa: if p.trans_b != 0 { CUBLAS_OP_T } else { CUBLAS_OP_N },
                    transb: if p.trans_a != 0 { CUBLAS_OP_T } else { CUBLAS_OP_N },
                    m: n,
                    n: m,
                    k,
                    alpha: p.alpha,
                    lda: if p.trans_b != 0 { k } else { n },
                    ldb: if p.trans_a != 0 { m } else { k },
                    beta: if p.accumulate != 0 { 1.0 } else { 0.0 },
                    ldc: n,
                },
                batch_size: p.batch as i32,
                stride_a: p.stride_b as i64,
                stride_b: p.stride_a as i64,
                stride_c: p.stride_out as i64,
            };
            // SAFETY: the operands hold every matrix of the batch (checked above).
            unsafe { blas.gemm_strided_batched(cfg, b, a, out) }.map_err(|e| err(format!("cuBLAS sgemm {}x{}x{}: {e:?}", p.m, p.n, p.k)))
        }
        None => {
            let cfg = LaunchConfig { grid_dim: (p.n.div_ceil(32), p.m.div_ceil(32), p.batch), block_dim: (32, 8, 1), shared_mem_bytes: 0 };
            launch!(ctx, "matmul", "matmul", cfg, out, a, b, &p)
        }
    }
}

pub fn matmul(ctx: &Context, out: &mut CudaSlice<f32>, a: &CudaSlice<f32>, b: &CudaSlice<f32>, p: MatmulParams) -> Result<()> {
    gemm(ctx, &mut out.as_view_mut(), &a.as_view(), &b.as_view(), p)
}

pub fn bias_add(ctx: &Context, out: &mut CudaSlice<f32>, bias: &CudaSlice<f32>, p: BiasParams) -> Result<()> {
    let (n, c) = (p.n as usize, p.c as usize);
    if out.len() < n * c || bias.len() < c {
        return Err(err(format!("bias_add: out holds {}, bias {}; [{n}, {c}] needs {} and {c}", out.len(), bias.len(), n * c)));
    }
    if n * c == 0 {
        return Ok(());
    }
    launch!(ctx, "matmul", "bias_add", linear(n * c, 256), out, bias, &p)
}

pub fn bias_bwd(ctx: &Context, dbias: &mut CudaSlice<f32>, dout: &CudaSlice<f32>, p: BiasParams) -> Result<()> {
    let (n, c) = (p.n as usize, p.c as usize);
    if dout.len() < n * c || dbias.len() < c {
        return Err(err(format!("bias_bwd: dout holds {}, dbias {}; [{n}, {c}] needs {} and {c}", dout.len(), dbias.len(), n * c)));
    }
    if c == 0 {
        return Ok(());
    }
    let cfg = LaunchConfig { grid_dim: (p.c.div_ceil(32), 1, 1), block_dim: (32, 8, 1), shared_mem_bytes: 0 };
    launch!(ctx, "matmul", "bias_bwd", cfg, dbias, dout, &p)
}
