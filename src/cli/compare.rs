//! `rlhf compare`: head-to-head outcomes of several models judged by a reward model. Each model
//! answers every prompt (one sample, the rollout engine's sampling); the judge scores each
//! prompt + answer, and every pair of models meets once per prompt: the higher score wins (equal
//! scores tie). The outcomes are the head-to-head lines `rlhf elo` reads.

use super::common::*;
use anyhow::{bail, Context, Result};
use clap::Args;
use rlhf::backend::Backend;
use rlhf::data::tokenizer::Tokenizer;
use rlhf::generate::{GenerateConfig, RolloutConfig, RolloutEngine};
use rlhf::model::{Model, ModelConfig};
use std::io::Write;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct CompareArgs {
    /// The models to compare, comma-separated folders (each named by its folder's last component)
    #[arg(long, value_delimiter = ',', required = true)]
    pub models: Vec<PathBuf>,
    /// JSONL with {"prompt": ...} or {"messages": [...]} lines
    #[arg(long)]
    pub prompts: PathBuf,
    /// The reward model that judges (as `rlhf rm` saves it)
    #[arg(long)]
    pub judge: PathBuf,
    /// Where the head-to-head lines go (JSONL for `rlhf elo --comparisons`)
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub run: SamplingRun,
}

pub fn cmd_compare<B: Backend>(be: &B, a: &CompareArgs) -> Result<()> {
    if a.models.len() < 2 {
        bail!("--models needs at least two model folders to compare");
    }
    if a.run.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    refuse_existing(&a.out, a.run.overwrite)?;
    let names = model_names(&a.models, "--models")?;
    if !ModelConfig::load(&a.judge)?.score_head {
        bail!("--judge {}: config.json does not describe a reward model (architectures *ForSequenceClassification); train one with `rlhf rm`", a.judge.display());
    }
    let tok = Tokenizer::load(&a.judge)?;
    same_tokenizer(&a.models, &tok, "the judge")?;
    let judge = Model::load_reward(be, &a.judge, 0)?.into_frozen();
    let context = judge.cfg().max_positions;
    let prompts = rlhf::data::jsonl::load_prompts_jsonl(&a.prompts, &tok, context)?;
    let texts: Vec<String> = prompts.iter().map(|p| tok.decode_with(p, true).unwrap_or_default()).collect();
    // every model's answer to every prompt, scored by the judge
    let mut answers: Vec<Vec<Vec<u32>>> = Vec::with_capacity(a.models.len());
    let mut scores: Vec<Vec<f32>> = Vec::with_capacity(a.models.len());
    let longest_prompt = prompts.iter().map(Vec::len).max().unwrap_or(0);
    for (dir, name) in a.models.iter().zip(&names) {
        let model = Model::load(be, dir)?.into_frozen();
        let max_new = a.run.sampling.max_new_tokens.min(model.cfg().max_positions.min(context).saturating_sub(longest_prompt + 1)).max(1);
        let gen = GenerateConfig {
            max_new_tokens: max_new,
            temperature: a.run.sampling.temperature,
            top_k: a.run.sampling.top_k,
            top_p: a.run.sampling.top_p,
            seed: a.run.seed,
            stop_ids: tok.stop_ids(),
            vocab_limit: Some(tok.vocab_size()),
        };
        let cfg = RolloutConfig { slots: a.run.batch_size.min(prompts.len()), gen, sync_every: a.run.sampling.sync_every(be.name()) };
        let rolled = RolloutEngine::new().run(be, &model, &prompts, &cfg).with_context(|| format!("sampling {}", dir.display()))?;
        let responses: Vec<Vec<u32>> = rolled.outputs.into_iter().map(|o| o.response).collect();
        let seqs: Vec<Vec<u32>> = prompts.iter().zip(&responses).map(|(p, r)| p.iter().chain(r).copied().collect()).collect();
        let longest = seqs.iter().map(Vec::len).max().unwrap_or(2);
        let mut scorer = rlhf::rl::reward::RewardTrainer::scorer(be, &judge, a.run.batch_size.min(seqs.len()), longest)?;
        let s = scorer.score(be, &judge, &seqs, tok.pad_or_default())?;
        eprintln!("compare: {name}: {} answers, mean judge score {:.3}", s.len(), s.iter().sum::<f32>() / s.len().max(1) as f32);
        answers.push(responses);
        scores.push(s);
    }
    let mut lines = Vec::new();
    let mut wins = vec![0.0f64; names.len()];
    for (p, text) in texts.iter().enumerate() {
        for i in 0..names.len() {
            for j in i + 1..names.len() {
                let (si, sj) = (scores[i][p], scores[j][p]);
                let winner = if si > sj { "a" } else if sj > si { "b" } else { "tie" };
                wins[i] += if si > sj { 1.0 } else if si == sj { 0.5 } else { 0.0 };
                wins[j] += if sj > si { 1.0 } else if si == sj { 0.5 } else { 0.0 };
                let line = serde_json::json!({
                    "prompt": text, "a": names[i], "b": names[j], "winner": winner, "score_a": si, "score_b": sj,
                    "completion_a": tok.decode_with(&answers[i][p], true).unwrap_or_default(),
                    "completion_b": tok.decode_with(&answers[j][p], true).unwrap_or_default(),
                });
                lines.push(line.to_string());
            }
        }
    }
    let mut bytes = Vec::new();
    for l in &lines {
        writeln!(bytes, "{l}")?;
    }
    rlhf::io::fs::atomic_write(&a.out, &bytes)?;
    let games_each = (names.len() - 1) * prompts.len();
    for (name, w) in names.iter().zip(&wins) {
        println!("{name}: {w} of {games_each} games won (ties half)");
    }
    println!("compare done: {} games over {} prompts in {}; rate them with `rlhf elo --comparisons {}`", lines.len(), prompts.len(), a.out.display(), a.out.display());
    Ok(())
}
