//! PPO's training phase: the gradient of the whole PPO loss (clipped surrogate through the
//! streamed log-prob gather and the policy trunk, value loss through the value model's score head
//! and trunk, entropy bonus, KL in the loss) against finite differences, and updates that move the
//! log-probs the way the advantages say.

use rlhf::backend::ops::PpoParams;
use rlhf::backend::{Backend, CpuBackend};
use rlhf::data::rng::Rng;
use rlhf::model::scoring::token_logprobs;
use rlhf::model::{Model, ModelConfig};
use rlhf::rl::policy_update::{PpoBatch, PpoUpdate};
use rlhf::train::AdamWConfig;

const VOCAB: usize = 96;

fn model(be: &CpuBackend, preset: &str, reward: bool, seed: u64) -> Model<CpuBackend> {
    let mut cfg = ModelConfig::preset(preset, VOCAB).unwrap();
    cfg.score_head = reward;
    let mut m = Model::init(be, cfg, seed).unwrap();
    let mut rng = Rng::new(seed + 7);
    for w in m.weights.iter_mut() {
        for x in w.iter_mut() {
            *x += rng.normal() * 0.05;
        }
    }
    m
}

/// Two sequences of 7 tokens; the last 4 (resp. 3) are the response.
fn sequences() -> (Vec<Vec<u32>>, Vec<usize>) {
    (vec![vec![5, 17, 3, 40, 41, 8, 9], vec![2, 2, 60, 61, 70, 71, 72]], vec![3, 4])
}

