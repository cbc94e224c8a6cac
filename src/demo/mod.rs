//! The whole InstructGPT pipeline on the built-in task ([`crate::demo::task`]), as `rlhf demo`
//! runs it: SFT on imperfect demonstrations, then each method of `--method` from the SFT model —
//! PPO (a reward model on oracle-labelled, noisy comparisons, then PPO against it with a KL
//! penalty to the SFT model), DPO on the same kind of comparisons, GRPO with the oracle as a
//! verifiable reward — each evaluated with the oracle and its KL to the SFT model on the same
//! held-out prompts. Writes every stage's checkpoint and metrics under `out`, plus `summary.json`
//! and SVG plots of PPO's reward, oracle score and KL per step and GRPO's oracle score per step.

pub mod dpo;
pub mod grpo;
pub mod task;

use crate::backend::ops::Backend;
use crate::data::jsonl::prompt_completion_example;
use crate::data::tokenizer::Tokenizer;
use crate::error::{Error, Result};
use crate::generate::{generate, GenerateConfig};
use crate::model::scoring::token_logprobs;
use crate::model::{Model, ModelConfig};
use crate::demo::dpo::run_dpo_stage;
use crate::demo::grpo::{demo_grpo_config, run_grpo_stage};
use crate::rl::grpo::GrpoStepReport;
use crate::rl::ppo::{run_ppo, PpoConfig, PpoModels, PpoStepReport};
use crate::rl::reward::{run_rm, RmConfig};
use crate::rl::sft::{run_sft, SftConfig};
use crate::train::AdamWConfig;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Clone, Debug)]
pub struct DemoConfig {
    pub out: PathBuf,
    pub seed: u64,
    pub preset: String,
    pub sft_steps: usize,
    pub rm_steps: usize,
    pub rm_pairs: usize,
    pub label_noise: f32,
    pub ppo_steps: usize,
    pub rollout_batch: usize,
    pub eval_prompts: usize,
    pub kl_coef: f32,
    /// the methods trained from the SFT model and compared (PPO trains the reward model first)
    pub methods: Vec<DemoMethod>,
    /// the shortened run (DPO's stage reads it)
    pub quick: bool,
    pub grpo_steps: usize,
}

/// A method `rlhf demo --method` compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DemoMethod {
    /// reward model, then PPO against it (InstructGPT)
    Ppo,
    /// DPO on the reward model's preference pairs (no reward model, no sampling)
    Dpo,
    /// GRPO with the task's oracle as a verifiable reward (no reward model, no critic)
    Grpo,
    /// advantage actor-critic against the reward model: PPO's rollout, critic and GAE, one
    /// unclipped gradient step per rollout (not in `ALL`; `--method ppo,a2c` runs it beside PPO)
    A2c,
}

impl DemoMethod {
    pub const ALL: [DemoMethod; 3] = [DemoMethod::Ppo, DemoMethod::Dpo, DemoMethod::Grpo];

    pub fn name(self) -> &'static str {
        match self {
            DemoMethod::Ppo => "ppo",
            DemoMethod::Dpo => "dpo",
            DemoMethod::Grpo => "grpo",
            DemoMethod::A2c => "a2c",
        }
    }
}

impl DemoConfig {
    /// The full demo (a few minutes on 2 CPU cores).
    pub fn full(out: &Path, seed: u64) -> Self {
        DemoConfig {
            out: out.to_path_buf(),
            seed,
            preset: "gpt2-tiny".into(),
            sft_steps: 600,
            rm_steps: 200,
            rm_pairs: 600,
            label_noise: 0.1,
            ppo_steps: 60,
            rollout_batch: 16,
            eval_prompts: 64,
            kl_coef: 0.5,
            methods: vec![DemoMethod::Ppo],
            quick: false,
            grpo_steps: 40,
        }
    }

    /// A shortened run for tests.
    pub fn quick(out: &Path, seed: u64) -> Self {
        DemoConfig { sft_steps: 400, rm_steps: 100, rm_pairs: 300, ppo_steps: 25, eval_prompts: 48, quick: true, grpo_steps: 20, ..Self::full(out, seed) }
    }
}

/// One stage's row of the table.
#[derive(Clone, Debug, Default)]
pub struct StageRow {
    pub stage: String,
    pub oracle: f32,
    pub rm_score: Option<f32>,
    pub kl_to_sft: Option<f32>,
    pub rm_accuracy: Option<f32>,
    pub tokens_per_sec: f64,
    pub seconds: f64,
}

