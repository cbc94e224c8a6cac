//! The CUDA device side of the backend: availability checks, the context and its streams (lanes),
//! cuBLAS, lazy NVRTC compilation with an on-disk PTX cache, kernel launches and scratch buffers.
//!
//! Loading: nothing touches cudarc's driver API before [`availability`] has checked that libcuda
//! can be loaded (cudarc panics otherwise). A family of kernels (`kernels/<family>.cu`) is compiled
//! by NVRTC the first time one of its kernels runs: to a CUBIN for the device's exact `sm_XY` (what
//! any driver loads), else to PTX for its `compute_XY`, compute_90, compute_80 (an NVRTC that does
//! not know the device); the image is stored in `$RLHF_CUDA_CACHE` (default
//! `${XDG_CACHE_HOME:-~/.cache}/rlhf/cuda`), written atomically, under a key hashing the source,
//! the target and the NVRTC version, and a cached image the driver refuses is compiled afresh;
//! modules and functions are loaded once per process. All work goes to the current lane's stream in program order: the main stream,
//! or inside `Backend::concurrently` the task's own lane (lanes.rs), which orders itself against
//! the main stream with events at the region's fork and join, so cudarc's per-buffer event
//! tracking is off and nothing synchronises the host except `download` and `synchronize`. cuBLAS
//! gets a fixed workspace per lane ([`BLAS_WORKSPACE`] bytes) so that its calls allocate nothing
//! and can be captured into the CUDA graphs of [`Graphs`] (graphs.rs).

use super::epilogue::{EpilogueLevel, Epilogues};
use super::graphs::{self, Graphs};
use super::kernels::{self, err};
use super::lanes::{self, Lane, MAX_LANES};
use crate::backend::precision::MatmulPrecision;
use crate::backend::storage::{self, Dtype};
use crate::error::Result;
use cudarc::cublas::CudaBlas;
use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, DevicePtr, LaunchConfig};
use cudarc::nvrtc::Ptx;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// Why CUDA cannot be used on this machine, or `Ok` when the driver and NVRTC libraries load.
pub fn availability() -> std::result::Result<(), String> {
    // SAFETY: only tries to dlopen the driver library.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err("libcuda.so (the NVIDIA driver) not found: no NVIDIA GPU driver on this machine".into());
    }
    if !kernels::nvrtc_present() {
        return Err(
            "libnvrtc.so.12 (NVRTC) not found: install the CUDA toolkit or `pip install nvidia-cuda-nvrtc-cu12` and add its lib/ to LD_LIBRARY_PATH".into()
        );
    }
    Ok(())
}

/// One line per CUDA device (name, compute capability, memory), or why there is none.
pub fn devices() -> std::result::Result<Vec<String>, String> {
    // SAFETY: checks the library before cudarc touches it.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err("libcuda.so (the NVIDIA driver) not found".into());
    }
    let count = CudaContext::device_count().map_err(|e| format!("cuInit / device count: {e:?}"))?;
    (0..count.max(0) as usize).map(|i| CudaContext::new(i).map_err(|e| format!("device {i}: {e:?}")).map(|ctx| describe(&ctx))).collect()
}

fn describe(ctx: &CudaContext) -> String {
    let name = ctx.name().unwrap_or_else(|_| "unknown device".into());
    let (major, minor) = ctx.compute_capability().unwrap_or((0, 0));
    let mem = ctx.total_mem().unwrap_or(0) as f64 / (1u64 << 30) as f64;
    format!("{name} (sm_{major}{minor}, {mem:.1} GiB)")
}

/// A module image for cudarc: CUBIN bytes, or PTX text.
fn image(cubin: bool, bytes: Vec<u8>) -> Ptx {
    if cubin {
        Ptx::from_binary(bytes)
    } else {
        Ptx::from_src(String::from_utf8_lossy(&bytes).into_owned())
    }
}

fn cache_dir() -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("RLHF_CUDA_CACHE") {
        return Some(PathBuf::from(dir));
    }
    let base = std::env::var("XDG_CACHE_HOME").map(PathBuf::from).ok().or_else(|| std::env::var("HOME").ok().map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("rlhf").join("cuda"))
}

