//! embedding_fwd (overwrite and accumulate): exact; embedding_bwd: the same token order on both
//! backends (a fixed order per column on CUDA), within 1e-6 + 1e-6 relative.

use crate::{dl, parity, Outputs};
use rlhf::backend::ops::*;
use rlhf::data::rng::Rng;

pub const CHECKS: &[(&str, &str)] = &[("embedding_fwd", "embedding_parity"), ("embedding_bwd", "embedding_parity")];

fn run<B: Backend>(be: &B, (n, c, vocab): (usize, usize, usize)) -> Outputs {
    let mut rng = Rng::new(11);
    let ids: Vec<i32> = (0..n).map(|_| rng.below(vocab as u64) as i32).collect();
    let ids = be.upload_ids(&ids).unwrap();
    let table = be.upload(&crate::common::randv(&mut rng, vocab * c, 1.0)).unwrap();
    let mut out = be.upload(&crate::common::randv(&mut rng, n * c, 1.0)).unwrap();
    let mut p = EmbeddingParams { n: n as u32, c: c as u32, accumulate: 1, vocab: vocab as u32 };
    be.embedding_fwd(&mut out, &ids, &table, p).unwrap();
    let acc = dl(be, &out);
    p.accumulate = 0;
    be.embedding_fwd(&mut out, &ids, &table, p).unwrap();
    let over = dl(be, &out);
    let dout = be.upload(&crate::common::randv(&mut rng, n * c, 1.0)).unwrap();
    let mut dtable = be.upload(&crate::common::randv(&mut rng, vocab * c, 1.0)).unwrap();
    be.embedding_bwd(&mut dtable, &dout, &ids, p).unwrap();
    vec![("fwd accumulate", acc), ("fwd", over), ("bwd", dl(be, &dtable))]
}

#[test]
fn embedding_parity() {
    parity!(&[(1, 8, 3), (37, 48, 11), (300, 257, 50)], (1e-6, 1e-6), run);
}