#[derive(Clone, Debug)]
pub struct DemoSummary {
    /// sft, then the reward model (with PPO), then one row per method
    pub rows: Vec<StageRow>,
    pub ppo: Vec<PpoStepReport>,
    pub grpo: Vec<GrpoStepReport>,
    /// a few held-out prompts with the SFT model's answer and each method's, by stage name
    pub samples: Vec<(String, Vec<(String, String)>)>,
}

/// Samples one answer per prompt; returns (answers' token ids, mean oracle score, mean KL to
/// `reference` summed over each answer's tokens, when given).
pub fn evaluate<B: Backend>(
    be: &B,
    policy: &Model<B>,
    reference: Option<&Model<B>>,
    tok: &Tokenizer,
    prompts: &[Vec<u32>],
    seed: u64,
) -> Result<(Vec<Vec<u32>>, f32, Option<f32>)> {
    let mut answers = Vec::with_capacity(prompts.len());
    let mut oracle = 0.0;
    for (i, p) in prompts.iter().enumerate() {
        let gen = GenerateConfig { max_new_tokens: 24, temperature: 1.0, top_k: 0, top_p: 1.0, seed: seed + i as u64, stop_ids: tok.stop_ids(), vocab_limit: Some(tok.vocab_size()) };
        let a = generate(be, policy, p, &gen)?;
        oracle += task::oracle_score(&tok.decode_with(&a, true)?);
        answers.push(a);
    }
    let kl = match reference {
        None => None,
        Some(r) => {
            let seqs: Vec<Vec<u32>> = prompts.iter().zip(&answers).map(|(p, a)| p.iter().chain(a).copied().collect()).collect();
            let lp = token_logprobs(be, policy, &seqs, 16)?;
            let lr = token_logprobs(be, r, &seqs, 16)?;
            let mut total = 0.0;
            for ((p, a), (x, y)) in prompts.iter().zip(&answers).zip(lp.iter().zip(&lr)) {
                let from = p.len() - 1;
                total += x[from..from + a.len()].iter().zip(&y[from..from + a.len()]).map(|(a, b)| a - b).sum::<f32>();
            }
            Some(total / prompts.len() as f32)
        }
    };
    Ok((answers, oracle / prompts.len() as f32, kl))
}

fn svg_plot(title: &str, ys: &[f32], color: &str) -> String {
    let (w, h, pad) = (480.0f32, 240.0f32, 36.0f32);
    let (lo, hi) = ys.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(l, u), &y| (l.min(y), u.max(y)));
    let (lo, hi) = if (hi - lo).abs() < 1e-9 { (lo - 1.0, hi + 1.0) } else { (lo, hi) };
    let n = ys.len().max(2) - 1;
    let pts: Vec<String> = ys
        .iter()
        .enumerate()
        .map(|(i, &y)| format!("{:.1},{:.1}", pad + (w - 2.0 * pad) * i as f32 / n as f32, h - pad - (h - 2.0 * pad) * (y - lo) / (hi - lo)))
        .collect();
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{pad}\" y=\"20\">{title}</text>\n\
         <line x1=\"{pad}\" y1=\"{y0}\" x2=\"{x1}\" y2=\"{y0}\" stroke=\"#888\"/>\n\
         <line x1=\"{pad}\" y1=\"{pad}\" x2=\"{pad}\" y2=\"{y0}\" stroke=\"#888\"/>\n\
         <text x=\"2\" y=\"{pad}\">{hi:.2}</text><text x=\"2\" y=\"{y0}\">{lo:.2}</text>\n\
         <text x=\"{x1}\" y=\"{yl}\" text-anchor=\"end\">PPO step {steps}</text>\n\
         <polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{points}\"/>\n</svg>\n",
        y0 = h - pad,
        x1 = w - pad,
        yl = h - 8.0,
        steps = ys.len(),
        points = pts.join(" ")
    )
}

/// The demo's SFT settings (also the starting point of the DPO stage, `rl/demo_dpo.rs`).
pub fn demo_sft_config(out: &Path, steps: usize, seed: u64) -> SftConfig {
    SftConfig {
        out: out.to_path_buf(),
        steps,
        lr: 3e-3,
        min_lr_ratio: 0.1,
        warmup: 20,
        batch_size: 32,
        grad_accum: 1,
        seq_len: 64,
        seed,
        optim: AdamWConfig { weight_decay: 0.0, ..AdamWConfig::default() },
        log_every: 100,
        control: crate::train::resume::RunControl::replacing(),
    }
}

