//! Rewards from a program outside the binary (`--reward-cmd "CMD"`): one long-lived process,
//! started with `sh -c CMD`, that reads JSONL requests on its stdin and writes one answer line
//! per request, in order, on its stdout. A request is the prompt line's JSON object with the
//! sampled `completion` added (and `prompt` as text when the line gave `messages`); an answer is
//! a bare number or `{"reward": x}`. The requests of a batch are written and flushed together,
//! then the answers are read with one deadline for the whole batch.
//!
//! Failure is reported, never waited on forever: an answer that is not a finite number names the
//! command, the answer's line number in the process's output and the request it answers; a
//! process that exits (or closes its stdout) is reported with its exit status; a batch not fully
//! answered within the timeout is an error naming how many answers came. The process's stderr is
//! the binary's own, so its messages reach the user.

use crate::data::tokenizer::Tokenizer;
use crate::error::{Error, Result};
use serde_json::{Map, Value};
use std::cell::RefCell;
use std::path::Path;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// A running reward program.
pub struct RewardProcess {
    cmd: String,
    child: Child,
    stdin: Option<ChildStdin>,
    /// the process's stdout, line by line, from a reader thread (`None` at its end)
    lines: Receiver<Option<std::io::Result<String>>>,
    timeout: Duration,
    /// answer lines read so far (for error messages)
    answered: usize,
}