/// `Ok(true)` when environment variable `var` is unset or `1`, `Ok(false)` when `0`, else an error
/// naming it and saying what `1` means.
pub fn env_switch(var: &str, value: Option<&str>, on_means: &str) -> Result<bool> {
    match value {
        None | Some("1") => Ok(true),
        Some("0") => Ok(false),
        Some(other) => Err(crate::error::Error::invalid(format!("{var}={other}: expected 1 ({on_means}, the default) or 0"))),
    }
}

/// Named scratch buffers (grown on demand, reused across calls: the lane's stream orders their uses).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scratch {
    AttentionDelta,
    LogprobTile,
    LogprobPartial,
    SumSquares,
    PpoScale,
    PpoPartial,
    /// the bf16 copy of the log-prob tile (dlogits for the bf16 products of the backward)
    LogprobTileBf16,
    /// a split decode's per-chunk softmax states (attention_decode_split_mma*)
    DecodePartial,
    /// the per-chunk partial sums of the two-stage column sums (column_sum.rs)
    ColumnPartial,
}

/// A multi-tensor table's cache key: the lane it was uploaded on and its words.
type TableKey = (usize, Vec<u64>);

/// Multi-tensor tables kept at most by [`Context::with_table`].
pub const MAX_TABLES: usize = 16;

/// Bytes of cuBLAS's workspace (its recommendation for Hopper; older GPUs need less).
pub const BLAS_WORKSPACE: usize = 32 << 20;

/// Gives cuBLAS a workspace of [`BLAS_WORKSPACE`] bytes, returned to be kept as long as `blas`.
pub(crate) fn blas_workspace(stream: &Arc<CudaStream>, blas: &CudaBlas) -> Result<CudaSlice<u8>> {
    let ws = stream.alloc_zeros::<u8>(BLAS_WORKSPACE).map_err(|e| err(format!("cuBLAS workspace of {BLAS_WORKSPACE} bytes: {e:?}")))?;
    let ptr = ws.device_ptr(stream).0;
    // SAFETY: the handle is live and `ws` (kept beside it in the context) outlives every call on it.
    let status = unsafe { cudarc::cublas::sys::cublasSetWorkspace_v2(*blas.handle(), ptr as *mut std::ffi::c_void, BLAS_WORKSPACE) };
    if status != cudarc::cublas::sys::cublasStatus_t::CUBLAS_STATUS_SUCCESS {
        return Err(err(format!("cublasSetWorkspace: {status:?}")));
    }
    Ok(ws)
}

/// The device, its lanes (streams with their cuBLAS handles and scratch) and the loaded kernels.
pub struct Context {
    pub ctx: Arc<CudaContext>,
    /// lane 0 (the main stream) is set at creation, the others on the first region using them
    lanes: [OnceLock<Lane>; 1 + MAX_LANES],
    /// the lane ops launch on now (0 outside `concurrently`)
    current: AtomicUsize,
    /// `RLHF_CUDA_STREAMS`: whether `concurrently` uses lanes
    pub streams_enabled: AtomicBool,
    /// The recorded launch sequences of `Backend::replay` (`RLHF_CUDA_GRAPHS=0`: none).
    pub graphs: Graphs,
    /// `RLHF_CUDA_EPILOGUES`'s level and the cuBLASLt algorithms chosen so far (epilogue.rs).
    pub epilogues: Epilogues,
    /// The precision of matmul operands: f32 (`sgemm`), or tf32 / bf16 / f16 through
    /// `cublasGemmStridedBatchedEx`'s fast compute types (cuBLAS only).
    pub matmul_precision: MatmulPrecision,
    /// The type of `Storage::Compute` allocations (`--precision`); f32 until set.
    pub compute_dtype: Dtype,
    /// The device's compute capability `(major, minor)` and name.
    pub sm: (i32, i32),
    pub device_name: String,
    pub arch: String,
    /// `cuda: <device> [NVRTC <version>` (see [`Context::description`])
    description: String,
    /// whether the main lane has cuBLAS and cuBLASLt
    blas: bool,
    lt: bool,
    modules: Mutex<HashMap<&'static str, Arc<CudaModule>>>,
    functions: Mutex<HashMap<&'static str, CudaFunction>>,
    /// device copies of the multi-tensor kernels' tables, by lane and content
    tables: Mutex<HashMap<TableKey, CudaSlice<u64>>>,
}

