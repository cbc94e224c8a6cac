//! Matmuls with fused epilogues through cuBLASLt: `Backend::matmul_bias`, `matmul_bias_gelu` and
//! `matmul_gelu_bwd`. The product is matmul.rs's: row-major `out = alpha op(a) op(b) (+ out)` is
//! column-major `D = out^T = op(b)^T op(a)^T` ([`cublas_config`]), so D has `n` rows and `m`
//! columns with leading dimension `n`. Before it writes D, cuBLASLt applies
//! - `BIAS`: `D = alpha op(A) op(B) + beta C + bias[row]`, a bias over the row-major output's
//!   columns (a linear layer's); beta 1 accumulates in place (C = D: the residual stream);
//! - `GELU_AUX_BIAS` / `GELU_AUX`: `aux = product (+ bias)`, `D = gelu(aux)` (tanh form), where
//!   aux (the pre-activation, saved for backward) has D's shape, type and leading dimension;
//! - `DGELU`: `D = gelu'(aux) * product`, aux the saved pre-activation.
//!
//! Each replaces launches and memory passes of the unfused ops: matmul + bias_add (one read and
//! one write of the output), matmul + bias_add + gelu_fwd (two of each), matmul + gelu_bwd (two
//! of each: the product never lands in memory).
//!
//! Types: A and B are the operands' type (f32 or bf16); C, D, bias and aux have `out`'s type
//! (f32 out with bf16 operands is allowed, as in matmul.rs); compute type as matmul.rs picks it
//! (f32 accumulation; the `--matmul-precision` fast types for f32 storage).
//! Algorithms: `cublasLtMatmulAlgoGetHeuristic`'s first choice for the shape, types, epilogue and
//! pointer alignment, cached per process. A combination cuBLASLt does not take (no algorithm, or
//! NOT_SUPPORTED / INVALID_VALUE) is remembered and runs unfused from then on, as every call does
//! without libcublasLt, with the SIMT matmul, with a batch, or below its level of `RLHF_CUDA_EPILOGUES`:
//! `bias` (the default) fuses the bias, `all` the GELU forward and backward too (whether those
//! pay depends on the GPU: benches/gpu_session.sh measures the three levels), `0` nothing. The
//! workspace is the lane's cuBLAS workspace (one stream orders their uses), so no call allocates
//! and these matmuls are captured into CUDA graphs like the rest.

use super::buffer::{CudaBuf, DevPtr};
use super::context::{Context, BLAS_WORKSPACE};
use super::kernels::err;
use super::matmul::{bind, check, cublas_config};
use crate::backend::ops::MatmulParams;
use crate::backend::precision::MatmulPrecision;
use crate::backend::storage::Dtype;
use crate::error::Result;
use cudarc::cublas::sys::cublasOperation_t::CUBLAS_OP_T;
use cudarc::cublaslt::result::{self as lt, CublasError};
use cudarc::cublaslt::sys;
use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Mutex;

/// Shapes whose algorithm is kept at most (past it the cache starts over).
const MAX_PLANS: usize = 4096;

/// Which epilogues run fused (`RLHF_CUDA_EPILOGUES`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum EpilogueLevel {
    /// `0`: every bias and GELU as a kernel of its own
    Off = 0,
    /// `bias` (the default): the bias epilogue; the GELU, forward and backward, as kernels
    Bias = 1,
    /// `all`: the bias and the GELU forward and backward epilogues
    All = 2,
}

impl EpilogueLevel {
    /// `RLHF_CUDA_EPILOGUES` (unset: `bias`).
    pub fn from_env() -> Result<Self> {
        Self::parse(std::env::var("RLHF_CUDA_EPILOGUES").ok().as_deref())
    }

    fn parse(value: Option<&str>) -> Result<Self> {
        match value {
            None | Some("bias") => Ok(EpilogueLevel::Bias),
            Some("0") => Ok(EpilogueLevel::Off),
            Some("all") => Ok(EpilogueLevel::All),
            Some(other) => Err(crate::error::Error::invalid(format!(
                "RLHF_CUDA_EPILOGUES={other}: expected `bias` (the default: linear layers' biases in cuBLASLt's matmul epilogue), \
                 `all` (the GELU forward and backward too) or `0` (none)"
            ))),
        }
    }

