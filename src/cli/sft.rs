//! `rlhf sft`: supervised fine-tuning on JSONL data.

use anyhow::Result;
use clap::Args;
use rlhf::backend::Backend;
use rlhf::rl::sft::{run_sft, SftConfig};
use std::path::PathBuf;
use super::common::*;

#[derive(Args, Debug)]
pub struct SftArgs {
    #[command(flatten)]
    pub source: ModelSource,
    /// JSONL with `text`, `input_ids`, `prompt`+`completion` or `messages` lines
    #[arg(long)]
    pub data: PathBuf,
    #[command(flatten)]
    pub train: SftConfig,
    #[command(flatten)]
    pub common: Common,
}

pub fn cmd_sft<B: Backend>(be: &B, a: &SftArgs) -> Result<()> {
    let cfg = &a.train;
    cfg.validate()?;
    let (mut model, tok) = load_source(be, &a.source, a.train.seed, false)?;
    let examples = rlhf::data::jsonl::load_sft_jsonl(&a.data, &tok)?;
    // a data-parallel job's other ranks run quietly: rank 0 speaks for the job
    let comm = rlhf::train::collective::current();
    let (main_rank, world_size) = (comm.world().is_main(), comm.world().size);
    if !main_rank {
        run_sft(be, &mut model, &tok, examples, cfg)?;
        return Ok(());
    }
    if world_size > 1 {
        eprintln!("sft: data-parallel over {world_size} ranks, --batch-size {} per rank ({} per step)", cfg.batch_size, cfg.batch_size * world_size);
    }
    eprintln!(
        "sft: {} examples from {}, model {} ({:.2}M parameters), backend {}",
        examples.len(),
        a.data.display(),
        model.cfg().model_type,
        model.cfg().num_params() as f64 / 1e6,
        be.name()
    );
    let summary = run_sft(be, &mut model, &tok, examples, cfg)?;
    println!(
        "sft done: loss {:.4} -> {:.4}, {} tokens in {:.1}s ({:.0} tokens/s); checkpoint and metrics.jsonl in {}",
        summary.first_loss,
        summary.last_loss,
        summary.tokens,
        summary.elapsed_s,
        summary.tokens_per_sec,
        cfg.out.display()
    );
    Ok(())
}
