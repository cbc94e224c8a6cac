//! ranking_loss against the CPU backend.
//!
//! Tolerances: dscores `|gpu - cpu| <= 1e-7 + 1e-5 |cpu|` (each group's gradient is built in the
//! CPU's order; only exp and the division round differently); stats `1e-5 + 1e-5 |cpu|` for the
//! loss and the sum of score gaps (f32 per group and a workgroup tree, against the CPU's f64),
//! exact for the pair counts.

use crate::{assert_close, cpu, gpu};
use rlhf::backend::ops::*;
use rlhf::data::rng::Rng;
use std::time::Instant;

pub const CHECKS: &[(&str, fn())] = &[("ranking_loss", ranking_loss_parity)];

#[test]
fn ranking_loss_parity() {
    let Some(g) = gpu() else { return };
    let c = cpu();
    let t0 = Instant::now();
    let mut rng = Rng::new(51);
    // more groups than the workgroup's 256 invocations (each takes several), K = 2..4, a head
    // before the first group (zeroed) and a tail after the last (untouched)
    for &(n_groups, head) in &[(1usize, 0usize), (7, 3), (300, 5), (1000, 0)] {
        let mut starts = vec![head as i32];
        for _ in 0..n_groups {
            let k = 2 + rng.below(3) as i32;
            starts.push(starts.last().unwrap() + k);
        }
        let end = *starts.last().unwrap() as usize;
        let len = end + 4;
        let scores: Vec<f32> = (0..len).map(|_| rng.normal() * 2.0).collect();
        let margins: Vec<f32> = (0..n_groups).map(|i| if i % 3 == 0 { 0.0 } else { rng.next_f32() }).collect();
        let p = RankingParams { n_groups: n_groups as u32, scale: 1.0 / n_groups as f32 };
        let stats0 = vec![0.5f32, 3.0, 7.0, -1.25];
        let mut cd: Vec<f32> = (0..len).map(|i| i as f32 + 0.5).collect();
        let mut cs = stats0.clone();
        c.ranking_loss(&mut cd, &mut cs, &scores, &starts, &margins, p).unwrap();
        let mut gd = g.upload(&(0..len).map(|i| i as f32 + 0.5).collect::<Vec<_>>()).unwrap();
        let mut gs = g.upload(&stats0).unwrap();
        let (gsc, gst, gm) = (g.upload(&scores).unwrap(), g.upload_ids(&starts).unwrap(), g.upload(&margins).unwrap());
        g.ranking_loss(&mut gd, &mut gs, &gsc, &gst, &gm, p).unwrap();
        let what = format!("ranking_loss {n_groups} groups");
        assert_close(&format!("{what}: dscores"), &g.download(&gd).unwrap(), &cd, 1e-7, 1e-5);
        let got = g.download(&gs).unwrap();
        assert_close(&format!("{what}: loss"), &got[0..1], &cs[0..1], 1e-5, 1e-5);
        assert_close(&format!("{what}: correct, pairs"), &got[1..3], &cs[1..3], 0.0, 0.0);
        assert_close(&format!("{what}: gap sum"), &got[3..4], &cs[3..4], 1e-5, 1e-5);
    }
    // starts lives on the device: a malformed group (1 score) is skipped and poisons the loss
    let scores = g.upload(&[1.0, 0.0, 2.0, 1.0, 0.5]).unwrap();
    let starts = g.upload_ids(&[0, 2, 3, 5]).unwrap();
    let margins = g.upload(&[0.0; 3]).unwrap();
    let (mut d, mut s) = (g.upload(&[0.0; 5]).unwrap(), g.upload(&[0.0; 4]).unwrap());
    g.ranking_loss(&mut d, &mut s, &scores, &starts, &margins, RankingParams { n_groups: 3, scale: 1.0 }).unwrap();
    assert!(g.download(&s).unwrap()[0].is_nan(), "a malformed group must show as a NaN loss");
    // host-visible shape errors
    assert!(g.ranking_loss(&mut d, &mut s, &scores, &starts, &margins, RankingParams { n_groups: 4, scale: 1.0 }).is_err());
    eprintln!("ranking_loss_parity: {:.2} s", t0.elapsed().as_secs_f64());
}