    fn from_u8(v: u8) -> Self {
        match v {
            0 => EpilogueLevel::Off,
            1 => EpilogueLevel::Bias,
            _ => EpilogueLevel::All,
        }
    }
}

/// A cuBLASLt handle (one per lane; it holds no stream: each call names its own).
pub struct LtHandle(sys::cublasLtHandle_t);

// SAFETY: the handle is an opaque pointer to cuBLASLt's per-device state, which is not bound to a
// thread; the backend uses it from one thread at a time (the context's ops run in program order).
unsafe impl Send for LtHandle {}
unsafe impl Sync for LtHandle {}

impl LtHandle {
    /// A handle when libcublasLt loads and `cublasLtCreate` succeeds, else `None` (unfused ops).
    pub fn new() -> Option<Self> {
        // SAFETY: only dlopens libcublasLt (cudarc panics on a call into a library it cannot load).
        if !unsafe { sys::is_culib_present() } {
            return None;
        }
        lt::create_handle().ok().map(LtHandle)
    }
    pub fn raw(&self) -> sys::cublasLtHandle_t {
        self.0
    }
}

impl Drop for LtHandle {
    fn drop(&mut self) {
        // SAFETY: created by `cublasLtCreate` and destroyed once, here.
        let _ = unsafe { lt::destroy_handle(self.0) };
    }
}

/// What cuBLASLt does after the product.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Epilogue {
    /// `+ bias[row]` (may accumulate into `out`)
    Bias,
    /// `aux = product`, `out = gelu(aux)`
    Gelu,
    /// `aux = product + bias[row]`, `out = gelu(aux)`
    BiasGelu,
    /// `out = gelu'(aux) * product`
    GeluBackward,
}

impl Epilogue {
    fn code(self) -> sys::cublasLtEpilogue_t {
        use sys::cublasLtEpilogue_t::*;
        match self {
            Epilogue::Bias => CUBLASLT_EPILOGUE_BIAS,
            Epilogue::Gelu => CUBLASLT_EPILOGUE_GELU_AUX,
            Epilogue::BiasGelu => CUBLASLT_EPILOGUE_GELU_AUX_BIAS,
            Epilogue::GeluBackward => CUBLASLT_EPILOGUE_DGELU,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Epilogue::Bias => "bias",
            Epilogue::Gelu => "gelu",
            Epilogue::BiasGelu => "bias+gelu",
            Epilogue::GeluBackward => "gelu backward",
        }
    }
    /// The level of `RLHF_CUDA_EPILOGUES` that runs it fused.
    fn level(self) -> EpilogueLevel {
        match self {
            Epilogue::Bias => EpilogueLevel::Bias,
            _ => EpilogueLevel::All,
        }
    }
    fn has_bias(self) -> bool {
        matches!(self, Epilogue::Bias | Epilogue::BiasGelu)
    }
    fn has_aux(self) -> bool {
        !matches!(self, Epilogue::Bias)
    }
}

/// One fused matmul: `out (+)= alpha op(a) op(b)` with `epilogue`, its bias and aux matrix.
pub struct Fused<'a> {
    pub epilogue: Epilogue,
    pub out: DevPtr<'a>,
    pub a: DevPtr<'a>,
    pub b: DevPtr<'a>,
    pub bias: Option<DevPtr<'a>>,
    pub aux: Option<DevPtr<'a>>,
}

/// What an algorithm was chosen for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct PlanKey {
    m: u32,
    n: u32,
    k: u32,
    trans_a: u32,
    trans_b: u32,
    operands: Dtype,
    out: Dtype,
    compute: sys::cublasComputeType_t,
    epilogue: Epilogue,
    align: u32,
}

