//! Reward-model training (`rlhf rm`) and scoring. The reward model is the decoder with a scalar
//! `score` head read at the last token of each sequence (what `AutoModelForSequenceClassification`
//! does with one label). Its loss is InstructGPT's: for each prompt with K ranked completions (a
//! chosen/rejected pair is K = 2), one forward per completion, all K(K-1)/2 pairs in
//! `-log sigmoid(r_better - r_worse - margin)`, averaged per prompt, then over prompts.
//! Held-out prompts give the pairwise accuracy. Data-parallel (N ranks): `--batch-size` prompts
//! per rank; every rank draws the global batch, trains on its share with each prompt weighted by
//! 1 / the global batch, and the gradients and statistics are summed over the ranks.

use crate::backend::ops::{Backend, ElementwiseParams, EmbeddingParams, MatmulParams, RankingParams, Storage};
use crate::data::preference::PreferenceGroup;
use crate::data::rng::Rng;
use crate::data::tokenizer::Tokenizer;
use crate::error::{Error, Result};
use crate::model::{Activations, GradScratch, Model, Shape};
use crate::train::collective::{self, sum_buffers, Collective};
use crate::train::optimizer::{AdamW, AdamWConfig};
use crate::train::resume::RunControl;
use crate::train::{LrSchedule, RunSpec, TrainRun};
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Clone, Debug)]
pub struct RmConfig {
    pub out: PathBuf,
    pub steps: usize,
    pub lr: f32,
    pub min_lr_ratio: f32,
    pub warmup: usize,
    /// prompts (groups of completions) per optimiser step
    pub batch_size: usize,
    pub seq_len: usize,
    pub seed: u64,
    pub optim: AdamWConfig,
    /// added to every pair's required score gap (on top of a line's own `margin`)
    pub margin: f32,
    /// fraction of the prompts held out for evaluation
    pub eval_fraction: f32,
    /// evaluate every N steps (and at the end); 0 = only at the end
    pub eval_every: usize,
    pub log_every: usize,
    /// checkpoints, resume and the divergence guard
    pub control: RunControl,
}

impl RmConfig {
    pub fn validate(&self) -> Result<()> {
        if self.steps == 0 || self.batch_size == 0 {
            return Err(Error::invalid("--steps and --batch-size must be at least 1"));
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return Err(Error::invalid(format!("--lr must be a positive number, got {}", self.lr)));
        }
        if !(0.0..1.0).contains(&self.eval_fraction) {
            return Err(Error::invalid(format!("--eval-fraction must be in [0, 1), got {}", self.eval_fraction)));
        }
        if !self.margin.is_finite() {
            return Err(Error::invalid("--margin must be a number"));
        }
        if self.seq_len < 2 {
            return Err(Error::invalid("--seq-len must be at least 2"));
        }
        Ok(())
    }
}

/// What a ranking pass reports.
#[derive(Clone, Copy, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct RankingStats {
    /// mean over prompts of the mean pairwise loss
    pub loss: f32,
    /// fraction of pairs the scores order correctly
    pub accuracy: f32,
    /// mean score gap (better minus worse) over pairs
    pub mean_gap: f32,
    pub pairs: usize,
}

/// Buffers for scoring and training a reward model on batches of up to `max_seqs` sequences of up
/// to `max_len` tokens, reused across steps.
pub struct RewardTrainer<B: Backend> {
    acts: Activations<B>,
    /// gradients, activation-gradient scratch and optimiser (absent in a scoring-only instance)
    train: Option<TrainState<B>>,
    scores: B::Buf,
    dscores: B::Buf,
    /// `dscores` in the compute type, for the score head's backward matmuls
    dscores_c: B::Buf,
    d_last: B::Buf,
    stats: B::Buf,
    starts: B::Ids,
    margins: B::Buf,
    max_seqs: usize,
    max_len: usize,
}

/// One padded batch of sequences and where each ends.
struct SeqBatch {
    shape: Shape,
    inputs: Vec<i32>,
    last_rows: Vec<i32>,
}

