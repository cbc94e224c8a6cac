//! Builds the CUDA emulator (a stand-in `libcuda.so` with every `kernels/*.cu` compiled for the CPU,
//! see driver.cpp) with the system C++ compiler and loads it, so that the CUDA backend's tests run
//! without a GPU. Used by the test harnesses only (`tests/common/mod.rs`, `tests/cuda_ops`).
//!
//! When: `RLHF_CUDA_EMU=1` always, `0` never, unset when no real driver (`libcuda.so` or
//! `libcuda.so.1`) can be loaded. How the backend finds it: cudarc dlopens `libcuda.so` by name
//! and offers no way to give a path, so the emulator is dlopened here first by its full path; its
//! soname is `libcuda.so`, and glibc answers a later dlopen of a bare name with an already
//! loaded library of that soname. NVRTC (which dlopens `libcuda.so.1` for itself) does not see it.
//! Child processes (the tests that run the `rlhf` binary) find it through `LD_LIBRARY_PATH`,
//! which gets its folder prepended.
//!
//! Beside it stand-ins `libcublas.so` (cublas.cpp: the strided-batched GEMMs the backend calls)
//! and `libcublasLt.so` (cublaslt.cpp: its fused bias / GELU / DGELU epilogues), on the CPU and
//! queued on the emulated streams, are loaded the same way, so matmuls take the backend's default
//! cuBLAS and cuBLASLt paths.
//!
//! The build is cached under `target/tmp/cuda_emu/<hash>/` (the hash covers the emulator's
//! sources, kernels/, the compiler's version and the flags), built in a scratch folder and renamed
//! into place, so concurrent test binaries never see half a library. `CXX` names the compiler
//! (default `g++`, C++20). One C++ file is generated per kernel file: the shim header, the dynamic
//! shared memory arrays its `extern __shared__` declarations name, the kernel file itself, and a
//! table of its `extern "C" __global__` entry points for the stand-in driver.

use std::ffi::{c_char, c_int, c_void, CString};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

const EMU_DIR: &str = "tests/cuda_emu";
const RUNTIME: &[&str] = &["driver.cpp", "scheduler.cpp", "grid.cpp", "fiber.cpp", "registry.cpp"];
const HEADERS: &[&str] = &["cuda_shim.h", "runtime.h", "fiber.h", "scheduler.h", "block.h", "api.h", "blas_types.h"];
/// The stand-in libraries beside libcuda.so: (file name, sources, exported symbols), each linked
/// against the stand-in driver (they queue their work on its streams).
const STANDINS: &[(&str, &[&str], &str)] = &[("libcublas.so", &["cublas.cpp"], "cublas*"), ("libcublasLt.so", &["cublaslt.cpp"], "cublasLt*")];
/// Kernel files of the emulator's own tests (compiled in beside kernels/).
const SELFTEST: &str = "selftest.cu";
/// `-fno-extern-tls-init`: g++ otherwise calls a (missing) init function for the block-scope
/// `extern thread_local` arrays that `extern __shared__` becomes, without a null check.
/// `-fno-strict-aliasing`: the kernels read float buffers through uint4.
const FLAGS: &[&str] = &["-std=c++20", "-O2", "-fPIC", "-pthread", "-fno-extern-tls-init", "-fno-strict-aliasing", "-ffp-contract=off", "-Wno-unknown-pragmas"];

/// Which driver the CUDA tests get.
#[derive(Clone, Debug)]
pub enum Driver {
    /// the machine's (or none: then the tests skip, or fail under CI)
    Real,
    /// the emulator, loaded from this path
    Emulator(PathBuf),
}

