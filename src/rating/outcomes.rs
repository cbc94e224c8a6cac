//! Head-to-head outcomes from a JSONL file. Two kinds of line:
//! - `{"a": NAME, "b": NAME, "winner": "a" | "b" | "tie"}`: one game;
//! - a labelled ranking whose samples carry model names, best first: `{"ranked": [...],
//!   "models": [NAME, ...]}` (one name per ranked sample) or `{"ranked": [{"model": NAME, ...},
//!   ...]}`: every pair of samples from different models is a game won by the higher-ranked one.
//!
//! Any other line is an error naming the file and line.

use crate::error::{Error, Result};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// One game between players `a` and `b` (indices into [`Outcomes::names`]): `score` is a's
/// result, 1 (a won), 0 (b won) or 0.5 (a tie).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Game {
    pub a: usize,
    pub b: usize,
    pub score: f64,
}

/// The players and their games.
#[derive(Clone, Debug, Default)]
pub struct Outcomes {
    pub names: Vec<String>,
    pub games: Vec<Game>,
}

impl Outcomes {
    fn player(&mut self, index: &mut BTreeMap<String, usize>, name: &str) -> usize {
        *index.entry(name.to_string()).or_insert_with(|| {
            self.names.push(name.to_string());
            self.names.len() - 1
        })
    }

    /// Reads every line of `path`.
    pub fn read(path: &Path) -> Result<Self> {
        let mut out = Outcomes::default();
        let mut index = BTreeMap::new();
        for (line, obj) in crate::data::jsonl::read_jsonl_objects(path)? {
            let bad = |msg: &str| Error::line(path, line, msg.to_string());
            if let Some(winner) = obj.get("winner") {
                let name = |key: &str| obj.get(key).and_then(Value::as_str).ok_or_else(|| bad(&format!("a head-to-head line needs a string `{key}`")));
                let (a, b) = (name("a")?, name("b")?);
                if a == b {
                    return Err(bad("`a` and `b` name the same model"));
                }
                let score = match winner.as_str() {
                    Some("a") => 1.0,
                    Some("b") => 0.0,
                    Some("tie") => 0.5,
                    _ => return Err(bad("`winner` must be \"a\", \"b\" or \"tie\"")),
                };
                let (a, b) = (out.player(&mut index, a), out.player(&mut index, b));
                out.games.push(Game { a, b, score });
            } else if let Some(Value::Array(ranked)) = obj.get("ranked") {
                let models: Vec<String> = match obj.get("models") {
                    Some(Value::Array(m)) => m.iter().map(|v| v.as_str().map(str::to_string)).collect::<Option<_>>().ok_or_else(|| bad("`models` must be strings"))?,
                    Some(_) => return Err(bad("`models` must be an array of model names")),
                    None => ranked
                        .iter()
                        .map(|s| s.get("model").and_then(Value::as_str).map(str::to_string))
                        .collect::<Option<_>>()
                        .ok_or_else(|| bad("a ranking needs `models` (one name per sample) or samples that are objects with a `model`"))?,
                };
                if models.len() != ranked.len() {
                    return Err(bad(&format!("{} model names for {} ranked samples", models.len(), ranked.len())));
                }
                let ids: Vec<usize> = models.iter().map(|m| out.player(&mut index, m)).collect();
                for i in 0..ids.len() {
                    for j in i + 1..ids.len() {
                        if ids[i] != ids[j] {
                            out.games.push(Game { a: ids[i], b: ids[j], score: 1.0 });
                        }
                    }
                }
            } else {
                return Err(bad("expected a head-to-head line ({\"a\", \"b\", \"winner\"}) or a ranking with model names ({\"ranked\", \"models\"})"));
            }
        }
        if out.names.len() < 2 || out.games.is_empty() {
            return Err(Error::file(path, "no games between two different models"));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_kinds_of_line_become_games_and_bad_lines_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.jsonl");
        std::fs::write(
            &f,
            "{\"a\": \"x\", \"b\": \"y\", \"winner\": \"a\"}\n{\"a\": \"y\", \"b\": \"z\", \"winner\": \"tie\"}\n\
             {\"prompt\": \"p\", \"ranked\": [\"s1\", \"s2\", \"s3\"], \"models\": [\"z\", \"x\", \"z\"]}\n\
             {\"ranked\": [{\"text\": \"t\", \"model\": \"y\"}, {\"text\": \"u\", \"model\": \"x\"}]}\n",
        )
        .unwrap();
        let o = Outcomes::read(&f).unwrap();
        assert_eq!(o.names, ["x", "y", "z"]);
        let g = |a, b, score| Game { a, b, score };
        assert_eq!(o.games, [g(0, 1, 1.0), g(1, 2, 0.5), g(2, 0, 1.0), g(0, 2, 1.0), g(1, 0, 1.0)]);
        for (line, needle) in [
            ("{\"a\": \"x\", \"b\": \"y\", \"winner\": \"c\"}", "`winner` must be"),
            ("{\"a\": \"x\", \"winner\": \"a\"}", "string `b`"),
            ("{\"ranked\": [\"s1\", \"s2\"]}", "needs `models`"),
            ("{\"ranked\": [\"s1\", \"s2\"], \"models\": [\"x\"]}", "1 model names for 2"),
            ("{\"text\": \"hi\"}", "expected a head-to-head line"),
        ] {
            std::fs::write(&f, format!("{{\"a\": \"x\", \"b\": \"y\", \"winner\": \"a\"}}\n{line}\n")).unwrap();
            let e = Outcomes::read(&f).unwrap_err().to_string();
            assert!(e.contains("c.jsonl:2") && e.contains(needle), "{e}");
        }
    }
}
