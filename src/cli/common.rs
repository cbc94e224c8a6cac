//! Flag groups shared by several commands (backend and precision, the model a run starts from,
//! the training loop, rollout sampling, checkpoints and resume) and the helpers that read them.

use anyhow::{bail, Result};
use clap::{Args, ValueEnum};
use rlhf::backend::{Backend, MatmulPrecision, Precision};
use rlhf::data::tokenizer::Tokenizer;
use rlhf::model::config::PRESETS;
use rlhf::model::{Model, ModelConfig};
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

/// `--reward-cmd` / `--reward-url` and their timeout (`rlhf ppo`, `rlhf grpo`).
#[derive(Args, Debug, Clone)]
pub struct RewardCmdArgs {
    /// Rewards from a program (run with `sh -c`, kept running): one JSON request per sample on
    /// its stdin (the prompt line's fields plus "completion"), one answer line per request on its
    /// stdout, in order: a number or {"reward": x}
    #[arg(long, value_name = "CMD", conflicts_with = "reward_url")]
    pub reward_cmd: Option<String>,
    /// Rewards from an HTTP endpoint (OpenRLHF's remote reward model): one POST per batch of
    /// {"query", "prompts", "labels", "requests"}, answered by {"rewards": [...]}
    #[arg(long, value_name = "URL")]
    pub reward_url: Option<String>,
    /// Seconds the --reward-cmd program or the --reward-url endpoint has to answer a batch
    #[arg(long, default_value_t = 600.0, value_name = "SECS")]
    pub reward_timeout: f64,
}

impl RewardCmdArgs {
    /// Whether an outside reward is given.
    pub fn given(&self) -> bool {
        self.reward_cmd.is_some() || self.reward_url.is_some()
    }

    /// The outside reward for the prompts read from `path` (`prompts` tokenized), when
    /// `--reward-cmd` or `--reward-url` is given.
    pub fn start<'t>(&self, path: &Path, prompts: &[Vec<u32>], tok: &'t Tokenizer) -> anyhow::Result<Option<rlhf::rl::reward_cmd::PromptReward<'t>>> {
        use rlhf::rl::reward_cmd::{PromptReward, RewardProcess, RewardTransport};
        let secs = self.reward_timeout;
        anyhow::ensure!(secs > 0.0 && secs.is_finite() && secs < 1e9, "--reward-timeout must be a positive number of seconds, got {secs}");
        let timeout = std::time::Duration::from_secs_f64(secs);
        let transport = match (&self.reward_cmd, &self.reward_url) {
            (Some(cmd), _) => RewardTransport::Process(std::cell::RefCell::new(RewardProcess::start(cmd, timeout)?)),
            (None, Some(url)) => RewardTransport::Http(rlhf::rl::reward_url::RewardEndpoint::new(url, timeout)?),
            (None, None) => return Ok(None),
        };
        Ok(Some(PromptReward::new(transport, path, prompts, tok)?))
    }
}

/// Each model folder's name in outcomes and candidates (its last component); two folders of the
/// same name are refused, naming `flag`.
pub fn model_names(dirs: &[PathBuf], flag: &str) -> Result<Vec<String>> {
    let names: Vec<String> = dirs.iter().map(|d| d.file_name().map_or_else(|| d.display().to_string(), |n| n.to_string_lossy().into_owned())).collect();
    if let Some(dup) = names.iter().enumerate().find_map(|(i, n)| names[..i].contains(n).then_some(n)) {
        bail!("two {flag} folders are both named {dup:?}: give each model a folder of its own name");
    }
    Ok(names)
}

/// Refuses to replace an existing output file unless `--overwrite` is given.
pub fn refuse_existing(out: &Path, overwrite: bool) -> Result<()> {
    if out.exists() && !overwrite {
        bail!("--out {} exists; nothing was changed. Choose another file, or pass --overwrite to replace it", out.display());
    }
    Ok(())
}

/// Checks that the tokenizer of every folder in `dirs` is `tok` (`tok_from` names where it came
/// from).
pub fn same_tokenizer(dirs: &[PathBuf], tok: &Tokenizer, tok_from: &str) -> Result<()> {
    for dir in dirs {
        let t = Tokenizer::load(dir)?;
        if t.vocab_size() != tok.vocab_size() || t.eos_id() != tok.eos_id() {
            bail!("{}: its tokenizer ({} tokens) differs from {tok_from}'s ({} tokens)", dir.display(), t.vocab_size(), tok.vocab_size());
        }
    }
    Ok(())
}

/// How `rlhf sample` and `rlhf compare` sample (the rollout's flags, prompts per batch, seed,
/// backend) and whether their output file may be replaced.
#[derive(Args, Debug)]
pub struct SamplingRun {
    /// Replace --out when it exists (without it an existing file is refused)
    #[arg(long)]
    pub overwrite: bool,
    #[command(flatten)]
    pub sampling: RolloutSamplingArgs,
    /// Prompts decoded together
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 1234)]
    pub seed: u64,
    #[command(flatten)]
    pub common: Common,
}
