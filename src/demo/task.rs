//! The built-in task of `rlhf demo`: answers to short prompts are judged by a known "oracle"
//! that stands in for human judgment — it likes kind words and dislikes rude ones. The
//! demonstrations SFT learns from are imperfect (kind, rude and neutral words in equal measure),
//! the preference labels the reward model learns from come from the oracle with some label noise
//! (labellers disagree), and PPO against the reward model should raise the oracle score.

use crate::data::preference::PreferenceGroup;
use crate::data::rng::Rng;
use crate::data::tokenizer::Tokenizer;
use crate::error::Result;
pub use crate::rl::reward_fns::{oracle_score, KIND, NEUTRAL, RUDE};

const SUBJECTS: &[&str] = &["the cat", "my friend", "the sea", "our town", "the day", "a song", "the tree", "his dog"];

/// A prompt of the task.
pub fn prompt(rng: &mut Rng) -> String {
    format!("Q: describe {}.\nA:", SUBJECTS[rng.below(SUBJECTS.len() as u64) as usize])
}

/// An imperfect demonstration: 2 to 4 words drawn evenly from the kind, rude and neutral lists.
pub fn demonstration(rng: &mut Rng) -> String {
    let n = 2 + rng.below(3) as usize;
    let words: Vec<&str> = (0..n)
        .map(|_| {
            let list = [KIND, RUDE, NEUTRAL][rng.below(3) as usize];
            list[rng.below(list.len() as u64) as usize]
        })
        .collect();
    format!(" {}.", words.join(" "))
}

/// `n` prompts.
pub fn prompts(n: usize, seed: u64) -> Vec<String> {
    let mut rng = Rng::new(seed);
    (0..n).map(|_| prompt(&mut rng)).collect()
}

/// `n` (prompt, demonstration) pairs for SFT.
pub fn demonstrations(n: usize, seed: u64) -> Vec<(String, String)> {
    let mut rng = Rng::new(seed);
    (0..n).map(|_| (prompt(&mut rng), demonstration(&mut rng))).collect()
}

/// Oracle-labelled comparisons: every third prompt is a ranking of 4 answers, the others pairs;
/// each adjacent swap of the oracle's order happens with probability `noise` (labellers disagree).
/// Answers the oracle scores the same are re-drawn, so every comparison carries a preference.
pub fn preference_groups(tok: &Tokenizer, n: usize, noise: f32, seed: u64) -> Result<Vec<PreferenceGroup>> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let p = prompt(&mut rng);
        let k = if i % 3 == 0 { 4 } else { 2 };
        let mut answers: Vec<String> = Vec::with_capacity(k);
        while answers.len() < k {
            let a = demonstration(&mut rng);
            if answers.iter().all(|b| oracle_score(b) != oracle_score(&a)) {
                answers.push(a);
            }
        }
        answers.sort_by(|a, b| oracle_score(b).total_cmp(&oracle_score(a)));
        for j in 0..k - 1 {
            if rng.next_f32() < noise {
                answers.swap(j, j + 1);
            }
        }
        let prompt_ids = tok.encode(&p, true)?;
        let sequences = answers
            .iter()
            .map(|a| {
                let mut ids = prompt_ids.clone();
                ids.extend(tok.encode(a, false)?);
                ids.extend(tok.eos_id());
                Ok(ids)
            })
            .collect::<Result<Vec<_>>>()?;
        out.push(PreferenceGroup { line: i + 1, sequences, prompt_len: prompt_ids.len(), margin: 0.0 });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oracle_counts_kind_minus_rude_per_word() {
        assert_eq!(oracle_score(" kind warm."), 1.0);
        assert_eq!(oracle_score(" rude blue."), -0.5);
        assert_eq!(oracle_score(" kind rude tall soft."), 0.0);
        assert_eq!(oracle_score(""), 0.0);
        // demonstrations average near zero: SFT alone is not kind
        let mut rng = Rng::new(1);
        let mean: f32 = (0..2000).map(|_| oracle_score(&demonstration(&mut rng))).sum::<f32>() / 2000.0;
        assert!(mean.abs() < 0.05, "{mean}");
    }

    #[test]
    fn preference_labels_follow_the_oracle_up_to_noise() {
        let tok = Tokenizer::byte_level();
        let groups = preference_groups(&tok, 300, 0.1, 2).unwrap();
        let (mut agree, mut pairs) = (0, 0);
        for g in &groups {
            let scores: Vec<f32> = g.sequences.iter().map(|s| oracle_score(&tok.decode_with(s, true).unwrap())).collect();
            for i in 0..scores.len() {
                for j in i + 1..scores.len() {
                    pairs += 1;
                    agree += usize::from(scores[i] > scores[j]);
                }
            }
        }
        let frac = agree as f64 / pairs as f64;
        assert!(frac > 0.8 && frac < 0.97, "agreement with the oracle {frac}");
    }
}
