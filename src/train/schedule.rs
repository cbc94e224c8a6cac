//! Learning rate: linear warm-up from 0 to `lr` over `warmup` steps, then cosine decay to
//! `min_lr_ratio * lr` at `total` steps. Steps count from 1.

#[derive(Clone, Copy, Debug)]
pub struct LrSchedule {
    pub lr: f32,
    pub warmup: usize,
    pub total: usize,
    pub min_lr_ratio: f32,
}

impl LrSchedule {
    pub fn at(&self, step: usize) -> f32 {
        if self.warmup > 0 && step <= self.warmup {
            return self.lr * step as f32 / self.warmup as f32;
        }
        let decay_steps = self.total.saturating_sub(self.warmup).max(1);
        let progress = ((step - self.warmup.min(step)) as f32 / decay_steps as f32).min(1.0);
        let cosine = 0.5 * (1.0 + (std::f32::consts::PI * progress).cos());
        let min = self.lr * self.min_lr_ratio;
        min + (self.lr - min) * cosine
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_cosine() {
        let s = LrSchedule { lr: 1.0, warmup: 10, total: 110, min_lr_ratio: 0.1 };
        assert!((s.at(1) - 0.1).abs() < 1e-6);
        assert!((s.at(10) - 1.0).abs() < 1e-6);
        assert!((s.at(60) - 0.55).abs() < 1e-5); // half way: min + (1 - min) / 2
        assert!((s.at(110) - 0.1).abs() < 1e-6);
        assert!(s.at(30) > s.at(31));
        let flat = LrSchedule { lr: 0.5, warmup: 0, total: 1, min_lr_ratio: 1.0 };
        assert!((flat.at(1) - 0.5).abs() < 1e-6);
    }
}