impl Context {
    /// Opens device `ordinal` (after [`availability`] has passed); `simt` forces the SIMT matmul.
    pub fn new(ordinal: usize, simt: bool) -> Result<Self> {
        availability().map_err(err)?;
        let ctx = CudaContext::new(ordinal).map_err(|e| err(format!("device {ordinal}: {e:?}")))?;
        // SAFETY: every op runs on the current lane, and lanes order themselves against the main
        // stream with events of their own (lanes.rs), so cudarc's per-buffer events are not needed.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.new_stream().map_err(|e| err(format!("creating a stream: {e:?}")))?;
        // SAFETY: only dlopens libcublas.
        let blas = !simt && unsafe { cudarc::cublas::sys::is_culib_present() };
        // a handle that cannot be created leaves the SIMT matmul, as a missing libcublas does
        let main = Lane::new(stream.clone(), blas).or_else(|_| Lane::new(stream, false))?;
        let (blas, lt) = (main.blas.is_some(), main.lt.is_some());
        let graphs = Graphs::new(graphs::enabled_by_env()?);
        let lanes: [OnceLock<Lane>; 1 + MAX_LANES] = Default::default();
        let _ = lanes[0].set(main);
        let (major, minor) = ctx.compute_capability().map_err(|e| err(format!("compute capability: {e:?}")))?;
        let nvrtc = kernels::nvrtc_version().map_or("?".to_string(), |(a, b)| format!("{a}.{b}"));
        let device_name = ctx.name().unwrap_or_else(|_| "unknown device".into());
        let description = format!("cuda: {} [NVRTC {nvrtc}", describe(&ctx));
        Ok(Context {
            ctx,
            lanes,
            current: AtomicUsize::new(0),
            streams_enabled: AtomicBool::new(lanes::enabled_by_env()?),
            graphs,
            epilogues: Epilogues::new(EpilogueLevel::from_env()?),
            matmul_precision: MatmulPrecision::F32,
            compute_dtype: Dtype::F32,
            sm: (major, minor),
            device_name,
            arch: format!("compute_{major}{minor}"),
            description,
            blas,
            lt,
            modules: Mutex::new(HashMap::new()),
            functions: Mutex::new(HashMap::new()),
            tables: Mutex::new(HashMap::new()),
        })
    }

    /// The device, NVRTC and how matmuls run now (cuBLAS, with cuBLASLt's epilogues while they
    /// are on, or the SIMT kernel).
    pub fn description(&self) -> String {
        let level = if self.lt { self.epilogues.level() } else { EpilogueLevel::Off };
        let matmuls = match (self.blas, level) {
            (true, EpilogueLevel::All) => "cuBLAS, cuBLASLt bias and GELU epilogues",
            (true, EpilogueLevel::Bias) => "cuBLAS, cuBLASLt bias epilogue",
            (true, EpilogueLevel::Off) => "cuBLAS",
            (false, _) => "SIMT matmul, batch-invariant",
        };
        format!("{}, {matmuls}]", self.description)
    }

    /// The lane ops launch on now.
    fn lane(&self) -> &Lane {
        let i = self.current.load(Ordering::Relaxed);
        self.lanes[i].get().or_else(|| self.lanes[0].get()).expect("lane 0 is set at creation")
    }

