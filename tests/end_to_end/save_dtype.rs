//! `--save-dtype`: a model read in bf16 is saved in bf16 by default (as transformers does), any
//! model in the dtype asked for, the config saying which; run-state checkpoints stay f32.

use rlhf::backend::CpuBackend;
use rlhf::model::Model;
use safetensors::{Dtype, SafeTensors};
use std::path::{Path, PathBuf};
use std::process::Command;

fn rlhf(args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_rlhf")).args(args).output().expect("running rlhf");
    assert!(out.status.success(), "rlhf {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The dtypes of `file`'s tensors.
fn dtypes(file: &Path) -> Vec<Dtype> {
    let bytes = std::fs::read(file).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut d: Vec<Dtype> = st.tensors().iter().map(|(_, v)| v.dtype()).collect();
    d.dedup();
    d
}

fn torch_dtype(dir: &Path) -> String {
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(v["torch_dtype"], v["dtype"]);
    v["dtype"].as_str().unwrap().to_string()
}

#[test]
fn a_bf16_model_is_saved_in_bf16_unless_told_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data.jsonl");
    std::fs::write(&data, "{\"text\": \"the cat sat on the mat\"}\n".repeat(4)).unwrap();
    let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gpt2");
    let run = |model: &Path, name: &str, extra: &[&str]| -> PathBuf {
        let out = dir.path().join(name);
        let base = ["sft", "--model", s(model), "--data", s(&data), "--out", s(&out), "--steps", "1", "--lr", "1e-3", "--batch-size", "2", "--seq-len", "16", "--log-every", "0"];
        rlhf(&[&base[..], extra].concat());
        out
    };
    // the f32 fixture: f32 by default, bf16 or f16 when asked
    let f32_out = run(&fixture, "f32", &[]);
    assert_eq!((dtypes(&f32_out.join("model.safetensors")), torch_dtype(&f32_out)), (vec![Dtype::F32], "float32".to_string()));
    let bf16 = run(&fixture, "bf16", &["--save-dtype", "bf16"]);
    assert_eq!((dtypes(&bf16.join("model.safetensors")), torch_dtype(&bf16)), (vec![Dtype::BF16], "bfloat16".to_string()));
    let f16 = run(&fixture, "f16", &["--save-dtype", "f16", "--save-every", "1"]);
    assert_eq!((dtypes(&f16.join("model.safetensors")), torch_dtype(&f16)), (vec![Dtype::F16], "float16".to_string()));
    // the run state keeps its f32 master weights and moments
    assert_eq!(dtypes(&f16.join("checkpoints/step-00000001/state.safetensors")), vec![Dtype::F32]);

    // the same weights, rounded to nearest (even): within half a bf16 / f16 step of the f32 save
    let be = CpuBackend::new();
    let exact = Model::load(&be, &f32_out).unwrap().to_host(&be).unwrap();
    for (folder, rel) in [(&bf16, 1.0 / 256.0), (&f16, 1.0 / 2048.0)] {
        let model = Model::load(&be, folder).unwrap();
        assert_ne!(model.source_dtype(), Dtype::F32);
        for (a, b) in model.to_host(&be).unwrap().iter().flatten().zip(exact.iter().flatten()) {
            assert!((a - b).abs() <= b.abs() * rel + 1e-7, "{}: {a} vs {b}", folder.display());
        }
    }

    // a model read in bf16: bf16 by default (auto), f32 when asked
    let again = run(&bf16, "again", &[]);
    assert_eq!((dtypes(&again.join("model.safetensors")), torch_dtype(&again)), (vec![Dtype::BF16], "bfloat16".to_string()));
    let widened = run(&bf16, "widened", &["--save-dtype", "f32"]);
    assert_eq!(dtypes(&widened.join("model.safetensors")), vec![Dtype::F32]);

    // a bad value is refused by name
    let out = Command::new(env!("CARGO_BIN_EXE_rlhf")).args(["sft", "--model", s(&fixture), "--data", s(&data), "--out", s(&dir.path().join("x")), "--save-dtype", "int8"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--save-dtype") && err.contains("bf16"), "{err}");
}
