//! Matmul through cuBLAS (`sgemm_strided_batched`) with row-major operands, and the bias ops.
//! Row-major `C [m, n] = alpha op(A) op(B) (+ C)` is column-major `C^T = op(B)^T op(A)^T`: cuBLAS
//! gets B as its first operand (`n x k`, transposed when `trans_b`, leading dimension `k` when
//! transposed else `n`), A as its second (`k x m`, leading dimension `m` when `trans_a` else `k`),
//! and C with leading dimension `n`; `beta` is 1 when accumulating. Without libcublas the tiled
//! SIMT kernel `matmul` of kernels/matmul.cu runs instead (same params struct).
//! With `--matmul-precision tf32 | bf16 | f16` the same call goes through
//! `cublasGemmStridedBatchedEx` with f32 A, B and C and the compute type
//! `CUBLAS_COMPUTE_32F_FAST_TF32 | _FAST_16BF | _FAST_16F`: cuBLAS rounds the operands to that
//! type (tensor cores) and accumulates in f32. The SIMT kernel is f32 only there.
//! bf16 storage (`--precision bf16`): A and B are bf16 buffers and the call is
//! `cublasGemmStridedBatchedEx` with CUDA_R_16BF A and B, C bf16 or f32 (an f32 `out` is allowed),
//! `CUBLAS_COMPUTE_32F` and f32 alpha / beta (beta 1 reads C when accumulating); the
//! `--matmul-precision` flag does not apply (the operands already are bf16). The SIMT fallback has
//! `matmul_bf16` and `matmul_bf16_out_f32` (f32 tiles and accumulation).
//! Launch configurations: see kernels/matmul.cu.

use super::buffer::{types, CudaBuf, DevPtr};
use super::column_sum::row_chunks;
use super::context::{launch, linear, Context};
use super::kernels::err;
use super::{epilogue, CudaBackend};
use crate::backend::ops::{matmul_bias_gelu_unfused, matmul_bias_unfused, matmul_gelu_bwd_unfused, BiasParams, MatmulParams};
use crate::backend::precision::MatmulPrecision;
use crate::backend::storage::{op_dtype, Dtype};
use crate::error::Result;
use cudarc::cublas::sys::cublasOperation_t::{CUBLAS_OP_N, CUBLAS_OP_T};
use cudarc::cublas::sys::{cublasComputeType_t, cublasGemmAlgo_t, cudaDataType_t};
use cudarc::cublas::{CudaBlas, GemmConfig, StridedBatchedConfig};
use cudarc::driver::LaunchConfig;

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

/// The cuBLAS call computing row-major `out (+)= alpha op(a) op(b)`: column-major
/// `out^T = op(b)^T op(a)^T`, so cuBLAS's first operand is `b` and its second `a` (see the header).
pub fn cublas_config(p: &MatmulParams) -> StridedBatchedConfig<f32> {
    let (m, n, k) = (p.m as i32, p.n as i32, p.k as i32);
    StridedBatchedConfig {
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
    }
}

