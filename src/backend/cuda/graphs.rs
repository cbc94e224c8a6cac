//! CUDA graphs for `Backend::replay`: a launch sequence recorded once from the stream and then
//! replayed as one graph launch per call.
//!
//! Per key: the first call runs the launches plainly (a warm-up: NVRTC modules load lazily and
//! scratch buffers grow on first use, neither of which may happen inside a capture); the second
//! captures them (`cuStreamBeginCapture` in thread-local mode, so an allocation, a synchronising
//! copy or a host sync inside makes the capture fail rather than run), instantiates the graph,
//! launches it and keeps it; later calls only launch it. A failed capture prints one line to
//! stderr and the key runs plainly from then on (the same launches, so the same results).
//! cuBLAS works on the fixed workspace the context gives it, so it allocates nothing in a capture.
//! The graphs are forgotten when a scratch buffer is reallocated or the matmul precision changes
//! (both change what the launches bake in), and when more than [`MAX_GRAPHS`] keys pile up.
//! `RLHF_CUDA_GRAPHS=0` runs every call plainly.

use super::kernels::err;
use crate::error::Result;
use cudarc::driver::sys::{CUgraphInstantiate_flags, CUstreamCaptureMode};
use cudarc::driver::{CudaGraph, CudaStream};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Keys kept at most; past that the cache starts over (old keys belong to freed buffers).
pub const MAX_GRAPHS: usize = 64;

/// Whether `RLHF_CUDA_GRAPHS` (unset, `1` or `0`) allows graphs.
pub fn enabled_by_env() -> Result<bool> {
    match std::env::var("RLHF_CUDA_GRAPHS").as_deref() {
        Err(_) | Ok("1") => Ok(true),
        Ok("0") => Ok(false),
        Ok(other) => {
            Err(crate::error::Error::invalid(format!("RLHF_CUDA_GRAPHS={other}: expected 1 (CUDA graphs for the rollout's decode chunks, the default) or 0")))
        }
    }
}

/// A graph of the cache.
struct Recorded(CudaGraph);
// SAFETY: a CUDA graph may be used from any thread as long as calls on it are serialised; every
// use of a `Recorded` happens with the `Graphs::entries` lock held.
unsafe impl Send for Recorded {}

enum Entry {
    /// ran plainly once (the warm-up)
    Seen,
    Graph(Recorded),
    /// its capture failed: runs plainly
    Failed,
}

/// The graph cache of a context.
pub struct Graphs {
    enabled: AtomicBool,
    entries: Mutex<HashMap<u64, Entry>>,
    capturing: AtomicBool,
}

impl Graphs {
    pub fn new(enabled: bool) -> Self {
        Graphs { enabled: AtomicBool::new(enabled), entries: Mutex::new(HashMap::new()), capturing: AtomicBool::new(false) }
    }

    pub fn set_enabled(&self, on: bool) {
        self.enabled.store(on, Ordering::Relaxed);
        self.forget();
    }

    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// Whether a capture is running (nothing may allocate then).
    pub fn capturing(&self) -> bool {
        self.capturing.load(Ordering::Relaxed)
    }

    /// Drops every graph (what they bake in changed).
    pub fn forget(&self) {
        if let Ok(mut e) = self.entries.lock() {
            e.clear();
        }
    }

    /// See `Backend::replay`: runs `f`'s launches on `stream`, as a graph where one is (or can be)
    /// recorded for `key`; returns whether they ran as a graph.
    pub fn replay(&self, stream: &Arc<CudaStream>, key: u64, f: &mut dyn FnMut() -> Result<()>) -> Result<bool> {
        if !self.enabled() {
            f()?;
            return Ok(false);
        }
        let mut entries = self.entries.lock().map_err(|_| err("graph cache poisoned"))?;
        match entries.get(&key) {
            Some(Entry::Graph(g)) => {
                g.0.launch().map_err(|e| err(format!("launching a CUDA graph: {e:?}")))?;
                return Ok(true);
            }
            Some(Entry::Failed) => {
                drop(entries);
                f()?;
                return Ok(false);
            }
            Some(Entry::Seen) => {}
            None => {
                if entries.len() >= MAX_GRAPHS {
                    entries.clear();
                }
                entries.insert(key, Entry::Seen);
                drop(entries);
                f()?;
                return Ok(false);
            }
        }
        match self.capture(stream, f) {
            Ok(g) => {
                g.launch().map_err(|e| err(format!("launching a CUDA graph: {e:?}")))?;
                entries.insert(key, Entry::Graph(Recorded(g)));
                Ok(true)
            }
            Err(why) => {
                eprintln!("note: CUDA graph capture failed ({why}); running these launches without a graph");
                entries.insert(key, Entry::Failed);
                drop(entries);
                f()?;
                Ok(false)
            }
        }
    }

    /// Records `f`'s launches into an instantiated graph (nothing runs yet).
    fn capture(&self, stream: &Arc<CudaStream>, f: &mut dyn FnMut() -> Result<()>) -> std::result::Result<CudaGraph, String> {
        stream.begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL).map_err(|e| format!("begin: {e:?}"))?;
        self.capturing.store(true, Ordering::Relaxed);
        let ran = f();
        self.capturing.store(false, Ordering::Relaxed);
        // always end the capture, so the stream takes plain launches again
        let graph = stream.end_capture(CUgraphInstantiate_flags(0));
        ran.map_err(|e| e.to_string())?;
        graph.map_err(|e| format!("end / instantiate: {e:?}"))?.ok_or_else(|| "nothing was captured".to_string())
    }
}
