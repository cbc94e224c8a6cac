//! Direct preference optimisation (`rlhf dpo`): DPO (sigmoid loss), conservative DPO (label
//! smoothing), IPO and SimPO on `{"prompt", "chosen", "rejected"}` data, as TRL's `DPOTrainer`
//! (and `CPOTrainer` for SimPO) define them. A ranking `{"prompt", "ranked": [best, ...]}`
//! becomes K - 1 pairs: the best completion against each of the others.
//!
//! One micro-batch of P pairs is 2P sequences (chosen rows, then rejected rows) through the
//! training forward, `logprob_gather_fwd` (per-token log-probs straight from the LM head),
//! `preference_loss_fwd_bwd` (loss, implicit rewards and `dlogp` on the device), then
//! `logprob_gather_bwd` and the decoder's backward; the completion mask covers exactly the
//! completion tokens and the end token, never the prompt. Nothing per token is read back: the
//! step reads the loss op's 6 statistics and the gradient norm. Data-parallel (N ranks):
//! `--batch-size` pairs per rank of each global micro-batch, each pair weighted by 1 / the step's
//! global pairs; gradients, statistics and token counts are summed over the ranks.
//!
//! The reference model (default: the policy's initial weights) scores every pair ONCE, before the
//! first step, through the same forward and gather; its summed completion log-probs are kept on
//! the host (and in `<out>/ref_logps.json`), uploaded per micro-batch, and the reference model is
//! dropped before training. SimPO has no reference and skips this.

use crate::backend::ops::{preference_stat, Backend, ElementwiseParams, LogprobParams, PreferenceParams};
use crate::data::preference::PreferenceGroup;
use crate::data::rng::Rng;
use crate::data::tokenizer::Tokenizer;
use crate::error::{Error, Result};
use crate::model::{Activations, GradScratch, Model, Shape};
use crate::rl::reward::split_eval;
use crate::train::collective::{self, sum_buffers};
use crate::train::optimizer::{AdamW, AdamWConfig};
use crate::train::TrainRun;
pub use crate::rl::dpo_config::{DpoConfig, DpoLoss};
pub use crate::rl::dpo_pairs::{pairs_from_groups, DpoPair, PairBatch};
use serde_json::json;
use std::time::Instant;

/// Means over pairs of the loss op's statistics.
#[derive(Clone, Copy, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct DpoStats {
    pub loss: f32,
    /// fraction of pairs whose chosen implicit reward is above the rejected one
    pub reward_accuracy: f32,
    pub chosen_reward: f32,
    pub rejected_reward: f32,
    pub margin: f32,
    pub pairs: usize,
}

/// Device buffers to score pairs and train on them, sized for `max_pairs` pairs of `max_t` tokens.
pub struct DpoTrainer<B: Backend> {
    acts: Activations<B>,
    scratch: GradScratch<B>,
    grads: Vec<B::Buf>,
    max_pairs: usize,
    max_t: usize,
    logp: B::Buf,
    entropy: B::Buf,
    lse: B::Buf,
    dlogp: B::Buf,
    dentropy: B::Buf,
    mask: B::Buf,
    ref_sums: B::Buf,
    stats: B::Buf,
    pad: u32,
}

impl<B: Backend> DpoTrainer<B> {
    pub fn new(be: &B, model: &Model<B>, max_pairs: usize, max_t: usize, pad: u32) -> Result<Self> {
        let (rows, n) = (2 * max_pairs, 2 * max_pairs * max_t);
        Ok(DpoTrainer {
            acts: Activations::with_logit_rows(be, model.cfg(), rows, n, 0)?,
            scratch: GradScratch::with_logit_rows(be, model.cfg(), n, 0)?,
            grads: model.grads_like(be)?,
            max_pairs,
            max_t,
            logp: be.alloc(n)?,
            entropy: be.alloc(n)?,
            lse: be.alloc(n)?,
            dlogp: be.alloc(n)?,
            dentropy: be.alloc(n)?,
            mask: be.alloc(n)?,
            ref_sums: be.alloc(rows)?,
            stats: be.alloc(preference_stat::COUNT)?,
            pad,
        })
    }

