//! The run around a training step, shared by every training command: start or resume (the
//! folder claimed, the checkpoint's settings checked), the learning-rate schedule, the
//! divergence guard, `metrics.jsonl`, the progress bar and plain log lines, the checkpoint
//! cadence and the final save. A trainer owns only its step and its own host state.
//!
//! The guard's state is kept in each checkpoint inside the trainer's `run` value (under
//! `guard`), so a trainer's state struct needs no field for it.
//!
//! In a data-parallel job ([`crate::train::collective`]) rank 0 alone claims the folder and
//! writes metrics, progress, checkpoints and the final model; the other ranks wait for its claim,
//! read the same checkpoint on `--resume`, and run the same schedule and guard (their losses and
//! gradient norms are the ranks' sums, equal on every rank).

use crate::backend::ops::Backend;
use crate::data::tokenizer::Tokenizer;
use crate::error::{Error, Result};
use crate::model::state_file::{Checkpoint, StateWriter};
use crate::model::Model;
use crate::train::collective;
use crate::train::resume::{latest_checkpoint, RunControl};
use crate::train::world::World;
use crate::train::{DivergenceGuard, LrSchedule, MetricsWriter, Progress};
use serde::Serialize;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// What a training command tells [`TrainRun::start`].
pub struct RunSpec<'a> {
    /// the command's name (`sft`, `rm`, `ppo`, `dpo`, `grpo`): checkpoints record it
    pub command: &'static str,
    pub out: &'a Path,
    /// the last step
    pub steps: usize,
    /// a plain progress line every `log_every` steps when stderr is not a terminal (0 = never)
    pub log_every: usize,
    pub control: &'a RunControl,
    /// the trainer's own settings a resumed run must share (see [`RunControl::fingerprint`])
    pub fingerprint: Value,
    /// the learning rate per step, when the command schedules one
    pub schedule: Option<LrSchedule>,
}

/// A training run in progress (see the module comment).
pub struct TrainRun {
    command: &'static str,
    out: PathBuf,
    steps: usize,
    log_every: usize,
    save_every_due: RunControl,
    fingerprint: Value,
    schedule: Option<LrSchedule>,
    guard: DivergenceGuard,
    /// the writer's (rank 0's) metrics file and progress bar; `None` on the other ranks
    metrics: Option<MetricsWriter>,
    progress: Option<Progress>,
    world: World,
    /// the collective's traffic at the last record (for `comm_s` and `comm_values`)
    traffic: collective::Traffic,
    started: Instant,
    resumed_after: usize,
}

impl TrainRun {
    /// Starts the run (call it once every input is read and checked, before the first write):
    /// claims `out`, and on `--resume` reads the checkpoint after checking its settings; the
    /// trainer restores its own state from the returned checkpoint (its `run` value with
    /// [`Checkpoint::value`], its tensors).
    pub fn start(spec: RunSpec<'_>) -> Result<(TrainRun, Option<Checkpoint>)> {
        let fingerprint = spec.control.fingerprint(spec.fingerprint);
        let comm = collective::current();
        let world = comm.world().clone();
        let ck = if world.is_main() {
            let ck = spec.control.start(spec.out, spec.command, &fingerprint)?;
            comm.barrier()?;
            ck
        } else {
            // rank 0 claims the folder first; then every rank reads the checkpoint it resumes
            comm.barrier()?;
            spec.control.resume.as_deref().map(|path| Checkpoint::resume(path, spec.command, &fingerprint)).transpose()?
        };
        let mut guard = DivergenceGuard::new(spec.control.max_bad_steps);
        let (metrics, resumed_after) = match &ck {
            Some(ck) => {
                let run: Value = ck.value("run")?;
                if let Some(g) = run.get("guard") {
                    guard = serde_json::from_value(g.clone())
                        .map_err(|e| Error::file(ck.dir.join(crate::model::state_file::STATE_JSON), format!("`run.guard`: {e}")))?;
                    guard.max_bad_steps = spec.control.max_bad_steps;
                }
                (if world.is_main() { Some(ck.continue_metrics(spec.out)?) } else { None }, ck.step)
            }
            None => (if world.is_main() { Some(MetricsWriter::create(spec.out)?) } else { None }, 0),
        };
        let run = TrainRun {
            command: spec.command,
            out: spec.out.to_path_buf(),
            steps: spec.steps,
            log_every: spec.log_every,
            save_every_due: spec.control.clone(),
            fingerprint,
            schedule: spec.schedule,
            guard,
            metrics,
            progress: world.is_main().then(|| Progress::new(spec.command, spec.steps)),
            world,
            traffic: collective::current().traffic(),
            started: Instant::now(),
            resumed_after,
        };
        Ok((run, ck))
    }