/// Pads `seqs` into one batch. The score of a sequence is read at its last token that is not
/// `score_pad` (the model's `pad_token_id`, as `transformers` reads it), or its last token.
fn pack(seqs: &[&[u32]], pad: u32, score_pad: Option<u32>) -> SeqBatch {
    let t = seqs.iter().map(|s| s.len()).max().unwrap_or(1).max(1);
    let mut inputs = vec![pad as i32; seqs.len() * t];
    let mut last_rows = Vec::with_capacity(seqs.len());
    for (i, s) in seqs.iter().enumerate() {
        for (j, &id) in s.iter().enumerate() {
            inputs[i * t + j] = id as i32;
        }
        let last = s.iter().rposition(|&id| Some(id) != score_pad).unwrap_or(s.len().max(1) - 1);
        last_rows.push((i * t + last) as i32);
    }
    SeqBatch { shape: Shape { b: seqs.len(), t }, inputs, last_rows }
}

struct TrainState<B: Backend> {
    scratch: GradScratch<B>,
    grads: Vec<B::Buf>,
    opt: AdamW<B>,
}

impl<B: Backend> RewardTrainer<B> {
    /// Buffers to train `model` (and score with it).
    pub fn new(be: &B, model: &Model<B>, max_seqs: usize, max_len: usize, optim: AdamWConfig) -> Result<Self> {
        let mut t = Self::scorer(be, model, max_seqs, max_len)?;
        t.train = Some(TrainState {
            scratch: GradScratch::with_logit_rows(be, model.cfg(), max_seqs * max_len, 0)?,
            grads: model.grads_like(be)?,
            opt: AdamW::new(be, model.layout(), optim)?,
        });
        Ok(t)
    }

    /// Buffers to score with `model` only (no gradients or optimiser state).
    pub fn scorer(be: &B, model: &Model<B>, max_seqs: usize, max_len: usize) -> Result<Self> {
        if model.layout().score.is_none() {
            return Err(Error::invalid("the model has no score head (load it as a reward model)"));
        }
        let c = model.cfg().hidden_size;
        Ok(RewardTrainer {
            acts: Activations::with_logit_rows(be, model.cfg(), max_seqs, max_seqs * max_len, 0)?,
            train: None,
            scores: be.alloc(max_seqs)?,
            dscores: be.alloc(max_seqs)?,
            dscores_c: be.alloc_as(max_seqs, Storage::Compute)?,
            d_last: be.alloc_as(max_seqs * c, Storage::Compute)?,
            stats: be.alloc(4)?,
            starts: be.alloc_ids(max_seqs + 1)?,
            margins: be.alloc(max_seqs)?,
            max_seqs,
            max_len,
        })
    }

    /// Forward of the trunk and the score head; leaves `[b]` scores in `self.scores`.
    fn forward_scores(&mut self, be: &B, model: &Model<B>, batch: &SeqBatch) -> Result<()> {
        let (b, c) = (batch.shape.b, model.cfg().hidden_size);
        if b > self.max_seqs || batch.shape.t > self.max_len {
            return Err(Error::invalid(format!("{b} sequences of {} tokens exceed the reward model's buffers", batch.shape.t)));
        }
        let dec = &model.decoder;
        dec.set_inputs(be, &mut self.acts, batch.shape, &batch.inputs, None)?;
        dec.forward_hidden(be, &model.weights, &mut self.acts, batch.shape)?;
        be.write_ids(&mut self.acts.last_rows, &batch.last_rows)?;
        let gather = EmbeddingParams { n: b as u32, c: c as u32, accumulate: 0, vocab: batch.shape.n() as u32 };
        be.embedding_fwd(&mut self.acts.last_hidden, &self.acts.last_rows, &self.acts.lnf, gather)?;
        let score = model.layout().score.expect("checked in new");
        be.matmul(&mut self.scores, &self.acts.last_hidden, &model.weights[score], MatmulParams::new(b, 1, c, false, true))
    }

