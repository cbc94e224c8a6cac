//! The device side of the wgpu backend: adapter selection, pipelines, bind groups, and the
//! command recording that keeps a training step on the GPU.
//!
//! - Pipelines are created once per entry point (at first use) from the family's WGSL with the
//!   prelude that fits the adapter (subgroup reductions when it has `SUBGROUP`). The f16 family
//!   (`matmul_f16.wgsl`) is compiled only when the device has `SHADER_F16`; setting
//!   `RLHF_WGPU_NO_SHADER_F16=1` opens the device without it (to test the fallback), as
//!   `RLHF_WGPU_NO_SUBGROUPS=1` does for subgroups.
//! - Every dispatch's params struct goes into one uniform arena at a 256-byte-aligned dynamic
//!   offset, so a bind group depends only on the storage buffers it binds: bind groups are cached
//!   by (entry point, buffer ids) and reused across steps; a dropped buffer evicts its groups.
//! - Dispatches are recorded into one open compute pass and submitted in batches (when the arena
//!   is full, or before anything that must observe their results: a download, a host write, a
//!   synchronize). Nothing waits for the GPU except `download` and `synchronize`.

use super::buffer::GpuBuf;
use super::shaders::{Access, ShaderEntry, ENTRIES, FAMILIES, PRELUDE_PLAIN, PRELUDE_SUBGROUP};
use crate::backend::precision::MatmulPrecision;
use crate::error::{Error, Result};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Bytes of one params slot of the uniform arena (every params struct fits; also the largest
/// `min_uniform_buffer_offset_alignment` WebGPU allows).
const SLOT: u64 = 256;
/// Dispatches recorded before a batch is submitted.
const ARENA_SLOTS: usize = 1024;
/// Set, this environment variable opens the device without `SHADER_F16` even when offered.
pub const NO_SHADER_F16: &str = "RLHF_WGPU_NO_SHADER_F16";

pub(crate) fn err(msg: impl Into<String>) -> Error {
    Error::Backend { backend: "wgpu", msg: msg.into() }
}

/// One description line per adapter: name, type, backend, and the features the kernels use.
pub fn describe_adapter(a: &wgpu::Adapter) -> String {
    let info = a.get_info();
    let f = a.features();
    let l = a.limits();
    let mut feats = Vec::new();
    if f.contains(wgpu::Features::SUBGROUP) {
        feats.push("subgroup");
    }
    if f.contains(wgpu::Features::SHADER_F16) {
        feats.push("shader-f16");
    }
    if f.contains(wgpu::Features::TIMESTAMP_QUERY) {
        feats.push("timestamp-query");
    }
    format!(
        "{} ({:?}, {:?}, driver {} {}); features: {}; max storage binding {} MiB, max buffer {} MiB, workgroup storage {} KiB, subgroup size {}..{}",
        info.name,
        info.device_type,
        info.backend,
        info.driver,
        info.driver_info,
        if feats.is_empty() { "none".to_string() } else { feats.join(", ") },
        l.max_storage_buffer_binding_size >> 20,
        l.max_buffer_size >> 20,
        l.max_compute_workgroup_storage_size >> 10,
        info.subgroup_min_size,
        info.subgroup_max_size,
    )
}

/// Every adapter wgpu finds (Vulkan, Metal, DX12), best first: discrete, integrated, virtual, CPU.
pub fn adapters() -> Vec<wgpu::Adapter> {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let mut list = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()));
    list.retain(|a| a.get_info().backend != wgpu::Backend::Gl);
    list.sort_by_key(|a| rank(a.get_info().device_type));
    list
}

fn rank(t: wgpu::DeviceType) -> u8 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    }
}

struct Pipeline {
    pipeline: wgpu::ComputePipeline,
    layout: wgpu::BindGroupLayout,
    entry: &'static ShaderEntry,
}

/// Commands recorded but not yet submitted.
#[derive(Default)]
struct Pending {
    // field order matters: the pass must end before the encoder is finished
    pass: Option<wgpu::ComputePass<'static>>,
    encoder: Option<wgpu::CommandEncoder>,
    uniforms: Vec<u8>,
    dispatches: usize,
}