/// The level and the algorithms chosen so far (`None`: cuBLASLt does not take that combination).
pub struct Epilogues {
    level: AtomicU8,
    plans: Mutex<HashMap<PlanKey, Option<sys::cublasLtMatmulAlgo_t>>>,
}

impl Epilogues {
    pub fn new(level: EpilogueLevel) -> Self {
        Epilogues { level: AtomicU8::new(level as u8), plans: Mutex::new(HashMap::new()) }
    }
    pub fn level(&self) -> EpilogueLevel {
        EpilogueLevel::from_u8(self.level.load(Ordering::Relaxed))
    }
    pub fn set_level(&self, level: EpilogueLevel) {
        self.level.store(level as u8, Ordering::Relaxed)
    }
    fn plan(&self, key: &PlanKey) -> Option<Option<sys::cublasLtMatmulAlgo_t>> {
        self.plans.lock().unwrap_or_else(|e| e.into_inner()).get(key).copied()
    }
    fn remember(&self, key: PlanKey, algo: Option<sys::cublasLtMatmulAlgo_t>) {
        let mut plans = self.plans.lock().unwrap_or_else(|e| e.into_inner());
        if plans.len() >= MAX_PLANS {
            plans.clear();
        }
        plans.insert(key, algo);
    }
    /// What ran so far: the combinations fused and refused (run unfused), and the epilogues that
    /// ran fused at least once (for tests and benchmark logs).
    pub fn report(&self) -> EpilogueReport {
        let plans = self.plans.lock().unwrap_or_else(|e| e.into_inner());
        let mut kinds: Vec<&'static str> = plans.iter().filter(|(_, a)| a.is_some()).map(|(k, _)| k.epilogue.name()).collect();
        kinds.sort_unstable();
        kinds.dedup();
        let fused = plans.values().filter(|a| a.is_some()).count();
        EpilogueReport { fused, refused: plans.len() - fused, kinds }
    }
}

/// See [`Epilogues::report`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EpilogueReport {
    pub fused: usize,
    pub refused: usize,
    pub kinds: Vec<&'static str>,
}

/// The cuBLASLt compute type for operands of type `operands` (matmul.rs's choice).
fn compute_type(ctx: &Context, operands: Dtype) -> sys::cublasComputeType_t {
    use sys::cublasComputeType_t::*;
    if operands == Dtype::Bf16 || ctx.compute_dtype == Dtype::Bf16 {
        return CUBLAS_COMPUTE_32F;
    }
    match ctx.matmul_precision {
        MatmulPrecision::F32 => CUBLAS_COMPUTE_32F,
        MatmulPrecision::Tf32 => CUBLAS_COMPUTE_32F_FAST_TF32,
        MatmulPrecision::Bf16 => CUBLAS_COMPUTE_32F_FAST_16BF,
        MatmulPrecision::F16 => CUBLAS_COMPUTE_32F_FAST_16F,
    }
}

fn data_type(t: Dtype) -> sys::cudaDataType {
    match t {
        Dtype::F32 => sys::cudaDataType::CUDA_R_32F,
        Dtype::Bf16 => sys::cudaDataType::CUDA_R_16BF,
    }
}

/// The largest power of two up to 256 bytes dividing every address (cuBLASLt's alignment classes).
fn alignment(addresses: impl IntoIterator<Item = u64>) -> u32 {
    addresses.into_iter().map(|a| 1u32 << a.trailing_zeros().min(8)).min().unwrap_or(256)
}

