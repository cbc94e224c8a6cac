//! The DPO family (the `preference_loss_fwd_bwd` op itself is checked in tests/ops): the
//! trainer's gradient through the model against finite
//! differences, DPO raising the implicit reward accuracy on a toy preference set (training and
//! held-out pairs), the reference log-probs computed once and equal to a fresh scoring, and the
//! `rlhf dpo` command with its errors.

use crate::common;

use rlhf::backend::ops::Backend;
use rlhf::backend::CpuBackend;
use rlhf::data::preference::PreferenceGroup;
use rlhf::data::rng::Rng;
use rlhf::data::tokenizer::Tokenizer;
use rlhf::model::scoring::token_logprobs;
use rlhf::model::{Model, ModelConfig};
use rlhf::demo::task;
use rlhf::rl::dpo::{pairs_from_groups, run_dpo, DpoConfig, DpoLoss, DpoPair, DpoTrainer};
use rlhf::rl::reward::split_eval;
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};

fn group(tok: &Tokenizer, prompt: &str, completions: &[&str]) -> PreferenceGroup {
    let p = tok.encode(prompt, true).unwrap();
    let sequences = completions
        .iter()
        .map(|c| {
            let mut ids = p.clone();
            ids.extend(tok.encode(c, false).unwrap());
            ids.extend(tok.eos_id());
            ids
        })
        .collect();
    PreferenceGroup { line: 1, sequences, prompt_len: p.len(), margin: 0.0 }
}

fn tiny(be: &CpuBackend, preset: &str, tok: &Tokenizer, seed: u64) -> Model<CpuBackend> {
    Model::init(be, ModelConfig::preset(preset, tok.vocab_size()).unwrap(), seed).unwrap()
}

#[test]
fn batches_mask_exactly_the_completion_and_rankings_become_best_vs_each() {
    let tok = Tokenizer::byte_level();
    let g = group(&tok, "Q: a", &[" yes", " no", " maybe"]);
    let pairs = pairs_from_groups(std::slice::from_ref(&g)).unwrap();
    assert_eq!(pairs.len(), 2);
    assert!(pairs.iter().all(|p| p.chosen == g.sequences[0]));
    assert_eq!(pairs[1].rejected, g.sequences[2]);
    let refs: Vec<&DpoPair> = pairs.iter().collect();
    let b = rlhf::rl::dpo::PairBatch::new(&refs, 0);
    let pl = g.prompt_len;
    // row 0 (chosen " yes" + eos): targets are the 4 completion tokens and the end token only
    let row0: Vec<i32> = b.targets[..b.t].to_vec();
    assert!(row0[..pl - 1].iter().all(|&x| x == -1), "prompt tokens must not be targets");
    let want: Vec<i32> = g.sequences[0][pl..].iter().map(|&x| x as i32).collect();
    assert_eq!(&row0[pl - 1..pl - 1 + want.len()], want.as_slice());
    assert_eq!(b.mask().iter().filter(|&&m| m != 0.0).count(), 2 * (g.sequences[0].len() - pl) + (g.sequences[1].len() - pl) + (g.sequences[2].len() - pl));
    // rows 2, 3 are the rejected ones
    assert_eq!(b.inputs[2 * b.t], g.sequences[1][0] as i32);
    // a completion with nothing after the prompt is an error naming its line
    let empty = PreferenceGroup { line: 9, sequences: vec![g.sequences[0].clone(), g.sequences[0][..pl].to_vec()], prompt_len: pl, margin: 0.0 };
    let e = pairs_from_groups(&[empty]).unwrap_err().to_string();
    assert!(e.contains("line 9"), "{e}");
}

