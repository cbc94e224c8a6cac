//! `rlhf demo`: the embedded default. With no files, trains a tiny GPT-2-shaped model from scratch
//! on the built-in corpus with the built-in byte-level tokenizer (SFT), saves it as a Hugging Face
//! checkpoint, and samples from it — a whole run on the CPU backend in about a minute.

use anyhow::Result;
use rlhf::backend::Backend;
use rlhf::data::builtin::builtin_examples;
use rlhf::data::tokenizer::Tokenizer;
use rlhf::generate::{generate, GenerateConfig};
use rlhf::model::{Model, ModelConfig};
use rlhf::rl::sft::{run_sft, SftConfig};
use rlhf::train::AdamWConfig;
use std::path::Path;

pub fn run_demo<B: Backend>(be: &B, out: &Path, steps: usize, seed: u64) -> Result<()> {
    let tok = Tokenizer::byte_level();
    let examples = builtin_examples(&tok, 2000, seed)?;
    let cfg = ModelConfig::preset("gpt2-tiny", tok.vocab_size())?;
    let mut model = Model::init(be, cfg, seed)?;
    println!(
        "rlhf demo: SFT of a {:.2}M-parameter GPT-2 (2 layers, hidden 64) from scratch on {} built-in lines, backend {}",
        model.cfg().num_params() as f64 / 1e6,
        examples.len(),
        be.name()
    );
    let sft = SftConfig {
        out: out.join("sft"),
        steps,
        lr: 3e-3,
        min_lr_ratio: 0.1,
        warmup: 20,
        batch_size: 16,
        grad_accum: 1,
        seq_len: 96,
        seed,
        optim: AdamWConfig { weight_decay: 0.0, ..AdamWConfig::default() },
        log_every: 50,
    };
    let summary = run_sft(be, &mut model, &tok, examples, &sft)?;
    println!();
    println!("| stage | steps | loss (first -> last) | tokens | tokens/s | seconds |");
    println!("|-------|------:|----------------------|-------:|---------:|--------:|");
    println!(
        "| sft   | {steps:5} | {:.3} -> {:.3}       | {:6} | {:8.0} | {:7.1} |",
        summary.first_loss, summary.last_loss, summary.tokens, summary.tokens_per_sec, summary.elapsed_s
    );
    println!();
    println!("samples (greedy and temperature 0.8, alternating):");
    for (i, prompt) in ["3 plus 4 is", "Count: 4 5", "The letter after", "Mia likes"].iter().enumerate() {
        let ids = tok.encode(prompt, true)?;
        let temperature = if i % 2 == 0 { 0.0 } else { 0.8 };
        let gen = GenerateConfig { max_new_tokens: 48, temperature, top_k: 0, top_p: 0.95, seed, stop_ids: tok.stop_ids() };
        let new = generate(be, &model, &ids, &gen)?;
        let text = tok.decode_with(&new, true)?;
        println!("  {prompt}{}", text.replace('\n', " "));
    }
    println!();
    println!("checkpoint (Hugging Face layout) and metrics.jsonl in {}", out.join("sft").display());
    Ok(())
}
