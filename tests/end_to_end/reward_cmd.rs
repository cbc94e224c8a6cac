//! `rlhf grpo|ppo --reward-cmd` (an outside program over JSONL on its stdin/stdout) and
//! `--reward-url` (an HTTP endpoint, OpenRLHF's remote reward-model convention).

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn rlhf(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rlhf")).args(args).output().expect("running rlhf")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn ok(out: &Output, what: &str) {
    assert!(out.status.success(), "{what} failed:\n{}", String::from_utf8_lossy(&out.stderr));
}

/// A policy to start from (one SFT step of the tiny preset) and a prompt file whose lines carry
/// an `answer` and an `id` besides the prompt.
fn policy_and_prompts(dir: &Path) -> (PathBuf, PathBuf) {
    let data = dir.join("data.jsonl");
    std::fs::write(&data, "{\"prompt\": \"2+2=\", \"completion\": \"4\"}\n{\"prompt\": \"3+1=\", \"completion\": \"4\"}\n").unwrap();
    let base = dir.join("base");
    ok(&rlhf(&["sft", "--init", "gpt2-tiny", "--data", s(&data), "--out", s(&base), "--steps", "1", "--seq-len", "16"]), "sft");
    let prompts = dir.join("prompts.jsonl");
    std::fs::write(&prompts, "{\"prompt\": \"2+2=\", \"answer\": \"4\", \"id\": 1}\n{\"messages\": [{\"role\": \"user\", \"content\": \"1+5=\"}], \"answer\": \"6\", \"id\": 2}\n").unwrap();
    (base, prompts)
}

fn grpo_args<'a>(base: &'a Path, prompts: &'a Path, out: &'a Path, cmd: &'a str) -> Vec<&'a str> {
    vec![
        "grpo", "--model", s(base), "--prompts", s(prompts), "--out", s(out), "--reward-cmd", cmd, "--steps", "2", "--prompts-per-step", "2",
        "--group-size", "2", "--max-new-tokens", "6", "--seed", "5",
    ]
}

#[test]
fn grpo_trains_on_an_outside_programs_rewards() {
    let dir = tempfile::tempdir().unwrap();
    let (base, prompts) = policy_and_prompts(dir.path());
    // the program logs every request and answers a function of the completion
    let script = dir.path().join("reward.py");
    std::fs::write(
        &script,
        "import json, sys\nlog = open(sys.argv[1], 'a')\nfor line in sys.stdin:\n    log.write(line); log.flush()\n    r = len(json.loads(line)['completion']) % 5 / 4\n    print(json.dumps({'reward': r}) if r > 0.5 else r, flush=True)\n",
    )
    .unwrap();
    let log = dir.path().join("requests.jsonl");
    let cmd = format!("python3 {} {}", s(&script), s(&log));
    let out = dir.path().join("grpo");
    ok(&rlhf(&grpo_args(&base, &prompts, &out, &cmd)), "grpo --reward-cmd");
    let requests: Vec<Value> = std::fs::read_to_string(&log).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(requests.len(), 2 * 2 * 2, "one request per sample: 2 steps x 2 prompts x 2 samples");
    for r in &requests {
        assert!(r["prompt"].is_string() && r["completion"].is_string() && r["answer"].is_string() && r["id"].is_number(), "{r}");
    }
    // the line given as messages gets its prompt as text; its other fields travel as they are
    assert!(requests.iter().any(|r| r["id"] == 2 && r["messages"].is_array() && r["prompt"].as_str().unwrap().contains("1+5=")));
    // each step's logged reward is the mean of the program's answers to that step's samples
    let metrics: Vec<Value> = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    for (step, m) in metrics.iter().enumerate() {
        let answers: Vec<f64> =
            requests[step * 4..step * 4 + 4].iter().map(|r| (r["completion"].as_str().unwrap().chars().count() % 5) as f64 / 4.0).collect();
        let mean = answers.iter().sum::<f64>() / 4.0;
        assert!((m["reward_mean"].as_f64().unwrap() - mean).abs() < 1e-6, "step {}: {} vs the program's {mean}", step + 1, m["reward_mean"]);
    }
}

