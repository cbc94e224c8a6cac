//! The command line: clap definitions and one function per command. Commands are generic over the
//! backend; `with_backend` picks it from `--backend`.

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use rlhf::backend::{Backend, CpuBackend, CudaBackend, MatmulPrecision, Precision, WgpuBackend};
use rlhf::data::tokenizer::Tokenizer;
use rlhf::generate::{rollout, GenerateConfig, RolloutConfig};
use rlhf::model::config::PRESETS;
use rlhf::model::{Model, ModelConfig};
use rlhf::rl::sft::{run_sft, SftConfig};
use rlhf::train::AdamWConfig;
use std::path::{Path, PathBuf};

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
        let args = rlhf::config::expand_config_args(&cmd, args)?;
        let matches = cmd.get_matches_from(args);
        let cli = <Cli as clap::FromArgMatches>::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
        Ok((cli, matches))
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// The whole pipeline (SFT -> reward model -> PPO) on a built-in task, no files needed
    Demo(DemoArgs),
    /// Supervised fine-tuning on JSONL data
    Sft(SftArgs),
    /// Train a reward model on preference pairs or rankings
    Rm(RmArgs),
    /// PPO against a reward model with a per-token KL penalty to the frozen SFT model
    Ppo(PpoArgs),
    /// Direct preference optimisation (DPO, cDPO, IPO, SimPO) on preference pairs
    Dpo(DpoArgs),
    /// Critic-free RL (GRPO, RLOO, REINFORCE++) with a reward model or a built-in reward function
    Grpo(crate::cli_grpo::GrpoArgs),
    /// Print a reward model's score of each input line
    Score(LogprobsArgs),
    /// Print the log-probability of every token (after the first) of each input line
    Logprobs(LogprobsArgs),
    /// Sample a continuation of a prompt with a KV cache
    Generate(GenerateArgs),
    /// List the backends and devices found
    Info,
    /// Measure training and forward tokens/s for a model size
    Bench(BenchArgs),
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum MethodArg {
    /// reward model, then PPO against it (InstructGPT)
    Ppo,
    /// DPO on preference pairs (no reward model)
    Dpo,
    /// GRPO with the task's oracle as a verifiable reward
    Grpo,
    /// all three, side by side
    All,
}

impl MethodArg {
    pub fn methods(self) -> Vec<rlhf::rl::pipeline::DemoMethod> {
        use rlhf::rl::pipeline::DemoMethod;
        match self {
            MethodArg::Ppo => vec![DemoMethod::Ppo],
            MethodArg::Dpo => vec![DemoMethod::Dpo],
            MethodArg::Grpo => vec![DemoMethod::Grpo],
            MethodArg::All => DemoMethod::ALL.to_vec(),
        }
    }
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendKind {
    /// cuda if a device is found, then a GPU through wgpu, then cpu
    Auto,
    Cpu,
    Cuda,
    Wgpu,
}

#[derive(Args, Debug, Clone)]
pub struct Common {
    /// Compute backend
    #[arg(long, value_enum, default_value = "cpu")]
    pub backend: BackendKind,
    /// Precision of matmul operands, accumulated in f32: f32 (every backend), f16 (wgpu with
    /// shader-f16, cuda), tf32 or bf16 (cuda)
    #[arg(long, value_enum, default_value = "f32")]
    pub matmul_precision: MatmulPrecision,
    /// Storage precision of weights, activations, gradients and the KV cache: auto (bf16 on
    /// CUDA GPUs of sm_80 and newer, else f32), f32, or bf16 (f32 master weights, optimiser state
    /// and accumulation)
    #[arg(long, value_enum, default_value = "auto")]
    pub precision: Precision,
    /// CPU threads (0 = one per core)
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
}

#[derive(Args, Debug)]
pub struct ModelSource {
    /// Hugging Face model folder (config.json, model.safetensors, tokenizer.json)
    #[arg(long, conflicts_with = "init")]
    pub model: Option<PathBuf>,
    /// Build a fresh model from a preset instead (see `rlhf bench --help` for the list)
    #[arg(long)]
    pub init: Option<String>,
    /// Tokenizer folder for --init (default: the built-in byte-level tokenizer)
    #[arg(long, requires = "init")]
    pub tokenizer: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Optimiser steps
    #[arg(long, default_value_t = 100)]
    pub steps: usize,
    /// Peak learning rate
    #[arg(long, allow_negative_numbers = true, default_value_t = 1e-4)]
    pub lr: f32,
    /// Linear warm-up steps
    #[arg(long, default_value_t = 0)]
    pub warmup: usize,
    /// Final learning rate of the cosine decay, as a fraction of --lr
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.1)]
    pub min_lr_ratio: f32,
    /// Sequences per micro-batch
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// Micro-batches per optimiser step
    #[arg(long, default_value_t = 1)]
    pub grad_accum: usize,
    /// Maximum tokens per sequence (longer examples are truncated)
    #[arg(long, default_value_t = 512)]
    pub seq_len: usize,
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.1)]
    pub weight_decay: f32,
    /// Global gradient-norm clipping (0 = off)
    #[arg(long, allow_negative_numbers = true, default_value_t = 1.0)]
    pub max_grad_norm: f32,
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.9)]
    pub beta1: f32,
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.95)]
    pub beta2: f32,
    #[arg(long, default_value_t = 1234)]
    pub seed: u64,
    /// Print a progress line every N steps when stderr is not a terminal
    #[arg(long, default_value_t = 10)]
    pub log_every: usize,
    #[command(flatten)]
    pub run: RunArgs,
}