/// `out (+)= alpha op(a) op(b)` on device pointers (whole buffers, or the vocabulary chunks of the
/// log-prob gather). `a` and `b` share one type T; `out` is T or f32 (f32 accumulation always).
pub fn gemm(ctx: &Context, out: DevPtr<'_>, a: DevPtr<'_>, b: DevPtr<'_>, p: MatmulParams) -> Result<()> {
    let t = op_dtype("cuda", "matmul", &[("a", a.dtype), ("b", b.dtype)], &[])?;
    if out.dtype != t && out.dtype != Dtype::F32 {
        return Err(err(format!("matmul: `out` is {} but the operands `a`, `b` are {t} (out must be {t} or f32)", out.dtype)));
    }
    check(&p, out.len, a.len, b.len)?;
    if p.m == 0 || p.n == 0 || p.batch == 0 {
        return Ok(());
    }
    let bf16 = cudaDataType_t::CUDA_R_16BF;
    let f32_t = cudaDataType_t::CUDA_R_32F;
    let c_type = if out.dtype == Dtype::F32 { f32_t } else { bf16 };
    // --matmul-precision is about f32 storage: in the bf16 mode (where it can only be f32 or bf16)
    // the bf16 operands multiply as they are and any f32 ones in full f32
    let fast = if ctx.compute_dtype == Dtype::Bf16 { None } else { compute_type(ctx.matmul_precision) };
    match (ctx.blas(), t, fast) {
        (Some(blas), Dtype::F32, None) => sgemm(ctx, blas, out, a, b, &p),
        (Some(blas), Dtype::F32, Some(compute)) => gemm_ex(ctx, blas, (out, f32_t), (a, b, f32_t), &p, compute),
        // bf16 storage: the operands already are bf16 (--matmul-precision does not apply)
        (Some(blas), Dtype::Bf16, _) => gemm_ex(ctx, blas, (out, c_type), (a, b, bf16), &p, cublasComputeType_t::CUBLAS_COMPUTE_32F),
        (None, _, Some(_)) if t == Dtype::F32 => Err(err(format!("matmul precision {} needs cuBLAS; the SIMT matmul is f32 only", ctx.matmul_precision))),
        (None, _, _) => {
            let cfg = LaunchConfig { grid_dim: (p.n.div_ceil(32), p.m.div_ceil(32), p.batch), block_dim: (32, 8, 1), shared_mem_bytes: 0 };
            match (out.dtype, t) {
                (Dtype::F32, Dtype::F32) => launch!(ctx, "matmul", "matmul", cfg, &out.ptr, &a.ptr, &b.ptr, &p),
                (Dtype::Bf16, _) => launch!(ctx, "matmul", "matmul_bf16", cfg, &out.ptr, &a.ptr, &b.ptr, &p),
                (Dtype::F32, Dtype::Bf16) => launch!(ctx, "matmul", "matmul_bf16_out_f32", cfg, &out.ptr, &a.ptr, &b.ptr, &p),
            }
        }
    }
}

/// The cuBLAS compute type of a reduced operand precision (`None` for f32: plain `sgemm`).
pub fn compute_type(p: MatmulPrecision) -> Option<cublasComputeType_t> {
    match p {
        MatmulPrecision::F32 => None,
        MatmulPrecision::Tf32 => Some(cublasComputeType_t::CUBLAS_COMPUTE_32F_FAST_TF32),
        MatmulPrecision::Bf16 => Some(cublasComputeType_t::CUBLAS_COMPUTE_32F_FAST_16BF),
        MatmulPrecision::F16 => Some(cublasComputeType_t::CUBLAS_COMPUTE_32F_FAST_16F),
    }
}

pub(super) fn bind(ctx: &Context) -> Result<()> {
    // cuBLAS runs in the calling thread's current context: make it ours (cudarc's launches and
    // copies do this themselves)
    ctx.ctx.bind_to_thread().map_err(|e| err(format!("binding the CUDA context: {e:?}")))
}

/// [`cublas_config`]'s product of f32 operands with `cublasSgemmStridedBatched`.
fn sgemm(ctx: &Context, blas: &CudaBlas, out: DevPtr<'_>, a: DevPtr<'_>, b: DevPtr<'_>, p: &MatmulParams) -> Result<()> {
    let cfg = cublas_config(p);
    let g = &cfg.gemm;
    bind(ctx)?;
    // SAFETY: the operands hold every matrix of the batch (checked by `gemm`), the pointers are
    // live f32 device allocations borrowed for this call, used on the context's stream (the
    // handle's), and alpha / beta are host values that outlive the call.
    unsafe {
        cudarc::cublas::result::sgemm_strided_batched(
            *blas.handle(),
            g.transa,
            g.transb,
            g.m,
            g.n,
            g.k,
            &g.alpha,
            b.ptr as *const f32,
            g.lda,
            cfg.stride_a,
            a.ptr as *const f32,
            g.ldb,
            cfg.stride_b,
            &g.beta,
            out.ptr as *mut f32,
            g.ldc,
            cfg.stride_c,
            cfg.batch_size,
        )
    }
    .map_err(|e| err(format!("cuBLAS sgemm {}x{}x{}: {e:?}", p.m, p.n, p.k)))
}

