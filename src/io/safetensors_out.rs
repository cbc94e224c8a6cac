//! Safetensors files written tensor by tensor, so that saving a model or a run's state needs one
//! bounded buffer beyond what training already holds, however large the model.
//!
//! The header is computed from the tensors' names, shapes and dtypes alone (padded with spaces to
//! a multiple of 8 bytes, as `safetensors` pads it); then each tensor is read from its source
//! [`CHUNK_VALUES`] f32 values at a time (a device buffer's range, or a host slice), converted to
//! the stored dtype and written: the layout `safetensors` writes (the 8-byte header length, the
//! JSON header, the tensors' bytes back to back), in the order given.

use crate::error::{Error, Result};
use safetensors::Dtype;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

/// f32 values read, converted and written at a time (16 MiB as f32).
pub const CHUNK_VALUES: usize = 4 << 20;

/// Reads `len` f32 values from `start` of a tensor's flat data.
pub type ReadRange<'a> = Box<dyn Fn(usize, usize) -> Result<Vec<f32>> + 'a>;

/// One tensor to write: its name, shape, stored dtype (F32, BF16 or F16) and where its f32 values
/// come from.
pub struct OutTensor<'a> {
    pub name: String,
    pub shape: Vec<usize>,
    pub dtype: Dtype,
    pub read: ReadRange<'a>,
}

/// Reads ranges of the host slice `data`.
pub fn host_reader(data: &[f32]) -> ReadRange<'_> {
    Box::new(move |start, len| {
        data.get(start..start + len).map(<[f32]>::to_vec).ok_or_else(|| Error::invalid(format!("values {start}..{} of a tensor of {}", start + len, data.len())))
    })
}

impl<'a> OutTensor<'a> {
    /// A tensor whose values are the host slice `data`.
    pub fn host(name: String, shape: Vec<usize>, dtype: Dtype, data: &'a [f32]) -> Self {
        OutTensor { name, shape, dtype, read: host_reader(data) }
    }

    fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

fn dtype_name(d: Dtype) -> Result<&'static str> {
    match d {
        Dtype::F32 => Ok("F32"),
        Dtype::BF16 => Ok("BF16"),
        Dtype::F16 => Ok("F16"),
        other => Err(Error::invalid(format!("cannot save tensors as {other:?} (f32, bf16 and f16 are supported)"))),
    }
}