/// How the RL commands (ppo, grpo) sample their rollouts.
#[derive(Args, Debug, Clone)]
pub struct RolloutSamplingArgs {
    /// Longest response
    #[arg(long, default_value_t = 64)]
    pub max_new_tokens: usize,
    /// Sampling temperature (the log-probs trained on are those of this distribution)
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f32,
    /// Keep the k most likely tokens (0 = off)
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Keep the smallest set of tokens with this much probability (1 = off)
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    #[command(flatten)]
    pub sync: SyncEveryArg,
}

impl RolloutSamplingArgs {
    pub fn sync_every(&self, backend: &str) -> usize {
        self.sync.get(backend)
    }
}

/// How many decode steps the rollout engine runs on the device between two read-backs.
#[derive(Args, Debug, Clone)]
pub struct SyncEveryArg {
    /// Decode steps run back to back on the device between two read-backs of the rollout state
    /// (default: 1 on cpu, 8 on cuda and wgpu)
    #[arg(long, value_name = "K")]
    pub sync_every: Option<usize>,
}

impl SyncEveryArg {
    /// The flag, or the backend's default.
    pub fn get(&self, backend: &str) -> usize {
        self.sync_every.unwrap_or_else(|| rlhf::generate::default_sync_every(backend))
    }
}

/// Checkpoints, resume and the divergence guard, common to the training commands.
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Save a checkpoint of the whole run state (weights, optimiser, RNG, data position) into
    /// <out>/checkpoints every N steps; one is always saved at the end (0 = only then)
    #[arg(long, default_value_t = 0)]
    pub save_every: usize,
    /// Continue a run: its output folder (the latest checkpoint) or a checkpoint folder
    #[arg(long, value_name = "DIR")]
    pub resume: Option<PathBuf>,
    /// Steps in a row with a non-finite loss or gradient that are skipped before the run stops
    #[arg(long, default_value_t = rlhf::train::resume::DEFAULT_MAX_BAD_STEPS)]
    pub max_bad_steps: usize,
    /// Replace the run that --out holds (its metrics, checkpoints and model are deleted once
    /// this run's inputs have been read and checked); without it such a folder is refused
    #[arg(long, conflicts_with = "resume")]
    pub overwrite: bool,
    /// The resolved configuration written as <out>/run.toml (filled in by `run`)
    #[arg(skip)]
    pub run_toml: Option<String>,
    /// The run's settings compared on --resume (filled in by `run`)
    #[arg(skip)]
    pub settings: Option<serde_json::Map<String, serde_json::Value>>,
}

impl RunArgs {
    pub fn control(&self) -> rlhf::train::resume::RunControl {
        use rlhf::train::run_dir::OutPolicy;
        rlhf::train::resume::RunControl {
            save_every: self.save_every,
            resume: self.resume.clone(),
            max_bad_steps: self.max_bad_steps,
            out_policy: if self.overwrite { OutPolicy::Overwrite } else { OutPolicy::Fresh },
            run_toml: self.run_toml.clone(),
            settings: self.settings.clone(),
        }
    }
}

#[derive(Args, Debug)]
pub struct SftArgs {
    #[command(flatten)]
    pub source: ModelSource,
    /// JSONL with `text`, `input_ids`, `prompt`+`completion` or `messages` lines
    #[arg(long)]
    pub data: PathBuf,
    /// Output folder: checkpoint (HF layout + tokenizer) and metrics.jsonl
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub train: TrainArgs,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Args, Debug)]
pub struct RmArgs {
    /// The starting point: an SFT model folder (a score head is added), a reward model, or a preset
    #[command(flatten)]
    pub source: ModelSource,
    /// JSONL with {"prompt", "chosen", "rejected"} or {"prompt", "ranked": [best, ..., worst]} lines
    #[arg(long)]
    pub data: PathBuf,
    /// Output folder: reward model (HF *ForSequenceClassification layout + tokenizer) and metrics.jsonl
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 200)]
    pub steps: usize,
    #[arg(long, default_value_t = 1e-5, allow_negative_numbers = true)]
    pub lr: f32,
    #[arg(long, default_value_t = 0)]
    pub warmup: usize,
    #[arg(long, default_value_t = 0.1, allow_negative_numbers = true)]
    pub min_lr_ratio: f32,
    /// Prompts per optimiser step (each with all of its completions)
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// Longest sequence (prompt + completion); longer completions are cut
    #[arg(long, default_value_t = 512)]
    pub seq_len: usize,
    /// Extra score gap required of every pair
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub margin: f32,
    /// Fraction of prompts held out to measure pairwise accuracy
    #[arg(long, default_value_t = 0.1)]
    pub eval_fraction: f32,
    /// Evaluate every N steps (0 = at the end only)
    #[arg(long, default_value_t = 50)]
    pub eval_every: usize,
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub weight_decay: f32,
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub max_grad_norm: f32,
    #[arg(long, default_value_t = 1234)]
    pub seed: u64,
    #[arg(long, default_value_t = 10)]
    pub log_every: usize,
    #[command(flatten)]
    pub run: RunArgs,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Args, Debug)]