fn batch(policy: &Model<CpuBackend>, be: &CpuBackend, adv: &[f32], seed: u64) -> PpoBatch {
    let (seqs, prompt_lens) = sequences();
    let current = token_logprobs(be, policy, &seqs, 2).unwrap();
    let t = seqs[0].len() - 1;
    let mut rng = Rng::new(seed);
    let (mut inputs, mut targets, mut old_logp, mut advantages, mut returns, mut old_values, mut ref_logp) =
        (vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
    for (s, (seq, &pl)) in seqs.iter().zip(&prompt_lens).enumerate() {
        for i in 0..t {
            inputs.push(seq[i] as i32);
            let in_response = i + 1 >= pl;
            targets.push(if in_response { seq[i + 1] as i32 } else { -1 });
            // old log-probs within 5% of the current ones: ratios stay inside the clip range
            old_logp.push(current[s][i] + (rng.next_f32() - 0.5) * 0.1);
            advantages.push(adv[s]);
            returns.push(rng.normal());
            old_values.push(rng.normal() * 0.01);
            ref_logp.push(current[s][i] + (rng.next_f32() - 0.5) * 0.4);
        }
    }
    PpoBatch { b: 2, t, inputs, targets, old_logp, advantages, returns, old_values, ref_logp: Some(ref_logp) }
}

fn params() -> PpoParams {
    PpoParams { ent_coef: 0.01, kl_coef: 0.1, value_clip: 0.0, ..PpoParams::new(0) }
}

#[test]
fn ppo_loss_gradient_matches_finite_differences() {
    let be = CpuBackend::new();
    for preset in ["gpt2-tiny", "llama-tiny"] {
        let mut policy = model(&be, preset, false, 1);
        let mut value = model(&be, preset, true, 2);
        let b = batch(&policy, &be, &[1.3, -0.7], 3);
        let mut upd = PpoUpdate::new(&be, &policy, Some(&value), 2, 8, AdamWConfig::default()).unwrap();
        upd.zero_grad(&be).unwrap();
        upd.accumulate(&be, &policy, Some(&value), &b, params()).unwrap();
        let (pg, vg) = upd.grads();
        let pg: Vec<Vec<f32>> = pg.iter().map(|g| be.download(g).unwrap()).collect();
        let vg: Vec<Vec<f32>> = vg.unwrap().iter().map(|g| be.download(g).unwrap()).collect();
        let loss = |upd: &mut PpoUpdate<CpuBackend>, p: &Model<CpuBackend>, v: &Model<CpuBackend>| {
            upd.zero_grad(&be).unwrap();
            upd.accumulate(&be, p, Some(v), &b, params()).unwrap();
            upd.stats(&be).unwrap().total_loss as f64
        };
        let eps = 1e-2f32;
        let check = |name: &str, num: f64, ana: f64| {
            let err = (num - ana).abs() / (1e-3 + num.abs().max(ana.abs()));
            assert!(err < 5e-2, "{preset} {name}: finite difference {num:.6} vs analytic {ana:.6}");
        };
        let pl = policy.layout().clone();
        for (name, idx) in [("policy qkv", pl.layers[0].qkv_w), ("policy fc", pl.layers[1].fc_w), ("policy lnf", pl.lnf_w), ("policy wte", pl.wte)] {
            let cands: Vec<usize> = (0..policy.weights[idx].len()).filter(|&j| pg[idx][j].abs() > 1e-5).collect();
            assert!(!cands.is_empty(), "{preset} {name}: no gradient at all");
            for &j in cands.iter().step_by((cands.len() / 4).max(1)).take(4) {
                let orig = policy.weights[idx][j];
                policy.weights[idx][j] = orig + eps;
                let lp = loss(&mut upd, &policy, &value);
                policy.weights[idx][j] = orig - eps;
                let lm = loss(&mut upd, &policy, &value);
                policy.weights[idx][j] = orig;
                check(&format!("{name}[{j}]"), (lp - lm) / (2.0 * eps as f64), pg[idx][j] as f64);
            }
        }
        let vl = value.layout().clone();
        for (name, idx) in [("value score", vl.score.unwrap()), ("value proj", vl.layers[0].proj_w), ("value ln2", vl.layers[1].ln2_w)] {
            let cands: Vec<usize> = (0..value.weights[idx].len()).filter(|&j| vg[idx][j].abs() > 1e-5).collect();
            assert!(!cands.is_empty(), "{preset} {name}: no gradient at all");
            for &j in cands.iter().step_by((cands.len() / 4).max(1)).take(4) {
                let orig = value.weights[idx][j];
                value.weights[idx][j] = orig + eps;
                let lp = loss(&mut upd, &policy, &value);
                value.weights[idx][j] = orig - eps;
                let lm = loss(&mut upd, &policy, &value);
                value.weights[idx][j] = orig;
                check(&format!("{name}[{j}]"), (lp - lm) / (2.0 * eps as f64), vg[idx][j] as f64);
            }
        }
    }
}

#[test]
fn updates_follow_the_advantages() {
    let be = CpuBackend::new();
    let mut policy = model(&be, "llama-tiny", false, 4);
    let (seqs, prompt_lens) = sequences();
    let before = token_logprobs(&be, &policy, &seqs, 2).unwrap();
    let mut upd = PpoUpdate::new(&be, &policy, None, 2, 8, AdamWConfig { weight_decay: 0.0, ..AdamWConfig::default() }).unwrap();
    // sequence 0 was good (A > 0), sequence 1 bad (A < 0)
    let b = batch(&policy, &be, &[1.0, -1.0], 5);
    let mut stats = Vec::new();
    for _ in 0..3 {
        upd.zero_grad(&be).unwrap();
        upd.accumulate(&be, &policy, None, &b, PpoParams { kl_coef: 0.0, ..params() }).unwrap();
        stats.push(upd.step(&be, &mut policy, None, 1e-3, 0.0).unwrap());
    }
    let after = token_logprobs(&be, &policy, &seqs, 2).unwrap();
    let response_sum = |lp: &Vec<Vec<f32>>, s: usize| lp[s][prompt_lens[s] - 1..].iter().sum::<f32>();
    assert!(response_sum(&after, 0) > response_sum(&before, 0) + 0.05, "the good response should become more likely");
    assert!(response_sum(&after, 1) < response_sum(&before, 1) - 0.05, "the bad response should become less likely");
    assert!(stats.iter().all(|s| s.policy_grad_norm > 0.0 && s.entropy > 0.0));
    // later epochs on the same rollouts move away from the sampling policy: the clip engages
    assert!(stats[2].approx_kl > stats[0].approx_kl);
}

fn policy_grads(upd: &PpoUpdate<CpuBackend>, be: &CpuBackend) -> Vec<Vec<f32>> {
    upd.grads().0.iter().map(|g| be.download(g).unwrap()).collect()
}

fn split(b: &PpoBatch, rows: std::ops::Range<usize>) -> PpoBatch {
    let t = b.t;
    let f = |v: &Vec<f32>| v[rows.start * t..rows.end * t].to_vec();
    let i = |v: &Vec<i32>| v[rows.start * t..rows.end * t].to_vec();
    PpoBatch {
        b: rows.len(),
        t,
        inputs: i(&b.inputs),
        targets: i(&b.targets),
        old_logp: f(&b.old_logp),
        advantages: f(&b.advantages),
        returns: f(&b.returns),
        old_values: f(&b.old_values),
        ref_logp: b.ref_logp.as_ref().map(f),
    }
}

#[test]
fn micro_batches_with_a_shared_denominator_add_up_to_the_minibatch() {
    let be = CpuBackend::new();
    let policy = model(&be, "qwen2-tiny", false, 8);
    let value = model(&be, "qwen2-tiny", true, 9);
    let whole = batch(&policy, &be, &[0.8, -0.4], 10);
    let mut upd = PpoUpdate::new(&be, &policy, Some(&value), 2, 8, AdamWConfig::default()).unwrap();
    upd.zero_grad(&be).unwrap();
    upd.accumulate(&be, &policy, Some(&value), &whole, params()).unwrap();
    let (g_whole, s_whole) = (policy_grads(&upd, &be), upd.stats(&be).unwrap());
    let response_tokens = whole.targets.iter().filter(|&&t| t >= 0).count();
    let p = PpoParams { denom: response_tokens as f32, ..params() };
    upd.zero_grad(&be).unwrap();
    upd.accumulate(&be, &policy, Some(&value), &split(&whole, 0..1), p).unwrap();
    upd.accumulate(&be, &policy, Some(&value), &split(&whole, 1..2), p).unwrap();
    let (g_micro, s_micro) = (policy_grads(&upd, &be), upd.stats(&be).unwrap());
    assert!((s_whole.total_loss - s_micro.total_loss).abs() < 1e-5, "{} vs {}", s_whole.total_loss, s_micro.total_loss);
    for (a, b) in g_whole.iter().zip(&g_micro) {
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-6 + 1e-4 * x.abs(), "{x} vs {y}");
        }
    }
}

