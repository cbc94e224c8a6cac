//! The command line: the clap definition of every command, the dispatch and the checks that run
//! before any command writes. Each command's flags and body live in its own file; the flag
//! groups several commands share are in `common`. Commands are generic over the backend;
//! `with_backend` picks it from `--backend`.

mod bench;
mod common;
mod compare;
mod config_file;
mod demo;
mod dpo;
mod elo;
mod generate;
mod grpo;
mod info;
mod ppo;
mod rm;
mod sample;
mod score;
mod sft;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use rlhf::backend::{Backend, CpuBackend, CudaBackend, WgpuBackend};
use std::path::{Path, PathBuf};
use common::*;
use rlhf::train::resume::RunControl;

#[derive(Parser, Debug)]
#[command(name = "rlhf", version, about = "RLHF on a from-scratch transformer: SFT, reward models, PPO, DPO, GRPO", long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Read flags from a TOML file (keys are the flag names; flags on the command line override
    /// them); training commands write the resolved configuration to <out>/run.toml
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

impl Cli {
    /// The clap command with every subcommand accepting a flag more than once (the last one
    /// wins), so that command-line flags override a `--config` file's.
    pub fn command_with_overrides() -> clap::Command {
        let mut cmd = <Cli as clap::CommandFactory>::command().args_override_self(true);
        let names: Vec<String> = cmd.get_subcommands().map(|s| s.get_name().to_string()).collect();
        for name in names {
            // a negative number reaches the flag's own check ("--steps -1": not a count) instead
            // of being read as an unknown flag `-1`
            cmd = cmd.mut_subcommand(name, |s| s.args_override_self(true).mut_args(|a| if a.get_action().takes_values() { a.allow_negative_numbers(true) } else { a }));
        }
        cmd
    }

    /// Parses `args` after expanding `--config`; returns the command line and its matches.
    pub fn parse_with_config(args: Vec<std::ffi::OsString>) -> Result<(Cli, clap::ArgMatches)> {
        let cmd = Self::command_with_overrides();
        let args = config_file::expand_config_args(&cmd, args)?;
        let matches = cmd.get_matches_from(args);
        let cli = <Cli as clap::FromArgMatches>::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
        Ok((cli, matches))
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// The whole pipeline (SFT -> reward model -> PPO) on a built-in task, no files needed
    Demo(demo::DemoArgs),
    /// Supervised fine-tuning on JSONL data
    Sft(sft::SftArgs),
    /// Train a reward model on preference pairs or rankings
    Rm(rm::RmArgs),
    /// PPO against a reward model with a per-token KL penalty to the frozen SFT model
    Ppo(ppo::PpoArgs),
    /// Direct preference optimisation (DPO, cDPO, IPO, SimPO) on preference pairs
    Dpo(dpo::DpoArgs),
    /// Critic-free RL (GRPO, RLOO, REINFORCE++) with a reward model or a built-in reward function
    Grpo(grpo::GrpoArgs),
    /// Print a reward model's score of each input line
    Score(score::LogprobsArgs),
    /// Print the log-probability of every token (after the first) of each input line
    Logprobs(score::LogprobsArgs),
    /// Sample a continuation of a prompt with a KV cache
    Generate(generate::GenerateArgs),
    /// List the backends and devices found
    Info,
    /// Measure training and forward tokens/s for a model size
    Bench(bench::BenchArgs),
    /// Elo ratings of models from head-to-head outcomes (Bradley-Terry, bootstrap intervals)
    Elo(elo::EloArgs),
    /// Head-to-head outcomes of several models on a prompt set, judged by a reward model
    Compare(compare::CompareArgs),
    /// Candidates to label: K samples per prompt from a model, or samples from several models
    Sample(sample::SampleArgs),
}

impl Command {
    /// The subcommand's name on the command line.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Demo(_) => "demo",
            Command::Sft(_) => "sft",
            Command::Rm(_) => "rm",
            Command::Ppo(_) => "ppo",
            Command::Dpo(_) => "dpo",
            Command::Grpo(_) => "grpo",
            Command::Score(_) => "score",
            Command::Logprobs(_) => "logprobs",
            Command::Generate(_) => "generate",
            Command::Info => "info",
            Command::Bench(_) => "bench",
            Command::Elo(_) => "elo",
            Command::Compare(_) => "compare",
            Command::Sample(_) => "sample",
        }
    }
}