pub struct PpoArgs {
    /// The policy to train (an SFT model folder); also the frozen reference unless --reference
    #[arg(long)]
    pub policy: PathBuf,
    /// The frozen reference for the KL penalty (default: --policy)
    #[arg(long)]
    pub reference: Option<PathBuf>,
    /// The reward model (as `rlhf rm` saves it)
    #[arg(long)]
    pub reward_model: PathBuf,
    /// The value model's starting point (default: the reward model, as in InstructGPT)
    #[arg(long, conflicts_with = "value_head")]
    pub value_model: Option<PathBuf>,
    /// Use a value head on the policy's own trunk instead of a separate value model
    #[arg(long)]
    pub value_head: bool,
    /// JSONL with {"prompt": "..."} or {"messages": [...]} lines
    #[arg(long)]
    pub prompts: PathBuf,
    /// Output folder: the trained policy (HF layout + tokenizer) and metrics.jsonl
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 100)]
    pub steps: usize,
    /// Prompts sampled per step
    #[arg(long, default_value_t = 16)]
    pub rollout_batch: usize,
    /// Sequences per optimiser step inside an epoch
    #[arg(long, default_value_t = 8)]
    pub mini_batch: usize,
    #[arg(long, default_value_t = 4)]
    pub ppo_epochs: usize,
    #[command(flatten)]
    pub sampling: RolloutSamplingArgs,
    #[arg(long, default_value_t = 1e-6, allow_negative_numbers = true)]
    pub lr: f32,
    #[arg(long, default_value_t = 1e-5, allow_negative_numbers = true)]
    pub value_lr: f32,
    /// KL coefficient beta (initial value with --kl-target)
    #[arg(long, default_value_t = 0.05, allow_negative_numbers = true)]
    pub kl_coef: f32,
    /// Adaptive KL controller: target KL per sequence (with --kl-horizon)
    #[arg(long)]
    pub kl_target: Option<f32>,
    #[arg(long, default_value_t = 10000.0)]
    pub kl_horizon: f32,
    /// Put the KL in the loss with this estimator (1, 2 or 3) instead of in the reward
    #[arg(long)]
    pub kl_in_loss: Option<u32>,
    #[arg(long, default_value_t = 1.0)]
    pub gamma: f32,
    #[arg(long, default_value_t = 0.95)]
    pub lambda: f32,
    #[arg(long, default_value_t = 0.2, allow_negative_numbers = true)]
    pub clip: f32,
    #[arg(long, default_value_t = 0.2, allow_negative_numbers = true)]
    pub value_clip: f32,
    #[arg(long, default_value_t = 0.5, allow_negative_numbers = true)]
    pub vf_coef: f32,
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub ent_coef: f32,
    /// Do not whiten advantages
    #[arg(long)]
    pub no_whiten: bool,
    /// Normalise reward-model scores with running moments
    #[arg(long)]
    pub reward_norm: bool,
    /// Token budget of one micro-batch (0 = a whole minibatch at once)
    #[arg(long, default_value_t = 0)]
    pub micro_batch_tokens: usize,
    /// PPO-ptx: pretraining/SFT data (JSONL, as `rlhf sft` reads it) mixed into the policy's loss
    #[arg(long)]
    pub ptx_data: Option<PathBuf>,
    /// PPO-ptx: coefficient of the language-modelling loss
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub ptx_coef: f32,
    /// PPO-ptx: sequences of pretraining data per optimiser step
    #[arg(long, default_value_t = 4)]
    pub ptx_batch_size: usize,
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub max_grad_norm: f32,
    #[arg(long, default_value_t = 1234)]
    pub seed: u64,
    #[arg(long, default_value_t = 10)]
    pub log_every: usize,
    #[command(flatten)]
    pub run: RunArgs,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Args, Debug)]
pub struct DpoArgs {
    /// The policy to train (an SFT model folder)
    #[arg(long)]
    pub model: PathBuf,
    /// JSONL with {"prompt", "chosen", "rejected"} lines (or {"prompt", "ranked": [...]}: best vs each other)
    #[arg(long)]
    pub data: PathBuf,
    /// Output folder: the trained policy (HF layout + tokenizer), metrics.jsonl and ref_logps.json
    #[arg(long)]
    pub out: PathBuf,
    /// The frozen reference model (default: --model); scored once, before training
    #[arg(long)]
    pub ref_model: Option<PathBuf>,
    /// sigmoid (DPO), ipo, cdpo (DPO with --label-smoothing) or simpo (reference-free)
    #[arg(long, default_value = "sigmoid")]
    pub loss: String,
    /// Strength of the KL regularisation (sigmoid/cdpo/ipo); SimPO's reward scale
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.1)]
    pub beta: f32,
    /// Probability that a label is flipped (cdpo; also allowed with sigmoid and simpo), in [0, 0.5)
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.0)]
    pub label_smoothing: f32,
    /// SimPO's target reward margin gamma (--loss simpo only)
    #[arg(long, allow_negative_numbers = true)]
    pub simpo_gamma: Option<f32>,
    /// Fraction of prompts held out to measure the implicit reward accuracy
    #[arg(long, default_value_t = 0.0)]
    pub eval_fraction: f32,
    #[command(flatten)]
    pub train: TrainArgs,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Args, Debug)]