/// Runs `f` with cuBLASLt when it can: `Ok(true)` when it ran, `Ok(false)` when the caller runs the
/// ops in turn instead (epilogues off or unavailable, a batch, an empty product, types cuBLASLt's
/// epilogues do not take, or a combination it refused before). Sizes are checked either way.
pub fn try_fused(ctx: &Context, f: &Fused<'_>, p: &MatmulParams) -> Result<bool> {
    let Some((handle, workspace)) = ctx.lt() else { return Ok(false) };
    let aux_ok = f.epilogue.has_aux() == f.aux.is_some() && (f.epilogue == Epilogue::Bias || p.accumulate == 0);
    let out_t = f.out.dtype;
    let types_ok = f.a.dtype == f.b.dtype && (out_t == f.a.dtype || out_t == Dtype::F32) && [f.bias, f.aux].iter().flatten().all(|x| x.dtype == out_t);
    if ctx.epilogues.level() < f.epilogue.level()
        || p.batch != 1
        || p.m == 0
        || p.n == 0
        || p.k == 0
        || !aux_ok
        || !types_ok
        || f.epilogue.has_bias() != f.bias.is_some()
    {
        return Ok(false);
    }
    check(p, f.out.len, f.a.len, f.b.len)?;
    let (m, n) = (p.m as usize, p.n as usize);
    if let Some(bias) = f.bias.filter(|b| b.len < n) {
        return Err(err(format!("matmul epilogue: `bias` holds {} values, {n} columns need {n}", bias.len)));
    }
    if let Some(aux) = f.aux.filter(|x| x.len < m * n) {
        return Err(err(format!("matmul epilogue: the pre-activation holds {} values, [{m}, {n}] needs {}", aux.len, m * n)));
    }
    let key = PlanKey {
        m: p.m,
        n: p.n,
        k: p.k,
        trans_a: p.trans_a,
        trans_b: p.trans_b,
        operands: f.a.dtype,
        out: out_t,
        compute: compute_type(ctx, f.a.dtype),
        epilogue: f.epilogue,
        align: alignment([Some(f.out), Some(f.a), Some(f.b), f.bias, f.aux].into_iter().flatten().map(|x| x.ptr)),
    };
    let cached = ctx.epilogues.plan(&key);
    if cached == Some(None) {
        return Ok(false);
    }
    bind(ctx)?;
    let call = match Call::describe(f, p, &key) {
        Ok(call) => call,
        Err(_) => {
            ctx.epilogues.remember(key, None);
            return Ok(false);
        }
    };
    let algo = match cached {
        Some(Some(algo)) => algo,
        _ => match call.heuristic(handle, &key) {
            Ok(algo) => {
                ctx.epilogues.remember(key, Some(algo));
                algo
            }
            Err(_) => {
                ctx.epilogues.remember(key, None);
                return Ok(false);
            }
        },
    };
    let alpha = p.alpha;
    let beta: f32 = if p.accumulate != 0 { 1.0 } else { 0.0 };
    // SAFETY: the descriptors are live (owned by `call`) and describe the buffers checked above:
    // cuBLAS's A is `b`, its B is `a` (matmul.rs's transposition), C and D are `out` (in place),
    // bias and aux are set in the descriptor; alpha / beta are host f32 (scale type f32) alive for
    // the call; the workspace is the current lane's, BLAS_WORKSPACE bytes, used on its stream.
    let ran = unsafe {
        lt::matmul(
            handle,
            call.desc.0,
            (&alpha) as *const f32 as *const c_void,
            (&beta) as *const f32 as *const c_void,
            f.b.ptr as *const c_void,
            call.a.0,
            f.a.ptr as *const c_void,
            call.b.0,
            f.out.ptr as *const c_void,
            call.c.0,
            f.out.ptr as *mut c_void,
            call.c.0,
            &algo,
            workspace as *mut c_void,
            BLAS_WORKSPACE,
            ctx.stream().cu_stream() as sys::cudaStream_t,
        )
    };
    match ran {
        Ok(()) => Ok(true),
        Err(e) if refused(e) => {
            ctx.epilogues.remember(key, None);
            Ok(false)
        }
        Err(e) => Err(err(format!("cuBLASLt matmul {}x{}x{} with the {:?} epilogue: {e:?}", p.m, p.n, p.k, f.epilogue))),
    }
}

fn whole<'a>(ctx: &Context, buf: &'a CudaBuf) -> Result<DevPtr<'a>> {
    DevPtr::of(ctx.stream(), buf, 0..buf.len())
}