    /// The forward of a batch up to the per-token log-probs (left in `self.logp`).
    fn forward_logps(&mut self, be: &B, model: &Model<B>, batch: &PairBatch) -> Result<LogprobParams> {
        if batch.pairs > self.max_pairs || batch.t > self.max_t {
            return Err(Error::invalid(format!("{} pairs of {} tokens exceed the DPO buffers ({} x {})", batch.pairs, batch.t, self.max_pairs, self.max_t)));
        }
        let shape = Shape { b: 2 * batch.pairs, t: batch.t };
        let lp = model.logprobs_into(be, &mut self.acts, shape, &batch.inputs, &batch.targets, 1.0, [&mut self.logp, &mut self.entropy, &mut self.lse])?;
        be.write(&mut self.mask, &batch.mask())?;
        Ok(lp)
    }

    /// Summed completion log-probs `[chosen, rejected]` of each pair under `model` (forward only;
    /// reads the per-token log-probs back). Sums run in f64 in token order, as the loss op's.
    pub fn sequence_logps(&mut self, be: &B, model: &Model<B>, pairs: &[&DpoPair]) -> Result<Vec<[f32; 2]>> {
        let mut out = Vec::with_capacity(pairs.len());
        for chunk in pairs.chunks(self.max_pairs) {
            let batch = PairBatch::new(chunk, self.pad);
            self.forward_logps(be, model, &batch)?;
            let logp = be.download(&self.logp)?;
            let t = batch.t;
            let sum = |k: usize| -> f32 {
                let row = k * t..(k + 1) * t;
                logp[row.clone()].iter().zip(&batch.targets[row]).filter(|(_, &x)| x >= 0).fold(0f64, |s, (&l, _)| s + l as f64) as f32
            };
            out.extend((0..chunk.len()).map(|i| [sum(i), sum(chunk.len() + i)]));
        }
        Ok(out)
    }

    /// Clears the parameter gradients and the statistics.
    pub fn zero_grad(&mut self, be: &B) -> Result<()> {
        for g in self.grads.iter_mut() {
            let n = be.len(g);
            be.fill(g, 0.0, ElementwiseParams::new(n)?)?;
        }
        be.fill(&mut self.stats, 0.0, ElementwiseParams::new(preference_stat::COUNT)?)
    }

    /// Loss of one micro-batch (`refs[i]` the reference sums of pair i) into the statistics and,
    /// with `train`, its gradient (weighted by `p.scale`) into the parameter gradients.
    pub fn accumulate(&mut self, be: &B, model: &Model<B>, pairs: &[&DpoPair], refs: &[[f32; 2]], mut p: PreferenceParams, train: bool) -> Result<usize> {
        if refs.len() != pairs.len() {
            return Err(Error::invalid("one pair of reference sums per pair"));
        }
        let batch = PairBatch::new(pairs, self.pad);
        let lp = self.forward_logps(be, model, &batch)?;
        let ref_rows: Vec<f32> = refs.iter().map(|r| r[0]).chain(refs.iter().map(|r| r[1])).collect();
        be.write(&mut self.ref_sums, &ref_rows)?;
        p.pairs = batch.pairs as u32;
        p.t = batch.t as u32;
        be.preference_loss_fwd_bwd(&mut self.dlogp, &mut self.stats, &self.logp, &self.mask, &self.ref_sums, p)?;
        if !train {
            return Ok(batch.tokens);
        }
        let shape = Shape { b: 2 * batch.pairs, t: batch.t };
        let head = model.lm_head();
        be.fill(&mut self.dentropy, 0.0, ElementwiseParams::new(shape.n())?)?;
        be.logprob_gather_bwd(
            &mut self.scratch.d_ln,
            &mut self.grads[head],
            &self.dlogp,
            &self.dentropy,
            &self.acts.lnf,
            &self.acts.targets,
            &self.lse,
            &self.entropy,
            &model.weights[head],
            lp,
        )?;
        model.decoder.backward_hidden(be, &model.weights, &mut self.grads, &self.acts, &mut self.scratch, shape)?;
        Ok(batch.tokens)
    }

    /// The statistics accumulated since `zero_grad`, as means over pairs (one read-back).
    pub fn stats(&self, be: &B) -> Result<DpoStats> {
        let s = be.download(&self.stats)?;
        let n = s[preference_stat::PAIRS].max(1.0);
        Ok(DpoStats {
            loss: s[preference_stat::LOSS] / n,
            reward_accuracy: s[preference_stat::CORRECT] / n,
            chosen_reward: s[preference_stat::CHOSEN_REWARD] / n,
            rejected_reward: s[preference_stat::REJECTED_REWARD] / n,
            margin: s[preference_stat::MARGIN] / n,
            pairs: s[preference_stat::PAIRS].round() as usize,
        })
    }