/// Makes sure the process uses the driver `RLHF_CUDA_EMU` asks for (see the module doc); call
/// before anything creates a `CudaBackend`. The first call builds and loads; later calls return
/// its result.
pub fn driver() -> Result<Driver, String> {
    static DONE: OnceLock<Result<Driver, String>> = OnceLock::new();
    DONE.get_or_init(|| {
        let want = match std::env::var("RLHF_CUDA_EMU").ok().as_deref() {
            Some("0") => false,
            Some("1") => true,
            None | Some("") => !real_driver_present(),
            Some(other) => return Err(format!("RLHF_CUDA_EMU={other}: expected 1 (use the CUDA emulator) or 0")),
        };
        if !want {
            return Ok(Driver::Real);
        }
        let lib = build()?;
        load(&lib)?;
        for (name, _, _) in STANDINS {
            load(&lib.with_file_name(name))?;
        }
        // child processes (tests that run the `rlhf` binary) find it through the search path
        let dir = lib.parent().expect("the library's folder").to_string_lossy().into_owned();
        let path = std::env::var("LD_LIBRARY_PATH").map_or(dir.clone(), |old| format!("{dir}:{old}"));
        std::env::set_var("LD_LIBRARY_PATH", path);
        Ok(Driver::Emulator(lib))
    })
    .clone()
}

fn real_driver_present() -> bool {
    ["libcuda.so", "libcuda.so.1"].iter().any(|name| {
        let h = dlopen_raw(name, RTLD_LAZY | RTLD_LOCAL);
        if !h.is_null() {
            // SAFETY: a handle just returned by dlopen.
            unsafe { dlclose(h) };
        }
        !h.is_null()
    })
}

const RTLD_LAZY: c_int = 1;
const RTLD_NOW: c_int = 2;
const RTLD_LOCAL: c_int = 0;

extern "C" {
    fn dlopen(filename: *const c_char, flags: c_int) -> *mut c_void;
    fn dlclose(handle: *mut c_void) -> c_int;
    fn dlerror() -> *const c_char;
    fn dlsym(handle: *mut c_void, symbol: *const c_char) -> *mut c_void;
}

fn dlopen_raw(name: &str, flags: c_int) -> *mut c_void {
    let c = CString::new(name).expect("no NUL in library names");
    // SAFETY: a valid C string; dlopen has no other preconditions.
    unsafe { dlopen(c.as_ptr(), flags) }
}

/// Loads the emulator for the life of the process (never closed).
fn load(lib: &Path) -> Result<(), String> {
    let h = dlopen_raw(&lib.to_string_lossy(), RTLD_NOW | RTLD_LOCAL);
    if h.is_null() {
        // SAFETY: dlerror returns a C string describing the failed dlopen above (or null).
        let why = unsafe { dlerror() };
        let why = if why.is_null() { "unknown".into() } else { unsafe { std::ffi::CStr::from_ptr(why) }.to_string_lossy().into_owned() };
        return Err(format!("loading the CUDA emulator {}: {why}", lib.display()));
    }
    Ok(())
}

/// The address of `name` in the loaded emulator (its `emu_*` hooks for the emulator's own tests).
pub fn symbol(lib: &Path, name: &str) -> Option<*mut c_void> {
    // the library is loaded already: this dlopen only returns its handle
    let h = dlopen_raw(&lib.to_string_lossy(), RTLD_NOW | RTLD_LOCAL);
    let c = CString::new(name).ok()?;
    // SAFETY: a live handle and a valid C string.
    let p = (!h.is_null()).then(|| unsafe { dlsym(h, c.as_ptr()) })?;
    (!p.is_null()).then_some(p)
}

fn fnv1a(h: &mut u64, bytes: &[u8]) {
    for &b in bytes {
        *h ^= b as u64;
        *h = h.wrapping_mul(0x0100_0000_01b3);
    }
    *h ^= 0xff;
    *h = h.wrapping_mul(0x0100_0000_01b3);
}

/// (family, source path relative to the repository, text) of every kernel file to compile in.
fn kernel_files(root: &Path) -> Result<Vec<(String, String, String)>, String> {
    let mut out = Vec::new();
    for (family, src) in rlhf::backend::cuda::kernels::FAMILIES {
        out.push((family.to_string(), format!("kernels/{family}.cu"), src.to_string()));
    }
    let path = format!("{EMU_DIR}/{SELFTEST}");
    let text = std::fs::read_to_string(root.join(&path)).map_err(|e| format!("{path}: {e}"))?;
    out.push(("emu_selftest".into(), path, text));
    Ok(out)
}