    /// Scores of whole sequences (the reward of each), in batches of at most `max_seqs`.
    pub fn score(&mut self, be: &B, model: &Model<B>, seqs: &[Vec<u32>], pad: u32) -> Result<Vec<f32>> {
        let mut out = Vec::with_capacity(seqs.len());
        for chunk in seqs.chunks(self.max_seqs) {
            let refs: Vec<&[u32]> = chunk.iter().map(|s| s.as_slice()).collect();
            let batch = pack(&refs, pad, model.cfg().pad_token_id());
            self.forward_scores(be, model, &batch)?;
            out.extend_from_slice(&be.download(&self.scores)?[..chunk.len()]);
        }
        Ok(out)
    }

    /// The scores of the last `score_on_device` call (one per sequence, on the device).
    pub fn scores(&self) -> &B::Buf {
        &self.scores
    }

    /// Scores of at most `max_seqs` sequences, left on the device (valid until the next call).
    pub fn score_on_device(&mut self, be: &B, model: &Model<B>, seqs: &[Vec<u32>], pad: u32) -> Result<&B::Buf> {
        if seqs.len() > self.max_seqs {
            return Err(Error::invalid(format!("{} sequences exceed the reward model's {} slots", seqs.len(), self.max_seqs)));
        }
        let refs: Vec<&[u32]> = seqs.iter().map(|s| s.as_slice()).collect();
        let batch = pack(&refs, pad, model.cfg().pad_token_id());
        self.forward_scores(be, model, &batch)?;
        Ok(&self.scores)
    }

    /// The ranking loss over `groups`, weighted by `scale` per group; with `train`, also the
    /// backward into the parameter gradients.
    #[allow(clippy::too_many_arguments)]
    fn ranking_pass(&mut self, be: &B, model: &Model<B>, groups: &[&PreferenceGroup], extra_margin: f32, scale: f32, pad: u32, train: bool) -> Result<()> {
        let seqs: Vec<&[u32]> = groups.iter().flat_map(|g| g.sequences.iter().map(|s| s.as_slice())).collect();
        let batch = pack(&seqs, pad, model.cfg().pad_token_id());
        self.forward_scores(be, model, &batch)?;
        let mut starts = vec![0i32];
        for g in groups {
            starts.push(starts[starts.len() - 1] + g.sequences.len() as i32);
        }
        let margins: Vec<f32> = groups.iter().map(|g| g.margin + extra_margin).collect();
        be.write_ids(&mut self.starts, &starts)?;
        be.write(&mut self.margins, &margins)?;
        let p = RankingParams { n_groups: groups.len() as u32, scale };
        be.ranking_loss(&mut self.dscores, &mut self.stats, &self.scores, &self.starts, &self.margins, p)?;
        if !train {
            return Ok(());
        }
        let (b, c, n) = (batch.shape.b, model.cfg().hidden_size, batch.shape.n());
        let score = model.layout().score.expect("checked in new");
        let st = self.train.as_mut().ok_or_else(|| Error::invalid("this reward-model instance scores only"))?;
        // scores = last_hidden @ w^T: d_last = dscores @ w, dw += dscores^T @ last_hidden
        be.copy(&mut self.dscores_c, &self.dscores, ElementwiseParams::new(b)?)?;
        be.matmul(&mut self.d_last, &self.dscores_c, &model.weights[score], MatmulParams::new(b, c, 1, false, false))?;
        be.matmul(&mut st.grads[score], &self.dscores_c, &self.acts.last_hidden, MatmulParams::new(1, c, b, true, false).accumulate(true))?;
        // only the last token of each sequence feeds the score
        be.fill(&mut st.scratch.d_ln, 0.0, ElementwiseParams::new(n * c)?)?;
        let scatter = EmbeddingParams { n: b as u32, c: c as u32, accumulate: 0, vocab: n as u32 };
        be.embedding_bwd(&mut st.scratch.d_ln, &self.d_last, &self.acts.last_rows, scatter)?;
        model.decoder.backward_hidden(be, &model.weights, &mut st.grads, &self.acts, &mut st.scratch, batch.shape)
    }

