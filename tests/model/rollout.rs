//! The rollout engine on the CPU backend: greedy rollouts equal `generate` token for token, the
//! recorded log-probs equal the training forward's (`token_logprobs`) bit for bit, slots are
//! reused, stop ids and `max_new_tokens` are honoured, and bad prompts are clear errors — each
//! with one read-back per decode step (K = 1) and with several decode steps run on the device
//! between read-backs (K > 1), where finished slots idle without changing their records.

use std::path::PathBuf;

use rlhf::backend::CpuBackend;
use rlhf::generate::{generate, rollout, FinishReason, GenerateConfig, RolloutConfig};
use rlhf::model::scoring::token_logprobs;
use rlhf::model::Model;

const MODELS: [&str; 3] = ["gpt2", "llama", "qwen2"];

/// Decode steps between read-backs the tests run with: every step, and chunks of 4.
const SYNCS: [usize; 2] = [1, 4];

fn rc(slots: usize, gen: GenerateConfig, sync_every: usize) -> RolloutConfig {
    RolloutConfig { slots, gen, sync_every }
}

fn load(name: &str) -> Model<CpuBackend> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    Model::load(&CpuBackend::new(), &dir).unwrap()
}

/// Prompts of different lengths (more than the slots).
fn prompts(n: usize) -> Vec<Vec<u32>> {
    (0..n).map(|i| (0..(3 + 5 * i % 17)).map(|j| ((i * 31 + j * 7 + 5) % 380) as u32).collect()).collect()
}

/// The recorded log-probs equal `token_logprobs` of prompt + response, bit for bit (the CPU
/// backend's forward is batch-invariant).
fn assert_logprobs_match(be: &CpuBackend, model: &Model<CpuBackend>, out: &[rlhf::generate::RolloutOutput], name: &str) {
    assert_logprobs_bits(be, model, out, name);
}

/// The recorded log-probs equal `token_logprobs` of prompt + response, bit for bit.
fn assert_logprobs_bits(be: &CpuBackend, model: &Model<CpuBackend>, out: &[rlhf::generate::RolloutOutput], name: &str) {
    let seqs: Vec<Vec<u32>> = out.iter().map(|o| o.prompt.iter().chain(&o.response).copied().collect()).collect();
    let want = token_logprobs(be, model, &seqs, 3).unwrap();
    for (o, w) in out.iter().zip(&want) {
        let w = &w[o.prompt.len() - 1..];
        assert_eq!(o.logprobs.len(), o.response.len());
        let got: Vec<u32> = o.logprobs.iter().map(|x| x.to_bits()).collect();
        let want: Vec<u32> = w.iter().map(|x| x.to_bits()).collect();
        assert_eq!(got, want, "{name}: rollout log-probs {:?} vs training {:?}", o.logprobs, w);
    }
}

#[test]
fn greedy_rollout_equals_generate_and_training_logprobs() {
    let be = CpuBackend::new();
    for name in MODELS {
        let model = load(name);
        let ps = prompts(7);
        let gen = GenerateConfig { max_new_tokens: 9, temperature: 0.0, ..Default::default() };
        for k in SYNCS {
            let r = rollout(&be, &model, &ps, &rc(3, gen.clone(), k)).unwrap();
            assert!(r.stats.slot_reuses >= 4, "{name}: slots were not reused: {:?}", r.stats);
            assert!(r.stats.decode_tokens > 0 && r.stats.prefill_tokens == ps.iter().map(|p| p.len()).sum::<usize>());
            for (p, o) in ps.iter().zip(&r.outputs) {
                assert_eq!(&o.prompt, p);
                let want = generate(&be, &model, p, &gen).unwrap();
                assert_eq!(o.response, want, "{name} K {k}: greedy rollout differs from generate");
                assert_eq!(o.finish, FinishReason::MaxNewTokens);
            }
            assert_logprobs_match(&be, &model, &r.outputs, name);
        }
    }
}

