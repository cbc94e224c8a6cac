//! The CPU reference of the bf16 storage mode (`--precision bf16`): every op of [`CpuBackend`] in
//! f32 on buffers that know their type, with what an op writes into a bf16 buffer rounded to bf16
//! (round to nearest even) and bf16 inputs therefore bf16-representable. That is the semantics of
//! the CUDA bf16 kernels (bf16 loads, f32 math and accumulation, rounded stores) up to the order
//! of f32 operations and intermediate values an op keeps in f32 here, so it is what they are
//! tested against, and it runs the whole model in the mode on any machine: which buffers are
//! compute-typed, the f32 master weights and the optimiser in the loop, and the type checks of
//! every op ([`storage::op_dtype`], the table in the [`Backend`] trait doc), which fail here
//! exactly where they would fail on a GPU.

use crate::backend::cpu::CpuBackend;
use crate::backend::ops::device;
use crate::backend::ops::*;
use crate::backend::storage::{self, op_dtype};
use crate::error::Result;

const NAME: &str = "cpu-bf16";

/// A host buffer with its element type; a bf16 buffer holds bf16-representable f32 values.
#[derive(Clone, Debug)]
pub struct RefBuf {
    pub data: Vec<f32>,
    pub dtype: Dtype,
}

/// Rounds every bf16 buffer among `bufs` (what an op wrote into them) to bf16.
fn round_outputs(bufs: &mut [&mut RefBuf]) {
    for b in bufs {
        if b.dtype == Dtype::Bf16 {
            storage::round_bf16_slice(&mut b.data);
        }
    }
}

/// The CPU backend with typed buffers; `Storage::Compute` is bf16 unless set to f32.
#[derive(Debug)]
pub struct Bf16Reference {
    cpu: CpuBackend,
    compute: Dtype,
}

impl Default for Bf16Reference {
    fn default() -> Self {
        Self::new()
    }
}

impl Bf16Reference {
    pub fn new() -> Self {
        Bf16Reference { cpu: CpuBackend::new(), compute: Dtype::Bf16 }
    }
}

impl device::Buffers for Bf16Reference {
    type Buf = RefBuf;
    type Ids = Vec<i32>;
}

impl device::Device for Bf16Reference {
    fn name(&self) -> &'static str {
        NAME
    }
    fn device_description(&self) -> String {
        format!("{} with {} compute buffers", Backend::device_description(&self.cpu), self.compute)
    }
    fn compute_dtype(&self) -> Dtype {
        self.compute
    }
    fn preferred_compute_dtype(&self) -> Dtype {
        Dtype::Bf16
    }
    fn set_compute_dtype(&mut self, d: Dtype) -> Result<()> {
        self.compute = d;
        Ok(())
    }
    fn alloc_as(&self, len: usize, s: Storage) -> Result<RefBuf> {
        let dtype = match s {
            Storage::F32 => Dtype::F32,
            Storage::Compute => self.compute,
        };
        Ok(RefBuf { data: Backend::alloc(&self.cpu, len)?, dtype })
    }
    fn dtype(&self, buf: &RefBuf) -> Dtype {
        buf.dtype
    }
    fn alloc(&self, len: usize) -> Result<RefBuf> {
        Backend::alloc_as(self, len, Storage::F32)
    }
    fn upload(&self, data: &[f32]) -> Result<RefBuf> {
        Ok(RefBuf { data: data.to_vec(), dtype: Dtype::F32 })
    }
    fn write(&self, buf: &mut RefBuf, data: &[f32]) -> Result<()> {
        Backend::write(&self.cpu, &mut buf.data, data)?;
        round_outputs(&mut [buf]);
        Ok(())
    }
    fn download(&self, buf: &RefBuf) -> Result<Vec<f32>> {
        Ok(buf.data.clone())
    }
    fn download_range(&self, buf: &RefBuf, start: usize, len: usize) -> Result<Vec<f32>> {
        Backend::download_range(&self.cpu, &buf.data, start, len)
    }
    fn len(&self, buf: &RefBuf) -> usize {
        buf.data.len()
    }
    fn alloc_ids(&self, len: usize) -> Result<Vec<i32>> {
        Backend::alloc_ids(&self.cpu, len)
    }
    fn upload_ids(&self, data: &[i32]) -> Result<Vec<i32>> {
        Backend::upload_ids(&self.cpu, data)
    }
    fn write_ids(&self, buf: &mut Vec<i32>, data: &[i32]) -> Result<()> {
        Backend::write_ids(&self.cpu, buf, data)
    }
    fn download_ids(&self, buf: &Vec<i32>) -> Result<Vec<i32>> {
        Backend::download_ids(&self.cpu, buf)
    }
    fn synchronize(&self) -> Result<()> {
        Ok(())
    }
}

