//! The decoder: configuration, parameter layout, Hugging Face checkpoints, forward and backward.

pub mod activations;
pub mod checkpoint;
pub mod config;
pub mod decoder;
mod decoder_cached;
pub mod hf_folder;
pub mod params;
pub mod scoring;
pub mod sequence_scorer;
pub mod state_file;

pub use config::{Family, ModelConfig};
pub use activations::{Activations, GradScratch, KvCache, Shape, SlotCache};
pub use decoder::Decoder;
pub use params::ParamLayout;

use crate::backend::ops::{ElementwiseParams, Storage};
use crate::backend::{Backend, Dtype};
use crate::data::rng::Rng;
use crate::error::Result;
use crate::model::state_file::{Checkpoint, StateWriter};
use std::path::Path;

/// A decoder and its weights, resident on a backend.
///
/// `weights` are what the ops read, in the backend's compute type ([`Storage::Compute`]). When
/// that type is not f32 (`--precision bf16`), `master` holds the f32 master weights the optimiser
/// updates (and checkpoints save), and `weights` is their rounded copy, refreshed after every
/// update; in f32 mode `master` is empty and the weights are their own master. A frozen model
/// (a reference or reward model) drops its master copy ([`Model::into_frozen`]).
pub struct Model<B: Backend> {
    pub decoder: Decoder,
    pub weights: Vec<B::Buf>,
    pub master: Vec<B::Buf>,
    /// the dtype the weights were stored in where they were read (F32 for a new model): what
    /// `--save-dtype auto` saves them in
    pub source_dtype: safetensors::Dtype,
}

/// The weights an optimiser step writes: the compute weights and, in a reduced-precision mode,
/// their f32 master copy (empty in f32 mode).
pub struct ParamsMut<'a, B: Backend> {
    pub weights: &'a mut [B::Buf],
    pub master: &'a mut [B::Buf],
}

impl<B: Backend> Model<B> {
    pub fn cfg(&self) -> &ModelConfig {
        &self.decoder.cfg
    }

    /// The dtype the weights were stored in where they were read (F32 for a new model).
    pub fn source_dtype(&self) -> safetensors::Dtype {
        self.source_dtype
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
        for (spec, h) in decoder.layout.specs.iter().zip(host) {
            if h.len() != spec.numel() {
                return Err(crate::Error::invalid(format!("tensor `{}` has {} values, expected {:?}", spec.name, h.len(), spec.shape)));
            }
        }
        let (weights, master) = upload_weights(be, host)?;
        Ok(Model { decoder, weights, master, source_dtype: safetensors::Dtype::F32 })
    }

    /// A model from weights already uploaded as f32 (layout order): the loaders upload each
    /// tensor as it is decoded, so the host never holds the whole model.
    fn from_uploaded(be: &B, cfg: ModelConfig, uploaded: Vec<B::Buf>) -> Result<Self> {
        let decoder = Decoder::new(cfg);
        for (spec, b) in decoder.layout.specs.iter().zip(&uploaded) {
            if be.len(b) != spec.numel() {
                return Err(crate::Error::invalid(format!("tensor `{}` has {} values, expected {:?}", spec.name, be.len(b), spec.shape)));
            }
        }
        let (weights, master) = weights_from_uploaded(be, uploaded)?;
        Ok(Model { decoder, weights, master, source_dtype: safetensors::Dtype::F32 })
    }

    /// The f32 weights: the master copy in a reduced-precision mode, else the weights.
    pub fn master_weights(&self) -> &[B::Buf] {
        if self.master.is_empty() {
            &self.weights
        } else {
            &self.master
        }
    }

