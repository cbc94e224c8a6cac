//! The CUDA C of `kernels/`, embedded in the binary, and its compilation with NVRTC (through
//! cudarc, the same path at run time and in `tests/cuda_compile.rs`): to a CUBIN for the device's
//! exact architecture, or to PTX for a virtual one.
//!
//! Each family file `kernels/<family>.cu` starts with `#include "common.cuh"`; [`full_source`]
//! replaces that line by the header's text between `#line` directives, so NVRTC needs no header
//! list or include path and its messages still name `common.cuh` or the family file and the right
//! line. NVRTC is loaded dynamically: check [`nvrtc_present`] before anything else here, since
//! cudarc panics when the library is missing.

use crate::error::{Error, Result};
use cudarc::nvrtc::{compile_ptx_with_opts, CompileError, CompileOptions};

/// `kernels/common.cuh`: the params structs of `src/backend/ops/` and the warp/block reductions.
pub const COMMON: &str = include_str!("../../../kernels/common.cuh");

/// `FAMILIES` from the op list: one `kernels/<family>.cu` per op family, embedded (a family without
/// its file fails the build).
macro_rules! kernel_sources {
    ([] $($(#[$attr:meta])* $family:ident : $Trait:ident [$($params:ident),*] { $($ops:tt)* })*) => {
        /// Every op family (`kernels/<family>.cu`) with its source, in the order of the op list.
        pub const FAMILIES: &[(&str, &str)] =
            &[$((stringify!($family), include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/kernels/", stringify!($family), ".cu")))),*];
    };
}
crate::op_list!(kernel_sources);

const INCLUDE_LINE: &str = "#include \"common.cuh\"";

pub(crate) fn err(msg: impl Into<String>) -> Error {
    Error::Backend { backend: "cuda", msg: msg.into() }
}

/// Whether the NVRTC library (`libnvrtc.so.12`, or `nvrtc64_*.dll`) can be loaded.
pub fn nvrtc_present() -> bool {
    // SAFETY: only tries to dlopen the library names cudarc knows.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

/// NVRTC's `(major, minor)` version, `None` without NVRTC.
pub fn nvrtc_version() -> Option<(i32, i32)> {
    if !nvrtc_present() {
        return None;
    }
    let (mut major, mut minor) = (0, 0);
    // SAFETY: NVRTC is present (checked above); the pointers are valid for the call.
    let status = unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) };
    (status == cudarc::nvrtc::sys::nvrtcResult::NVRTC_SUCCESS).then_some((major, minor))
}

/// The source of a family, by name.
pub fn family_source(family: &str) -> Result<&'static str> {
    FAMILIES.iter().find(|(f, _)| *f == family).map(|(_, s)| *s).ok_or_else(|| err(format!("no kernel family `{family}` in kernels/")))
}

/// `src` (the text of `kernels/<family>.cu`) with `common.cuh` pasted in place of its include line.
pub fn full_source(family: &str, src: &str) -> String {
    let mut out = String::with_capacity(src.len() + COMMON.len() + 128);
    for (i, line) in src.lines().enumerate() {
        if line.trim() == INCLUDE_LINE {
            out.push_str("#line 1 \"common.cuh\"\n");
            out.push_str(COMMON);
            out.push_str(&format!("\n#line {} \"kernels/{family}.cu\"\n", i + 2));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// The `extern "C" __global__` entry points of a source, in order.
pub fn entry_points(src: &str) -> Vec<&str> {
    let mut names = Vec::new();
    let mut rest = src;
    while let Some(at) = rest.find("extern \"C\" __global__ void ") {
        rest = &rest[at + "extern \"C\" __global__ void ".len()..];
        if let Some(end) = rest.find('(') {
            names.push(rest[..end].trim());
        }
    }
    names
}

/// NVRTC options for `arch` (e.g. `compute_90`): C++17 and otherwise NVRTC's defaults (precise
/// division and square roots, no flush-to-zero: parity with the CPU), plus `RLHF_CUDA_INCLUDE` as
/// an include path when set (the CUDA runtime headers; the f32 kernels include none).
pub fn compile_options(family: &str, arch: &str) -> CompileOptions {
    let mut options = vec![format!("--gpu-architecture={arch}"), "--std=c++17".to_string()];
    if let Ok(dir) = std::env::var("RLHF_CUDA_INCLUDE") {
        options.push(format!("--include-path={dir}"));
    }
    CompileOptions { options, name: Some(format!("kernels/{family}.cu")), ..Default::default() }
}

/// Compiles one family to PTX for `arch`. Errors carry NVRTC's log (file:line: message).
pub fn compile(family: &str, arch: &str) -> Result<String> {
    if !nvrtc_present() {
        return Err(err(
            "NVRTC (libnvrtc.so.12) not found: install the CUDA toolkit or `pip install nvidia-cuda-nvrtc-cu12` and put its lib/ on LD_LIBRARY_PATH",
        ));
    }
    let src = full_source(family, family_source(family)?);
    let ptx = compile_ptx_with_opts(&src, compile_options(family, arch)).map_err(|e| match e {
        CompileError::CompileError { log, .. } => err(format!("kernels/{family}.cu for {arch}:\n{}", log.to_string_lossy())),
        other => err(format!("kernels/{family}.cu for {arch}: {other:?}")),
    })?;
    Ok(ptx.to_src())
}

/// Compiles one family to a CUBIN for the real architecture `sm` (e.g. `sm_90`): machine code the
/// driver loads as it is, whatever PTX versions it understands. Errors carry NVRTC's log.
pub fn compile_cubin(family: &str, sm: &str) -> Result<Vec<u8>> {
    use cudarc::nvrtc::{result, sys};
    use std::ffi::CString;
    if !nvrtc_present() {
        return Err(err("NVRTC (libnvrtc.so.12) not found"));
    }
    let src = CString::new(full_source(family, family_source(family)?)).map_err(|_| err(format!("kernels/{family}.cu holds a NUL byte")))?;
    let name = CString::new(format!("kernels/{family}.cu")).expect("no NUL in a family name");
    let prog = result::create_program(&src, Some(&name)).map_err(|e| err(format!("kernels/{family}.cu: NVRTC program: {e:?}")))?;
    let options = compile_options(family, sm).options;
    // SAFETY: `prog` is a live program until destroyed below; the buffers are sized by NVRTC.
    let out = unsafe {
        let compiled = result::compile_program(prog, &options);
        let image = match compiled {
            Ok(()) => {
                let mut size = 0usize;
                let mut bin = Vec::new();
                let ok = sys::nvrtcGetCUBINSize(prog, &mut size) == sys::nvrtcResult::NVRTC_SUCCESS && {
                    bin.resize(size, 0u8);
                    sys::nvrtcGetCUBIN(prog, bin.as_mut_ptr().cast()) == sys::nvrtcResult::NVRTC_SUCCESS
                };
                if ok && size > 0 {
                    Ok(bin)
                } else {
                    Err(err(format!("kernels/{family}.cu for {sm}: NVRTC produced no CUBIN")))
                }
            }
            Err(e) => {
                let log = result::get_program_log(prog).map(|l| l.iter().map(|&c| c as u8 as char).collect::<String>()).unwrap_or_default();
                Err(err(format!("kernels/{family}.cu for {sm}: {e:?}\n{}", log.trim_end_matches('\0'))))
            }
        };
        let _ = result::destroy_program(prog);
        image
    };
    out
}

/// FNV-1a 64 of the given parts (the PTX cache key: sources, arch, NVRTC version).
pub fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in *part {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}
