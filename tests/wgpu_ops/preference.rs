//! preference_loss_fwd_bwd against the CPU backend, for every loss type.
//!
//! Tolerances: dlogp `|gpu - cpu| <= 1e-6 + 1e-4 |cpu|` and stats `1e-4 + 1e-4 |cpu|` (the shader
//! sums each row and the stats in f32, the CPU in f64; exp and log round differently), exact for
//! the correct-pair and pair counts.

use crate::{assert_close, both, cpu, gpu};
use rlhf::backend::ops::*;
use rlhf::data::rng::Rng;
use std::time::Instant;

pub const CHECKS: &[(&str, fn())] = &[("preference_loss_fwd_bwd", preference_loss_parity)];

#[test]
fn preference_loss_parity() {
    let Some(g) = gpu() else { return };
    let c = cpu();
    let t0 = Instant::now();
    let mut rng = Rng::new(61);
    // more pairs than the workgroup's 256 invocations in the last case
    for &(pairs, t) in &[(1usize, 4usize), (5, 17), (300, 9)] {
        let n = 2 * pairs * t;
        let logp: Vec<f32> = (0..n).map(|_| -rng.next_f32() * 3.0 - 0.01).collect();
        let mask: Vec<f32> = (0..n).map(|i| ((i % t) > rng.below(2) as usize) as u8 as f32).collect();
        let refs: Vec<f32> = (0..2 * pairs).map(|_| -rng.next_f32() * 10.0).collect();
        for (loss_type, norm, eps) in
            [(preference_loss::SIGMOID, 0, 0.0), (preference_loss::SIGMOID, 0, 0.2), (preference_loss::IPO, 1, 0.0), (preference_loss::SIMPO, 1, 0.1)]
        {
            let p = PreferenceParams { loss_type, length_norm: norm, label_smoothing: eps, simpo_gamma: 0.3, beta: 0.7, ..PreferenceParams::new(pairs, t) };
            let stats0 = vec![0.5f32, 1.0, 0.0, 0.0, -1.0, 2.0];
            let (mut cd, mut cs) = (vec![7.0f32; n], stats0.clone());
            c.preference_loss_fwd_bwd(&mut cd, &mut cs, &logp, &mask, &refs, p).unwrap();
            let (mut gd, mut gs) = (g.upload(&vec![7.0f32; n]).unwrap(), g.upload(&stats0).unwrap());
            let ((_, gl), (_, gm), (_, gr)) = (both(g, &logp), both(g, &mask), both(g, &refs));
            g.preference_loss_fwd_bwd(&mut gd, &mut gs, &gl, &gm, &gr, p).unwrap();
            let what = format!("preference_loss {} pairs x {t}, type {loss_type}, eps {eps}", pairs);
            assert_close(&format!("{what}: dlogp"), &g.download(&gd).unwrap(), &cd, 1e-6, 1e-4);
            let got = g.download(&gs).unwrap();
            assert_close(&format!("{what}: loss, rewards, margin"), &[got[0], got[2], got[3], got[4]], &[cs[0], cs[2], cs[3], cs[4]], 1e-4, 1e-4);
            assert_close(&format!("{what}: correct, pairs"), &[got[1], got[5]], &[cs[1], cs[5]], 0.0, 0.0);
        }
    }
    // host-visible errors: buffers too short, bad params
    let (mut d, mut s) = (g.upload(&[0.0; 8]).unwrap(), g.upload(&[0.0; 6]).unwrap());
    let x = g.upload(&[0.0; 8]).unwrap();
    assert!(g.preference_loss_fwd_bwd(&mut d, &mut s, &x, &x, &x, PreferenceParams::new(3, 2)).is_err());
    assert!(g.preference_loss_fwd_bwd(&mut d, &mut s, &x, &x, &x, PreferenceParams { beta: 0.0, ..PreferenceParams::new(2, 2) }).is_err());
    eprintln!("preference_loss_parity: {:.2} s", t0.elapsed().as_secs_f64());
}
