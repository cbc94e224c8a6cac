//! `rlhf bench --attention B,T,NH,HD`: causal self-attention forward and backward (the fused qkv
//! layout of training) timed alone, in TFLOP/s. FLOPs count the causal half, as FlashAttention's
//! figures do: forward 2 products of 2 T^2 hd per head, halved (2 B NH T^2 HD); backward 5
//! products, 2.5 times the forward. On CUDA in bf16 with HD 64 or 128 these are the tensor-core
//! kernels (`RLHF_CUDA_ATTENTION=simt` times the SIMT ones);
//! `tests/fixtures/bench_pytorch.py --attention B,T,NH,HD` times PyTorch's
//! `scaled_dot_product_attention` on the same shape.

use super::kernels::time_median;
use anyhow::Result;
use rlhf::backend::ops::AttentionParams;
use rlhf::backend::Backend;
use rlhf::data::rng::Rng;

pub fn run_attention_bench<B: Backend>(be: &B, shape: &[usize], reps: usize) -> Result<()> {
    let &[b, t, nh, hd] = shape else {
        anyhow::bail!("--attention takes B,T,NH,HD (e.g. 16,1024,12,64), got {shape:?}");
    };
    anyhow::ensure!(b * t * nh * hd > 0, "--attention {shape:?}: every size must be positive");
    let p = AttentionParams::fused(b, t, nh, nh, hd);
    let row = 3 * nh * hd;
    let mut rng = Rng::new(5);
    let qkv = be.upload(&(0..b * t * row).map(|_| rng.normal()).collect::<Vec<_>>())?;
    let dout = be.upload(&(0..b * t * nh * hd).map(|_| rng.normal()).collect::<Vec<_>>())?;
    let (mut out, mut lse, mut dqkv) = (be.alloc(b * t * nh * hd)?, be.alloc(b * nh * t)?, be.alloc(b * t * row)?);
    let fwd = time_median(be, reps, || be.attention_fwd(&mut out, &mut lse, &qkv, &qkv, &qkv, p))?;
    let bwd = time_median(be, reps, || be.attention_bwd(&mut dqkv, &dout, &out, &lse, &qkv, p))?;
    let flops = 2.0 * (b * nh * t * t * hd) as f64;
    println!();
    println!("causal attention on {} (B {b}, T {t}, {nh} heads x {hd}; median of {reps}; causal FLOPs)", be.name());
    println!("| pass               |     ms | TFLOP/s |");
    println!("|--------------------|-------:|--------:|");
    for (name, secs, f) in [("forward", fwd, flops), ("backward", bwd, 2.5 * flops), ("forward + backward", fwd + bwd, 3.5 * flops)] {
        println!("| {name:18} | {:6.2} | {:7.2} |", secs * 1e3, f / secs / 1e12);
    }
    Ok(())
}
