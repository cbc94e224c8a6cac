//! `rlhf bench --decode-batches 1,64,256`: decode tokens/s of the rollout engine at several batch
//! sizes (KV-cache slots), each against the memory-bandwidth roofline of a decode step.
//!
//! A decode step reads every weight once (the LM head included) and, for each slot, the keys and
//! values of every position it attends to. With `S` slots, prompts of `P` tokens and `N` new
//! tokens each, the mean position over the decode is about `P + N / 2`, so a step moves at least
//! `weights + S * 2 L NKV HD (P + N / 2)` f32 values; at the measured copy bandwidth that takes
//! `bytes / bandwidth` seconds, and the roofline is `S` tokens per that time. Small batches are
//! bound by the weights (the roofline grows with `S`), large ones by the KV cache. "graph chunks"
//! is how many of the measured run's decode chunks ran as a replayed CUDA graph, of all chunks.

use anyhow::Result;
use rlhf::backend::Backend;
use rlhf::generate::{GenerateConfig, RolloutConfig, RolloutEngine};
use rlhf::model::{Model, ModelConfig};

/// Measures and prints the decode table for each batch size in `batches`.
#[allow(clippy::too_many_arguments)]
pub fn run_decode_bench<B: Backend>(
    be: &B,
    model: &Model<B>,
    cfg: &ModelConfig,
    batches: &[usize],
    new_tokens: usize,
    sync_every: usize,
    bandwidth: f64,
) -> Result<()> {
    let prompt_len = 16.min(cfg.max_positions / 2).max(1);
    let new_tokens = new_tokens.min(cfg.max_positions - prompt_len).max(1);
    let weight_bytes = 4.0 * cfg.num_params() as f64;
    let kv_per_position = 4.0 * (2 * cfg.n_layers * cfg.n_kv_heads * cfg.head_dim) as f64;
    let mean_pos = prompt_len as f64 + new_tokens as f64 / 2.0;
    println!();
    println!(
        "rollout decode on {} (prompts of {prompt_len} tokens, {new_tokens} new tokens each, no stop ids, {sync_every} decode steps per read-back; roofline at {:.1} GB/s copy bandwidth)",
        be.name(),
        bandwidth / 1e9
    );
    println!("| slots | ms/step | tokens/s | MB/step | roofline tokens/s | % of roofline | graph chunks |");
    println!("|------:|--------:|---------:|--------:|------------------:|--------------:|-------------:|");
    let mut engine = RolloutEngine::new();
    for &s in batches {
        let prompts: Vec<Vec<u32>> = (0..s).map(|i| (0..prompt_len).map(|j| ((i * 31 + j * 7) % cfg.vocab_size) as u32).collect()).collect();
        let gen = GenerateConfig { max_new_tokens: new_tokens, temperature: 1.0, top_k: 0, top_p: 1.0, seed: 1, stop_ids: Vec::new(), vocab_limit: None };
        let rcfg = RolloutConfig { slots: s, gen, sync_every };
        engine.run(be, model, &prompts, &rcfg)?; // warm-up: buffers, pipelines, kernel compilation
        let st = engine.run(be, model, &prompts, &rcfg)?.stats;
        let step_secs = st.decode_secs / st.decode_steps.max(1) as f64;
        let bytes = weight_bytes + s as f64 * kv_per_position * mean_pos;
        let roofline = s as f64 * bandwidth / bytes;
        let achieved = st.decode_tokens_per_sec();
        let graphs = format!("{} / {}", st.graph_replays, st.decode_syncs);
        println!(
            "| {s:5} | {:7.2} | {achieved:8.0} | {:7.1} | {roofline:17.0} | {:12.1}% | {graphs:>12} |",
            step_secs * 1e3,
            bytes / 1e6,
            100.0 * achieved / roofline
        );
    }
    Ok(())
}
