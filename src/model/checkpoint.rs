//! Hugging Face safetensors checkpoints in and out.
//!
//! Loading reads `model.safetensors`, or the sharded form (`model.safetensors.index.json` and the
//! shards it names), memory-mapped, and returns one host `f32` buffer per [`ParamLayout`] entry:
//! F32, F16 and BF16 tensors are accepted, every shape is checked, Llama/Qwen2 q/k/v projections
//! are fused by concatenating rows, and GPT-2 names are found with or without the `transformer.`
//! prefix. Saving writes F32 `model.safetensors` with Hugging Face names (fused tensors split back)
//! and `config.json`, each atomically, so that `transformers` loads the folder as it is.

use crate::error::{Error, Result};
use crate::io::fs as fsutil;
use crate::model::config::ModelConfig;
use crate::model::params::{HfSource, ParamLayout, ParamSpec};
use crate::io::stored_dtype;
use memmap2::Mmap;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors, View};
use serde_json::Value;
use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The single-file weights name.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// The sharded weights index name.
pub const INDEX_FILE: &str = "model.safetensors.index.json";
/// The configuration file name.
pub const CONFIG_FILE: &str = "config.json";

/// The prefix GPT-2 tensors carry in `GPT2LMHeadModel` checkpoints and lack in the original
/// OpenAI-converted ones.
const GPT2_PREFIX: &str = "transformer.";

/// True when `dir` holds `model.safetensors` or `model.safetensors.index.json`.
pub fn has_checkpoint(dir: &Path) -> bool {
    dir.join(WEIGHTS_FILE).is_file() || dir.join(INDEX_FILE).is_file()
}

/// Loads the weights of `dir` into one row-major `f32` buffer per `layout.specs` entry, in order.
/// An `optional` entry missing from the files comes back empty.
pub fn load_weights(dir: &Path, cfg: &ModelConfig, layout: &ParamLayout) -> Result<Vec<Vec<f32>>> {
    if !dir.is_dir() {
        let what = if dir.exists() { "is not a folder" } else { "no such folder" };
        return Err(Error::file(dir, format!("cannot load a checkpoint: {what}")));
    }
    let files = weight_files(dir)?;
    let maps = files.iter().map(|path| map_file(path)).collect::<Result<Vec<_>>>()?;
    let parsed = files
        .iter()
        .zip(&maps)
        .map(|(path, map)| SafeTensors::deserialize(map).map_err(|e| Error::file(path, format!("not a valid safetensors file: {e}"))))
        .collect::<Result<Vec<_>>>()?;

    // Every tensor of every file; the first file naming a tensor wins.
    let mut tensors = Tensors { dir, files: &files, untied: !cfg.tie_embeddings, index: HashMap::new() };
    for (i, st) in parsed.iter().enumerate() {
        for (name, view) in st.iter() {
            tensors.index.entry(name.to_string()).or_insert((i, view));
        }
    }

    let mut out = Vec::with_capacity(layout.specs.len());
    for spec in &layout.specs {
        let values = match &spec.hf {
            HfSource::Single(name) if spec.optional && !tensors.has(name) => {
                out.push(Vec::new());
                continue;
            }
            HfSource::Single(name) => {
                let (path, key, view) = tensors.find(name)?;
                check_shape(path, key, view.shape(), &spec.shape)?;
                decode(path, key, view)?
            }
            HfSource::ConcatRows(parts) => {
                // no capacity up front: the shapes of the parts are not checked yet
                let mut values = Vec::new();
                for (name, rows) in parts {
                    let (path, key, view) = tensors.find(name)?;
                    let mut want = spec.shape.clone();
                    want[0] = *rows;
                    check_shape(path, key, view.shape(), &want)?;
                    values.extend(decode(path, key, view)?);
                }
                values
            }
        };
        if values.len() != spec.numel() {
            return Err(Error::file(dir, format!("tensor `{}`: read {} values, expected {}", spec.name, values.len(), spec.numel())));
        }
        if let Some(i) = values.iter().position(|x| !x.is_finite()) {
            return Err(Error::file(
                dir,
                format!(
                    "tensor `{}` holds a non-finite value ({} at flat index {i}): these weights are broken (a diverged run?) and are refused",
                    spec.name, values[i]
                ),
            ));
        }
        out.push(values);
    }
    Ok(out)
}

/// The tensors of a checkpoint's files, by name.
struct Tensors<'a> {
    dir: &'a Path,
    files: &'a [PathBuf],
    untied: bool,
    index: HashMap<String, (usize, TensorView<'a>)>,
}

impl<'a> Tensors<'a> {
    fn has(&self, name: &str) -> bool {
        self.find(name).is_ok()
    }

    /// The file, the name as stored and the tensor for a layout name, trying GPT-2 names with and
    /// without the `transformer.` prefix.
    fn find(&self, name: &str) -> Result<(&'a Path, &str, &TensorView<'a>)> {
        let alt = match name.strip_prefix(GPT2_PREFIX) {
            Some(rest) => rest.to_string(),
            None => format!("{GPT2_PREFIX}{name}"),
        };
        for candidate in [name, alt.as_str()] {
            if let Some((key, (i, view))) = self.index.get_key_value(candidate) {
                return Ok((self.files[*i].as_path(), key.as_str(), view));
            }
        }
        let mut msg = format!("missing tensor `{name}` (looked in {})", file_list(self.files));
        if self.untied && name == "lm_head.weight" {
            msg.push_str("; config.json says the embeddings are untied (tie_word_embeddings = false)");
        }
        Err(Error::file(self.dir, msg))
    }
}

