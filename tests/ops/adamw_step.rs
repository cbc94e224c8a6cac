//! `AdamW::step`: on the CPU backend the fused clip-and-update gives exactly (bit for bit) the
//! result of the former two passes (gradients scaled in place by `min(1, max / (norm + 1e-6))`,
//! then the unclipped update), leaves the gradients alone, and a NaN or infinite gradient leaves
//! weights, moments and the step count untouched while reporting the non-finite norm; on wgpu the
//! same steps match the CPU and the skip happens on the device. A step guarded by a loss on the
//! device skips on a non-finite loss and is otherwise the same step, bit for bit.

use rlhf::backend::ops::{AdamWParams, Backend, ElementwiseParams};
use rlhf::backend::CpuBackend;
use rlhf::data::rng::Rng;
use rlhf::data::tokenizer::Tokenizer;
use rlhf::model::{Model, ModelConfig};
use rlhf::train::{AdamW, AdamWConfig};

use crate::common;
use common::randv;

fn bits(x: &[Vec<f32>]) -> Vec<Vec<u32>> {
    x.iter().map(|t| t.iter().map(|v| v.to_bits()).collect()).collect()
}

fn setup(seed: u64, grad_scale: f32) -> (CpuBackend, Model<CpuBackend>, Vec<Vec<f32>>) {
    let be = CpuBackend::new();
    let model = Model::init(&be, ModelConfig::preset("gpt2-tiny", Tokenizer::byte_level().vocab_size()).unwrap(), seed).unwrap();
    let mut rng = Rng::new(seed + 1);
    let grads = model.weights.iter().map(|w| randv(&mut rng, w.len(), grad_scale)).collect();
    (be, model, grads)
}

/// The former path: norm, in-place clipping of every gradient, then `adamw` with clipping off.
fn two_pass_reference(be: &CpuBackend, model: &Model<CpuBackend>, grads: &[Vec<f32>], cfg: AdamWConfig, lr: f32) -> (Vec<Vec<f32>>, f32) {
    let mut nsq = vec![0.0f32];
    for g in grads {
        be.sum_squares(&mut nsq, g, ElementwiseParams::new(g.len()).unwrap()).unwrap();
    }
    let s = (cfg.max_grad_norm / (nsq[0].sqrt() + 1e-6)).min(1.0);
    let mut w = model.weights.clone();
    for (i, (w, g)) in w.iter_mut().zip(grads).enumerate() {
        let g: Vec<f32> = if cfg.max_grad_norm > 0.0 && s < 1.0 { g.iter().map(|x| x * s).collect() } else { g.clone() };
        let (mut m, mut v) = (vec![0.0; w.len()], vec![0.0; w.len()]);
        let p = AdamWParams {
            n: w.len() as u32,
            lr,
            beta1: cfg.beta1,
            beta2: cfg.beta2,
            eps: cfg.eps,
            weight_decay: if model.layout().specs[i].decay { cfg.weight_decay } else { 0.0 },
            bias_correction1: 1.0 - cfg.beta1,
            bias_correction2: 1.0 - cfg.beta2,
            ..Default::default()
        };
        be.adamw(w, &mut m, &mut v, &g, &nsq, p).unwrap();
    }
    (w, nsq[0].sqrt())
}

#[test]
fn fused_clipping_equals_clip_then_update_bit_for_bit() {
    // gpt2-tiny has ~1.4e5 parameters: gradient norms ~0.1 * 370 = 37 and ~1.5 (clipped to 1;
    // at 1.5 the 1e-6 of the factor's denominator changes its bits), ~4e-4 (not clipped), and
    // clipping off
    for (grad_scale, max_grad_norm) in [(0.1f32, 1.0f32), (0.004, 1.0), (1e-6, 1.0), (0.1, 0.0)] {
        let (be, mut model, grads) = setup(3, grad_scale);
        let cfg = AdamWConfig { max_grad_norm, ..AdamWConfig::default() };
        let (want, want_norm) = two_pass_reference(&be, &model, &grads, cfg, 1e-3);
        let mut opt = AdamW::new(&be, model.layout(), cfg).unwrap();
        let norm = opt.step(&be, model.params_mut(), &grads, 1e-3).unwrap();
        let what = format!("grad scale {grad_scale}, max_grad_norm {max_grad_norm}");
        assert_eq!(norm.to_bits(), want_norm.to_bits(), "{what}: returned norm");
        assert_eq!(bits(&model.weights), bits(&want), "{what}: weights differ from clip-then-update");
        assert_eq!(opt.step, 1);
        let (_, _, again) = setup(3, grad_scale);
        assert_eq!(bits(&grads), bits(&again), "{what}: the step modified the gradients");
    }
}

