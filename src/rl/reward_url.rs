//! Rewards from an HTTP endpoint (`--reward-url URL`), OpenRLHF's remote reward-model convention:
//! one POST per batch with a JSON body `{"query": [prompt + completion, ...], "prompts": [...],
//! "labels": [each line's "answer" or null], "requests": [the same requests --reward-cmd sends]}`,
//! answered by `{"rewards": [x, ...]}` (or a bare array), one finite number (or `{"reward": x}`)
//! per sample, in order. A non-2xx status, a malformed answer (naming the sample), a wrong count
//! or no answer within the timeout is an error naming the URL.

use crate::error::{Error, Result};
use serde_json::{json, Map, Value};
use std::time::Duration;

/// A reward endpoint.
pub struct RewardEndpoint {
    url: String,
    agent: ureq::Agent,
    timeout: Duration,
}

/// The largest answer read (a batch's rewards are far smaller).
const MAX_ANSWER_BYTES: u64 = 64 << 20;

impl RewardEndpoint {
    /// An endpoint at `url` (http or https) whose answer to a batch must come within `timeout`.
    pub fn new(url: &str, timeout: Duration) -> Result<Self> {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(Error::invalid(format!("--reward-url {url:?}: expected an http:// or https:// URL")));
        }
        let config = ureq::Agent::config_builder().timeout_global(Some(timeout)).http_status_as_error(false).build();
        Ok(RewardEndpoint { url: url.to_string(), agent: ureq::Agent::new_with_config(config), timeout })
    }

    /// The rewards of `requests` (each with `prompt` and `completion`), in order.
    pub fn score(&self, requests: &[Map<String, Value>]) -> Result<Vec<f32>> {
        let text = |r: &Map<String, Value>, key: &str| r.get(key).and_then(Value::as_str).unwrap_or_default().to_string();
        let body = json!({
            "query": requests.iter().map(|r| text(r, "prompt") + &text(r, "completion")).collect::<Vec<_>>(),
            "prompts": requests.iter().map(|r| text(r, "prompt")).collect::<Vec<_>>(),
            "labels": requests.iter().map(|r| r.get("answer").cloned().unwrap_or(Value::Null)).collect::<Vec<_>>(),
            "requests": requests,
        });
        let fail = |what: String| Error::invalid(format!("--reward-url {}: {what}", self.url));
        let mut response = self.agent.post(&self.url).header("Content-Type", "application/json").send(body.to_string()).map_err(|e| match e {
            ureq::Error::Timeout(_) => fail(format!("no answer within {} s (--reward-timeout)", self.timeout.as_secs_f64())),
            e => fail(format!("the request failed: {e}")),
        })?;
        let status = response.status();
        let answer = response.body_mut().with_config().limit(MAX_ANSWER_BYTES).read_to_string().map_err(|e| fail(format!("reading the answer failed: {e}")))?;
        if !status.is_success() {
            let shown: String = answer.chars().take(200).collect();
            return Err(fail(format!("the server answered HTTP {status}: {shown:?}")));
        }
        parse_rewards(&answer, requests.len()).map_err(fail)
    }
}

/// `{"rewards": [...]}` or `[...]` of `n` finite numbers (or `{"reward": x}` objects).
fn parse_rewards(answer: &str, n: usize) -> std::result::Result<Vec<f32>, String> {
    let v: Value = serde_json::from_str(answer).map_err(|e| format!("the answer is not JSON ({e})"))?;
    let list = match &v {
        Value::Array(a) => a,
        Value::Object(o) => o.get("rewards").and_then(Value::as_array).ok_or("the answer has no \"rewards\" array")?,
        _ => return Err("the answer is neither {\"rewards\": [...]} nor an array".into()),
    };
    if list.len() != n {
        return Err(format!("{} rewards for a batch of {n} samples", list.len()));
    }
    list.iter()
        .enumerate()
        .map(|(i, x)| {
            let r = match x {
                Value::Number(n) => n.as_f64(),
                Value::Object(o) => o.get("reward").and_then(Value::as_f64),
                _ => None,
            };
            r.filter(|r| r.is_finite() && r.abs() <= f32::MAX as f64).map(|r| r as f32).ok_or_else(|| format!("reward {} (sample {}) is not a finite number: {x}", i, i + 1))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_answer_shapes_are_read_and_bad_ones_named() {
        assert_eq!(parse_rewards(r#"{"rewards": [1, 0.5, {"reward": -2}]}"#, 3).unwrap(), [1.0, 0.5, -2.0]);
        assert_eq!(parse_rewards("[3]", 1).unwrap(), [3.0]);
        assert!(parse_rewards("[1, 2]", 3).unwrap_err().contains("2 rewards for a batch of 3"));
        assert!(parse_rewards(r#"{"rewards": [1, "x"]}"#, 2).unwrap_err().contains("sample 2"));
        assert!(parse_rewards(r#"{"scores": [1]}"#, 1).unwrap_err().contains("no \"rewards\""));
        assert!(parse_rewards("oops", 1).unwrap_err().contains("not JSON"));
        assert!(RewardEndpoint::new("localhost:80", Duration::from_secs(1)).is_err());
    }
}