impl family::Activation for Bf16Reference {
    fn gelu_fwd(&self, out: &mut RefBuf, inp: &RefBuf, p: ElementwiseParams) -> Result<()> {
        op_dtype(NAME, "gelu_fwd", &[("out", out.dtype), ("inp", inp.dtype)], &[])?;
        Backend::gelu_fwd(&self.cpu, &mut out.data, &inp.data, p)?;
        round_outputs(&mut [out]);
        Ok(())
    }
    fn gelu_bwd(&self, dinp: &mut RefBuf, dout: &RefBuf, inp: &RefBuf, p: ElementwiseParams) -> Result<()> {
        op_dtype(NAME, "gelu_bwd", &[("dinp", dinp.dtype), ("dout", dout.dtype), ("inp", inp.dtype)], &[])?;
        Backend::gelu_bwd(&self.cpu, &mut dinp.data, &dout.data, &inp.data, p)?;
        round_outputs(&mut [dinp]);
        Ok(())
    }
    fn swiglu_fwd(&self, out: &mut RefBuf, gate: &RefBuf, up: &RefBuf, p: ElementwiseParams) -> Result<()> {
        op_dtype(NAME, "swiglu_fwd", &[("out", out.dtype), ("gate", gate.dtype), ("up", up.dtype)], &[])?;
        Backend::swiglu_fwd(&self.cpu, &mut out.data, &gate.data, &up.data, p)?;
        round_outputs(&mut [out]);
        Ok(())
    }
    fn swiglu_bwd(&self, dgate: &mut RefBuf, dup: &mut RefBuf, dout: &RefBuf, gate: &RefBuf, up: &RefBuf, p: ElementwiseParams) -> Result<()> {
        op_dtype(NAME, "swiglu_bwd", &[("dgate", dgate.dtype), ("dup", dup.dtype), ("dout", dout.dtype), ("gate", gate.dtype), ("up", up.dtype)], &[])?;
        Backend::swiglu_bwd(&self.cpu, &mut dgate.data, &mut dup.data, &dout.data, &gate.data, &up.data, p)?;
        round_outputs(&mut [dgate, dup]);
        Ok(())
    }
}

impl family::Advantage for Bf16Reference {
    fn gae(&self, advantages: &mut RefBuf, returns: &mut RefBuf, rewards: &RefBuf, values: &RefBuf, mask: &RefBuf, p: GaeParams) -> Result<()> {
        op_dtype(
            NAME,
            "gae",
            &[],
            &[("advantages", advantages.dtype), ("returns", returns.dtype), ("rewards", rewards.dtype), ("values", values.dtype), ("mask", mask.dtype)],
        )?;
        Backend::gae(&self.cpu, &mut advantages.data, &mut returns.data, &rewards.data, &values.data, &mask.data, p)?;
        Ok(())
    }
    fn masked_whiten(&self, x: &mut RefBuf, stats: &mut RefBuf, mask: &RefBuf, p: WhitenParams) -> Result<()> {
        op_dtype(NAME, "masked_whiten", &[], &[("x", x.dtype), ("stats", stats.dtype), ("mask", mask.dtype)])?;
        Backend::masked_whiten(&self.cpu, &mut x.data, &mut stats.data, &mask.data, p)?;
        Ok(())
    }
    fn group_advantages(&self, advantages: &mut RefBuf, rewards: &RefBuf, seq_kl: &RefBuf, mask: &RefBuf, p: GroupAdvantageParams) -> Result<()> {
        op_dtype(NAME, "group_advantages", &[], &[("advantages", advantages.dtype), ("rewards", rewards.dtype), ("seq_kl", seq_kl.dtype), ("mask", mask.dtype)])?;
        Backend::group_advantages(&self.cpu, &mut advantages.data, &rewards.data, &seq_kl.data, &mask.data, p)
    }
    fn normalize_rewards(&self, out: &mut RefBuf, scores: &RefBuf, p: RewardNormParams) -> Result<()> {
        op_dtype(NAME, "normalize_rewards", &[], &[("out", out.dtype), ("scores", scores.dtype)])?;
        Backend::normalize_rewards(&self.cpu, &mut out.data, &scores.data, p)
    }
}

