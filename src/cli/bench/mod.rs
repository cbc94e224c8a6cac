//! `rlhf bench`: training and forward tokens/s of a preset model on one backend, with the shape,
//! the achieved FLOP rate (6N + 6 L C T FLOPs per trained token, a third of that forward) and,
//! when the device's peak is known (`--peak-tflops`, or a GPU in [`known_peak`]), the model FLOPs
//! utilisation (MFU); the rollout engine's prefill and decode: decode with `--sync-every` K steps
//! between read-backs next to the K = 1 baseline, timed alternately in the same run (median of
//! `--steps`). `--decode-batches` adds the decode sweep against the memory roofline
//! ([`decode`]), `--kernels` the fused RL kernels against the copy bandwidth
//! ([`kernels`]), `--sampling` the sampler's ms per step at large vocabularies ([`sampling`]).


mod attention;
mod decode;
mod kernels;
mod memory;
mod sampling;

use super::common::{Common, SyncEveryArg};
use clap::Args;
use anyhow::Result;
use rlhf::backend::Backend;
use rlhf::data::batch::Batch;
use rlhf::data::rng::Rng;
use rlhf::model::{Activations, Model, ModelConfig, Shape};
use rlhf::train::lm::LmTrainer;
use rlhf::train::AdamWConfig;
use std::time::Instant;

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Model preset
    #[arg(long, default_value = "gpt2-small")]
    pub model: String,
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 128)]
    pub seq_len: usize,
    /// Vocabulary size of the benchmark model
    #[arg(long, default_value_t = 512)]
    pub vocab: usize,
    /// Timed steps per phase (after one warm-up step)
    #[arg(long, default_value_t = 5)]
    pub steps: usize,
    /// Also print where a training step's time goes, op by op (cpu backend)
    #[arg(long)]
    pub profile: bool,
    /// Peak FLOP/s of the device in TFLOP/s for the MFU column (default: the dense bf16 tensor
    /// peak of a known GPU, e.g. 989 for H100 SXM / H200; none on other devices)
    #[arg(long)]
    pub peak_tflops: Option<f64>,
    /// Also measure rollout decode at these slot counts against the memory roofline (e.g. 1,64,256)
    #[arg(long, value_delimiter = ',')]
    pub decode_batches: Vec<usize>,
    /// New tokens per sequence in the --decode-batches sweep
    #[arg(long, default_value_t = 128)]
    pub decode_tokens: usize,
    /// Also time the fused RL kernels (KL, PPO loss, log-prob gather) in GB/s against the copy bandwidth
    #[arg(long)]
    pub kernels: bool,
    /// Also time causal attention forward and backward alone at B,T,NH,HD (e.g. 16,1024,12,64), in TFLOP/s
    #[arg(long, value_delimiter = ',')]
    pub attention: Vec<usize>,
    /// Also time sampling (`sample` over --batch-size rows) at vocabularies 50257 and 151936:
    /// temperature alone, top-p, top-k + top-p
    #[arg(long)]
    pub sampling: bool,
    /// Tokens per call of the per-token kernels timed by --kernels
    #[arg(long, default_value_t = 1 << 22)]
    pub kernel_tokens: usize,
    /// Rollout decode steps between read-backs (the K = 1 baseline is printed next to it)
    #[command(flatten)]
    pub sync: SyncEveryArg,
    #[command(flatten)]
    pub common: Common,
}

/// Dense bf16 tensor-core peak (TFLOP/s) of GPUs recognised by name, the denominator MFU is
/// conventionally quoted against: H100 SXM and H200 989.4, H100 PCIe 756.
pub fn known_peak(device: &str) -> Option<(f64, &'static str)> {
    let d = device.to_ascii_uppercase();
    if d.contains("H200") {
        Some((989.4, "H200 dense bf16"))
    } else if d.contains("H100") && d.contains("PCIE") {
        Some((756.0, "H100 PCIe dense bf16"))
    } else if d.contains("H100") {
        Some((989.4, "H100 SXM dense bf16"))
    } else {
        None
    }
}