#[test]
fn a_non_finite_gradient_updates_nothing() {
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let (be, mut model, mut grads) = setup(4, 0.01);
        let mut opt = AdamW::new(&be, model.layout(), AdamWConfig::default()).unwrap();
        // one good step so the moments are not zero
        assert!(opt.step(&be, model.params_mut(), &grads, 1e-3).unwrap().is_finite());
        let (w0, m0, v0) = (bits(&model.weights), bits(&opt.m), bits(&opt.v));
        grads[2][5] = bad;
        let norm = opt.step(&be, model.params_mut(), &grads, 1e-3).unwrap();
        assert!(!norm.is_finite(), "gradient entry {bad}: norm {norm}");
        assert_eq!(bits(&model.weights), w0, "gradient entry {bad}: weights changed");
        assert_eq!(bits(&opt.m), m0, "gradient entry {bad}: m changed");
        assert_eq!(bits(&opt.v), v0, "gradient entry {bad}: v changed");
        assert_eq!(opt.step, 1, "gradient entry {bad}: a skipped step was counted");
        // and the next finite step is step 2
        grads[2][5] = 0.0;
        assert!(opt.step(&be, model.params_mut(), &grads, 1e-3).unwrap().is_finite());
        assert_eq!(opt.step, 2);
        assert_ne!(bits(&model.weights), w0);
    }
}

/// A step guarded by a loss still on the device (`step_guarded_by_loss`, the SFT/DPO path): a
/// finite loss changes no bit of the step; a NaN or infinite loss with finite gradients updates
/// nothing, is not counted, and still reports the (finite) gradient norm.
#[test]
fn a_step_guarded_by_a_non_finite_loss_updates_nothing() {
    let (be, mut model, grads) = setup(6, 0.01);
    let mut plain_model = Model::from_host(&be, model.cfg().clone(), &model.weights).unwrap();
    let mut opt = AdamW::new(&be, model.layout(), AdamWConfig::default()).unwrap();
    let mut opt_plain = AdamW::new(&be, model.layout(), AdamWConfig::default()).unwrap();
    let norm = opt.step_guarded_by_loss(&be, model.params_mut(), &grads, 1e-3, &vec![-2.5]).unwrap();
    let plain = opt_plain.step(&be, plain_model.params_mut(), &grads, 1e-3).unwrap();
    assert_eq!(norm.to_bits(), plain.to_bits());
    assert_eq!(bits(&model.weights), bits(&plain_model.weights), "a finite loss changed the step");
    assert_eq!(bits(&opt.m), bits(&opt_plain.m));
    assert_eq!(opt.step, 1);
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let (w0, m0, v0) = (bits(&model.weights), bits(&opt.m), bits(&opt.v));
        let norm = opt.step_guarded_by_loss(&be, model.params_mut(), &grads, 1e-3, &vec![bad, 1.0]).unwrap();
        assert!(norm.is_finite() && norm > 0.0, "loss {bad}: norm {norm}");
        assert_eq!(bits(&model.weights), w0, "loss {bad}: weights changed");
        assert_eq!((bits(&opt.m), bits(&opt.v)), (m0, v0), "loss {bad}: moments changed");
        assert_eq!(opt.step, 1, "loss {bad}: a skipped step was counted");
    }
    // on wgpu the NaN of `0 * loss` must survive the shaders too
    let Some(g) = common::wgpu_or_skip("a guarded AdamW step on wgpu") else { return };
    let mut gmodel = Model::from_host(&g, model.cfg().clone(), &model.to_host(&be).unwrap()).unwrap();
    let ggrads: Vec<_> = grads.iter().map(|x| g.upload(x).unwrap()).collect();
    let mut gopt = AdamW::new(&g, gmodel.layout(), AdamWConfig::default()).unwrap();
    let w0 = gmodel.to_host(&g).unwrap();
    for bad in [f32::NAN, f32::INFINITY] {
        let norm = gopt.step_guarded_by_loss(&g, gmodel.params_mut(), &ggrads, 1e-3, &g.upload(&[bad]).unwrap()).unwrap();
        assert!(norm.is_finite() && gopt.step == 0, "wgpu, loss {bad}: norm {norm}, step {}", gopt.step);
        assert_eq!(bits(&gmodel.to_host(&g).unwrap()), bits(&w0), "wgpu, loss {bad}: weights changed");
    }
    gopt.step_guarded_by_loss(&g, gmodel.params_mut(), &ggrads, 1e-3, &g.upload(&[0.5]).unwrap()).unwrap();
    assert_eq!(gopt.step, 1);
    assert_ne!(bits(&gmodel.to_host(&g).unwrap()), bits(&w0));
}

