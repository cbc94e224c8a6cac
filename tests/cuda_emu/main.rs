//! The CUDA emulator's own tests: the kernels of `selftest.cu` through cudarc (NVRTC's PTX, the
//! stand-in driver, the fiber scheduler). Warp and block primitives give CUDA's results; each kind
//! of defect the emulator exists to catch (deadlock, divergent barrier, a thread exited before a
//! barrier, a shuffle outside its mask) fails the launch with the kernel, thread and file:line;
//! the thread order is selectable; stream capture records launches that a graph replays, and an
//! allocation inside a capture invalidates it. They run only when the emulator is the driver (no
//! GPU, or `RLHF_CUDA_EMU=1`) — except the tensor-core wrappers' tests (`tensor_core.rs`), which
//! check the emulator's models and, on a GPU, the real instructions against plain products.

#[path = "../common/mod.rs"]
#[macro_use]
mod common;

use common::cuda_emu::{self, Driver};
use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaStream, LaunchConfig, PushKernelArg};
use std::sync::{Arc, Mutex, OnceLock};

const SRC: &str = include_str!("selftest.cu");

mod tensor_core;

/// The self-test module loaded on the device: the emulator (`lib` is its path) or a real GPU
/// (`lib` is `None`; only the tensor-core tests run there).
struct Emu {
    lib: Option<std::path::PathBuf>,
    stream: Arc<CudaStream>,
    module: Arc<CudaModule>,
}

/// The device with the self-test module loaded, or `None` after a skip message (no driver, or
/// NVRTC is missing, and CI does not require CUDA).
fn device() -> Option<&'static Emu> {
    static DEV: OnceLock<Option<Emu>> = OnceLock::new();
    DEV.get_or_init(|| {
        let lib = match cuda_emu::driver() {
            Ok(Driver::Emulator(lib)) => Some(lib),
            Ok(Driver::Real) => None,
            Err(e) => {
                assert!(!common::cuda_required(), "the CUDA emulator is required but unavailable: {e}");
                eprintln!("SKIPPED emulator self-tests: {e}");
                return None;
            }
        };
        if !rlhf::backend::cuda::kernels::nvrtc_present() {
            assert!(!common::cuda_required(), "NVRTC is required but missing");
            eprintln!("SKIPPED emulator self-tests: no NVRTC");
            return None;
        }
        // compute_80: the oldest target of the tensor-core instructions, loadable on every GPU that has them
        let src = rlhf::backend::cuda::kernels::full_source("emu_selftest", SRC);
        let ptx = cudarc::nvrtc::compile_ptx_with_opts(&src, rlhf::backend::cuda::kernels::compile_options("emu_selftest", "compute_80")).expect("NVRTC compiles selftest.cu");
        let ctx = match CudaContext::new(0) {
            Ok(ctx) => ctx,
            Err(e) => {
                assert!(!common::cuda_required(), "no CUDA device: {e:?}");
                eprintln!("SKIPPED emulator self-tests: no CUDA device ({e:?})");
                return None;
            }
        };
        let stream = ctx.new_stream().unwrap();
        let module = ctx.load_module(ptx).expect("the PTX entries are compiled into the emulator");
        Some(Emu { lib, stream, module })
    })
    .as_ref()
}

/// The emulator with the self-test module loaded; `None` (after a message) on a real GPU.
fn emu() -> Option<&'static Emu> {
    let d = device()?;
    if d.lib.is_none() {
        eprintln!("SKIPPED an emulator self-test: a real CUDA driver is in use");
        return None;
    }
    Some(d)
}

fn kernel(e: &Emu, name: &str) -> CudaFunction {
    e.module.load_function(name).unwrap()
}

fn cfg(threads: u32, smem: u32) -> LaunchConfig {
    LaunchConfig { grid_dim: (1, 1, 1), block_dim: (threads, 1, 1), shared_mem_bytes: smem }
}

/// Launches `name(int* out)` with 64 threads: the launch's result and out[0].
fn launch_one(e: &Emu, name: &str, blocks: u32) -> (Result<(), String>, i32) {
    let f = kernel(e, name);
    let mut out = e.stream.alloc_zeros::<i32>(64).unwrap();
    let mut b = e.stream.launch_builder(&f);
    b.arg(&mut out);
    let r = unsafe { b.launch(LaunchConfig { grid_dim: (blocks, 1, 1), ..cfg(64, 0) }) }.map(|_| ()).map_err(|err| format!("{err:?}"));
    (r, e.stream.clone_dtoh(&out).unwrap()[0])
}

/// Serialises the tests that set the thread order (a process-wide setting).
static ORDER: Mutex<()> = Mutex::new(());

fn set_order(e: &Emu, order: Option<&str>) {
    let f = cuda_emu::symbol(e.lib.as_ref().expect("the emulator"), "emu_set_order").expect("the emulator exports emu_set_order");
    // SAFETY: emu_set_order(const char*) -> int, see driver.cpp.
    let f: extern "C" fn(*const std::ffi::c_char) -> i32 = unsafe { std::mem::transmute(f) };
    let name = order.map(|o| std::ffi::CString::new(o).unwrap());
    assert_eq!(f(name.as_ref().map_or(std::ptr::null(), |n| n.as_ptr())), 1);
}