    fn read_stats(&mut self, be: &B) -> Result<RankingStats> {
        let s = be.download(&self.stats)?;
        be.fill(&mut self.stats, 0.0, ElementwiseParams::new(4)?)?;
        let pairs = s[2].round() as usize;
        Ok(RankingStats { loss: s[0], accuracy: s[1] / s[2].max(1.0), mean_gap: s[3] / s[2].max(1.0), pairs })
    }

    /// Loss, accuracy and score gap over `groups` without training.
    pub fn evaluate(&mut self, be: &B, model: &Model<B>, groups: &[PreferenceGroup], extra_margin: f32, pad: u32) -> Result<RankingStats> {
        be.fill(&mut self.stats, 0.0, ElementwiseParams::new(4)?)?;
        let mut i = 0;
        while i < groups.len() {
            let mut take = Vec::new();
            let mut n_seqs = 0;
            while i < groups.len() && n_seqs + groups[i].sequences.len() <= self.max_seqs {
                n_seqs += groups[i].sequences.len();
                take.push(&groups[i]);
                i += 1;
            }
            if take.is_empty() {
                return Err(Error::invalid(format!("line {}: {} completions exceed the batch buffers", groups[i].line, groups[i].sequences.len())));
            }
            self.ranking_pass(be, model, &take, extra_margin, 1.0 / groups.len() as f32, pad, false)?;
        }
        self.read_stats(be)
    }

    /// The loss of `groups` (mean over prompts) and its gradient, left in [`Self::grads`].
    pub fn loss_and_grads(&mut self, be: &B, model: &Model<B>, groups: &[&PreferenceGroup], extra_margin: f32, pad: u32) -> Result<RankingStats> {
        self.enqueue_loss_and_grads(be, model, groups, groups.len(), extra_margin, pad)?;
        self.read_stats(be)
    }

    /// [`Self::loss_and_grads`] without the read-back: the stats stay on the device (the weighted
    /// loss sum first). `groups` are weighted `1 / total_groups` each (`total_groups`: the step's
    /// groups over every rank; a rank may hold none of them).
    fn enqueue_loss_and_grads(&mut self, be: &B, model: &Model<B>, groups: &[&PreferenceGroup], total_groups: usize, extra_margin: f32, pad: u32) -> Result<()> {
        let st = self.train.as_mut().ok_or_else(|| Error::invalid("this reward-model instance scores only"))?;
        for g in st.grads.iter_mut() {
            let n = be.len(g);
            be.fill(g, 0.0, ElementwiseParams::new(n)?)?;
        }
        be.fill(&mut self.stats, 0.0, ElementwiseParams::new(4)?)?;
        if groups.is_empty() {
            return Ok(());
        }
        self.ranking_pass(be, model, groups, extra_margin, 1.0 / total_groups.max(1) as f32, pad, true)
    }

    /// The parameter gradients of the last [`Self::loss_and_grads`].
    pub fn grads(&self) -> &[B::Buf] {
        self.train.as_ref().map_or(&[], |t| t.grads.as_slice())
    }

    /// One optimiser step on `groups`; returns the batch's stats and the gradient norm. In a
    /// data-parallel job `groups` is this rank's share of the step's `total_groups`, and the
    /// gradients and statistics are summed over the ranks of `comm` before the update.
    #[allow(clippy::too_many_arguments)]
    pub fn train_step(
        &mut self,
        be: &B,
        model: &mut Model<B>,
        groups: &[&PreferenceGroup],
        total_groups: usize,
        extra_margin: f32,
        lr: f32,
        pad: u32,
        comm: &dyn Collective,
    ) -> Result<(RankingStats, f32)> {
        self.enqueue_loss_and_grads(be, model, groups, total_groups, extra_margin, pad)?;
        let st = self.train.as_mut().expect("enqueue_loss_and_grads checked");
        let mut bufs: Vec<&mut B::Buf> = st.grads.iter_mut().collect();
        bufs.push(&mut self.stats);
        sum_buffers(be, comm, &mut bufs)?;
        // the weighted loss sum (stats[0]) guards the update on the device; the stats are read after
        let grad_norm = st.opt.step_guarded_by_loss(be, model.params_mut(), &st.grads, lr, &self.stats)?;
        Ok((self.read_stats(be)?, grad_norm))
    }