/// The most CPU threads `--threads` may ask for.
const MAX_THREADS: usize = 1024;

fn setup_threads(common: &Common) -> Result<()> {
    if common.threads > MAX_THREADS {
        bail!("--threads {}: at most {MAX_THREADS} (0 = one per core)", common.threads);
    }
    if common.threads > 0 {
        rayon::ThreadPoolBuilder::new().num_threads(common.threads).build_global().context("configuring the CPU thread pool")?;
    }
    Ok(())
}

/// The backend opened by `open` with `--precision` and `--matmul-precision` set (a precision it
/// cannot store or compute is an error naming the flag and the backend).
fn with_precision<B: Backend>(mut be: B, common: &Common) -> Result<B> {
    be.set_compute_dtype(common.precision.resolve(be.preferred_compute_dtype()))?;
    be.set_matmul_precision(common.matmul_precision)?;
    Ok(be)
}

/// Runs `f` with the backend `--backend` names, its matmuls in `--matmul-precision`. `auto` picks
/// a CUDA device when libcuda, NVRTC and a device are there, else a discrete GPU through wgpu,
/// else the CPU.
macro_rules! with_backend {
    ($common:expr, |$be:ident| $body:expr) => {{
        setup_threads($common)?;
        let kind = match $common.backend {
            BackendKind::Auto if CudaBackend::device_present() => BackendKind::Cuda,
            BackendKind::Auto if WgpuBackend::discrete_adapter_present() => BackendKind::Wgpu,
            BackendKind::Auto => BackendKind::Cpu,
            k => k,
        };
        match kind {
            BackendKind::Cpu | BackendKind::Auto => {
                let $be = with_precision(CpuBackend::new(), $common)?;
                $body
            }
            BackendKind::Cuda => {
                let $be = with_precision(CudaBackend::new().context("--backend cuda (see `rlhf info`)")?, $common)?;
                eprintln!("backend: {}", $be.device_description());
                $body
            }
            BackendKind::Wgpu => {
                let $be = with_precision(WgpuBackend::new().context("--backend wgpu")?, $common)?;
                eprintln!("backend: {}", $be.device_description());
                $body
            }
        }
    }};
}

/// A training command's output folder, its run arguments and the input folders it reads.
fn training_run(command: &mut Command) -> Option<(&Path, &mut RunControl, Vec<PathBuf>)> {
    fn inputs(xs: &[Option<&PathBuf>]) -> Vec<PathBuf> {
        xs.iter().flatten().map(|p| p.to_path_buf()).collect()
    }
    match command {
        Command::Sft(a) => Some((&a.train.out, &mut a.train.control, inputs(&[a.source.model.as_ref(), a.source.tokenizer.as_ref()]))),
        Command::Rm(a) => Some((&a.out, &mut a.run, inputs(&[a.source.model.as_ref(), a.source.tokenizer.as_ref(), a.init_from.as_ref()]))),
        Command::Ppo(a) => Some((
            &a.out,
            &mut a.run,
            inputs(&[Some(&a.policy), a.reference.as_ref(), a.reward_model.as_ref(), a.value_model.as_ref()]),
        )),
        Command::Dpo(a) => Some((&a.train.out, &mut a.train.control, inputs(&[Some(&a.model), a.ref_model.as_ref()]))),
        Command::Grpo(a) => Some((&a.out, &mut a.run, inputs(&[Some(&a.model), a.ref_model.as_ref(), a.reward_model.as_ref()]))),
        _ => None,
    }
}

/// Checks a training command's `--out` before anything is loaded or written (see
/// [`rlhf::train::run_dir::check_out`]; it may not be one of the run's input folders either) and
/// hands the run its resolved configuration and settings, which it writes and records once its
/// inputs are checked.
/// In a data-parallel job only rank 0 checks the folder (it alone writes it, and may already have
/// claimed it when another rank looks).
fn prepare_training_run(command: &mut Command, sub: &clap::Command, matches: &clap::ArgMatches, main_rank: bool) -> Result<()> {
    use rlhf::train::run_dir::{check_out, same_dir, OutPolicy};
    let Some((out, run, inputs)) = training_run(command) else { return Ok(()) };
    if let Some(input) = inputs.iter().find(|i| same_dir(i, out)) {
        bail!("--out {} is also an input folder ({}): write the run into another folder", out.display(), input.display());
    }
    let policy = if run.overwrite { OutPolicy::Overwrite } else { OutPolicy::Fresh };
    if main_rank {
        check_out(out, run.resume.as_deref(), policy)?;
    }
    run.run_toml = Some(config_file::resolved_toml(sub, matches));
    run.settings = Some(config_file::run_settings(sub, matches));
    Ok(())
}