/// `Backend::matmul_bias` fused; `Ok(false)`: run it unfused.
pub fn matmul_bias(ctx: &Context, out: &mut CudaBuf, a: &CudaBuf, b: &CudaBuf, bias: &CudaBuf, p: MatmulParams) -> Result<bool> {
    let out = whole(ctx, out)?;
    let f = Fused { epilogue: Epilogue::Bias, out, a: whole(ctx, a)?, b: whole(ctx, b)?, bias: Some(whole(ctx, bias)?), aux: None };
    try_fused(ctx, &f, &p)
}

/// `Backend::matmul_bias_gelu` fused (`out` the GELU, `pre` the aux matrix); `Ok(false)`: unfused.
pub fn matmul_bias_gelu(
    ctx: &Context,
    out: &mut CudaBuf,
    pre: &mut CudaBuf,
    a: &CudaBuf,
    b: &CudaBuf,
    bias: Option<&CudaBuf>,
    p: MatmulParams,
) -> Result<bool> {
    let (out, pre) = (whole(ctx, out)?, whole(ctx, pre)?);
    let epilogue = if bias.is_some() { Epilogue::BiasGelu } else { Epilogue::Gelu };
    let bias = bias.map(|x| whole(ctx, x)).transpose()?;
    try_fused(ctx, &Fused { epilogue, out, a: whole(ctx, a)?, b: whole(ctx, b)?, bias, aux: Some(pre) }, &p)
}

/// `Backend::matmul_gelu_bwd` fused (`pre` the aux matrix, read); `Ok(false)`: unfused.
pub fn matmul_gelu_bwd(ctx: &Context, dinp: &mut CudaBuf, a: &CudaBuf, b: &CudaBuf, pre: &CudaBuf, p: MatmulParams) -> Result<bool> {
    let out = whole(ctx, dinp)?;
    let f = Fused { epilogue: Epilogue::GeluBackward, out, a: whole(ctx, a)?, b: whole(ctx, b)?, bias: None, aux: Some(whole(ctx, pre)?) };
    try_fused(ctx, &f, &p)
}

/// Statuses that mean "not this combination" (checked before anything is launched).
fn refused(e: CublasError) -> bool {
    use sys::cublasStatus_t::*;
    matches!(e.0, CUBLAS_STATUS_NOT_SUPPORTED | CUBLAS_STATUS_INVALID_VALUE | CUBLAS_STATUS_ARCH_MISMATCH)
}

/// cuBLASLt's column-major view of a row-major product `p` (see matmul.rs): its A is our `b`,
/// its B our `a`, and C = D our `out`, each as (rows, cols, leading dimension) in storage.
#[derive(Debug, PartialEq)]
struct View {
    trans_a: bool,
    trans_b: bool,
    a: (u64, u64, i64),
    b: (u64, u64, i64),
    c: (u64, u64, i64),
}

impl View {
    fn of(p: &MatmulParams) -> Self {
        let g = cublas_config(p).gemm;
        let stored =
            |trans: bool, rows: i32, cols: i32, ld: i32| if trans { (cols as u64, rows as u64, ld as i64) } else { (rows as u64, cols as u64, ld as i64) };
        let (trans_a, trans_b) = (g.transa == CUBLAS_OP_T, g.transb == CUBLAS_OP_T);
        View { trans_a, trans_b, a: stored(trans_a, g.m, g.k, g.lda), b: stored(trans_b, g.k, g.n, g.ldb), c: (g.m as u64, g.n as u64, g.ldc as i64) }
    }
}

/// The descriptors of one call, destroyed when dropped.
struct Call {
    desc: Desc,
    a: Layout,
    b: Layout,
    c: Layout,
}