/// The `(type, name)` of each distinct `extern __shared__ TYPE NAME[];` of a source.
fn dynamic_shared(src: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut rest = src;
    while let Some(at) = rest.find("extern __shared__") {
        rest = &rest[at + "extern __shared__".len()..];
        let decl = &rest[..rest.find(';').unwrap_or(rest.len())];
        let words: Vec<&str> = decl.split_whitespace().filter(|w| !w.starts_with("__align__")).collect();
        if let Some((last, ty)) = words.split_last() {
            let name = last.trim_end_matches("[]").to_string();
            if !out.iter().any(|(_, n)| *n == name) {
                out.push((ty.join(" "), name));
            }
        }
    }
    out
}

/// The generated C++ of one kernel file (see the module doc).
fn wrapper(family: &str, path: &str, src: &str) -> String {
    let file = Path::new(path).file_name().expect("a file").to_string_lossy();
    let mut s = format!("// Generated by {EMU_DIR}/install.rs from {path}: compiled for the CUDA emulator.\n#include \"cuda_shim.h\"\n");
    let smem = dynamic_shared(src);
    for (ty, name) in &smem {
        s += &format!("alignas(16) static thread_local {ty} {name}[emu::MAX_DYN_SMEM / sizeof({ty})];\n");
    }
    s += &format!("#include \"{file}\"\n");
    let dyn_fn = match smem.first() {
        Some((_, name)) => {
            s += &format!("static void* emu_dyn_smem() {{ return {name}; }}\n");
            "&emu_dyn_smem"
        }
        None => "nullptr",
    };
    let entries = rlhf::backend::cuda::kernels::entry_points(src);
    s += "static const emu::Kernel emu_kernels[] = {\n";
    for e in &entries {
        s += &format!("    emu::describe(\"{e}\", &{e}, {dyn_fn}),\n");
    }
    s += &format!("}};\nstatic const int emu_registered = (emu::register_kernels(\"{family}\", emu_kernels, {}), 0);\n", entries.len());
    s
}

fn compiler() -> String {
    std::env::var("CXX").unwrap_or_else(|_| "g++".into())
}