/// The same steps on wgpu (lavapipe in CI): clipped steps match the CPU within 1e-6 + 1e-5
/// relative, a NaN gradient skips on the device with the step count held on the host, and the
/// step after it matches the CPU's as well.
#[test]
fn wgpu_steps_match_the_cpu_and_skip_on_the_device() {
    let Some(g) = common::wgpu_or_skip("AdamW::step on wgpu") else { return };
    let (c, cpu_model, mut grads) = setup(5, 0.01);
    let cfg = cpu_model.cfg().clone();
    let mut gpu_model = Model::from_host(&g, cfg.clone(), &cpu_model.weights).unwrap();
    let mut cpu_model = Model::from_host(&c, cfg, &cpu_model.weights).unwrap();
    let mut copt = AdamW::new(&c, cpu_model.layout(), AdamWConfig::default()).unwrap();
    let mut gopt = AdamW::new(&g, gpu_model.layout(), AdamWConfig::default()).unwrap();
    for (k, bad) in [(0, None), (1, Some(f32::NAN)), (2, None)] {
        if let Some(b) = bad {
            grads[1][3] = b;
        } else {
            grads[1][3] = 0.01 * k as f32;
        }
        let ggrads: Vec<_> = grads.iter().map(|x| g.upload(x).unwrap()).collect();
        let before = gpu_model.to_host(&g).unwrap();
        let cn = copt.step(&c, cpu_model.params_mut(), &grads, 1e-2).unwrap();
        let gn = gopt.step(&g, gpu_model.params_mut(), &ggrads, 1e-2).unwrap();
        let after = gpu_model.to_host(&g).unwrap();
        assert_eq!(copt.step, gopt.step, "step {k}: step counts");
        if bad.is_some() {
            assert!(gn.is_nan() && cn.is_nan(), "step {k}: norms {cn} (cpu) {gn} (wgpu)");
            assert_eq!(bits(&after), bits(&before), "step {k}: wgpu weights changed on a NaN gradient");
            continue;
        }
        assert!((gn - cn).abs() <= 1e-5 * cn, "step {k}: norms {cn} (cpu) {gn} (wgpu)");
        assert!(cn > 1.0, "the gradient norm {cn} should be clipped");
        for (i, (a, b)) in after.iter().zip(&cpu_model.weights).enumerate() {
            for (x, y) in a.iter().zip(b) {
                assert!((x - y).abs() <= 1e-6 + 1e-5 * y.abs(), "step {k}, tensor {i}: {x} (wgpu) vs {y} (cpu)");
            }
        }
    }
    assert_eq!(gopt.step, 2);
}