impl Call {
    fn describe(f: &Fused<'_>, p: &MatmulParams, key: &PlanKey) -> std::result::Result<Self, CublasError> {
        let v = View::of(p);
        let (ab, cd) = (data_type(key.operands), data_type(key.out));
        let layout = |t, (rows, cols, ld): (u64, u64, i64)| lt::create_matrix_layout(t, rows, cols, ld).map(Layout);
        let (a, b, c) = (layout(ab, v.a)?, layout(ab, v.b)?, layout(cd, v.c)?);
        let desc = Desc(lt::create_matmul_desc(key.compute, sys::cudaDataType::CUDA_R_32F)?);
        use sys::cublasLtMatmulDescAttributes_t::*;
        desc.set(CUBLASLT_MATMUL_DESC_TRANSA, &(v.trans_a as i32))?;
        desc.set(CUBLASLT_MATMUL_DESC_TRANSB, &(v.trans_b as i32))?;
        desc.set(CUBLASLT_MATMUL_DESC_EPILOGUE, &(f.epilogue.code() as u32))?;
        if let Some(bias) = f.bias {
            desc.set(CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias.ptr)?;
            desc.set(CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &(cd as i32))?;
        }
        if let Some(aux) = f.aux {
            desc.set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &aux.ptr)?;
            desc.set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &v.c.2)?;
        }
        Ok(Call { desc, a, b, c })
    }

    /// cuBLASLt's first choice of algorithm for these descriptors, this workspace and alignment.
    fn heuristic(&self, handle: sys::cublasLtHandle_t, key: &PlanKey) -> std::result::Result<sys::cublasLtMatmulAlgo_t, CublasError> {
        let pref = Pref(lt::create_matmul_pref()?);
        use sys::cublasLtMatmulPreferenceAttributes_t::*;
        pref.set(CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &(BLAS_WORKSPACE as u64))?;
        for attr in [
            CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES,
            CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
            CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES,
            CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES,
        ] {
            pref.set(attr, &key.align)?;
        }
        // SAFETY: every descriptor is live; the call only reads them and writes its result.
        let found = unsafe { lt::get_matmul_algo_heuristic(handle, self.desc.0, self.a.0, self.b.0, self.c.0, self.c.0, pref.0) }?;
        Ok(found.algo)
    }
}

struct Desc(sys::cublasLtMatmulDesc_t);
struct Layout(sys::cublasLtMatrixLayout_t);
struct Pref(sys::cublasLtMatmulPreference_t);

impl Desc {
    fn set<T>(&self, attr: sys::cublasLtMatmulDescAttributes_t, value: &T) -> std::result::Result<(), CublasError> {
        // SAFETY: the descriptor is live; `value` is the attribute's type (the caller's choice,
        // matching cuBLASLt's table) and is copied during the call.
        unsafe { lt::set_matmul_desc_attribute(self.0, attr, value as *const T as *const c_void, std::mem::size_of::<T>()) }
    }
}

impl Pref {
    fn set<T>(&self, attr: sys::cublasLtMatmulPreferenceAttributes_t, value: &T) -> std::result::Result<(), CublasError> {
        // SAFETY: as for `Desc::set`.
        unsafe { lt::set_matmul_pref_attribute(self.0, attr, value as *const T as *const c_void, std::mem::size_of::<T>()) }
    }
}

