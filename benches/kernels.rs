//! Criterion benches of the CPU backend: matmul (the shapes a GPT-2 small block uses, with the
//! transposes its backward needs), attention forward and backward, the fused log-prob gather against
//! materialised logits, and a whole training step.
//! Run: `cargo bench --bench kernels`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rlhf::backend::ops::*;
use rlhf::backend::CpuBackend;
use rlhf::data::batch::Batch;
use rlhf::data::rng::Rng;
use rlhf::model::{Model, ModelConfig};
use rlhf::train::lm::LmTrainer;
use rlhf::train::AdamWConfig;

fn randv(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.normal()).collect()
}

fn matmul(c: &mut Criterion) {
    let be = CpuBackend::new();
    let mut rng = Rng::new(0);
    let mut g = c.benchmark_group("matmul");
    g.sample_size(10);
    for &(m, n, k, ta, tb, label) in &[
        (1024, 768, 768, false, false, "x@W 1024x768x768"),
        (1024, 3072, 768, false, false, "x@W 1024x3072x768"),
        (768, 768, 1024, true, false, "x^T@dy 768x768x1024"),
        (1024, 768, 3072, false, true, "dy@W^T 1024x768x3072"),
    ] {
        let a = randv(&mut rng, m * k);
        let b = randv(&mut rng, k * n);
        let mut out = vec![0.0; m * n];
        g.throughput(Throughput::Elements((2 * m * n * k) as u64));
        g.bench_function(BenchmarkId::new("flop", label), |bench| bench.iter(|| be.matmul(&mut out, &a, &b, MatmulParams::new(m, n, k, ta, tb)).unwrap()));
    }
    g.finish();
}

fn attention(c: &mut Criterion) {
    let be = CpuBackend::new();
    let mut rng = Rng::new(1);
    let mut g = c.benchmark_group("attention");
    g.sample_size(10);
    for &(b, t, nh, nkv, hd) in &[(4, 256, 12, 12, 64), (4, 256, 8, 2, 64)] {
        let row = (nh + 2 * nkv) * hd;
        let qkv = randv(&mut rng, b * t * row);
        let p = AttentionParams::fused(b, t, nh, nkv, hd);
        let mut out = vec![0.0; b * t * nh * hd];
        let mut lse = vec![0.0; b * nh * t];
        let dout = randv(&mut rng, b * t * nh * hd);
        let mut dqkv = vec![0.0; b * t * row];
        let label = format!("b{b} t{t} nh{nh} nkv{nkv} hd{hd}");
        g.bench_function(BenchmarkId::new("fwd", &label), |bench| bench.iter(|| be.attention_fwd(&mut out, &mut lse, &qkv, &qkv, &qkv, p).unwrap()));
        be.attention_fwd(&mut out, &mut lse, &qkv, &qkv, &qkv, p).unwrap();
        g.bench_function(BenchmarkId::new("bwd", &label), |bench| bench.iter(|| be.attention_bwd(&mut dqkv, &dout, &out, &lse, &qkv, p).unwrap()));
    }
    g.finish();
}

/// The fused LM-head log-prob gather (chunks of `LOGPROB_CHUNK` vocabulary rows) against the
/// materialised baseline: the `[n, v]` logits by one matmul, then cross-entropy (forward), and
/// cross-entropy backward plus the two matmuls of the head (backward).
fn logprob_gather(c: &mut Criterion) {
    let be = CpuBackend::new();
    let mut rng = Rng::new(3);
    let mut g = c.benchmark_group("logprob_gather");
    g.sample_size(10);
    let (n, ch, v) = (256, 768, 50257);
    let h = randv(&mut rng, n * ch);
    let w: Vec<f32> = randv(&mut rng, v * ch).iter().map(|x| x * 0.05).collect();
    let targets: Vec<i32> = (0..n).map(|_| rng.below(v as u64) as i32).collect();
    let p = LogprobParams::new(n, ch, v);
    let (mut logp, mut ent, mut lse) = (vec![0.0; n], vec![0.0; n], vec![0.0; n]);
    let (mut dh, mut dw) = (vec![0.0; n * ch], vec![0.0; v * ch]);
    let ones = vec![1.0; n];
    let mut logits = vec![0.0; n * v];
    let mut dlogits = vec![0.0; n * v];
    let label = format!("n{n} c{ch} v{v}");
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function(BenchmarkId::new("fused fwd", &label), |bench| {
        bench.iter(|| be.logprob_gather_fwd(&mut logp, &mut ent, &mut lse, &h, &targets, &w, p).unwrap())
    });
    g.bench_function(BenchmarkId::new("fused bwd", &label), |bench| {
        bench.iter(|| be.logprob_gather_bwd(&mut dh, &mut dw, &ones, &ones, &h, &targets, &lse, &ent, &w, p).unwrap())
    });
    let ce = CrossEntropyParams { n: n as u32, v: v as u32 };
    g.bench_function(BenchmarkId::new("materialised fwd", &label), |bench| {
        bench.iter(|| {
            be.matmul(&mut logits, &h, &w, MatmulParams::new(n, v, ch, false, true)).unwrap();
            be.cross_entropy_fwd(&mut logp, &mut lse, &logits, &targets, ce).unwrap();
        })
    });
    g.bench_function(BenchmarkId::new("materialised bwd", &label), |bench| {
        bench.iter(|| {
            be.cross_entropy_bwd(&mut dlogits, &ones, &logits, &lse, &targets, ce).unwrap();
            be.matmul(&mut dh, &dlogits, &w, MatmulParams::new(n, ch, v, false, false)).unwrap();
            be.matmul(&mut dw, &dlogits, &h, MatmulParams::new(v, ch, n, true, false).accumulate(true)).unwrap();
        })
    });
    g.finish();
}

fn train_step(c: &mut Criterion) {
    let be = CpuBackend::new();
    let mut g = c.benchmark_group("train_step");
    g.sample_size(10);
    for preset in ["gpt2-small", "llama-small"] {
        let vocab = 512;
        let (b, t) = (8, 128);
        let cfg = ModelConfig::preset(preset, vocab).unwrap();
        let mut model = Model::init(&be, cfg, 0).unwrap();
        let mut rng = Rng::new(2);
        let inputs: Vec<i32> = (0..b * t).map(|_| rng.below(vocab as u64) as i32).collect();
        let targets: Vec<i32> = (0..b * t).map(|_| rng.below(vocab as u64) as i32).collect();
        let batch = Batch { b, t, inputs, targets, positions: (0..b * t).map(|i| (i % t) as i32).collect(), n_supervised: b * t };
        let mut trainer = LmTrainer::new(&be, &model, b, b * t, AdamWConfig::default()).unwrap();
        g.throughput(Throughput::Elements((b * t) as u64));
        g.bench_function(BenchmarkId::new("tokens", format!("{preset} b{b} t{t}")), |bench| {
            bench.iter(|| {
                trainer.zero_grad(&be).unwrap();
                trainer.accumulate(&be, &model, &batch, 1.0 / (b * t) as f32).unwrap();
                trainer.step(&be, &mut model, 1e-4).unwrap();
            })
        });
    }
    g.finish();
}

criterion_group!(benches, matmul, attention, logprob_gather, train_step);
criterion_main!(benches);
