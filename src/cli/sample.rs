//! `rlhf sample`: candidates to label. K samples per prompt from one model (the grouped
//! rollout: the K samples of a prompt share its prefill), or samples from several models for
//! head-to-head comparison. One JSONL line per prompt: the prompt line's fields, the prompt as
//! text, the sampling settings and seed, and each sample with its model, text, token count,
//! finish reason and the log-probability of every sampled token (temperature 1). Lines go to
//! `<out>.partial` as they are made and the file takes its name when all are written.

use super::common::*;
use anyhow::{bail, Context, Result};
use clap::Args;
use rlhf::backend::Backend;
use rlhf::data::tokenizer::Tokenizer;
use rlhf::generate::{FinishReason, GenerateConfig, RolloutConfig, RolloutEngine};
use rlhf::model::Model;
use serde_json::{json, Value};
use std::io::Write;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct SampleArgs {
    /// The model, or several comma-separated (head-to-head; each named by its folder)
    #[arg(long, value_delimiter = ',', required = true)]
    pub model: Vec<PathBuf>,
    /// JSONL with {"prompt": ...} or {"messages": [...]} lines
    #[arg(long)]
    pub prompts: PathBuf,
    /// Samples per prompt from each model (default: 4 from one model, 1 from each of several)
    #[arg(long)]
    pub k: Option<usize>,
    /// The candidates (JSONL, one line per prompt)
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub run: SamplingRun,
}

fn finish_name(f: FinishReason) -> &'static str {
    match f {
        FinishReason::Stop => "stop",
        FinishReason::MaxNewTokens => "length",
        FinishReason::ContextEnd => "context",
    }
}

pub fn cmd_sample<B: Backend>(be: &B, a: &SampleArgs) -> Result<()> {
    let k = a.k.unwrap_or(if a.model.len() == 1 { 4 } else { 1 });
    if k == 0 || a.run.batch_size == 0 {
        bail!("--k and --batch-size must be at least 1");
    }
    if a.model.len() == 1 && k < 2 {
        bail!("--k {k} from one model gives nothing to rank: use --k 2 or more, or several --model folders");
    }
    refuse_existing(&a.out, a.run.overwrite)?;
    let names = model_names(&a.model, "--model")?;
    let tok = Tokenizer::load(&a.model[0])?;
    same_tokenizer(&a.model[1..], &tok, &a.model[0].display().to_string())?;
    let models: Vec<Model<B>> = a.model.iter().map(|d| Model::load(be, d).map(Model::into_frozen)).collect::<rlhf::Result<_>>()?;
    let context = models.iter().map(|m| m.cfg().max_positions).min().unwrap_or(0);
    let prompts = rlhf::data::jsonl::load_prompts_jsonl(&a.prompts, &tok, context)?;
    let lines: Vec<serde_json::Map<String, Value>> = rlhf::data::jsonl::read_jsonl_objects(&a.prompts)?.into_iter().map(|(_, o)| o).collect();
    let partial = PathBuf::from(format!("{}.partial", a.out.display()));
    let mut file = std::io::BufWriter::new(std::fs::File::create(&partial).with_context(|| format!("creating {}", partial.display()))?);
    let progress = rlhf::train::Progress::new("sample", prompts.len());
    let (mut done, mut tokens) = (0usize, 0usize);
    for (c, chunk) in prompts.chunks(a.run.batch_size).enumerate() {
        let first = c * a.run.batch_size;
        let longest = chunk.iter().map(Vec::len).max().unwrap_or(0);
        let seed = a.run.seed ^ ((c as u64) << 20);
        let mut samples: Vec<Vec<Value>> = vec![Vec::new(); chunk.len()];
        for (model, name) in models.iter().zip(&names) {
            let gen = GenerateConfig {
                max_new_tokens: a.run.sampling.max_new_tokens.min(model.cfg().max_positions.saturating_sub(longest + 1)).max(1),
                temperature: a.run.sampling.temperature,
                top_k: a.run.sampling.top_k,
                top_p: a.run.sampling.top_p,
                seed,
                stop_ids: tok.stop_ids(),
                vocab_limit: Some(tok.vocab_size()),
            };
            let cfg = RolloutConfig { slots: chunk.len() * k, gen, sync_every: a.run.sampling.sync_every(be.name()) };
            let rolled = RolloutEngine::new().run_grouped(be, model, chunk, k, &cfg).with_context(|| format!("sampling {name}"))?;
            for (s, o) in rolled.outputs.iter().enumerate() {
                tokens += o.response.len();
                let sum: f64 = o.logprobs.iter().map(|&x| x as f64).sum();
                samples[s / k].push(json!({
                    "model": name, "completion": tok.decode_with(&o.response, true).unwrap_or_default(), "tokens": o.response.len(),
                    "finish": finish_name(o.finish), "logprobs": o.logprobs, "sum_logprob": sum,
                }));
            }
        }
        for (j, samples) in samples.into_iter().enumerate() {
            let i = first + j;
            let mut line = lines[i].clone();
            if !matches!(line.get("prompt"), Some(Value::String(_))) {
                line.insert("prompt".into(), tok.decode_with(&prompts[i], true).unwrap_or_default().into());
            }
            line.insert("prompt_index".into(), i.into());
            line.insert(
                "sampling".into(),
                json!({"seed": seed, "temperature": a.run.sampling.temperature, "top_k": a.run.sampling.top_k, "top_p": a.run.sampling.top_p, "max_new_tokens": a.run.sampling.max_new_tokens}),
            );
            line.insert("samples".into(), Value::Array(samples));
            writeln!(file, "{}", Value::Object(line)).with_context(|| format!("writing {}", partial.display()))?;
        }
        done += chunk.len();
        progress.update(done, &format!("{tokens} tokens sampled"));
    }
    file.into_inner().map_err(|e| e.into_error()).and_then(|f| f.sync_all()).with_context(|| format!("writing {}", partial.display()))?;
    std::fs::rename(&partial, &a.out).with_context(|| format!("renaming {} to {}", partial.display(), a.out.display()))?;
    progress.finish();
    println!("sample done: {} prompts x {k} samples from {} in {}", prompts.len(), names.join(", "), a.out.display());
    Ok(())
}
