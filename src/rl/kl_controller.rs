//! The coefficient beta of PPO's per-token KL penalty (`r_t = -beta KL_t`, plus the reward-model
//! score on the last token), fixed or adapted towards a target KL.
//!
//! Adaptive (Ziegler et al. 2019, "Fine-Tuning Language Models from Human Preferences", used by
//! InstructGPT, TRL and OpenRLHF): after a batch of `n_steps` samples whose mean KL to the
//! reference is `current_kl`,
//!   `error = clip(current_kl / target - 1, -0.2, 0.2)`,  `beta *= 1 + error * n_steps / horizon`,
//! so beta rises when the policy drifts further than `target` and falls when it stays closer, by at
//! most a factor `1 +- 0.2 n_steps / horizon` per update. `n_steps` counts samples (episodes), as
//! in TRL and OpenRLHF, and `horizon` is in the same unit (10000 in their defaults).
//!
//! The state is plain data and serde-serialisable, so a run resumes with the beta it had.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// The clip of the proportional error of the adaptive controller.
pub const KL_ERROR_CLIP: f64 = 0.2;

/// A constant beta.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct FixedKlController {
    pub beta: f64,
}

impl FixedKlController {
    pub fn new(beta: f64) -> Result<Self> {
        check_beta(beta)?;
        Ok(FixedKlController { beta })
    }
    pub fn beta(&self) -> f64 {
        self.beta
    }
    /// Does nothing: beta is fixed.
    pub fn update(&mut self, _current_kl: f64, _n_steps: u64) {}
}

/// Beta adapted towards a target KL (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdaptiveKlController {
    /// the current coefficient (the initial one before the first update)
    pub beta: f64,
    /// the KL per sample the controller steers towards (> 0)
    pub target: f64,
    /// samples over which a constant error changes beta by about `e^(error)` (> 0)
    pub horizon: f64,
}

impl AdaptiveKlController {
    pub fn new(init_beta: f64, target: f64, horizon: f64) -> Result<Self> {
        check_beta(init_beta)?;
        if !(target.is_finite() && target > 0.0) {
            return Err(Error::invalid(format!("adaptive KL controller: target KL must be positive, got {target}")));
        }
        if !(horizon.is_finite() && horizon > 0.0) {
            return Err(Error::invalid(format!("adaptive KL controller: horizon must be positive, got {horizon}")));
        }
        Ok(AdaptiveKlController { beta: init_beta, target, horizon })
    }
    pub fn beta(&self) -> f64 {
        self.beta
    }
    /// `beta *= 1 + clip(current_kl / target - 1, -0.2, 0.2) * n_steps / horizon`. A non-finite
    /// `current_kl` leaves beta unchanged (a diverged batch must not poison the coefficient).
    pub fn update(&mut self, current_kl: f64, n_steps: u64) {
        if !current_kl.is_finite() {
            return;
        }
        let error = (current_kl / self.target - 1.0).clamp(-KL_ERROR_CLIP, KL_ERROR_CLIP);
        let mult = 1.0 + error * n_steps as f64 / self.horizon;
        // a horizon shorter than 5 n_steps could drive the factor to 0 or below; beta stays >= 0
        self.beta = (self.beta * mult).max(0.0);
    }
}

fn check_beta(beta: f64) -> Result<()> {
    if beta.is_finite() && beta >= 0.0 {
        Ok(())
    } else {
        Err(Error::invalid(format!("KL coefficient beta must be finite and >= 0, got {beta}")))
    }
}

/// Either controller, behind one interface; serialises as `{"kind": "fixed" | "adaptive", ...}`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum KlController {
    Fixed(FixedKlController),
    Adaptive(AdaptiveKlController),
}