#[derive(Default)]
struct State {
    pending: Pending,
    bind_groups: HashMap<(usize, Vec<u64>), wgpu::BindGroup>,
    pipelines: HashMap<&'static str, Arc<Pipeline>>,
    modules: HashMap<&'static str, wgpu::ShaderModule>,
}

/// A scratch buffer lent by [`Context::scratch`]; returned to the context when dropped. Its
/// contents are whatever the previous borrower left: ops write every element they read.
pub struct Scratch<'a> {
    ctx: &'a Context,
    key: &'static str,
    buf: Option<GpuBuf>,
}

impl std::ops::Deref for Scratch<'_> {
    type Target = GpuBuf;
    fn deref(&self) -> &GpuBuf {
        self.buf.as_ref().expect("scratch buffer present until drop")
    }
}

impl Drop for Scratch<'_> {
    fn drop(&mut self) {
        if let Some(buf) = self.buf.take() {
            let mut cache = self.ctx.scratch.lock().unwrap_or_else(|p| p.into_inner());
            let keep = cache.get(self.key).is_none_or(|old| old.len < buf.len);
            if keep {
                cache.insert(self.key, buf);
            }
        }
    }
}

pub struct Context {
    pub(crate) device: wgpu::Device,
    pub(crate) queue: wgpu::Queue,
    pub(crate) limits: wgpu::Limits,
    pub(crate) subgroups: bool,
    /// The device was opened with `SHADER_F16` (the f16 matmul family can run).
    pub(crate) shader_f16: bool,
    /// The precision of matmul operands (`matmul` picks the f16 entry points for `F16`).
    pub(crate) matmul_precision: MatmulPrecision,
    pub(crate) adapter_name: String,
    pub(crate) description: String,
    arena: wgpu::Buffer,
    entries: HashMap<&'static str, (usize, &'static ShaderEntry)>,
    state: Mutex<State>,
    scratch: Mutex<HashMap<&'static str, GpuBuf>>,
    dropped: Arc<Mutex<Vec<u64>>>,
    error: Arc<Mutex<Option<String>>>,
}

