//! Flag groups shared by several commands (backend and precision, the model a run starts from,
//! the training loop, rollout sampling, checkpoints and resume) and the helpers that read them.

use anyhow::{bail, Result};
use clap::{Args, ValueEnum};
use rlhf::backend::{Backend, MatmulPrecision, Precision};
use rlhf::data::tokenizer::Tokenizer;
use rlhf::model::config::PRESETS;
use rlhf::model::{Model, ModelConfig};
use rlhf::rl::sft::SftConfig;
use rlhf::train::AdamWConfig;
use std::path::{Path, PathBuf};

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

pub fn train_config(t: &TrainArgs, out: &Path) -> SftConfig {
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