impl family::Attention for Bf16Reference {
    fn attention_fwd(&self, out: &mut RefBuf, lse: &mut RefBuf, q: &RefBuf, k: &RefBuf, v: &RefBuf, p: AttentionParams) -> Result<()> {
        op_dtype(NAME, "attention_fwd", &[("out", out.dtype), ("q", q.dtype), ("k", k.dtype), ("v", v.dtype)], &[("lse", lse.dtype)])?;
        Backend::attention_fwd(&self.cpu, &mut out.data, &mut lse.data, &q.data, &k.data, &v.data, p)?;
        round_outputs(&mut [out]);
        Ok(())
    }
    fn attention_bwd(&self, dqkv: &mut RefBuf, dout: &RefBuf, out: &RefBuf, lse: &RefBuf, qkv: &RefBuf, p: AttentionParams) -> Result<()> {
        op_dtype(NAME, "attention_bwd", &[("dqkv", dqkv.dtype), ("dout", dout.dtype), ("out", out.dtype), ("qkv", qkv.dtype)], &[("lse", lse.dtype)])?;
        Backend::attention_bwd(&self.cpu, &mut dqkv.data, &dout.data, &out.data, &lse.data, &qkv.data, p)?;
        round_outputs(&mut [dqkv]);
        Ok(())
    }
    fn kv_cache_write(&self, cache: &mut RefBuf, qkv: &RefBuf, p: KvCacheParams) -> Result<()> {
        op_dtype(NAME, "kv_cache_write", &[("cache", cache.dtype), ("qkv", qkv.dtype)], &[])?;
        Backend::kv_cache_write(&self.cpu, &mut cache.data, &qkv.data, p)?;
        round_outputs(&mut [cache]);
        Ok(())
    }
    fn scatter_rows(&self, out: &mut RefBuf, inp: &RefBuf, rows: &Vec<i32>, p: ScatterParams) -> Result<()> {
        op_dtype(NAME, "scatter_rows", &[("out", out.dtype), ("inp", inp.dtype)], &[])?;
        Backend::scatter_rows(&self.cpu, &mut out.data, &inp.data, rows, p)?;
        round_outputs(&mut [out]);
        Ok(())
    }
    fn attention_decode_fwd(&self, out: &mut RefBuf, lse: &mut RefBuf, q: &RefBuf, cache: &RefBuf, rows: &Vec<i32>, p: AttentionDecodeParams) -> Result<()> {
        op_dtype(NAME, "attention_decode_fwd", &[("out", out.dtype), ("q", q.dtype), ("cache", cache.dtype)], &[("lse", lse.dtype)])?;
        Backend::attention_decode_fwd(&self.cpu, &mut out.data, &mut lse.data, &q.data, &cache.data, rows, p)?;
        round_outputs(&mut [out]);
        Ok(())
    }
}

impl family::CrossEntropy for Bf16Reference {
    fn cross_entropy_fwd(&self, losses: &mut RefBuf, lse: &mut RefBuf, logits: &RefBuf, targets: &Vec<i32>, p: CrossEntropyParams) -> Result<()> {
        op_dtype(NAME, "cross_entropy_fwd", &[("logits", logits.dtype)], &[("losses", losses.dtype), ("lse", lse.dtype)])?;
        Backend::cross_entropy_fwd(&self.cpu, &mut losses.data, &mut lse.data, &logits.data, targets, p)?;
        Ok(())
    }
    fn cross_entropy_bwd(
        &self,
        dlogits: &mut RefBuf,
        dlosses: &RefBuf,
        logits: &RefBuf,
        lse: &RefBuf,
        targets: &Vec<i32>,
        p: CrossEntropyParams,
    ) -> Result<()> {
        op_dtype(NAME, "cross_entropy_bwd", &[("dlogits", dlogits.dtype), ("logits", logits.dtype)], &[("dlosses", dlosses.dtype), ("lse", lse.dtype)])?;
        Backend::cross_entropy_bwd(&self.cpu, &mut dlogits.data, &dlosses.data, &logits.data, &lse.data, targets, p)?;
        round_outputs(&mut [dlogits]);
        Ok(())
    }
}