    /// The stream ops launch on now: the main stream, or a concurrent task's lane.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.lane().stream
    }

    /// The main stream (graphs are captured there; `synchronize` waits for it).
    pub fn main_stream(&self) -> &Arc<CudaStream> {
        &self.lanes[0].get().expect("lane 0 is set at creation").stream
    }

    /// The current lane's cuBLAS handle. `None` when libcublas cannot be loaded or
    /// `RLHF_CUDA_MATMUL=simt`: `matmul` then runs the SIMT kernel of matmul.cu, whose every output
    /// is one FMA chain over k in order, so a row's bits do not depend on how many rows are
    /// multiplied together (rollout = training, bit for bit).
    pub fn blas(&self) -> Option<&CudaBlas> {
        self.lane().blas.as_ref()
    }

    /// The current lane's cuBLASLt handle and workspace address, when it has them.
    pub fn lt(&self) -> Option<(cudarc::cublaslt::sys::cublasLtHandle_t, u64)> {
        let lane = self.lane();
        lane.lt.as_ref().map(|h| (h.raw(), lane.workspace))
    }

    /// Whether ops launch on a concurrent task's lane now.
    pub fn in_region(&self) -> bool {
        self.current.load(Ordering::Relaxed) != 0
    }

    /// See `Backend::concurrently`: task `i` runs on lane [`lanes::lane_of_task`]`(i)`, forked from
    /// and joined back into the main stream with events (no host wait). In order on the current
    /// stream when there are fewer than two tasks, streams are off, a region or a graph capture is
    /// already running.
    pub fn concurrently(&self, tasks: &mut [&mut dyn FnMut() -> Result<()>]) -> Result<()> {
        if tasks.len() < 2 || !self.streams_enabled.load(Ordering::Relaxed) || self.in_region() || self.graphs.capturing() {
            return tasks.iter_mut().try_for_each(|t| t());
        }
        let blas = self.lanes[0].get().is_some_and(|l| l.blas.is_some());
        let used: Vec<usize> = (0..tasks.len().min(MAX_LANES)).map(lanes::lane_of_task).collect();
        for &l in &used {
            if self.lanes[l].get().is_none() {
                let lane = Lane::on_new_stream(&self.ctx, blas)?;
                let _ = self.lanes[l].set(lane);
            }
        }
        let ev = |e: cudarc::driver::DriverError| err(format!("stream event: {e:?}"));
        let fork = self.main_stream().record_event(None).map_err(ev)?;
        for &l in &used {
            self.lanes[l].get().expect("created above").stream.wait(&fork).map_err(ev)?;
        }
        let mut ran = Ok(());
        for (i, task) in tasks.iter_mut().enumerate() {
            self.current.store(lanes::lane_of_task(i), Ordering::Relaxed);
            ran = task();
            self.current.store(0, Ordering::Relaxed);
            if ran.is_err() {
                break;
            }
        }
        // the join, also after a failed task: later work on the main stream follows every lane
        for &l in &used {
            self.main_stream().join(&self.lanes[l].get().expect("created above").stream).map_err(ev)?;
        }
        ran
    }

    /// Sets the precision of matmul operands: any with cuBLAS, f32 only with the SIMT matmul.
    /// It applies to f32 storage only: with bf16 storage the operands already are bf16, so only
    /// f32 and bf16 (both meaning bf16 operands, f32 accumulation) are accepted there.
    pub fn set_matmul_precision(&mut self, p: MatmulPrecision) -> Result<()> {
        if p != MatmulPrecision::F32 && self.blas().is_none() {
            return Err(p.unsupported("cuda", "the SIMT matmul (RLHF_CUDA_MATMUL=simt, or no libcublas) computes in f32 only; use f32 or cuBLAS"));
        }
        storage_allows(self.compute_dtype, p)?;
        self.matmul_precision = p;
        // recorded graphs baked in the old precision's cuBLAS calls
        self.graphs.forget();
        Ok(())
    }

    /// The compute type `--precision auto` picks: bf16 on sm_80 and newer, else f32.
    pub fn preferred_compute_dtype(&self) -> Dtype {
        if device_stores(Dtype::Bf16, &self.device_name, self.sm).is_ok() {
            Dtype::Bf16
        } else {
            Dtype::F32
        }
    }

    /// Sets the type of `Storage::Compute` allocations: bf16 needs compute capability 8.0, and
    /// f32 or bf16 matmul operands (`--matmul-precision` is about f32 storage).
    pub fn set_compute_dtype(&mut self, d: Dtype) -> Result<()> {
        device_stores(d, &self.device_name, self.sm)?;
        if d == Dtype::Bf16 && storage_allows(d, self.matmul_precision).is_err() {
            let why = format!("--matmul-precision {} applies to f32 storage only (bf16 storage multiplies bf16 operands)", self.matmul_precision);
            return Err(storage::unsupported("cuda", d, why));
        }
        self.compute_dtype = d;
        Ok(())
    }

    /// The images to try for a family on this device, best first: a CUBIN for its exact `sm_XY`,
    /// then PTX for its `compute_XY`, compute_90 and compute_80 (for an NVRTC that does not know
    /// the device, or a driver that rejects the CUBIN).
    fn targets(&self) -> Vec<String> {
        let mut t = vec![format!("sm_{}{}", self.sm.0, self.sm.1), self.arch.clone()];
        for a in ["compute_90", "compute_80"] {
            if !t.iter().any(|x| x == a) {
                t.push(a.to_string());
            }
        }
        t
    }

    /// Loads `kernels/<family>.cu` as a module: for each target of [`Self::targets`], the image from
    /// the disk cache (a cached image the driver rejects is deleted and compiled afresh), else
    /// compiled by NVRTC and cached (written atomically). The error of a family no target loads
    /// names each target's failure and the driver's and NVRTC's versions.
    fn load_family(&self, family: &str) -> Result<Arc<CudaModule>> {
        let src = kernels::full_source(family, kernels::family_source(family)?);
        let nvrtc = kernels::nvrtc_version();
        let mut failures = Vec::new();
        for target in self.targets() {
            let cubin = target.starts_with("sm_");
            let key = kernels::fnv1a(&[src.as_bytes(), target.as_bytes(), format!("{nvrtc:?}").as_bytes()]);
            let path = cache_dir().map(|d| d.join(format!("{family}-{target}-{key:016x}.{}", if cubin { "cubin" } else { "ptx" })));
            if let Some(bytes) = path.as_ref().and_then(|p| std::fs::read(p).ok()) {
                match self.ctx.load_module(image(cubin, bytes)) {
                    Ok(m) => return Ok(m),
                    Err(_) => {
                        // stale or damaged: compile afresh below
                        let _ = path.as_ref().map(std::fs::remove_file);
                    }
                }
            }
            let bytes = if cubin { kernels::compile_cubin(family, &target) } else { kernels::compile(family, &target).map(String::into_bytes) };
            let bytes = match bytes {
                Ok(b) => b,
                Err(e) => {
                    failures.push(format!("{target}: {e}"));
                    continue;
                }
            };
            match self.ctx.load_module(image(cubin, bytes.clone())) {
                Ok(m) => {
                    if let Some(p) = path {
                        // a cache that cannot be written only costs a recompilation next time
                        if p.parent().is_some_and(|d| std::fs::create_dir_all(d).is_ok()) {
                            let _ = crate::io::fs::atomic_write(&p, &bytes);
                        }
                    }
                    return Ok(m);
                }
                Err(e) => failures.push(format!("{target}: the driver refused the image: {e:?}")),
            }
        }
        let driver = super::versions::driver_version().map_or("unknown".to_string(), |(a, b)| format!("CUDA {a}.{b}"));
        let nvrtc = nvrtc.map_or("unknown".to_string(), |(a, b)| format!("{a}.{b}"));
        Err(err(format!(
            "loading kernels/{family}.cu: no image loads (driver {driver}, NVRTC {nvrtc}; PTX from an NVRTC newer than the driver is refused): {}",
            failures.join("; ")
        )))
    }

    /// The kernel `name` of `kernels/<family>.cu`, compiling and loading the family on first use.
    pub fn function(&self, family: &'static str, name: &'static str) -> Result<CudaFunction> {
        if let Some(f) = self.functions.lock().map_err(|_| err("function table poisoned"))?.get(name) {
            return Ok(f.clone());
        }
        let module = {
            let mut modules = self.modules.lock().map_err(|_| err("module table poisoned"))?;
            match modules.get(family) {
                Some(m) => m.clone(),
                None => {
                    let m = self.load_family(family)?;
                    modules.insert(family, m.clone());
                    m
                }
            }
        };
        let f = module.load_function(name).map_err(|e| err(format!("kernels/{family}.cu has no kernel `{name}`: {e:?}")))?;
        self.functions.lock().map_err(|_| err("function table poisoned"))?.insert(name, f.clone());
        Ok(f)
    }

    /// A new scratch buffer of `len` floats. Not inside a graph capture (an allocation there would
    /// break it: the capture fails and the launches run plainly); the graphs recorded so far use
    /// the old buffers, so they are dropped.
    fn grow_scratch(&self, lane: &Lane, len: usize) -> Result<CudaSlice<f32>> {
        if self.graphs.capturing() {
            return Err(err(format!("a scratch buffer of {len} floats would be allocated inside a CUDA graph capture")));
        }
        self.graphs.forget();
        lane.stream.alloc_zeros::<f32>(len.max(1)).map_err(|e| err(format!("scratch of {len} floats: {e:?}")))
    }

    /// Runs `f` with the current lane's scratch buffer `which` of at least `len` floats (grown
    /// when too small).
    pub fn with_scratch<R>(&self, which: Scratch, len: usize, f: impl FnOnce(&mut CudaSlice<f32>) -> Result<R>) -> Result<R> {
        let lane = self.lane();
        let mut map = lane.scratch.lock().map_err(|_| err("scratch table poisoned"))?;
        let grow = map.get(&which).is_none_or(|b| b.len() < len.max(1));
        if grow {
            let buf = self.grow_scratch(lane, len)?;
            map.insert(which, buf);
        }
        f(map.get_mut(&which).expect("inserted above"))
    }

    /// Runs `f` with a device copy of `table` (the multi-tensor kernels' address tables): uploaded
    /// on the current lane the first time, then reused (a model's tensors keep their addresses from
    /// step to step). Past [`MAX_TABLES`] the cache starts over (old tables name freed buffers).
    pub fn with_table<R>(&self, table: Vec<u64>, f: impl FnOnce(&CudaSlice<u64>) -> Result<R>) -> Result<R> {
        let mut tables = self.tables.lock().map_err(|_| err("table cache poisoned"))?;
        let key = (self.current.load(Ordering::Relaxed), table);
        if !tables.contains_key(&key) {
            if self.graphs.capturing() {
                return Err(err("a multi-tensor table would be uploaded inside a CUDA graph capture"));
            }
            if tables.len() >= MAX_TABLES {
                tables.clear();
            }
            let dev = self.stream().clone_htod(&key.1).map_err(|e| err(format!("upload of a table of {} words: {e:?}", key.1.len())))?;
            tables.insert(key.clone(), dev);
        }
        f(&tables[&key])
    }

    /// Two scratch buffers at once.
    pub fn with_scratch2<R>(
        &self,
        a: (Scratch, usize),
        b: (Scratch, usize),
        f: impl FnOnce(&mut CudaSlice<f32>, &mut CudaSlice<f32>) -> Result<R>,
    ) -> Result<R> {
        let lane = self.lane();
        let mut map = lane.scratch.lock().map_err(|_| err("scratch table poisoned"))?;
        for (which, len) in [a, b] {
            if map.get(&which).is_none_or(|buf| buf.len() < len.max(1)) {
                let buf = self.grow_scratch(lane, len)?;
                map.insert(which, buf);
            }
        }
        let mut x = map.remove(&a.0).expect("inserted above");
        let mut y = map.remove(&b.0).expect("inserted above");
        let r = f(&mut x, &mut y);
        map.insert(a.0, x);
        map.insert(b.0, y);
        r
    }
}

