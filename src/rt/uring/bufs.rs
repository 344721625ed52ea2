//! The shard's provided-buffer ring: the receive buffers the kernel picks
//! from when a multishot receive has data to hand over.
//!
//! A connection waiting for its answer holds no buffer; the kernel takes
//! one from this ring only when bytes arrive, and the completion names it.
//! The socket keeps it until its task has copied the bytes out, then gives
//! it back (`give_back`), which puts it at the ring's tail. When every
//! buffer is held, a receive ends with `ENOBUFS` and its socket waits in
//! the ring's starved list until buffers come back (see `Ring::complete`).
//!
//! Memory: `count` entries of 16 bytes (page-aligned, as the kernel asks)
//! and `count × size` bytes of buffers, per shard; sized in `limits`.

use io_uring::types::BufRingEntry;
use io_uring::IoUring;
use std::io;
use std::sync::atomic::{AtomicU16, Ordering};

/// The buffer group id of the shard's one ring.
pub const GROUP: u16 = 0;

pub struct BufRing {
    /// The entries, shared with the kernel (mmap'ed, page-aligned).
    entries: *mut BufRingEntry,
    entries_bytes: usize,
    /// The buffers themselves, `size` bytes each, in buffer-id order.
    memory: Box<[u8]>,
    size: usize,
    count: u16,
    /// Our copy of the tail (the kernel reads the published one).
    tail: u16,
    /// Buffers out of the ring: filled by the kernel, not yet given back.
    held: usize,
}

impl BufRing {
    /// Maps `count` entries (a power of two, at most 32,768) of `size`
    /// bytes, registers them with `ring` and hands them all to the kernel.
    pub fn new(ring: &IoUring, count: u16, size: usize) -> io::Result<BufRing> {
        if !count.is_power_of_two() || count > 32_768 {
            return Err(io::Error::other(format!(
                "the buffer ring needs a power of two up to 32768 entries, not {count}"
            )));
        }
        let entries_bytes = (count as usize * std::mem::size_of::<BufRingEntry>()).max(4096);
        // SAFETY: an anonymous private mapping with no address hint; the
        // result is checked before use and unmapped on drop.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                entries_bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let mut bufs = BufRing {
            entries: base.cast(),
            entries_bytes,
            memory: vec![0u8; count as usize * size].into_boxed_slice(),
            size,
            count,
            tail: 0,
            held: count as usize,
        };
        // SAFETY: the mapping is page-aligned, holds `count` entries and
        // lives (with `memory`) until this value is dropped, after the
        // ring that uses it (the ring's fields drop in order).
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(base as u64, count, GROUP, 0)?;
        }
        for id in 0..count {
            bufs.give_back(id);
        }
        Ok(bufs)
    }

    /// The bytes the kernel put in buffer `id`.
    pub fn data(&self, id: u16, len: usize) -> &[u8] {
        let start = id as usize * self.size;
        &self.memory[start..start + len.min(self.size)]
    }

    /// Puts buffer `id` back at the tail, for the kernel to fill again.
    pub fn give_back(&mut self, id: u16) {
        let index = (self.tail & (self.count - 1)) as usize;
        let addr = self.memory[id as usize * self.size..].as_ptr() as u64;
        // SAFETY: `index` is within the mapping's `count` entries; the
        // kernel reads an entry only once the tail below covers it.
        unsafe {
            let entry = &mut *self.entries.add(index);
            entry.set_addr(addr);
            entry.set_len(self.size as u32);
            entry.set_bid(id);
        }
        self.tail = self.tail.wrapping_add(1);
        self.held -= 1;
        // SAFETY: the tail shares the first entry's last field (as the
        // kernel's layout defines it); a release store publishes the entry
        // written above before the new tail.
        unsafe {
            let tail = BufRingEntry::tail(self.entries) as *const AtomicU16;
            (*tail).store(self.tail, Ordering::Release);
        }
    }

    /// A buffer the kernel filled is now the caller's.
    pub fn taken(&mut self) {
        self.held += 1;
    }

    /// Whether the kernel has buffers left to fill.
    pub fn has_room(&self) -> bool {
        self.held < self.count as usize
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`, once.
        unsafe {
            libc::munmap(self.entries.cast(), self.entries_bytes);
        }
    }
}
