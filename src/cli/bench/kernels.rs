//! `rlhf bench --kernels`: the measured copy bandwidth of the backend, and the fused RL kernels
//! (per-token KL forward/backward, the PPO loss, the streamed log-prob gather) in GB/s against it.
//!
//! Bytes are the ideal traffic of each op: every input read once, every output written once
//! (f32 values, i32 ids). The copy bandwidth counts bytes read plus bytes written, as STREAM's
//! copy does, so "% of copy" compares like with like. The log-prob gather also does
//! `2 n v c` FLOPs of LM-head product, so it is compute-bound at realistic shapes: its GFLOP/s
//! is printed next to its GB/s.

use anyhow::Result;
use rlhf::backend::ops::{ElementwiseParams, KlParams, LogprobParams, PpoParams};
use rlhf::backend::Backend;
use rlhf::data::rng::Rng;
use std::time::Instant;

/// Values per buffer of the copy measurement: 128 MiB of f32, larger than the L2 cache of
/// current GPUs (50-60 MB on H100/H200), so the copy streams from device memory.
const COPY_VALUES: usize = 32 << 20;

/// Median seconds of `reps` timed runs of `f` after one untimed warm-up, each followed by a
/// device synchronisation.
pub fn time_median<B: Backend>(be: &B, reps: usize, mut f: impl FnMut() -> rlhf::Result<()>) -> Result<f64> {
    let mut times = Vec::with_capacity(reps);
    for i in 0..=reps.max(1) {
        let start = Instant::now();
        f()?;
        be.synchronize()?;
        if i > 0 {
            times.push(start.elapsed().as_secs_f64());
        }
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// Device-to-device copy bandwidth in bytes per second (read + written).
pub fn copy_bandwidth<B: Backend>(be: &B, reps: usize) -> Result<f64> {
    let src = be.upload(&vec![1.0f32; COPY_VALUES])?;
    let mut dst = be.alloc(COPY_VALUES)?;
    let secs = time_median(be, reps, || be.copy(&mut dst, &src, ElementwiseParams::new(COPY_VALUES)?))?;
    Ok(2.0 * 4.0 * COPY_VALUES as f64 / secs)
}

/// One row of the kernel table.
struct Row {
    name: String,
    secs: f64,
    bytes: f64,
    flops: f64,
}

fn uniform(rng: &mut Rng, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    (0..n).map(|_| lo + (hi - lo) * rng.next_f32()).collect()
}

/// Times the fused RL kernels: the per-token ops over `tokens` values each, and the log-prob
/// gather over `rows` hidden rows of `c` channels against an LM head of `v` rows; prints the table
/// with each kernel's share of `bw`, the copy bandwidth from [`copy_bandwidth`].
pub fn run_kernel_bench<B: Backend>(be: &B, tokens: usize, rows: usize, c: usize, v: usize, reps: usize, bw: f64) -> Result<()> {
    let mut rng = Rng::new(7);
    let n = tokens;
    let logp = be.upload(&uniform(&mut rng, n, -4.0, -0.1))?;
    let old_logp = be.upload(&uniform(&mut rng, n, -4.0, -0.1))?;
    let ref_logp = be.upload(&uniform(&mut rng, n, -4.0, -0.1))?;
    let adv = be.upload(&uniform(&mut rng, n, -1.0, 1.0))?;
    let mask = be.upload(&(0..n).map(|i| if i % 16 < 14 { 1.0 } else { 0.0 }).collect::<Vec<_>>())?;
    let values = be.upload(&uniform(&mut rng, n, -1.0, 1.0))?;
    let old_values = be.upload(&uniform(&mut rng, n, -1.0, 1.0))?;
    let returns = be.upload(&uniform(&mut rng, n, -1.0, 1.0))?;
    let entropy = be.upload(&uniform(&mut rng, n, 0.5, 3.0))?;
    let (mut out, mut dlogp, mut dvalues, mut dentropy) = (be.alloc(n)?, be.alloc(n)?, be.alloc(n)?, be.alloc(n)?);
    let mut stats = be.alloc(rlhf::backend::ops::ppo_stat::COUNT)?;
    let f = 4.0 * n as f64;
    let kl = KlParams { n: n as u32, estimator: 3 };
    let mut table = vec![
        Row {
            name: format!("kl_penalty_fwd (k3, {n} tokens)"),
            secs: time_median(be, reps, || be.kl_penalty_fwd(&mut out, &logp, &ref_logp, &mask, kl))?,
            bytes: 4.0 * f,
            flops: 0.0,
        },
        Row {
            name: format!("kl_penalty_bwd (k3, {n} tokens)"),
            secs: time_median(be, reps, || be.kl_penalty_bwd(&mut dlogp, &out, &logp, &ref_logp, &mask, kl))?,
            bytes: 5.0 * f,
            flops: 0.0,
        },
    ];
    let mut pp = PpoParams::new(n);
    pp.ent_coef = 0.01;
    pp.kl_coef = 0.05;
    let ppo_secs = time_median(be, reps, || {
        be.fill(&mut stats, 0.0, ElementwiseParams::new(rlhf::backend::ops::ppo_stat::COUNT)?)?;
        be.ppo_loss_fwd_bwd(
            &mut dlogp,
            Some(&mut dvalues),
            Some(&mut dentropy),
            &mut stats,
            &logp,
            &old_logp,
            &adv,
            &mask,
            Some(&values),
            Some(&old_values),
            Some(&returns),
            Some(&entropy),
            Some(&ref_logp),
            pp,
        )
    })?;
    // reads logp, old_logp, advantages, mask, values, old_values, returns, entropy, ref_logp;
    // writes dlogp, dvalues, dentropy
    table.push(Row { name: format!("ppo_loss_fwd_bwd (value, entropy, KL; {n} tokens)"), secs: ppo_secs, bytes: 12.0 * f, flops: 0.0 });
    drop((logp, old_logp, ref_logp, adv, mask, values, old_values, returns, entropy, out, dlogp, dvalues, dentropy));

    let h = be.upload(&uniform(&mut rng, rows * c, -1.0, 1.0))?;
    let w = be.upload(&uniform(&mut rng, v * c, -0.05, 0.05))?;
    let targets = be.upload_ids(&(0..rows).map(|_| rng.below(v as u64) as i32).collect::<Vec<_>>())?;
    let (mut lp, mut ent, mut lse) = (be.alloc(rows)?, be.alloc(rows)?, be.alloc(rows)?);
    let lpp = LogprobParams::new(rows, c, v);
    let gather_secs = time_median(be, reps, || be.logprob_gather_fwd(&mut lp, &mut ent, &mut lse, &h, &targets, &w, lpp))?;
    table.push(Row {
        name: format!("logprob_gather_fwd ({rows} x {c} rows, vocab {v})"),
        secs: gather_secs,
        bytes: 4.0 * ((rows * c + v * c) as f64 + 4.0 * rows as f64),
        flops: 2.0 * (rows * v * c) as f64,
    });

    println!();
    println!("fused RL kernels on {} (median of {reps}; bytes = inputs read once + outputs written once)", be.name());
    println!("copy bandwidth (device to device, {} MiB, read + written): {:.1} GB/s", (COPY_VALUES * 4) >> 20, bw / 1e9);
    println!("| kernel                                                 |    ms |    GB/s | % of copy | GFLOP/s |");
    println!("|--------------------------------------------------------|------:|--------:|----------:|--------:|");
    for r in &table {
        let gbs = r.bytes / r.secs / 1e9;
        let gflops = if r.flops > 0.0 { format!("{:7.1}", r.flops / r.secs / 1e9) } else { "      -".into() };
        println!("| {:54} | {:5.2} | {gbs:7.1} | {:8.1}% | {gflops} |", r.name, r.secs * 1e3, 100.0 * gbs * 1e9 / bw);
    }
    Ok(())
}
