//! sum_squares (accumulating over two tensors) and adamw with clipping active, inactive and off:
//! within 1e-6 absolute + 1e-5 relative; a NaN or infinite squared norm leaves param, m and v as
//! they were (asserted bit for bit on each backend).

use crate::{dl, parity, Outputs};
use rlhf::backend::ops::*;
use rlhf::data::rng::Rng;

pub const CHECKS: &[(&str, &str)] = &[("sum_squares", "optimizer_parity"), ("adamw", "optimizer_parity")];

fn run<B: Backend>(be: &B, (n, max_grad_norm, bad_norm): (usize, f32, bool)) -> Outputs {
    let mut rng = Rng::new(73);
    let p = ElementwiseParams::new(n);
    let g = be.upload(&crate::common::randv(&mut rng, n, 0.1)).unwrap();
    let g2 = be.upload(&crate::common::randv(&mut rng, 777, 0.1)).unwrap();
    let mut acc = be.upload(&[0.25]).unwrap();
    be.sum_squares(&mut acc, &g, p).unwrap();
    be.sum_squares(&mut acc, &g2, ElementwiseParams::new(777)).unwrap();
    let norm = dl(be, &acc);
    if bad_norm {
        acc = be.upload(&[if n % 2 == 0 { f32::NAN } else { f32::INFINITY }]).unwrap();
    }
    let w0 = crate::common::randv(&mut rng, n, 1.0);
    let m0 = crate::common::randv(&mut rng, n, 0.01);
    let v0: Vec<f32> = crate::common::randv(&mut rng, n, 0.01).iter().map(|x| x.abs()).collect();
    let (mut w, mut m, mut v) = (be.upload(&w0).unwrap(), be.upload(&m0).unwrap(), be.upload(&v0).unwrap());
    let ap = crate::common::adamw_params(n, 3, max_grad_norm);
    be.adamw(&mut w, &mut m, &mut v, &g, &acc, ap).unwrap();
    if bad_norm {
        // exactly, on either backend
        let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        for (name, before, after) in [("param", &w0, &w), ("m", &m0, &m), ("v", &v0, &v)] {
            assert_eq!(bits(&dl(be, after)), bits(before), "n={n}: {name} changed although the squared norm is not finite");
        }
    }
    vec![("norm_sq", norm), ("grad (unchanged)", dl(be, &g)), ("param", dl(be, &w)), ("m", dl(be, &m)), ("v", dl(be, &v))]
}

/// Cases `(n, max_grad_norm, non-finite norm)`: clipping active (0.5, 1.0 under norms of ~10 to
/// ~140), inactive (1000), off (0), and skipped on NaN (even n) or +inf (odd n).
#[test]
fn optimizer_parity() {
    let cases =
        [(1, 1.0, false), (1001, 0.5, false), (300_001, 1000.0, false), (2_000_003, 1.0, false), (4099, 0.0, false), (4098, 1.0, true), (4099, 0.0, true)];
    parity!(&cases, (1e-6, 1e-5), run);
}
