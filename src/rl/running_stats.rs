//! Running mean and variance over a stream of batches (reward normalisation in PPO, as TRL's and
//! OpenRLHF's `RunningMoments`).
//!
//! The state is `(count, mean, m2)` with `m2 = sum (x - mean)^2` over everything seen. A batch
//! with `(n_b, mean_b, var_b)` (population variance) is merged by Chan et al.'s parallel update:
//!   `delta = mean_b - mean`,  `n' = n + n_b`,  `mean' = mean + delta n_b / n'`,
//!   `m2' = m2 + var_b n_b + delta^2 n n_b / n'`,
//! which equals the moments of the concatenated data exactly in real arithmetic. Everything is
//! f64; a batch's own moments are two passes in index order. The state is serde-serialisable so a
//! run resumes with the statistics it had.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunningMoments {
    /// samples seen
    pub count: f64,
    /// their mean
    pub mean: f64,
    /// their sum of squared deviations from the mean
    pub m2: f64,
}

/// `(count, mean, population variance)` of `xs`, two passes in f64.
pub fn batch_moments(xs: &[f32]) -> (f64, f64, f64) {
    if xs.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    let n = xs.len() as f64;
    let mean = xs.iter().map(|&x| x as f64).sum::<f64>() / n;
    let var = xs.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
    (n, mean, var)
}

impl RunningMoments {
    pub fn new() -> Self {
        Self::default()
    }

    /// Merges a batch given by its moments: `count` samples with mean `mean` and population
    /// variance `var` (divided by `count`). An empty batch changes nothing.
    pub fn update_from_moments(&mut self, count: f64, mean: f64, var: f64) {
        if count <= 0.0 {
            return;
        }
        let total = self.count + count;
        let delta = mean - self.mean;
        self.m2 += var * count + delta * delta * self.count * count / total;
        self.mean += delta * count / total;
        self.count = total;
    }

    /// Merges a batch of samples; returns the batch's own mean and Bessel-corrected std (0 for
    /// fewer than 2 samples), as TRL's `RunningMoments.update` does, for logging.
    pub fn update(&mut self, xs: &[f32]) -> (f64, f64) {
        let (n, mean, var) = batch_moments(xs);
        self.update_from_moments(n, mean, var);
        let std = if n > 1.0 { (var * n / (n - 1.0)).sqrt() } else { 0.0 };
        (mean, std)
    }

    /// Mean of everything seen (0 before any sample).
    pub fn mean(&self) -> f64 {
        self.mean
    }

    /// Population variance `m2 / count` (0 before any sample).
    pub fn var(&self) -> f64 {
        if self.count > 0.0 {
            self.m2 / self.count
        } else {
            0.0
        }
    }

    /// Bessel-corrected standard deviation `sqrt(m2 / (count - 1))` (TRL's `RunningMoments.std`,
    /// the scale used to normalise rewards); 1 with fewer than 2 samples, so dividing by it is safe.
    pub fn std(&self) -> f64 {
        if self.count > 1.0 {
            (self.m2 / (self.count - 1.0)).sqrt()
        } else {
            1.0
        }
    }

    pub fn count(&self) -> f64 {
        self.count
    }
}

/// Mean and (population) standard deviation of `xs`, accumulated in f64.
pub fn mean_std(xs: &[f32]) -> (f32, f32) {
    let n = xs.len().max(1) as f64;
    let m = xs.iter().map(|&x| x as f64).sum::<f64>() / n;
    let v = xs.iter().map(|&x| (x as f64 - m).powi(2)).sum::<f64>() / n;
    (m as f32, v.sqrt() as f32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol * b.abs().max(1.0)
    }

    #[test]
    fn batches_match_the_concatenated_data() {
        let batches: Vec<Vec<f32>> = vec![
            vec![1.0, 2.0, 3.0, 4.0],
            vec![10.0],
            vec![-5.0, 0.5, 7.25],
            vec![],
            (0..100).map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.3 + 100.0).collect(),
            vec![2.5, 2.5],
        ];
        let mut rm = RunningMoments::new();
        let mut all = Vec::new();
        for b in &batches {
            rm.update(b);
            all.extend_from_slice(b);
            let (n, mean, var) = batch_moments(&all);
            assert_eq!(rm.count(), n);
            assert!(close(rm.mean(), mean, 1e-12), "mean {} vs {}", rm.mean(), mean);
            assert!(close(rm.var(), var, 1e-12), "var {} vs {}", rm.var(), var);
            if n > 1.0 {
                assert!(close(rm.std(), (var * n / (n - 1.0)).sqrt(), 1e-12));
            }
        }
    }

    #[test]
    fn hand_numbers() {
        // [1, 2, 3] then [4, 5]: all five have mean 3, population var 2, sample std sqrt(2.5)
        let mut rm = RunningMoments::new();
        let (m, s) = rm.update(&[1.0, 2.0, 3.0]);
        assert!(close(m, 2.0, 1e-15) && close(s, 1.0, 1e-15));
        rm.update(&[4.0, 5.0]);
        assert!(close(rm.mean(), 3.0, 1e-15));
        assert!(close(rm.var(), 2.0, 1e-15));
        assert!(close(rm.std(), 2.5f64.sqrt(), 1e-15));
        // merging from moments is the same thing
        let mut from = RunningMoments::new();
        from.update_from_moments(3.0, 2.0, 2.0 / 3.0);
        from.update_from_moments(2.0, 4.5, 0.25);
        assert!(close(from.mean(), 3.0, 1e-15) && close(from.var(), 2.0, 1e-15));
    }

    #[test]
    fn empty_and_single() {
        let mut rm = RunningMoments::new();
        assert_eq!((rm.mean(), rm.var(), rm.std()), (0.0, 0.0, 1.0));
        assert_eq!(rm.update(&[]), (0.0, 0.0));
        assert_eq!(rm.update(&[3.0]), (3.0, 0.0));
        assert_eq!((rm.count(), rm.mean(), rm.var(), rm.std()), (1.0, 3.0, 0.0, 1.0));
    }

    #[test]
    fn state_round_trips_through_json() {
        let mut rm = RunningMoments::new();
        rm.update(&[0.1, -0.7, 2.3]);
        let back: RunningMoments = serde_json::from_str(&serde_json::to_string(&rm).unwrap()).unwrap();
        assert_eq!(back, rm);
    }
}