    /// What an optimiser step writes.
    pub fn params_mut(&mut self) -> ParamsMut<'_, B> {
        ParamsMut { weights: &mut self.weights, master: &mut self.master }
    }

    /// Rewrites the compute weights from the master weights (after those were restored or
    /// updated); nothing to do in f32 mode.
    pub fn refresh_compute_weights(&mut self, be: &B) -> Result<()> {
        refresh_compute_weights(be, &mut self.weights, &self.master)
    }

    /// The model without its master weights, for a model that is never trained (a reference or
    /// reward model): in bf16 mode it then holds bf16 weights only.
    pub fn into_frozen(mut self) -> Self {
        self.master = Vec::new();
        self
    }

    /// Adds the (master) weights to a checkpoint as `<name>.i`.
    pub fn save_state<'a>(&'a self, be: &'a B, w: &mut StateWriter<'a>, name: &str) -> Result<()> {
        w.bufs(be, name, self.master_weights())
    }

    /// Restores what [`Self::save_state`] saved, and the compute weights from it.
    pub fn restore_state(&mut self, be: &B, ck: &Checkpoint, name: &str) -> Result<()> {
        if self.master.is_empty() {
            return ck.restore_bufs(be, name, &mut self.weights);
        }
        ck.restore_bufs(be, name, &mut self.master)?;
        self.refresh_compute_weights(be)
    }

    /// Reads a Hugging Face folder (config.json + safetensors).
    pub fn load(be: &B, dir: &Path) -> Result<Self> {
        Self::load_with(be, dir, ModelConfig::load(dir)?, |_, _| {})
    }

    /// Reads a folder as a reward model (a scalar `score` head on the trunk): a reward-model
    /// checkpoint as it is, or a causal LM (an SFT model) whose LM head is dropped and whose score
    /// head starts as normal(0, 0.02) drawn from `seed`.
    pub fn load_reward(be: &B, dir: &Path, seed: u64) -> Result<Self> {
        let mut cfg = ModelConfig::load(dir)?;
        cfg.score_head = true;
        let layout = ParamLayout::new(&cfg);
        Self::load_with(be, dir, cfg, |i, values| {
            if Some(i) == layout.score && values.is_empty() {
                let mut rng = Rng::new(seed);
                *values = (0..layout.specs[i].numel()).map(|_| rng.normal() * 0.02).collect();
            }
        })
    }

    /// Reads the weights of `dir` for `cfg`, uploading each tensor as it is decoded (after
    /// `fill(index, values)` may complete it), so the host never holds the whole model.
    fn load_with(be: &B, dir: &Path, cfg: ModelConfig, mut fill: impl FnMut(usize, &mut Vec<f32>)) -> Result<Self> {
        let layout = ParamLayout::new(&cfg);
        let mut uploaded = Vec::with_capacity(layout.specs.len());
        checkpoint::load_weights_each(dir, &cfg, &layout, |i, mut values| {
            fill(i, &mut values);
            uploaded.push(be.upload(&values)?);
            Ok(())
        })?;
        let mut model = Self::from_uploaded(be, cfg, uploaded)?;
        model.source_dtype = checkpoint::stored_float_dtype(dir)?;
        Ok(model)
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

    /// Downloads the (master) weights to host vectors in layout order.
    pub fn to_host(&self, be: &B) -> Result<Vec<Vec<f32>>> {
        self.master_weights().iter().map(|w| be.download(w)).collect()
    }

    /// Writes a complete Hugging Face model folder into `dir`: weights, config.json,
    /// generation_config.json and `tok` (see [`hf_folder`]).
    /// The weights are read from the device a bounded chunk at a time as they are written, and
    /// stored as f32.
    pub fn save(&self, be: &B, dir: &Path, tok: &crate::data::Tokenizer) -> Result<()> {
        self.save_as(be, dir, tok, safetensors::Dtype::F32)
    }

    /// As [`Self::save`], the weights stored in `dtype` (F32, BF16 or F16; rounded to nearest
    /// even).
    pub fn save_as(&self, be: &B, dir: &Path, tok: &crate::data::Tokenizer, dtype: safetensors::Dtype) -> Result<()> {
        let readers = self
            .master_weights()
            .iter()
            .map(|w| -> crate::io::safetensors_out::ReadRange<'_> { Box::new(move |start, len| be.download_range(w, start, len)) })
            .collect();
        hf_folder::save_model_folder(dir, &self.decoder.cfg, &self.decoder.layout, readers, tok, dtype)
    }

    /// Zero-filled gradient buffers shaped like the weights (in the compute type).
    pub fn grads_like(&self, be: &B) -> Result<Vec<B::Buf>> {
        self.decoder.layout.specs.iter().map(|s| be.alloc_as(s.numel(), Storage::Compute)).collect()
    }
}

/// Compute weights and their f32 master copy (empty in f32 mode).
pub type WeightsAndMaster<B> = (Vec<<B as Backend>::Buf>, Vec<<B as Backend>::Buf>);

/// Uploads host tensors as (compute weights, f32 master weights): in f32 mode the uploaded
/// tensors themselves and no master; otherwise the f32 upload becomes the master and the compute
/// weights its copy rounded to the compute type.
pub fn upload_weights<B: Backend>(be: &B, host: &[Vec<f32>]) -> Result<WeightsAndMaster<B>> {
    let uploaded = host.iter().map(|h| be.upload(h)).collect::<Result<Vec<_>>>()?;
    weights_from_uploaded(be, uploaded)
}

/// As [`upload_weights`], from f32 tensors already on the device.
pub fn weights_from_uploaded<B: Backend>(be: &B, uploaded: Vec<B::Buf>) -> Result<WeightsAndMaster<B>> {
    if be.compute_dtype() == Dtype::F32 {
        return Ok((uploaded, Vec::new()));
    }
    let mut compute = uploaded.iter().map(|m| be.alloc_as(be.len(m), Storage::Compute)).collect::<Result<Vec<_>>>()?;
    refresh_compute_weights(be, &mut compute, &uploaded)?;
    Ok((compute, uploaded))
}

/// `weights[i] = master[i]` rounded to the compute type (nothing when `master` is empty).
pub fn refresh_compute_weights<B: Backend>(be: &B, weights: &mut [B::Buf], master: &[B::Buf]) -> Result<()> {
    for (w, m) in weights.iter_mut().zip(master) {
        be.copy(w, m, ElementwiseParams::new(be.len(m))?)?;
    }
    Ok(())
}