#[test]
fn warp_and_block_primitives_give_cudas_results() {
    let Some(e) = emu() else { return };
    let n = 128u32;
    let mut out = e.stream.alloc_zeros::<f32>(n as usize).unwrap();
    let mut bits = e.stream.alloc_zeros::<u32>(5 * n as usize).unwrap();
    let f = kernel(e, "emu_primitives");
    let mut b = e.stream.launch_builder(&f);
    b.arg(&mut out).arg(&mut bits).arg(&n);
    unsafe { b.launch(cfg(n, 4 * n)) }.unwrap();
    let out = e.stream.clone_dtoh(&out).unwrap();
    let bits = e.stream.clone_dtoh(&bits).unwrap();
    let n = n as usize;
    for t in 0..n {
        let lane = t % 32;
        assert_eq!(out[t], (n * (n - 1) / 2) as f32, "block_sum at thread {t}");
        assert_eq!(bits[t] as usize, t ^ 3, "xor shuffle at {t}");
        assert_eq!(bits[n + t] as usize, if lane >= 2 { t - 2 } else { t }, "up shuffle at {t}");
        assert_eq!(bits[2 * n + t] as usize, if lane + 5 < 32 { t + 5 } else { t }, "down shuffle at {t}");
        assert_eq!(bits[3 * n + t], 0xaaaa_aaaa, "ballot of the odd lanes at {t}");
        assert_eq!(bits[4 * n + t], 0xffff_ffff, "dynamic shared memory starts as NaN bytes at {t}");
    }
}

#[test]
fn defects_fail_the_launch_naming_the_line() {
    let Some(e) = emu() else { return };
    let line = |needle: &str| 1 + SRC.lines().position(|l| l.contains(needle)).expect("a line of selftest.cu");
    let cases = [
        ("emu_deadlock", "deadlock", line("if (threadIdx.x == 5) __syncthreads();")),
        ("emu_divergent_barrier", "divergent __syncthreads", line("if (threadIdx.x < 32) {") + 1),
        ("emu_barrier_after_exit", "exited", line("if (threadIdx.x >= 32) return;") + 1),
        ("emu_shuffle_outside_mask", "outside the mask", line("0x0000ffffu")),
    ];
    for (name, what, line) in cases {
        let (r, _) = launch_one(e, name, 2);
        let err = r.expect_err(name);
        let at = format!("tests/cuda_emu/selftest.cu:{line}");
        assert!(err.contains("CUDA_ERROR_LAUNCH_FAILED") && err.contains(what) && err.contains(&at) && err.contains(name), "{name}: {err}");
    }
    // the error is not sticky: a correct kernel runs afterwards
    assert!(launch_one(e, "emu_last_writer", 1).0.is_ok());
}

#[test]
fn thread_order_is_selectable() {
    let Some(e) = emu() else { return };
    let _serial = ORDER.lock().unwrap();
    set_order(e, Some("forward"));
    assert_eq!(launch_one(e, "emu_last_writer", 1).1, 63, "forward: thread 63 runs last");
    set_order(e, Some("reverse"));
    assert_eq!(launch_one(e, "emu_last_writer", 1).1, 0, "reverse: thread 0 runs last");
    set_order(e, Some("random"));
    let seen: std::collections::BTreeSet<i32> = (0..8).map(|_| launch_one(e, "emu_last_writer", 1).1).collect();
    assert!(seen.len() > 1 && !seen.iter().all(|&t| t == 0 || t == 63), "random order: last writers {seen:?}");
    set_order(e, None);
}

#[test]
fn capture_records_and_the_graph_replays() {
    let Some(e) = emu() else { return };
    use cudarc::driver::sys::{CUgraphInstantiate_flags, CUstreamCaptureMode};
    let stream = e.stream.context().new_stream().unwrap();
    let f = kernel(e, "emu_primitives");
    let n = 64u32;
    let mut out = stream.alloc_zeros::<f32>(n as usize).unwrap();
    let mut bits = stream.alloc_zeros::<u32>(5 * n as usize).unwrap();
    stream.begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL).unwrap();
    let mut b = stream.launch_builder(&f);
    b.arg(&mut out).arg(&mut bits).arg(&n);
    unsafe { b.launch(cfg(n, 4 * n)) }.unwrap();
    let graph = stream.end_capture(CUgraphInstantiate_flags(0)).unwrap().expect("one launch captured");
    assert_eq!(stream.clone_dtoh(&out).unwrap()[0], 0.0, "a captured launch does not run");
    graph.launch().unwrap();
    assert_eq!(stream.clone_dtoh(&out).unwrap()[5], (64 * 63 / 2) as f32, "the graph runs it");

    // an allocation inside a capture fails and invalidates it
    stream.begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL).unwrap();
    assert!(stream.alloc_zeros::<f32>(16).is_err());
    let end = stream.end_capture(CUgraphInstantiate_flags(0));
    assert!(format!("{:?}", end.err()).contains("CUDA_ERROR_STREAM_CAPTURE_INVALIDATED"));
    assert!(stream.alloc_zeros::<f32>(16).is_ok(), "the stream works again after the capture");
}
