//! gae (several runs of response tokens per row) and masked_whiten (shift or keep the mean,
//! biased or unbiased variance): within 1e-5 absolute + 1e-5 relative.

use crate::{dl, parity, Outputs};
use rlhf::backend::ops::*;
use rlhf::data::rng::Rng;

pub const CHECKS: &[(&str, fn())] = &[("gae", advantage_parity), ("masked_whiten", advantage_parity)];

fn run<B: Backend>(be: &B, (b, t, shift, unbiased): (usize, usize, bool, bool)) -> Outputs {
    let mut rng = Rng::new(71);
    let n = b * t;
    let mask: Vec<f32> = (0..n).map(|i| if i % t < 2 || rng.below(7) == 0 { 0.0 } else { 1.0 }).collect();
    let m = be.upload(&mask).unwrap();
    let rewards = be.upload(&crate::common::randv(&mut rng, n, 1.0)).unwrap();
    let values = be.upload(&crate::common::randv(&mut rng, n, 1.0)).unwrap();
    let (mut adv, mut ret) = (be.alloc(n).unwrap(), be.alloc(n).unwrap());
    be.gae(&mut adv, &mut ret, &rewards, &values, &m, GaeParams::new(b, t, 0.99, 0.95)).unwrap();
    let advantages = dl(be, &adv);
    let mut stats = be.alloc(whiten_stat::LEN).unwrap();
    be.masked_whiten(&mut adv, &mut stats, &m, WhitenParams::new(n).shift_mean(shift).unbiased(unbiased)).unwrap();
    vec![("advantages", advantages), ("returns", dl(be, &ret)), ("whitened", dl(be, &adv)), ("stats", dl(be, &stats))]
}

#[test]
fn advantage_parity() {
    parity!(&[(1, 3, true, true), (8, 100, true, true), (33, 257, false, false), (300, 64, true, false)], (1e-5, 1e-5), run);
}