/// The header bytes (length prefix included) for `tensors` in order.
fn header(tensors: &[OutTensor<'_>], metadata: Option<&HashMap<String, String>>) -> Result<Vec<u8>> {
    let mut obj = Map::new();
    if let Some(m) = metadata {
        obj.insert("__metadata__".into(), json!(m));
    }
    let mut offset = 0usize;
    for t in tensors {
        let bytes = t.numel() * t.dtype.bitsize() / 8;
        obj.insert(t.name.clone(), json!({"dtype": dtype_name(t.dtype)?, "shape": t.shape, "data_offsets": [offset, offset + bytes]}));
        offset += bytes;
    }
    let mut text = serde_json::to_vec(&Value::Object(obj)).map_err(|e| Error::invalid(format!("safetensors header: {e}")))?;
    text.resize(text.len().next_multiple_of(8), b' ');
    let mut out = Vec::with_capacity(8 + text.len());
    out.extend_from_slice(&(text.len() as u64).to_le_bytes());
    out.extend_from_slice(&text);
    Ok(out)
}

/// Appends `values` converted to `dtype` to `out`.
fn encode(values: &[f32], dtype: Dtype, out: &mut Vec<u8>) {
    out.clear();
    match dtype {
        Dtype::BF16 => out.extend(values.iter().flat_map(|&x| half::bf16::from_f32(x).to_le_bytes())),
        Dtype::F16 => out.extend(values.iter().flat_map(|&x| half::f16::from_f32(x).to_le_bytes())),
        _ => out.extend(values.iter().flat_map(|x| x.to_le_bytes())),
    }
}

/// Writes `tensors` to `path` (created or truncated) and fsyncs it. Not atomic by itself: see
/// [`write_atomic`].
pub fn write_to(path: &Path, tensors: &[OutTensor<'_>], metadata: Option<&HashMap<String, String>>) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    if let Some(t) = tensors.iter().find(|t| !seen.insert(t.name.as_str())) {
        return Err(Error::file(path, format!("tensor `{}` given twice", t.name)));
    }
    let head = header(tensors, metadata)?;
    let mut f = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
    f.write_all(&head).map_err(|e| Error::io(path, e))?;
    let mut bytes = Vec::new();
    for t in tensors {
        let n = t.numel();
        let mut start = 0;
        while start < n {
            let len = CHUNK_VALUES.min(n - start);
            let values = (t.read)(start, len).map_err(|e| Error::file(path, format!("cannot read tensor `{}`: {e}", t.name)))?;
            if values.len() != len {
                return Err(Error::file(path, format!("tensor `{}`: {} values read at {start}, expected {len}", t.name, values.len())));
            }
            encode(&values, t.dtype, &mut bytes);
            f.write_all(&bytes).map_err(|e| Error::io(path, e))?;
            start += len;
        }
    }
    f.sync_all().map_err(|e| Error::io(path, e))
}

/// Writes `tensors` to `path` atomically: a sibling temporary file, fsynced, renamed over `path`,
/// then the folder fsynced. A failure leaves `path` as it was and no temporary file.
pub fn write_atomic(path: &Path, tensors: &[OutTensor<'_>], metadata: Option<&HashMap<String, String>>) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let file_name = path.file_name().ok_or_else(|| Error::file(path, "not a file path"))?;
    let tmp = dir.join(format!(".{}.tmp{}", file_name.to_string_lossy(), std::process::id()));
    let result = write_to(&tmp, tensors, metadata).and_then(|()| std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e)));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
        return result;
    }
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use safetensors::tensor::TensorView;

    #[test]
    fn reads_back_as_safetensors_serialize_writes() {
        let a: Vec<f32> = (0..CHUNK_VALUES + 13).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..6).map(|i| i as f32 - 2.5).collect();
        let dir = tempfile::tempdir().unwrap();
        let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
        for dtype in [Dtype::F32, Dtype::BF16, Dtype::F16] {
            let path = dir.path().join("t.safetensors");
            let tensors = vec![
                OutTensor::host("layer.weight".into(), vec![a.len()], dtype, &a),
                OutTensor::host("bias".into(), vec![2, 3], dtype, &b),
            ];
            write_atomic(&path, &tensors, Some(&meta)).unwrap();
            let got = std::fs::read(&path).unwrap();
            let mut encoded_a = Vec::new();
            encode(&a, dtype, &mut encoded_a);
            let mut encoded_b = Vec::new();
            encode(&b, dtype, &mut encoded_b);
            let views = vec![
                ("layer.weight".to_string(), TensorView::new(dtype, vec![a.len()], &encoded_a).unwrap()),
                ("bias".to_string(), TensorView::new(dtype, vec![2, 3], &encoded_b).unwrap()),
            ];
            let parsed = safetensors::SafeTensors::deserialize(&got).unwrap();
            assert_eq!(parsed.tensor("bias").unwrap().data(), &encoded_b[..], "{dtype:?}");
            assert_eq!(parsed.tensor("layer.weight").unwrap().shape(), &[a.len()]);
            // the same tensors through safetensors' own serializer: the same values under the
            // same names (its order of tensors may differ from ours)
            let reference = safetensors::serialize(views, Some(meta.clone())).unwrap();
            let theirs = safetensors::SafeTensors::deserialize(&reference).unwrap();
            for name in ["layer.weight", "bias"] {
                assert_eq!(parsed.tensor(name).unwrap().data(), theirs.tensor(name).unwrap().data(), "{name} {dtype:?}");
            }
            // an 8-byte-aligned header, then exactly the tensors' bytes
            let n = u64::from_le_bytes(got[..8].try_into().unwrap()) as usize;
            assert_eq!(n % 8, 0, "{dtype:?}");
            assert_eq!(got.len() - 8 - n, encoded_a.len() + encoded_b.len(), "{dtype:?}");
        }
        // bf16 rounds to nearest even, as the loader's widening expects
        assert_eq!(half::bf16::from_f32(1.0 + 1.0 / 256.0).to_f32(), 1.0);
    }

    #[test]
    fn a_failing_source_leaves_the_old_file_and_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        std::fs::write(&path, b"old").unwrap();
        let bad = OutTensor { name: "w".into(), shape: vec![4], dtype: Dtype::F32, read: Box::new(|_, _| Err(Error::invalid("device lost"))) };
        let err = write_atomic(&path, &[bad], None).unwrap_err().to_string();
        assert!(err.contains("`w`") && err.contains("device lost"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
