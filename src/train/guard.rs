//! The divergence guard: an optimiser step whose loss or gradient norm is not finite is skipped
//! (the optimiser leaves weights and moments untouched, see [`crate::train::AdamW::step`]) and
//! logged; more than `max_bad_steps` such steps in a row stop the run with an error that names
//! the last good checkpoint, which stays intact.

use crate::error::{Error, Result};
use std::path::PathBuf;

#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DivergenceGuard {
    /// the most non-finite steps in a row that are skipped; one more stops the run
    pub max_bad_steps: usize,
    /// non-finite steps in a row so far
    pub streak: usize,
    /// non-finite steps skipped since the start of the run
    pub skipped: usize,
}

impl DivergenceGuard {
    pub fn new(max_bad_steps: usize) -> Self {
        DivergenceGuard { max_bad_steps, streak: 0, skipped: 0 }
    }

    /// Records the outcome of step `step` of command `what`; returns true when it was skipped
    /// (loss or gradient norm not finite). `last_checkpoint` is named in the error that stops the
    /// run.
    pub fn check(&mut self, what: &str, step: usize, loss: f32, grad_norm: f32, last_checkpoint: Option<PathBuf>) -> Result<bool> {
        if loss.is_finite() && grad_norm.is_finite() {
            self.streak = 0;
            return Ok(false);
        }
        self.streak += 1;
        self.skipped += 1;
        eprintln!(
            "{what} step {step}: loss {loss} / gradient norm {grad_norm} not finite; step skipped ({} in a row, at most {} allowed)",
            self.streak, self.max_bad_steps
        );
        if self.streak > self.max_bad_steps {
            let ckpt = match last_checkpoint {
                Some(dir) => format!("the last good checkpoint is {} (continue with --resume)", dir.display()),
                None => "no checkpoint was saved yet (--save-every N saves one every N steps)".to_string(),
            };
            return Err(Error::invalid(format!(
                "{what}: stopping at step {step}: {} steps in a row had a non-finite loss or gradient (--max-bad-steps {}); lower --lr or check the data; {ckpt}",
                self.streak, self.max_bad_steps
            )));
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_finite_step_resets_the_streak_and_too_many_bad_steps_stop() {
        let mut g = DivergenceGuard::new(2);
        assert!(!g.check("t", 1, 1.0, 1.0, None).unwrap());
        assert!(g.check("t", 2, f32::NAN, 1.0, None).unwrap());
        assert!(g.check("t", 3, 1.0, f32::INFINITY, None).unwrap());
        assert!(!g.check("t", 4, 1.0, 1.0, None).unwrap());
        assert_eq!((g.streak, g.skipped), (0, 2));
        assert!(g.check("t", 5, f32::NAN, f32::NAN, None).unwrap());
        assert!(g.check("t", 6, f32::NAN, f32::NAN, None).unwrap());
        let err = g.check("t", 7, f32::NAN, f32::NAN, Some(PathBuf::from("run/checkpoints/step-00000004"))).unwrap_err().to_string();
        assert!(err.contains("3 steps in a row") && err.contains("step-00000004"), "{err}");
    }
}