#[test]
fn sampled_rollout_logprobs_equal_training_bit_for_bit() {
    let be = CpuBackend::new();
    for name in MODELS {
        let model = load(name);
        let ps = prompts(6);
        let gen = GenerateConfig { max_new_tokens: 12, temperature: 1.0, seed: 7, ..Default::default() };
        for k in SYNCS {
            let cfg = rc(4, gen.clone(), k);
            let r = rollout(&be, &model, &ps, &cfg).unwrap();
            assert_logprobs_match(&be, &model, &r.outputs, name);
            // reproducible for the same prompts, slots, seed and K
            let again = rollout(&be, &model, &ps, &cfg).unwrap();
            for (a, b) in r.outputs.iter().zip(&again.outputs) {
                assert_eq!(a.response, b.response);
            }
            // top-k / top-p sampling also records temperature-1 log-probs of the training forward
            let gen = GenerateConfig { max_new_tokens: 6, temperature: 0.7, top_k: 20, top_p: 0.9, seed: 3, ..Default::default() };
            let r = rollout(&be, &model, &ps, &rc(2, gen, k)).unwrap();
            assert_logprobs_match(&be, &model, &r.outputs, name);
        }
    }
}

#[test]
fn stop_ids_and_max_new_tokens_are_honoured() {
    let be = CpuBackend::new();
    let model = load("gpt2");
    let ps = prompts(5);
    let gen = GenerateConfig { max_new_tokens: 10, temperature: 0.0, ..Default::default() };
    let free = rollout(&be, &model, &ps, &rc(2, gen.clone(), 1)).unwrap();
    // stop at the third greedy token of the first prompt
    let stop = free.outputs[0].response[2];
    let gen = GenerateConfig { stop_ids: vec![stop], ..gen };
    for k in SYNCS {
        let r = rollout(&be, &model, &ps, &rc(2, gen.clone(), k)).unwrap();
        // the first prompt's slot finishes two decode steps in: with K = 4 it idles for the rest of
        // its chunk (greedy tokens do not depend on the schedule, so the outputs are the same)
        if k > 1 {
            assert!(r.stats.idle_slot_steps >= 2 && r.stats.decode_syncs < r.stats.decode_steps, "{:?}", r.stats);
        } else {
            assert_eq!((r.stats.idle_slot_steps, r.stats.decode_syncs), (0, r.stats.decode_steps), "{:?}", r.stats);
        }
        for (o, f) in r.outputs.iter().zip(&free.outputs) {
            let cut = f.response.iter().position(|&t| t == stop);
            match cut {
                Some(c) => {
                    assert_eq!(o.response, f.response[..=c]);
                    assert_eq!(o.finish, FinishReason::Stop);
                }
                None => {
                    assert_eq!(o.response, f.response);
                    assert_eq!(o.finish, FinishReason::MaxNewTokens);
                }
            }
            assert!(o.response.len() <= 10);
        }
        assert!(r.outputs[0].response.len() <= 3);
        assert_logprobs_match(&be, &model, &r.outputs, "gpt2 stop");
    }
}

#[test]
fn context_end_and_bad_prompts() {
    let be = CpuBackend::new();
    let model = load("llama");
    let max_pos = model.cfg().max_positions;
    // a prompt that leaves room for 3 tokens ends at the context
    let long: Vec<u32> = (0..max_pos - 3).map(|i| (i % 300) as u32 + 1).collect();
    let gen = GenerateConfig { max_new_tokens: 50, temperature: 1.0, seed: 1, ..Default::default() };
    for k in SYNCS {
        let r = rollout(&be, &model, &[long.clone(), vec![1, 2, 3]], &rc(1, gen.clone(), k)).unwrap();
        assert_eq!(r.outputs[0].finish, FinishReason::ContextEnd);
        assert_eq!(r.outputs[0].prompt.len() + r.outputs[0].response.len(), max_pos);
        assert_eq!(r.outputs[1].finish, FinishReason::MaxNewTokens);
        assert_logprobs_match(&be, &model, &r.outputs, "llama context");
    }
    // too long, empty, out of vocabulary, no slots: errors that say why
    let too_long: Vec<u32> = vec![1; max_pos];
    let e = rollout(&be, &model, &[vec![1, 2], too_long], &rc(2, gen.clone(), 1)).unwrap_err();
    assert!(e.to_string().contains("prompt 2") && e.to_string().contains("context"), "{e}");
    assert!(rollout(&be, &model, &[vec![]], &rc(2, gen.clone(), 1)).is_err());
    assert!(rollout(&be, &model, &[vec![100_000]], &rc(2, gen.clone(), 1)).is_err());
    assert!(rollout(&be, &model, &[vec![1]], &rc(0, gen.clone(), 1)).is_err());
    let e = rollout(&be, &model, &[vec![1]], &rc(1, gen, 0)).unwrap_err();
    assert!(e.to_string().contains("--sync-every"), "{e}");
}

