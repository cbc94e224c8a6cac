//! The CPU backend: the reference every other backend is tested against, and the embedded
//! default. Buffers are host `Vec`s; ops run synchronously, multithreaded with rayon; matmuls go
//! through the `gemm` crate. One file per op family, with the same names as `kernels/*.cu` and
//! `shaders/*.wgsl`.

pub mod activation;
pub mod attention;
pub mod cross_entropy;
pub mod elementwise;
pub mod embedding;
pub mod layernorm;
pub mod matmul;
pub mod optimizer;
pub mod profile;
pub mod reward;
pub mod rope;
pub mod sample;
pub mod simd;

use crate::backend::ops::*;
use crate::error::{Error, Result};

/// The CPU backend. `threads` is the size of rayon's pool (0 = one per core).
#[derive(Debug, Default)]
pub struct CpuBackend {
    _private: (),
}

impl CpuBackend {
    pub fn new() -> Self {
        CpuBackend { _private: () }
    }
}

/// A buffer of `len` copies of `value`; a size the host cannot allocate is an error, not an abort.
fn try_vec<T: Clone>(len: usize, value: T) -> Result<Vec<T>> {
    let mut v = Vec::new();
    v.try_reserve_exact(len).map_err(|_| Error::Backend {
        backend: "cpu",
        msg: format!("cannot allocate a buffer of {len} values ({:.1} GiB)", (len as f64) * std::mem::size_of::<T>() as f64 / (1u64 << 30) as f64),
    })?;
    v.resize(len, value);
    Ok(v)
}

fn check(ok: bool, op: &str, what: &str) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(Error::Backend { backend: "cpu", msg: format!("{op}: {what}") })
    }
}

impl Backend for CpuBackend {
    type Buf = Vec<f32>;
    type Ids = Vec<i32>;

