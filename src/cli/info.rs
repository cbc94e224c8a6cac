//! `rlhf info`: the backends and devices found, the GPU libraries in use, and this process's place
//! in a data-parallel job.

use anyhow::Result;
use rlhf::backend::{Backend, CpuBackend};
use rlhf::model::config::PRESETS;
use rlhf::train::collective::Collective;
use rlhf::train::world::World;
use std::rc::Rc;

/// `comm`: the collective engine `world` connected to (or why it could not).
pub fn cmd_info(world: &World, comm: rlhf::error::Result<Rc<dyn Collective>>) -> Result<()> {
    let cpu = CpuBackend::new();
    println!("rlhf {}", env!("CARGO_PKG_VERSION"));
    println!("backends:");
    println!("  cpu   available  {}", cpu.device_description());
    match rlhf::backend::cuda::availability().and_then(|()| rlhf::backend::cuda::devices()) {
        Ok(devices) if !devices.is_empty() => {
            println!("  cuda  available  {} device(s), RLHF_CUDA_DEVICE=<n> picks one (default 0):", devices.len());
            for d in &devices {
                println!("        - {d}");
            }
        }
        Ok(_) => println!("  cuda  no device  (libcuda and NVRTC found, but no CUDA device)"),
        Err(why) => println!("  cuda  unavailable  ({why})"),
    }
    for lib in rlhf::backend::cuda::versions::library_report() {
        println!("        {lib}");
    }
    let adapters = rlhf::backend::wgpu::adapters();
    if adapters.is_empty() {
        println!("  wgpu  no adapter (no Vulkan, Metal or DX12 driver found; on Linux without a GPU: apt-get install mesa-vulkan-drivers libvulkan1)");
    } else {
        println!("  wgpu  available  {} adapter(s), the first is used (RLHF_WGPU_ADAPTER=<name part> picks another):", adapters.len());
        for a in &adapters {
            println!("        - {}", rlhf::backend::wgpu::describe_adapter(a));
        }
    }
    let built = if cfg!(feature = "mpi") { "built with mpi" } else { "built without mpi: cargo build --release --features mpi" };
    let engine = match &comm {
        Ok(c) => c.name().to_string(),
        Err(e) => format!("unavailable: {e}"),
    };
    let timeout = match rlhf::train::collective::timeout_from_env() {
        Ok(t) if world.size > 1 => format!("; a rank waits {} s for the others ({})", t.as_secs_f64(), rlhf::train::collective::TIMEOUT_VAR),
        Ok(_) => String::new(),
        Err(e) => format!("; {e}"),
    };
    println!("data-parallel: rank {} of {} (local rank {}, launcher {}); collective {engine} ({built}){timeout}", world.rank, world.size, world.local_rank, world.launcher.name());
    println!("presets: {}", PRESETS.join(", "));
    Ok(())
}