    /// The parameter gradients accumulated since `zero_grad`.
    pub fn grads(&self) -> &[B::Buf] {
        &self.grads
    }

    /// Loss and implicit rewards of `pairs` without training.
    pub fn evaluate(&mut self, be: &B, model: &Model<B>, pairs: &[&DpoPair], refs: &[[f32; 2]], cfg: &DpoConfig) -> Result<DpoStats> {
        be.fill(&mut self.stats, 0.0, ElementwiseParams::new(preference_stat::COUNT)?)?;
        for (chunk, r) in pairs.chunks(self.max_pairs).zip(refs.chunks(self.max_pairs)) {
            self.accumulate(be, model, chunk, r, cfg.op_params(chunk.len(), 0, 0.0), false)?;
        }
        self.stats(be)
    }
}

/// Everything that changes from step to step besides the weights: the step, the epoch and its
/// shuffled order of pairs with the position in it, the RNG that shuffles, and the optimiser.
pub struct DpoState<B: Backend> {
    pub step: usize,
    pub epoch: usize,
    pub order: Vec<usize>,
    pub cursor: usize,
    pub rng: Rng,
    pub opt: AdamW<B>,
}

impl<B: Backend> DpoState<B> {
    pub fn new(be: &B, model: &Model<B>, n_pairs: usize, seed: u64, optim: AdamWConfig) -> Result<Self> {
        let mut rng = Rng::new(seed);
        let mut order: Vec<usize> = (0..n_pairs).collect();
        rng.shuffle(&mut order);
        Ok(DpoState { step: 0, epoch: 0, order, cursor: 0, rng, opt: AdamW::new(be, model.layout(), optim)? })
    }

    /// The next `k` pair indices; a new epoch reshuffles the order.
    pub fn next_pairs(&mut self, k: usize) -> Vec<usize> {
        (0..k)
            .map(|_| {
                if self.cursor == self.order.len() {
                    self.rng.shuffle(&mut self.order);
                    self.cursor = 0;
                    self.epoch += 1;
                }
                self.cursor += 1;
                self.order[self.cursor - 1]
            })
            .collect()
    }
}

/// The host state of a DPO run that a checkpoint keeps (besides weights, AdamW moments and the
/// cached reference log-probs).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct DpoRunState {
    step: usize,
    epoch: usize,
    order: Vec<usize>,
    cursor: usize,
    rng: Rng,
    tokens: usize,
    first: DpoStats,
    last: DpoStats,
    eval_before: Option<DpoStats>,
}

/// The reference sums of every pair, computed once. `reference` None: the policy as it is now.
/// Returns the sums and the number of sequences the reference scored.
pub fn reference_logps<B: Backend>(be: &B, trainer: &mut DpoTrainer<B>, reference: &Model<B>, pairs: &[DpoPair]) -> Result<(Vec<[f32; 2]>, usize)> {
    let refs: Vec<&DpoPair> = pairs.iter().collect();
    Ok((trainer.sequence_logps(be, reference, &refs)?, 2 * pairs.len()))
}

/// What `rlhf dpo` reports at the end.
#[derive(Clone, Debug)]
pub struct DpoSummary {
    pub first: DpoStats,
    pub last: DpoStats,
    pub eval_before: Option<DpoStats>,
    pub eval_after: Option<DpoStats>,
    pub train_pairs: usize,
    pub eval_pairs: usize,
    /// sequences the reference model scored (2 per pair, once: not per epoch)
    pub reference_sequences: usize,
    pub epochs: usize,
    pub tokens_per_sec: f64,
    pub elapsed_s: f64,
}

fn stats_json(s: &DpoStats) -> serde_json::Value {
    json!({"loss": s.loss, "reward_accuracy": s.reward_accuracy, "chosen_reward": s.chosen_reward, "rejected_reward": s.rejected_reward, "margin": s.margin})
}