pub struct LogprobsArgs {
    /// Model folder (for `score`, a reward model as `rlhf rm` saves it)
    #[arg(long)]
    pub model: PathBuf,
    /// JSONL with `input_ids` or `text` per line (for `score`, prompt and completion together)
    #[arg(long)]
    pub input: PathBuf,
    /// Sequences per forward
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Args, Debug)]
pub struct GenerateArgs {
    #[arg(long)]
    pub model: PathBuf,
    #[arg(long)]
    pub prompt: String,
    /// Wrap the prompt as a user turn with the tokenizer's chat template
    #[arg(long)]
    pub chat: bool,
    #[arg(long, default_value_t = 64)]
    pub max_new_tokens: usize,
    /// 0 = greedy
    #[arg(long, allow_negative_numbers = true, default_value_t = 1.0)]
    pub temperature: f32,
    /// 0 = off
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    #[arg(long, allow_negative_numbers = true, default_value_t = 1.0)]
    pub top_p: f32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Keep going past the end-of-sequence token
    #[arg(long)]
    pub ignore_eos: bool,
    #[command(flatten)]
    pub sync: SyncEveryArg,
    #[command(flatten)]
    pub common: Common,
}

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
    /// Tokens per call of the per-token kernels timed by --kernels
    #[arg(long, default_value_t = 1 << 22)]
    pub kernel_tokens: usize,
    /// Rollout decode steps between read-backs (the K = 1 baseline is printed next to it)
    #[command(flatten)]
    pub sync: SyncEveryArg,
    #[command(flatten)]
    pub common: Common,
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
    /// The methods trained from the SFT model and compared side by side
    #[arg(long, value_enum, default_value = "all")]
    pub method: MethodArg,
    /// Replace another run's output in --out (an earlier demo's is always replaced)
    #[arg(long)]
    pub overwrite: bool,
    #[command(flatten)]
    pub common: Common,
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
fn training_run(command: &mut Command) -> Option<(&Path, &mut RunArgs, Vec<PathBuf>)> {
    fn inputs(xs: &[Option<&PathBuf>]) -> Vec<PathBuf> {
        xs.iter().flatten().map(|p| p.to_path_buf()).collect()
    }
    match command {
        Command::Sft(a) => Some((&a.out, &mut a.train.run, inputs(&[a.source.model.as_ref(), a.source.tokenizer.as_ref()]))),
        Command::Rm(a) => Some((&a.out, &mut a.run, inputs(&[a.source.model.as_ref(), a.source.tokenizer.as_ref()]))),
        Command::Ppo(a) => Some((
            &a.out,
            &mut a.run,
            inputs(&[Some(&a.policy), a.reference.as_ref(), Some(&a.reward_model), a.value_model.as_ref()]),
        )),
        Command::Dpo(a) => Some((&a.out, &mut a.train.run, inputs(&[Some(&a.model), a.ref_model.as_ref()]))),
        Command::Grpo(a) => Some((&a.out, &mut a.run, inputs(&[Some(&a.model), a.ref_model.as_ref(), a.reward_model.as_ref()]))),
        _ => None,
    }
}

/// Checks a training command's `--out` before anything is loaded or written (see
/// [`rlhf::train::run_dir::check_out`]; it may not be one of the run's input folders either) and
/// hands the run its resolved configuration and settings, which it writes and records once its
/// inputs are checked.
fn prepare_training_run(command: &mut Command, sub: &clap::Command, matches: &clap::ArgMatches) -> Result<()> {
    use rlhf::train::run_dir::{check_out, same_dir, OutPolicy};
    let Some((out, run, inputs)) = training_run(command) else { return Ok(()) };
    if let Some(input) = inputs.iter().find(|i| same_dir(i, out)) {
        bail!("--out {} is also an input folder ({}): write the run into another folder", out.display(), input.display());
    }
    let policy = if run.overwrite { OutPolicy::Overwrite } else { OutPolicy::Fresh };
    check_out(out, run.resume.as_deref(), policy)?;
    run.run_toml = Some(rlhf::config::resolved_toml(sub, matches));
    run.settings = Some(rlhf::config::run_settings(sub, matches));
    Ok(())
}

/// `rlhf demo` replaces an earlier demo's output (reproducible from the seed) but no other
/// run's; it writes its `run.toml` first, as it reads no input.
fn prepare_demo(a: &DemoArgs, sub: &clap::Command, matches: &clap::ArgMatches) -> Result<()> {
    use rlhf::train::run_dir::{check_out, command_of, OutPolicy};
    let earlier_demo = command_of(&a.out).as_deref() == Some("demo");
    check_out(&a.out, None, if a.overwrite || earlier_demo { OutPolicy::Overwrite } else { OutPolicy::Fresh })?;
    rlhf::config::write_resolved(&a.out, sub, matches)?;
    Ok(())
}

