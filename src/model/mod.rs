//! The decoder: configuration, parameter layout, Hugging Face checkpoints, forward and backward.

pub mod checkpoint;
pub mod config;
pub mod decoder;
pub mod params;
pub mod scoring;

pub use config::{Family, ModelConfig};
pub use decoder::{Activations, Decoder, GradScratch, KvCache, Shape, SlotCache};
pub use params::ParamLayout;

use crate::backend::Backend;
use crate::data::rng::Rng;
use crate::error::Result;
use std::path::Path;

/// A decoder and its weights, resident on a backend.
pub struct Model<B: Backend> {
    pub decoder: Decoder,
    pub weights: Vec<B::Buf>,
}

impl<B: Backend> Model<B> {
    pub fn cfg(&self) -> &ModelConfig {
        &self.decoder.cfg
    }

    pub fn layout(&self) -> &ParamLayout {
        &self.decoder.layout
    }

    /// Uploads host weights laid out as `ParamLayout::new(&cfg)`.
    pub fn from_host(be: &B, cfg: ModelConfig, host: &[Vec<f32>]) -> Result<Self> {
        let decoder = Decoder::new(cfg);
        if host.len() != decoder.layout.specs.len() {
            return Err(crate::Error::invalid(format!("expected {} weight tensors, got {}", decoder.layout.specs.len(), host.len())));
        }
        let mut weights = Vec::with_capacity(host.len());
        for (spec, h) in decoder.layout.specs.iter().zip(host) {
            if h.len() != spec.numel() {
                return Err(crate::Error::invalid(format!("tensor `{}` has {} values, expected {:?}", spec.name, h.len(), spec.shape)));
            }
            weights.push(be.upload(h)?);
        }
        Ok(Model { decoder, weights })
    }

    /// Reads a Hugging Face folder (config.json + safetensors).
    pub fn load(be: &B, dir: &Path) -> Result<Self> {
        let cfg = ModelConfig::load(dir)?;
        let layout = ParamLayout::new(&cfg);
        let host = checkpoint::load_weights(dir, &cfg, &layout)?;
        Self::from_host(be, cfg, &host)
    }

    /// Reads a folder as a reward model (a scalar `score` head on the trunk): a reward-model
    /// checkpoint as it is, or a causal LM (an SFT model) whose LM head is dropped and whose score
    /// head starts as normal(0, 0.02) drawn from `seed`.
    pub fn load_reward(be: &B, dir: &Path, seed: u64) -> Result<Self> {
        let mut cfg = ModelConfig::load(dir)?;
        cfg.score_head = true;
        let layout = ParamLayout::new(&cfg);
        let mut host = checkpoint::load_weights(dir, &cfg, &layout)?;
        if let Some(i) = layout.score {
            if host[i].is_empty() {
                let mut rng = Rng::new(seed);
                host[i] = (0..layout.specs[i].numel()).map(|_| rng.normal() * 0.02).collect();
            }
        }
        Self::from_host(be, cfg, &host)
    }

    /// A fresh model: normal(0, 0.02) matrices and embeddings, residual output projections scaled
    /// by 1/sqrt(2 L) (GPT-2), zero biases, unit norm weights.
    pub fn init(be: &B, cfg: ModelConfig, seed: u64) -> Result<Self> {
        let layout = ParamLayout::new(&cfg);
        let mut rng = Rng::new(seed);
        let resid = layout.residual_projections();
        let norms = layout.norm_weights();
        let scale_resid = 1.0 / (2.0 * cfg.n_layers as f32).sqrt();
        let host: Vec<Vec<f32>> = layout
            .specs
            .iter()
            .enumerate()
            .map(|(i, spec)| {
                let n = spec.numel();
                let mut v = Vec::new();
                v.try_reserve_exact(n).map_err(|_| {
                    crate::Error::invalid(format!("cannot allocate tensor `{}` of shape {:?}: the model is too large for this machine", spec.name, spec.shape))
                })?;
                if norms.contains(&i) {
                    v.resize(n, 1.0);
                } else if spec.shape.len() == 1 {
                    v.resize(n, 0.0);
                } else {
                    let std = if resid.contains(&i) { 0.02 * scale_resid } else { 0.02 };
                    v.extend((0..n).map(|_| rng.normal() * std));
                }
                Ok(v)
            })
            .collect::<Result<_>>()?;
        Self::from_host(be, cfg, &host)
    }

    /// Downloads the weights to host vectors in layout order.
    pub fn to_host(&self, be: &B) -> Result<Vec<Vec<f32>>> {
        self.weights.iter().map(|w| be.download(w)).collect()
    }

    /// Writes config.json and model.safetensors (Hugging Face layout) into `dir`.
    pub fn save(&self, be: &B, dir: &Path) -> Result<()> {
        let host = self.to_host(be)?;
        checkpoint::save_weights(dir, &self.decoder.cfg, &self.decoder.layout, &host)
    }

    /// Zero-filled buffers shaped like the weights (gradients, optimiser moments).
    pub fn zeros_like(&self, be: &B) -> Result<Vec<B::Buf>> {
        self.decoder.layout.specs.iter().map(|s| be.alloc(s.numel())).collect()
    }
}