impl RewardProcess {
    /// Starts `sh -c cmd`; each batch must be answered within `timeout`.
    pub fn start(cmd: &str, timeout: Duration) -> Result<Self> {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| Error::invalid(format!("--reward-cmd {cmd:?}: cannot start it: {e}")))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().ok_or_else(|| Error::invalid(format!("--reward-cmd {cmd:?}: no stdout")))?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let failed = line.is_err();
                if tx.send(Some(line)).is_err() || failed {
                    return;
                }
            }
            let _ = tx.send(None);
        });
        Ok(RewardProcess { cmd: cmd.to_string(), child, stdin, lines, timeout, answered: 0 })
    }

    /// The rewards of `requests` (one JSON object each), in order.
    pub fn score(&mut self, requests: &[Map<String, Value>]) -> Result<Vec<f32>> {
        let mut batch = Vec::new();
        for r in requests {
            serde_json::to_writer(&mut batch, r).map_err(|e| Error::invalid(format!("a reward request: {e}")))?;
            batch.push(b'\n');
        }
        let stdin = self.stdin.as_mut().ok_or_else(|| Error::invalid(format!("--reward-cmd {:?}: its stdin is closed", self.cmd)))?;
        if let Err(e) = stdin.write_all(&batch).and_then(|_| stdin.flush()) {
            return Err(self.ended(&format!("writing its requests failed ({e})")));
        }
        let deadline = Instant::now() + self.timeout;
        let mut rewards = Vec::with_capacity(requests.len());
        while rewards.len() < requests.len() {
            let wait = deadline.saturating_duration_since(Instant::now());
            let line = match self.lines.recv_timeout(wait) {
                Ok(Some(Ok(line))) => line,
                Ok(Some(Err(e))) => return Err(self.ended(&format!("reading its answers failed ({e})"))),
                Ok(None) | Err(RecvTimeoutError::Disconnected) => {
                    return Err(self.ended(&format!("it closed its output after {} of this batch's {} answers", rewards.len(), requests.len())))
                }
                Err(RecvTimeoutError::Timeout) => {
                    return Err(Error::invalid(format!(
                        "--reward-cmd {:?}: {} of {} answers came within {} s (--reward-timeout); it hangs or is too slow",
                        self.cmd,
                        rewards.len(),
                        requests.len(),
                        self.timeout.as_secs_f64()
                    )))
                }
            };
            self.answered += 1;
            let reward = parse_answer(&line).ok_or_else(|| {
                let shown: String = line.chars().take(200).collect();
                Error::invalid(format!(
                    "--reward-cmd {:?}: answer line {} (to request {} of this batch) is not a number or {{\"reward\": x}}: {shown:?}",
                    self.cmd,
                    self.answered,
                    rewards.len() + 1
                ))
            })?;
            rewards.push(reward);
        }
        Ok(rewards)
    }

    /// The error of a process that stopped answering: its exit status when it has one.
    fn ended(&mut self, what: &str) -> Error {
        // a process that just closed its output is given a moment to exit
        let mut status = None;
        for _ in 0..50 {
            if let Ok(Some(s)) = self.child.try_wait() {
                status = Some(s);
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let how = status.map_or("it is still running".to_string(), |s| format!("it exited with {s}"));
        Error::invalid(format!("--reward-cmd {:?}: {what}; {how}", self.cmd))
    }
}

impl Drop for RewardProcess {
    /// Closes the process's stdin (its signal to finish), waits a moment, then kills it.
    fn drop(&mut self) {
        self.stdin.take();
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where [`PromptReward`] sends its requests.
pub enum RewardTransport {
    /// a long-lived process (`--reward-cmd`)
    Process(RefCell<RewardProcess>),
    /// an HTTP endpoint (`--reward-url`)
    Http(crate::rl::reward_url::RewardEndpoint),
}

/// An outside reward for the prompts of a JSONL file (`--reward-cmd` / `--reward-url` of `rlhf
/// ppo` and `rlhf grpo`): a sample's request is its prompt line's fields, `prompt` as text (the
/// line's own, or its `messages` rendered as the policy saw them), and the decoded `completion`.
pub struct PromptReward<'t> {
    transport: RewardTransport,
    /// each prompt line's fields, with `prompt` as text
    lines: Vec<Map<String, Value>>,
    tok: &'t Tokenizer,
}

impl<'t> PromptReward<'t> {
    /// Sends the requests for the prompts read from `path` (`prompts[i]` is line `i`'s, tokenized)
    /// through `transport`.
    pub fn new(transport: RewardTransport, path: &Path, prompts: &[Vec<u32>], tok: &'t Tokenizer) -> Result<Self> {
        let mut lines: Vec<Map<String, Value>> = crate::data::jsonl::read_jsonl_objects(path)?.into_iter().map(|(_, obj)| obj).collect();
        if lines.len() != prompts.len() {
            return Err(Error::file(path, format!("{} prompt lines but {} prompts", lines.len(), prompts.len())));
        }
        for (line, ids) in lines.iter_mut().zip(prompts) {
            if !matches!(line.get("prompt"), Some(Value::String(_))) {
                line.insert("prompt".into(), tok.decode_with(ids, true).unwrap_or_default().into());
            }
        }
        Ok(PromptReward { transport, lines, tok })
    }

    /// The rewards of `(prompt index, response ids)` samples, in order.
    pub fn score(&self, samples: &[(usize, &[u32])]) -> Result<Vec<f32>> {
        let requests: Vec<Map<String, Value>> = samples
            .iter()
            .map(|&(i, response)| {
                let mut req = self.lines[i].clone();
                req.insert("completion".into(), self.tok.decode_with(response, true).unwrap_or_default().into());
                req
            })
            .collect();
        match &self.transport {
            RewardTransport::Process(p) => p.borrow_mut().score(&requests),
            RewardTransport::Http(h) => h.score(&requests),
        }
    }
}

/// A bare finite number or `{"reward": finite number}`.
fn parse_answer(line: &str) -> Option<f32> {
    let v: Value = serde_json::from_str(line.trim()).ok()?;
    let x = match &v {
        Value::Number(n) => n.as_f64()?,
        Value::Object(o) => o.get("reward")?.as_f64()?,
        _ => return None,
    };
    (x.is_finite() && x.abs() <= f32::MAX as f64).then_some(x as f32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(prompt: &str, completion: &str) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("prompt".into(), prompt.into());
        m.insert("completion".into(), completion.into());
        m
    }

    #[test]
    fn answers_come_back_in_order_across_batches() {
        // the reward is the completion's length, as a bare number or an object, alternately
        let script = r#"python3 -u -c '
import json, sys
for i, line in enumerate(sys.stdin):
    r = len(json.loads(line)["completion"])
    print(r if i % 2 else json.dumps({"reward": r}), flush=True)
'"#;
        let mut p = RewardProcess::start(script, Duration::from_secs(30)).unwrap();
        assert_eq!(p.score(&[req("a", "xy"), req("b", ""), req("c", "hello")]).unwrap(), [2.0, 0.0, 5.0]);
        assert_eq!(p.score(&[req("d", "four")]).unwrap(), [4.0]);
    }

    #[test]
    fn a_malformed_answer_names_its_line_and_request() {
        let mut p = RewardProcess::start("while read l; do echo 1; echo oops; done", Duration::from_secs(30)).unwrap();
        let e = p.score(&[req("a", "b"), req("c", "d")]).unwrap_err().to_string();
        assert!(e.contains("answer line 2 (to request 2 of this batch)") && e.contains("\"oops\""), "{e}");
        let mut p = RewardProcess::start("while read l; do echo NaN; done", Duration::from_secs(30)).unwrap();
        assert!(p.score(&[req("a", "b")]).is_err(), "a non-finite reward is refused");
    }

    #[test]
    fn a_crashed_process_is_reported_not_waited_on() {
        let mut p = RewardProcess::start("read l; echo 0.5; exit 3", Duration::from_secs(60)).unwrap();
        let start = Instant::now();
        let e = p.score(&[req("a", "b"), req("c", "d")]).unwrap_err().to_string();
        assert!(e.contains("closed its output after 1 of this batch's 2 answers") && e.contains("exit status: 3"), "{e}");
        assert!(start.elapsed() < Duration::from_secs(30));
        let e = p.score(&[req("e", "f")]).unwrap_err().to_string();
        assert!(e.contains("exit status: 3"), "{e}");
        let e = RewardProcess::start("exec /nonexistent/reward", Duration::from_secs(5)).unwrap().score(&[req("a", "b")]).unwrap_err().to_string();
        assert!(e.contains("/nonexistent/reward"), "{e}");
    }

    #[test]
    fn a_hung_process_times_out() {
        let mut p = RewardProcess::start("read l; echo 1; sleep 60", Duration::from_millis(500)).unwrap();
        let e = p.score(&[req("a", "b"), req("c", "d")]).unwrap_err().to_string();
        assert!(e.contains("1 of 2 answers came within 0.5 s"), "{e}");
    }
}
