//! Device buffers of the wgpu backend. A [`GpuBuf`] is a storage buffer of `len` 4-byte values
//! (f32 for `Buf`, i32 for `Ids`) with a process-unique id: bind groups are cached by the ids of
//! the buffers they bind, and a dropped buffer reports its id so that its bind groups (which
//! would keep it alive) are evicted.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A storage buffer on the device.
pub struct GpuBuf {
    pub(crate) id: u64,
    pub(crate) buffer: wgpu::Buffer,
    pub(crate) len: usize,
    dropped: Arc<Mutex<Vec<u64>>>,
}

impl GpuBuf {
    pub(crate) fn new(buffer: wgpu::Buffer, len: usize, dropped: Arc<Mutex<Vec<u64>>>) -> Self {
        GpuBuf { id: NEXT_ID.fetch_add(1, Ordering::Relaxed), buffer, len, dropped }
    }
    /// Number of 4-byte values.
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for GpuBuf {
    fn drop(&mut self) {
        if let Ok(mut d) = self.dropped.lock() {
            d.push(self.id);
        }
    }
}

impl std::fmt::Debug for GpuBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GpuBuf(#{}, {} values)", self.id, self.len)
    }
}
