//! A small built-in corpus generated in code (no files): short templated English lines
//! (counting, arithmetic facts, the alphabet, tiny stories, simple facts), deterministic for a
//! seed. Regular enough that a tiny byte-level model's loss drops visibly within ~100 steps,
//! varied enough that it does not just memorise one line.

use crate::data::chat::Message;
use crate::data::jsonl::{text_example, Example};
use crate::data::rng::Rng;
use crate::data::tokenizer::Tokenizer;
use crate::error::Result;

const NUMBER_WORDS: [&str; 21] = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
    "twenty",
];
const NAMES: [&str; 10] = ["Ann", "Ben", "Cara", "Dan", "Eva", "Finn", "Gus", "Hana", "Ivo", "Jade"];
const FRUITS: [&str; 6] = ["apple", "pear", "plum", "lemon", "peach", "fig"];
const ANIMALS: [&str; 8] = ["cat", "dog", "fox", "bird", "frog", "duck", "hen", "goat"];
const ADJECTIVES: [&str; 8] = ["little", "big", "happy", "sleepy", "brave", "quick", "old", "small"];
const VERBS: [&str; 6] = ["runs", "walks", "hops", "goes", "swims", "flies"];
const PLACES: [&str; 7] = ["park", "river", "hill", "barn", "garden", "lake", "house"];
const COLORS: [&str; 6] = ["red", "blue", "green", "yellow", "white", "black"];
const THINGS: [&str; 6] = ["ball", "hat", "kite", "box", "cup", "boat"];
const FACTS: [&str; 12] = [
    "The sky is blue.",
    "Grass is green.",
    "Snow is white.",
    "The sun is hot.",
    "Ice is cold.",
    "Fish swim in water.",
    "Birds can fly.",
    "A week has seven days.",
    "A day has twenty four hours.",
    "Cats say meow.",
    "Dogs say woof.",
    "The moon comes out at night.",
];

fn pick<'a>(rng: &mut Rng, items: &[&'a str]) -> &'a str {
    items[rng.below(items.len() as u64) as usize]
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// An arithmetic question and its answer, e.g. ("3 plus 4", 7).
fn arithmetic(rng: &mut Rng) -> (String, i64) {
    match rng.below(3) {
        0 => {
            let (a, b) = (rng.range(0, 9), rng.range(0, 9));
            (format!("{a} plus {b}"), a + b)
        }
        1 => {
            let a = rng.range(0, 9);
            let b = rng.range(0, a);
            (format!("{a} minus {b}"), a - b)
        }
        _ => {
            let (a, b) = (rng.range(0, 5), rng.range(0, 5));
            (format!("{a} times {b}"), a * b)
        }
    }
}

fn line(rng: &mut Rng) -> String {
    match rng.below(8) {
        0 => {
            let start = rng.range(1, 12) as usize;
            let len = rng.range(3, 6) as usize;
            let words: Vec<&str> = (start..start + len).map(|k| NUMBER_WORDS[k]).collect();
            format!("{}.", capitalize(&words.join(", ")))
        }
        1 => {
            let start = rng.range(1, 90);
            let len = rng.range(3, 7);
            let nums: Vec<String> = (start..start + len).map(|k| k.to_string()).collect();
            format!("Count: {}.", nums.join(" "))
        }
        2 | 3 => {
            let (q, a) = arithmetic(rng);
            format!("{q} is {a}.")
        }
        4 => {
            let start = rng.range(0, 20) as u8;
            let len = rng.range(3, 6) as u8;
            if rng.below(2) == 0 {
                let letters: Vec<String> = (start..start + len).map(|k| ((b'a' + k) as char).to_string()).collect();
                format!("{}.", letters.join(" "))
            } else {
                let x = (b'a' + start) as char;
                let y = (b'a' + start + 1) as char;
                format!("The letter after {x} is {y}.")
            }
        }
        5 => {
            let name = pick(rng, &NAMES);
            let fruit = pick(rng, &FRUITS);
            let n = rng.range(2, 9) as usize;
            format!(
                "{name} has {} {fruit}s. {name} eats one. Now {name} has {} {fruit}{}.",
                NUMBER_WORDS[n],
                NUMBER_WORDS[n - 1],
                if n - 1 == 1 { "" } else { "s" }
            )
        }
        6 => {
            if rng.below(2) == 0 {
                format!("The {} {} {} to the {}.", pick(rng, &ADJECTIVES), pick(rng, &ANIMALS), pick(rng, &VERBS), pick(rng, &PLACES))
            } else {
                format!("{} likes the {} {}.", pick(rng, &NAMES), pick(rng, &COLORS), pick(rng, &THINGS))
            }
        }
        _ => pick(rng, &FACTS).to_string(),
    }
}

/// `n` short English lines, the same for the same `(n, seed)` (and the first `k` lines of
/// `builtin_corpus(n, seed)` are `builtin_corpus(k, seed)`).
pub fn builtin_corpus(n: usize, seed: u64) -> Vec<String> {
    let mut rng = Rng::new(seed);
    (0..n).map(|_| line(&mut rng)).collect()
}

/// The built-in corpus as training examples (each line a `text` example: bos, the line, eos).
pub fn builtin_examples(tok: &Tokenizer, n: usize, seed: u64) -> Result<Vec<Example>> {
    builtin_corpus(n, seed).iter().map(|s| text_example(tok, s)).collect()
}

/// A question with a checkable answer: `"What is 3 plus 4?"` / `"7"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QaPair {
    pub question: String,
    pub answer: String,
}

/// `n` arithmetic questions with their answers (for chat SFT and for verifiable rewards).
pub fn builtin_qa(n: usize, seed: u64) -> Vec<QaPair> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|_| {
            let (q, a) = arithmetic(&mut rng);
            QaPair { question: format!("What is {q}?"), answer: a.to_string() }
        })
        .collect()
}

/// `n` two-turn conversations: an arithmetic question and the answer as a sentence
/// ("3 plus 4 is 7.").
pub fn builtin_chat(n: usize, seed: u64) -> Vec<Vec<Message>> {
    builtin_qa(n, seed)
        .into_iter()
        .map(|qa| {
            let q = qa.question.trim_start_matches("What is ").trim_end_matches('?').to_string();
            vec![Message::user(qa.question), Message::assistant(format!("{q} is {}.", qa.answer))]
        })
        .collect()
}
