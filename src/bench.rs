//! `rlhf bench`: training and forward tokens/s of a preset model on one backend, with the shape
//! and the achieved FLOP rate (6N + 6 L C T FLOPs per trained token, a third of that forward).

use crate::cli::BenchArgs;
use anyhow::Result;
use rlhf::backend::Backend;
use rlhf::data::batch::Batch;
use rlhf::data::rng::Rng;
use rlhf::model::{Activations, Model, ModelConfig, Shape};
use rlhf::train::lm::LmTrainer;
use rlhf::train::AdamWConfig;
use std::time::Instant;

pub fn run_bench<B: Backend>(be: &B, a: &BenchArgs) -> Result<()> {
    let cfg = ModelConfig::preset(&a.model, a.vocab)?;
    let (b, t) = (a.batch_size, a.seq_len.min(cfg.max_positions));
    anyhow::ensure!(b > 0 && t > 1 && a.steps > 0, "--batch-size, --seq-len (> 1) and --steps must be positive");
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
    let gen = rlhf::generate::GenerateConfig { max_new_tokens: new_tokens, temperature: 1.0, top_k: 0, top_p: 1.0, seed: 1, stop_ids: Vec::new() };
    let rcfg = rlhf::generate::RolloutConfig { slots: b, gen };
    let _ = rlhf::generate::rollout(be, &model, &prompts, &rcfg)?; // warm-up
    let ro = rlhf::generate::rollout(be, &model, &prompts, &rcfg)?.stats;

    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (tr, fw, mmt) = (median(&mut train_times), median(&mut fwd_times), median(&mut mm_times));
    let tokens = (b * t) as f64;
    println!("rlhf bench: backend {} ({}), matmul precision {}", be.name(), be.device_description(), be.matmul_precision());
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
    println!("| phase                  | ms/step | tokens/s | GFLOP/s |");
    println!("|------------------------|--------:|---------:|--------:|");
    println!("| train (fwd+bwd+AdamW)  | {:7.1} | {:8.0} | {:7.2} |", tr * 1e3, tokens / tr, tokens * flops_per_token / tr / 1e9);
    println!("| forward (scoring)      | {:7.1} | {:8.0} | {:7.2} |", fw * 1e3, tokens / fw, tokens * flops_per_token / 3.0 / fw / 1e9);
    println!("| matmul {:>15} | {:7.2} |          | {:7.2} |", format!("{mm}x{mn}x{mk}"), mmt * 1e3, 2.0 * (mm * mn * mk) as f64 / mmt / 1e9);
    println!("| rollout prefill        | {:7.1} | {:8.0} |         |  ({b} prompts x {prompt_len} tokens)", ro.prefill_secs * 1e3, ro.prefill_tokens_per_sec());
    println!(
        "| rollout decode         | {:7.1} | {:8.0} |         |  ({b} slots, {new_tokens} new tokens each; ms per decode step)",
        ro.decode_secs * 1e3 / ro.decode_steps.max(1) as f64,
        ro.decode_tokens_per_sec()
    );
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