pub fn run_bench<B: Backend>(be: &B, a: &BenchArgs) -> Result<()> {
    let cfg = ModelConfig::preset(&a.model, a.vocab)?;
    let (b, t) = (a.batch_size, a.seq_len.min(cfg.max_positions));
    anyhow::ensure!(b > 0 && t > 1 && a.steps > 0, "--batch-size, --seq-len (> 1) and --steps must be positive");
    anyhow::ensure!(a.peak_tflops.is_none_or(|p| p > 0.0 && p.is_finite()), "--peak-tflops must be a positive number");
    anyhow::ensure!(!a.decode_batches.contains(&0), "--decode-batches: every slot count must be positive");
    anyhow::ensure!(a.decode_tokens > 0 && a.kernel_tokens > 0, "--decode-tokens and --kernel-tokens must be positive");
    anyhow::ensure!(b.checked_mul(t).is_some(), "--batch-size {b} x --seq-len {t} is too large");
    let mut model = Model::init(be, cfg.clone(), 0)?;
    let n_params = cfg.num_params() as f64;
    let flops_per_token = 6.0 * n_params + 6.0 * (cfg.n_layers * cfg.hidden_size * t) as f64;

    // training: forward + backward + AdamW (buffers first: they fail cleanly when too large)
    let mut trainer = LmTrainer::new(be, &model, b, b * t, AdamWConfig::default())?;
    let mut rng = Rng::new(1);
    let inputs: Vec<i32> = (0..b * t).map(|_| rng.below(a.vocab as u64) as i32).collect();
    let targets: Vec<i32> = (0..b * t).map(|_| rng.below(a.vocab as u64) as i32).collect();
    let batch = Batch { b, t, inputs: inputs.clone(), targets: targets.clone(), positions: (0..b * t).map(|i| (i % t) as i32).collect(), n_supervised: b * t };
    let mut train_times = Vec::new();
    // the host high-water mark over the training steps (the CPU backend's device is the host)
    let peak_measured = be.name() == "cpu" && memory::reset_peak_resident();
    for i in 0..=a.steps {
        if i == 1 && a.profile {
            rlhf::backend::cpu::profile::reset();
            rlhf::backend::cpu::profile::enable(true);
        }
        let start = Instant::now();
        trainer.zero_grad(be)?;
        trainer.accumulate(be, &model, &batch, 1.0 / (b * t) as f32)?;
        trainer.step(be, &mut model, 1e-4)?;
        be.synchronize()?;
        if i > 0 {
            train_times.push(start.elapsed().as_secs_f64());
        }
    }
    rlhf::backend::cpu::profile::enable(false);
    let train_peak = if peak_measured { memory::peak_resident_bytes() } else { None };
    drop(trainer);
    // forward only (scoring)
    let mut acts = Activations::new(be, &cfg, b, b * t)?;
    let shape = Shape { b, t };
    let mut fwd_times = Vec::new();
    for i in 0..=a.steps {
        let start = Instant::now();
        model.decoder.set_inputs(be, &mut acts, shape, &inputs, Some(&targets))?;
        model.decoder.forward(be, &model.weights, &mut acts, shape)?;
        be.synchronize()?;
        if i > 0 {
            fwd_times.push(start.elapsed().as_secs_f64());
        }
    }
    // one matmul of the MLP's up-projection shape: [b t, C] @ [C, 4C]
    let (mm, mn, mk) = (b * t, 4 * cfg.hidden_size, cfg.hidden_size);
    let (ma, mb) = (be.upload(&vec![0.01; mm * mk])?, be.upload(&vec![0.02; mk * mn])?);
    let mut mout = be.alloc(mm * mn)?;
    let mut mm_times = Vec::new();
    for i in 0..=a.steps.max(3) {
        let start = Instant::now();
        be.matmul(&mut mout, &ma, &mb, rlhf::backend::ops::MatmulParams::new(mm, mn, mk, false, false))?;
        be.synchronize()?;
        if i > 0 {
            mm_times.push(start.elapsed().as_secs_f64());
        }
    }
    drop((ma, mb, mout));
    // rollout: continuous batching of `b` prompts of 16 tokens, 32 new tokens each (no stop)
    let prompt_len = 16.min(cfg.max_positions / 2).max(1);
    let new_tokens = 32.min(cfg.max_positions - prompt_len);
    let prompts: Vec<Vec<u32>> = (0..b).map(|i| (0..prompt_len).map(|j| ((i * 31 + j * 7) % a.vocab) as u32).collect()).collect();
    let gen = rlhf::generate::GenerateConfig { max_new_tokens: new_tokens, temperature: 1.0, top_k: 0, top_p: 1.0, seed: 1, stop_ids: Vec::new(), vocab_limit: None };
    let sync_every = a.sync.get(be.name());
    anyhow::ensure!(sync_every > 0, "--sync-every must be at least 1");
    let rollout_stats = |engine: &mut rlhf::generate::RolloutEngine<B>, k: usize| -> Result<rlhf::generate::RolloutStats> {
        let rcfg = rlhf::generate::RolloutConfig { slots: b, gen: gen.clone(), sync_every: k };
        Ok(engine.run(be, &model, &prompts, &rcfg)?.stats)
    };
    // decode with K steps between read-backs and the one-read-back-per-step baseline, alternating
    // (after a warm-up of each), the run with the median ms per decode step of each; an engine per
    // K that keeps its buffers (and its CUDA graphs) from run to run, as PPO's does
    let ks: Vec<usize> = if sync_every == 1 { vec![1] } else { vec![sync_every, 1] };
    let mut runs: Vec<Vec<rlhf::generate::RolloutStats>> = vec![Vec::new(); ks.len()];
    let mut engines: Vec<rlhf::generate::RolloutEngine<B>> = ks.iter().map(|_| rlhf::generate::RolloutEngine::new()).collect();
    for i in 0..=a.steps {
        for ((runs, &k), engine) in runs.iter_mut().zip(&ks).zip(&mut engines) {
            let r = rollout_stats(engine, k)?;
            if i > 0 {
                runs.push(r);
            }
        }
    }
    let per_step = |r: &rlhf::generate::RolloutStats| r.decode_secs / r.decode_steps.max(1) as f64;
    let decode: Vec<(usize, rlhf::generate::RolloutStats)> = ks
        .iter()
        .zip(runs)
        .map(|(&k, mut v)| {
            v.sort_by(|x, y| per_step(x).total_cmp(&per_step(y)));
            (k, v.swap_remove(v.len() / 2))
        })
        .collect();
    let ro = &decode[0].1;

    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (tr, fw, mmt) = (median(&mut train_times), median(&mut fwd_times), median(&mut mm_times));
    let tokens = (b * t) as f64;
    println!("rlhf bench: backend {} ({}), storage {}, matmul precision {}", be.name(), be.device_description(), be.compute_dtype(), be.matmul_precision());
    println!(
        "model {} ({:.2}M parameters: {} layers, hidden {}, {} heads, vocab {}), batch {b} x seq {t}, median of {} steps",
        a.model,
        n_params / 1e6,
        cfg.n_layers,
        cfg.hidden_size,
        cfg.n_heads,
        a.vocab,
        a.steps
    );
    let peak = a.peak_tflops.map(|p| (p, "--peak-tflops")).or_else(|| known_peak(&be.device_description()));
    let mfu = |flops_per_sec: f64| peak.map_or("      -".to_string(), |(p, _)| format!("{:6.2}%", 100.0 * flops_per_sec / (p * 1e12)));
    if let Some((p, source)) = peak {
        println!("MFU against {p} TFLOP/s ({source})");
    }
    let (train_rate, fwd_rate) = (tokens * flops_per_token / tr, tokens * flops_per_token / 3.0 / fw);
    println!("| phase                  | ms/step | tokens/s | GFLOP/s |     MFU |");
    println!("|------------------------|--------:|---------:|--------:|--------:|");
    println!("| train (fwd+bwd+AdamW)  | {:7.1} | {:8.0} | {:7.2} | {} |", tr * 1e3, tokens / tr, train_rate / 1e9, mfu(train_rate));
    println!("| forward (scoring)      | {:7.1} | {:8.0} | {:7.2} | {} |", fw * 1e3, tokens / fw, fwd_rate / 1e9, mfu(fwd_rate));
    let mm_rate = 2.0 * (mm * mn * mk) as f64 / mmt;
    println!("| matmul {:>15} | {:7.2} |          | {:7.2} | {} |", format!("{mm}x{mn}x{mk}"), mmt * 1e3, mm_rate / 1e9, mfu(mm_rate));
    println!(
        "| rollout prefill        | {:7.1} | {:8.0} |         |         |  ({b} prompts x {prompt_len} tokens)",
        ro.prefill_secs * 1e3,
        ro.prefill_tokens_per_sec()
    );
    for (k, r) in &decode {
        println!(
            "| rollout decode, K {k:<4} | {:7.1} | {:8.0} |         |         |  ({b} slots, {new_tokens} new tokens each; ms per decode step; {} read-backs, {} idle slot-steps, {} graph chunks)",
            per_step(r) * 1e3,
            r.decode_tokens_per_sec(),
            r.decode_syncs,
            r.idle_slot_steps,
            r.graph_replays
        );
    }
    print_state_per_device(&be.compute_dtype(), &model.layout().specs.iter().map(|s| s.numel()).collect::<Vec<_>>());
    match train_peak {
        Some(bytes) => println!(
            "peak resident memory of the training steps: {:.1} MiB, {:.2} bytes per parameter (process high-water mark, as tests/fixtures/bench_pytorch.py reports PyTorch's: peak_rss_mib)",
            bytes as f64 / (1 << 20) as f64,
            bytes as f64 / n_params
        ),
        None if be.name() == "cpu" => println!("peak resident memory of the training steps: not measurable here (needs Linux's /proc/self/clear_refs)"),
        None => {}
    }
    if !a.decode_batches.is_empty() || a.kernels {
        let bandwidth = kernels::copy_bandwidth(be, a.steps)?;
        if !a.decode_batches.is_empty() {
            decode::run_decode_bench(be, &model, &cfg, &a.decode_batches, a.decode_tokens, sync_every, bandwidth)?;
        }
        if a.kernels {
            kernels::run_kernel_bench(be, a.kernel_tokens, b * t, cfg.hidden_size, a.vocab, a.steps, bandwidth)?;
        }
    }
    if !a.attention.is_empty() {
        attention::run_attention_bench(be, &a.attention, a.steps)?;
    }
    if a.sampling {
        sampling::run_sampling_bench(be, b, a.steps)?;
    }
    if a.profile {
        let ops = rlhf::backend::cpu::profile::snapshot();
        let total: f64 = ops.iter().map(|o| o.2).sum();
        println!();
        println!("training step, op by op (mean per step over {} steps; {} backend):", a.steps, be.name());
        println!("| op                  | calls/step | ms/step | share |");
        println!("|---------------------|-----------:|--------:|------:|");
        for (name, calls, secs) in ops {
            println!("| {name:19} | {:10} | {:7.2} | {:4.1}% |", calls / a.steps as u64, secs * 1e3 / a.steps as f64, 100.0 * secs / total.max(1e-12));
        }
    }
    Ok(())
}