impl family::Decode for Bf16Reference {
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
        Backend::decode_advance(&self.cpu, state, history, tokens, positions, cache_rows, record_rows, sampled, stop_ids, p)?;
        Ok(())
    }
}

impl family::Elementwise for Bf16Reference {
    fn fill(&self, out: &mut RefBuf, value: f32, p: ElementwiseParams) -> Result<()> {
        Backend::fill(&self.cpu, &mut out.data, value, p)?;
        round_outputs(&mut [out]);
        Ok(())
    }
    fn copy(&self, out: &mut RefBuf, inp: &RefBuf, p: ElementwiseParams) -> Result<()> {
        Backend::copy(&self.cpu, &mut out.data, &inp.data, p)?;
        round_outputs(&mut [out]);
        Ok(())
    }
    fn add(&self, out: &mut RefBuf, a: &RefBuf, b: &RefBuf, p: ElementwiseParams) -> Result<()> {
        op_dtype(NAME, "add", &[("out", out.dtype), ("a", a.dtype), ("b", b.dtype)], &[])?;
        Backend::add(&self.cpu, &mut out.data, &a.data, &b.data, p)?;
        round_outputs(&mut [out]);
        Ok(())
    }
    fn add_inplace(&self, acc: &mut RefBuf, x: &RefBuf, p: ElementwiseParams) -> Result<()> {
        op_dtype(NAME, "add_inplace", &[("acc", acc.dtype), ("x", x.dtype)], &[])?;
        Backend::add_inplace(&self.cpu, &mut acc.data, &x.data, p)?;
        round_outputs(&mut [acc]);
        Ok(())
    }
    fn scale_inplace(&self, x: &mut RefBuf, s: f32, p: ElementwiseParams) -> Result<()> {
        Backend::scale_inplace(&self.cpu, &mut x.data, s, p)?;
        round_outputs(&mut [x]);
        Ok(())
    }
}

impl family::Embedding for Bf16Reference {
    fn embedding_fwd(&self, out: &mut RefBuf, ids: &Vec<i32>, table: &RefBuf, p: EmbeddingParams) -> Result<()> {
        op_dtype(NAME, "embedding_fwd", &[("out", out.dtype), ("table", table.dtype)], &[])?;
        Backend::embedding_fwd(&self.cpu, &mut out.data, ids, &table.data, p)?;
        round_outputs(&mut [out]);
        Ok(())
    }
    fn embedding_bwd(&self, dtable: &mut RefBuf, dout: &RefBuf, ids: &Vec<i32>, p: EmbeddingParams) -> Result<()> {
        op_dtype(NAME, "embedding_bwd", &[("dtable", dtable.dtype), ("dout", dout.dtype)], &[])?;
        Backend::embedding_bwd(&self.cpu, &mut dtable.data, &dout.data, ids, p)?;
        round_outputs(&mut [dtable]);
        Ok(())
    }
}