#[test]
fn trainer_gradient_matches_finite_differences_through_the_model() {
    let be = CpuBackend::new();
    let tok = Tokenizer::byte_level();
    let mut model = tiny(&be, "llama-tiny", &tok, 5);
    let mut rng = Rng::new(6);
    for w in model.weights.iter_mut() {
        for x in w.iter_mut() {
            *x += rng.normal() * 0.05;
        }
    }
    let groups = [group(&tok, "Q: hi", &[" good", " bad one"]), group(&tok, "Q: 2+2", &[" 4", " five"])];
    let pairs = pairs_from_groups(&groups).unwrap();
    let ptrs: Vec<&DpoPair> = pairs.iter().collect();
    let refs = vec![[-30.0, -35.0], [-20.0, -25.0]];
    let mut cfg = DpoConfig::new("unused".into(), 1, 2);
    cfg.beta = 0.5;
    let mut tr = DpoTrainer::new(&be, &model, 2, 16, 0).unwrap();
    tr.zero_grad(&be).unwrap();
    tr.accumulate(&be, &model, &ptrs, &refs, cfg.op_params(2, 0, 0.5), true).unwrap();
    let grads: Vec<Vec<f32>> = tr.grads().iter().map(|g| be.download(g).unwrap()).collect();
    let layout = model.layout().clone();
    let probes = [("wte", layout.wte), ("qkv_w", layout.layers[0].qkv_w), ("lnf_w", layout.lnf_w)];
    let eps = 1e-2f32;
    for (name, idx) in probes {
        let candidates: Vec<usize> = (0..model.weights[idx].len()).filter(|&j| grads[idx][j].abs() > 1e-4).collect();
        assert!(!candidates.is_empty(), "{name}: no gradient");
        for &j in candidates.iter().step_by((candidates.len() / 4).max(1)) {
            let orig = model.weights[idx][j];
            model.weights[idx][j] = orig + eps;
            let lp = tr.evaluate(&be, &model, &ptrs, &refs, &cfg).unwrap().loss as f64;
            model.weights[idx][j] = orig - eps;
            let lm = tr.evaluate(&be, &model, &ptrs, &refs, &cfg).unwrap().loss as f64;
            model.weights[idx][j] = orig;
            let num = (lp - lm) / (2.0 * eps as f64);
            let ana = grads[idx][j] as f64;
            assert!((num - ana).abs() / (1e-3 + num.abs().max(ana.abs())) < 5e-2, "{name}[{j}]: finite difference {num:.6} vs analytic {ana:.6}");
        }
    }
}