#[test]
fn ptx_adds_the_language_modelling_gradient() {
    use rlhf::data::batch::Batch;
    use rlhf::data::jsonl::Example;
    use rlhf::train::lm::LmTrainer;
    let be = CpuBackend::new();
    let policy = model(&be, "gpt2-tiny", false, 11);
    let b = batch(&policy, &be, &[0.5, 0.5], 12);
    let ptx = Batch::from_examples(&[Example::all_supervised(vec![3, 9, 27, 81, 50, 7]), Example::all_supervised(vec![1, 2, 3, 4])], 16, 0);
    let coef = 0.3;
    let mut upd = PpoUpdate::new(&be, &policy, None, 2, 8, AdamWConfig::default()).unwrap();
    upd.zero_grad(&be).unwrap();
    upd.accumulate(&be, &policy, None, &b, params()).unwrap();
    let g_ppo = policy_grads(&upd, &be);
    upd.accumulate_ptx(&be, &policy, &ptx, coef).unwrap();
    let g_both = policy_grads(&upd, &be);
    let mut lm = LmTrainer::new(&be, &policy, 2, 16, AdamWConfig::default()).unwrap();
    lm.zero_grad(&be).unwrap();
    lm.accumulate(&be, &policy, &ptx, 1.0 / ptx.n_supervised as f32).unwrap();
    let lm_loss = lm.peek(&be).unwrap().loss;
    assert!((upd.ptx_loss(&be).unwrap() - lm_loss).abs() < 1e-5, "ptx loss is the LM loss");
    for ((both, ppo), lm) in g_both.iter().zip(&g_ppo).zip(&lm.grads) {
        for ((x, y), z) in both.iter().zip(ppo).zip(lm) {
            assert!((x - (y + coef * z)).abs() < 1e-6 + 1e-4 * x.abs(), "{x} vs {y} + {coef} * {z}");
        }
    }
}