/// [`cublas_config`]'s product through `cublasGemmStridedBatchedEx`: A and B of type `ab`, C of
/// type `c`, f32 alpha / beta, compute type `compute` (f32 accumulation in every case).
fn gemm_ex(
    ctx: &Context,
    blas: &CudaBlas,
    (out, c): (DevPtr<'_>, cudaDataType_t),
    (a, b, ab): (DevPtr<'_>, DevPtr<'_>, cudaDataType_t),
    p: &MatmulParams,
    compute: cublasComputeType_t,
) -> Result<()> {
    let cfg = cublas_config(p);
    let g = &cfg.gemm;
    bind(ctx)?;
    // SAFETY: the operands hold every matrix of the batch (checked by `gemm`) in the types named,
    // the pointers are live device allocations borrowed for this call, used on the context's
    // stream (on which the handle runs), and alpha / beta are host f32 values (cuBLAS's default
    // pointer mode; f32 scalars go with every CUBLAS_COMPUTE_32F* type) that outlive the call.
    unsafe {
        cudarc::cublas::result::gemm_strided_batched_ex(
            *blas.handle(),
            g.transa,
            g.transb,
            g.m,
            g.n,
            g.k,
            (&g.alpha) as *const f32 as *const _,
            b.ptr as *const _,
            ab,
            g.lda,
            cfg.stride_a,
            a.ptr as *const _,
            ab,
            g.ldb,
            cfg.stride_b,
            (&g.beta) as *const f32 as *const _,
            out.ptr as *mut _,
            c,
            g.ldc,
            cfg.stride_c,
            cfg.batch_size,
            compute,
            cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
        )
    }
    .map_err(|e| err(format!("cuBLAS GemmStridedBatchedEx ({ab:?} operands, {c:?} out, {compute:?}) {}x{}x{}: {e:?}", p.m, p.n, p.k)))
}

pub fn matmul(ctx: &Context, out: &mut CudaBuf, a: &CudaBuf, b: &CudaBuf, p: MatmulParams) -> Result<()> {
    let s = ctx.stream();
    let (a_len, b_len) = (a.len(), b.len());
    let out_len = out.len();
    gemm(ctx, DevPtr::of_mut(s, out, 0..out_len)?, DevPtr::of(s, a, 0..a_len)?, DevPtr::of(s, b, 0..b_len)?, p)
}

pub fn bias_add(ctx: &Context, out: &mut CudaBuf, bias: &CudaBuf, p: BiasParams) -> Result<()> {
    let t = types("bias_add", &[("out", out), ("bias", bias)], &[])?;
    let (n, c) = (p.n as usize, p.c as usize);
    if out.len() < n * c || bias.len() < c {
        return Err(err(format!("bias_add: out holds {}, bias {}; [{n}, {c}] needs {} and {c}", out.len(), bias.len(), n * c)));
    }
    if n * c == 0 {
        return Ok(());
    }
    launch!(ctx, "matmul", "bias_add"[t], linear(n * c, 256), out, bias, &p)
}

pub fn bias_bwd(ctx: &Context, dbias: &mut CudaBuf, dout: &CudaBuf, p: BiasParams) -> Result<()> {
    let t = types("bias_bwd", &[("dbias", dbias), ("dout", dout)], &[])?;
    let (n, c) = (p.n as usize, p.c as usize);
    if dout.len() < n * c || dbias.len() < c {
        return Err(err(format!("bias_bwd: dout holds {}, dbias {}; [{n}, {c}] needs {} and {c}", dout.len(), dbias.len(), n * c)));
    }
    if c == 0 {
        return Ok(());
    }
    // two stages (column_sum.rs): chunks of rows into the scratch, then each column's chunks in order
    let rc = row_chunks(n, c);
    let (rows, chunks) = (rc.rows as u32, rc.chunks as u32);
    rc.with_partials(ctx, 1, c, |partial| {
        launch!(ctx, "matmul", "bias_bwd"[t], rc.stage1(c), &mut *dbias, &mut *partial, dout, &rows, &p)?;
        if chunks > 1 {
            launch!(ctx, "matmul", "bias_bwd_final"[t], rc.stage2(c), dbias, &*partial, &chunks, &p)?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::ops::Backend;
    use cudarc::cublas::sys::cublasOperation_t;

    /// cuBLAS's `sgemm_strided_batched` semantics (column-major) on host slices.
    fn col_major_gemm(cfg: &StridedBatchedConfig<f32>, a: &[f32], b: &[f32], c: &mut [f32]) {
        let g = &cfg.gemm;
        let at = |x: &[f32], op: cublasOperation_t, ld: i32, row: i32, col: i32| match op {
            CUBLAS_OP_N => x[(row + col * ld) as usize],
            _ => x[(col + row * ld) as usize],
        };
        for z in 0..cfg.batch_size as i64 {
            let (a, b) = (&a[(z * cfg.stride_a) as usize..], &b[(z * cfg.stride_b) as usize..]);
            let c = &mut c[(z * cfg.stride_c) as usize..];
            for j in 0..g.n {
                for i in 0..g.m {
                    let dot: f32 = (0..g.k).map(|l| at(a, g.transa, g.lda, i, l) * at(b, g.transb, g.ldb, l, j)).sum();
                    let dst = &mut c[(i + j * g.ldc) as usize];
                    *dst = g.alpha * dot + g.beta * *dst;
                }
            }
        }
    }

    #[test]
    fn each_reduced_precision_has_its_fast_compute_type() {
        use cublasComputeType_t::*;
        assert_eq!(compute_type(MatmulPrecision::F32), None);
        assert_eq!(compute_type(MatmulPrecision::Tf32), Some(CUBLAS_COMPUTE_32F_FAST_TF32));
        assert_eq!(compute_type(MatmulPrecision::Bf16), Some(CUBLAS_COMPUTE_32F_FAST_16BF));
        assert_eq!(compute_type(MatmulPrecision::F16), Some(CUBLAS_COMPUTE_32F_FAST_16F));
    }

    #[test]
    fn the_cublas_call_computes_the_row_major_product() {
        let cpu = crate::backend::CpuBackend::new();
        let mut rng = crate::data::rng::Rng::new(5);
        for (m, n, k, batch, ta, tb, acc) in
            [(3, 5, 4, 1, false, false, false), (4, 3, 6, 2, true, false, true), (5, 2, 3, 3, false, true, false), (2, 7, 5, 2, true, true, true)]
        {
            let mut p = MatmulParams::new(m, n, k, ta, tb).accumulate(acc).batched(batch, m * k, 0, m * n);
            p.alpha = 0.5;
            let a: Vec<f32> = (0..batch * m * k).map(|_| rng.normal()).collect();
            let b: Vec<f32> = (0..k * n).map(|_| rng.normal()).collect();
            let c0: Vec<f32> = (0..batch * m * n).map(|_| rng.normal()).collect();
            let mut want = cpu.upload(&c0).unwrap();
            cpu.matmul(&mut want, &cpu.upload(&a).unwrap(), &cpu.upload(&b).unwrap(), p).unwrap();
            let want = cpu.download(&want).unwrap();
            let mut got = c0.clone();
            col_major_gemm(&cublas_config(&p), &b, &a, &mut got);
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!((g - w).abs() < 1e-5, "{m}x{n}x{k} batch {batch} ta {ta} tb {tb} acc {acc}: [{i}] {g} vs {w}");
            }
        }
    }
}

/// `matmul_bias`: the bias in cuBLASLt's epilogue where it takes the product, else the reference.
pub fn matmul_bias(be: &CudaBackend, out: &mut CudaBuf, a: &CudaBuf, b: &CudaBuf, bias: &CudaBuf, p: MatmulParams) -> Result<()> {
    if epilogue::matmul_bias(&be.ctx, out, a, b, bias, p)? {
        return Ok(());
    }
    matmul_bias_unfused(be, out, a, b, bias, p)
}

/// `matmul_bias_gelu`: `pre` and `out` from cuBLASLt's epilogue where it takes the product, else
/// the reference.
#[allow(clippy::too_many_arguments)]
pub fn matmul_bias_gelu(
    be: &CudaBackend,
    out: &mut CudaBuf,
    pre: &mut CudaBuf,
    a: &CudaBuf,
    b: &CudaBuf,
    bias: Option<&CudaBuf>,
    p: MatmulParams,
) -> Result<()> {
    if epilogue::matmul_bias_gelu(&be.ctx, out, pre, a, b, bias, p)? {
        return Ok(());
    }
    matmul_bias_gelu_unfused(be, out, pre, a, b, bias, p)
}

/// `matmul_gelu_bwd`: the GELU gradient in cuBLASLt's epilogue where it takes the product (`dact`
/// untouched), else the reference.
#[allow(clippy::too_many_arguments)]
pub fn matmul_gelu_bwd(be: &CudaBackend, dinp: &mut CudaBuf, dact: &mut CudaBuf, a: &CudaBuf, b: &CudaBuf, pre: &CudaBuf, p: MatmulParams) -> Result<()> {
    if epilogue::matmul_gelu_bwd(&be.ctx, dinp, a, b, pre, p)? {
        return Ok(());
    }
    matmul_gelu_bwd_unfused(be, dinp, dact, a, b, pre, p)
}