#[test]
fn dpo_raises_the_implicit_reward_accuracy_and_scores_the_reference_once() {
    let be = CpuBackend::new();
    let tok = Tokenizer::byte_level();
    let groups = task::preference_groups(&tok, 120, 0.0, 3).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut model = tiny(&be, "gpt2-tiny", &tok, 1);
    // a reference different from the policy's start, so that its sums are checkable
    let reference = tiny(&be, "gpt2-tiny", &tok, 2);
    let ref_copy = tiny(&be, "gpt2-tiny", &tok, 2);
    let mut cfg = DpoConfig::new(dir.path().to_path_buf(), 40, 8);
    cfg.train.lr = 2e-3;
    cfg.train.seq_len = 64;
    cfg.eval_fraction = 0.25;
    cfg.train.log_every = 0;
    let s = run_dpo(&be, &mut model, Some(reference), &tok, groups, &cfg).unwrap();
    let before = s.eval_before.unwrap();
    let after = s.eval_after.unwrap();
    eprintln!(
        "held-out accuracy {} -> {}, train {} -> {}, epochs {}",
        before.reward_accuracy, after.reward_accuracy, s.first.reward_accuracy, s.last.reward_accuracy, s.epochs
    );
    assert!(after.reward_accuracy >= before.reward_accuracy + 0.15, "held-out accuracy {} -> {}", before.reward_accuracy, after.reward_accuracy);
    assert!(after.reward_accuracy >= 0.75, "held-out accuracy {}", after.reward_accuracy);
    assert!(s.last.loss < s.first.loss, "loss {} -> {}", s.first.loss, s.last.loss);
    assert!(after.margin > 0.0 && after.chosen_reward > after.rejected_reward);
    // several epochs, yet the reference scored every pair once
    assert!(s.epochs >= 2, "{} epochs", s.epochs);
    assert_eq!(s.reference_sequences, 2 * (s.train_pairs + s.eval_pairs));
    // the cached sums are the reference's log-probs of the completions, as `token_logprobs` gives them
    let cached: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(dir.path().join("ref_logps.json")).unwrap()).unwrap();
    assert_eq!(cached.len(), s.train_pairs + s.eval_pairs);
    // in the order of the file: the training pairs, then the held-out ones
    let (train, eval) = split_eval(task::preference_groups(&tok, 120, 0.0, 3).unwrap(), cfg.eval_fraction, cfg.train.seed);
    let all = [pairs_from_groups(&train).unwrap(), pairs_from_groups(&eval).unwrap()].concat();
    for (c, p) in cached.iter().zip(&all).step_by(7) {
        let line = c["line"].as_u64().unwrap() as usize;
        assert_eq!(line, p.line);
        let fresh = token_logprobs(&be, &ref_copy, &[p.chosen.clone(), p.rejected.clone()], 2).unwrap();
        let sum = |lp: &[f32]| lp[p.prompt_len - 1..].iter().map(|&x| x as f64).sum::<f64>();
        for (k, key) in ["chosen", "rejected"].iter().enumerate() {
            let got = c[key].as_f64().unwrap();
            let want = sum(&fresh[k]);
            assert!((got - want).abs() < 1e-3 * want.abs().max(1.0), "line {line} {key}: cached {got} vs fresh {want}");
        }
    }
    assert!(dir.path().join("model.safetensors").is_file() && dir.path().join("metrics.jsonl").is_file());
}

#[test]
fn every_loss_trains_and_the_first_step_has_zero_rewards() {
    let be = CpuBackend::new();
    let tok = Tokenizer::byte_level();
    for loss in [DpoLoss::Sigmoid, DpoLoss::Ipo, DpoLoss::Cdpo, DpoLoss::Simpo] {
        let dir = tempfile::tempdir().unwrap();
        let mut model = tiny(&be, "llama-tiny", &tok, 4);
        let mut cfg = DpoConfig::new(dir.path().to_path_buf(), 12, 6);
        (cfg.train.lr, cfg.train.seq_len, cfg.train.log_every, cfg.loss) = (3e-3, 64, 0, loss);
        if loss == DpoLoss::Cdpo {
            cfg.label_smoothing = 0.1;
        }
        if loss == DpoLoss::Simpo {
            cfg.beta = 2.0;
        }
        let s = run_dpo(&be, &mut model, None, &tok, task::preference_groups(&tok, 30, 0.0, 8).unwrap(), &cfg).unwrap();
        if loss != DpoLoss::Simpo {
            // policy == reference at step 1: every implicit reward is 0 (up to the rounding of
            // batches padded to other lengths)
            assert!(s.first.chosen_reward.abs() < 1e-5 && s.first.rejected_reward.abs() < 1e-5, "{loss:?}: {:?}", s.first);
        } else {
            assert_eq!(s.reference_sequences, 0, "SimPO scores no reference");
        }
        assert!(s.last.margin > s.first.margin, "{loss:?}: margin {} -> {}", s.first.margin, s.last.margin);
    }
}

fn rlhf(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rlhf")).args(args).output().expect("running rlhf")
}

#[track_caller]
fn assert_fails_with(out: &Output, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected failure; stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "panicked: {stderr}");
    for n in needles {
        assert!(stderr.contains(n), "stderr does not mention {n:?}: {stderr}");
    }
}

fn save_tiny(dir: &Path) {
    let be = CpuBackend::new();
    let tok = Tokenizer::byte_level();
    tiny(&be, "gpt2-tiny", &tok, 9).save(&be, dir, &tok).unwrap();
}