/// PPO (or, with `a2c`, advantage actor-critic: one epoch, one minibatch, no clipping) from the
/// SFT model in `sft_dir` against `reward` (the value model starts from the reward model, as in
/// InstructGPT); returns the trained policy and every step's report.
fn run_demo_ppo<B: Backend>(
    be: &B,
    cfg: &DemoConfig,
    a2c: bool,
    tok: &Tokenizer,
    sft_dir: &Path,
    reward: &Model<B>,
    reference: &Model<B>,
) -> Result<(Model<B>, Vec<PpoStepReport>)> {
    let mut policy = Model::load(be, sft_dir)?;
    let mut value = Model::load_reward(be, &cfg.out.join("rm"), 0)?;
    let train_prompts: Vec<Vec<u32>> = task::prompts(512, cfg.seed ^ 0x9).iter().map(|p| tok.encode(p, true)).collect::<Result<_>>()?;
    let ppo_cfg = PpoConfig {
        out: cfg.out.join(if a2c { "a2c" } else { "ppo" }),
        steps: cfg.ppo_steps,
        rollout_batch: cfg.rollout_batch,
        mini_batch: if a2c { cfg.rollout_batch } else { 8 },
        ppo_epochs: if a2c { 1 } else { 4 },
        max_new_tokens: 24,
        temperature: 1.0,
        top_k: 0,
        top_p: 1.0,
        sync_every: crate::generate::default_sync_every(be.name()),
        lr: 1e-3,
        value_lr: 1e-3,
        optim: AdamWConfig { weight_decay: 0.0, ..AdamWConfig::default() },
        kl_coef: cfg.kl_coef,
        kl_target: None,
        kl_in_loss: None,
        gamma: 1.0,
        lambda: 0.95,
        clip: if a2c { crate::rl::ppo::A2C_NO_CLIP } else { 0.2 },
        value_clip: if a2c { 0.0 } else { 0.2 },
        vf_coef: 0.5,
        ent_coef: 0.0,
        whiten_advantages: true,
        reward_norm: false,
        micro_batch_tokens: 0,
        ptx_coef: 0.0,
        ptx_batch_size: 0,
        seed: cfg.seed,
        log_every: 10,
        control: crate::train::resume::RunControl::replacing(),
    };
    let oracle = |_: &[u32], r: &[u32]| tok.decode_with(r, true).map(|s| task::oracle_score(&s)).unwrap_or(0.0);
    let models = PpoModels { policy: &mut policy, reference, reward: crate::rl::grpo::RewardSource::Model(reward), value: Some(&mut value) };
    let reports = run_ppo(be, models, tok, &train_prompts, &ppo_cfg, None, Some(&oracle))?;
    Ok((policy, reports))
}