/// The training state a device holds between steps (weights and gradients in the compute type,
/// AdamW's two f32 moments, f32 master weights in a reduced-precision mode), and the moments'
/// largest shard under `--zero 1` (whole tensors per rank, [`rlhf::train::zero::Shards`]).
fn print_state_per_device(compute: &rlhf::backend::storage::Dtype, numels: &[usize]) {
    let params: usize = numels.iter().sum();
    let mib = |values: usize, bytes: usize| (values * bytes) as f64 / (1 << 20) as f64;
    let master = if compute.size() < 4 { params } else { 0 };
    let total = 2 * params * compute.size() + 4 * (2 * params + master);
    println!(
        "training state per device: {:.1} MiB = weights {:.1} + gradients {:.1} ({compute}) + AdamW moments {:.1}{} (f32); {:.2} bytes per parameter",
        total as f64 / (1 << 20) as f64,
        mib(params, compute.size()),
        mib(params, compute.size()),
        mib(2 * params, 4),
        if master > 0 { format!(" + master weights {:.1}", mib(master, 4)) } else { String::new() },
        total as f64 / params.max(1) as f64
    );
    let shards: Vec<String> = [2usize, 4, 8]
        .iter()
        .map(|&n| {
            let largest = rlhf::train::zero::Shards::assign(numels, 0, n).largest_load(numels);
            format!("{n} ranks {:.1} MiB ({:.0}% of the ideal 1/{n})", mib(2 * largest, 4), 100.0 * (params as f64 / n as f64) / largest.max(1) as f64)
        })
        .collect();
    println!("AdamW moments per device with --zero 1 (largest shard of whole tensors): {}", shards.join(", "));
}
