//! ranking_loss (groups of 2 .. 5 completions, margins, accumulated stats): within 1e-6 absolute
//! + 1e-5 relative.

use crate::{dl, parity, Outputs};
use rlhf::backend::ops::*;
use rlhf::data::rng::Rng;

pub const CHECKS: &[(&str, fn())] = &[("ranking_loss", ranking_parity)];

fn run<B: Backend>(be: &B, groups: usize) -> Outputs {
    let mut rng = Rng::new(79);
    let mut starts = vec![0i32];
    for _ in 0..groups {
        let k = 2 + rng.below(4) as i32;
        starts.push(starts.last().unwrap() + k);
    }
    let total = *starts.last().unwrap() as usize;
    let scores = be.upload(&crate::common::randv(&mut rng, total, 1.0)).unwrap();
    let margins = be.upload(&crate::common::randv(&mut rng, groups, 0.2)).unwrap();
    let starts = be.upload_ids(&starts).unwrap();
    let mut d = be.upload(&vec![9.0; total]).unwrap();
    let mut stats = be.upload(&[1.0, 2.0, 3.0, 4.0]).unwrap();
    be.ranking_loss(&mut d, &mut stats, &scores, &starts, &margins, RankingParams { n_groups: groups as u32, scale: 1.0 / groups as f32 }).unwrap();
    vec![("dscores", dl(be, &d)), ("stats", dl(be, &stats))]
}

#[test]
fn ranking_parity() {
    parity!(&[1usize, 7, 600], (1e-6, 1e-5), run);
}