/// Runs the pipeline; prints progress lines to stderr.
pub fn run_pipeline<B: Backend>(be: &B, cfg: &DemoConfig) -> Result<DemoSummary> {
    let tok = Tokenizer::byte_level();
    let out = &cfg.out;
    crate::io::fs::create_dir_all(out)?;
    let eval_prompts: Vec<Vec<u32>> = task::prompts(cfg.eval_prompts, cfg.seed ^ 0xE7).iter().map(|p| tok.encode(p, true)).collect::<Result<_>>()?;
    let mut rows = Vec::new();

    // ---- SFT on imperfect demonstrations ----
    let demos = task::demonstrations(2000, cfg.seed);
    let examples = demos.iter().map(|(p, c)| prompt_completion_example(&tok, p, c)).collect::<Result<Vec<_>>>()?;
    let mut sft_model = Model::init(be, ModelConfig::preset(&cfg.preset, tok.vocab_size())?, cfg.seed)?;
    let sft_cfg = demo_sft_config(&out.join("sft"), cfg.sft_steps, cfg.seed);
    eprintln!("demo: SFT on {} imperfect demonstrations", examples.len());
    let sft = run_sft(be, &mut sft_model, &tok, examples, &sft_cfg)?;
    let t = Instant::now();
    let (sft_answers, sft_oracle, _) = evaluate(be, &sft_model, None, &tok, &eval_prompts, cfg.seed)?;
    rows.push(StageRow {
        stage: "sft".into(),
        oracle: sft_oracle,
        rm_score: None,
        kl_to_sft: Some(0.0),
        rm_accuracy: None,
        tokens_per_sec: sft.tokens_per_sec,
        seconds: sft.elapsed_s + t.elapsed().as_secs_f64(),
    });

    let sft_dir = out.join("sft");
    let n_methods = cfg.methods.len();

    // ---- reward model on oracle-labelled comparisons (for PPO) ----
    let reward = if cfg.methods.contains(&DemoMethod::Ppo) || cfg.methods.contains(&DemoMethod::A2c) {
        eprintln!("demo: reward model on {} oracle-labelled comparisons ({}% label noise)", cfg.rm_pairs, (cfg.label_noise * 100.0).round());
        let groups = task::preference_groups(&tok, cfg.rm_pairs, cfg.label_noise, cfg.seed ^ 0x5EED)?;
        let mut rm = Model::load_reward(be, &sft_dir, cfg.seed)?;
        let rm_cfg = RmConfig {
            out: out.join("rm"),
            steps: cfg.rm_steps,
            lr: 1e-3,
            min_lr_ratio: 0.1,
            warmup: 10,
            batch_size: 16,
            seq_len: 64,
            seed: cfg.seed,
            optim: AdamWConfig { weight_decay: 0.0, ..AdamWConfig::default() },
            margin: 0.0,
            eval_fraction: 0.2,
            eval_every: 50,
            log_every: 50,
            control: crate::train::resume::RunControl::replacing(),
        };
        let rm_summary = run_rm(be, &mut rm, &tok, groups, &rm_cfg)?;
        rows.push(StageRow {
            stage: "reward model".into(),
            oracle: f32::NAN,
            rm_score: None,
            kl_to_sft: None,
            rm_accuracy: rm_summary.eval.map(|e| e.accuracy),
            tokens_per_sec: rm_summary.tokens_per_sec,
            seconds: rm_summary.elapsed_s,
        });
        Some(Model::load_reward(be, &out.join("rm"), 0)?.into_frozen())
    } else {
        None
    };
    let mut rm_scorer = reward.as_ref().map(|r| crate::rl::reward::RewardTrainer::scorer(be, r, 16, 64)).transpose()?;
    let mut score_of = |answers: &[Vec<u32>]| -> Result<Option<f32>> {
        let (Some(reward), Some(scorer)) = (reward.as_ref(), rm_scorer.as_mut()) else { return Ok(None) };
        let seqs: Vec<Vec<u32>> = eval_prompts.iter().zip(answers).map(|(p, a)| p.iter().chain(a).copied().collect()).collect();
        let s = scorer.score(be, reward, &seqs, tok.pad_or_default())?;
        Ok(Some(s.iter().sum::<f32>() / s.len().max(1) as f32))
    };
    rows[0].rm_score = score_of(&sft_answers)?;

    // ---- each method from the SFT model, evaluated on the same held-out prompts ----
    let reference = Model::load(be, &sft_dir)?.into_frozen();
    let (mut ppo_reports, mut grpo_reports) = (Vec::new(), Vec::new());
    let mut method_answers = Vec::new();
    for (k, &method) in cfg.methods.iter().enumerate() {
        let t = Instant::now();
        let (policy, tokens) = match method {
            DemoMethod::Ppo => {
                eprintln!("demo: method {}/{n_methods}: PPO against the reward model (KL coefficient {} to the SFT model)", k + 1, cfg.kl_coef);
                let reward = reward.as_ref().expect("the reward model is trained for PPO");
                let (policy, reports) = run_demo_ppo(be, cfg, false, &tok, &sft_dir, reward, &reference)?;
                let tokens: f64 = reports.iter().map(|r| r.response_len as f64 * cfg.rollout_batch as f64).sum();
                ppo_reports = reports;
                (policy, tokens)
            }
            DemoMethod::A2c => {
                eprintln!("demo: method {}/{n_methods}: A2C against the reward model (one unclipped step per rollout)", k + 1);
                let reward = reward.as_ref().expect("the reward model is trained for A2C");
                let (policy, reports) = run_demo_ppo(be, cfg, true, &tok, &sft_dir, reward, &reference)?;
                (policy, reports.iter().map(|r| r.response_len as f64 * cfg.rollout_batch as f64).sum())
            }
            DemoMethod::Dpo => {
                eprintln!("demo: method {}/{n_methods}: DPO on {} oracle-labelled comparisons (no reward model)", k + 1, if cfg.quick { 300 } else { 600 });
                let stage = run_dpo_stage(be, &sft_dir, &tok, &out.join("dpo"), cfg.seed, cfg.quick)?;
                (stage.policy, stage.summary.tokens_per_sec * stage.summary.elapsed_s)
            }
            DemoMethod::Grpo => {
                eprintln!("demo: method {}/{n_methods}: GRPO with the oracle as a verifiable reward (KL k3 in the loss)", k + 1);
                let gcfg = crate::rl::grpo::GrpoConfig {
                    sync_every: crate::generate::default_sync_every(be.name()),
                    ..demo_grpo_config(&out.join("grpo"), cfg.seed, cfg.grpo_steps)
                };
                let (policy, reports) = run_grpo_stage(be, &sft_dir, &tok, &gcfg)?;
                let per_step = (gcfg.prompts_per_step * gcfg.group_size) as f64;
                let tokens: f64 = reports.iter().map(|r| r.response_len as f64 * per_step).sum();
                grpo_reports = reports;
                (policy, tokens)
            }
        };
        let seconds = t.elapsed().as_secs_f64();
        let (answers, oracle, kl) = evaluate(be, &policy, Some(&reference), &tok, &eval_prompts, cfg.seed)?;
        rows.push(StageRow {
            stage: method.name().into(),
            oracle,
            rm_score: score_of(&answers)?,
            kl_to_sft: kl,
            rm_accuracy: None,
            tokens_per_sec: tokens / seconds.max(1e-9),
            seconds,
        });
        method_answers.push((method.name().to_string(), answers));
    }

    // ---- outputs ----
    let samples = (0..eval_prompts.len().min(4))
        .map(|i| {
            let mut answers = vec![("sft".to_string(), tok.decode_with(&sft_answers[i], true)?)];
            for (name, a) in &method_answers {
                answers.push((name.clone(), tok.decode_with(&a[i], true)?));
            }
            Ok((tok.decode_with(&eval_prompts[i], true)?, answers))
        })
        .collect::<Result<Vec<_>>>()?;
    let nan_to_null = |x: f32| if x.is_finite() { json!(x) } else { json!(null) };
    let summary = json!({
        "task": "built-in: kind vs rude words, oracle = (kind - rude) / words",
        "methods": cfg.methods.iter().map(|m| m.name()).collect::<Vec<_>>(),
        "stages": rows.iter().map(|r| json!({
            "stage": r.stage, "oracle_score": nan_to_null(r.oracle), "rm_score": r.rm_score, "kl_to_sft": r.kl_to_sft,
            "rm_accuracy": r.rm_accuracy, "tokens_per_sec": r.tokens_per_sec, "seconds": r.seconds,
        })).collect::<Vec<_>>(),
        "ppo_steps": ppo_reports.iter().map(|r| json!({"step": r.step, "rm_score": r.score_mean, "oracle_score": r.oracle, "kl_k1": r.kl_k1})).collect::<Vec<_>>(),
        "grpo_steps": grpo_reports.iter().map(|r| json!({"step": r.step, "reward": r.reward_mean, "oracle_score": r.oracle, "kl": r.kl})).collect::<Vec<_>>(),
    });
    let text = serde_json::to_string_pretty(&summary).map_err(|e| Error::invalid(e.to_string()))?;
    crate::io::fs::atomic_write(&out.join("summary.json"), text.as_bytes())?;
    if !ppo_reports.is_empty() {
        let series = |f: &dyn Fn(&PpoStepReport) -> f32| ppo_reports.iter().map(f).collect::<Vec<f32>>();
        crate::io::fs::atomic_write(
            &out.join("ppo_reward.svg"),
            svg_plot("reward-model score per PPO step", &series(&|r| r.score_mean), "#1f77b4").as_bytes(),
        )?;
        crate::io::fs::atomic_write(
            &out.join("ppo_oracle.svg"),
            svg_plot("oracle score per PPO step", &series(&|r| r.oracle.unwrap_or(0.0)), "#2ca02c").as_bytes(),
        )?;
        crate::io::fs::atomic_write(
            &out.join("ppo_kl.svg"),
            svg_plot("KL to the SFT model (k1, per sequence) per PPO step", &series(&|r| r.kl_k1), "#d62728").as_bytes(),
        )?;
    }
    if !grpo_reports.is_empty() {
        let oracle: Vec<f32> = grpo_reports.iter().map(|r| r.oracle.unwrap_or(0.0)).collect();
        crate::io::fs::atomic_write(&out.join("grpo_oracle.svg"), svg_plot("oracle score per GRPO step", &oracle, "#9467bd").as_bytes())?;
    }
    Ok(DemoSummary { rows, ppo: ppo_reports, grpo: grpo_reports, samples })
}