/// Runs a parsed command line; `matches` (from [`Cli::parse_with_config`]) gives the resolved
/// configuration written into the output folder of a training command.
pub fn run(mut cli: Cli, matches: &clap::ArgMatches) -> Result<()> {
    if let Some((name, sub_matches)) = matches.subcommand() {
        let cmd = Cli::command_with_overrides();
        let sub = cmd.find_subcommand(name).expect("a parsed subcommand exists");
        match &cli.command {
            Command::Demo(a) => prepare_demo(a, sub, sub_matches)?,
            _ => prepare_training_run(&mut cli.command, sub, sub_matches)?,
        }
    }
    match cli.command {
        Command::Demo(a) => with_backend!(&a.common, |be| crate::demo::run_demo(&be, &a.out, a.seed, a.quick, a.method.methods())),
        Command::Sft(a) => with_backend!(&a.common, |be| cmd_sft(&be, &a)),
        Command::Rm(a) => with_backend!(&a.common, |be| cmd_rm(&be, &a)),
        Command::Ppo(a) => with_backend!(&a.common, |be| cmd_ppo(&be, &a)),
        Command::Dpo(a) => with_backend!(&a.common, |be| cmd_dpo(&be, &a)),
        Command::Grpo(a) => with_backend!(&a.common, |be| crate::cli_grpo::cmd_grpo(&be, &a)),
        Command::Score(a) => with_backend!(&a.common, |be| cmd_score(&be, &a)),
        Command::Logprobs(a) => with_backend!(&a.common, |be| cmd_logprobs(&be, &a)),
        Command::Generate(a) => with_backend!(&a.common, |be| cmd_generate(&be, &a)),
        Command::Info => cmd_info(),
        Command::Bench(a) => with_backend!(&a.common, |be| crate::bench::run_bench(&be, &a)),
    }
}

/// The model and tokenizer a training command starts from; `reward` gives the model a scalar
/// score head (a reward model) in place of the LM head.
pub fn load_source<B: Backend>(be: &B, src: &ModelSource, seed: u64, reward: bool) -> Result<(Model<B>, Tokenizer)> {
    match (&src.model, &src.init) {
        (Some(dir), None) => {
            let tok = Tokenizer::load(dir)?;
            let model = if reward { Model::load_reward(be, dir, seed)? } else { Model::load(be, dir)? };
            Ok((model, tok))
        }
        (None, Some(preset)) => {
            let tok = match &src.tokenizer {
                Some(dir) => Tokenizer::load(dir)?,
                None => Tokenizer::byte_level(),
            };
            let mut cfg = ModelConfig::preset(preset, tok.vocab_size())?;
            cfg.score_head = reward;
            let model = Model::init(be, cfg, seed)?;
            Ok((model, tok))
        }
        _ => bail!("give either --model DIR or --init PRESET (presets: {})", PRESETS.join(", ")),
    }
}

fn train_config(t: &TrainArgs, out: &Path) -> SftConfig {
    SftConfig {
        out: out.to_path_buf(),
        steps: t.steps,
        lr: t.lr,
        min_lr_ratio: t.min_lr_ratio,
        warmup: t.warmup,
        batch_size: t.batch_size,
        grad_accum: t.grad_accum,
        seq_len: t.seq_len,
        seed: t.seed,
        optim: AdamWConfig { beta1: t.beta1, beta2: t.beta2, eps: 1e-8, weight_decay: t.weight_decay, max_grad_norm: t.max_grad_norm },
        log_every: t.log_every,
        control: t.run.control(),
    }
}

fn cmd_sft<B: Backend>(be: &B, a: &SftArgs) -> Result<()> {
    let cfg = train_config(&a.train, &a.out);
    cfg.validate()?;
    let (mut model, tok) = load_source(be, &a.source, a.train.seed, false)?;
    let examples = rlhf::data::jsonl::load_sft_jsonl(&a.data, &tok)?;
    eprintln!(
        "sft: {} examples from {}, model {} ({:.2}M parameters), backend {}",
        examples.len(),
        a.data.display(),
        model.cfg().model_type,
        model.cfg().num_params() as f64 / 1e6,
        be.name()
    );
    let summary = run_sft(be, &mut model, &tok, examples, &cfg)?;
    println!(
        "sft done: loss {:.4} -> {:.4}, {} tokens in {:.1}s ({:.0} tokens/s); checkpoint and metrics.jsonl in {}",
        summary.first_loss,
        summary.last_loss,
        summary.tokens,
        summary.elapsed_s,
        summary.tokens_per_sec,
        a.out.display()
    );
    Ok(())
}

