//! The feedback commands: `rlhf sample` (candidates to label, with their log-probs), `rlhf
//! compare` (head-to-head games judged by a reward model) and `rlhf elo` (ratings from games and
//! labelled rankings: the table best first, the plot, bad lines named).

use std::process::Command;

fn rlhf(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_rlhf")).args(args).output().expect("running rlhf")
}

#[test]
fn elo_rates_models_best_first_with_a_plot() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("outcomes.jsonl");
    // strong beats mid 3 of 4 and weak always; mid beats weak 3 of 4 (one tie); a ranking adds a game
    let mut lines = Vec::new();
    for i in 0..20 {
        lines.push(format!("{{\"a\": \"strong\", \"b\": \"mid\", \"winner\": \"{}\"}}", if i % 4 == 0 { "b" } else { "a" }));
        lines.push("{\"a\": \"weak\", \"b\": \"strong\", \"winner\": \"b\"}".to_string());
        lines.push(format!("{{\"a\": \"mid\", \"b\": \"weak\", \"winner\": \"{}\"}}", ["a", "a", "tie", "b"][i % 4]));
    }
    lines.push("{\"prompt\": \"p\", \"ranked\": [\"x\", \"y\"], \"models\": [\"mid\", \"weak\"]}".to_string());
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let svg = dir.path().join("elo.svg");
    let out = rlhf(&["elo", "--comparisons", file.to_str().unwrap(), "--bootstrap", "100", "--svg", svg.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("3 models, 61 games"), "{text}");
    let rank = |name: &str| text.lines().position(|l| l.starts_with("| ") && l.contains(&format!(" {name} |"))).unwrap();
    assert!(rank("strong") < rank("mid") && rank("mid") < rank("weak"), "{text}");
    // the win-rate matrix: strong scored 15 of its 20 games against mid
    assert!(text.contains("| strong | - | 0.75 (20) |"), "{text}");
    let plot = std::fs::read_to_string(&svg).unwrap();
    assert_eq!(plot.matches("<circle").count(), 3);

    std::fs::write(&file, "{\"a\": \"x\", \"b\": \"y\", \"winner\": \"a\"}\n{\"a\": \"x\", \"b\": \"y\", \"winner\": \"draw\"}\n").unwrap();
    let out = rlhf(&["elo", "--comparisons", file.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("outcomes.jsonl:2") && err.contains("`winner`") && !err.contains("panicked"), "{err}");
}

#[test]
fn compare_judges_models_head_to_head_for_elo() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    std::fs::write(p("data.jsonl"), "{\"prompt\": \"hi \", \"completion\": \"there\"}\n{\"text\": \"a cat sat\"}\n").unwrap();
    std::fs::write(p("prefs.jsonl"), "{\"prompt\": \"hi \", \"chosen\": \"there\", \"rejected\": \"no\"}\n").unwrap();
    std::fs::write(p("prompts.jsonl"), "{\"prompt\": \"hi \"}\n{\"prompt\": \"a \"}\n{\"prompt\": \"the \"}\n").unwrap();
    for (name, seed) in [("alpha", "1"), ("beta", "2")] {
        let out = rlhf(&["sft", "--init", "gpt2-tiny", "--data", &p("data.jsonl"), "--out", &p(name), "--steps", "1", "--seq-len", "16", "--seed", seed]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let out = rlhf(&["rm", "--model", &p("alpha"), "--data", &p("prefs.jsonl"), "--out", &p("judge"), "--steps", "1", "--seq-len", "16", "--eval-fraction", "0"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let models = format!("{},{}", p("alpha"), p("beta"));
    let out = rlhf(&["compare", "--models", &models, "--prompts", &p("prompts.jsonl"), "--judge", &p("judge"), "--out", &p("games.jsonl"), "--max-new-tokens", "4"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let games: Vec<serde_json::Value> = std::fs::read_to_string(p("games.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(games.len(), 3, "one game per prompt for two models");
    for g in &games {
        assert_eq!((g["a"].as_str(), g["b"].as_str()), (Some("alpha"), Some("beta")));
        let (sa, sb) = (g["score_a"].as_f64().unwrap(), g["score_b"].as_f64().unwrap());
        let expected = if sa > sb { "a" } else if sb > sa { "b" } else { "tie" };
        assert_eq!(g["winner"], expected, "{g}");
    }
    // the judged games are not replaced by accident
    let again = rlhf(&["compare", "--models", &models, "--prompts", &p("prompts.jsonl"), "--judge", &p("judge"), "--out", &p("games.jsonl")]);
    assert!(!again.status.success() && String::from_utf8_lossy(&again.stderr).contains("--overwrite"));
    let out = rlhf(&["elo", "--comparisons", &p("games.jsonl"), "--bootstrap", "10"]);
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("2 models, 3 games"), "{}", String::from_utf8_lossy(&out.stderr));
    // one model is no comparison
    let out = rlhf(&["compare", "--models", &p("alpha"), "--prompts", &p("prompts.jsonl"), "--judge", &p("judge"), "--out", &p("g2.jsonl")]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("at least two"));
}

#[test]
fn sample_writes_k_candidates_per_prompt_with_their_logprobs() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    std::fs::write(p("data.jsonl"), "{\"prompt\": \"hi \", \"completion\": \"there\"}\n").unwrap();
    std::fs::write(p("prompts.jsonl"), "{\"prompt\": \"hi \", \"id\": 7}\n{\"messages\": [{\"role\": \"user\", \"content\": \"yo\"}]}\n{\"prompt\": \"a \"}\n").unwrap();
    for (name, seed) in [("alpha", "1"), ("beta", "2")] {
        let out = rlhf(&["sft", "--init", "gpt2-tiny", "--data", &p("data.jsonl"), "--out", &p(name), "--steps", "1", "--seq-len", "16", "--seed", seed]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let out = rlhf(&["sample", "--model", &p("alpha"), "--prompts", &p("prompts.jsonl"), "--k", "3", "--out", &p("cands.jsonl"), "--max-new-tokens", "5", "--batch-size", "2"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(p("cands.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 3, "one line per prompt");
    assert_eq!(lines[0]["id"], 7, "the prompt line's fields travel");
    assert!(lines[1]["prompt"].as_str().unwrap().contains("yo"), "messages become the prompt as text");
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l["prompt_index"], i);
        assert!(l["sampling"]["seed"].is_u64() && l["sampling"]["temperature"].is_number());
        let samples = l["samples"].as_array().unwrap();
        assert_eq!(samples.len(), 3);
        for s in samples {
            let lp = s["logprobs"].as_array().unwrap();
            assert_eq!(lp.len(), s["tokens"].as_u64().unwrap() as usize);
            let sum: f64 = lp.iter().map(|x| x.as_f64().unwrap()).sum();
            assert!(lp.iter().all(|x| x.as_f64().unwrap() <= 0.0) && (sum - s["sum_logprob"].as_f64().unwrap()).abs() < 1e-4);
            assert_eq!(s["model"], "alpha");
        }
    }
    // head-to-head: one sample from each model per prompt
    let models = format!("{},{}", p("alpha"), p("beta"));
    let out = rlhf(&["sample", "--model", &models, "--prompts", &p("prompts.jsonl"), "--out", &p("h2h.jsonl"), "--max-new-tokens", "5"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let first: serde_json::Value = serde_json::from_str(std::fs::read_to_string(p("h2h.jsonl")).unwrap().lines().next().unwrap()).unwrap();
    let who: Vec<&str> = first["samples"].as_array().unwrap().iter().map(|s| s["model"].as_str().unwrap()).collect();
    assert_eq!(who, ["alpha", "beta"]);
    // an existing file is not replaced, and one sample of one model is refused
    let again = rlhf(&["sample", "--model", &p("alpha"), "--prompts", &p("prompts.jsonl"), "--out", &p("cands.jsonl")]);
    assert!(!again.status.success() && String::from_utf8_lossy(&again.stderr).contains("--overwrite"));
    let one = rlhf(&["sample", "--model", &p("alpha"), "--prompts", &p("prompts.jsonl"), "--k", "1", "--out", &p("one.jsonl")]);
    assert!(!one.status.success() && String::from_utf8_lossy(&one.stderr).contains("nothing to rank"));
}