impl family::Layernorm for Bf16Reference {
    fn layernorm_fwd(&self, out: &mut RefBuf, mean: &mut RefBuf, rstd: &mut RefBuf, inp: &RefBuf, weight: &RefBuf, bias: &RefBuf, p: NormParams) -> Result<()> {
        op_dtype(
            NAME,
            "layernorm_fwd",
            &[("out", out.dtype), ("inp", inp.dtype), ("weight", weight.dtype), ("bias", bias.dtype)],
            &[("mean", mean.dtype), ("rstd", rstd.dtype)],
        )?;
        Backend::layernorm_fwd(&self.cpu, &mut out.data, &mut mean.data, &mut rstd.data, &inp.data, &weight.data, &bias.data, p)?;
        round_outputs(&mut [out]);
        Ok(())
    }
    fn layernorm_bwd(
        &self,
        dinp: &mut RefBuf,
        dweight: &mut RefBuf,
        dbias: &mut RefBuf,
        dout: &RefBuf,
        inp: &RefBuf,
        mean: &RefBuf,
        rstd: &RefBuf,
        weight: &RefBuf,
        p: NormParams,
    ) -> Result<()> {
        op_dtype(
            NAME,
            "layernorm_bwd",
            &[("dinp", dinp.dtype), ("dweight", dweight.dtype), ("dbias", dbias.dtype), ("dout", dout.dtype), ("inp", inp.dtype), ("weight", weight.dtype)],
            &[("mean", mean.dtype), ("rstd", rstd.dtype)],
        )?;
        Backend::layernorm_bwd(&self.cpu, &mut dinp.data, &mut dweight.data, &mut dbias.data, &dout.data, &inp.data, &mean.data, &rstd.data, &weight.data, p)?;
        round_outputs(&mut [dinp, dweight, dbias]);
        Ok(())
    }
    fn rmsnorm_fwd(&self, out: &mut RefBuf, rstd: &mut RefBuf, inp: &RefBuf, weight: &RefBuf, p: NormParams) -> Result<()> {
        op_dtype(NAME, "rmsnorm_fwd", &[("out", out.dtype), ("inp", inp.dtype), ("weight", weight.dtype)], &[("rstd", rstd.dtype)])?;
        Backend::rmsnorm_fwd(&self.cpu, &mut out.data, &mut rstd.data, &inp.data, &weight.data, p)?;
        round_outputs(&mut [out]);
        Ok(())
    }
    fn rmsnorm_bwd(&self, dinp: &mut RefBuf, dweight: &mut RefBuf, dout: &RefBuf, inp: &RefBuf, rstd: &RefBuf, weight: &RefBuf, p: NormParams) -> Result<()> {
        op_dtype(
            NAME,
            "rmsnorm_bwd",
            &[("dinp", dinp.dtype), ("dweight", dweight.dtype), ("dout", dout.dtype), ("inp", inp.dtype), ("weight", weight.dtype)],
            &[("rstd", rstd.dtype)],
        )?;
        Backend::rmsnorm_bwd(&self.cpu, &mut dinp.data, &mut dweight.data, &dout.data, &inp.data, &rstd.data, &weight.data, p)?;
        round_outputs(&mut [dinp, dweight]);
        Ok(())
    }
}

impl family::LogprobGather for Bf16Reference {
    fn logprob_gather_fwd(
        &self,
        logp: &mut RefBuf,
        entropy: &mut RefBuf,
        lse: &mut RefBuf,
        h: &RefBuf,
        targets: &Vec<i32>,
        w: &RefBuf,
        p: LogprobParams,
    ) -> Result<()> {
        op_dtype(NAME, "logprob_gather_fwd", &[("h", h.dtype), ("w", w.dtype)], &[("logp", logp.dtype), ("entropy", entropy.dtype), ("lse", lse.dtype)])?;
        Backend::logprob_gather_fwd(&self.cpu, &mut logp.data, &mut entropy.data, &mut lse.data, &h.data, targets, &w.data, p)?;
        Ok(())
    }
    fn logprob_gather_bwd(
        &self,
        dh: &mut RefBuf,
        dw: &mut RefBuf,
        dlogp: &RefBuf,
        dentropy: &RefBuf,
        h: &RefBuf,
        targets: &Vec<i32>,
        lse: &RefBuf,
        entropy: &RefBuf,
        w: &RefBuf,
        p: LogprobParams,
    ) -> Result<()> {
        op_dtype(
            NAME,
            "logprob_gather_bwd",
            &[("dh", dh.dtype), ("dw", dw.dtype), ("h", h.dtype), ("w", w.dtype)],
            &[("dlogp", dlogp.dtype), ("dentropy", dentropy.dtype), ("lse", lse.dtype), ("entropy", entropy.dtype)],
        )?;
        Backend::logprob_gather_bwd(
            &self.cpu,
            &mut dh.data,
            &mut dw.data,
            &dlogp.data,
            &dentropy.data,
            &h.data,
            targets,
            &lse.data,
            &entropy.data,
            &w.data,
            p,
        )?;
        round_outputs(&mut [dh, dw]);
        Ok(())
    }
}