    /// The optimiser of a training instance (for checkpoints).
    pub fn optimizer_mut(&mut self) -> Option<&mut AdamW<B>> {
        self.train.as_mut().map(|t| &mut t.opt)
    }
}

/// What `rlhf rm` reports at the end.
#[derive(Clone, Debug)]
pub struct RmSummary {
    pub first_loss: f32,
    pub last_loss: f32,
    pub eval: Option<RankingStats>,
    pub eval_before: Option<RankingStats>,
    pub train_groups: usize,
    pub eval_groups: usize,
    pub tokens_per_sec: f64,
    pub elapsed_s: f64,
}

/// Splits off `fraction` of the groups (a seeded shuffle) for evaluation.
pub fn split_eval(mut groups: Vec<PreferenceGroup>, fraction: f32, seed: u64) -> (Vec<PreferenceGroup>, Vec<PreferenceGroup>) {
    let n_eval = ((groups.len() as f64) * fraction as f64).round() as usize;
    if n_eval == 0 || n_eval >= groups.len() {
        return (groups, Vec::new());
    }
    Rng::new(seed ^ 0xE7A1).shuffle(&mut groups);
    let eval = groups.split_off(groups.len() - n_eval);
    (groups, eval)
}

/// The host state of a reward-model run that a checkpoint keeps (besides weights and moments).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct RmRunState {
    step: usize,
    rng: Rng,
    /// the current epoch's order of training prompts, and the next one's index in it
    order: Vec<usize>,
    cursor: usize,
    tokens: usize,
    first_loss: Option<f32>,
    last_loss: Option<f32>,
    eval_before: Option<RankingStats>,
    last_eval: Option<RankingStats>,
}

