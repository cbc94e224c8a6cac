//! preference_loss_fwd_bwd (sigmoid, cDPO, IPO, SimPO; 1 .. 300 pairs, more than the block's 256
//! threads): within 1e-6 absolute + 1e-5 relative (both sum in f64; the kernel's exp/log round
//! differently from Rust's); the correct-pair and pair counts are integers, so they match exactly.

use crate::{dl, parity, Outputs};
use rlhf::backend::ops::*;
use rlhf::data::rng::Rng;

pub const CHECKS: &[(&str, fn())] = &[("preference_loss_fwd_bwd", preference_parity)];

fn run<B: Backend>(be: &B, (pairs, t): (usize, usize)) -> Outputs {
    let mut rng = Rng::new(61 + pairs as u64);
    let n = 2 * pairs * t;
    let logp: Vec<f32> = (0..n).map(|_| -rng.next_f32() * 3.0 - 0.01).collect();
    let mask: Vec<f32> = (0..n).map(|i| ((i % t) > rng.below(2) as usize) as u8 as f32).collect();
    let refs: Vec<f32> = (0..2 * pairs).map(|_| -rng.next_f32() * 10.0).collect();
    let (logp, mask, refs) = (be.upload(&logp).unwrap(), be.upload(&mask).unwrap(), be.upload(&refs).unwrap());
    let mut out = Outputs::new();
    for (name, loss_type, norm, eps) in [
        ("sigmoid", preference_loss::SIGMOID, 0, 0.0),
        ("cdpo", preference_loss::SIGMOID, 0, 0.2),
        ("ipo", preference_loss::IPO, 1, 0.0),
        ("simpo", preference_loss::SIMPO, 1, 0.1),
    ] {
        let p = PreferenceParams { loss_type, length_norm: norm, label_smoothing: eps, simpo_gamma: 0.3, beta: 0.7, ..PreferenceParams::new(pairs, t) };
        let mut d = be.upload(&vec![7.0f32; n]).unwrap();
        let mut stats = be.upload(&[0.5, 1.0, 0.0, 0.0, -1.0, 2.0]).unwrap();
        be.preference_loss_fwd_bwd(&mut d, &mut stats, &logp, &mask, &refs, p).unwrap();
        out.push((name, dl(be, &d)));
        out.push(("stats", dl(be, &stats)));
    }
    out
}

#[test]
fn preference_parity() {
    parity!(&[(1usize, 4usize), (5, 17), (300, 9)], (1e-6, 1e-5), run);
}