/// Whether device `name` of compute capability `(major, minor)` stores compute type `d`: bf16
/// needs sm_80 (the error names the device and its sm).
pub fn device_stores(d: Dtype, name: &str, (major, minor): (i32, i32)) -> Result<()> {
    if d == Dtype::Bf16 && major < 8 {
        let why = format!("{name} is sm_{major}{minor}; bf16 storage needs compute capability 8.0 (sm_80) or newer (use --precision f32 or auto)");
        return Err(storage::unsupported("cuda", d, why));
    }
    Ok(())
}

/// Whether `--matmul-precision p` goes with compute storage `d`: any with f32 storage; with bf16
/// storage the operands already are bf16, so only f32 and bf16 (which then mean the same).
pub fn storage_allows(d: Dtype, p: MatmulPrecision) -> Result<()> {
    if d == Dtype::Bf16 && !matches!(p, MatmulPrecision::F32 | MatmulPrecision::Bf16) {
        return Err(p.unsupported("cuda", "with --precision bf16 the matmul operands already are bf16 (f32 accumulation); use --matmul-precision f32 or bf16"));
    }
    Ok(())
}

/// 1-D launch of `threads`-wide blocks covering `items` work items (at most 65535 blocks: the
/// kernels loop grid-stride).
pub fn linear(items: usize, threads: u32) -> LaunchConfig {
    let blocks = items.div_ceil(threads as usize).clamp(1, 65535) as u32;
    LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (threads, 1, 1), shared_mem_bytes: 0 }
}

