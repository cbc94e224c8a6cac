//! The CPU backend: the reference every other backend is tested against, and the embedded
//! default. Buffers are host `Vec`s; ops run synchronously, multithreaded with rayon; matmuls go
//! through the `gemm` crate. One file per op family, with the same names as `kernels/*.cu` and
//! `shaders/*.wgsl`.

pub mod activation;
pub mod advantage;
pub mod attention;
pub mod cross_entropy;
pub mod decode;
pub mod elementwise;
pub mod embedding;
pub mod layernorm;
pub mod matmul;
pub mod optimizer;
pub mod preference;
pub mod profile;
pub mod reward;
pub mod rl_losses;
pub mod rope;
pub mod sample;
pub mod simd;

use crate::backend::ops::*;
use crate::error::{Error, Result};

/// A raw pointer that may cross threads, for kernels whose parallel tasks each write a disjoint
/// set of elements of one output.
#[derive(Clone, Copy)]
pub(crate) struct SharedMut(pub(crate) *mut f32);
// SAFETY: users guarantee that tasks write disjoint elements and outlive no borrow.
unsafe impl Send for SharedMut {}
unsafe impl Sync for SharedMut {}

impl SharedMut {
    /// Going through a method makes closures capture the whole (Send + Sync) wrapper.
    pub(crate) fn ptr(self) -> *mut f32 {
        self.0
    }
}

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

