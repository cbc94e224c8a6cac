//! The shortened demo: SFT, then a reward model that beats chance on held-out comparisons, then
//! PPO that raises the oracle score over the SFT model while the KL to it stays bounded.
//! The same run on the wgpu backend reaches the same conclusion (skipped without an adapter,
//! except in CI), and so does the bf16 storage mode (on its CPU reference).

use crate::common;

use rlhf::backend::{Backend, CpuBackend};
use rlhf::demo::{run_pipeline, DemoConfig};

#[test]
fn shortened_demo_reaches_the_demo_conclusion() {
    check_demo(&CpuBackend::new());
}

/// On Mesa's software Vulkan driver (what CI has) this takes minutes: the small-row kernel variants
/// (one invocation per row, no workgroup barriers) keep it there.
#[test]
fn shortened_demo_on_wgpu_reaches_the_demo_conclusion() {
    if let Some(g) = common::wgpu_or_skip("shortened demo on wgpu") {
        check_demo(&g);
    }
}

/// In the bf16 storage mode, on its CPU reference: bf16 weights, activations, gradients and KV
/// cache with f32 master weights and optimiser state reach the same conclusion as f32.
#[test]
fn shortened_demo_in_bf16_reaches_the_demo_conclusion() {
    check_demo(&rlhf::backend::bf16_reference::Bf16Reference::new());
}

fn check_demo<B: Backend>(be: &B) {
    let dir = tempfile::tempdir().unwrap();
    let summary = run_pipeline(be, &DemoConfig::quick(dir.path(), 7)).unwrap();
    eprintln!("backend {}", be.name());
    let (sft, rm, ppo) = (&summary.rows[0], &summary.rows[1], &summary.rows[2]);
    eprintln!("{:#?}", summary.rows);
    eprintln!("{:#?}", summary.samples);
    for r in &summary.ppo {
        eprintln!(
            "step {} rm {:.3} oracle {:?} kl {:.3} len {:.1} clip {:.3} ev {:.3}",
            r.step, r.score_mean, r.oracle, r.kl_k1, r.response_len, r.stats.clipfrac, r.explained_variance
        );
    }
    let acc = rm.rm_accuracy.unwrap();
    assert!(acc > 0.7, "{}: reward model held-out accuracy {acc}", be.name());
    assert!(ppo.oracle > sft.oracle + 0.15, "{}: oracle: sft {} -> ppo {}", be.name(), sft.oracle, ppo.oracle);
    let kl = ppo.kl_to_sft.unwrap();
    assert!(kl.is_finite() && kl > 0.0 && kl < 15.0, "KL to the SFT model {kl}");
    for f in [
        "summary.json",
        "ppo_reward.svg",
        "ppo_oracle.svg",
        "ppo_kl.svg",
        "sft/model.safetensors",
        "rm/model.safetensors",
        "ppo/model.safetensors",
        "ppo/metrics.jsonl",
    ] {
        assert!(dir.path().join(f).exists(), "{f} missing");
    }
}
