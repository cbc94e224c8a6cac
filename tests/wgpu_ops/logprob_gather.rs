//! logprob_gather_fwd / logprob_gather_bwd against the CPU backend: vocabularies that are not a
//! multiple of the chunk, chunks smaller than, equal to and larger than v, negative targets,
//! temperatures other than 1, nonzero dentropy, dw accumulating into a nonzero buffer, and rows in
//! two passes (n * chunk above the launcher's scratch bound).
//!
//! Tolerances: the logits are fp32 dot products of depth c summed in another order than the CPU's
//! gemm, and exp / log differ in the last bits: logp, entropy, lse within `4e-6 (1 + |cpu|)`
//! (the worst seen on lavapipe: a fifth of that). dh sums v products and dw n products (plus its
//! initial value) of the recomputed dlogits, terms up to ~10 in magnitude: within
//! `2e-6 sqrt(terms) + 3e-5 |cpu|` (the worst seen: a third of that).

use crate::{assert_close, both, cpu, gpu};
use rlhf::backend::ops::*;
use rlhf::data::rng::Rng;

pub const CHECKS: &[(&str, fn())] = &[("logprob_gather_fwd", logprob_gather_parity), ("logprob_gather_bwd", logprob_gather_parity)];

fn case(rng: &mut Rng, n: usize, c: usize, v: usize, chunk: usize, temp: f32, negatives: &[usize]) {
    let g = gpu().unwrap();
    let be = cpu();
    let tag = format!("n={n} c={c} v={v} chunk={chunk} T={temp}");
    let p = LogprobParams::new(n, c, v).temperature(temp).chunk(chunk);
    let h = crate::common::randv(rng, n * c, 1.0);
    let w = crate::common::randv(rng, v * c, 0.5);
    let mut targets: Vec<i32> = (0..n).map(|_| rng.below(v as u64) as i32).collect();
    targets[n / 2] = v as i32 - 1;
    for (k, &i) in negatives.iter().enumerate() {
        targets[i] = if k % 2 == 0 { -1 } else { -100 };
    }
    let (ch, gh) = both(g, &h);
    let (cw, gw) = both(g, &w);
    let ct = targets.clone();
    let gt = g.upload_ids(&targets).unwrap();

    // forward (outputs start nonzero: everything is overwritten)
    let junk = vec![9.0f32; n];
    let (mut c_lp, mut g_lp) = both(g, &junk);
    let (mut c_ent, mut g_ent) = both(g, &junk);
    let (mut c_lse, mut g_lse) = both(g, &junk);
    be.logprob_gather_fwd(&mut c_lp, &mut c_ent, &mut c_lse, &ch, &ct, &cw, p).unwrap();
    g.logprob_gather_fwd(&mut g_lp, &mut g_ent, &mut g_lse, &gh, &gt, &gw, p).unwrap();
    let (lp, ent, lse) = (g.download(&g_lp).unwrap(), g.download(&g_ent).unwrap(), g.download(&g_lse).unwrap());
    assert_close(&format!("logp {tag}"), &lp, &c_lp, 4e-6, 4e-6);
    assert_close(&format!("entropy {tag}"), &ent, &c_ent, 4e-6, 4e-6);
    assert_close(&format!("lse {tag}"), &lse, &c_lse, 4e-6, 4e-6);
    for &i in negatives {
        assert_eq!((lp[i], ent[i], lse[i]), (0.0, 0.0, 0.0), "{tag}: row {i} with a negative target has outputs");
    }

    // backward from the CPU's saved lse / entropy, with nonzero dentropy; dh starts nonzero
    // (overwritten), dw nonzero (accumulated)
    let dlogp = crate::common::randv(rng, n, 1.0);
    let dent = crate::common::randv(rng, n, 1.0);
    let (c_dlp, g_dlp) = both(g, &dlogp);
    let (c_dent, g_dent) = both(g, &dent);
    let (c_lse2, g_lse2) = both(g, &c_lse);
    let (c_ent2, g_ent2) = both(g, &c_ent);
    let (mut c_dh, mut g_dh) = both(g, &vec![5.0f32; n * c]);
    let dw0: Vec<f32> = crate::common::randv(rng, v * c, 1.0);
    let (mut c_dw, mut g_dw) = both(g, &dw0);
    be.logprob_gather_bwd(&mut c_dh, &mut c_dw, &c_dlp, &c_dent, &ch, &ct, &c_lse2, &c_ent2, &cw, p).unwrap();
    g.logprob_gather_bwd(&mut g_dh, &mut g_dw, &g_dlp, &g_dent, &gh, &gt, &g_lse2, &g_ent2, &gw, p).unwrap();
    let dh = g.download(&g_dh).unwrap();
    assert_close(&format!("dh {tag}"), &dh, &c_dh, 2e-6 * (v as f32).sqrt(), 3e-5);
    assert_close(&format!("dw {tag}"), &g.download(&g_dw).unwrap(), &c_dw, 2e-6 * (n as f32).sqrt(), 3e-5);
    for &i in negatives {
        assert!(dh[i * c..(i + 1) * c].iter().all(|&x| x == 0.0), "{tag}: row {i} with a negative target has a gradient");
    }
}

#[test]
fn logprob_gather_parity() {
    let Some(g) = gpu() else { return };
    let mut rng = Rng::new(31);
    // v not a multiple of the chunk, chunk < v
    case(&mut rng, 37, 48, 1000, 256, 0.7, &[3, 36]);
    // chunk >= v (one chunk), chunk == v, many small chunks
    case(&mut rng, 37, 48, 1000, 4096, 1.0, &[0]);
    case(&mut rng, 20, 33, 300, 300, 1.6, &[5, 6, 7]);
    case(&mut rng, 9, 20, 101, 7, 0.9, &[]);
    // rows in two passes of 1024 (1100 * 4096 logits exceed the launcher's 2^22-float scratch),
    // two chunks
    case(&mut rng, 1100, 16, 5000, 4096, 0.8, &[0, 1023, 1024, 1099]);
    // a single row with a negative target (nothing to do but write zeros)
    case(&mut rng, 1, 8, 50, 16, 1.0, &[0]);

    // bad parameters are errors, not panics
    let (n, c, v) = (4, 8, 10);
    let h = g.upload(&vec![0.0; n * c]).unwrap();
    let w = g.upload(&vec![0.0; v * c]).unwrap();
    let t = g.upload_ids(&[0, 1, 2, 3]).unwrap();
    let mut out = g.alloc(n).unwrap();
    let (mut o2, mut o3) = (g.alloc(n).unwrap(), g.alloc(n).unwrap());
    assert!(g.logprob_gather_fwd(&mut out, &mut o2, &mut o3, &h, &t, &w, LogprobParams::new(n, c, v).temperature(0.0)).is_err());
    assert!(g.logprob_gather_fwd(&mut out, &mut o2, &mut o3, &h, &t, &w, LogprobParams::new(n, c, v).chunk(0)).is_err());
    assert!(g.logprob_gather_fwd(&mut out, &mut o2, &mut o3, &h, &t, &w, LogprobParams::new(n, c, v + 1)).is_err());
}