/// Principle 6 (bit-for-bit equality), for any number of slots.
#[test]
fn rollout_logprobs_equal_training_bits() {
    let be = CpuBackend::new();
    for name in MODELS {
        let model = load(name);
        let ps = prompts(6);
        for slots in [1, 2, 4, 6] {
            for k in [1, 3, 8] {
                // stop ids make slots finish (and idle, for K > 1) at different steps
                let gen = GenerateConfig { max_new_tokens: 12, temperature: 1.0, seed: 7, stop_ids: vec![3, 50, 120, 240], ..Default::default() };
                let r = rollout(&be, &model, &ps, &rc(slots, gen, k)).unwrap();
                assert_logprobs_bits(&be, &model, &r.outputs, &format!("{name} slots {slots} K {k}"));
            }
        }
    }
}

/// The training forward is batch-invariant: a sequence's log-probs are the same bits scored
/// alone, in a batch with longer (and shorter) sequences, at any position in the batch, and with
/// any scoring batch size.
#[test]
fn training_logprobs_batch_invariant() {
    let be = CpuBackend::new();
    for name in MODELS {
        let model = load(name);
        let max_pos = model.cfg().max_positions;
        let seq = |len: usize, salt: usize| -> Vec<u32> { (0..len).map(|j| ((salt * 37 + j * 11 + 3) % 380) as u32).collect() };
        let short = seq(5, 1);
        let alone = token_logprobs(&be, &model, std::slice::from_ref(&short), 1).unwrap();
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        let mut batch = vec![seq(max_pos, 2), seq(17, 3), short.clone(), seq(2, 4), seq(max_pos / 2 + 3, 5)];
        for bs in [1, 2, 3, 5] {
            for _ in 0..batch.len() {
                let got = token_logprobs(&be, &model, &batch, bs).unwrap();
                let at = batch.iter().position(|s| *s == short).unwrap();
                assert_eq!(bits(&got[at]), bits(&alone[0]), "{name}: batch size {bs}, position {at}");
                batch.rotate_left(1);
            }
        }
    }
}

#[test]
fn an_engine_reuses_and_grows_its_buffers_across_calls() {
    use rlhf::generate::RolloutEngine;
    let be = CpuBackend::new();
    let model = load("llama");
    let cfg = |max_new: usize, slots: usize| RolloutConfig {
        slots,
        gen: GenerateConfig { max_new_tokens: max_new, temperature: 1.0, seed: 3, stop_ids: vec![7, 99], ..GenerateConfig::default() },
        sync_every: 1 + max_new % 4,
    };
    let small: Vec<Vec<u32>> = prompts(3).into_iter().map(|p| p[..2].to_vec()).collect();
    let large = prompts(6);
    let mut engine = RolloutEngine::new();
    // big first (buffers sized for it), then smaller calls reuse them, then a bigger one grows them
    for (ps, max_new, slots) in [(&large, 8, 4), (&small, 3, 2), (&small, 9, 3), (&large, 12, 5), (&small, 3, 2)] {
        let fresh = rollout(&be, &model, ps, &cfg(max_new, slots)).unwrap();
        let reused = engine.run(&be, &model, ps, &cfg(max_new, slots)).unwrap();
        for (a, b) in fresh.outputs.iter().zip(&reused.outputs) {
            assert_eq!(a.response, b.response);
            assert_eq!(a.logprobs.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), b.logprobs.iter().map(|x| x.to_bits()).collect::<Vec<_>>());
        }
        assert_logprobs_bits(&be, &model, &reused.outputs, "engine");
    }
}

