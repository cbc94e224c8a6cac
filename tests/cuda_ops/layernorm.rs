//! LayerNorm and RMSNorm forward and backward: within 2e-5 absolute + 2e-5 relative (f32 tree
//! reductions on the GPU, f64 on the CPU; parameter gradients summed over rows in another order).

use crate::{dl, parity, Outputs};
use rlhf::backend::ops::*;
use rlhf::data::rng::Rng;

pub const CHECKS: &[(&str, &str)] =
    &[("layernorm_fwd", "norm_parity"), ("layernorm_bwd", "norm_parity"), ("rmsnorm_fwd", "norm_parity"), ("rmsnorm_bwd", "norm_parity")];

fn run<B: Backend>(be: &B, (n, c): (usize, usize)) -> Outputs {
    let mut rng = Rng::new(5 + c as u64);
    let r = |rng: &mut Rng, len, s| be.upload(&crate::common::randv(rng, len, s)).unwrap();
    let p = NormParams { n: n as u32, c: c as u32, eps: 1e-5, _pad: 0 };
    let x = be.upload(&crate::common::randv(&mut rng, n * c, 2.0).iter().map(|v| v + 0.5).collect::<Vec<_>>()).unwrap();
    let (w, b, dy) = (r(&mut rng, c, 1.0), r(&mut rng, c, 1.0), r(&mut rng, n * c, 1.0));
    let (mut out, mut mean, mut rstd) = (be.alloc(n * c).unwrap(), be.alloc(n).unwrap(), be.alloc(n).unwrap());
    be.layernorm_fwd(&mut out, &mut mean, &mut rstd, &x, &w, &b, p).unwrap();
    let (ln_out, ln_mean, ln_rstd) = (dl(be, &out), dl(be, &mean), dl(be, &rstd));
    let (mut dx, mut dw, mut db) = (be.alloc(n * c).unwrap(), r(&mut rng, c, 1.0), r(&mut rng, c, 1.0));
    be.layernorm_bwd(&mut dx, &mut dw, &mut db, &dy, &x, &mean, &rstd, &w, p).unwrap();
    let (ln_dx, ln_dw, ln_db) = (dl(be, &dx), dl(be, &dw), dl(be, &db));
    be.rmsnorm_fwd(&mut out, &mut rstd, &x, &w, p).unwrap();
    let (rms_out, rms_rstd) = (dl(be, &out), dl(be, &rstd));
    be.rmsnorm_bwd(&mut dx, &mut dw, &dy, &x, &rstd, &w, p).unwrap();
    vec![
        ("ln out", ln_out),
        ("ln mean", ln_mean),
        ("ln rstd", ln_rstd),
        ("ln dx", ln_dx),
        ("ln dw", ln_dw),
        ("ln db", ln_db),
        ("rms out", rms_out),
        ("rms rstd", rms_rstd),
        ("rms dx", dl(be, &dx)),
        ("rms dw", dl(be, &dw)),
    ]
}

#[test]
fn norm_parity() {
    parity!(&[(1, 1), (3, 7), (64, 768), (130, 1000), (9, 4096)], (2e-5, 2e-5), run);
}