#[test]
fn a_reward_program_that_fails_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (base, prompts) = policy_and_prompts(dir.path());
    let run = |name: &str, cmd: &str| rlhf(&grpo_args(&base, &prompts, &dir.path().join(name), cmd));
    let out = run("bad", "while read l; do echo great; done");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("answer line 1 (to request 1 of this batch)") && err.contains("\"great\""), "{err}");
    let out = run("crash", "read l; exit 7");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("closed its output after 0 of this batch's 4 answers") && err.contains("exit status: 7"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn the_math_answer_example_checks_the_last_number() {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/rewards/math_answer.py");
    let mut child = Command::new("python3")
        .arg(&script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    use std::io::Write;
    let requests = [
        r#"{"prompt": "2+2=", "answer": "4", "completion": "it is 4"}"#,
        r#"{"prompt": "2+2=", "answer": "4", "completion": "3, no: 4.0"}"#,
        r#"{"prompt": "2+2=", "answer": 4, "completion": "5"}"#,
        r#"{"prompt": "2+2=", "completion": "4"}"#,
    ];
    child.stdin.take().unwrap().write_all((requests.join("\n") + "\n").as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let rewards: Vec<f64> = String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str::<Value>(l).unwrap()["reward"].as_f64().unwrap()).collect();
    assert_eq!(rewards, [1.0, 1.0, 0.0, 0.0]);
}

#[test]
fn ppo_trains_on_an_outside_programs_rewards() {
    let dir = tempfile::tempdir().unwrap();
    let (base, prompts) = policy_and_prompts(dir.path());
    let log = dir.path().join("requests.jsonl");
    let cmd = format!("tee -a {} | while read l; do echo 0.25; done", s(&log));
    let out = dir.path().join("ppo");
    let args = |out: &Path, cmd: &str, value: &'static str| -> Output {
        let mut v = vec!["ppo", "--policy", s(&base), "--prompts", s(&prompts), "--out", s(out), "--reward-cmd", cmd];
        v.extend(["--steps", "2", "--rollout-batch", "3", "--mini-batch", "3", "--max-new-tokens", "5", "--seed", "2"]);
        if !value.is_empty() {
            v.push(value);
        }
        rlhf(&v)
    };
    ok(&args(&out, &cmd, "--value-head"), "ppo --reward-cmd --value-head");
    let requests: Vec<Value> = std::fs::read_to_string(&log).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(requests.len(), 2 * 3, "one request per sample: 2 steps x a rollout batch of 3");
    assert!(requests.iter().all(|r| r["completion"].is_string() && r["answer"].is_string()));
    let metrics: Vec<Value> = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(metrics.iter().all(|m| (m["reward_mean"].as_f64().unwrap() - 0.25).abs() < 1e-6), "{metrics:?}");
    // no reward model to start a value model from
    let out = args(&dir.path().join("novalue"), "echo 1", "");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--value-model DIR") && err.contains("--value-head"), "{err}");
}

/// An HTTP server on 127.0.0.1 that answers each POST with `answer(body) -> (status, body)` (after
/// `delay`); returns its URL and the JSON bodies it received.
fn serve(delay: std::time::Duration, answer: impl Fn(&Value) -> (u16, String) + Send + 'static) -> (String, std::sync::Arc<std::sync::Mutex<Vec<Value>>>) {
    use std::io::{BufRead, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/score", listener.local_addr().unwrap());
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
            let (mut len, mut line) = (0usize, String::new());
            loop {
                line.clear();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim_end().is_empty() {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap();
                }
            }
            let mut body = vec![0u8; len];
            if reader.read_exact(&mut body).is_err() {
                continue;
            }
            let v: Value = serde_json::from_slice(&body).unwrap();
            let (status, text) = answer(&v);
            log.lock().unwrap().push(v);
            std::thread::sleep(delay);
            let _ = write!(stream, "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}", text.len());
        }
    });
    (url, seen)
}

/// The test server's reward of a request: a function of its completion.
fn length_reward(r: &Value) -> f64 {
    (r["completion"].as_str().unwrap().chars().count() % 5) as f64 / 4.0
}

#[test]
fn grpo_trains_on_an_http_endpoints_rewards() {
    let dir = tempfile::tempdir().unwrap();
    let (base, prompts) = policy_and_prompts(dir.path());
    let (url, seen) = serve(std::time::Duration::ZERO, |body| {
        let rewards: Vec<f64> = body["requests"].as_array().unwrap().iter().map(length_reward).collect();
        (200, serde_json::json!({ "rewards": rewards }).to_string())
    });
    let out = dir.path().join("grpo");
    let mut args = grpo_args(&base, &prompts, &out, "unused");
    let at = args.iter().position(|a| *a == "--reward-cmd").unwrap();
    args[at] = "--reward-url";
    args[at + 1] = &url;
    ok(&rlhf(&args), "grpo --reward-url");
    let bodies = seen.lock().unwrap().clone();
    assert_eq!(bodies.len(), 2, "one POST per step");
    let metrics: Vec<Value> = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    for (body, m) in bodies.iter().zip(&metrics) {
        let requests = body["requests"].as_array().unwrap();
        assert_eq!(requests.len(), 4);
        for (i, r) in requests.iter().enumerate() {
            // OpenRLHF's fields: the full text, the prompt and the label
            let full = format!("{}{}", r["prompt"].as_str().unwrap(), r["completion"].as_str().unwrap());
            assert_eq!(body["query"][i].as_str().unwrap(), full);
            assert_eq!(body["prompts"][i], r["prompt"]);
            assert_eq!(body["labels"][i], r["answer"]);
        }
        let mean = requests.iter().map(length_reward).sum::<f64>() / 4.0;
        assert!((m["reward_mean"].as_f64().unwrap() - mean).abs() < 1e-6, "{} vs the server's {mean}", m["reward_mean"]);
    }
}

#[test]
fn an_http_endpoint_that_fails_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (base, prompts) = policy_and_prompts(dir.path());
    let run = |name: &str, url: &str, timeout: &str| {
        let out = dir.path().join(name);
        let mut args = grpo_args(&base, &prompts, &out, "unused");
        let at = args.iter().position(|a| *a == "--reward-cmd").unwrap();
        args[at] = "--reward-url";
        args[at + 1] = url;
        args.extend(["--reward-timeout", timeout]);
        let out = rlhf(&args);
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(!out.status.success() && !err.contains("panicked"), "{err}");
        err
    };
    let (url, _) = serve(std::time::Duration::ZERO, |_| (503, "model overloaded".into()));
    let err = run("down", &url, "30");
    assert!(err.contains(&url) && err.contains("HTTP 503") && err.contains("model overloaded"), "{err}");
    let (url, _) = serve(std::time::Duration::ZERO, |_| (200, "{\"rewards\": [1, 2, 3]}".into()));
    assert!(run("short", &url, "30").contains("3 rewards for a batch of 4"));
    let (url, _) = serve(std::time::Duration::from_secs(20), |_| (200, "[1, 1, 1, 1]".into()));
    let start = std::time::Instant::now();
    assert!(run("slow", &url, "1").contains("no answer within 1 s"));
    assert!(start.elapsed() < std::time::Duration::from_secs(15));
}