/// When no slot finishes before the others (no stop ids, every prompt in its own slot, none near
/// the context), chunks of K steps run the same schedule as K = 1: the same tokens and log-prob
/// bits, no idle slot-steps, and one read-back per chunk instead of one per step.
#[test]
fn chunks_without_early_finishes_change_nothing_but_the_read_backs() {
    let be = CpuBackend::new();
    let model = load("qwen2");
    let ps = prompts(4);
    let gen = GenerateConfig { max_new_tokens: 11, temperature: 1.0, seed: 5, ..Default::default() };
    let one = rollout(&be, &model, &ps, &rc(4, gen.clone(), 1)).unwrap();
    assert_eq!((one.stats.decode_steps, one.stats.decode_syncs), (10, 10), "{:?}", one.stats);
    for k in [2, 4, 16] {
        let r = rollout(&be, &model, &ps, &rc(4, gen.clone(), k)).unwrap();
        for (a, b) in one.outputs.iter().zip(&r.outputs) {
            assert_eq!(a.response, b.response, "K {k}");
            assert_eq!(a.logprobs.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), b.logprobs.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), "K {k}");
        }
        // 10 decode steps in chunks of K (the last one cut to what the slots can still take)
        assert_eq!(r.stats.decode_steps, 10, "K {k}: {:?}", r.stats);
        assert_eq!(r.stats.decode_syncs, 10usize.div_ceil(k), "K {k}: {:?}", r.stats);
        assert_eq!(r.stats.idle_slot_steps, 0, "K {k}: {:?}", r.stats);
        assert_eq!(r.stats.decode_tokens, one.stats.decode_tokens);
    }
}

/// The default `Backend::replay` (CPU, wgpu) runs the launches every time and never reports a
/// replay, an error of the launches comes back, and a CPU rollout counts no graph replays.
#[test]
fn the_default_replay_runs_the_launches_every_time() {
    use rlhf::backend::Backend;
    let be = CpuBackend::new();
    let mut calls = 0;
    for _ in 0..3 {
        let replayed = be
            .replay(42, &mut || {
                calls += 1;
                Ok(())
            })
            .unwrap();
        assert!(!replayed);
    }
    assert_eq!(calls, 3);
    let e = be.replay(42, &mut || Err(rlhf::Error::invalid("the launches failed"))).unwrap_err();
    assert!(e.to_string().contains("the launches failed"), "{e}");
    let gen = GenerateConfig { max_new_tokens: 9, temperature: 1.0, seed: 2, ..Default::default() };
    let r = rollout(&be, &load("gpt2"), &prompts(3), &rc(2, gen, 4)).unwrap();
    assert!(r.stats.decode_syncs > 2 && r.stats.graph_replays == 0, "{:?}", r.stats);
}

/// The replay key of a decode chunk changes with every input the launches bake in: the engine's
/// buffer generation, the weights, the rows, the steps and the params of sample / decode_advance.
#[test]
fn the_chunk_key_changes_with_what_the_launches_bake_in() {
    use rlhf::backend::ops::{Backend, DecodeAdvanceParams, SampleParams};
    use rlhf::generate::chunk_key::chunk_key;
    let be = CpuBackend::new();
    let w = vec![be.alloc(4).unwrap(), be.alloc(4).unwrap()];
    let other_w = vec![be.alloc(4).unwrap(), be.alloc(4).unwrap()];
    let sp = SampleParams { n: 4, v: 50, temperature: 1.0, top_k: 0, top_p: 1.0, seed_lo: 1, seed_hi: 0, step_at: 16 };
    let ap = DecodeAdvanceParams { n: 4, slots: 4, t_max: 32, stride: 8, max_new: 8, max_len: 64, n_stop: 1, dump_row: 32 };
    let key = chunk_key(&be, 7, &w, 4, 8, &sp, &ap);
    assert_eq!(key, chunk_key(&be, 7, &w, 4, 8, &sp, &ap));
    let others = [
        chunk_key(&be, 8, &w, 4, 8, &sp, &ap),
        chunk_key(&be, 7, &other_w, 4, 8, &sp, &ap),
        chunk_key(&be, 7, &w[..1], 4, 8, &sp, &ap),
        chunk_key(&be, 7, &w, 3, 8, &sp, &ap),
        chunk_key(&be, 7, &w, 4, 7, &sp, &ap),
        chunk_key(&be, 7, &w, 4, 8, &SampleParams { temperature: 0.5, ..sp }, &ap),
        chunk_key(&be, 7, &w, 4, 8, &SampleParams { seed_lo: 2, ..sp }, &ap),
        chunk_key(&be, 7, &w, 4, 8, &sp, &DecodeAdvanceParams { max_new: 9, ..ap }),
    ];
    for (i, k) in others.iter().enumerate() {
        assert_ne!(*k, key, "variant {i}");
    }
}