/// Element-wise launch: one thread per 4 elements (float4), blocks of 256.
pub fn elementwise(n: usize) -> LaunchConfig {
    linear(n.div_ceil(4), 256)
}

/// Element-wise launch over values of type `d`: one thread per 16 bytes (4 f32 or 8 bf16).
pub fn elementwise_of(n: usize, d: Dtype) -> LaunchConfig {
    linear(n.div_ceil(16 / d.size()), 256)
}

/// One block of `threads` per row.
pub fn per_row(rows: usize, threads: u32) -> LaunchConfig {
    LaunchConfig { grid_dim: (rows as u32, 1, 1), block_dim: (threads, 1, 1), shared_mem_bytes: 0 }
}

/// Launches `$name` of `kernels/$family.cu` with the given arguments (references, living until
/// the launch returns) on the context's current stream. `"name"[dtype]` launches `name` for f32 and
/// `name_bf16` for bf16 (the storage type the launcher got from `buffer::types`).
macro_rules! launch {
    (@named $ctx:expr, $family:literal, $name:expr, $cfg:expr, $($arg:expr),+) => {{
        let ctx: &$crate::backend::cuda::context::Context = $ctx;
        let f = ctx.function($family, $name)?;
        let mut b = ctx.stream().launch_builder(&f);
        $( cudarc::driver::PushKernelArg::arg(&mut b, $arg); )+
        // SAFETY: the argument list matches the kernel's signature in kernels/$family.cu (outputs,
        // saved, inputs, weights, params by value), and the launchers check every buffer length
        // against the params before launching.
        unsafe { b.launch($cfg) }.map(|_| ()).map_err(|e| $crate::backend::cuda::kernels::err(format!("{}: {e:?}", $name)))
    }};
    ($ctx:expr, $family:literal, $name:literal [$dtype:expr], $cfg:expr, $($arg:expr),+ $(,)?) => {{
        let name = match $dtype {
            $crate::backend::storage::Dtype::F32 => $name,
            $crate::backend::storage::Dtype::Bf16 => concat!($name, "_bf16"),
        };
        $crate::backend::cuda::context::launch!(@named $ctx, $family, name, $cfg, $($arg),+)
    }};
    ($ctx:expr, $family:literal, $name:literal, $cfg:expr, $($arg:expr),+ $(,)?) => {{
        $crate::backend::cuda::context::launch!(@named $ctx, $family, $name, $cfg, $($arg),+)
    }};
}
pub(crate) use launch;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_storage_needs_sm_80_and_names_the_device() {
        assert!(device_stores(Dtype::Bf16, "NVIDIA H100", (9, 0)).is_ok());
        assert!(device_stores(Dtype::Bf16, "NVIDIA A100", (8, 0)).is_ok());
        assert!(device_stores(Dtype::F32, "Tesla T4", (7, 5)).is_ok());
        let e = device_stores(Dtype::Bf16, "Tesla T4", (7, 5)).unwrap_err().to_string();
        assert!(e.contains("Tesla T4 is sm_75") && e.contains("--precision bf16") && e.contains("sm_80"), "{e}");
    }

    #[test]
    fn matmul_precision_applies_to_f32_storage_only() {
        for p in [MatmulPrecision::F32, MatmulPrecision::Tf32, MatmulPrecision::Bf16, MatmulPrecision::F16] {
            assert!(storage_allows(Dtype::F32, p).is_ok());
        }
        assert!(storage_allows(Dtype::Bf16, MatmulPrecision::F32).is_ok());
        assert!(storage_allows(Dtype::Bf16, MatmulPrecision::Bf16).is_ok());
        let e = storage_allows(Dtype::Bf16, MatmulPrecision::Tf32).unwrap_err().to_string();
        assert!(e.contains("--matmul-precision tf32") && e.contains("already are bf16"), "{e}");
        assert!(storage_allows(Dtype::Bf16, MatmulPrecision::F16).is_err());
    }
}
