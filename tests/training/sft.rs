//! SFT end to end on the CPU backend: the loss on the built-in corpus drops clearly, runs are
//! deterministic for a seed, and gradient accumulation over micro-batches gives the gradient of
//! the whole batch (the mean over all supervised tokens).

use rlhf::backend::CpuBackend;
use rlhf::data::batch::Batch;
use rlhf::data::builtin::builtin_corpus;
use rlhf::data::jsonl::Example;
use rlhf::data::tokenizer::Tokenizer;
use rlhf::model::{Model, ModelConfig};
use rlhf::rl::sft::{run_sft, SftConfig};
use rlhf::train::lm::LmTrainer;
use rlhf::train::AdamWConfig;
use serde_json::Value;

fn corpus_examples(tok: &Tokenizer, n: usize) -> Vec<Example> {
    builtin_corpus(n, 3)
        .iter()
        .map(|t| {
            let ids = tok.encode(t, true).unwrap();
            let mask = vec![true; ids.len()];
            Example { ids, loss_mask: mask }
        })
        .collect()
}

fn config(out: &std::path::Path, steps: usize) -> SftConfig {
    SftConfig {
        out: out.to_path_buf(),
        steps,
        lr: 3e-3,
        min_lr_ratio: 0.1,
        warmup: 5,
        batch_size: 8,
        grad_accum: 1,
        seq_len: 64,
        seed: 11,
        optim: AdamWConfig { weight_decay: 0.0, ..AdamWConfig::default() },
        log_every: 0,
        control: Default::default(),
    }
}

fn losses(dir: &std::path::Path) -> Vec<f64> {
    std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap().lines().map(|l| serde_json::from_str::<Value>(l).unwrap()["loss"].as_f64().unwrap()).collect()
}

#[test]
fn sft_on_builtin_corpus_lowers_the_loss() {
    let be = CpuBackend::new();
    let tok = Tokenizer::byte_level();
    let cfg_model = ModelConfig::preset("gpt2-tiny", tok.vocab_size()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut model = Model::init(&be, cfg_model, 5).unwrap();
    let summary = run_sft(&be, &mut model, &tok, corpus_examples(&tok, 400), &config(dir.path(), 80)).unwrap();
    let l = losses(dir.path());
    assert_eq!(l.len(), 80);
    let first: f64 = l[..5].iter().sum::<f64>() / 5.0;
    let last: f64 = l[75..].iter().sum::<f64>() / 5.0;
    // a byte-level model starts near ln(vocab) and must learn the corpus' bytes and words
    assert!(first > 4.5, "initial loss {first} should be near ln(vocab)");
    assert!(last < 0.6 * first, "loss should drop clearly: {first:.3} -> {last:.3}");
    // and steadily: each quarter's mean below the previous one
    let q: Vec<f64> = l.chunks(20).map(|c| c.iter().sum::<f64>() / c.len() as f64).collect();
    assert!(q.windows(2).all(|w| w[1] < w[0]), "quarter means should fall: {q:?}");
    assert!(summary.tokens > 0 && summary.tokens_per_sec > 0.0);
}

#[test]
fn sft_is_deterministic_for_a_seed() {
    let be = CpuBackend::new();
    let tok = Tokenizer::byte_level();
    let run = |dir: &std::path::Path| {
        let cfg = ModelConfig::preset("llama-tiny", tok.vocab_size()).unwrap();
        let mut model = Model::init(&be, cfg, 9).unwrap();
        run_sft(&be, &mut model, &tok, corpus_examples(&tok, 50), &config(dir, 6)).unwrap();
        (losses(dir), model.to_host(&be).unwrap())
    };
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (la, wa) = run(a.path());
    let (lb, wb) = run(b.path());
    assert_eq!(la, lb);
    assert_eq!(wa, wb);
}

#[test]
fn gradient_accumulation_equals_the_full_batch() {
    let be = CpuBackend::new();
    let tok = Tokenizer::byte_level();
    let cfg = ModelConfig::preset("qwen2-tiny", tok.vocab_size()).unwrap();
    let model = Model::init(&be, cfg, 2).unwrap();
    let ex = corpus_examples(&tok, 4);
    // prompt-masked examples of different lengths, so the two halves supervise different counts
    let ex: Vec<Example> = ex
        .into_iter()
        .enumerate()
        .map(|(i, mut e)| {
            for m in e.loss_mask.iter_mut().take(3 + 4 * i) {
                *m = false;
            }
            e
        })
        .collect();
    let full = Batch::from_examples(&ex, 48, 0);
    let halves = [Batch::from_examples(&ex[..2], 48, 0), Batch::from_examples(&ex[2..], 48, 0)];
    assert_eq!(full.n_supervised, halves[0].n_supervised + halves[1].n_supervised);
    assert_ne!(halves[0].n_supervised, halves[1].n_supervised);
    let grads = |batches: &[&Batch]| {
        let total: usize = batches.iter().map(|b| b.n_supervised).sum();
        let mut tr = LmTrainer::new(&be, &model, 4, 4 * 48, AdamWConfig::default()).unwrap();
        tr.zero_grad(&be).unwrap();
        for b in batches {
            tr.accumulate(&be, &model, b, 1.0 / total as f32).unwrap();
        }
        let stats = tr.peek(&be).unwrap();
        (stats, tr.grads.clone())
    };
    let (s_full, g_full) = grads(&[&full]);
    let (s_acc, g_acc) = grads(&[&halves[0], &halves[1]]);
    assert!((s_full.loss - s_acc.loss).abs() < 1e-5 * s_full.loss.abs(), "{} vs {}", s_full.loss, s_acc.loss);
    assert!((s_full.grad_norm - s_acc.grad_norm).abs() < 1e-4 * s_full.grad_norm);
    for (a, b) in g_full.iter().zip(&g_acc) {
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-5 + 1e-3 * x.abs());
        }
    }
}

