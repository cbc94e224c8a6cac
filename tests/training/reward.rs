//! Reward models: the ranking loss's gradient through the score head and the whole trunk against
//! finite differences, learning a synthetic preference, the Hugging Face round trip, and the
//! preference data's bad input.

use rlhf::backend::{Backend, CpuBackend};
use rlhf::data::preference::{load_preference_jsonl, PreferenceGroup};
use rlhf::data::rng::Rng;
use rlhf::data::tokenizer::Tokenizer;
use rlhf::model::{Model, ModelConfig};
use rlhf::rl::reward::{run_rm, RewardTrainer, RmConfig};
use rlhf::train::AdamWConfig;

fn group(tok: &Tokenizer, prompt: &str, completions: &[&str], margin: f32) -> PreferenceGroup {
    let p = tok.encode(prompt, true).unwrap();
    let sequences = completions
        .iter()
        .map(|c| {
            let mut ids = p.clone();
            ids.extend(tok.encode(c, false).unwrap());
            ids
        })
        .collect();
    PreferenceGroup { line: 0, sequences, prompt_len: p.len(), margin }
}

fn reward_model(be: &CpuBackend, preset: &str, tok: &Tokenizer, seed: u64) -> Model<CpuBackend> {
    let mut cfg = ModelConfig::preset(preset, tok.vocab_size()).unwrap();
    cfg.score_head = true;
    let mut model = Model::init(be, cfg, seed).unwrap();
    // larger weights than the default init, so every path carries a visible gradient
    let mut rng = Rng::new(seed + 1);
    for w in model.weights.iter_mut() {
        for x in w.iter_mut() {
            *x += rng.normal() * 0.05;
        }
    }
    model
}

#[test]
fn ranking_loss_gradient_matches_finite_differences() {
    let be = CpuBackend::new();
    let tok = Tokenizer::byte_level();
    for preset in ["gpt2-tiny", "llama-tiny"] {
        let mut model = reward_model(&be, preset, &tok, 3);
        let groups = [group(&tok, "Q: hi", &[" good", " bad answer"], 0.0), group(&tok, "Q: sum", &[" 4", " four", " 5!"], 0.3)];
        let refs: Vec<&PreferenceGroup> = groups.iter().collect();
        let mut tr = RewardTrainer::new(&be, &model, 8, 32, AdamWConfig::default()).unwrap();
        let stats = tr.loss_and_grads(&be, &model, &refs, 0.0, 0).unwrap();
        assert_eq!(stats.pairs, 4);
        let grads: Vec<Vec<f32>> = tr.grads().iter().map(|g| be.download(g).unwrap()).collect();
        let layout = model.layout().clone();
        let l0 = &layout.layers[0];
        let probes = [
            ("score", layout.score.unwrap()),
            ("wte", layout.wte),
            ("qkv_w", l0.qkv_w),
            ("o_w", l0.o_w),
            ("fc_w", l0.fc_w),
            ("proj_w", l0.proj_w),
            ("ln1_w", l0.ln1_w),
            ("lnf_w", layout.lnf_w),
        ];
        let eps = 1e-2f32;
        for (name, idx) in probes {
            // coordinates spread over the tensor; for the embedding, over the rows the batch uses
            let candidates: Vec<usize> = (0..model.weights[idx].len()).filter(|&j| name != "wte" || grads[idx][j] != 0.0).collect();
            let mut checked = 0;
            for &j in candidates.iter().step_by((candidates.len() / 6).max(1)) {
                let orig = model.weights[idx][j];
                model.weights[idx][j] = orig + eps;
                let lp = tr.evaluate(&be, &model, &groups, 0.0, 0).unwrap().loss as f64;
                model.weights[idx][j] = orig - eps;
                let lm = tr.evaluate(&be, &model, &groups, 0.0, 0).unwrap().loss as f64;
                model.weights[idx][j] = orig;
                let num = (lp - lm) / (2.0 * eps as f64);
                let ana = grads[idx][j] as f64;
                let err = (num - ana).abs() / (1e-3 + num.abs().max(ana.abs()));
                assert!(err < 3e-2, "{preset} {name}[{j}]: finite difference {num:.6} vs analytic {ana:.6}");
                checked += 1;
            }
            assert!(checked > 0, "{preset} {name}: nothing checked");
        }
    }
}

/// Completions with kind words are preferred to unkind ones; rankings prefer more kind words.
fn synthetic_groups(tok: &Tokenizer, n: usize, seed: u64) -> Vec<PreferenceGroup> {
    const GOOD: &[&str] = &["kind", "warm", "calm", "glad", "nice", "fair"];
    const BAD: &[&str] = &["rude", "cold", "mean", "dull", "sour", "grim"];
    let mut rng = Rng::new(seed);
    let pick = |words: &[&str], rng: &mut Rng| words[rng.below(words.len() as u64) as usize].to_string();
    (0..n)
        .map(|i| {
            let prompt = format!("Say {}:", ["it", "more", "something", "a word"][i % 4]);
            if i % 3 == 0 {
                let best = format!(" {} {}", pick(GOOD, &mut rng), pick(GOOD, &mut rng));
                let mid = format!(" {} {}", pick(GOOD, &mut rng), pick(BAD, &mut rng));
                let worst = format!(" {} {}", pick(BAD, &mut rng), pick(BAD, &mut rng));
                group(tok, &prompt, &[&best, &mid, &worst], 0.0)
            } else {
                let chosen = format!(" {}", pick(GOOD, &mut rng));
                let rejected = format!(" {}", pick(BAD, &mut rng));
                group(tok, &prompt, &[&chosen, &rejected], 0.0)
            }
        })
        .collect()
}