impl family::Matmul for Bf16Reference {
    fn matmul(&self, out: &mut RefBuf, a: &RefBuf, b: &RefBuf, p: MatmulParams) -> Result<()> {
        let t = op_dtype(NAME, "matmul", &[("a", a.dtype), ("b", b.dtype)], &[])?;
        if out.dtype != t {
            op_dtype(NAME, "matmul", &[], &[("out", out.dtype)])?;
        }
        Backend::matmul(&self.cpu, &mut out.data, &a.data, &b.data, p)?;
        round_outputs(&mut [out]);
        Ok(())
    }
    fn bias_add(&self, out: &mut RefBuf, bias: &RefBuf, p: BiasParams) -> Result<()> {
        op_dtype(NAME, "bias_add", &[("out", out.dtype), ("bias", bias.dtype)], &[])?;
        Backend::bias_add(&self.cpu, &mut out.data, &bias.data, p)?;
        round_outputs(&mut [out]);
        Ok(())
    }
    fn bias_bwd(&self, dbias: &mut RefBuf, dout: &RefBuf, p: BiasParams) -> Result<()> {
        op_dtype(NAME, "bias_bwd", &[("dbias", dbias.dtype), ("dout", dout.dtype)], &[])?;
        Backend::bias_bwd(&self.cpu, &mut dbias.data, &dout.data, p)?;
        round_outputs(&mut [dbias]);
        Ok(())
    }
}

impl family::Optimizer for Bf16Reference {
    fn sum_squares(&self, acc: &mut RefBuf, x: &RefBuf, p: ElementwiseParams) -> Result<()> {
        op_dtype(NAME, "sum_squares", &[], &[("acc", acc.dtype)])?;
        Backend::sum_squares(&self.cpu, &mut acc.data, &x.data, p)
    }
    fn adamw(&self, param: &mut RefBuf, m: &mut RefBuf, v: &mut RefBuf, grad: &RefBuf, norm_sq: &RefBuf, p: AdamWParams) -> Result<()> {
        op_dtype(NAME, "adamw", &[], &[("param", param.dtype), ("m", m.dtype), ("v", v.dtype), ("norm_sq", norm_sq.dtype)])?;
        Backend::adamw(&self.cpu, &mut param.data, &mut m.data, &mut v.data, &grad.data, &norm_sq.data, p)
    }
}

impl family::Preference for Bf16Reference {
    fn preference_loss_fwd_bwd(
        &self,
        dlogp: &mut RefBuf,
        stats: &mut RefBuf,
        logp: &RefBuf,
        mask: &RefBuf,
        ref_sums: &RefBuf,
        p: PreferenceParams,
    ) -> Result<()> {
        op_dtype(
            NAME,
            "preference_loss_fwd_bwd",
            &[],
            &[("dlogp", dlogp.dtype), ("stats", stats.dtype), ("logp", logp.dtype), ("mask", mask.dtype), ("ref_sums", ref_sums.dtype)],
        )?;
        Backend::preference_loss_fwd_bwd(&self.cpu, &mut dlogp.data, &mut stats.data, &logp.data, &mask.data, &ref_sums.data, p)?;
        Ok(())
    }
}

impl family::Reward for Bf16Reference {
    fn ranking_loss(&self, dscores: &mut RefBuf, stats: &mut RefBuf, scores: &RefBuf, starts: &Vec<i32>, margins: &RefBuf, p: RankingParams) -> Result<()> {
        op_dtype(NAME, "ranking_loss", &[], &[("dscores", dscores.dtype), ("stats", stats.dtype), ("scores", scores.dtype), ("margins", margins.dtype)])?;
        Backend::ranking_loss(&self.cpu, &mut dscores.data, &mut stats.data, &scores.data, starts, &margins.data, p)?;
        Ok(())
    }
}