#[test]
fn dpo_command_trains_and_rejects_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let (model, out) = (dir.path().join("model"), dir.path().join("out"));
    save_tiny(&model);
    let data = dir.path().join("prefs.jsonl");
    let lines = [
        r#"{"prompt": "Q: hi", "chosen": " kind warm.", "rejected": " rude cold."}"#,
        r#"{"prompt": "Q: sea", "ranked": [" calm.", " blue.", " grim."]}"#,
        r#"{"prompt": "Q: day", "chosen": " glad.", "rejected": " sour."}"#,
    ];
    std::fs::write(&data, lines.join("\n") + "\n").unwrap();
    let m = model.to_str().unwrap();
    let (d, o) = (data.to_str().unwrap(), out.to_str().unwrap());
    let res = rlhf(&["dpo", "--model", m, "--data", d, "--out", o, "--steps", "3", "--batch-size", "2", "--lr", "1e-3", "--seq-len", "64"]);
    assert!(res.status.success(), "{}", String::from_utf8_lossy(&res.stderr));
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let rows: Vec<Value> = metrics.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 3);
    for key in ["loss", "reward_accuracy", "chosen_reward", "rejected_reward", "margin", "grad_norm", "lr", "tokens_per_sec"] {
        assert!(rows[2][key].is_number(), "metrics.jsonl lacks {key}: {}", rows[2]);
    }
    let refs: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(out.join("ref_logps.json")).unwrap()).unwrap();
    assert_eq!(refs.len(), 4, "1 + 2 (ranking: best vs each) + 1 pairs");
    assert!(out.join("model.safetensors").is_file());
    // a separate reference and the IPO loss, replacing the first run
    let res = rlhf(&["dpo", "--model", m, "--ref-model", m, "--data", d, "--out", o, "--steps", "1", "--loss", "ipo", "--seq-len", "64", "--overwrite"]);
    assert!(res.status.success(), "{}", String::from_utf8_lossy(&res.stderr));
    assert_eq!(std::fs::read_to_string(out.join("metrics.jsonl")).unwrap().lines().count(), 1);

    // refused settings and data, even with --overwrite, leave the run in --out as it was
    let base = ["dpo", "--model", m, "--data", d, "--out", o, "--steps", "1", "--seq-len", "64", "--overwrite"];
    let with = |extra: &[&str]| rlhf(&[&base[..], extra].concat());
    assert_fails_with(&with(&["--beta", "0"]), &["--beta"]);
    assert_fails_with(&with(&["--label-smoothing", "0.5"]), &["--label-smoothing"]);
    assert_fails_with(&with(&["--loss", "kto"]), &["--loss kto"]);
    assert_fails_with(&with(&["--loss", "cdpo"]), &["--label-smoothing"]);
    assert_fails_with(&with(&["--simpo-gamma", "1"]), &["--simpo-gamma"]);
    assert_fails_with(&with(&["--loss", "ipo", "--label-smoothing", "0.1"]), &["ipo"]);
    std::fs::write(&data, format!("{}\n{{\"prompt\": \"Q\", \"chosen\": 3}}\n", lines[0])).unwrap();
    assert_fails_with(&with(&[]), &["prefs.jsonl:2", "chosen"]);
    std::fs::write(&data, format!("{}\nnot json\n", lines[0])).unwrap();
    assert_fails_with(&with(&[]), &["prefs.jsonl:2"]);
    assert_eq!(std::fs::read_to_string(out.join("metrics.jsonl")).unwrap().lines().count(), 1);
}

