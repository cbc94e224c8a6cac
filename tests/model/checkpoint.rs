//! Hugging Face safetensors checkpoints: save/load round trips for each family, the sharded
//! format, F16/BF16 storage, GPT-2 names without the `transformer.` prefix, and the messages that
//! bad folders and files produce.

use half::{bf16, f16};
use rlhf::model::checkpoint::{has_checkpoint, load_weights, save_weights};
use rlhf::model::config::PRESETS;
use rlhf::model::{ModelConfig, ParamLayout};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use std::collections::HashMap;
use std::path::Path;

fn setup(preset: &str) -> (ModelConfig, ParamLayout, Vec<Vec<f32>>) {
    let cfg = ModelConfig::preset(preset, 100).expect("preset");
    let layout = ParamLayout::new(&cfg);
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15 ^ preset.len() as u64;
    let weights = layout
        .specs
        .iter()
        .map(|spec| {
            (0..spec.numel())
                .map(|_| {
                    state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.2
                })
                .collect()
        })
        .collect();
    (cfg, layout, weights)
}

/// One tensor read back from a file: name, dtype, shape, little-endian bytes.
type Owned = (String, Dtype, Vec<usize>, Vec<u8>);

fn read_tensors(path: &Path) -> Vec<Owned> {
    let bytes = std::fs::read(path).expect("read");
    let st = SafeTensors::deserialize(&bytes).expect("deserialize");
    let mut out: Vec<Owned> = st.iter().map(|(n, v)| (n.to_string(), v.dtype(), v.shape().to_vec(), v.data().to_vec())).collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn write_tensors(path: &Path, tensors: &[Owned]) {
    let views: Vec<(String, TensorView<'_>)> = tensors.iter().map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).expect("view"))).collect();
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    let bytes = safetensors::serialize(views, Some(meta)).expect("serialize");
    std::fs::write(path, bytes).expect("write");
}

/// Saves `preset` with random weights into a fresh folder and rewrites its model file with `edit`.
fn saved_then_edited(preset: &str, edit: impl FnOnce(&mut Vec<Owned>)) -> (tempfile::TempDir, ModelConfig, ParamLayout, Vec<Vec<f32>>) {
    let (cfg, layout, weights) = setup(preset);
    let dir = tempfile::tempdir().expect("tempdir");
    save_weights(dir.path(), &cfg, &layout, &weights).expect("save");
    let file = dir.path().join("model.safetensors");
    let mut tensors = read_tensors(&file);
    edit(&mut tensors);
    write_tensors(&file, &tensors);
    (dir, cfg, layout, weights)
}

fn err_message(r: rlhf::Result<Vec<Vec<f32>>>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

#[test]
fn round_trip_is_exact_for_every_family() {
    for preset in ["gpt2-tiny", "llama-tiny", "qwen2-tiny"] {
        let (cfg, layout, weights) = setup(preset);
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("out").join(preset);
        assert!(!has_checkpoint(&dir));
        save_weights(&dir, &cfg, &layout, &weights).unwrap();
        assert!(has_checkpoint(&dir), "{preset}");
        let loaded = load_weights(&dir, &cfg, &layout).unwrap();
        assert_eq!(loaded, weights, "{preset}");

        let back = ModelConfig::load(&dir).unwrap();
        assert_eq!(ParamLayout::new(&back).specs.len(), layout.specs.len(), "{preset}");
        assert_eq!(back.tie_embeddings, cfg.tie_embeddings, "{preset}");

        let names: Vec<String> = read_tensors(&dir.join("model.safetensors")).into_iter().map(|t| t.0).collect();
        assert_eq!(names.iter().any(|n| n == "lm_head.weight"), !cfg.tie_embeddings, "{preset}");
        if preset != "gpt2-tiny" {
            for part in ["q_proj", "k_proj", "v_proj"] {
                assert!(names.contains(&format!("model.layers.1.self_attn.{part}.weight")), "{preset} {part}");
            }
            assert_eq!(names.iter().any(|n| n == "model.layers.0.self_attn.q_proj.bias"), cfg.qkv_bias, "{preset}");
        }
    }
}

#[test]
fn saved_qkv_parts_have_hf_shapes_and_rows() {
    let (cfg, layout, weights) = setup("llama-tiny");
    let tmp = tempfile::tempdir().unwrap();
    save_weights(tmp.path(), &cfg, &layout, &weights).unwrap();
    let tensors = read_tensors(&tmp.path().join("model.safetensors"));
    let get = |name: &str| tensors.iter().find(|t| t.0 == name).unwrap_or_else(|| panic!("{name}"));
    let (c, hd) = (cfg.hidden_size, cfg.head_dim);
    let q = get("model.layers.0.self_attn.q_proj.weight");
    let k = get("model.layers.0.self_attn.k_proj.weight");
    let v = get("model.layers.0.self_attn.v_proj.weight");
    assert_eq!(q.2, vec![cfg.n_heads * hd, c]);
    assert_eq!(k.2, vec![cfg.n_kv_heads * hd, c]);
    assert_eq!(v.2, vec![cfg.n_kv_heads * hd, c]);
    assert_eq!(q.1, Dtype::F32);
    let fused = &weights[layout.layers[0].qkv_w];
    let joined: Vec<f32> = [&q.3, &k.3, &v.3].iter().flat_map(|b| f32s(b)).collect();
    assert_eq!(&joined, fused);
    let header = std::fs::read(tmp.path().join("model.safetensors")).unwrap();
    let st_meta = SafeTensors::read_metadata(&header).unwrap().1;
    assert_eq!(st_meta.metadata().as_ref().and_then(|m| m.get("format")).map(String::as_str), Some("pt"));
}

#[test]
fn sharded_checkpoint_loads() {
    let (cfg, layout, weights) = setup("llama-tiny");
    let src = tempfile::tempdir().unwrap();
    save_weights(src.path(), &cfg, &layout, &weights).unwrap();
    let tensors = read_tensors(&src.path().join("model.safetensors"));

    let dir = tempfile::tempdir().unwrap();
    let (first, second) = tensors.split_at(tensors.len() / 2);
    let shard_names = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"];
    let mut weight_map = serde_json::Map::new();
    for (part, shard) in [first, second].into_iter().zip(shard_names) {
        write_tensors(&dir.path().join(shard), part);
        for t in part {
            weight_map.insert(t.0.clone(), serde_json::json!(shard));
        }
    }
    let index = serde_json::json!({"metadata": {"total_size": 0}, "weight_map": weight_map});
    std::fs::write(dir.path().join("model.safetensors.index.json"), index.to_string()).unwrap();
    assert!(has_checkpoint(dir.path()));
    assert_eq!(load_weights(dir.path(), &cfg, &layout).unwrap(), weights);

    // a shard the index names but the folder lacks
    std::fs::remove_file(dir.path().join(shard_names[1])).unwrap();
    let msg = err_message(load_weights(dir.path(), &cfg, &layout));
    assert!(msg.contains(shard_names[1]) && msg.contains("is missing"), "{msg}");
}

#[test]
fn f16_and_bf16_files_load() {
    type Conv = fn(f32) -> [u8; 2];
    type Back = fn([u8; 2]) -> f32;
    let cases: [(Dtype, Conv, Back); 2] = [
        (Dtype::F16, |v| f16::from_f32(v).to_le_bytes(), |b| f16::from_le_bytes(b).to_f32()),
        (Dtype::BF16, |v| bf16::from_f32(v).to_le_bytes(), |b| bf16::from_le_bytes(b).to_f32()),
    ];
    for (dtype, to_half, from_half) in cases {
        let (dir, cfg, layout, weights) = saved_then_edited("qwen2-tiny", |tensors| {
            for t in tensors.iter_mut() {
                t.1 = dtype;
                t.3 = f32s(&t.3).into_iter().flat_map(to_half).collect();
            }
        });
        let loaded = load_weights(dir.path(), &cfg, &layout).unwrap();
        let expected: Vec<Vec<f32>> = weights.iter().map(|w| w.iter().map(|&v| from_half(to_half(v))).collect()).collect();
        assert_eq!(loaded, expected, "{dtype:?}");
        let max_err = loaded.iter().flatten().zip(weights.iter().flatten()).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(max_err > 0.0 && max_err < 1e-3, "{dtype:?}: {max_err}");
    }
}

#[test]
fn gpt2_names_without_transformer_prefix_load() {
    let (dir, cfg, layout, weights) = saved_then_edited("gpt2-tiny", |tensors| {
        for t in tensors.iter_mut() {
            if let Some(rest) = t.0.strip_prefix("transformer.") {
                t.0 = rest.to_string();
            }
        }
        // buffers and a tied lm_head, as old checkpoints carry them
        let c = 64usize;
        tensors.push(("h.0.attn.bias".into(), Dtype::F32, vec![1, 1, 4, 4], vec![0; 64]));
        tensors.push(("h.0.attn.masked_bias".into(), Dtype::F32, vec![], vec![0; 4]));
        tensors.push(("lm_head.weight".into(), Dtype::F32, vec![100, c], vec![0; 100 * c * 4]));
        tensors.push(("some.unknown.tensor".into(), Dtype::I64, vec![2], vec![0; 16]));
    });
    let names: Vec<String> = read_tensors(&dir.path().join("model.safetensors")).into_iter().map(|t| t.0).collect();
    assert!(names.contains(&"wte.weight".to_string()) && !names.iter().any(|n| n.starts_with("transformer.")));
    assert_eq!(load_weights(dir.path(), &cfg, &layout).unwrap(), weights);
}

#[test]
fn missing_folder_is_named() {
    let (cfg, layout, _) = setup("gpt2-tiny");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("no-such-model");
    let msg = err_message(load_weights(&dir, &cfg, &layout));
    assert!(msg.contains("no-such-model") && msg.contains("no such folder"), "{msg}");
    assert!(!has_checkpoint(&dir));

    // a file where the folder should be
    let file = tmp.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let msg = err_message(load_weights(&file, &cfg, &layout));
    assert!(msg.contains("a-file") && msg.contains("not a folder"), "{msg}");
}

#[test]
fn missing_model_file_names_both_file_names() {
    let (cfg, layout, _) = setup("gpt2-tiny");
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("config.json"), cfg.to_hf_json().to_string()).unwrap();
    let msg = err_message(load_weights(tmp.path(), &cfg, &layout));
    let folder = tmp.path().display().to_string();
    assert!(msg.contains(&folder), "{msg}");
    assert!(msg.contains("model.safetensors ") || msg.contains("model.safetensors,"), "{msg}");
    assert!(msg.contains("model.safetensors.index.json"), "{msg}");
}

#[test]
fn truncated_file_is_named() {
    let (cfg, layout, weights) = setup("llama-tiny");
    let tmp = tempfile::tempdir().unwrap();
    save_weights(tmp.path(), &cfg, &layout, &weights).unwrap();
    let file = tmp.path().join("model.safetensors");
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();
    let msg = err_message(load_weights(tmp.path(), &cfg, &layout));
    assert!(msg.contains(&file.display().to_string()), "{msg}");
    assert!(msg.contains("not a valid safetensors file"), "{msg}");

    // so short that not even the header length is there
    std::fs::write(&file, [1u8, 2, 3]).unwrap();
    let msg = err_message(load_weights(tmp.path(), &cfg, &layout));
    assert!(msg.contains("model.safetensors"), "{msg}");
    std::fs::write(&file, []).unwrap();
    let msg = err_message(load_weights(tmp.path(), &cfg, &layout));
    assert!(msg.contains("model.safetensors"), "{msg}");
}

#[test]
fn wrong_shape_names_the_tensor_and_both_shapes() {
    let (dir, cfg, layout, _) = saved_then_edited("llama-tiny", |tensors| {
        let t = tensors.iter_mut().find(|t| t.0 == "model.layers.1.mlp.up_proj.weight").unwrap();
        t.2 = vec![t.2[1], t.2[0]]; // transposed: [64, 176] instead of [176, 64]
    });
    let msg = err_message(load_weights(dir.path(), &cfg, &layout));
    assert!(msg.contains("model.layers.1.mlp.up_proj.weight"), "{msg}");
    assert!(msg.contains("model.safetensors"), "{msg}");
    assert!(msg.contains("[64, 176]") && msg.contains("[176, 64]"), "{msg}");

    // one part of the fused q/k/v
    let (dir, cfg, layout, _) = saved_then_edited("qwen2-tiny", |tensors| {
        let t = tensors.iter_mut().find(|t| t.0 == "model.layers.0.self_attn.k_proj.bias").unwrap();
        t.2 = vec![t.2[0] / 2];
        t.3.truncate(t.3.len() / 2);
    });
    let msg = err_message(load_weights(dir.path(), &cfg, &layout));
    assert!(msg.contains("model.layers.0.self_attn.k_proj.bias") && msg.contains("[16]") && msg.contains("[32]"), "{msg}");
}

#[test]
fn unsupported_dtype_names_the_tensor() {
    for (dtype, width, label) in [(Dtype::I64, 8, "I64"), (Dtype::U8, 1, "U8")] {
        let (dir, cfg, layout, _) = saved_then_edited("gpt2-tiny", |tensors| {
            let t = tensors.iter_mut().find(|t| t.0 == "transformer.h.1.ln_2.bias").unwrap();
            t.1 = dtype;
            t.3 = vec![0; t.2.iter().product::<usize>() * width];
        });
        let msg = err_message(load_weights(dir.path(), &cfg, &layout));
        assert!(msg.contains("transformer.h.1.ln_2.bias"), "{msg}");
        assert!(msg.contains(&format!("dtype {label} is not supported")), "{msg}");
    }
}

#[test]
fn missing_tensor_is_named() {
    let (dir, cfg, layout, _) = saved_then_edited("llama-tiny", |tensors| {
        tensors.retain(|t| t.0 != "model.layers.1.self_attn.v_proj.weight");
    });
    let msg = err_message(load_weights(dir.path(), &cfg, &layout));
    assert!(msg.contains("model.layers.1.self_attn.v_proj.weight"), "{msg}");
    assert!(msg.contains(&dir.path().display().to_string()), "{msg}");

    // untied config without lm_head.weight in the file
    let (dir, cfg, layout, _) = saved_then_edited("llama-tiny", |tensors| {
        tensors.retain(|t| t.0 != "lm_head.weight");
    });
    let msg = err_message(load_weights(dir.path(), &cfg, &layout));
    assert!(msg.contains("lm_head.weight") && msg.contains("untied"), "{msg}");
}

#[test]
fn save_checks_the_weights_against_the_layout() {
    let (cfg, layout, mut weights) = setup("qwen2-tiny");
    let tmp = tempfile::tempdir().unwrap();
    let msg = save_weights(tmp.path(), &cfg, &layout, &weights[1..]).unwrap_err().to_string();
    assert!(msg.contains("weight tensors given"), "{msg}");
    let last = weights.len() - 1;
    weights[last].pop();
    let msg = save_weights(tmp.path(), &cfg, &layout, &weights).unwrap_err().to_string();
    assert!(msg.contains(&layout.specs[last].name), "{msg}");
    assert!(!has_checkpoint(tmp.path()));
}

#[test]
fn hf_config_round_trips_every_preset() {
    for &name in PRESETS {
        let cfg = ModelConfig::preset(name, 1234).unwrap();
        let back = ModelConfig::from_hf_json(&cfg.to_hf_json()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(back.family, cfg.family, "{name}");
        assert_eq!(back.model_type, cfg.model_type, "{name}");
        assert_eq!(back.vocab_size, 1234, "{name}");
        assert_eq!(back.hidden_size, cfg.hidden_size, "{name}");
        assert_eq!(back.n_layers, cfg.n_layers, "{name}");
        assert_eq!(back.n_heads, cfg.n_heads, "{name}");
        assert_eq!(back.n_kv_heads, cfg.n_kv_heads, "{name}");
        assert_eq!(back.head_dim, cfg.head_dim, "{name}");
        assert_eq!(back.intermediate_size, cfg.intermediate_size, "{name}");
        assert_eq!(back.max_positions, cfg.max_positions, "{name}");
        assert_eq!(back.norm_eps, cfg.norm_eps, "{name}");
        assert_eq!(back.rope_theta, cfg.rope_theta, "{name}");
        assert_eq!(back.tie_embeddings, cfg.tie_embeddings, "{name}");
        assert_eq!((back.qkv_bias, back.o_bias, back.mlp_bias), (cfg.qkv_bias, cfg.o_bias, cfg.mlp_bias), "{name}");
        assert_eq!(back.num_params(), cfg.num_params(), "{name}");
        // and once more: the saved form is a fixed point
        assert_eq!(back.to_hf_json(), cfg.to_hf_json(), "{name}");
    }
}

#[test]
fn nonsensical_config_values_are_rejected() {
    let base = rlhf::model::ModelConfig::preset("llama-tiny", 100).unwrap().to_hf_json();
    for (key, value, needle) in [
        ("rms_norm_eps", serde_json::json!(-1.0), "epsilon"),
        ("head_dim", serde_json::json!(0), "head_dim"),
        ("rope_theta", serde_json::json!(-5.0), "rope_theta"),
    ] {
        let mut cfg = base.clone();
        cfg[key] = value;
        if key == "rope_theta" {
            cfg.as_object_mut().unwrap().remove("rope_parameters");
        }
        let err = rlhf::model::ModelConfig::from_hf_json(&cfg).unwrap_err();
        assert!(err.contains(needle), "{key}: {err}");
    }
}