fn cmd_rm<B: Backend>(be: &B, a: &RmArgs) -> Result<()> {
    let cfg = rlhf::rl::reward::RmConfig {
        out: a.out.clone(),
        steps: a.steps,
        lr: a.lr,
        min_lr_ratio: a.min_lr_ratio,
        warmup: a.warmup,
        batch_size: a.batch_size,
        seq_len: a.seq_len,
        seed: a.seed,
        optim: AdamWConfig { weight_decay: a.weight_decay, max_grad_norm: a.max_grad_norm, ..AdamWConfig::default() },
        margin: a.margin,
        eval_fraction: a.eval_fraction,
        eval_every: a.eval_every,
        log_every: a.log_every,
        control: a.run.control(),
    };
    cfg.validate()?;
    if !(a.weight_decay >= 0.0 && a.weight_decay.is_finite() && a.max_grad_norm >= 0.0 && a.max_grad_norm.is_finite()) {
        bail!("--weight-decay and --max-grad-norm must be non-negative numbers");
    }
    let (mut model, tok) = load_source(be, &a.source, a.seed, true)?;
    let seq_len = a.seq_len.min(model.cfg().max_positions);
    let groups = rlhf::data::preference::load_preference_jsonl(&a.data, &tok, seq_len)?;
    let pairs: usize = groups.iter().map(|g| g.n_pairs()).sum();
    eprintln!(
        "rm: {} prompts ({pairs} pairs) from {}, model {} ({:.2}M parameters), backend {}",
        groups.len(),
        a.data.display(),
        model.cfg().model_type,
        model.cfg().num_params() as f64 / 1e6,
        be.name()
    );
    let s = rlhf::rl::reward::run_rm(be, &mut model, &tok, groups, &cfg)?;
    let acc = |e: &Option<rlhf::rl::reward::RankingStats>| e.map_or("-".to_string(), |e| format!("{:.3} ({} pairs)", e.accuracy, e.pairs));
    println!(
        "rm done: loss {:.4} -> {:.4}; held-out pairwise accuracy {} before, {} after; {} train / {} held-out prompts; {:.0} tokens/s; reward model and metrics.jsonl in {}",
        s.first_loss,
        s.last_loss,
        acc(&s.eval_before),
        acc(&s.eval),
        s.train_groups,
        s.eval_groups,
        s.tokens_per_sec,
        a.out.display()
    );
    Ok(())
}

fn cmd_ppo<B: Backend>(be: &B, a: &PpoArgs) -> Result<()> {
    let cfg = rlhf::rl::ppo::PpoConfig {
        out: a.out.clone(),
        steps: a.steps,
        rollout_batch: a.rollout_batch,
        mini_batch: a.mini_batch,
        ppo_epochs: a.ppo_epochs,
        max_new_tokens: a.sampling.max_new_tokens,
        temperature: a.sampling.temperature,
        top_k: a.sampling.top_k,
        top_p: a.sampling.top_p,
        sync_every: a.sampling.sync_every(be.name()),
        lr: a.lr,
        value_lr: a.value_lr,
        optim: AdamWConfig { weight_decay: 0.0, max_grad_norm: a.max_grad_norm, ..AdamWConfig::default() },
        kl_coef: a.kl_coef,
        kl_target: a.kl_target.map(|t| (t, a.kl_horizon)),
        kl_in_loss: a.kl_in_loss,
        gamma: a.gamma,
        lambda: a.lambda,
        clip: a.clip,
        value_clip: a.value_clip,
        vf_coef: a.vf_coef,
        ent_coef: a.ent_coef,
        whiten_advantages: !a.no_whiten,
        reward_norm: a.reward_norm,
        micro_batch_tokens: a.micro_batch_tokens,
        ptx_coef: a.ptx_coef,
        ptx_batch_size: a.ptx_batch_size,
        seed: a.seed,
        log_every: a.log_every,
        control: a.run.control(),
    };
    cfg.validate()?;
    if !(a.max_grad_norm >= 0.0 && a.max_grad_norm.is_finite()) {
        bail!("--max-grad-norm must be a non-negative number");
    }
    let tok = Tokenizer::load(&a.policy)?;
    let reward_tok = Tokenizer::load(&a.reward_model)?;
    if reward_tok.vocab_size() != tok.vocab_size() || reward_tok.eos_id() != tok.eos_id() {
        bail!(
            "the reward model's tokenizer ({} tokens) differs from the policy's ({} tokens): PPO needs one tokenizer",
            reward_tok.vocab_size(),
            tok.vocab_size()
        );
    }
    let mut policy = Model::load(be, &a.policy)?;
    let reference = Model::load(be, a.reference.as_ref().unwrap_or(&a.policy))?.into_frozen();
    if !ModelConfig::load(&a.reward_model)?.score_head {
        bail!(
            "{}: config.json does not describe a reward model (architectures *ForSequenceClassification); train one with `rlhf rm`",
            a.reward_model.display()
        );
    }
    let reward = Model::load_reward(be, &a.reward_model, a.seed)?.into_frozen();
    let mut value = if a.value_head { None } else { Some(Model::load_reward(be, a.value_model.as_ref().unwrap_or(&a.reward_model), a.seed)?) };
    let prompts = rlhf::data::jsonl::load_prompts_jsonl(&a.prompts, &tok, policy.cfg().max_positions.min(reward.cfg().max_positions))?;
    let ptx = match &a.ptx_data {
        Some(path) => {
            if !(a.ptx_coef > 0.0 && a.ptx_coef.is_finite()) {
                bail!("--ptx-data needs a positive --ptx-coef");
            }
            Some(rlhf::data::jsonl::load_sft_jsonl(path, &tok)?)
        }
        None if a.ptx_coef != 0.0 => bail!("--ptx-coef needs --ptx-data"),
        None => None,
    };
    eprintln!(
        "ppo: {} prompts from {}, policy {} ({:.2}M parameters), backend {}",
        prompts.len(),
        a.prompts.display(),
        policy.cfg().model_type,
        policy.cfg().num_params() as f64 / 1e6,
        be.name()
    );
    let models = rlhf::rl::ppo::PpoModels { policy: &mut policy, reference: &reference, reward: &reward, value: value.as_mut() };
    let reports = rlhf::rl::ppo::run_ppo(be, models, &tok, &prompts, &cfg, ptx, None)?;
    let (first, last) = (reports.first(), reports.last());
    println!(
        "ppo done: reward-model score {:.3} -> {:.3}, KL to the reference {:.3} (last step); policy and metrics.jsonl in {}",
        first.map_or(f32::NAN, |r| r.score_mean),
        last.map_or(f32::NAN, |r| r.score_mean),
        last.map_or(f32::NAN, |r| r.kl_k1),
        a.out.display()
    );
    Ok(())
}

