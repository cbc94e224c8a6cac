//! Saving and loading stream: the heap a model save (the Hugging Face folder), a run-state
//! checkpoint save, a model load and a checkpoint restore allocate beyond what the model itself
//! holds stays within a bounded buffer (one chunk of the streaming writer, one tensor when
//! loading), however large the model. Counted by a global allocator that records the peak of
//! live heap bytes; one test, so nothing else allocates beside it.

use rlhf::backend::CpuBackend;
use rlhf::data::tokenizer::Tokenizer;
use rlhf::io::safetensors_out::CHUNK_VALUES;
use rlhf::model::state_file::{Checkpoint, StateWriter};
use rlhf::model::{Model, ModelConfig};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    let now = LIVE.fetch_add(by, SeqCst) + by;
    PEAK.fetch_max(now, SeqCst);
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), SeqCst);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), SeqCst);
            grew(new_size);
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Runs `f` and returns its result, the peak of live heap bytes during it above the bytes live
/// before it, and the live bytes after it above those before.
fn measure<T>(f: impl FnOnce() -> T) -> (T, usize, isize) {
    let before = LIVE.load(SeqCst);
    PEAK.store(before, SeqCst);
    let out = f();
    let peak = PEAK.load(SeqCst) - before;
    let after = LIVE.load(SeqCst) as isize - before as isize;
    (out, peak, after)
}

const MIB: usize = 1 << 20;

/// A Llama-shaped model with `layers` blocks and a 24 MiB embedding (larger than one chunk).
fn config(layers: usize) -> ModelConfig {
    let v = serde_json::json!({
        "model_type": "llama", "vocab_size": 12288, "hidden_size": 512, "num_hidden_layers": layers,
        "num_attention_heads": 8, "num_key_value_heads": 4, "intermediate_size": 1376,
        "max_position_embeddings": 128, "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "tie_word_embeddings": false,
    });
    ModelConfig::from_hf_json(&v).unwrap()
}

#[test]
fn saves_and_loads_stream_in_bounded_memory() {
    let be = CpuBackend::new();
    let tok = Tokenizer::byte_level();
    let chunk_bytes = CHUNK_VALUES * 4;
    // a chunk read as f32 plus its encoded bytes, and small change (names, header, paths)
    let save_bound = 2 * chunk_bytes + 4 * MIB;
    let mut seen = Vec::new();
    for layers in [1, 12] {
        let cfg = config(layers);
        let model = Model::init(&be, cfg.clone(), 7).unwrap();
        let model_bytes = cfg.num_params() * 4;
        let largest = model.master_weights().iter().map(|w| w.len() * 4).max().unwrap();
        assert!(largest > chunk_bytes, "the embedding must span several chunks");
        let dir = tempfile::tempdir().unwrap();

        let folder = dir.path().join("model");
        let (r, save_peak, _) = measure(|| model.save(&be, &folder, &tok));
        r.unwrap();
        assert!(save_peak <= save_bound, "{layers} layers: saving the folder of a {} MiB model peaked at {} MiB above the model (bound {} MiB)", model_bytes / MIB, save_peak / MIB, save_bound / MIB);

        let (r, state_peak, _) = measure(|| {
            let mut w = StateWriter::new();
            model.save_state(&be, &mut w, "weights")?;
            w.save(dir.path(), "sft", 1)
        });
        r.unwrap();
        assert!(state_peak <= save_bound, "{layers} layers: a checkpoint of a {} MiB model peaked at {} MiB (bound {} MiB)", model_bytes / MIB, state_peak / MIB, save_bound / MIB);

        // loading: the model itself stays; beyond it, one tensor decoded and its upload at most
        let load_bound = 2 * largest + 4 * MIB;
        let (loaded, load_peak, kept) = measure(|| Model::load(&be, &folder).unwrap());
        let transient = load_peak - kept.max(0) as usize;
        assert!(kept as usize >= model_bytes, "the loaded model is resident");
        assert!(transient <= load_bound, "{layers} layers: loading a {} MiB model peaked {} MiB above it (bound {} MiB)", model_bytes / MIB, transient / MIB, load_bound / MIB);
        assert_eq!(loaded.to_host(&be).unwrap(), model.to_host(&be).unwrap(), "the weights round-trip");

        let mut restored = Model::init(&be, cfg.clone(), 8).unwrap();
        let (r, restore_peak, _) = measure(|| {
            let ck = Checkpoint::load(dir.path(), "sft")?;
            restored.restore_state(&be, &ck, "weights")
        });
        r.unwrap();
        assert!(restore_peak <= largest + 4 * MIB, "{layers} layers: restoring a checkpoint peaked at {} MiB (bound {} MiB)", restore_peak / MIB, (largest + 4 * MIB) / MIB);
        assert_eq!(restored.to_host(&be).unwrap(), model.to_host(&be).unwrap(), "the checkpoint round-trips");
        seen.push((model_bytes, save_peak, state_peak, transient, restore_peak));
    }
    // twelve times the blocks, and not a byte more buffered
    let (small, large) = (seen[0], seen[1]);
    assert!(large.0 > small.0 * 3);
    assert!(large.1 <= small.1 + MIB && large.2 <= small.2 + MIB, "save peaks grow with the model: {seen:?}");
    println!("model bytes, folder save peak, checkpoint save peak, load transient, restore peak: {seen:?}");
}
