//! `rlhf demo`: the embedded default. With no files and no flags it runs the whole InstructGPT
//! pipeline on the built-in task (an oracle that likes kind words stands in for human judgment):
//! SFT on imperfect demonstrations, a reward model on oracle-labelled comparisons with label noise,
//! then PPO against the reward model with a KL penalty to the SFT model. It prints a table per
//! stage and writes checkpoints, metrics, `summary.json` and SVG plots under `--out`.

use anyhow::Result;
use rlhf::backend::Backend;
use rlhf::rl::pipeline::{run_pipeline, DemoConfig};
use std::path::Path;

pub fn run_demo<B: Backend>(be: &B, out: &Path, seed: u64, quick: bool) -> Result<()> {
    let cfg = if quick { DemoConfig::quick(out, seed) } else { DemoConfig::full(out, seed) };
    println!("rlhf demo: SFT -> reward model -> PPO on the built-in task (oracle: (kind - rude words) / words), {} model, backend {}", cfg.preset, be.name());
    let s = run_pipeline(be, &cfg)?;
    let opt = |x: Option<f32>, prec: usize| x.map_or("-".to_string(), |v| format!("{v:.prec$}"));
    println!();
    println!("| stage        | oracle score | RM score | KL to SFT | RM accuracy | tokens/s | seconds |");
    println!("|--------------|-------------:|---------:|----------:|------------:|---------:|--------:|");
    for r in &s.rows {
        let oracle = if r.oracle.is_finite() { format!("{:.3}", r.oracle) } else { "-".into() };
        println!(
            "| {:12} | {:>12} | {:>8} | {:>9} | {:>11} | {:8.0} | {:7.1} |",
            r.stage,
            oracle,
            opt(r.rm_score, 3),
            opt(r.kl_to_sft, 2),
            opt(r.rm_accuracy, 3),
            r.tokens_per_sec,
            r.seconds
        );
    }
    println!();
    println!("oracle score: mean over 64 held-out prompts of (kind - rude words) / words of a sampled answer (temperature 1);");
    println!("KL to SFT: mean over those answers of the summed per-token log-ratio to the SFT model; RM accuracy: held-out comparisons.");
    println!();
    println!("answers (SFT -> PPO):");
    for (prompt, sft, ppo) in &s.samples {
        println!("  {:28} {:28} -> {}", prompt.replace('\n', " "), sft.trim(), ppo.trim());
    }
    println!();
    println!("checkpoints and metrics.jsonl in {0}/{{sft,rm,ppo}}; summary.json and plots (ppo_reward.svg, ppo_oracle.svg, ppo_kl.svg) in {0}", out.display());
    Ok(())
}