/// A batch that makes the loss and gradients NaN (here: a NaN token weight) is skipped by the
/// optimiser — weights, moments and step count untouched — and the next finite batch trains as
/// if the bad one had never been fed.
#[test]
fn a_nan_producing_batch_updates_nothing_and_training_goes_on() {
    let be = CpuBackend::new();
    let tok = Tokenizer::byte_level();
    let model0 = Model::init(&be, ModelConfig::preset("gpt2-tiny", tok.vocab_size()).unwrap(), 5).unwrap();
    let ex = corpus_examples(&tok, 4);
    let batch = Batch::from_examples(&ex, 48, 0);
    let w = 1.0 / batch.n_supervised as f32;
    let run = |feed_nan: bool| {
        let mut model = Model::from_host(&be, model0.cfg().clone(), &model0.to_host(&be).unwrap()).unwrap();
        let mut tr = LmTrainer::new(&be, &model, 4, 4 * 48, AdamWConfig::default()).unwrap();
        if feed_nan {
            let before = model.to_host(&be).unwrap();
            tr.zero_grad(&be).unwrap();
            tr.accumulate(&be, &model, &batch, f32::NAN).unwrap();
            let stats = tr.step(&be, &mut model, 1e-3).unwrap();
            assert!(!stats.loss.is_finite() && !stats.grad_norm.is_finite(), "{stats:?}");
            assert_eq!(model.to_host(&be).unwrap(), before, "a non-finite step changed the weights");
            assert_eq!(tr.opt.step, 0, "a non-finite step counted as an optimiser step");
            let mut guard = rlhf::train::DivergenceGuard::new(3);
            assert!(guard.check("sft", 1, stats.loss, stats.grad_norm, None).unwrap());
        }
        tr.zero_grad(&be).unwrap();
        tr.accumulate(&be, &model, &batch, w).unwrap();
        let stats = tr.step(&be, &mut model, 1e-3).unwrap();
        assert!(stats.loss.is_finite());
        model.to_host(&be).unwrap()
    };
    assert_eq!(run(true), run(false), "the step after a skipped one differs from a clean run's");
}
