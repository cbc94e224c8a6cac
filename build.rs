//! Build script. Kernel sources in `kernels/` (CUDA C) and `shaders/` (WGSL) are embedded into the
//! binary by the GPU backends; rebuild when they change.

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-changed=kernels");
    println!("cargo::rerun-if-changed=shaders");
}
