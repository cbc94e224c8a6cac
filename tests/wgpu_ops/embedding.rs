//! embedding_fwd (overwrite and accumulate) and embedding_bwd (duplicate ids) against the CPU
//! backend. Exact (tolerance 0): the forward copies or adds one value per element, and the
//! backward adds the rows of each id in token order, the same additions in the same order as
//! the CPU.

use crate::{assert_close, both, cpu, gpu};
use rlhf::backend::ops::*;
use rlhf::backend::wgpu::embedding::CHAIN_MAX_N;
use rlhf::data::rng::Rng;

pub const CHECKS: &[(&str, fn())] = &[("embedding_fwd", embedding_parity), ("embedding_bwd", embedding_parity)];

#[test]
fn embedding_parity() {
    let Some(g) = gpu() else { return };
    let c = cpu();
    let mut rng = Rng::new(31);
    // (tokens, channels, vocabulary): small vocabularies give many duplicate ids; vocab < 64
    // and > 64 id classes; c = 1, odd, and past one workgroup of columns; the backward's chain
    // path (n <= CHAIN_MAX_N) and its id-class path (n = CHAIN_MAX_N + 1)
    let big = CHAIN_MAX_N as usize + 1;
    for &(n, ch, vocab) in &[(1, 1, 1), (7, 7, 5), (300, 64, 50), (2000, 64, 300), (257, 768, 97), (100, 1000, 3), (600, 3, 70000), (big, 3, 5)] {
        let what = |s: &str| format!("{s} n={n} c={ch} vocab={vocab}");
        let ids: Vec<i32> = (0..n).map(|_| rng.below(vocab as u64) as i32).collect();
        let gids = g.upload_ids(&ids).unwrap();
        let (ct, gt) = both(g, &crate::common::randv(&mut rng, vocab * ch, 1.0));
        let (mut co, mut go) = both(g, &crate::common::randv(&mut rng, n * ch, 1.0));
        for accumulate in [0, 1] {
            let p = EmbeddingParams { n: n as u32, c: ch as u32, accumulate, vocab: vocab as u32 };
            c.embedding_fwd(&mut co, &ids, &ct, p).unwrap();
            g.embedding_fwd(&mut go, &gids, &gt, p).unwrap();
            assert_close(&what(&format!("embedding_fwd accumulate={accumulate}")), &g.download(&go).unwrap(), &co, 0.0, 0.0);
        }
        let p = EmbeddingParams { n: n as u32, c: ch as u32, accumulate: 0, vocab: vocab as u32 };
        let (cdo, gdo) = both(g, &crate::common::randv(&mut rng, n * ch, 1.0));
        let (mut cdt, mut gdt) = both(g, &crate::common::randv(&mut rng, vocab * ch, 1.0));
        for _ in 0..2 {
            c.embedding_bwd(&mut cdt, &cdo, &ids, p).unwrap();
            g.embedding_bwd(&mut gdt, &gdo, &gids, p).unwrap();
        }
        assert_close(&what("embedding_bwd (accumulated twice)"), &g.download(&gdt).unwrap(), &cdt, 0.0, 0.0);
    }

    // ids outside the vocabulary (an error on the CPU) read and write nothing out of bounds on
    // the GPU: zero rows forward, dropped gradients backward
    let (n, ch, vocab) = (4, 3, 2);
    let ids = g.upload_ids(&[1, -1, 2, 0]).unwrap();
    let table = g.upload(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
    let p = EmbeddingParams { n, c: ch, accumulate: 0, vocab };
    let mut out = g.upload(&[9.0; 12]).unwrap();
    g.embedding_fwd(&mut out, &ids, &table, p).unwrap();
    assert_eq!(g.download(&out).unwrap(), vec![4.0, 5.0, 6.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 2.0, 3.0]);
    let dout = g.upload(&[1.0; 12]).unwrap();
    let mut dtable = g.upload(&[0.0; 6]).unwrap();
    g.embedding_bwd(&mut dtable, &dout, &ids, p).unwrap();
    assert_eq!(g.download(&dtable).unwrap(), vec![1.0; 6]);
    // shapes are checked on the host
    assert!(g.embedding_fwd(&mut out, &ids, &table, EmbeddingParams { vocab: 3, ..p }).is_err());
}
