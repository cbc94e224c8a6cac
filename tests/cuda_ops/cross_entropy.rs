//! cross_entropy_fwd and cross_entropy_bwd (rows without a target included): within 2e-5 absolute
//! + 2e-5 relative.

use crate::{dl, parity, Outputs};
use rlhf::backend::ops::*;
use rlhf::data::rng::Rng;

pub const CHECKS: &[(&str, &str)] = &[("cross_entropy_fwd", "cross_entropy_parity"), ("cross_entropy_bwd", "cross_entropy_parity")];

fn run<B: Backend>(be: &B, (n, v): (usize, usize)) -> Outputs {
    let mut rng = Rng::new(29);
    let p = CrossEntropyParams { n: n as u32, v: v as u32 };
    let logits = be.upload(&crate::common::randv(&mut rng, n * v, 3.0)).unwrap();
    let targets: Vec<i32> = (0..n).map(|i| if i % 5 == 3 { -1 } else { rng.below(v as u64) as i32 }).collect();
    let targets = be.upload_ids(&targets).unwrap();
    let (mut losses, mut lse) = (be.alloc(n).unwrap(), be.alloc(n).unwrap());
    be.cross_entropy_fwd(&mut losses, &mut lse, &logits, &targets, p).unwrap();
    let dl_in = be.upload(&crate::common::randv(&mut rng, n, 1.0)).unwrap();
    let mut dlogits = be.upload(&vec![3.0; n * v]).unwrap();
    be.cross_entropy_bwd(&mut dlogits, &dl_in, &logits, &lse, &targets, p).unwrap();
    vec![("losses", dl(be, &losses)), ("lse", dl(be, &lse)), ("dlogits", dl(be, &dlogits))]
}

#[test]
fn cross_entropy_parity() {
    parity!(&[(1, 1), (6, 37), (33, 5000), (4, 50257)], (2e-5, 2e-5), run);
}