    fn name(&self) -> &'static str {
        "cpu"
    }

    fn device_description(&self) -> String {
        format!("cpu: {} threads (rayon), gemm {}", rayon::current_num_threads(), "0.19")
    }

    fn alloc(&self, len: usize) -> Result<Vec<f32>> {
        try_vec(len, 0.0)
    }
    fn upload(&self, data: &[f32]) -> Result<Vec<f32>> {
        Ok(data.to_vec())
    }
    fn write(&self, buf: &mut Vec<f32>, data: &[f32]) -> Result<()> {
        check(data.len() <= buf.len(), "write", "data longer than buffer")?;
        buf[..data.len()].copy_from_slice(data);
        Ok(())
    }
    fn download(&self, buf: &Vec<f32>) -> Result<Vec<f32>> {
        Ok(buf.clone())
    }
    fn len(&self, buf: &Vec<f32>) -> usize {
        buf.len()
    }
    fn alloc_ids(&self, len: usize) -> Result<Vec<i32>> {
        try_vec(len, 0)
    }
    fn upload_ids(&self, data: &[i32]) -> Result<Vec<i32>> {
        Ok(data.to_vec())
    }
    fn write_ids(&self, buf: &mut Vec<i32>, data: &[i32]) -> Result<()> {
        check(data.len() <= buf.len(), "write_ids", "data longer than buffer")?;
        buf[..data.len()].copy_from_slice(data);
        Ok(())
    }
    fn download_ids(&self, buf: &Vec<i32>) -> Result<Vec<i32>> {
        Ok(buf.clone())
    }
    fn synchronize(&self) -> Result<()> {
        Ok(())
    }

    fn fill(&self, out: &mut Vec<f32>, value: f32, p: ElementwiseParams) -> Result<()> {
        let _t = profile::OpTimer::start("fill");
        elementwise::fill(&mut out[..p.n as usize], value);
        Ok(())
    }
    fn copy(&self, out: &mut Vec<f32>, inp: &Vec<f32>, p: ElementwiseParams) -> Result<()> {
        let _t = profile::OpTimer::start("copy");
        let n = p.n as usize;
        elementwise::copy(&mut out[..n], &inp[..n]);
        Ok(())
    }
    fn add(&self, out: &mut Vec<f32>, a: &Vec<f32>, b: &Vec<f32>, p: ElementwiseParams) -> Result<()> {
        let _t = profile::OpTimer::start("add");
        let n = p.n as usize;
        elementwise::add(&mut out[..n], &a[..n], &b[..n]);
        Ok(())
    }
    fn add_inplace(&self, acc: &mut Vec<f32>, x: &Vec<f32>, p: ElementwiseParams) -> Result<()> {
        let _t = profile::OpTimer::start("add_inplace");
        let n = p.n as usize;
        elementwise::add_inplace(&mut acc[..n], &x[..n]);
        Ok(())
    }
    fn scale_inplace(&self, x: &mut Vec<f32>, s: f32, p: ElementwiseParams) -> Result<()> {
        let _t = profile::OpTimer::start("scale_inplace");
        elementwise::scale_inplace(&mut x[..p.n as usize], s);
        Ok(())
    }

    fn embedding_fwd(&self, out: &mut Vec<f32>, ids: &Vec<i32>, table: &Vec<f32>, p: EmbeddingParams) -> Result<()> {
        let _t = profile::OpTimer::start("embedding_fwd");
        let bad = ids[..p.n as usize].iter().find(|&&i| i < 0 || i as u32 >= p.vocab);
        check(bad.is_none(), "embedding_fwd", &format!("id {:?} outside the vocabulary of {}", bad, p.vocab))?;
        embedding::embedding_fwd(out, ids, table, p);
        Ok(())
    }
    fn embedding_bwd(&self, dtable: &mut Vec<f32>, dout: &Vec<f32>, ids: &Vec<i32>, p: EmbeddingParams) -> Result<()> {
        let _t = profile::OpTimer::start("embedding_bwd");
        embedding::embedding_bwd(dtable, dout, ids, p);
        Ok(())
    }

    fn layernorm_fwd(
        &self,
        out: &mut Vec<f32>,
        mean: &mut Vec<f32>,
        rstd: &mut Vec<f32>,
        inp: &Vec<f32>,
        weight: &Vec<f32>,
        bias: &Vec<f32>,
        p: NormParams,
    ) -> Result<()> {
        let _t = profile::OpTimer::start("layernorm_fwd");
        layernorm::layernorm_fwd(out, mean, rstd, inp, weight, bias, p);
        Ok(())
    }
    fn layernorm_bwd(
        &self,
        dinp: &mut Vec<f32>,
        dweight: &mut Vec<f32>,
        dbias: &mut Vec<f32>,
        dout: &Vec<f32>,
        inp: &Vec<f32>,
        mean: &Vec<f32>,
        rstd: &Vec<f32>,
        weight: &Vec<f32>,
        p: NormParams,
    ) -> Result<()> {
        let _t = profile::OpTimer::start("layernorm_bwd");
        layernorm::layernorm_bwd(dinp, dweight, dbias, dout, inp, mean, rstd, weight, p);
        Ok(())
    }
    fn rmsnorm_fwd(&self, out: &mut Vec<f32>, rstd: &mut Vec<f32>, inp: &Vec<f32>, weight: &Vec<f32>, p: NormParams) -> Result<()> {
        let _t = profile::OpTimer::start("rmsnorm_fwd");
        layernorm::rmsnorm_fwd(out, rstd, inp, weight, p);
        Ok(())
    }
    fn rmsnorm_bwd(
        &self,
        dinp: &mut Vec<f32>,
        dweight: &mut Vec<f32>,
        dout: &Vec<f32>,
        inp: &Vec<f32>,
        rstd: &Vec<f32>,
        weight: &Vec<f32>,
        p: NormParams,
    ) -> Result<()> {
        let _t = profile::OpTimer::start("rmsnorm_bwd");
        layernorm::rmsnorm_bwd(dinp, dweight, dout, inp, rstd, weight, p);
        Ok(())
    }

    fn matmul(&self, out: &mut Vec<f32>, a: &Vec<f32>, b: &Vec<f32>, p: MatmulParams) -> Result<()> {
        let _t = profile::OpTimer::start("matmul");
        let (m, n, k, batch) = (p.m as usize, p.n as usize, p.k as usize, p.batch.max(1) as usize);
        let last = |stride: u32, size: usize| (batch - 1) * stride as usize + size;
        check(out.len() >= last(p.stride_out, m * n), "matmul", "output buffer too small")?;
        check(a.len() >= last(p.stride_a, m * k), "matmul", "operand a too small")?;
        check(b.len() >= last(p.stride_b, k * n), "matmul", "operand b too small")?;
        matmul::matmul(out, a, b, p);
        Ok(())
    }
    fn bias_add(&self, out: &mut Vec<f32>, bias: &Vec<f32>, p: BiasParams) -> Result<()> {
        let _t = profile::OpTimer::start("bias_add");
        matmul::bias_add(out, bias, p);
        Ok(())
    }
    fn bias_bwd(&self, dbias: &mut Vec<f32>, dout: &Vec<f32>, p: BiasParams) -> Result<()> {
        let _t = profile::OpTimer::start("bias_bwd");
        matmul::bias_bwd(dbias, dout, p);
        Ok(())
    }

    fn gelu_fwd(&self, out: &mut Vec<f32>, inp: &Vec<f32>, p: ElementwiseParams) -> Result<()> {
        let _t = profile::OpTimer::start("gelu_fwd");
        let n = p.n as usize;
        activation::gelu_fwd(&mut out[..n], &inp[..n]);
        Ok(())
    }
    fn gelu_bwd(&self, dinp: &mut Vec<f32>, dout: &Vec<f32>, inp: &Vec<f32>, p: ElementwiseParams) -> Result<()> {
        let _t = profile::OpTimer::start("gelu_bwd");
        let n = p.n as usize;
        activation::gelu_bwd(&mut dinp[..n], &dout[..n], &inp[..n]);
        Ok(())
    }
    fn swiglu_fwd(&self, out: &mut Vec<f32>, gate: &Vec<f32>, up: &Vec<f32>, p: ElementwiseParams) -> Result<()> {
        let _t = profile::OpTimer::start("swiglu_fwd");
        let n = p.n as usize;
        activation::swiglu_fwd(&mut out[..n], &gate[..n], &up[..n]);
        Ok(())
    }
    fn swiglu_bwd(&self, dgate: &mut Vec<f32>, dup: &mut Vec<f32>, dout: &Vec<f32>, gate: &Vec<f32>, up: &Vec<f32>, p: ElementwiseParams) -> Result<()> {
        let _t = profile::OpTimer::start("swiglu_bwd");
        let n = p.n as usize;
        activation::swiglu_bwd(&mut dgate[..n], &mut dup[..n], &dout[..n], &gate[..n], &up[..n]);
        Ok(())
    }

    fn rope_fwd(&self, x: &mut Vec<f32>, positions: &Vec<i32>, p: RopeParams) -> Result<()> {
        let _t = profile::OpTimer::start("rope_fwd");
        rope::rope_fwd(x, positions, p);
        Ok(())
    }
    fn rope_bwd(&self, dx: &mut Vec<f32>, positions: &Vec<i32>, p: RopeParams) -> Result<()> {
        let _t = profile::OpTimer::start("rope_bwd");
        rope::rope_bwd(dx, positions, p);
        Ok(())
    }
    fn attention_fwd(&self, out: &mut Vec<f32>, lse: &mut Vec<f32>, q: &Vec<f32>, k: &Vec<f32>, v: &Vec<f32>, p: AttentionParams) -> Result<()> {
        let _t = profile::OpTimer::start("attention_fwd");
        check(p.nkv > 0 && p.nh % p.nkv == 0, "attention_fwd", "nh must be a multiple of nkv")?;
        attention::attention_fwd(out, lse, q, k, v, p);
        Ok(())
    }
    fn attention_bwd(&self, dqkv: &mut Vec<f32>, dout: &Vec<f32>, out: &Vec<f32>, lse: &Vec<f32>, qkv: &Vec<f32>, p: AttentionParams) -> Result<()> {
        let _t = profile::OpTimer::start("attention_bwd");
        check(p.tq == p.tk && p.q_pos0 == 0, "attention_bwd", "backward needs the training layout (tq == tk, q_pos0 == 0)")?;
        attention::attention_bwd(dqkv, dout, out, lse, qkv, p);
        Ok(())
    }
    fn kv_cache_write(&self, cache: &mut Vec<f32>, qkv: &Vec<f32>, p: KvCacheParams) -> Result<()> {
        let _t = profile::OpTimer::start("kv_cache_write");
        check(p.pos0 + p.t <= p.t_max, "kv_cache_write", "cache is full")?;
        attention::kv_cache_write(cache, qkv, p);
        Ok(())
    }

    fn cross_entropy_fwd(&self, losses: &mut Vec<f32>, lse: &mut Vec<f32>, logits: &Vec<f32>, targets: &Vec<i32>, p: CrossEntropyParams) -> Result<()> {
        let _t = profile::OpTimer::start("cross_entropy_fwd");
        let bad = targets[..p.n as usize].iter().find(|&&t| t >= p.v as i32);
        check(bad.is_none(), "cross_entropy_fwd", &format!("target {:?} outside the vocabulary of {}", bad, p.v))?;
        cross_entropy::cross_entropy_fwd(losses, lse, logits, targets, p);
        Ok(())
    }
    fn cross_entropy_bwd(
        &self,
        dlogits: &mut Vec<f32>,
        dlosses: &Vec<f32>,
        logits: &Vec<f32>,
        lse: &Vec<f32>,
        targets: &Vec<i32>,
        p: CrossEntropyParams,
    ) -> Result<()> {
        let _t = profile::OpTimer::start("cross_entropy_bwd");
        cross_entropy::cross_entropy_bwd(dlogits, dlosses, logits, lse, targets, p);
        Ok(())
    }
    fn sample(&self, out: &mut Vec<i32>, logits: &Vec<f32>, p: SampleParams) -> Result<()> {
        let _t = profile::OpTimer::start("sample");
        sample::sample(out, logits, p);
        Ok(())
    }

    fn sum_squares(&self, acc: &mut Vec<f32>, x: &Vec<f32>, p: ElementwiseParams) -> Result<()> {
        let _t = profile::OpTimer::start("sum_squares");
        optimizer::sum_squares(acc, &x[..p.n as usize]);
        Ok(())
    }
    fn clip_grad(&self, x: &mut Vec<f32>, norm_sq: &Vec<f32>, p: ClipParams) -> Result<()> {
        let _t = profile::OpTimer::start("clip_grad");
        optimizer::clip_grad(x, norm_sq, p);
        Ok(())
    }
    fn ranking_loss(&self, dscores: &mut Vec<f32>, stats: &mut Vec<f32>, scores: &Vec<f32>, starts: &Vec<i32>, margins: &Vec<f32>, p: RankingParams) -> Result<()> {
        let _t = profile::OpTimer::start("ranking_loss");
        let g = p.n_groups as usize;
        check(starts.len() > g && margins.len() >= g && stats.len() >= 4, "ranking_loss", "starts needs n_groups + 1 entries, margins n_groups, stats 4")?;
        let ok = starts[..=g].windows(2).all(|w| w[0] >= 0 && w[1] - w[0] >= 2) && (starts[g] as usize) <= scores.len().min(dscores.len());
        check(ok, "ranking_loss", "every group needs at least 2 scores inside the buffers")?;
        reward::ranking_loss(dscores, stats, scores, starts, margins, p);
        Ok(())
    }
    fn adamw(&self, param: &mut Vec<f32>, m: &mut Vec<f32>, v: &mut Vec<f32>, grad: &Vec<f32>, p: AdamWParams) -> Result<()> {
        let _t = profile::OpTimer::start("adamw");
        optimizer::adamw(param, m, v, grad, p);
        Ok(())
    }
}
