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
    parse_env(std::env::var("RLHF_CUDA_GRAPHS").ok().as_deref())
}

/// [`enabled_by_env`] of the variable's value (`None`: unset).
fn parse_env(value: Option<&str>) -> Result<bool> {
    super::context::env_switch("RLHF_CUDA_GRAPHS", value, "CUDA graphs for the rollout's decode chunks")
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
        // the cache is not locked while `f` is captured: a replay or a `forget` from inside it (a
        // nested call) must not deadlock
        drop(entries);
        let recorded = self.capture(stream, f);
        let mut entries = self.entries.lock().map_err(|_| err("graph cache poisoned"))?;
        match recorded {
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
        if graph.is_err() {
            end_open_capture(stream);
        }
        ran.map_err(|e| e.to_string())?;
        graph.map_err(|e| format!("end / instantiate: {e:?}"))?.ok_or_else(|| "nothing was captured".to_string())
    }
}

/// Ends a capture that is still open on `stream`, dropping what it recorded: cudarc's `end_capture`
/// returns early, before ending it, when an error of an earlier asynchronous call is pending, and a
/// stream left capturing would swallow every later launch.
fn end_open_capture(stream: &CudaStream) {
    use cudarc::driver::result::{graph, stream as raw};
    use cudarc::driver::sys::CUstreamCaptureStatus;
    // SAFETY: raw driver calls on our live stream, whose context the capture's launches made current
    // on this thread; the graph they return is ours to destroy.
    unsafe {
        if raw::is_capturing(stream.cu_stream()).is_ok_and(|st| st != CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_NONE) {
            if let Ok(g) = raw::end_capture(stream.cu_stream()) {
                if !g.is_null() {
                    let _ = graph::destroy(g);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_env;

    #[test]
    fn rlhf_cuda_graphs_values() {
        assert!(parse_env(None).unwrap());
        assert!(parse_env(Some("1")).unwrap());
        assert!(!parse_env(Some("0")).unwrap());
        let e = parse_env(Some("off")).unwrap_err().to_string();
        assert!(e.contains("RLHF_CUDA_GRAPHS=off") && e.contains("expected 1"), "{e}");
    }
}