impl family::RlLosses for Bf16Reference {
    fn kl_penalty_fwd(&self, kl: &mut RefBuf, logp: &RefBuf, ref_logp: &RefBuf, mask: &RefBuf, p: KlParams) -> Result<()> {
        op_dtype(NAME, "kl_penalty_fwd", &[], &[("kl", kl.dtype), ("logp", logp.dtype), ("ref_logp", ref_logp.dtype), ("mask", mask.dtype)])?;
        Backend::kl_penalty_fwd(&self.cpu, &mut kl.data, &logp.data, &ref_logp.data, &mask.data, p)?;
        Ok(())
    }
    fn kl_penalty_bwd(&self, dlogp: &mut RefBuf, dkl: &RefBuf, logp: &RefBuf, ref_logp: &RefBuf, mask: &RefBuf, p: KlParams) -> Result<()> {
        op_dtype(
            NAME,
            "kl_penalty_bwd",
            &[],
            &[("dlogp", dlogp.dtype), ("dkl", dkl.dtype), ("logp", logp.dtype), ("ref_logp", ref_logp.dtype), ("mask", mask.dtype)],
        )?;
        Backend::kl_penalty_bwd(&self.cpu, &mut dlogp.data, &dkl.data, &logp.data, &ref_logp.data, &mask.data, p)?;
        Ok(())
    }
    fn ppo_loss_fwd_bwd(
        &self,
        dlogp: &mut RefBuf,
        dvalues: Option<&mut RefBuf>,
        dentropy: Option<&mut RefBuf>,
        stats: &mut RefBuf,
        logp: &RefBuf,
        old_logp: &RefBuf,
        advantages: &RefBuf,
        mask: &RefBuf,
        values: Option<&RefBuf>,
        old_values: Option<&RefBuf>,
        returns: Option<&RefBuf>,
        entropy: Option<&RefBuf>,
        ref_logp: Option<&RefBuf>,
        p: PpoParams,
    ) -> Result<()> {
        op_dtype(
            NAME,
            "ppo_loss_fwd_bwd",
            &[],
            &[
                ("dlogp", dlogp.dtype),
                ("dvalues", dvalues.as_ref().map_or(Dtype::F32, |b| b.dtype)),
                ("dentropy", dentropy.as_ref().map_or(Dtype::F32, |b| b.dtype)),
                ("stats", stats.dtype),
                ("logp", logp.dtype),
                ("old_logp", old_logp.dtype),
                ("advantages", advantages.dtype),
                ("mask", mask.dtype),
                ("values", values.as_ref().map_or(Dtype::F32, |b| b.dtype)),
                ("old_values", old_values.as_ref().map_or(Dtype::F32, |b| b.dtype)),
                ("returns", returns.as_ref().map_or(Dtype::F32, |b| b.dtype)),
                ("entropy", entropy.as_ref().map_or(Dtype::F32, |b| b.dtype)),
                ("ref_logp", ref_logp.as_ref().map_or(Dtype::F32, |b| b.dtype)),
            ],
        )?;
        Backend::ppo_loss_fwd_bwd(
            &self.cpu,
            &mut dlogp.data,
            dvalues.map(|b| &mut b.data),
            dentropy.map(|b| &mut b.data),
            &mut stats.data,
            &logp.data,
            &old_logp.data,
            &advantages.data,
            &mask.data,
            values.map(|b| &b.data),
            old_values.map(|b| &b.data),
            returns.map(|b| &b.data),
            entropy.map(|b| &b.data),
            ref_logp.map(|b| &b.data),
            p,
        )?;
        Ok(())
    }
}

impl family::Rope for Bf16Reference {
    fn rope_fwd(&self, x: &mut RefBuf, positions: &Vec<i32>, p: RopeParams) -> Result<()> {
        Backend::rope_fwd(&self.cpu, &mut x.data, positions, p)?;
        round_outputs(&mut [x]);
        Ok(())
    }
    fn rope_bwd(&self, dx: &mut RefBuf, positions: &Vec<i32>, p: RopeParams) -> Result<()> {
        Backend::rope_bwd(&self.cpu, &mut dx.data, positions, p)?;
        round_outputs(&mut [dx]);
        Ok(())
    }
}