/// Builds (or finds in the cache) the emulator and returns the path of its `libcuda.so`.
pub fn build() -> Result<PathBuf, String> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let cxx = compiler();
    let version = Command::new(&cxx).arg("--version").output().map_err(|e| format!("the CUDA emulator needs a C++20 compiler (`{cxx}`: {e}); set CXX"))?;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    fnv1a(&mut h, &version.stdout);
    for f in FLAGS {
        fnv1a(&mut h, f.as_bytes());
    }
    let mut sources = Vec::new();
    // this file too: it generates the wrappers and holds the flags
    let standin_sources = STANDINS.iter().flat_map(|(_, srcs, _)| srcs.iter());
    for f in RUNTIME.iter().chain(HEADERS).chain(standin_sources).chain(&["install.rs"]) {
        let path = format!("{EMU_DIR}/{f}");
        let text = std::fs::read(root.join(&path)).map_err(|e| format!("{path}: {e}"))?;
        fnv1a(&mut h, path.as_bytes());
        fnv1a(&mut h, &text);
        sources.push(path);
    }
    let kernels = kernel_files(&root)?;
    fnv1a(&mut h, rlhf::backend::cuda::kernels::COMMON.as_bytes());
    for (_, path, text) in &kernels {
        fnv1a(&mut h, path.as_bytes());
        fnv1a(&mut h, text.as_bytes());
    }
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cuda_emu");
    let dir = base.join(format!("{h:016x}"));
    let lib = dir.join("libcuda.so");
    if lib.exists() {
        return Ok(lib);
    }
    let scratch = base.join(format!("{h:016x}.tmp{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).map_err(|e| format!("{}: {e}", scratch.display()))?;
    let mut units: Vec<PathBuf> = sources.iter().filter(|s| s.ends_with(".cpp")).map(|s| root.join(s)).collect();
    let standin_units: Vec<PathBuf> = STANDINS.iter().flat_map(|(_, srcs, _)| srcs.iter().map(|f| root.join(EMU_DIR).join(f))).collect();
    for (family, path, text) in &kernels {
        let gen = scratch.join(format!("{family}.cpp"));
        std::fs::write(&gen, wrapper(family, path, text)).map_err(|e| format!("{}: {e}", gen.display()))?;
        units.push(gen);
    }
    compile_all(&cxx, &root, &scratch, &units)?;
    let objects: Vec<PathBuf> = units.iter().filter(|u| !standin_units.contains(u)).map(|u| object_of(&scratch, u)).collect();
    // export the driver API only: kernel names such as `copy` or `fill` stay local
    let exports = scratch.join("exports.map");
    std::fs::write(&exports, "{ global: cu*; emu_enqueue_host; emu_last_launch_error; emu_set_order; local: *; };\n").map_err(|e| format!("{}: {e}", exports.display()))?;
    let out = Command::new(&cxx)
        .current_dir(&root)
        .args(["-shared", "-pthread", "-Wl,-soname,libcuda.so"])
        .arg(format!("-Wl,--version-script={}", exports.display()))
        .arg("-o")
        .arg(scratch.join("libcuda.so"))
        .args(&objects)
        .output()
        .map_err(|e| format!("{cxx}: {e}"))?;
    if !out.status.success() {
        return Err(format!("linking the CUDA emulator failed:\n{}", String::from_utf8_lossy(&out.stderr)));
    }
    for (name, srcs, exported) in STANDINS {
        let map = scratch.join(format!("{name}.map"));
        std::fs::write(&map, format!("{{ global: {exported}; local: *; }};\n")).map_err(|e| format!("{}: {e}", map.display()))?;
        let out = Command::new(&cxx)
            .current_dir(&root)
            .args(["-shared", "-pthread", &format!("-Wl,-soname,{name}"), &format!("-Wl,--version-script={}", map.display()), "-o"])
            .arg(scratch.join(name))
            .args(srcs.iter().map(|f| object_of(&scratch, Path::new(f))))
            .arg(scratch.join("libcuda.so"))
            .output()
            .map_err(|e| format!("{cxx}: {e}"))?;
        if !out.status.success() {
            return Err(format!("linking the stand-in {name} failed:\n{}", String::from_utf8_lossy(&out.stderr)));
        }
    }
    // another process may have finished the same build first: either copy will do
    if std::fs::rename(&scratch, &dir).is_err() {
        let _ = std::fs::remove_dir_all(&scratch);
    }
    if lib.exists() {
        Ok(lib)
    } else {
        Err(format!("the CUDA emulator build left no {}", lib.display()))
    }
}

fn object_of(scratch: &Path, unit: &Path) -> PathBuf {
    scratch.join(format!("{}.o", unit.file_stem().expect("a file name").to_string_lossy()))
}

/// Compiles every unit (a few at a time).
fn compile_all(cxx: &str, root: &Path, scratch: &Path, units: &[PathBuf]) -> Result<(), String> {
    let jobs = std::thread::available_parallelism().map_or(2, |n| n.get());
    let next = std::sync::atomic::AtomicUsize::new(0);
    let errors = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..jobs {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(unit) = units.get(i) else { return };
                let mut cmd = Command::new(cxx);
                cmd.current_dir(root).args(FLAGS).args([&format!("-I{EMU_DIR}"), "-Ikernels"]);
                cmd.arg("-c").arg(unit).arg("-o").arg(object_of(scratch, unit));
                match cmd.output() {
                    Ok(o) if o.status.success() => {}
                    Ok(o) => errors.lock().unwrap().push(format!("{}:\n{}", unit.display(), String::from_utf8_lossy(&o.stderr))),
                    Err(e) => errors.lock().unwrap().push(format!("{cxx}: {e}")),
                }
            });
        }
    });
    let errors = errors.into_inner().unwrap();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(format!("compiling the CUDA emulator failed:\n{}", errors.join("\n")))
    }
}
