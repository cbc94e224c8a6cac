//! Criterion benches of the wgpu backend's WGSL kernels: matmul (a GPT-2 small block's shapes and
//! the transposes its backward needs, in FLOP/s, with f32 and, given shader-f16, f16 operands), attention forward and backward, the fused
//! log-prob gather, LayerNorm and AdamW (in bytes/s), and a whole training step (tokens/s).
//! Every iteration waits for the device. Without an adapter the benches print that they skipped.
//! On a software adapter (Mesa lavapipe) the shapes shrink: its timings are not GPU performance.
//! Run: `cargo bench --bench wgpu_kernels` (`RLHF_WGPU_ADAPTER=<name part>` picks the adapter).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rlhf::backend::ops::*;
use rlhf::backend::WgpuBackend;
use rlhf::data::batch::Batch;
use rlhf::data::rng::Rng;
use rlhf::model::{Model, ModelConfig};
use rlhf::train::lm::LmTrainer;
use rlhf::train::AdamWConfig;
use std::sync::OnceLock;

fn gpu() -> Option<&'static WgpuBackend> {
    static GPU: OnceLock<Option<WgpuBackend>> = OnceLock::new();
    GPU.get_or_init(|| match WgpuBackend::new() {
        Ok(be) => {
            eprintln!("wgpu benches on {}", be.device_description());
            Some(be)
        }
        Err(e) => {
            eprintln!("SKIPPED wgpu benches: {e}");
            None
        }
    })
    .as_ref()
}

/// 1 on a hardware GPU, a divisor of the problem sizes on a software adapter.
fn shrink(g: &WgpuBackend) -> usize {
    if g.device_description().contains("(Cpu,") {
        8
    } else {
        1
    }
}

fn randv(rng: &mut Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| rng.normal() * scale).collect()
}

/// A second backend with `--matmul-precision f16`, when the adapter has shader-f16.
fn gpu_f16() -> Option<&'static WgpuBackend> {
    static GPU: OnceLock<Option<WgpuBackend>> = OnceLock::new();
    GPU.get_or_init(|| {
        gpu()?;
        WgpuBackend::with_matmul_precision(MatmulPrecision::F16).map_err(|e| eprintln!("SKIPPED wgpu f16 matmul benches: {e}")).ok()
    })
    .as_ref()
}

/// The matmul shapes in f32 (`flop`) and, on an adapter with shader-f16, with f16 operands
/// (`flop f16`, shaders/matmul_f16.wgsl), so that the two compare in one run.
fn matmul(c: &mut Criterion) {
    let Some(be32) = gpu() else { return };
    let s = shrink(be32);
    let mut rng = Rng::new(0);
    let mut g = c.benchmark_group("wgpu matmul");
    g.sample_size(10);
    for &(m, n, k, ta, tb, label) in &[
        (1024, 768, 768, false, false, "x@W"),
        (1024, 3072, 768, false, false, "x@W_fc"),
        (768, 768, 1024, true, false, "x^T@dy"),
        (1024, 768, 3072, false, true, "dy@W^T"),
        (4096, 4096, 4096, false, false, "square"),
    ] {
        let (m, n, k) = ((m / s).max(1), (n / s).max(1), (k / s).max(1));
        let (a, b) = (randv(&mut rng, m * k, 1.0), randv(&mut rng, k * n, 1.0));
        for (be, id) in [(Some(be32), "flop"), (gpu_f16(), "flop f16")] {
            let Some(be) = be else { continue };
            let (a, b) = (be.upload(&a).unwrap(), be.upload(&b).unwrap());
            let mut out = be.alloc(m * n).unwrap();
            g.throughput(Throughput::Elements((2 * m * n * k) as u64));
            g.bench_function(BenchmarkId::new(id, format!("{label} {m}x{n}x{k}")), |bench| {
                bench.iter(|| {
                    be.matmul(&mut out, &a, &b, MatmulParams::new(m, n, k, ta, tb)).unwrap();
                    be.synchronize().unwrap();
                })
            });
        }
    }
    g.finish();
}

fn attention(c: &mut Criterion) {
    let Some(be) = gpu() else { return };
    let s = shrink(be);
    let mut rng = Rng::new(1);
    let mut g = c.benchmark_group("wgpu attention");
    g.sample_size(10);
    for &(b, t, nh, nkv, hd) in &[(8, 1024, 12, 12, 64), (8, 1024, 8, 2, 64)] {
        let t = t / s;
        let row = (nh + 2 * nkv) * hd;
        let qkv = be.upload(&randv(&mut rng, b * t * row, 1.0)).unwrap();
        let p = AttentionParams::fused(b, t, nh, nkv, hd);
        let mut out = be.alloc(b * t * nh * hd).unwrap();
        let mut lse = be.alloc(b * nh * t).unwrap();
        let dout = be.upload(&randv(&mut rng, b * t * nh * hd, 1.0)).unwrap();
        let mut dqkv = be.alloc(b * t * row).unwrap();
        let label = format!("b{b} t{t} nh{nh} nkv{nkv} hd{hd}");
        g.throughput(Throughput::Elements((b * t) as u64));
        g.bench_function(BenchmarkId::new("fwd tokens", &label), |bench| {
            bench.iter(|| {
                be.attention_fwd(&mut out, &mut lse, &qkv, &qkv, &qkv, p).unwrap();
                be.synchronize().unwrap();
            })
        });
        g.bench_function(BenchmarkId::new("bwd tokens", &label), |bench| {
            bench.iter(|| {
                be.attention_bwd(&mut dqkv, &dout, &out, &lse, &qkv, p).unwrap();
                be.synchronize().unwrap();
            })
        });
    }
    g.finish();
}