    /// The steps this run still has to do: after the resumed checkpoint's, up to the last.
    pub fn steps(&self) -> std::ops::RangeInclusive<usize> {
        self.resumed_after + 1..=self.steps
    }

    /// The last step.
    pub fn last_step(&self) -> usize {
        self.steps
    }

    /// The scheduled learning rate of `step`.
    pub fn lr(&self, step: usize) -> f32 {
        self.schedule.expect("a command that asks for a learning rate schedules one").at(step)
    }

    /// The divergence guard's verdict on an update of `step`: true when it was non-finite and
    /// is skipped; an error after too many in a row.
    pub fn skip_update(&mut self, step: usize, loss: f32, grad_norm: f32) -> Result<bool> {
        self.guard.check(self.command, step, loss, grad_norm, latest_checkpoint(&self.out))
    }

    /// Seconds since the run (or its resumption) started.
    pub fn elapsed_s(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Records `step`: its metrics line, `status` on the progress bar, and `log_line()` on
    /// stderr every `log_every` steps (and at the first and last) when stderr is not a terminal.
    /// On a data-parallel job's other ranks nothing is written.
    pub fn record(&mut self, step: usize, metrics: &Value, status: &str, log_line: impl FnOnce() -> String) -> Result<()> {
        let (Some(writer), Some(progress)) = (self.metrics.as_mut(), self.progress.as_ref()) else { return Ok(()) };
        if self.world.size > 1 {
            // rank 0's collectives since the last record: the step's communication, and its
            // waiting for the other ranks
            let now = collective::current().traffic();
            let mut m = metrics.clone();
            if let Some(obj) = m.as_object_mut() {
                obj.insert("comm_s".into(), (now.seconds - self.traffic.seconds).into());
                obj.insert("comm_values".into(), (now.values - self.traffic.values).into());
            }
            self.traffic = now;
            writer.write(&m)?;
        } else {
            writer.write(metrics)?;
        }
        progress.update(step, status);
        if !progress.is_terminal() && self.log_every > 0 && (step % self.log_every == 0 || step == 1 || step == self.steps) {
            eprintln!("{} step {step}/{} {}", self.command, self.steps, log_line());
        }
        Ok(())
    }

    /// Saves a checkpoint after `step` when one is due and the step trained cleanly (a step
    /// with a skipped update saves nothing: the last checkpoint stays the last good one).
    /// `state()` gives the trainer's host state, `tensors` adds its device state; neither is
    /// called when no checkpoint is due.
    pub fn save_if_due<'c, S: Serialize>(
        &self,
        step: usize,
        clean: bool,
        state: impl FnOnce() -> S,
        tensors: impl FnOnce(&mut StateWriter<'c>) -> Result<()>,
    ) -> Result<()> {
        if !self.save_every_due.due(step, self.steps) || !clean {
            return Ok(());
        }
        if !self.world.is_main() {
            // the other ranks take part (ZeRO-1's moments travel from their owners to rank 0)
            // and keep nothing
            return tensors(&mut StateWriter::discarding());
        }
        let mut run = serde_json::to_value(state()).map_err(|e| Error::invalid(format!("checkpoint state: {e}")))?;
        let guard = serde_json::to_value(&self.guard).map_err(|e| Error::invalid(format!("checkpoint state: {e}")))?;
        match run.as_object_mut() {
            Some(obj) => obj.insert("guard".into(), guard),
            None => return Err(Error::invalid("a trainer's checkpoint state must be an object")),
        };
        let mut w = StateWriter::new();
        tensors(&mut w)?;
        w.save_run(&self.out, self.command, step, &run, &self.fingerprint)?;
        Ok(())
    }

    /// Ends the run: the progress bar, then the trained model and its tokenizer saved into the
    /// output folder (by rank 0 of a data-parallel job). Returns the seconds since the run started.
    pub fn finish<B: Backend>(self, be: &B, model: &Model<B>, tokenizer: &Tokenizer) -> Result<f64> {
        if let Some(progress) = &self.progress {
            progress.finish();
        }
        if self.world.is_main() {
            model.save_as(be, &self.out, tokenizer, self.save_every_due.save_dtype.resolve(model.source_dtype()))?;
        }
        Ok(self.elapsed_s())
    }

    /// This process's place in the run's data-parallel job.
    pub fn world(&self) -> &World {
        &self.world
    }
}
