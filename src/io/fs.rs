//! File-system helpers: atomic writes (temporary file, fsync, rename) so a crash never leaves a
//! half-written checkpoint behind.

use crate::error::{Error, Result};
use std::io::Write;
use std::path::Path;

/// Writes `bytes` to `path` atomically: a sibling temporary file is written and fsynced, then
/// renamed over `path`, and the directory is fsynced.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let file_name = path.file_name().ok_or_else(|| Error::file(path, "not a file path"))?;
    let tmp = dir.join(format!(".{}.tmp{}", file_name.to_string_lossy(), std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        f.write_all(bytes).map_err(|e| Error::io(&tmp, e))?;
        f.sync_all().map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Creates a directory and its parents, naming it in the error.
pub fn create_dir_all(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))
}

/// A content digest of the file at `path` (64-bit FNV-1a over 8-byte words, then the length),
/// read in bounded chunks: identifies a data file or a model's weights across runs and builds.
/// Not a cryptographic hash.
pub fn digest_file(path: &Path) -> Result<u64> {
    use std::io::Read;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut buf = vec![0u8; 1 << 20];
    let mut total: u64 = 0;
    let mut carry: Vec<u8> = Vec::with_capacity(8);
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        total += n as u64;
        let mut bytes = &buf[..n];
        if !carry.is_empty() {
            let take = (8 - carry.len()).min(bytes.len());
            carry.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if carry.len() == 8 {
                h = (h ^ u64::from_le_bytes(carry[..].try_into().expect("8 bytes"))).wrapping_mul(PRIME);
                carry.clear();
            }
        }
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            h = (h ^ u64::from_le_bytes(w.try_into().expect("8 bytes"))).wrapping_mul(PRIME);
        }
        carry.extend_from_slice(words.remainder());
    }
    for &b in &carry {
        h = (h ^ b as u64).wrapping_mul(PRIME);
    }
    Ok((h ^ total).wrapping_mul(PRIME))
}

/// The files of a model folder that decide what a run loads from it: its configuration,
/// tokenizer and weight files (`*.safetensors`, the shard index), sorted by name.
pub fn model_files(dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    let mut files = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let e = e.map_err(|e| Error::io(dir, e))?;
        let name = e.file_name().to_string_lossy().into_owned();
        let wanted = name.ends_with(".safetensors")
            || matches!(name.as_str(), "config.json" | "model.safetensors.index.json" | "tokenizer.json" | "tokenizer_config.json" | "rlhf_tokenizer.json");
        if wanted && e.path().is_file() {
            files.push(e.path());
        }
    }
    files.sort();
    Ok(files)
}

/// A digest of an input named on the command line: a file's content, or for a folder the names
/// and contents of its [`model_files`]; written as `fnv:<16 hex digits>`.
pub fn digest_input(path: &Path) -> Result<String> {
    let h = if path.is_dir() {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for f in model_files(path)? {
            let name = f.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            for b in name.bytes() {
                h = (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
            }
            h = (h ^ digest_file(&f)?).wrapping_mul(0x0000_0100_0000_01b3);
        }
        h
    } else {
        digest_file(path)?
    };
    Ok(format!("fnv:{h:016x}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_sees_every_byte_and_the_length() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("f");
        let d = |bytes: &[u8]| {
            std::fs::write(&p, bytes).unwrap();
            digest_file(&p).unwrap()
        };
        let base: Vec<u8> = (0..3_000_003u32).map(|i| (i * 7 % 251) as u8).collect();
        let a = d(&base);
        assert_eq!(a, d(&base));
        let mut last = base.clone();
        *last.last_mut().unwrap() ^= 1;
        assert_ne!(a, d(&last));
        let mut mid = base.clone();
        mid[1 << 20] ^= 0x80;
        assert_ne!(a, d(&mid));
        assert_ne!(d(b"ab"), d(b"ab\0"));
    }
}
