//! Criterion benches of the CPU backend: matmul (the shapes a GPT-2 small block uses, with the
//! transposes its backward needs), attention forward and backward, and a whole training step.
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

criterion_group!(benches, matmul, attention, train_step);
criterion_main!(benches);
