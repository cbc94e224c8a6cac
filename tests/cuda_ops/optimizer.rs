//! sum_squares (accumulating over two tensors), clip_grad (clipping and not), adamw: within 1e-6
//! absolute + 1e-5 relative.

use crate::{dl, parity, Outputs};
use rlhf::backend::ops::*;
use rlhf::data::rng::Rng;

pub const CHECKS: &[(&str, &str)] = &[("sum_squares", "optimizer_parity"), ("clip_grad", "optimizer_parity"), ("adamw", "optimizer_parity")];

fn run<B: Backend>(be: &B, (n, max_norm): (usize, f32)) -> Outputs {
    let mut rng = Rng::new(73);
    let p = ElementwiseParams::new(n);
    let mut g = be.upload(&crate::common::randv(&mut rng, n, 0.1)).unwrap();
    let g2 = be.upload(&crate::common::randv(&mut rng, 777, 0.1)).unwrap();
    let mut acc = be.upload(&[0.25]).unwrap();
    be.sum_squares(&mut acc, &g, p).unwrap();
    be.sum_squares(&mut acc, &g2, ElementwiseParams::new(777)).unwrap();
    let norm = dl(be, &acc);
    be.clip_grad(&mut g, &acc, ClipParams { n: n as u32, max_norm }).unwrap();
    let clipped = dl(be, &g);
    let mut w = be.upload(&crate::common::randv(&mut rng, n, 1.0)).unwrap();
    let mut m = be.upload(&crate::common::randv(&mut rng, n, 0.01)).unwrap();
    let mut v = be.upload(&crate::common::randv(&mut rng, n, 0.01).iter().map(|x| x.abs()).collect::<Vec<_>>()).unwrap();
    let ap = AdamWParams { n: n as u32, lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.1, bias_correction1: 0.19, bias_correction2: 0.002 };
    be.adamw(&mut w, &mut m, &mut v, &g, ap).unwrap();
    vec![("norm_sq", norm), ("clipped", clipped), ("param", dl(be, &w)), ("m", dl(be, &m)), ("v", dl(be, &v))]
}

#[test]
fn optimizer_parity() {
    parity!(&[(1, 1.0), (1001, 0.5), (300_001, 1000.0), (2_000_003, 1.0)], (1e-6, 1e-5), run);
}
