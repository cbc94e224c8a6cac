//! The process's peak resident memory over a phase of the bench (Linux): `/proc/self/clear_refs`
//! resets the high-water mark, `VmHWM` in `/proc/self/status` reads it. It counts what the CPU
//! backend's training step holds (weights, gradients, moments, activations) plus the process's
//! own baseline, as `tests/fixtures/bench_pytorch.py` measures PyTorch's. Elsewhere, or where
//! the kernel refuses the reset, there is no figure.

/// Starts a phase: the high-water mark becomes the current resident size. False when it could not.
pub fn reset_peak_resident() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// The process's peak resident bytes since the last [`reset_peak_resident`].
pub fn peak_resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