#[test]
fn value_head_on_the_policy_trunk_matches_finite_differences() {
    use rlhf::rl::policy_update::ValueHead;
    let be = CpuBackend::new();
    let mut policy = model(&be, "llama-tiny", false, 13);
    let b = batch(&policy, &be, &[0.9, -1.1], 14);
    let mut upd = PpoUpdate::new(&be, &policy, None, 2, 8, AdamWConfig::default()).unwrap();
    let mut head = ValueHead::new(&be, policy.cfg().hidden_size, 15).unwrap();
    for w in head.weight.iter_mut() {
        *w *= 20.0; // values of order one, so the value loss matters
    }
    upd.value_head = Some(head);
    let p = PpoParams { vf_coef: 1.0, ..params() };
    upd.zero_grad(&be).unwrap();
    upd.accumulate(&be, &policy, None, &b, p).unwrap();
    let pg = policy_grads(&upd, &be);
    let hg = be.download(upd.value_head.as_ref().unwrap().grad()).unwrap();
    assert!(upd.stats(&be).unwrap().value_loss > 0.0);
    let eps = 1e-2f32;
    let loss = |upd: &mut PpoUpdate<CpuBackend>, pol: &Model<CpuBackend>| {
        upd.zero_grad(&be).unwrap();
        upd.accumulate(&be, pol, None, &b, p).unwrap();
        upd.stats(&be).unwrap().total_loss as f64
    };
    let check = |name: &str, num: f64, ana: f64| {
        let err = (num - ana).abs() / (1e-3 + num.abs().max(ana.abs()));
        assert!(err < 5e-2, "{name}: finite difference {num:.6} vs analytic {ana:.6}");
    };
    for j in [0, 7, 20, 41] {
        let orig = upd.value_head.as_ref().unwrap().weight[j];
        upd.value_head.as_mut().unwrap().weight[j] = orig + eps;
        let lp = loss(&mut upd, &policy);
        upd.value_head.as_mut().unwrap().weight[j] = orig - eps;
        let lm = loss(&mut upd, &policy);
        upd.value_head.as_mut().unwrap().weight[j] = orig;
        check(&format!("head[{j}]"), (lp - lm) / (2.0 * eps as f64), hg[j] as f64);
    }
    let idx = policy.layout().layers[1].proj_w;
    let cands: Vec<usize> = (0..policy.weights[idx].len()).filter(|&j| pg[idx][j].abs() > 1e-5).collect();
    assert!(!cands.is_empty());
    for &j in cands.iter().step_by((cands.len() / 4).max(1)).take(4) {
        let orig = policy.weights[idx][j];
        policy.weights[idx][j] = orig + eps;
        let lp = loss(&mut upd, &policy);
        policy.weights[idx][j] = orig - eps;
        let lm = loss(&mut upd, &policy);
        policy.weights[idx][j] = orig;
        check(&format!("trunk proj[{j}]"), (lp - lm) / (2.0 * eps as f64), pg[idx][j] as f64);
    }
}

#[test]
fn device_gathered_micro_batches_equal_host_ones() {
    use rlhf::rl::policy_update::StepTensors;
    let be = CpuBackend::new();
    let policy = model(&be, "gpt2-tiny", false, 16);
    let value = model(&be, "gpt2-tiny", true, 17);
    let whole = batch(&policy, &be, &[0.4, -0.9], 18);
    let mut step = StepTensors::new(&be, 2, whole.t, true).unwrap();
    step.b = 2;
    step.t = whole.t;
    be.write(&mut step.old_logp, &whole.old_logp).unwrap();
    be.write(&mut step.ref_logp, whole.ref_logp.as_ref().unwrap()).unwrap();
    be.write(&mut step.values, &whole.old_values).unwrap();
    be.write(&mut step.advantages, &whole.advantages).unwrap();
    be.write(&mut step.returns, &whole.returns).unwrap();
    let mut upd = PpoUpdate::new(&be, &policy, Some(&value), 2, 8, AdamWConfig::default()).unwrap();
    // rows in the order [1, 0] on the device vs the same rows built on the host
    let reordered = {
        let (a, b) = (split(&whole, 1..2), split(&whole, 0..1));
        let cat_f = |x: &Vec<f32>, y: &Vec<f32>| [x.clone(), y.clone()].concat();
        let cat_i = |x: &Vec<i32>, y: &Vec<i32>| [x.clone(), y.clone()].concat();
        PpoBatch {
            b: 2,
            t: whole.t,
            inputs: cat_i(&a.inputs, &b.inputs),
            targets: cat_i(&a.targets, &b.targets),
            old_logp: cat_f(&a.old_logp, &b.old_logp),
            advantages: cat_f(&a.advantages, &b.advantages),
            returns: cat_f(&a.returns, &b.returns),
            old_values: cat_f(&a.old_values, &b.old_values),
            ref_logp: Some(cat_f(a.ref_logp.as_ref().unwrap(), b.ref_logp.as_ref().unwrap())),
        }
    };
    upd.zero_grad(&be).unwrap();
    upd.accumulate(&be, &policy, Some(&value), &reordered, params()).unwrap();
    let (g_host, s_host) = (policy_grads(&upd, &be), upd.stats(&be).unwrap());
    upd.zero_grad(&be).unwrap();
    upd.accumulate_rows(&be, &policy, Some(&value), &step, &[1, 0], &reordered.inputs, &reordered.targets, params()).unwrap();
    let (g_dev, s_dev) = (policy_grads(&upd, &be), upd.stats(&be).unwrap());
    assert_eq!(s_host.total_loss.to_bits(), s_dev.total_loss.to_bits());
    assert_eq!(g_host, g_dev);
}
