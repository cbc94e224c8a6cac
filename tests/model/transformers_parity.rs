//! Parity with `transformers` on the tiny random GPT-2, Llama (GQA, untied head) and Qwen2 (qkv
//! bias, tied) checkpoints in tests/fixtures (made by tests/fixtures/make_fixtures.py): per-token
//! log-probs to 1e-4, the loss and the global gradient norm to 1e-4 relative (with and without a
//! prompt mask), greedy generation with the KV cache, the tokenizer and the chat template; and an
//! exact save -> load round trip.

use rlhf::backend::CpuBackend;
use rlhf::data::batch::Batch;
use rlhf::data::tokenizer::Tokenizer;
use rlhf::generate::{generate, GenerateConfig};
use rlhf::model::scoring::token_logprobs;
use rlhf::model::Model;
use rlhf::train::lm::LmTrainer;
use rlhf::train::AdamWConfig;
use serde_json::Value;
use std::path::PathBuf;

const MODELS: &[&str] = &["gpt2", "llama", "qwen2"];

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn reference(name: &str) -> Value {
    let text = std::fs::read_to_string(fixture(name).join("reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn reference_config(name: &str) -> Value {
    let text = std::fs::read_to_string(fixture(name).join("config.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn ids_of(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-12)
}

#[test]
fn logprobs_match_transformers() {
    let be = CpuBackend::new();
    for name in MODELS {
        let r = reference(name);
        let model = Model::load(&be, &fixture(name)).unwrap();
        let seqs: Vec<Vec<u32>> = r["input_ids"].as_array().unwrap().iter().map(ids_of).collect();
        let got = token_logprobs(&be, &model, &seqs, 2).unwrap();
        let mut worst = 0f32;
        for (g, w) in got.iter().zip(r["logprobs"].as_array().unwrap()) {
            let w = floats(w);
            assert_eq!(g.len(), w.len());
            for (a, b) in g.iter().zip(&w) {
                worst = worst.max((a - b).abs());
            }
        }
        assert!(worst < 1e-4, "{name}: max |logprob - transformers| = {worst}");
        // batch composition does not change the result
        let single = token_logprobs(&be, &model, &seqs[1..], 1).unwrap();
        assert_eq!(single[0], got[1], "{name}: scoring alone vs in a batch");
    }
}

fn loss_and_grad_norm(name: &str, prompt_mask: usize) -> (f32, f32) {
    let be = CpuBackend::new();
    let r = reference(name);
    let model = Model::load(&be, &fixture(name)).unwrap();
    let seqs: Vec<Vec<u32>> = r["input_ids"].as_array().unwrap().iter().map(ids_of).collect();
    let (b, t) = (seqs.len(), seqs[0].len() - 1);
    let mut inputs = Vec::new();
    let mut targets = Vec::new();
    for s in &seqs {
        for i in 0..t {
            inputs.push(s[i] as i32);
            // transformers' labels[:, :k] = -100 masks the first k tokens as targets
            targets.push(if i + 1 < prompt_mask { -1 } else { s[i + 1] as i32 });
        }
    }
    let n_supervised = targets.iter().filter(|&&x| x >= 0).count();
    let batch = Batch { b, t, inputs, targets, positions: (0..b * t).map(|i| (i % t) as i32).collect(), n_supervised };
    let mut trainer = LmTrainer::new(&be, &model, b, b * t, AdamWConfig::default()).unwrap();
    trainer.zero_grad(&be).unwrap();
    trainer.accumulate(&be, &model, &batch, 1.0 / n_supervised as f32).unwrap();
    let stats = trainer.peek(&be).unwrap();
    (stats.loss, stats.grad_norm)
}

#[test]
fn loss_and_grad_norm_match_transformers() {
    for name in MODELS {
        let r = reference(name);
        let (loss, norm) = loss_and_grad_norm(name, 0);
        let (want_loss, want_norm) = (r["loss"].as_f64().unwrap(), r["grad_norm"].as_f64().unwrap());
        assert!(rel(loss as f64, want_loss) < 1e-4, "{name}: loss {loss} vs {want_loss}");
        assert!(rel(norm as f64, want_norm) < 1e-4, "{name}: grad norm {norm} vs {want_norm}");
        let k = r["prompt_mask_len"].as_u64().unwrap() as usize;
        let (loss, norm) = loss_and_grad_norm(name, k);
        let (want_loss, want_norm) = (r["masked_loss"].as_f64().unwrap(), r["masked_grad_norm"].as_f64().unwrap());
        assert!(rel(loss as f64, want_loss) < 1e-4, "{name}: masked loss {loss} vs {want_loss}");
        assert!(rel(norm as f64, want_norm) < 1e-4, "{name}: masked grad norm {norm} vs {want_norm}");
    }
}

#[test]
fn greedy_generation_matches_transformers() {
    let be = CpuBackend::new();
    for name in MODELS {
        let r = reference(name);
        let model = Model::load(&be, &fixture(name)).unwrap();
        let prompt = ids_of(&r["greedy"]["prompt"]);
        let want = ids_of(&r["greedy"]["tokens"]);
        let cfg = GenerateConfig { max_new_tokens: want.len(), temperature: 0.0, ..GenerateConfig::default() };
        let got = generate(&be, &model, &prompt, &cfg).unwrap();
        assert_eq!(got, want, "{name}: greedy tokens");
    }
}

#[test]
fn tokenizer_and_chat_template_match_transformers() {
    for name in MODELS {
        let r = reference(name);
        let tok = Tokenizer::load(&fixture(name)).unwrap();
        for case in r["text_cases"].as_array().unwrap() {
            let text = case["text"].as_str().unwrap();
            assert_eq!(tok.encode(text, true).unwrap(), ids_of(&case["ids"]), "{name}: encoding {text:?}");
            assert_eq!(tok.decode(&ids_of(&case["ids"])).unwrap(), text);
        }
        let chat = &r["chat_case"];
        let messages: Vec<rlhf::data::chat::Message> = serde_json::from_value(chat["messages"].clone()).unwrap();
        let text = rlhf::data::chat::render_chat(&tok, &messages, true).unwrap();
        assert_eq!(text, chat["text"].as_str().unwrap(), "{name}: chat template rendering");
        assert_eq!(tok.encode(&text, false).unwrap(), ids_of(&chat["ids"]), "{name}: chat ids");
    }
}

#[test]
fn save_load_round_trip_is_exact() {
    let be = CpuBackend::new();
    for name in MODELS {
        let model = Model::load(&be, &fixture(name)).unwrap();
        let tok = Tokenizer::load(&fixture(name)).unwrap();
        let dir = tempfile::tempdir().unwrap();
        model.save(&be, dir.path(), &tok).unwrap();
        let again = Model::load(&be, dir.path()).unwrap();
        assert_eq!(model.to_host(&be).unwrap(), again.to_host(&be).unwrap(), "{name}: weights after save/load");
        assert_eq!(model.cfg().to_hf_json(), again.cfg().to_hf_json(), "{name}: config after save/load");
        // the folder is complete: the config keys transformers reads are those of the fixture
        // (made by transformers), plus a generation config and the tokenizer
        let read = |f: &str| -> Value { serde_json::from_str(&std::fs::read_to_string(dir.path().join(f)).unwrap()).unwrap() };
        let (saved, original) = (read("config.json"), reference_config(name));
        for key in ["bos_token_id", "eos_token_id", "pad_token_id", "layer_norm_epsilon", "rms_norm_eps", "rope_theta", "attn_pdrop", "resid_pdrop", "embd_pdrop", "attention_dropout"] {
            assert_eq!(saved.get(key), original.get(key), "{name}: config.json `{key}`");
        }
        let generation = read("generation_config.json");
        assert_eq!(generation["bos_token_id"], 0, "{name}");
        assert_eq!(generation["pad_token_id"], 0, "{name}");
        assert_eq!(generation["eos_token_id"], serde_json::json!(tok.stop_ids()), "{name}: generate stops where rlhf does");
        let tok_back = Tokenizer::load(dir.path()).unwrap();
        let text = "Hello <|im_start|>world, café";
        assert_eq!(tok_back.encode(text, false).unwrap(), tok.encode(text, false).unwrap(), "{name}: saved tokenizer");
    }
}
