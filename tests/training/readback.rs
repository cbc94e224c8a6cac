//! A PPO step and a GRPO step read their logged statistics back from the device once: the CPU
//! backend counts `download` calls, and a run of two steps makes exactly two more than a run of
//! one (the runs' setup and final save are the same). One of the two is the rollout's: with one
//! new token per response every sequence finishes at the same decode step, so the rollout
//! collects the log-probs it recorded with one read-back; the other is the step's statistics.
//! This holds with `--reward-norm` (the running moments normalise the scores on the device) and for
//! GRPO's and RLOO's group baselines over a reward model's scores with the KL in the reward (both
//! computed on the device).

use rlhf::backend::CpuBackend;
use rlhf::data::tokenizer::Tokenizer;
use rlhf::demo::grpo::demo_grpo_config;
use rlhf::model::{Model, ModelConfig};
use rlhf::rl::advantage_estimators::Estimator;
use rlhf::rl::grpo::{run_grpo, GrpoModels, KlPlacement, RewardSource};
use rlhf::rl::ppo::{run_ppo, PpoConfig, PpoModels};
use rlhf::train::resume::RunControl;
use rlhf::train::AdamWConfig;
use std::path::Path;

/// The rollout's read-backs of a step whose responses are all one token long.
const ROLLOUT_READS: usize = 1;

/// A tiny policy, its reference (the same weights) and the config of a reward (or value) model,
/// the same trunk with a score head.
fn tiny_models(be: &CpuBackend, tok: &Tokenizer) -> (Model<CpuBackend>, Model<CpuBackend>, ModelConfig) {
    let cfg = ModelConfig::preset("gpt2-tiny", tok.vocab_size()).unwrap();
    let (policy, reference) = (Model::init(be, cfg.clone(), 1).unwrap(), Model::init(be, cfg.clone(), 1).unwrap());
    (policy, reference, ModelConfig { score_head: true, ..cfg })
}

fn prompts(tok: &Tokenizer) -> Vec<Vec<u32>> {
    ["kind words", "a rude reply", "say hello", "count to three"].iter().map(|p| tok.encode(p, true).unwrap()).collect()
}

fn ppo_config(out: &Path, steps: usize) -> PpoConfig {
    PpoConfig {
        out: out.to_path_buf(),
        steps,
        rollout_batch: 4,
        // two minibatches in each of two epochs: four optimiser steps, each with statistics
        mini_batch: 2,
        ppo_epochs: 2,
        max_new_tokens: 1,
        temperature: 1.0,
        top_k: 0,
        top_p: 1.0,
        sync_every: 4,
        lr: 1e-3,
        value_lr: 1e-3,
        optim: AdamWConfig::default(),
        kl_coef: 0.1,
        kl_target: Some((1.0, 100.0)),
        kl_in_loss: None,
        gamma: 1.0,
        lambda: 0.95,
        clip: 0.2,
        value_clip: 0.2,
        vf_coef: 0.5,
        ent_coef: 0.01,
        whiten_advantages: true,
        reward_norm: false,
        micro_batch_tokens: 0,
        ptx_coef: 0.0,
        ptx_batch_size: 0,
        seed: 3,
        log_every: 0,
        control: RunControl::replacing(),
    }
}

/// The downloads of a PPO run of `steps` steps (a value model, the adaptive KL controller).
fn ppo_downloads(dir: &Path, steps: usize, reward_norm: bool) -> usize {
    let be = CpuBackend::new();
    let tok = Tokenizer::byte_level();
    let (mut policy, reference, rm) = tiny_models(&be, &tok);
    let reward = Model::init(&be, rm.clone(), 2).unwrap();
    let mut value = Model::init(&be, rm, 2).unwrap();
    let cfg = PpoConfig { reward_norm, ..ppo_config(&dir.join(format!("ppo-{steps}-{reward_norm}")), steps) };
    let start = be.downloads();
    let models = PpoModels { policy: &mut policy, reference: &reference, reward: RewardSource::Model(&reward), value: Some(&mut value) };
    let reports = run_ppo(&be, models, &tok, &prompts(&tok), &cfg, None, None).unwrap();
    assert_eq!(reports.len(), steps);
    assert!(reports.iter().all(|r| r.response_len == 1.0), "every response is one token: one rollout read-back");
    assert!(reports.iter().all(|r| r.stats.total_loss.is_finite() && r.stats.policy_grad_norm > 0.0), "the steps trained");
    be.downloads() - start
}

/// How a GRPO test run gets its rewards and advantages.
#[derive(Clone, Copy, Debug)]
enum GrpoCase {
    /// a reward function, the KL in the loss (GRPO)
    FunctionKlInLoss,
    /// a reward model, the KL in the reward, with this estimator
    ModelKlInReward(Estimator),
}

/// The downloads of a GRPO run of `steps` steps.
fn grpo_downloads(dir: &Path, steps: usize, case: GrpoCase) -> usize {
    let be = CpuBackend::new();
    let tok = Tokenizer::byte_level();
    let (mut policy, reference, rm) = tiny_models(&be, &tok);
    let reward_model = Model::init(&be, rm, 2).unwrap();
    let mut cfg = demo_grpo_config(&dir.join(format!("grpo-{steps}-{case:?}")), 3, steps);
    (cfg.prompts_per_step, cfg.group_size, cfg.mini_batch, cfg.epochs, cfg.max_new_tokens) = (2, 2, 2, 2, 1);
    assert_eq!(cfg.kl_in, KlPlacement::Loss);
    let reward_fn = |i: usize, r: &[u32]| (i as f32) + r.first().map_or(0.0, |&t| (t % 7) as f32);
    let reward = match case {
        GrpoCase::FunctionKlInLoss => RewardSource::Function(&reward_fn),
        GrpoCase::ModelKlInReward(estimator) => {
            (cfg.kl_in, cfg.estimator) = (KlPlacement::Reward, estimator);
            RewardSource::Model(&reward_model)
        }
    };
    let models = GrpoModels { policy: &mut policy, reference: &reference, reward };
    let start = be.downloads();
    let reports = run_grpo(&be, models, &tok, &prompts(&tok), &cfg, None).unwrap();
    assert_eq!(reports.len(), steps);
    assert!(reports.iter().all(|r| r.response_len == 1.0), "every response is one token: one rollout read-back");
    assert!(reports.iter().all(|r| r.stats.total_loss.is_finite()), "the steps trained");
    be.downloads() - start
}

#[test]
fn a_ppo_step_reads_its_statistics_back_once() {
    let dir = tempfile::tempdir().unwrap();
    for reward_norm in [false, true] {
        let per_step = ppo_downloads(dir.path(), 2, reward_norm) - ppo_downloads(dir.path(), 1, reward_norm);
        assert_eq!(per_step, ROLLOUT_READS + 1, "downloads in a PPO step (reward_norm {reward_norm}) besides the rollout's: {}", per_step - ROLLOUT_READS);
    }
}

#[test]
fn a_grpo_step_reads_its_statistics_back_once() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        GrpoCase::FunctionKlInLoss,
        GrpoCase::ModelKlInReward(Estimator::Grpo { std_scale: true }),
        GrpoCase::ModelKlInReward(Estimator::Rloo),
        GrpoCase::ModelKlInReward(Estimator::ReinforcePp),
    ];
    for case in cases {
        let per_step = grpo_downloads(dir.path(), 2, case) - grpo_downloads(dir.path(), 1, case);
        assert_eq!(per_step, ROLLOUT_READS + 1, "downloads in a GRPO step ({case:?}) besides the rollout's: {}", per_step - ROLLOUT_READS);
    }
}
