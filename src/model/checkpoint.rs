//! Placeholder until the checkpoint module lands.
use crate::error::Result;
use crate::model::{ModelConfig, ParamLayout};
use std::path::Path;
pub fn load_weights(_dir: &Path, _cfg: &ModelConfig, _layout: &ParamLayout) -> Result<Vec<Vec<f32>>> { unimplemented!() }
pub fn save_weights(_dir: &Path, _cfg: &ModelConfig, _layout: &ParamLayout, _w: &[Vec<f32>]) -> Result<()> { unimplemented!() }