/// Trains `model` with the DPO-family loss of `cfg` on `groups` and saves it with `tokenizer` into
/// `cfg.train.out`. `reference` (consumed, and freed before training) scores the pairs once; None uses
/// the policy's initial weights.
pub fn run_dpo<B: Backend>(
    be: &B,
    model: &mut Model<B>,
    reference: Option<Model<B>>,
    tokenizer: &Tokenizer,
    groups: Vec<PreferenceGroup>,
    cfg: &DpoConfig,
) -> Result<DpoSummary> {
    cfg.validate()?;
    if tokenizer.vocab_size() > model.cfg().vocab_size {
        return Err(Error::invalid(format!("the tokenizer has {} tokens but the model's vocabulary is {}", tokenizer.vocab_size(), model.cfg().vocab_size)));
    }
    if let Some(r) = &reference {
        model.cfg().check_runs_in_policy_buffers("reference model (--ref-model)", r.cfg())?;
        if r.cfg().vocab_size != model.cfg().vocab_size {
            return Err(Error::invalid(format!("--ref-model has a vocabulary of {}, the policy {}", r.cfg().vocab_size, model.cfg().vocab_size)));
        }
    }
    let (train_groups, eval_groups) = split_eval(groups, cfg.eval_fraction, cfg.train.seed);
    let train = pairs_from_groups(&train_groups)?;
    let eval = pairs_from_groups(&eval_groups)?;
    if train.is_empty() {
        return Err(Error::invalid("no training pairs left after the evaluation split"));
    }
    let longest = train.iter().chain(&eval).map(|p| p.chosen.len().max(p.rejected.len())).max().unwrap_or(2);
    if longest > model.cfg().max_positions {
        return Err(Error::invalid(format!("a sequence has {longest} tokens; the model's context is {} (lower --seq-len)", model.cfg().max_positions)));
    }
    let mut trainer = DpoTrainer::new(be, model, cfg.train.batch_size, longest.max(2) - 1, tokenizer.pad_or_default())
        .map_err(Error::sized_by(format!("--batch-size {} x {longest} tokens", cfg.train.batch_size)))?;

    let fingerprint = json!({
        "seed": cfg.train.seed, "batch_size": cfg.train.batch_size, "grad_accum": cfg.train.grad_accum, "seq_len": cfg.train.seq_len,
        "loss": cfg.loss.name(), "eval_fraction": cfg.eval_fraction, "pairs": train.len() + eval.len(),
    });
    let (mut run, resume) = TrainRun::start(cfg.train.run_spec("dpo", fingerprint))?;

    // ---- reference log-probs: once per pair (a resumed run reads them from its checkpoint),
    // then the reference is freed ----
    let all: Vec<DpoPair> = train.iter().chain(&eval).cloned().collect();
    let (refs, reference_sequences) = if let Some(ck) = &resume {
        let flat = ck.tensor("ref_logps")?;
        if flat.len() != 2 * all.len() {
            return Err(Error::tensor(
                ck.dir.join(crate::train::resume::STATE_TENSORS),
                "ref_logps",
                format!("has {} values for {} pairs", flat.len(), all.len()),
            ));
        }
        (flat.chunks_exact(2).map(|c| [c[0], c[1]]).collect(), 0)
    } else if cfg.loss.uses_reference() {
        let r = match &reference {
            Some(r) => reference_logps(be, &mut trainer, r, &all)?,
            None => reference_logps(be, &mut trainer, model, &all)?,
        };
        let lines: Vec<_> = all.iter().zip(&r.0).map(|(p, s)| json!({"line": p.line, "chosen": s[0], "rejected": s[1]})).collect();
        let text = serde_json::to_string(&lines).map_err(|e| Error::invalid(e.to_string()))?;
        if collective::current().world().is_main() {
            crate::io::fs::atomic_write(&cfg.train.out.join("ref_logps.json"), text.as_bytes())?;
        }
        r
    } else {
        (vec![[0.0; 2]; all.len()], 0)
    };
    drop(reference);
    let (train_refs, eval_refs) = refs.split_at(train.len());

    let eval_ptrs: Vec<&DpoPair> = eval.iter().collect();
    let mut state = DpoState::new(be, model, train.len(), cfg.train.seed, cfg.train.optim)?;
    let saved: DpoRunState = match &resume {
        Some(ck) => {
            let saved: DpoRunState = ck.value("run")?;
            model.restore_state(be, ck, "weights")?;
            state.opt.restore_state(be, ck, "adamw")?;
            (state.step, state.epoch, state.cursor) = (saved.step, saved.epoch, saved.cursor);
            (state.order, state.rng) = (saved.order.clone(), saved.rng.clone());
            saved
        }
        None => {
            let eval_before = if eval.is_empty() { None } else { Some(trainer.evaluate(be, model, &eval_ptrs, eval_refs, cfg)?) };
            DpoRunState {
                step: 0,
                epoch: 0,
                order: Vec::new(),
                cursor: 0,
                rng: state.rng.clone(),
                tokens: 0,
                first: DpoStats::default(),
                last: DpoStats::default(),
                eval_before,
            }
        }
    };
    drop(resume);
    let tokens_at_start = saved.tokens;
    let (mut tokens, mut first, mut last, eval_before) = (saved.tokens, saved.first, saved.last, saved.eval_before);
    // data-parallel: --batch-size pairs per rank; every rank draws the global micro-batches and
    // trains on its share (collective::my_rows), each pair weighted by 1 / the step's global pairs
    let comm = collective::current();
    let micro_pairs = cfg.train.batch_size * comm.world().size;
    let step_pairs = micro_pairs * cfg.train.grad_accum;
    let mut eval_after = None;
    for step in run.steps() {
        state.step = step;
        let step_start = Instant::now();
        let idx = state.next_pairs(step_pairs);
        trainer.zero_grad(be)?;
        let mut step_tokens = 0;
        for micro in idx.chunks(micro_pairs) {
            let micro = &micro[collective::my_rows(micro.len(), comm.world())];
            let pairs: Vec<&DpoPair> = micro.iter().map(|&i| &train[i]).collect();
            let refs: Vec<[f32; 2]> = micro.iter().map(|&i| train_refs[i]).collect();
            step_tokens += trainer.accumulate(be, model, &pairs, &refs, cfg.op_params(pairs.len(), 0, 1.0 / step_pairs as f32), true)?;
        }
        if comm.world().size > 1 {
            let mut bufs: Vec<&mut B::Buf> = trainer.grads.iter_mut().collect();
            bufs.push(&mut trainer.stats);
            sum_buffers(be, &*comm, &mut bufs)?;
            let mut t = [step_tokens as f32];
            comm.sum(&mut t)?;
            step_tokens = t[0] as usize;
        }
        let lr = run.lr(step);
        // the loss sum (stats[LOSS], the buffer's first value) guards the update on the device;
        // the stats are read after
        const _: () = assert!(preference_stat::LOSS == 0);
        let grad_norm = state.opt.step_guarded_by_loss(be, model.params_mut(), &trainer.grads, lr, &trainer.stats)?;
        let stats = trainer.stats(be)?;
        let skipped = run.skip_update(step, stats.loss, grad_norm)?;
        tokens += step_tokens;
        if step == 1 {
            first = stats;
        }
        last = stats;
        let mut record = json!({
            "step": step, "epoch": state.epoch, "loss": stats.loss, "reward_accuracy": stats.reward_accuracy,
            "chosen_reward": stats.chosen_reward, "rejected_reward": stats.rejected_reward, "margin": stats.margin,
            "grad_norm": grad_norm, "lr": lr, "tokens": tokens,
            "tokens_per_sec": step_tokens as f64 / step_start.elapsed().as_secs_f64().max(1e-9),
            "elapsed_s": run.elapsed_s(), "skipped": skipped,
        });
        if step == cfg.train.steps && !eval.is_empty() {
            let e = trainer.evaluate(be, model, &eval_ptrs, eval_refs, cfg)?;
            record["eval"] = stats_json(&e);
            eval_after = Some(e);
        }
        run.record(step, &record, &format!("loss {:.4} acc {:.2} margin {:.3}", stats.loss, stats.reward_accuracy, stats.margin), || {
            format!(
                "loss {:.4} acc {:.3} chosen {:.3} rejected {:.3} margin {:.3} grad_norm {:.3} lr {:.2e}",
                stats.loss, stats.reward_accuracy, stats.chosen_reward, stats.rejected_reward, stats.margin, grad_norm, lr
            )
        })?;
        let saved = || DpoRunState {
            step,
            epoch: state.epoch,
            order: state.order.clone(),
            cursor: state.cursor,
            rng: state.rng.clone(),
            tokens,
            first,
            last,
            eval_before,
        };
        run.save_if_due(step, !skipped, saved, |w| {
            model.save_state(be, w, "weights")?;
            state.opt.save_state(be, w, "adamw")?;
            w.tensor("ref_logps", refs.iter().flat_map(|r| r.iter().copied()).collect());
            Ok(())
        })?;
    }
    let elapsed_s = run.finish(be, model, tokenizer)?;
    Ok(DpoSummary {
        first,
        last,
        eval_before,
        eval_after,
        train_pairs: train.len(),
        eval_pairs: eval.len(),
        reference_sequences,
        epochs: state.epoch + 1,
        tokens_per_sec: (tokens - tokens_at_start) as f64 / elapsed_s.max(1e-9),
        elapsed_s,
    })
}
