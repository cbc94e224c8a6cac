//! kl_penalty_fwd/bwd (k1, k2, k3) and ppo_loss_fwd_bwd (token and sequence means, dual clip,
//! value clipping, entropy, KL in the loss, optional inputs absent): within 1e-5 absolute + 1e-4
//! relative (the stats are sums over blocks of 256 on CUDA, of 1024 or a sequence on the CPU).

use crate::{dl, parity, Outputs};
use rlhf::backend::ops::*;
use rlhf::data::rng::Rng;

pub const CHECKS: &[(&str, fn())] = &[("kl_penalty_fwd", kl_parity), ("kl_penalty_bwd", kl_parity), ("ppo_loss_fwd_bwd", ppo_parity)];

fn mask(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| if rng.below(4) == 0 { 0.0 } else { 1.0 }).collect()
}

fn run_kl<B: Backend>(be: &B, (n, est): (usize, u32)) -> Outputs {
    let mut rng = Rng::new(61);
    let logp = be.upload(&crate::common::randv(&mut rng, n, 0.3)).unwrap();
    let refl = be.upload(&crate::common::randv(&mut rng, n, 0.3)).unwrap();
    let m = be.upload(&mask(&mut rng, n)).unwrap();
    let p = KlParams { n: n as u32, estimator: est };
    let mut kl = be.alloc(n).unwrap();
    be.kl_penalty_fwd(&mut kl, &logp, &refl, &m, p).unwrap();
    let dkl = be.upload(&crate::common::randv(&mut rng, n, 1.0)).unwrap();
    let mut d = be.alloc(n).unwrap();
    be.kl_penalty_bwd(&mut d, &dkl, &logp, &refl, &m, p).unwrap();
    vec![("kl", dl(be, &kl)), ("dlogp", dl(be, &d))]
}

#[test]
fn kl_parity() {
    parity!(&[(1, 1), (1000, 1), (1000, 2), (70_000, 3)], (1e-6, 1e-5), run_kl);
}

fn run_ppo<B: Backend>(be: &B, (n, t, aggregation, full, dual): (usize, usize, u32, bool, f32)) -> Outputs {
    let mut rng = Rng::new(67 + n as u64);
    let mut r = |s| be.upload(&crate::common::randv(&mut rng, n, s)).unwrap();
    let (logp, old, adv) = (r(0.2), r(0.2), r(1.0));
    let (vals, old_vals, rets, ent, refl) = (r(1.0), r(1.0), r(1.0), r(1.0), r(0.2));
    let m = be.upload(&mask(&mut Rng::new(3), n)).unwrap();
    let mut p = PpoParams::new(n);
    p.t = t as u32;
    p.aggregation = aggregation;
    p.dual_clip = dual;
    p.ent_coef = 0.01;
    p.kl_coef = 0.05;
    let (mut dlogp, mut dv, mut de) = (be.alloc(n).unwrap(), be.alloc(n).unwrap(), be.alloc(n).unwrap());
    let mut stats = be.upload(&[0.5; ppo_stat::COUNT]).unwrap();
    if full {
        be.ppo_loss_fwd_bwd(
            &mut dlogp,
            Some(&mut dv),
            Some(&mut de),
            &mut stats,
            &logp,
            &old,
            &adv,
            &m,
            Some(&vals),
            Some(&old_vals),
            Some(&rets),
            Some(&ent),
            Some(&refl),
            p,
        )
        .unwrap();
    } else {
        be.ppo_loss_fwd_bwd(&mut dlogp, None, None, &mut stats, &logp, &old, &adv, &m, None, None, None, None, None, p).unwrap();
    }
    vec![("dlogp", dl(be, &dlogp)), ("dvalues", dl(be, &dv)), ("dentropy", dl(be, &de)), ("stats", dl(be, &stats))]
}

#[test]
fn ppo_parity() {
    let cases = [(1, 1, 0, true, 0.0), (1000, 1000, 0, true, 3.0), (1000, 50, 1, true, 0.0), (4096, 64, 1, false, 3.0), (5000, 5000, 0, false, 0.0)];
    parity!(&cases, (1e-5, 1e-4), run_ppo);
}
