//! Bradley-Terry ratings on the Elo scale. Player `i` has strength `p_i`; `P(i beats j) = p_i /
//! (p_i + p_j)`, i.e. `1 / (1 + 10^((R_j - R_i) / 400))` with `R_i = 400 log10 p_i + 1000` (the
//! players' mean rating is 1000). A tie counts half a win to each side. The maximum-likelihood
//! strengths are found with the minorise-maximise iteration of Hunter (2004):
//! `p_i <- W_i / sum_j n_ij / (p_i + p_j)` (`W_i` i's wins, `n_ij` games between i and j), which
//! increases the likelihood at every step. A player that won (or lost) every game has no finite
//! maximum; `prior` adds that many virtual games, half won, against a virtual player of strength
//! 1 (the geometric mean), which keeps every rating finite and moves well-measured ones by little.
//!
//! Confidence intervals: the games are resampled with replacement `bootstrap` times (seeded), the
//! ratings refitted, and the 2.5% and 97.5% percentiles of each player's rating reported.

use crate::data::rng::Rng;
use crate::rating::outcomes::Game;

/// Virtual games per player against the average (see the module comment).
pub const PRIOR_GAMES: f64 = 1.0;

/// The maximum-likelihood ratings of `n` players from `games` (mean rating 1000).
pub fn fit(n: usize, games: &[Game], prior: f64) -> Vec<f64> {
    let mut wins = vec![prior / 2.0; n];
    let mut pair_games = vec![0.0f64; n * n];
    for g in games {
        wins[g.a] += g.score;
        wins[g.b] += 1.0 - g.score;
        pair_games[g.a * n + g.b] += 1.0;
        pair_games[g.b * n + g.a] += 1.0;
    }
    let mut p = vec![1.0f64; n];
    for _ in 0..10_000 {
        let mut next = vec![0.0; n];
        for i in 0..n {
            let mut denom = prior / (p[i] + 1.0);
            for j in 0..n {
                let nij = pair_games[i * n + j];
                if nij > 0.0 {
                    denom += nij / (p[i] + p[j]);
                }
            }
            next[i] = if denom > 0.0 { (wins[i] / denom).max(1e-300) } else { 1.0 };
        }
        // the geometric mean stays 1 (ratings average 1000)
        let log_mean = next.iter().map(|x| x.ln()).sum::<f64>() / n as f64;
        next.iter_mut().for_each(|x| *x = (x.ln() - log_mean).exp());
        let change = next.iter().zip(&p).map(|(a, b)| (a.ln() - b.ln()).abs()).fold(0.0, f64::max);
        p = next;
        if change < 1e-10 {
            break;
        }
    }
    p.iter().map(|x| 1000.0 + 400.0 * x.log10()).collect()
}

/// Each player's 2.5% and 97.5% rating percentiles over `rounds` refits on resampled games.
pub fn bootstrap(n: usize, games: &[Game], prior: f64, rounds: usize, seed: u64) -> Vec<(f64, f64)> {
    let mut rng = Rng::new(seed);
    let mut samples: Vec<Vec<f64>> = vec![Vec::with_capacity(rounds); n];
    let mut resampled = Vec::with_capacity(games.len());
    for _ in 0..rounds {
        resampled.clear();
        resampled.extend((0..games.len()).map(|_| games[rng.below(games.len() as u64) as usize]));
        for (i, r) in fit(n, &resampled, prior).into_iter().enumerate() {
            samples[i].push(r);
        }
    }
    samples
        .into_iter()
        .map(|mut s| {
            if s.is_empty() {
                return (f64::NAN, f64::NAN);
            }
            s.sort_by(f64::total_cmp);
            let at = |q: f64| s[((q * (s.len() - 1) as f64).round() as usize).min(s.len() - 1)];
            (at(0.025), at(0.975))
        })
        .collect()
}

/// `(score, games)` of row player against column player: the row's mean result (ties half).
pub fn win_matrix(n: usize, games: &[Game]) -> Vec<Vec<(f64, usize)>> {
    let mut m = vec![vec![(0.0, 0usize); n]; n];
    for g in games {
        m[g.a][g.b].0 += g.score;
        m[g.a][g.b].1 += 1;
        m[g.b][g.a].0 += 1.0 - g.score;
        m[g.b][g.a].1 += 1;
    }
    for row in m.iter_mut() {
        for cell in row.iter_mut() {
            if cell.1 > 0 {
                cell.0 /= cell.1 as f64;
            }
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_players_match_the_closed_form() {
        // 3 wins in 4 games: p_a / p_b = 3, a rating gap of 400 log10 3
        let g = |score| Game { a: 0, b: 1, score };
        let r = fit(2, &[g(1.0), g(1.0), g(1.0), g(0.0)], 0.0);
        assert!((r[0] - r[1] - 400.0 * 3f64.log10()).abs() < 1e-6, "{r:?}");
        assert!((r[0] + r[1] - 2000.0).abs() < 1e-6);
        // ties are half wins: 2 wins and 2 ties in 4 games is 3 of 4
        let r2 = fit(2, &[g(1.0), g(1.0), g(0.5), g(0.5)], 0.0);
        assert!((r2[0] - r[0]).abs() < 1e-6);
        // an unbeaten player stays finite with the prior
        let r3 = fit(2, &[g(1.0), g(1.0)], PRIOR_GAMES);
        assert!(r3.iter().all(|x| x.is_finite()) && r3[0] > r3[1]);
    }

    #[test]
    fn ratings_recover_the_true_ones_and_their_intervals_cover_them() {
        let truth = [1200.0, 1050.0, 950.0, 800.0];
        let mut rng = Rng::new(7);
        let mut games = Vec::new();
        for _ in 0..4000 {
            let a = rng.below(4) as usize;
            let b = (a + 1 + rng.below(3) as usize) % 4;
            let p = 1.0 / (1.0 + 10f64.powf((truth[b] - truth[a]) / 400.0));
            games.push(Game { a, b, score: if (rng.next_f32() as f64) < p { 1.0 } else { 0.0 } });
        }
        let r = fit(4, &games, PRIOR_GAMES);
        let ci = bootstrap(4, &games, PRIOR_GAMES, 200, 3);
        for i in 0..4 {
            // the fit is anchored at a mean of 1000, as the truth is
            assert!((r[i] - truth[i]).abs() < 30.0, "player {i}: {} vs {}", r[i], truth[i]);
            assert!(ci[i].0 <= r[i] && r[i] <= ci[i].1 && ci[i].1 - ci[i].0 < 80.0, "{:?}", ci[i]);
            assert!(ci[i].0 - 15.0 <= truth[i] && truth[i] <= ci[i].1 + 15.0, "player {i}: {:?} vs {}", ci[i], truth[i]);
        }
        let m = win_matrix(4, &games);
        assert!(m[0][3].0 > 0.8 && (m[0][3].0 + m[3][0].0 - 1.0).abs() < 1e-12 && m[0][0].1 == 0);
    }
}