// SAFETY (the three drops): each was created by its cuBLASLt constructor and is destroyed once.
impl Drop for Desc {
    fn drop(&mut self) {
        let _ = unsafe { lt::destroy_matmul_desc(self.0) };
    }
}
impl Drop for Layout {
    fn drop(&mut self) {
        let _ = unsafe { lt::destroy_matrix_layout(self.0) };
    }
}
impl Drop for Pref {
    fn drop(&mut self) {
        let _ = unsafe { lt::destroy_matmul_pref(self.0) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alignment_is_the_largest_common_power_of_two_up_to_256() {
        let at = |addresses: &[u64]| alignment(addresses.iter().copied());
        assert_eq!(at(&[0x7f00_0000_0000, 0x7f00_0000_0100]), 256);
        assert_eq!(at(&[0x7f00_0000_0000, 0x7f00_0000_0010]), 16);
        assert_eq!(at(&[0x7f00_0000_0000, 0x7f00_0000_0102]), 2);
    }

    /// cuBLASLt's semantics on host slices for a [`View`]: `D = alpha op(A) op(B) + beta C +
    /// bias[row]`, column-major, reading every matrix only inside its (rows, cols, ld) layout.
    fn lt_bias_product(v: &View, alpha: f32, beta: f32, a: &[f32], b: &[f32], bias: &[f32], c: &mut [f32]) {
        let at = |x: &[f32], (rows, cols, ld): (u64, u64, i64), trans: bool, i: u64, j: u64| {
            let (r, c) = if trans { (j, i) } else { (i, j) };
            assert!(r < rows && c < cols && rows as i64 <= ld, "({r}, {c}) outside {rows}x{cols} ld {ld}");
            x[(r as i64 + c as i64 * ld) as usize]
        };
        let (m, n, ld) = v.c;
        let k = if v.trans_a { v.a.0 } else { v.a.1 };
        for j in 0..n {
            for i in 0..m {
                let dot: f32 = (0..k).map(|l| at(a, v.a, v.trans_a, i, l) * at(b, v.b, v.trans_b, l, j)).sum();
                let d = &mut c[(i as i64 + j as i64 * ld) as usize];
                *d = alpha * dot + beta * *d + bias[i as usize];
            }
        }
    }

    #[test]
    fn the_bias_epilogue_of_the_column_major_view_is_matmul_then_bias_add() {
        use crate::backend::ops::Backend;
        let cpu = crate::backend::CpuBackend::new();
        let mut rng = crate::data::rng::Rng::new(11);
        for (m, n, k, ta, tb, acc) in [(3, 5, 4, false, false, false), (4, 3, 6, true, false, true), (5, 2, 3, false, true, true), (2, 7, 5, true, true, false)]
        {
            let mut p = MatmulParams::new(m, n, k, ta, tb).accumulate(acc);
            p.alpha = 0.75;
            let a: Vec<f32> = (0..m * k).map(|_| rng.normal()).collect();
            let b: Vec<f32> = (0..k * n).map(|_| rng.normal()).collect();
            let bias: Vec<f32> = (0..n).map(|_| rng.normal()).collect();
            let c0: Vec<f32> = (0..m * n).map(|_| rng.normal()).collect();
            let mut want = cpu.upload(&c0).unwrap();
            let (ua, ub, ubias) = (cpu.upload(&a).unwrap(), cpu.upload(&b).unwrap(), cpu.upload(&bias).unwrap());
            crate::backend::ops::matmul_bias_unfused(&cpu, &mut want, &ua, &ub, &ubias, p).unwrap();
            let want = cpu.download(&want).unwrap();
            let mut got = c0.clone();
            lt_bias_product(&View::of(&p), p.alpha, if acc { 1.0 } else { 0.0 }, &b, &a, &bias, &mut got);
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!((g - w).abs() < 1e-5, "{m}x{n}x{k} ta {ta} tb {tb} acc {acc}: [{i}] {g} vs {w}");
            }
        }
    }

    #[test]
    fn the_level_defaults_to_bias_and_a_bad_value_names_the_variable() {
        assert_eq!(EpilogueLevel::parse(None).unwrap(), EpilogueLevel::Bias);
        assert_eq!(EpilogueLevel::parse(Some("0")).unwrap(), EpilogueLevel::Off);
        assert_eq!(EpilogueLevel::parse(Some("all")).unwrap(), EpilogueLevel::All);
        for level in [EpilogueLevel::Off, EpilogueLevel::Bias, EpilogueLevel::All] {
            assert_eq!(EpilogueLevel::from_u8(level as u8), level);
        }
        // the GELU epilogues need `all`, the bias one `bias`
        assert_eq!(Epilogue::Bias.level(), EpilogueLevel::Bias);
        assert!([Epilogue::Gelu, Epilogue::BiasGelu, Epilogue::GeluBackward].iter().all(|e| e.level() == EpilogueLevel::All));
        let e = EpilogueLevel::parse(Some("1")).unwrap_err().to_string();
        assert!(e.contains("RLHF_CUDA_EPILOGUES=1") && e.contains("`all`"), "{e}");
    }
}