/// Writes `weights` (one buffer per `layout.specs` entry) to `dir` as F32 `model.safetensors` with
/// Hugging Face names, and `cfg` as `config.json`. Creates `dir`; each file is written atomically.
/// Tied embeddings write no `lm_head.weight`, as `transformers` does.
pub fn save_weights(dir: &Path, cfg: &ModelConfig, layout: &ParamLayout, weights: &[Vec<f32>]) -> Result<()> {
    if weights.len() != layout.specs.len() {
        return Err(Error::invalid(format!("cannot save to {}: {} weight tensors given, the layout has {}", dir.display(), weights.len(), layout.specs.len())));
    }
    let mut tensors: Vec<(String, F32View<'_>)> = Vec::new();
    for (spec, w) in layout.specs.iter().zip(weights) {
        if w.len() != spec.numel() {
            return Err(Error::invalid(format!(
                "cannot save tensor `{}` to {}: {} values given, shape {:?} needs {}",
                spec.name,
                dir.display(),
                w.len(),
                spec.shape,
                spec.numel()
            )));
        }
        push_hf_tensors(spec, w, &mut tensors);
    }

    fsutil::create_dir_all(dir)?;
    let path = dir.join(WEIGHTS_FILE);
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    let bytes = safetensors::serialize(tensors, Some(metadata)).map_err(|e| Error::file(&path, format!("cannot serialize: {e}")))?;
    fsutil::atomic_write(&path, &bytes)?;
    drop(bytes);

    let config_path = dir.join(CONFIG_FILE);
    let mut json = serde_json::to_string_pretty(&cfg.to_hf_json()).map_err(|e| Error::file(&config_path, format!("cannot serialize: {e}")))?;
    json.push('\n');
    fsutil::atomic_write(&config_path, json.as_bytes())
}

/// The Hugging Face tensors that make up one layout entry: itself, or its row blocks.
fn push_hf_tensors<'a>(spec: &ParamSpec, w: &'a [f32], out: &mut Vec<(String, F32View<'a>)>) {
    match &spec.hf {
        HfSource::Single(name) => out.push((name.clone(), F32View { shape: spec.shape.clone(), data: w })),
        HfSource::ConcatRows(parts) => {
            let row_len: usize = spec.shape[1..].iter().product();
            let mut start = 0;
            for (name, rows) in parts {
                let mut shape = spec.shape.clone();
                shape[0] = *rows;
                let end = start + rows * row_len;
                out.push((name.clone(), F32View { shape, data: &w[start..end] }));
                start = end;
            }
        }
    }
}

/// The weight files of `dir`: `model.safetensors`, or the shards its index names (each once, in
/// order of first mention).
fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let single = dir.join(WEIGHTS_FILE);
    if single.is_file() {
        return Ok(vec![single]);
    }
    let index_path = dir.join(INDEX_FILE);
    if !index_path.is_file() {
        return Err(Error::file(dir, format!("no checkpoint: neither {WEIGHTS_FILE} nor {INDEX_FILE} is in this folder")));
    }
    let text = std::fs::read_to_string(&index_path).map_err(|e| Error::io(&index_path, e))?;
    let value: Value = serde_json::from_str(&text).map_err(|e| Error::file(&index_path, format!("invalid JSON: {e}")))?;
    let map = value.get("weight_map").and_then(Value::as_object).ok_or_else(|| Error::file(&index_path, "missing `weight_map` object"))?;
    let mut shards: Vec<PathBuf> = Vec::new();
    for (tensor, shard) in map {
        let shard = shard.as_str().ok_or_else(|| Error::file(&index_path, format!("weight_map entry `{tensor}` is not a file name")))?;
        let shard_path = Path::new(shard);
        if shard_path.is_absolute() || shard_path.components().any(|c| c == std::path::Component::ParentDir) {
            return Err(Error::file(&index_path, format!("shard `{shard}` lies outside the checkpoint folder")));
        }
        let full = dir.join(shard_path);
        if !shards.contains(&full) {
            if !full.is_file() {
                return Err(Error::file(&full, format!("shard named in {INDEX_FILE} is missing")));
            }
            shards.push(full);
        }
    }
    if shards.is_empty() {
        return Err(Error::file(&index_path, "`weight_map` names no shard"));
    }
    Ok(shards)
}

fn map_file(path: &Path) -> Result<Mmap> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    // SAFETY: the map is read-only and lives only while loading; checkpoints are written by
    // rename (never in place), so the mapped file is not modified under us by `save_weights`.
    unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))
}

fn file_list(files: &[PathBuf]) -> String {
    let names: Vec<String> = files.iter().map(|p| p.file_name().map_or_else(|| p.display().to_string(), |n| n.to_string_lossy().into_owned())).collect();
    names.join(", ")
}

fn check_shape(path: &Path, name: &str, found: &[usize], expected: &[usize]) -> Result<()> {
    if found == expected {
        Ok(())
    } else {
        Err(Error::tensor(path, name, format!("shape {found:?} does not match the expected {expected:?}")))
    }
}

fn decode(path: &Path, name: &str, view: &TensorView<'_>) -> Result<Vec<f32>> {
    stored_dtype::to_f32(view.data(), view.dtype())
        .ok_or_else(|| Error::tensor(path, name, format!("dtype {:?} is not supported (expected F32, F16 or BF16)", view.dtype())))
}

/// A borrowed f32 tensor for `safetensors::serialize`.
pub(crate) struct F32View<'a> {
    pub(crate) shape: Vec<usize>,
    pub(crate) data: &'a [f32],
}

impl View for F32View<'_> {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        if cfg!(target_endian = "little") {
            Cow::Borrowed(bytemuck::cast_slice(self.data))
        } else {
            Cow::Owned(self.data.iter().flat_map(|v| v.to_le_bytes()).collect())
        }
    }
    fn data_len(&self) -> usize {
        self.data.len() * 4
    }
}