fn fused_and_memory_bound(c: &mut Criterion) {
    let Some(be) = gpu() else { return };
    let s = shrink(be);
    let mut rng = Rng::new(3);
    let mut g = c.benchmark_group("wgpu fused");
    g.sample_size(10);
    // the fused log-prob gather over GPT-2's vocabulary
    let (n, ch, v) = (1024 / s, 768, 50257 / s);
    let h = be.upload(&randv(&mut rng, n * ch, 1.0)).unwrap();
    let w = be.upload(&randv(&mut rng, v * ch, 0.05)).unwrap();
    let targets = be.upload_ids(&(0..n).map(|_| rng.below(v as u64) as i32).collect::<Vec<_>>()).unwrap();
    let p = LogprobParams::new(n, ch, v);
    let (mut logp, mut ent, mut lse) = (be.alloc(n).unwrap(), be.alloc(n).unwrap(), be.alloc(n).unwrap());
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function(BenchmarkId::new("logprob_gather_fwd rows", format!("n{n} c{ch} v{v}")), |bench| {
        bench.iter(|| {
            be.logprob_gather_fwd(&mut logp, &mut ent, &mut lse, &h, &targets, &w, p).unwrap();
            be.synchronize().unwrap();
        })
    });
    // LayerNorm forward and AdamW: memory-bound, in bytes moved
    let (rows, c_) = (8192 / s, 768);
    let x = be.upload(&randv(&mut rng, rows * c_, 1.0)).unwrap();
    let wgt = be.upload(&vec![1.0; c_]).unwrap();
    let bias = be.alloc(c_).unwrap();
    let (mut out, mut mean, mut rstd) = (be.alloc(rows * c_).unwrap(), be.alloc(rows).unwrap(), be.alloc(rows).unwrap());
    g.throughput(Throughput::Bytes((2 * rows * c_ * 4) as u64));
    g.bench_function(BenchmarkId::new("layernorm_fwd bytes", format!("{rows}x{c_}")), |bench| {
        bench.iter(|| {
            be.layernorm_fwd(&mut out, &mut mean, &mut rstd, &x, &wgt, &bias, NormParams { n: rows as u32, c: c_ as u32, eps: 1e-5, _pad: 0 }).unwrap();
            be.synchronize().unwrap();
        })
    });
    let np = 16 << 20 >> (s / 2);
    let grad = be.upload(&randv(&mut rng, np, 1e-3)).unwrap();
    let (mut param, mut m, mut vv) = (be.upload(&randv(&mut rng, np, 1.0)).unwrap(), be.alloc(np).unwrap(), be.alloc(np).unwrap());
    // a squared norm of 4 with a threshold of 1: clipping active, as in most training steps
    let norm_sq = be.upload(&[4.0]).unwrap();
    let ap = AdamWParams {
        n: np as u32,
        lr: 1e-4,
        beta1: 0.9,
        beta2: 0.95,
        eps: 1e-8,
        weight_decay: 0.1,
        bias_correction1: 0.1,
        bias_correction2: 0.05,
        max_grad_norm: 1.0,
        ..Default::default()
    };
    g.throughput(Throughput::Bytes((7 * np * 4) as u64));
    g.bench_function(BenchmarkId::new("adamw bytes", format!("{np} params")), |bench| {
        bench.iter(|| {
            be.adamw(&mut param, &mut m, &mut vv, &grad, &norm_sq, ap).unwrap();
            be.synchronize().unwrap();
        })
    });
    g.finish();
}

fn train_step(c: &mut Criterion) {
    let Some(be) = gpu() else { return };
    let s = shrink(be);
    let mut g = c.benchmark_group("wgpu train_step");
    g.sample_size(10);
    for preset in ["gpt2-small", "llama-small"] {
        let vocab = 512;
        let (b, t) = (8 / s.min(4), 128 / s.min(4));
        let cfg = ModelConfig::preset(preset, vocab).unwrap();
        let mut model = Model::init(be, cfg, 0).unwrap();
        let mut rng = Rng::new(2);
        let inputs: Vec<i32> = (0..b * t).map(|_| rng.below(vocab as u64) as i32).collect();
        let targets: Vec<i32> = (0..b * t).map(|_| rng.below(vocab as u64) as i32).collect();
        let batch = Batch { b, t, inputs, targets, positions: (0..b * t).map(|i| (i % t) as i32).collect(), n_supervised: b * t };
        let mut trainer = LmTrainer::new(be, &model, b, b * t, AdamWConfig::default()).unwrap();
        g.throughput(Throughput::Elements((b * t) as u64));
        g.bench_function(BenchmarkId::new("tokens", format!("{preset} b{b} t{t}")), |bench| {
            bench.iter(|| {
                trainer.zero_grad(be).unwrap();
                trainer.accumulate(be, &model, &batch, 1.0 / (b * t) as f32).unwrap();
                trainer.step(be, &mut model, 1e-4).unwrap();
                be.synchronize().unwrap();
            })
        });
    }
    g.finish();
}

criterion_group!(benches, matmul, attention, fused_and_memory_bound, train_step);
criterion_main!(benches);