/// Trains `model` (which has a score head) on `groups` and saves it with `tokenizer` into `cfg.out`.
pub fn run_rm<B: Backend>(be: &B, model: &mut Model<B>, tokenizer: &Tokenizer, groups: Vec<PreferenceGroup>, cfg: &RmConfig) -> Result<RmSummary> {
    cfg.validate()?;
    if tokenizer.vocab_size() > model.cfg().vocab_size {
        return Err(Error::invalid(format!("the tokenizer has {} tokens but the model's vocabulary is {}", tokenizer.vocab_size(), model.cfg().vocab_size)));
    }
    let (train, eval) = split_eval(groups, cfg.eval_fraction, cfg.seed);
    if train.is_empty() {
        return Err(Error::invalid("no training prompts left after the evaluation split"));
    }
    let pad = tokenizer.pad_or_default();
    // transformers needs a pad id to find the scored token in batches; record the one used here
    if model.cfg().pad_token_id().is_none() {
        model.decoder.cfg.raw["pad_token_id"] = json!(pad);
    }
    let max_k = train.iter().chain(&eval).map(|g| g.sequences.len()).max().unwrap_or(2);
    let max_len = train.iter().chain(&eval).flat_map(|g| g.sequences.iter().map(Vec::len)).max().unwrap_or(2);
    let mut trainer = RewardTrainer::new(be, model, cfg.batch_size.max(1).saturating_mul(max_k), max_len, cfg.optim)
        .map_err(Error::sized_by(format!("--batch-size {} x {max_k} completions x {max_len} tokens", cfg.batch_size)))?;
    let schedule = LrSchedule { lr: cfg.lr, warmup: cfg.warmup, total: cfg.steps, min_lr_ratio: cfg.min_lr_ratio };
    let fingerprint = json!({ "seed": cfg.seed, "batch_size": cfg.batch_size, "seq_len": cfg.seq_len, "eval_fraction": cfg.eval_fraction });
    let spec = RunSpec { command: "rm", out: &cfg.out, steps: cfg.steps, log_every: cfg.log_every, control: &cfg.control, fingerprint, schedule: Some(schedule) };
    let (mut run, ck) = TrainRun::start(spec)?;
    let mut state: RmRunState = match ck {
        Some(ck) => {
            model.restore_state(be, &ck, "weights")?;
            trainer.optimizer_mut().expect("a training instance").restore_state(be, &ck, "adamw")?;
            ck.value("run")?
        }
        None => {
            let eval_before = if eval.is_empty() { None } else { Some(trainer.evaluate(be, model, &eval, cfg.margin, pad)?) };
            let mut order: Vec<usize> = (0..train.len()).collect();
            let mut rng = Rng::new(cfg.seed);
            rng.shuffle(&mut order);
            RmRunState { step: 0, rng, order, cursor: 0, tokens: 0, first_loss: None, last_loss: None, eval_before, last_eval: None }
        }
    };
    let tokens_at_start = state.tokens;
    // data-parallel: --batch-size groups per rank; every rank draws the global batch and trains
    // on its share (collective::my_rows), the groups weighted by 1 / the global batch
    let comm = collective::current();
    let global_batch = cfg.batch_size * comm.world().size;
    for step in run.steps() {
        let step_start = Instant::now();
        let mut batch = Vec::with_capacity(global_batch);
        for _ in 0..global_batch.min(train.len()) {
            if state.cursor == state.order.len() {
                state.rng.shuffle(&mut state.order);
                state.cursor = 0;
            }
            batch.push(&train[state.order[state.cursor]]);
            state.cursor += 1;
        }
        let step_tokens: usize = batch.iter().flat_map(|g| g.sequences.iter().map(Vec::len)).sum();
        let lr = run.lr(step);
        let mine = &batch[collective::my_rows(batch.len(), comm.world())];
        let (stats, grad_norm) = trainer.train_step(be, model, mine, batch.len(), cfg.margin, lr, pad, &*comm)?;
        let skipped = run.skip_update(step, stats.loss, grad_norm)?;
        state.tokens += step_tokens;
        if step == 1 {
            state.first_loss = Some(stats.loss);
        }
        state.last_loss = Some(stats.loss);
        let mut record = json!({
            "step": step, "loss": stats.loss, "accuracy": stats.accuracy, "score_gap": stats.mean_gap,
            "grad_norm": grad_norm, "lr": lr, "tokens": state.tokens,
            "tokens_per_sec": step_tokens as f64 / step_start.elapsed().as_secs_f64().max(1e-9),
            "elapsed_s": run.elapsed_s(), "skipped": skipped,
        });
        let eval_now = !eval.is_empty() && (step == cfg.steps || (cfg.eval_every > 0 && step % cfg.eval_every == 0));
        if eval_now {
            let e = trainer.evaluate(be, model, &eval, cfg.margin, pad)?;
            record["eval_loss"] = json!(e.loss);
            record["eval_accuracy"] = json!(e.accuracy);
            state.last_eval = Some(e);
        }
        run.record(step, &record, &format!("loss {:.4} acc {:.2}", stats.loss, stats.accuracy), || {
            format!("loss {:.4} acc {:.3} grad_norm {:.3} lr {:.2e}", stats.loss, stats.accuracy, grad_norm, lr)
        })?;
        state.step = step;
        run.save_if_due(step, !skipped, || &state, |w| {
            model.save_state(be, w, "weights")?;
            trainer.optimizer_mut().expect("a training instance").save_state(be, w, "adamw")
        })?;
    }
    let elapsed_s = run.finish(be, model, tokenizer)?;
    let run = state;
    Ok(RmSummary {
        first_loss: run.first_loss.unwrap_or(f32::NAN),
        last_loss: run.last_loss.unwrap_or(f32::NAN),
        eval: run.last_eval,
        eval_before: run.eval_before,
        train_groups: train.len(),
        eval_groups: eval.len(),
        tokens_per_sec: (run.tokens - tokens_at_start) as f64 / elapsed_s.max(1e-9),
        elapsed_s,
    })
}
