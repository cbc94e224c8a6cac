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
use crate::io::safetensors_out::{self, OutTensor, ReadRange};
use crate::io::stored_dtype;
use memmap2::Mmap;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;
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
    let mut out = Vec::with_capacity(layout.specs.len());
    load_weights_each(dir, cfg, layout, |_, values| {
        out.push(values);
        Ok(())
    })?;
    Ok(out)
}

/// As [`load_weights`], handing each entry's values to `each(index, values)` as soon as they are
/// decoded from the memory map, so that a caller that uploads and drops them never holds more
/// than one tensor on the host.
pub fn load_weights_each(dir: &Path, cfg: &ModelConfig, layout: &ParamLayout, mut each: impl FnMut(usize, Vec<f32>) -> Result<()>) -> Result<()> {
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

    for (index, spec) in layout.specs.iter().enumerate() {
        let values = match &spec.hf {
            HfSource::Single(name) if spec.optional && !tensors.has(name) => {
                each(index, Vec::new())?;
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
        each(index, values)?;
    }
    Ok(())
}

/// The dtype that most of the weight bytes of `dir` are stored in (what `--save-dtype auto`
/// saves a model read from `dir` in). Reads only the files' headers.
pub fn stored_float_dtype(dir: &Path) -> Result<Dtype> {
    let mut bytes: Vec<(Dtype, usize)> = Vec::new();
    for path in weight_files(dir)? {
        let map = map_file(&path)?;
        let (_, meta) = SafeTensors::read_metadata(&map).map_err(|e| Error::file(&path, format!("not a valid safetensors file: {e}")))?;
        for info in meta.tensors().values() {
            let n = info.data_offsets.1.saturating_sub(info.data_offsets.0);
            match bytes.iter_mut().find(|(d, _)| *d == info.dtype) {
                Some((_, total)) => *total += n,
                None => bytes.push((info.dtype, n)),
            }
        }
    }
    Ok(bytes.into_iter().max_by_key(|&(_, n)| n).map_or(Dtype::F32, |(d, _)| d))
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

/// Writes `weights` (one host buffer per `layout.specs` entry) to `dir` as F32 `model.safetensors`
/// with Hugging Face names, and `cfg` as `config.json` (see [`save_weights_from`]).
pub fn save_weights(dir: &Path, cfg: &ModelConfig, layout: &ParamLayout, weights: &[Vec<f32>]) -> Result<()> {
    if weights.len() != layout.specs.len() {
        return Err(Error::invalid(format!("cannot save to {}: {} weight tensors given, the layout has {}", dir.display(), weights.len(), layout.specs.len())));
    }
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
    }
    let readers = weights.iter().map(|w| safetensors_out::host_reader(w)).collect();
    save_weights_from(dir, cfg, layout, readers, Dtype::F32)
}

/// Writes the weights that `readers` (one per `layout.specs` entry, reading a range of its flat
/// f32 values) give to `dir` as `model.safetensors` in `dtype` (F32, BF16 or F16) with Hugging
/// Face names, tensor by tensor in bounded chunks ([`safetensors_out`]), and `cfg` as
/// `config.json`. Creates `dir`; each file is written atomically. Tied embeddings write no
/// `lm_head.weight`, as `transformers` does.
pub fn save_weights_from<'a>(dir: &Path, cfg: &ModelConfig, layout: &ParamLayout, readers: Vec<ReadRange<'a>>, dtype: Dtype) -> Result<()> {
    if readers.len() != layout.specs.len() {
        return Err(Error::invalid(format!("cannot save to {}: {} weight tensors given, the layout has {}", dir.display(), readers.len(), layout.specs.len())));
    }
    let readers: Vec<std::rc::Rc<ReadRange<'a>>> = readers.into_iter().map(std::rc::Rc::new).collect();
    let mut tensors = Vec::new();
    for (spec, read) in layout.specs.iter().zip(&readers) {
        push_hf_tensors(spec, read, dtype, &mut tensors);
    }
    fsutil::create_dir_all(dir)?;
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors_out::write_atomic(&dir.join(WEIGHTS_FILE), &tensors, Some(&metadata))?;

    let config_path = dir.join(CONFIG_FILE);
    let mut value = cfg.to_hf_json();
    let torch_dtype = match dtype {
        Dtype::BF16 => "bfloat16",
        Dtype::F16 => "float16",
        _ => "float32",
    };
    value["torch_dtype"] = torch_dtype.into();
    value["dtype"] = torch_dtype.into();
    let mut json = serde_json::to_string_pretty(&value).map_err(|e| Error::file(&config_path, format!("cannot serialize: {e}")))?;
    json.push('\n');
    fsutil::atomic_write(&config_path, json.as_bytes())
}

/// The Hugging Face tensors that make up one layout entry: itself, or its row blocks (each
/// reading its range of the entry).
fn push_hf_tensors<'a>(spec: &ParamSpec, read: &std::rc::Rc<ReadRange<'a>>, dtype: Dtype, out: &mut Vec<OutTensor<'a>>) {
    match &spec.hf {
        HfSource::Single(name) => {
            let read = read.clone();
            out.push(OutTensor { name: name.clone(), shape: spec.shape.clone(), dtype, read: Box::new(move |s, n| read(s, n)) })
        }
        HfSource::ConcatRows(parts) => {
            let row_len: usize = spec.shape[1..].iter().product();
            let mut start = 0;
            for (name, rows) in parts {
                let mut shape = spec.shape.clone();
                shape[0] = *rows;
                let read = read.clone();
                let offset = start;
                out.push(OutTensor { name: name.clone(), shape, dtype, read: Box::new(move |s, n| read(offset + s, n)) });
                start += rows * row_len;
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