fn cmd_dpo<B: Backend>(be: &B, a: &DpoArgs) -> Result<()> {
    use rlhf::rl::dpo::{run_dpo, DpoConfig, DpoLoss};
    let t = train_config(&a.train, &a.out);
    let loss = DpoLoss::parse(&a.loss)?;
    if a.simpo_gamma.is_some() && loss != DpoLoss::Simpo {
        bail!("--simpo-gamma applies to --loss simpo only");
    }
    let mut cfg = DpoConfig::new(t.out, t.steps, t.batch_size);
    (cfg.lr, cfg.min_lr_ratio, cfg.warmup, cfg.grad_accum, cfg.seq_len, cfg.seed) = (t.lr, t.min_lr_ratio, t.warmup, t.grad_accum, t.seq_len, t.seed);
    (cfg.optim, cfg.log_every, cfg.loss, cfg.beta, cfg.label_smoothing) = (t.optim, t.log_every, loss, a.beta, a.label_smoothing);
    (cfg.simpo_gamma, cfg.eval_fraction, cfg.control) = (a.simpo_gamma.unwrap_or(0.5), a.eval_fraction, t.control);
    cfg.validate()?;
    let tok = Tokenizer::load(&a.model)?;
    let mut model = Model::load(be, &a.model)?;
    let reference = match &a.ref_model {
        Some(dir) if loss == DpoLoss::Simpo => bail!("--ref-model {}: SimPO uses no reference model", dir.display()),
        Some(dir) => {
            let ref_tok = Tokenizer::load(dir)?;
            if ref_tok.vocab_size() != tok.vocab_size() || ref_tok.eos_id() != tok.eos_id() {
                bail!("--ref-model {}: its tokenizer differs from the policy's", dir.display());
            }
            Some(Model::load(be, dir)?)
        }
        None => None,
    };
    let seq_len = cfg.seq_len.min(model.cfg().max_positions);
    let groups = rlhf::data::preference::load_preference_jsonl(&a.data, &tok, seq_len)?;
    eprintln!(
        "dpo: {} prompts from {}, loss {} (beta {}), policy {} ({:.2}M parameters), backend {}",
        groups.len(),
        a.data.display(),
        loss.name(),
        cfg.beta,
        model.cfg().model_type,
        model.cfg().num_params() as f64 / 1e6,
        be.name()
    );
    let s = run_dpo(be, &mut model, reference, &tok, groups, &cfg)?;
    let eval = |e: &Option<rlhf::rl::dpo::DpoStats>| e.map_or("-".to_string(), |e| format!("{:.3}", e.reward_accuracy));
    println!(
        "dpo done: loss {:.4} -> {:.4}, reward accuracy {:.3} -> {:.3}, margin {:.3}; held-out accuracy {} before, {} after; {} train / {} held-out pairs, {} epochs; {:.0} tokens/s; policy and metrics.jsonl in {}",
        s.first.loss,
        s.last.loss,
        s.first.reward_accuracy,
        s.last.reward_accuracy,
        s.last.margin,
        eval(&s.eval_before),
        eval(&s.eval_after),
        s.train_pairs,
        s.eval_pairs,
        s.epochs,
        s.tokens_per_sec,
        a.out.display()
    );
    Ok(())
}