impl family::Sample for Bf16Reference {
    fn sample(&self, out: &mut Vec<i32>, logits: &RefBuf, steps: &Vec<i32>, p: SampleParams) -> Result<()> {
        op_dtype(NAME, "sample", &[("logits", logits.dtype)], &[])?;
        Backend::sample(&self.cpu, out, &logits.data, steps, p)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buf(be: &Bf16Reference, data: &[f32], s: Storage) -> RefBuf {
        let mut b = be.alloc_as(data.len(), s).unwrap();
        be.write(&mut b, data).unwrap();
        b
    }

    #[test]
    fn bf16_buffers_round_what_is_written_and_copy_converts() {
        let be = Bf16Reference::new();
        let x = [1.0 + 2f32.powi(-10), -3.3, 1e-3];
        let b = buf(&be, &x, Storage::Compute);
        assert_eq!(be.dtype(&b), Dtype::Bf16);
        let want: Vec<f32> = x.iter().map(|&v| storage::round_bf16(v)).collect();
        assert_eq!(be.download(&b).unwrap(), want);
        assert_ne!(want[0], x[0], "1 + 2^-10 is not a bf16 value");
        // f32 -> bf16 rounds, bf16 -> f32 is exact
        let f = be.upload(&x).unwrap();
        let mut to_bf16 = be.alloc_as(3, Storage::Compute).unwrap();
        be.copy(&mut to_bf16, &f, ElementwiseParams::new(3).unwrap()).unwrap();
        assert_eq!(to_bf16.data, want);
        let mut back = be.alloc(3).unwrap();
        be.copy(&mut back, &to_bf16, ElementwiseParams::new(3).unwrap()).unwrap();
        assert_eq!(back.data, want);
    }

    #[test]
    fn mismatched_buffer_types_are_errors_naming_the_op_and_buffer() {
        let be = Bf16Reference::new();
        let (n, c) = (2, 4);
        let p = NormParams { n: n as u32, c: c as u32, eps: 1e-5, _pad: 0 };
        let inp = buf(&be, &[0.5; 8], Storage::Compute);
        let w = buf(&be, &[1.0; 4], Storage::Compute);
        let bias = buf(&be, &[0.0; 4], Storage::Compute);
        let (mut mean, mut rstd) = (be.alloc(n).unwrap(), be.alloc(n).unwrap());
        let mut out_f32 = be.alloc(n * c).unwrap();
        let e = be.layernorm_fwd(&mut out_f32, &mut mean, &mut rstd, &inp, &w, &bias, p).unwrap_err().to_string();
        assert!(e.contains("layernorm_fwd") && e.contains("`inp` is bf16") && e.contains("`out` is f32"), "{e}");
        let mut out = be.alloc_as(n * c, Storage::Compute).unwrap();
        let mut rstd_bf16 = be.alloc_as(n, Storage::Compute).unwrap();
        let e = be.layernorm_fwd(&mut out, &mut mean, &mut rstd_bf16, &inp, &w, &bias, p).unwrap_err().to_string();
        assert!(e.contains("`rstd` must be an f32 buffer"), "{e}");
        be.layernorm_fwd(&mut out, &mut mean, &mut rstd, &inp, &w, &bias, p).unwrap();
    }

    #[test]
    fn matmul_writes_f32_from_bf16_operands_unrounded() {
        let be = Bf16Reference::new();
        // [1, 2] @ [2, 1]: 1 * 1 + 2^-8 * 1 = 1 + 2^-8, not a bf16 value
        let a = buf(&be, &[1.0, 2f32.powi(-8)], Storage::Compute);
        let b = buf(&be, &[1.0, 1.0], Storage::Compute);
        let p = MatmulParams::new(1, 1, 2, false, false);
        let mut out = be.alloc(1).unwrap();
        be.matmul(&mut out, &a, &b, p).unwrap();
        assert_eq!(out.data, vec![1.0 + 2f32.powi(-8)]);
        let mut out16 = be.alloc_as(1, Storage::Compute).unwrap();
        be.matmul(&mut out16, &a, &b, p).unwrap();
        assert_eq!(out16.data, vec![1.0], "a bf16 output rounds (ties to even)");
        let e = be.matmul(&mut out, &be.upload(&[1.0, 0.0]).unwrap(), &b, p).unwrap_err().to_string();
        assert!(e.contains("matmul") && e.contains("`b` is bf16"), "{e}");
    }
}
