//! logprob_gather_fwd and logprob_gather_bwd (chunked vocabulary, temperature, rows without a
//! target): within 5e-5 absolute + 1e-4 relative (cuBLAS tiles, tree-reduced chunk statistics).

use crate::{dl, parity, Outputs};
use rlhf::backend::ops::*;
use rlhf::data::rng::Rng;

pub const CHECKS: &[(&str, &str)] = &[("logprob_gather_fwd", "logprob_gather_parity"), ("logprob_gather_bwd", "logprob_gather_parity")];

fn run<B: Backend>(be: &B, (n, c, v, chunk, temp): (usize, usize, usize, usize, f32)) -> Outputs {
    let mut rng = Rng::new(53);
    let h = be.upload(&crate::common::randv(&mut rng, n * c, 1.0)).unwrap();
    let w = be.upload(&crate::common::randv(&mut rng, v * c, 0.3)).unwrap();
    let targets: Vec<i32> = (0..n).map(|i| if i % 4 == 2 { -1 } else { rng.below(v as u64) as i32 }).collect();
    let targets = be.upload_ids(&targets).unwrap();
    let p = LogprobParams::new(n, c, v).chunk(chunk).temperature(temp);
    let (mut logp, mut ent, mut lse) = (be.alloc(n).unwrap(), be.alloc(n).unwrap(), be.alloc(n).unwrap());
    be.logprob_gather_fwd(&mut logp, &mut ent, &mut lse, &h, &targets, &w, p).unwrap();
    let dlogp = be.upload(&crate::common::randv(&mut rng, n, 1.0)).unwrap();
    let dent = be.upload(&crate::common::randv(&mut rng, n, 1.0)).unwrap();
    let mut dh = be.upload(&vec![4.0; n * c]).unwrap();
    let mut dw = be.upload(&crate::common::randv(&mut rng, v * c, 1.0)).unwrap();
    be.logprob_gather_bwd(&mut dh, &mut dw, &dlogp, &dent, &h, &targets, &lse, &ent, &w, p).unwrap();
    vec![("logp", dl(be, &logp)), ("entropy", dl(be, &ent)), ("lse", dl(be, &lse)), ("dh", dl(be, &dh)), ("dw", dl(be, &dw))]
}

#[test]
fn logprob_gather_parity() {
    parity!(&[(1, 4, 3, 4096, 1.0), (9, 32, 1000, 128, 0.7), (40, 64, 5003, 1024, 1.0), (70, 48, 300, 300, 1.5)], (5e-5, 1e-4), run);
}
