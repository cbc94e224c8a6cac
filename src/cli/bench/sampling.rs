//! `rlhf bench --sampling`: milliseconds per sampling step (one `sample` call over a batch of
//! rows) at the vocabularies of GPT-2 (50257) and Qwen2 (151936): temperature alone (one pass
//! over each row: the Gumbel-max draw), with top-p 0.9 (plus the row maximum and a 4-pass radix
//! select) and with top-k 50 and top-p 0.9 together (4 more passes). The logits are N(0, 2^2).

use super::kernels::time_median;
use anyhow::Result;
use rlhf::backend::ops::SampleParams;
use rlhf::backend::Backend;
use rlhf::data::rng::Rng;

/// Times `sample` over `rows` rows at each vocabulary (median of `reps` calls) and prints the table.
pub fn run_sampling_bench<B: Backend>(be: &B, rows: usize, reps: usize) -> Result<()> {
    println!();
    println!("sampling on {} ({rows} rows per step, median of {reps} steps; ms per step)", be.name());
    println!("| vocab  | temperature | top-p 0.9 | top-k 50 + top-p 0.9 |");
    println!("|-------:|------------:|----------:|---------------------:|");
    let mut rng = Rng::new(3);
    for v in [50257usize, 151936] {
        let logits = be.upload(&(0..rows * v).map(|_| 2.0 * rng.normal()).collect::<Vec<f32>>())?;
        let steps = be.upload_ids(&[0])?;
        let mut out = be.alloc_ids(rows)?;
        let base = SampleParams { n: rows as u32, v: v as u32, temperature: 1.0, top_k: 0, top_p: 1.0, seed_lo: 1, seed_hi: 0, step_at: 0 };
        let mut ms = Vec::new();
        for p in [base, SampleParams { top_p: 0.9, ..base }, SampleParams { top_k: 50, top_p: 0.9, ..base }] {
            ms.push(1e3 * time_median(be, reps, || be.sample(&mut out, &logits, &steps, p))?);
        }
        println!("| {v:6} | {:11.3} | {:9.3} | {:20.3} |", ms[0], ms[1], ms[2]);
    }
    Ok(())
}