/// One DPO micro-batch (forward, loss op, backward) on wgpu against the CPU: the statistics and
/// the parameter gradients agree (skipped without an adapter, except in CI).
#[test]
fn one_dpo_step_on_wgpu_matches_the_cpu() {
    let Some(g) = common::wgpu_or_skip("one DPO step on wgpu") else { return };
    let be = CpuBackend::new();
    let tok = Tokenizer::byte_level();
    let model = tiny(&be, "llama-tiny", &tok, 12);
    let gmodel = Model::from_host(&g, model.cfg().clone(), &model.to_host(&be).unwrap()).unwrap();
    let pairs = pairs_from_groups(&task::preference_groups(&tok, 4, 0.0, 5).unwrap()).unwrap();
    let ptrs: Vec<&DpoPair> = pairs.iter().collect();
    let refs: Vec<[f32; 2]> = (0..pairs.len()).map(|i| [-40.0 - i as f32, -38.0]).collect();
    let cfg = DpoConfig::new("unused".into(), 1, pairs.len());
    let max_t = pairs.iter().map(|p| p.chosen.len().max(p.rejected.len())).max().unwrap();
    let mut ct = DpoTrainer::new(&be, &model, pairs.len(), max_t, 0).unwrap();
    let mut gt = DpoTrainer::new(&g, &gmodel, pairs.len(), max_t, 0).unwrap();
    ct.zero_grad(&be).unwrap();
    gt.zero_grad(&g).unwrap();
    let p = cfg.op_params(pairs.len(), 0, 1.0 / pairs.len() as f32);
    ct.accumulate(&be, &model, &ptrs, &refs, p, true).unwrap();
    gt.accumulate(&g, &gmodel, &ptrs, &refs, p, true).unwrap();
    let (cs, gs) = (ct.stats(&be).unwrap(), gt.stats(&g).unwrap());
    assert!((cs.loss - gs.loss).abs() < 1e-4 && (cs.margin - gs.margin).abs() < 1e-3, "cpu {cs:?} vs wgpu {gs:?}");
    assert_eq!(cs.reward_accuracy, gs.reward_accuracy);
    for (i, (c, w)) in ct.grads().iter().zip(gt.grads()).enumerate() {
        let (c, w) = (be.download(c).unwrap(), g.download(w).unwrap());
        let scale = c.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-6);
        let worst = c.iter().zip(&w).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(worst <= 2e-3 * scale + 1e-6, "gradient {i}: max |wgpu - cpu| {worst} vs max |cpu| {scale}");
    }
}

#[test]
fn epochs_are_seeded_permutations_and_runs_repeat_exactly() {
    let be = CpuBackend::new();
    let tok = Tokenizer::byte_level();
    let model = tiny(&be, "llama-tiny", &tok, 3);
    let mut st = rlhf::rl::dpo::DpoState::new(&be, &model, 10, 42, Default::default()).unwrap();
    let (e0, e1) = (st.next_pairs(10), st.next_pairs(10));
    for e in [&e0, &e1] {
        let mut sorted = e.clone();
        sorted.sort();
        assert_eq!(sorted, (0..10).collect::<Vec<_>>(), "an epoch visits every pair once");
    }
    assert_ne!(e0, e1, "each epoch is reshuffled");
    assert_eq!(st.epoch, 1);
    let mut again = rlhf::rl::dpo::DpoState::new(&be, &model, 10, 42, Default::default()).unwrap();
    assert_eq!(again.next_pairs(20), [e0, e1].concat(), "the same seed gives the same order");
    // two runs with one seed give the same metrics, bit for bit
    let run = || {
        let dir = tempfile::tempdir().unwrap();
        let mut m = tiny(&be, "llama-tiny", &tok, 3);
        let mut cfg = DpoConfig::new(dir.path().to_path_buf(), 4, 4);
        (cfg.train.lr, cfg.train.log_every) = (1e-3, 0);
        run_dpo(&be, &mut m, None, &tok, task::preference_groups(&tok, 12, 0.0, 1).unwrap(), &cfg).unwrap();
        let metrics = std::fs::read_to_string(dir.path().join("metrics.jsonl")).unwrap();
        metrics.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()["loss"].as_f64().unwrap()).collect::<Vec<_>>()
    };
    assert_eq!(run(), run());
}