impl KlController {
    /// A fixed beta.
    pub fn fixed(beta: f64) -> Result<Self> {
        Ok(KlController::Fixed(FixedKlController::new(beta)?))
    }
    /// An adaptive beta starting at `init_beta`.
    pub fn adaptive(init_beta: f64, target: f64, horizon: f64) -> Result<Self> {
        Ok(KlController::Adaptive(AdaptiveKlController::new(init_beta, target, horizon)?))
    }
    /// The coefficient to use for the next batch.
    pub fn beta(&self) -> f64 {
        match self {
            KlController::Fixed(c) => c.beta(),
            KlController::Adaptive(c) => c.beta(),
        }
    }
    /// Feeds the mean KL per sample of the last batch of `n_steps` samples.
    pub fn update(&mut self, current_kl: f64, n_steps: u64) {
        match self {
            KlController::Fixed(c) => c.update(current_kl, n_steps),
            KlController::Adaptive(c) => c.update(current_kl, n_steps),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12 * b.abs().max(1.0)
    }

    #[test]
    fn fixed_never_moves() {
        let mut c = KlController::fixed(0.05).unwrap();
        for kl in [0.0, 1.0, 100.0] {
            c.update(kl, 256);
            assert_eq!(c.beta(), 0.05);
        }
    }

    #[test]
    fn adaptive_follows_the_formula() {
        // beta 0.1, target 6, horizon 10000, 256 samples per batch
        let mut c = KlController::adaptive(0.1, 6.0, 10000.0).unwrap();
        // KL 6.6 above target: error = 6.6/6 - 1 = 0.1, beta = 0.1 * (1 + 0.1 * 256/10000) = 0.100256
        c.update(6.6, 256);
        assert!(close(c.beta(), 0.100256), "{}", c.beta());
        // KL 5.4 below target: error = -0.1, beta = 0.100256 * (1 - 0.00256) = 0.10000034...
        c.update(5.4, 256);
        assert!(close(c.beta(), 0.100256 * 0.99744), "{}", c.beta());
        assert!(c.beta() < 0.100256);
        // on target: no change
        let before = c.beta();
        c.update(6.0, 256);
        assert!(close(c.beta(), before));
    }

    #[test]
    fn adaptive_error_is_clipped() {
        // KL 60 is 10x the target: error clipped to +0.2, beta = 1 * (1 + 0.2 * 1000/10000) = 1.02
        let mut up = AdaptiveKlController::new(1.0, 6.0, 10000.0).unwrap();
        up.update(60.0, 1000);
        assert!(close(up.beta, 1.02), "{}", up.beta);
        // KL 0: error -1 clipped to -0.2, beta = 1 * (1 - 0.02) = 0.98
        let mut down = AdaptiveKlController::new(1.0, 6.0, 10000.0).unwrap();
        down.update(0.0, 1000);
        assert!(close(down.beta, 0.98), "{}", down.beta);
        // exactly at the edge (error 0.2) and just past it give the same step
        let mut edge = AdaptiveKlController::new(1.0, 5.0, 10000.0).unwrap();
        edge.update(6.0, 1000);
        let mut past = AdaptiveKlController::new(1.0, 5.0, 10000.0).unwrap();
        past.update(6.5, 1000);
        assert!(close(edge.beta, 1.02) && close(past.beta, 1.02), "{} {}", edge.beta, past.beta);
        // a NaN KL leaves beta alone
        past.update(f64::NAN, 1000);
        assert!(close(past.beta, 1.02));
    }

    #[test]
    fn bad_settings_are_errors() {
        assert!(KlController::fixed(-1.0).is_err());
        assert!(KlController::adaptive(0.1, 0.0, 10000.0).is_err());
        assert!(KlController::adaptive(0.1, 6.0, 0.0).is_err());
        assert!(KlController::adaptive(f64::NAN, 6.0, 1.0).is_err());
    }

    #[test]
    fn state_round_trips_through_json() {
        let mut c = KlController::adaptive(0.2, 6.0, 10000.0).unwrap();
        c.update(9.0, 512);
        let json = serde_json::to_string(&c).unwrap();
        assert!(json.contains("\"kind\":\"adaptive\""), "{json}");
        let back: KlController = serde_json::from_str(&json).unwrap();
        assert_eq!(back, c);
        let fixed: KlController = serde_json::from_str(r#"{"kind":"fixed","beta":0.05}"#).unwrap();
        assert_eq!(fixed.beta(), 0.05);
    }
}