impl Context {
    /// Opens `adapter` with every limit it offers and the optional features the kernels use.
    pub fn new(adapter: &wgpu::Adapter) -> Result<Self> {
        let info = adapter.get_info();
        let description = describe_adapter(adapter);
        let mut features = wgpu::Features::empty();
        let offered = adapter.features();
        let subgroups = offered.contains(wgpu::Features::SUBGROUP) && std::env::var_os("RLHF_WGPU_NO_SUBGROUPS").is_none();
        if subgroups {
            features |= wgpu::Features::SUBGROUP;
        }
        let shader_f16 = offered.contains(wgpu::Features::SHADER_F16) && std::env::var_os(NO_SHADER_F16).is_none();
        if shader_f16 {
            features |= wgpu::Features::SHADER_F16;
        }
        let limits = adapter.limits();
        let desc = wgpu::DeviceDescriptor {
            label: Some("rlhf"),
            required_features: features,
            required_limits: limits.clone(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        };
        let (device, queue) = pollster::block_on(adapter.request_device(&desc)).map_err(|e| err(format!("cannot open {}: {e}", info.name)))?;
        let error = Arc::new(Mutex::new(None::<String>));
        let slot = error.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            let mut s = slot.lock().unwrap_or_else(|p| p.into_inner());
            if s.is_none() {
                *s = Some(e.to_string());
            }
        }));
        let arena = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("params arena"),
            size: SLOT * ARENA_SLOTS as u64,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut entries = HashMap::new();
        for (i, e) in ENTRIES.iter().enumerate() {
            if entries.insert(e.name, (i, e)).is_some() {
                return Err(err(format!("two WGSL entry points are named `{}`", e.name)));
            }
        }
        Ok(Context {
            device,
            queue,
            limits,
            subgroups,
            shader_f16,
            matmul_precision: MatmulPrecision::F32,
            adapter_name: info.name.clone(),
            description,
            arena,
            entries,
            state: Mutex::new(State::default()),
            scratch: Mutex::new(HashMap::new()),
            dropped: Arc::new(Mutex::new(Vec::new())),
            error,
        })
    }

    /// Sets the precision of matmul operands: f32, or f16 when the device has shader-f16.
    pub fn set_matmul_precision(&mut self, p: MatmulPrecision) -> Result<()> {
        match p {
            MatmulPrecision::F32 => {}
            MatmulPrecision::F16 if self.shader_f16 => {}
            MatmulPrecision::F16 => {
                let why = if std::env::var_os(NO_SHADER_F16).is_some() { format!(" ({NO_SHADER_F16} is set)") } else { String::new() };
                return Err(p.unsupported("wgpu", format!("the adapter {} lacks shader-f16 (wgpu's SHADER_F16 feature){why}; use f32", self.adapter_name)));
            }
            MatmulPrecision::Tf32 | MatmulPrecision::Bf16 => {
                return Err(p.unsupported("wgpu", "WGSL has no tf32 or bf16 type; the wgpu backend takes f32 or f16 (with shader-f16)"));
            }
        }
        self.matmul_precision = p;
        Ok(())
    }

    /// The entry points whose pipelines exist (those dispatched at least once).
    pub fn compiled_entry_points(&self) -> Vec<&'static str> {
        self.state().pipelines.keys().copied().collect()
    }

    fn check_error(&self) -> Result<()> {
        match self.error.lock().unwrap_or_else(|p| p.into_inner()).take() {
            Some(e) => Err(err(format!("device error: {e}"))),
            None => Ok(()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    // ---- buffers ---------------------------------------------------------------------------------

    /// A zero-filled storage buffer of `len` 4-byte values.
    pub fn alloc(&self, len: usize) -> Result<GpuBuf> {
        let bytes = (len.max(1) * 4) as u64;
        let max = self.limits.max_storage_buffer_binding_size.min(self.limits.max_buffer_size);
        if bytes > max {
            return Err(err(format!(
                "a buffer of {len} values ({:.1} MiB) exceeds the adapter's largest storage binding ({} MiB)",
                bytes as f64 / (1u64 << 20) as f64,
                max >> 20
            )));
        }
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size: bytes,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        Ok(GpuBuf::new(buffer, len, self.dropped.clone()))
    }

    /// A scratch buffer of at least `len` values for one op call, reused across calls (so its
    /// bind groups are too) instead of allocated each time; not zeroed. A second borrower of the
    /// same `key` while the first holds it (another thread) gets a fresh buffer.
    pub fn scratch(&self, key: &'static str, len: usize) -> Result<Scratch<'_>> {
        let cached = self.scratch.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
        let buf = match cached {
            Some(buf) if buf.len >= len => buf,
            _ => self.alloc(len)?,
        };
        Ok(Scratch { ctx: self, key, buf: Some(buf) })
    }

    /// Overwrites the start of `buf` with `bytes`, after every dispatch recorded so far.
    pub fn write(&self, buf: &GpuBuf, bytes: &[u8]) -> Result<()> {
        if bytes.len() > buf.len * 4 {
            return Err(err(format!("write of {} values into a buffer of {}", bytes.len() / 4, buf.len)));
        }
        if bytes.is_empty() {
            return Ok(());
        }
        self.flush()?;
        self.queue.write_buffer(&buf.buffer, 0, bytes);
        Ok(())
    }

    /// Reads `buf` back, after every dispatch recorded so far.
    pub fn read(&self, buf: &GpuBuf) -> Result<Vec<u8>> {
        self.read_range(buf, 0, buf.len)
    }

    /// As [`Self::read`], the `len` 4-byte values from value `start` (a bounded read for
    /// streaming saves).
    pub fn read_range(&self, buf: &GpuBuf, start: usize, len: usize) -> Result<Vec<u8>> {
        if start.checked_add(len).is_none_or(|end| end > buf.len) {
            return Err(err(format!("download of values {start}..{} from a buffer of {}", start + len, buf.len)));
        }
        self.flush()?;
        let bytes = (len * 4) as u64;
        if bytes == 0 {
            return Ok(Vec::new());
        }
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("download"),
            size: bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut encoder = self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("download") });
        encoder.copy_buffer_to_buffer(&buf.buffer, (start * 4) as u64, &staging, 0, bytes);
        self.queue.submit([encoder.finish()]);
        let (tx, rx) = std::sync::mpsc::channel();
        staging.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = tx.send(r);
        });
        self.device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| err(format!("waiting for the device: {e}")))?;
        rx.recv().map_err(|_| err("download: the map callback never ran"))?.map_err(|e| err(format!("download: {e}")))?;
        let data = staging.get_mapped_range(..).map_err(|e| err(format!("download: {e}")))?.to_vec();
        staging.unmap();
        self.check_error()?;
        Ok(data)
    }

    /// Submits the recorded dispatches and waits until the device has run them.
    pub fn synchronize(&self) -> Result<()> {
        self.flush()?;
        self.device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| err(format!("waiting for the device: {e}")))?;
        self.check_error()
    }

    /// Submits the recorded dispatches (without waiting for them).
    pub fn flush(&self) -> Result<()> {
        let mut st = self.state();
        self.flush_locked(&mut st);
        drop(st);
        self.check_error()
    }

    fn flush_locked(&self, st: &mut State) {
        let pending = std::mem::take(&mut st.pending);
        let Pending { pass, encoder, uniforms, .. } = pending;
        drop(pass);
        if let Some(encoder) = encoder {
            if !uniforms.is_empty() {
                self.queue.write_buffer(&self.arena, 0, &uniforms);
            }
            self.queue.submit([encoder.finish()]);
        }
    }

    // ---- dispatch --------------------------------------------------------------------------------

    fn pipeline(&self, st: &mut State, name: &str) -> Result<Arc<Pipeline>> {
        let &(_, entry) = self.entries.get(name).ok_or_else(|| err(format!("no WGSL entry point `{name}` in shaders/")))?;
        if let Some(p) = st.pipelines.get(entry.name) {
            return Ok(p.clone());
        }
        if entry.shader_f16 && !self.shader_f16 {
            return Err(err(format!("`{name}` needs shader-f16, which the device was opened without")));
        }
        if !st.modules.contains_key(entry.family) {
            let src = FAMILIES.iter().find(|(f, _)| *f == entry.family).map(|(_, s)| *s).unwrap_or_default();
            let prelude = if self.subgroups { PRELUDE_SUBGROUP } else { PRELUDE_PLAIN };
            let module = self.device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(entry.family),
                source: wgpu::ShaderSource::Wgsl(format!("{src}\n{prelude}").into()),
            });
            st.modules.insert(entry.family, module);
        }
        let module = &st.modules[entry.family];
        let layout_entries: Vec<wgpu::BindGroupLayoutEntry> = entry
            .bindings
            .iter()
            .map(|&(binding, access)| wgpu::BindGroupLayoutEntry {
                binding,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: match access {
                        Access::Uniform => wgpu::BufferBindingType::Uniform,
                        Access::Read => wgpu::BufferBindingType::Storage { read_only: true },
                        Access::ReadWrite => wgpu::BufferBindingType::Storage { read_only: false },
                    },
                    has_dynamic_offset: access == Access::Uniform,
                    min_binding_size: None,
                },
                count: None,
            })
            .collect();
        let layout = self.device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor { label: Some(entry.name), entries: &layout_entries });
        let pipeline_layout = self.device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some(entry.name),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let pipeline = self.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(entry.name),
            layout: Some(&pipeline_layout),
            module,
            entry_point: Some(entry.name),
            compilation_options: Default::default(),
            cache: None,
        });
        self.check_error()?;
        let p = Arc::new(Pipeline { pipeline, layout, entry });
        st.pipelines.insert(entry.name, p.clone());
        Ok(p)
    }

    /// Records one dispatch of entry point `name` over `groups` workgroups. `params` (the params
    /// struct, then any scalar arguments) is its uniform; `bufs[i]` is bound at binding `i + 1`
    /// (only the bindings the entry point uses are bound). An empty grid records nothing.
    pub fn dispatch(&self, name: &str, params: &[u8], bufs: &[&GpuBuf], groups: [u32; 3]) -> Result<()> {
        if groups.contains(&0) {
            return Ok(());
        }
        if params.len() as u64 > SLOT {
            return Err(err(format!("{name}: params of {} bytes exceed a {SLOT}-byte slot", params.len())));
        }
        let max = self.limits.max_compute_workgroups_per_dimension;
        if groups.iter().any(|&g| g > max) {
            return Err(err(format!("{name}: grid {groups:?} exceeds {max} workgroups per dimension")));
        }
        let timer = crate::backend::cpu::profile::enabled().then(std::time::Instant::now);
        let mut st = self.state();
        let pipe = self.pipeline(&mut st, name)?;
        let index = self.entries[pipe.entry.name].0;

        // evict the bind groups of dropped buffers
        let dead: Vec<u64> = std::mem::take(&mut *self.dropped.lock().unwrap_or_else(|p| p.into_inner()));
        if !dead.is_empty() {
            st.bind_groups.retain(|(_, ids), _| !ids.iter().any(|id| dead.contains(id)));
        }

        let mut ids = Vec::with_capacity(pipe.entry.bindings.len());
        for &(binding, _) in pipe.entry.bindings.iter().filter(|(b, _)| *b > 0) {
            let buf = bufs.get(binding as usize - 1).ok_or_else(|| err(format!("{name}: binding {binding} has no buffer")))?;
            ids.push(buf.id);
        }
        let key = (index, ids);
        if !st.bind_groups.contains_key(&key) {
            let entries: Vec<wgpu::BindGroupEntry> = pipe
                .entry
                .bindings
                .iter()
                .map(|&(binding, _)| wgpu::BindGroupEntry {
                    binding,
                    resource: if binding == 0 {
                        wgpu::BindingResource::Buffer(wgpu::BufferBinding { buffer: &self.arena, offset: 0, size: wgpu::BufferSize::new(SLOT) })
                    } else {
                        bufs[binding as usize - 1].buffer.as_entire_binding()
                    },
                })
                .collect();
            let bg = self.device.create_bind_group(&wgpu::BindGroupDescriptor { label: Some(pipe.entry.name), layout: &pipe.layout, entries: &entries });
            st.bind_groups.insert(key.clone(), bg);
        }

        if st.pending.dispatches == ARENA_SLOTS {
            self.flush_locked(&mut st);
        }
        let offset = st.pending.dispatches * SLOT as usize;
        let pending = &mut st.pending;
        pending.uniforms.resize(offset + SLOT as usize, 0);
        pending.uniforms[offset..offset + params.len()].copy_from_slice(params);
        pending.dispatches += 1;
        if pending.encoder.is_none() {
            pending.encoder = Some(self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("rlhf step") }));
        }
        if pending.pass.is_none() {
            let encoder = pending.encoder.as_mut().unwrap();
            pending.pass = Some(encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: None, timestamp_writes: None }).forget_lifetime());
        }
        let bg = st.bind_groups.get(&key).unwrap().clone();
        let pass = st.pending.pass.as_mut().unwrap();
        pass.set_pipeline(&pipe.pipeline);
        pass.set_bind_group(0, &bg, &[offset as u32]);
        pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
        if let Some(t0) = timer {
            drop(st);
            self.synchronize()?;
            crate::backend::cpu::profile::record(pipe.entry.name, t0.elapsed().as_secs_f64());
        }
        Ok(())
    }

    /// Workgroups for `threads` invocations of a 1-D kernel with `wg` invocations per group,
    /// folded into x and y (the shader recovers the index with `flat_index`).
    pub fn grid_1d(&self, threads: usize, wg: u32) -> [u32; 3] {
        let groups = threads.div_ceil(wg as usize) as u64;
        let max = self.limits.max_compute_workgroups_per_dimension as u64;
        let x = groups.min(max);
        let y = if x == 0 { 0 } else { groups.div_ceil(x) };
        [x as u32, y as u32, 1]
    }
}

/// The bytes of a params struct followed by scalar arguments (the uniform layout of the shaders).
pub fn params_with<P: bytemuck::Pod>(p: &P, scalars: &[f32]) -> Vec<u8> {
    let mut v = bytemuck::bytes_of(p).to_vec();
    v.extend_from_slice(bytemuck::cast_slice(scalars));
    v
}