/// `rlhf demo` replaces an earlier demo's output (reproducible from the seed) but no other
/// run's; it writes its `run.toml` first, as it reads no input.
fn prepare_demo(a: &demo::DemoArgs, sub: &clap::Command, matches: &clap::ArgMatches) -> Result<()> {
    use rlhf::train::run_dir::{check_out, command_of, OutPolicy};
    let earlier_demo = command_of(&a.out).as_deref() == Some("demo");
    check_out(&a.out, None, if a.overwrite || earlier_demo { OutPolicy::Overwrite } else { OutPolicy::Fresh })?;
    config_file::write_resolved(&a.out, sub, matches)?;
    Ok(())
}

/// Runs a parsed command line; `matches` (from [`Cli::parse_with_config`]) gives the resolved
/// configuration written into the output folder of a training command.
pub fn run(mut cli: Cli, matches: &clap::ArgMatches) -> Result<()> {
    // the data-parallel job this process belongs to (a single process unless launched as one)
    let world = rlhf::train::world::World::from_env()?;
    if let Command::Info = cli.command {
        return info::cmd_info(&world, rlhf::train::collective::connect(world.clone()));
    }
    if world.size > 1 && !matches!(cli.command, Command::Sft(_) | Command::Rm(_) | Command::Dpo(_)) {
        bail!(
            "this process is rank {} of {} ({} launch): `rlhf {}` runs as a single process; data-parallel runs are available for `rlhf sft`, `rlhf rm` and `rlhf dpo`",
            world.rank,
            world.size,
            world.launcher.name(),
            cli.command.name()
        );
    }
    let main_rank = world.is_main();
    let zero = training_run(&mut cli.command).map_or(0, |(_, run, _)| run.zero);
    let _collective = rlhf::train::collective::install_with(rlhf::train::collective::connect(world)?, zero);
    if let Some((name, sub_matches)) = matches.subcommand() {
        let cmd = Cli::command_with_overrides();
        let sub = cmd.find_subcommand(name).expect("a parsed subcommand exists");
        match &cli.command {
            Command::Demo(a) => prepare_demo(a, sub, sub_matches)?,
            _ => prepare_training_run(&mut cli.command, sub, sub_matches, main_rank)?,
        }
    }
    match cli.command {
        Command::Demo(a) => with_backend!(&a.common, |be| demo::run_demo(&be, &a.out, a.seed, a.quick, demo::methods_of(&a.method))),
        Command::Sft(a) => with_backend!(&a.common, |be| sft::cmd_sft(&be, &a)),
        Command::Rm(a) => with_backend!(&a.common, |be| rm::cmd_rm(&be, &a)),
        Command::Ppo(a) => with_backend!(&a.common, |be| ppo::cmd_ppo(&be, &a)),
        Command::Dpo(a) => with_backend!(&a.common, |be| dpo::cmd_dpo(&be, &a)),
        Command::Grpo(a) => with_backend!(&a.common, |be| grpo::cmd_grpo(&be, &a)),
        Command::Score(a) => with_backend!(&a.common, |be| score::cmd_score(&be, &a)),
        Command::Logprobs(a) => with_backend!(&a.common, |be| score::cmd_logprobs(&be, &a)),
        Command::Generate(a) => with_backend!(&a.common, |be| generate::cmd_generate(&be, &a)),
        Command::Info => unreachable!("handled above"),
        Command::Bench(a) => with_backend!(&a.common, |be| bench::run_bench(&be, &a)),
        Command::Elo(a) => elo::cmd_elo(&a),
        Command::Compare(a) => with_backend!(&a.run.common, |be| compare::cmd_compare(&be, &a)),
        Command::Sample(a) => with_backend!(&a.run.common, |be| sample::cmd_sample(&be, &a)),
    }
}