fn cmd_score<B: Backend>(be: &B, a: &LogprobsArgs) -> Result<()> {
    if a.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    let cfg = ModelConfig::load(&a.model)?;
    if !cfg.score_head {
        bail!("{}: config.json does not describe a reward model (architectures *ForSequenceClassification); train one with `rlhf rm`", a.model.display());
    }
    let model = Model::load_reward(be, &a.model, 0)?.into_frozen();
    let tok = Tokenizer::load(&a.model).ok();
    let seqs = rlhf::data::score_input::read_score_inputs(&a.input, tok.as_ref(), model.cfg().vocab_size, model.cfg().max_positions)?;
    let longest = seqs.iter().map(Vec::len).max().unwrap_or(2);
    // no batch larger than the input: the flag is an upper bound, not a size to allocate
    let mut scorer = rlhf::rl::reward::RewardTrainer::scorer(be, &model, a.batch_size.min(seqs.len().max(1)), longest)?;
    let pad = tok.as_ref().map_or(0, |t| t.pad_or_default());
    let scores = scorer.score(be, &model, &seqs, pad)?;
    let mut out = std::io::stdout().lock();
    use std::io::Write;
    for (ids, score) in seqs.iter().zip(scores) {
        writeln!(out, "{}", serde_json::json!({ "input_ids": ids, "score": score }))?;
    }
    Ok(())
}

fn cmd_logprobs<B: Backend>(be: &B, a: &LogprobsArgs) -> Result<()> {
    if a.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    let model = Model::load(be, &a.model)?.into_frozen();
    // `input_ids` lines need no tokenizer; a tokenizer that is there but broken is an error
    let has_tokenizer = a.model.join("tokenizer.json").is_file() || a.model.join(rlhf::data::tokenizer::BYTE_TOKENIZER_FILE).is_file();
    let tok = if has_tokenizer { Some(Tokenizer::load(&a.model)?) } else { None };
    let seqs = rlhf::data::score_input::read_score_inputs(&a.input, tok.as_ref(), model.cfg().vocab_size, model.cfg().max_positions)?;
    let logprobs = rlhf::model::scoring::token_logprobs(be, &model, &seqs, a.batch_size.min(seqs.len().max(1)))?;
    let mut out = std::io::stdout().lock();
    use std::io::Write;
    for (ids, lp) in seqs.iter().zip(logprobs) {
        let sum: f64 = lp.iter().map(|&x| x as f64).sum();
        let line = serde_json::json!({ "input_ids": ids, "logprobs": lp, "sum_logprob": sum });
        writeln!(out, "{line}")?;
    }
    Ok(())
}

fn cmd_generate<B: Backend>(be: &B, a: &GenerateArgs) -> Result<()> {
    let model = Model::load(be, &a.model)?.into_frozen();
    let tok = Tokenizer::load(&a.model)?;
    let prompt_ids = if a.chat {
        let messages = vec![rlhf::data::chat::Message { role: "user".into(), content: a.prompt.clone() }];
        let text = rlhf::data::chat::render_chat(&tok, &messages, true)?;
        tok.encode(&text, false)?
    } else {
        tok.encode(&a.prompt, true)?
    };
    if prompt_ids.is_empty() {
        bail!("--prompt {:?} encodes to no tokens; give some text to continue", a.prompt);
    }
    let mut stop_ids = Vec::new();
    if !a.ignore_eos {
        stop_ids.extend(tok.stop_ids());
        stop_ids.extend(model.cfg().eos_token_id);
    }
    let cfg = GenerateConfig { max_new_tokens: a.max_new_tokens, temperature: a.temperature, top_k: a.top_k, top_p: a.top_p, seed: a.seed, stop_ids, vocab_limit: Some(tok.vocab_size()) };
    // the rollout engine with one slot: the same draws as `generate`, read back every K steps
    let rcfg = RolloutConfig { slots: 1, gen: cfg, sync_every: a.sync.get(be.name()) };
    let new = rollout(be, &model, &[prompt_ids], &rcfg)?.outputs.into_iter().next().map(|o| o.response).unwrap_or_default();
    let text = tok.decode_with(&new, true)?;
    println!("{}{}", if a.chat { "" } else { a.prompt.as_str() }, text);
    Ok(())
}

fn cmd_info() -> Result<()> {
    let cpu = CpuBackend::new();
    println!("rlhf {}", env!("CARGO_PKG_VERSION"));
    println!("backends:");
    println!("  cpu   available  {}", cpu.device_description());
    match rlhf::backend::cuda::availability().and_then(|()| rlhf::backend::cuda::devices()) {
        Ok(devices) if !devices.is_empty() => {
            println!("  cuda  available  {} device(s), RLHF_CUDA_DEVICE=<n> picks one (default 0):", devices.len());
            for d in &devices {
                println!("        - {d}");
            }
        }
        Ok(_) => println!("  cuda  no device  (libcuda and NVRTC found, but no CUDA device)"),
        Err(why) => println!("  cuda  unavailable  ({why})"),
    }
    for lib in rlhf::backend::cuda::versions::library_report() {
        println!("        {lib}");
    }
    let adapters = rlhf::backend::wgpu::adapters();
    if adapters.is_empty() {
        println!("  wgpu  no adapter (no Vulkan, Metal or DX12 driver found; on Linux without a GPU: apt-get install mesa-vulkan-drivers libvulkan1)");
    } else {
        println!("  wgpu  available  {} adapter(s), the first is used (RLHF_WGPU_ADAPTER=<name part> picks another):", adapters.len());
        for a in &adapters {
            println!("        - {}", rlhf::backend::wgpu::describe_adapter(a));
        }
    }
    println!("presets: {}", PRESETS.join(", "));
    Ok(())
}