/// Shapes, temperature, chunk and targets of `logprob_gather_*`.
fn check_logprob(op: &str, h: &[f32], targets: &[i32], w: &[f32], p: LogprobParams) -> Result<()> {
    let (n, c, v) = (p.n as usize, p.c as usize, p.v as usize);
    check(p.temperature > 0.0 && p.temperature.is_finite(), op, "temperature must be positive")?;
    check(p.chunk > 0 && v > 0, op, "chunk and vocabulary must be positive")?;
    check(h.len() >= n * c && targets.len() >= n, op, "h or targets shorter than n rows")?;
    check(w.len() >= v * c, op, "w smaller than [v, c]")?;
    let bad = targets[..n].iter().find(|&&t| t >= p.v as i32);
    check(bad.is_none(), op, &format!("target {:?} outside the vocabulary of {}", bad, p.v))
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

    fn scatter_rows(&self, out: &mut Vec<f32>, inp: &Vec<f32>, rows: &Vec<i32>, p: ScatterParams) -> Result<()> {
        let _t = profile::OpTimer::start("scatter_rows");
        let (n, w) = (p.n as usize, p.width as usize);
        check(rows.len() >= n, "scatter_rows", "fewer rows than n")?;
        check(w <= p.dst_row as usize && out.len() >= p.dst_rows as usize * p.dst_row as usize, "scatter_rows", "out smaller than dst_rows x dst_row")?;
        check(n == 0 || inp.len() >= (n - 1) * p.src_row as usize + p.src_off as usize + w, "scatter_rows", "input smaller than n rows")?;
        let bad = rows[..n].iter().find(|&&r| r < 0 || r as u32 >= p.dst_rows);
        check(bad.is_none(), "scatter_rows", &format!("row {bad:?} outside the {} rows of out", p.dst_rows))?;
        attention::scatter_rows(out, inp, rows, p);
        Ok(())
    }
    fn attention_decode_fwd(
        &self,
        out: &mut Vec<f32>,
        lse: &mut Vec<f32>,
        q: &Vec<f32>,
        cache: &Vec<f32>,
        rows: &Vec<i32>,
        p: AttentionDecodeParams,
    ) -> Result<()> {
        let _t = profile::OpTimer::start("attention_decode_fwd");
        check(p.nkv > 0 && p.nh % p.nkv == 0, "attention_decode_fwd", "nh must be a multiple of nkv")?;
        check(p.t_max > 0 && rows.len() >= p.n as usize, "attention_decode_fwd", "t_max must be positive and rows hold n entries")?;
        let bad = rows[..p.n as usize].iter().find(|&&r| r < 0 || r as u64 >= p.slots as u64 * p.t_max as u64);
        check(bad.is_none(), "attention_decode_fwd", &format!("cache row {bad:?} outside the {} x {} cache", p.slots, p.t_max))?;
        attention::attention_decode_fwd(out, lse, q, cache, rows, p);
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
    fn buffer_key(&self, buf: &Vec<f32>) -> u64 {
        buf.as_ptr() as u64
    }
    fn sample(&self, out: &mut Vec<i32>, logits: &Vec<f32>, steps: &Vec<i32>, p: SampleParams) -> Result<()> {
        let _t = profile::OpTimer::start("sample");
        let (n, v) = (p.n as usize, p.v as usize);
        check(
            out.len() >= n && logits.len() >= n * v,
            "sample",
            &format!("out needs {n} values and logits {} (they hold {} and {})", n * v, out.len(), logits.len()),
        )?;
        check((p.step_at as usize) < steps.len(), "sample", &format!("step_at {} is outside the {} values of steps", p.step_at, steps.len()))?;
        sample::sample(out, logits, steps[p.step_at as usize] as u32, p);
        Ok(())
    }
    fn decode_advance(
        &self,
        state: &mut Vec<i32>,
        history: &mut Vec<i32>,
        tokens: &mut Vec<i32>,
        positions: &mut Vec<i32>,
        cache_rows: &mut Vec<i32>,
        record_rows: &mut Vec<i32>,
        sampled: &Vec<i32>,
        stop_ids: &Vec<i32>,
        p: DecodeAdvanceParams,
    ) -> Result<()> {
        let _t = profile::OpTimer::start("decode_advance");
        const OP: &str = "decode_advance";
        let lens = [state.len(), history.len(), tokens.len(), positions.len(), cache_rows.len(), record_rows.len(), sampled.len(), stop_ids.len()];
        for (have, (what, want)) in lens.into_iter().zip(p.min_lens()) {
            check(have >= want, OP, &format!("{what} holds {have} values, needs {want}"))?;
        }
        decode::decode_advance(state, history, tokens, positions, cache_rows, record_rows, sampled, stop_ids, p).map_err(|r| Error::Backend {
            backend: "cpu",
            msg: format!("{OP}: row {r}: cache row {} is outside the {} slots of {} positions, or its slot's history is full", cache_rows[r], p.slots, p.t_max),
        })
    }

    fn logprob_gather_fwd(
        &self,
        logp: &mut Vec<f32>,
        entropy: &mut Vec<f32>,
        lse: &mut Vec<f32>,
        h: &Vec<f32>,
        targets: &Vec<i32>,
        w: &Vec<f32>,
        p: LogprobParams,
    ) -> Result<()> {
        let _t = profile::OpTimer::start("logprob_gather_fwd");
        let op = "logprob_gather_fwd";
        check_logprob(op, h, targets, w, p)?;
        let n = p.n as usize;
        check(logp.len() >= n && entropy.len() >= n && lse.len() >= n, op, "output shorter than n")?;
        rl_losses::logprob_gather_fwd(logp, entropy, lse, h, targets, w, p);
        Ok(())
    }
    fn logprob_gather_bwd(
        &self,
        dh: &mut Vec<f32>,
        dw: &mut Vec<f32>,
        dlogp: &Vec<f32>,
        dentropy: &Vec<f32>,
        h: &Vec<f32>,
        targets: &Vec<i32>,
        lse: &Vec<f32>,
        entropy: &Vec<f32>,
        w: &Vec<f32>,
        p: LogprobParams,
    ) -> Result<()> {
        let _t = profile::OpTimer::start("logprob_gather_bwd");
        let op = "logprob_gather_bwd";
        check_logprob(op, h, targets, w, p)?;
        let (n, c, v) = (p.n as usize, p.c as usize, p.v as usize);
        check(dh.len() >= n * c && dw.len() >= v * c, op, "dh or dw smaller than h or w")?;
        check(dlogp.len() >= n && dentropy.len() >= n && lse.len() >= n && entropy.len() >= n, op, "dlogp, dentropy, lse or entropy shorter than n")?;
        rl_losses::logprob_gather_bwd(dh, dw, dlogp, dentropy, h, targets, lse, entropy, w, p);
        Ok(())
    }
    fn kl_penalty_fwd(&self, kl: &mut Vec<f32>, logp: &Vec<f32>, ref_logp: &Vec<f32>, mask: &Vec<f32>, p: KlParams) -> Result<()> {
        let _t = profile::OpTimer::start("kl_penalty_fwd");
        let n = p.n as usize;
        check((1..=3).contains(&p.estimator), "kl_penalty_fwd", "estimator must be 1, 2 or 3")?;
        check([kl.len(), logp.len(), ref_logp.len(), mask.len()].iter().all(|&l| l >= n), "kl_penalty_fwd", "buffer shorter than n")?;
        rl_losses::kl_penalty_fwd(kl, logp, ref_logp, mask, p);
        Ok(())
    }
    fn kl_penalty_bwd(&self, dlogp: &mut Vec<f32>, dkl: &Vec<f32>, logp: &Vec<f32>, ref_logp: &Vec<f32>, mask: &Vec<f32>, p: KlParams) -> Result<()> {
        let _t = profile::OpTimer::start("kl_penalty_bwd");
        let n = p.n as usize;
        check((1..=3).contains(&p.estimator), "kl_penalty_bwd", "estimator must be 1, 2 or 3")?;
        check([dlogp.len(), dkl.len(), logp.len(), ref_logp.len(), mask.len()].iter().all(|&l| l >= n), "kl_penalty_bwd", "buffer shorter than n")?;
        rl_losses::kl_penalty_bwd(dlogp, dkl, logp, ref_logp, mask, p);
        Ok(())
    }
    fn ppo_loss_fwd_bwd(
        &self,
        dlogp: &mut Vec<f32>,
        dvalues: Option<&mut Vec<f32>>,
        dentropy: Option<&mut Vec<f32>>,
        stats: &mut Vec<f32>,
        logp: &Vec<f32>,
        old_logp: &Vec<f32>,
        advantages: &Vec<f32>,
        mask: &Vec<f32>,
        values: Option<&Vec<f32>>,
        old_values: Option<&Vec<f32>>,
        returns: Option<&Vec<f32>>,
        entropy: Option<&Vec<f32>>,
        ref_logp: Option<&Vec<f32>>,
        p: PpoParams,
    ) -> Result<()> {
        let _t = profile::OpTimer::start("ppo_loss_fwd_bwd");
        let op = "ppo_loss_fwd_bwd";
        let n = p.n as usize;
        check(p.aggregation <= 1, op, "aggregation must be 0 (token mean) or 1 (sequence mean)")?;
        check(p.aggregation == 0 || (p.t > 0 && n % p.t as usize == 0), op, "sequence-mean aggregation needs t > 0 dividing n")?;
        check(p.clip_low >= 0.0 && p.clip_low < 1.0 && p.clip_high >= 0.0, op, "clip range must satisfy 0 <= clip_low < 1, clip_high >= 0")?;
        check(p.value_clip >= 0.0 && p.dual_clip >= 0.0 && p.denom >= 0.0, op, "value_clip, dual_clip and denom must be >= 0")?;
        check(ref_logp.is_none() || (1..=3).contains(&p.kl_estimator), op, "kl_estimator must be 1, 2 or 3")?;
        check(stats.len() >= ppo_stat::COUNT, op, "stats shorter than ppo_stat::COUNT")?;
        check([logp, old_logp, advantages, mask].iter().all(|b| b.len() >= n) && dlogp.len() >= n, op, "buffer shorter than n")?;
        let some = [values.is_some(), old_values.is_some(), returns.is_some(), dvalues.is_some()];
        check(some.iter().all(|&s| s == some[0]), op, "values, old_values, returns and dvalues go together")?;
        check(entropy.is_some() == dentropy.is_some(), op, "entropy and dentropy go together")?;
        let long = |b: &Option<&Vec<f32>>| b.is_none_or(|b| b.len() >= n);
        check([values, old_values, returns, entropy, ref_logp].iter().all(long), op, "optional input shorter than n")?;
        check(dvalues.as_ref().is_none_or(|b| b.len() >= n) && dentropy.as_ref().is_none_or(|b| b.len() >= n), op, "optional output shorter than n")?;
        let values = match (values, old_values, returns) {
            (Some(values), Some(old_values), Some(returns)) => Some(rl_losses::ValueInputs { values, old_values, returns }),
            _ => None,
        };
        let extras = rl_losses::PpoExtras {
            dvalues: dvalues.map(|d| d.as_mut_slice()),
            dentropy: dentropy.map(|d| d.as_mut_slice()),
            values,
            entropy: entropy.map(|e| e.as_slice()),
            ref_logp: ref_logp.map(|r| r.as_slice()),
        };
        rl_losses::ppo_loss_fwd_bwd(dlogp, stats, logp, old_logp, advantages, mask, extras, p);
        Ok(())
    }

    fn gae(&self, advantages: &mut Vec<f32>, returns: &mut Vec<f32>, rewards: &Vec<f32>, values: &Vec<f32>, mask: &Vec<f32>, p: GaeParams) -> Result<()> {
        let _t = profile::OpTimer::start("gae");
        let op = "gae";
        let n = p.b as usize * p.t as usize;
        check([advantages.len(), returns.len(), rewards.len(), values.len(), mask.len()].iter().all(|&l| l >= n), op, "buffer shorter than b * t")?;
        check(p.gamma.is_finite() && p.gamma >= 0.0 && p.lambda.is_finite() && p.lambda >= 0.0, op, "gamma and lambda must be finite and >= 0")?;
        advantage::gae(advantages, returns, rewards, values, mask, p);
        Ok(())
    }
    fn masked_whiten(&self, x: &mut Vec<f32>, stats: &mut Vec<f32>, mask: &Vec<f32>, p: WhitenParams) -> Result<()> {
        let _t = profile::OpTimer::start("masked_whiten");
        let op = "masked_whiten";
        let n = p.n as usize;
        check(x.len() >= n && mask.len() >= n, op, "x or mask shorter than n")?;
        check(stats.len() >= whiten_stat::LEN, op, "stats shorter than whiten_stat::LEN")?;
        check(p.shift_mean <= 1 && p.unbiased <= 1, op, "shift_mean and unbiased must be 0 or 1")?;
        check(p.eps > 0.0 && p.eps.is_finite(), op, "eps must be positive")?;
        advantage::masked_whiten(x, stats, mask, p);
        Ok(())
    }

    fn sum_squares(&self, acc: &mut Vec<f32>, x: &Vec<f32>, p: ElementwiseParams) -> Result<()> {
        let _t = profile::OpTimer::start("sum_squares");
        optimizer::sum_squares(acc, &x[..p.n as usize]);
        Ok(())
    }
    fn ranking_loss(
        &self,
        dscores: &mut Vec<f32>,
        stats: &mut Vec<f32>,
        scores: &Vec<f32>,
        starts: &Vec<i32>,
        margins: &Vec<f32>,
        p: RankingParams,
    ) -> Result<()> {
        let _t = profile::OpTimer::start("ranking_loss");
        let g = p.n_groups as usize;
        check(starts.len() > g && margins.len() >= g && stats.len() >= 4, "ranking_loss", "starts needs n_groups + 1 entries, margins n_groups, stats 4")?;
        let ok = starts[..=g].windows(2).all(|w| w[0] >= 0 && w[1] - w[0] >= 2) && (starts[g] as usize) <= scores.len().min(dscores.len());
        check(ok, "ranking_loss", "every group needs at least 2 scores inside the buffers")?;
        reward::ranking_loss(dscores, stats, scores, starts, margins, p);
        Ok(())
    }
    fn preference_loss_fwd_bwd(
        &self,
        dlogp: &mut Vec<f32>,
        stats: &mut Vec<f32>,
        logp: &Vec<f32>,
        mask: &Vec<f32>,
        ref_sums: &Vec<f32>,
        p: PreferenceParams,
    ) -> Result<()> {
        let _t = profile::OpTimer::start("preference_loss_fwd_bwd");
        let op = "preference_loss_fwd_bwd";
        if let Err(what) = p.validate() {
            return check(false, op, what);
        }
        let n = 2 * p.pairs as usize * p.t as usize;
        check([dlogp.len(), logp.len(), mask.len()].iter().all(|&l| l >= n), op, "dlogp, logp or mask shorter than 2 pairs x t")?;
        check(ref_sums.len() >= 2 * p.pairs as usize, op, "ref_sums shorter than 2 pairs")?;
        check(stats.len() >= preference_stat::COUNT, op, "stats shorter than preference_stat::COUNT")?;
        preference::preference_loss_fwd_bwd(dlogp, stats, logp, mask, ref_sums, p);
        Ok(())
    }
    fn adamw(&self, param: &mut Vec<f32>, m: &mut Vec<f32>, v: &mut Vec<f32>, grad: &Vec<f32>, norm_sq: &Vec<f32>, p: AdamWParams) -> Result<()> {
        let _t = profile::OpTimer::start("adamw");
        let n = p.n as usize;
        check([param.len(), m.len(), v.len(), grad.len()].iter().all(|&l| l >= n), "adamw", "param, m, v or grad shorter than n")?;
        check(!norm_sq.is_empty(), "adamw", "norm_sq needs 1 value")?;
        optimizer::adamw(param, m, v, grad, norm_sq, p);
        Ok(())
    }
}
