//! Which CUDA libraries this process loaded and their versions — the driver, NVRTC, cuBLAS and
//! cuBLASLt — and the files they came from, for `rlhf info` and for errors that depend on them
//! (PTX newer than the driver, a library from another CUDA release).

use super::kernels;

/// The driver's CUDA version (`cuDriverGetVersion`), when libcuda is there.
pub fn driver_version() -> Option<(i32, i32)> {
    // SAFETY: checked present before the call, which only writes an int.
    unsafe {
        if !cudarc::driver::sys::is_culib_present() {
            return None;
        }
        let mut v = 0;
        (cudarc::driver::sys::cuDriverGetVersion(&mut v) == cudarc::driver::sys::CUresult::CUDA_SUCCESS).then_some((v / 1000, (v % 1000) / 10))
    }
}

/// One line per library: its version and the file it was loaded from, or why it is missing.
pub fn library_report() -> Vec<String> {
    let mut out = Vec::new();
    // SAFETY: each call dlopens its library (checked present first) and reads a version number.
    unsafe {
        if cudarc::driver::sys::is_culib_present() {
            out.push(line("driver (libcuda)", driver_version().map(|(a, b)| format!("CUDA {a}.{b}")), "libcuda.so"));
        } else {
            out.push("driver (libcuda): not found".into());
        }
        let nvrtc = kernels::nvrtc_version().map(|(a, b)| format!("{a}.{b}"));
        out.push(line("NVRTC", nvrtc, "libnvrtc"));
        if cudarc::cublas::sys::is_culib_present() {
            use cudarc::cublas::sys::{cublasGetProperty, cublasStatus_t::CUBLAS_STATUS_SUCCESS, libraryPropertyType_t as P};
            let mut parts = [0; 3];
            let ok = [P::MAJOR_VERSION, P::MINOR_VERSION, P::PATCH_LEVEL].iter().zip(parts.iter_mut()).all(|(&p, v)| cublasGetProperty(p, v) == CUBLAS_STATUS_SUCCESS);
            out.push(line("cuBLAS", ok.then(|| format!("{}.{}.{}", parts[0], parts[1], parts[2])), "libcublas.so"));
        } else {
            out.push("cuBLAS: not found (matmuls use the SIMT kernel)".into());
        }
        if cudarc::cublaslt::sys::is_culib_present() {
            let v = cudarc::cublaslt::sys::cublasLtGetVersion();
            out.push(line("cuBLASLt", Some(format!("{}.{}.{}", v / 10000, (v / 100) % 100, v % 100)), "libcublasLt"));
        } else {
            out.push("cuBLASLt: not found (no fused epilogues)".into());
        }
    }
    out
}

/// `name version (path)`, the path read from this process's memory map.
fn line(name: &str, version: Option<String>, file_part: &str) -> String {
    let version = version.unwrap_or_else(|| "version unknown".into());
    match loaded_from(file_part) {
        Some(path) => format!("{name}: {version} ({path})"),
        None => format!("{name}: {version}"),
    }
}

/// The file of a loaded shared library whose name contains `file_part` (Linux: /proc/self/maps).
pub fn loaded_from(file_part: &str) -> Option<String> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines().filter_map(|l| l.split_whitespace().nth(5)).find(|p| p.rsplit('/').next().is_some_and(|f| f.starts_with(file_part))).map(str::to_string)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_loaded_library_is_found_in_the_memory_map() {
        // every Linux process maps the C library
        let libc = super::loaded_from("libc.so").or_else(|| super::loaded_from("libc-"));
        assert!(libc.is_some_and(|p| p.starts_with('/')));
        assert!(super::loaded_from("libno-such-library").is_none());
    }
}
