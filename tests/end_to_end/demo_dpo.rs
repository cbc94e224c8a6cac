//! The DPO stage of the demo on the CPU: from the demo's SFT model, DPO on the oracle-labelled
//! (noisy) comparisons raises the oracle score over SFT while the KL to the SFT model stays
//! bounded, measured as the demo measures PPO (one sampled answer per held-out prompt).

use rlhf::backend::CpuBackend;
use rlhf::data::jsonl::prompt_completion_example;
use rlhf::data::tokenizer::Tokenizer;
use rlhf::model::{Model, ModelConfig};
use rlhf::demo::dpo::run_dpo_stage;
use rlhf::demo::task;
use rlhf::demo::{demo_sft_config, evaluate};
use rlhf::rl::sft::run_sft;

#[test]
fn dpo_stage_raises_the_oracle_score_over_sft() {
    let be = CpuBackend::new();
    let tok = Tokenizer::byte_level();
    let dir = tempfile::tempdir().unwrap();
    let seed = 7;
    // the demo's SFT stage (quick): imperfect demonstrations, kind, rude and neutral words alike
    let demos = task::demonstrations(2000, seed);
    let examples = demos.iter().map(|(p, c)| prompt_completion_example(&tok, p, c)).collect::<rlhf::Result<Vec<_>>>().unwrap();
    let mut sft = Model::init(&be, ModelConfig::preset("gpt2-tiny", tok.vocab_size()).unwrap(), seed).unwrap();
    let sft_cfg = demo_sft_config(&dir.path().join("sft"), 400, seed);
    run_sft(&be, &mut sft, &tok, examples, &sft_cfg).unwrap();
    let t = std::time::Instant::now();
    let stage = run_dpo_stage(&be, &dir.path().join("sft"), &tok, &dir.path().join("dpo"), seed, true).unwrap();
    let dpo_s = t.elapsed().as_secs_f64();
    let prompts: Vec<Vec<u32>> = task::prompts(48, seed ^ 0xE7).iter().map(|p| tok.encode(p, true).unwrap()).collect();
    let (_, sft_oracle, _) = evaluate(&be, &sft, None, &tok, &prompts, seed).unwrap();
    let (_, dpo_oracle, kl) = evaluate(&be, &stage.policy, Some(&sft), &tok, &prompts, seed).unwrap();
    let s = &stage.summary;
    let kl = kl.unwrap();
    eprintln!(
        "oracle: sft {sft_oracle:.3} -> dpo {dpo_oracle:.3}; KL to sft {kl:.3}; dpo {dpo_s:.1} s, {:.0} tokens/s; train acc {:.3} -> {:.3}, held-out acc {:?} -> {:?}",
        s.tokens_per_sec,
        s.first.reward_accuracy,
        s.last.reward_accuracy,
        s.eval_before.map(|e| e.reward_accuracy),
        s.eval_after.map(|e| e.reward_accuracy)
    );
    assert!(dpo_oracle > sft_oracle + 0.15, "oracle: sft {sft_oracle} -> dpo {dpo_oracle}");
    assert!(kl.is_finite() && kl < 15.0, "KL to the SFT model {kl}");
    assert!(s.eval_after.unwrap().reward_accuracy > 0.7, "held-out implicit reward accuracy {:?}", s.eval_after);
}
