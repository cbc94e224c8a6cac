//! `rlhf demo`: the embedded default. With no files and no flags it runs the whole RLHF pipeline
//! on the built-in task (an oracle that likes kind words stands in for human judgment): SFT on
//! imperfect demonstrations, then each method of `--method` from the SFT model — PPO against a
//! reward model trained on oracle-labelled comparisons with label noise (InstructGPT), DPO on such
//! comparisons, GRPO with the oracle as a verifiable reward — and prints them side by side. It
//! writes checkpoints, metrics, `summary.json` and SVG plots under `--out`.

use super::common::Common;
use anyhow::Result;
use clap::{Args, ValueEnum};
use std::path::PathBuf;
use rlhf::backend::Backend;
use rlhf::demo::{run_pipeline, DemoConfig, DemoMethod};
use std::path::Path;

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum MethodArg {
    /// reward model, then PPO against it (InstructGPT)
    Ppo,
    /// DPO on preference pairs (no reward model)
    Dpo,
    /// GRPO with the task's oracle as a verifiable reward
    Grpo,
    /// advantage actor-critic against the reward model (PPO's rollout, critic and GAE)
    A2c,
    /// ppo, dpo and grpo, side by side
    All,
}

/// The methods of a `--method` list, in order, each once.
pub fn methods_of(list: &[MethodArg]) -> Vec<rlhf::demo::DemoMethod> {
    let mut out = Vec::new();
    for m in list.iter().flat_map(|m| m.methods()) {
        if !out.contains(&m) {
            out.push(m);
        }
    }
    out
}

impl MethodArg {
    pub fn methods(self) -> Vec<rlhf::demo::DemoMethod> {
        use rlhf::demo::DemoMethod;
        match self {
            MethodArg::Ppo => vec![DemoMethod::Ppo],
            MethodArg::Dpo => vec![DemoMethod::Dpo],
            MethodArg::Grpo => vec![DemoMethod::Grpo],
            MethodArg::A2c => vec![DemoMethod::A2c],
            MethodArg::All => DemoMethod::ALL.to_vec(),
        }
    }
}

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Output folder
    #[arg(long, default_value = "runs/demo")]
    pub out: PathBuf,
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// A shorter run (fewer steps per stage), as the tests run it
    #[arg(long)]
    pub quick: bool,
    /// The methods trained from the SFT model and compared side by side, comma-separated (e.g.
    /// ppo,a2c)
    #[arg(long, value_enum, value_delimiter = ',', default_value = "all")]
    pub method: Vec<MethodArg>,
    /// Replace another run's output in --out (an earlier demo's is always replaced)
    #[arg(long)]
    pub overwrite: bool,
    #[command(flatten)]
    pub common: Common,
}

pub fn run_demo<B: Backend>(be: &B, out: &Path, seed: u64, quick: bool, methods: Vec<DemoMethod>) -> Result<()> {
    let mut cfg = if quick { DemoConfig::quick(out, seed) } else { DemoConfig::full(out, seed) };
    cfg.methods = methods;
    let names: Vec<&str> = cfg.methods.iter().map(|m| m.name()).collect();
    println!(
        "rlhf demo: SFT, then {} on the built-in task (oracle: (kind - rude words) / words), {} model, backend {}",
        names.join(", "),
        cfg.preset,
        be.name()
    );
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
    println!("oracle score: mean over {} held-out prompts of (kind - rude words) / words of a sampled answer (temperature 1);", cfg.eval_prompts);
    println!("KL to SFT: mean over those answers of the summed per-token log-ratio to the SFT model; RM accuracy: held-out comparisons;");
    println!("tokens/s: tokens trained on (SFT, RM, DPO) or sampled (PPO, GRPO) per second of the stage's wall time (seconds).");
    println!();
    println!("answers (SFT -> {}):", names.join(" | "));
    for (prompt, answers) in &s.samples {
        let cols: Vec<String> = answers.iter().map(|(_, a)| format!("{:24}", a.trim())).collect();
        println!("  {:28} {}", prompt.replace('\n', " "), cols.join(" ").trim_end());
    }
    println!();
    let mut plots = Vec::new();
    if !s.ppo.is_empty() {
        plots.extend(["ppo_reward.svg", "ppo_oracle.svg", "ppo_kl.svg"]);
    }
    if !s.grpo.is_empty() {
        plots.push("grpo_oracle.svg");
    }
    let stages: Vec<&str> =
        std::iter::once("sft").chain(s.rows.iter().skip(1).map(|r| if r.stage == "reward model" { "rm" } else { r.stage.as_str() })).collect();
    println!("checkpoints and metrics.jsonl in {0}/{{{1}}}; summary.json and plots ({2}) in {0}", out.display(), stages.join(","), plots.join(", "));
    Ok(())
}