#[test]
fn reward_model_learns_a_preference_and_round_trips() {
    let be = CpuBackend::new();
    let tok = Tokenizer::byte_level();
    let mut cfg = ModelConfig::preset("gpt2-tiny", tok.vocab_size()).unwrap();
    cfg.score_head = true;
    let mut model = Model::init(&be, cfg, 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let rm = RmConfig {
        out: dir.path().to_path_buf(),
        steps: 60,
        lr: 3e-3,
        min_lr_ratio: 0.1,
        warmup: 5,
        batch_size: 8,
        seq_len: 64,
        seed: 4,
        optim: AdamWConfig { weight_decay: 0.0, ..AdamWConfig::default() },
        margin: 0.0,
        eval_fraction: 0.25,
        eval_every: 0,
        log_every: 0,
        control: Default::default(),
    };
    let summary = run_rm(&be, &mut model, &tok, synthetic_groups(&tok, 240, 9), &rm).unwrap();
    let before = summary.eval_before.unwrap();
    let after = summary.eval.unwrap();
    assert_eq!(summary.eval_groups, 60);
    assert!(after.pairs >= 80);
    assert!(after.accuracy > 0.9, "held-out accuracy {:.3} (before {:.3})", after.accuracy, before.accuracy);
    assert!(after.loss < before.loss);
    let metrics = std::fs::read_to_string(dir.path().join("metrics.jsonl")).unwrap();
    let last: serde_json::Value = serde_json::from_str(metrics.lines().last().unwrap()).unwrap();
    assert!(last["eval_accuracy"].as_f64().unwrap() > 0.9);

    // saved as a Hugging Face sequence-classification model, and loaded back exactly
    let config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.path().join("config.json")).unwrap()).unwrap();
    assert_eq!(config["architectures"][0], "GPT2ForSequenceClassification");
    assert_eq!(config["num_labels"], 1);
    let again = Model::load_reward(&be, dir.path(), 0).unwrap();
    assert_eq!(again.to_host(&be).unwrap(), model.to_host(&be).unwrap());
    let seqs = vec![tok.encode("Say it: kind", true).unwrap(), tok.encode("Say it: rude", true).unwrap()];
    let mut tr = RewardTrainer::new(&be, &again, 2, 32, AdamWConfig::default()).unwrap();
    let scores = tr.score(&be, &again, &seqs, 0).unwrap();
    assert!(scores[0] > scores[1], "kind {} vs rude {}", scores[0], scores[1]);
}

#[test]
fn a_causal_lm_loads_as_a_reward_model() {
    let be = CpuBackend::new();
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/llama");
    let lm = Model::load(&be, &dir).unwrap();
    let rm = Model::load_reward(&be, &dir, 5).unwrap();
    let score = rm.layout().score.unwrap();
    assert!(rm.layout().lm_head.is_none());
    assert_eq!(rm.weights[score].len(), lm.cfg().hidden_size);
    assert!(rm.weights[score].iter().any(|&x| x != 0.0));
    // the trunk is the LM's
    assert_eq!(rm.weights[rm.layout().wte], lm.weights[lm.layout().wte]);
}

#[test]
fn preference_data_bad_input() {
    let tok = Tokenizer::byte_level();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("prefs.jsonl");
    let cases = [
        ("{\"prompt\": \"p\", \"ranked\": [\"only one\"]}\n", "prefs.jsonl:1"),
        ("{\"prompt\": \"p\", \"chosen\": \"a\"}\n", "rejected"),
        ("{\"prompt\": \"a very long prompt that does not fit\", \"chosen\": \"a\", \"rejected\": \"b\"}\n", "no room"),
        ("{\"prompt\": \"p\", \"chosen\": \"a\", \"rejected\": \"b\", \"margin\": \"big\"}\n", "margin"),
        ("\n", "no preference examples"),
    ];
    for (text, needle) in cases {
        std::fs::write(&path, text).unwrap();
        let err = load_preference_jsonl(&path, &tok, 16).unwrap_err().to_string();
        assert!(err.contains(needle), "{text:?}: {err}");
        assert!(err.contains("prefs.jsonl"), "{err}");
    }
    std::fs::write(&path, "{\"prompt\": \"p\", \"ranked\": [\"a\", \"b\", \"c\"], \"margin\": 0.5}\n").unwrap();
    let g = load_preference_jsonl(&path, &tok, 16).unwrap();
    assert_eq!(g[0].sequences.len(), 3);
    assert_eq!(g[0].n_pairs(), 3);
    assert_eq!(g[0].margin, 0.5);
}
