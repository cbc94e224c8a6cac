//! `rlhf demo --method all` on the CPU, shortened: PPO (after its reward model), DPO and GRPO each
//! start from the same SFT model and each raises the oracle score on the same held-out prompts
//! clearly above the SFT model's, with a bounded KL to it; the command prints them side by side.

use rlhf::backend::CpuBackend;
use rlhf::demo::{run_pipeline, DemoConfig, DemoMethod};

#[test]
fn every_method_raises_the_oracle_score_over_sft() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = DemoConfig::quick(dir.path(), 7);
    cfg.methods = DemoMethod::ALL.to_vec();
    let s = run_pipeline(&CpuBackend::new(), &cfg).unwrap();
    eprintln!("{:#?}", s.rows);
    let stages: Vec<&str> = s.rows.iter().map(|r| r.stage.as_str()).collect();
    assert_eq!(stages, ["sft", "reward model", "ppo", "dpo", "grpo"]);
    let sft = s.rows[0].oracle;
    for r in &s.rows[2..] {
        assert!(r.oracle > sft + 0.15, "{}: oracle {} vs sft {sft}", r.stage, r.oracle);
        let kl = r.kl_to_sft.unwrap();
        assert!(kl.is_finite() && kl > 0.0 && kl < 15.0, "{}: KL to SFT {kl}", r.stage);
        assert!(r.rm_score.is_some() && r.tokens_per_sec > 0.0 && r.seconds > 0.0, "{r:?}");
    }
    assert!(!s.ppo.is_empty() && !s.grpo.is_empty());
    assert!(s.samples.iter().all(|(_, answers)| answers.len() == 4), "sft + three methods per sample");
    for f in ["summary.json", "grpo_oracle.svg", "ppo_oracle.svg", "dpo/model.safetensors", "grpo/model.safetensors", "ppo/model.safetensors"] {
        assert!(dir.path().join(f).exists(), "{f} missing");
    }
}

#[test]
fn demo_command_prints_the_methods_side_by_side() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rlhf"))
        .args(["demo", "--quick", "--method", "dpo", "--out", dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("| dpo ") && stdout.contains("| sft "), "{stdout}");
    assert!(!stdout.contains("| ppo ") && !stdout.contains("reward model"), "--method dpo trains no reward model and no PPO: {stdout}");
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_rlhf")).args(["demo", "--method", "sgd"]).output().unwrap();
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("ppo, dpo, grpo, a2c, all"));
}
