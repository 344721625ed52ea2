//! The shard's provided-buffer ring: the receive buffers the kernel picks
//! from when a multishot receive has data to hand over.
//!
//! A connection waiting for its answer holds no buffer; the kernel takes
//! one from this ring only when bytes arrive, and the completion names it.
//! The socket keeps it until its task has read the bytes, then gives it
//! back (`give_back`). When the ring is empty, a receive ends with
//! `ENOBUFS` and its socket waits in the ring's starved list until buffers
//! come back (see `Ring::complete`); its bytes wait in the kernel's socket
//! buffer meanwhile, which costs nothing.
//!
//! The ring offers the kernel only part of the pool (`target` buffers),
//! topped up before each `io_uring_enter` from the buffers given back most
//! recently (`spare`, a stack). A ring is first in, first out: offered the
//! whole pool, the kernel would cycle through all of it, and every answer
//! would be copied into and parsed from memory the caches lost long ago.
//! Offered a small set, the same few buffers come round while still in
//! cache. The set doubles whenever a receive finds the ring empty while
//! spare buffers were left (the kernel wanted more in one turn than it was
//! offered), and halves after `SHRINK_TURNS` turns without that (never
//! below its floor), so it follows the load: the floor for 64 connections,
//! most of the pool for a thousand streams.
//!
//! Memory: `count` entries of 16 bytes (page-aligned, as the kernel asks)
//! and `count × size` bytes of buffers, per shard; sized in `limits`. Pages
//! no answer was written into are never touched, so they cost address
//! space, not memory.

use io_uring::types::BufRingEntry;
use io_uring::IoUring;
use std::io;
use std::sync::atomic::{AtomicU16, Ordering};

/// The buffer group id of the shard's one ring.
pub const GROUP: u16 = 0;

/// Driver turns without a starved receive after which the offered set
/// halves.
const SHRINK_TURNS: u32 = 4096;

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
    /// Buffers neither offered nor held, the last given back on top.
    spare: Vec<u16>,
    /// Buffers in the ring that the kernel has not taken yet.
    offered: usize,
    /// How many buffers the ring should offer after a top-up.
    target: usize,
    /// The smallest `target`.
    floor: usize,
    /// Turns since a receive last found the ring empty with spares left.
    calm_turns: u32,
    /// A receive found the ring empty with spares left since the last
    /// top-up.
    dry: bool,
}

impl BufRing {
    /// Maps `count` entries (a power of two, at most 32,768) of `size`
    /// bytes, registers them with `ring` and offers the kernel `floor` of
    /// them (all of them if `floor` is larger).
    pub fn new(ring: &IoUring, count: u16, size: usize, floor: usize) -> io::Result<BufRing> {
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
        let floor = floor.clamp(1, count as usize);
        let mut bufs = BufRing {
            entries: base.cast(),
            entries_bytes,
            memory: vec![0u8; count as usize * size].into_boxed_slice(),
            size,
            count,
            tail: 0,
            // Buffer 0 on top: the first ones offered are the first ones
            // in memory.
            spare: (0..count).rev().collect(),
            offered: 0,
            target: floor,
            floor,
            calm_turns: 0,
            dry: false,
        };
        // SAFETY: the mapping is page-aligned, holds `count` entries and
        // lives (with `memory`) until this value is dropped, after the
        // ring that uses it (the ring's fields drop in order).
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(base as u64, count, GROUP, 0)?;
        }
        bufs.top_up();
        Ok(bufs)
    }

    /// The bytes the kernel put in buffer `id`.
    pub fn data(&self, id: u16, len: usize) -> &[u8] {
        let start = id as usize * self.size;
        &self.memory[start..start + len.min(self.size)]
    }

    /// Buffer `id`'s bytes have been read: it is spare again, the first to
    /// be offered next.
    pub fn give_back(&mut self, id: u16) {
        self.spare.push(id);
    }

    /// A buffer the kernel filled is now the caller's.
    pub fn taken(&mut self) {
        self.offered -= 1;
    }

    /// A receive found the ring empty. If buffers were spare, the kernel
    /// wanted more in one turn than it was offered: the next top-up offers
    /// twice as many (once per turn, however many receives ran dry).
    pub fn ran_dry(&mut self) {
        self.dry |= !self.spare.is_empty();
    }

    /// Offers the kernel spare buffers, the last given back first, until
    /// `target` are offered; shrinks the target after a calm stretch. Runs
    /// before each `io_uring_enter`.
    pub fn top_up(&mut self) {
        self.calm_turns += 1;
        if self.dry {
            self.dry = false;
            self.calm_turns = 0;
            self.target = (self.target * 2).min(self.count as usize);
        } else if self.calm_turns >= SHRINK_TURNS {
            self.calm_turns = 0;
            self.target = (self.target / 2).max(self.floor);
        }
        let before = self.tail;
        while self.offered < self.target {
            let Some(id) = self.spare.pop() else { break };
            self.offer(id);
        }
        if self.tail != before {
            // SAFETY: the tail shares the first entry's last field (as the
            // kernel's layout defines it); a release store publishes the
            // entries written in `offer` before the new tail.
            unsafe {
                let tail = BufRingEntry::tail(self.entries) as *const AtomicU16;
                (*tail).store(self.tail, Ordering::Release);
            }
        }
    }

    /// Writes buffer `id` at our tail (published by `top_up`).
    fn offer(&mut self, id: u16) {
        let index = (self.tail & (self.count - 1)) as usize;
        let addr = self.memory[id as usize * self.size..].as_ptr() as u64;
        // SAFETY: `index` is within the mapping's `count` entries; the
        // kernel reads an entry only once the published tail covers it.
        unsafe {
            let entry = &mut *self.entries.add(index);
            entry.set_addr(addr);
            entry.set_len(self.size as u32);
            entry.set_bid(id);
        }
        self.tail = self.tail.wrapping_add(1);
        self.offered += 1;
    }

    /// Whether the kernel has buffers to fill, or will after the next
    /// top-up.
    pub fn has_room(&self) -> bool {
        self.offered > 0 || !self.spare.is_empty()
    }

    /// How many buffers the ring offers after a top-up now.
    #[cfg(test)]
    pub fn target(&self) -> usize {
        self.target
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

#[cfg(test)]
mod tests {
    use super::*;

    impl BufRing {
        /// The buffer ids written at ring positions `from..to`.
        fn offered_ids(&self, from: u16, to: u16) -> Vec<u16> {
            (from..to)
                .map(|i| {
                    let index = (i & (self.count - 1)) as usize;
                    // SAFETY: within the mapping's `count` entries.
                    unsafe { (*self.entries.add(index)).bid() }
                })
                .collect()
        }
    }

    /// A ring of 16 buffers that offers at least 2, with the kernel's side
    /// played by hand (`taken`): no receive ever runs.
    fn ring() -> Option<(IoUring, BufRing)> {
        let uring = IoUring::new(8).ok()?;
        let bufs = BufRing::new(&uring, 16, 64, 2).ok()?;
        Some((uring, bufs))
    }

    #[test]
    fn the_ring_offers_the_buffers_given_back_last_and_grows_when_it_runs_dry() {
        let Some((_uring, mut bufs)) = ring() else {
            eprintln!("no usable io_uring here; skipped");
            return;
        };
        // At first the two lowest buffers are offered, in order.
        assert_eq!(bufs.offered_ids(0, 2), [0, 1]);
        assert_eq!((bufs.offered, bufs.target()), (2, 2));
        // The kernel fills both; the task reads them, 1 then 0.
        bufs.taken();
        bufs.taken();
        assert!(bufs.has_room(), "14 buffers are spare");
        bufs.give_back(1);
        bufs.give_back(0);
        // The top-up offers the one given back last first: the warmest.
        bufs.top_up();
        assert_eq!(bufs.offered_ids(2, 4), [0, 1]);
        // A receive that finds the ring empty while buffers are spare
        // doubles the offer, once per turn however many ran dry.
        bufs.taken();
        bufs.taken();
        bufs.ran_dry();
        bufs.ran_dry();
        bufs.top_up();
        assert_eq!((bufs.offered, bufs.target()), (4, 4));
        // Held buffers are not spare: with every buffer held, running dry
        // does not grow the offer, and there is no room.
        for spare_after in [6, 2] {
            for _ in 0..4 {
                bufs.taken();
            }
            bufs.top_up();
            assert_eq!((bufs.offered, bufs.spare.len()), (4, spare_after));
        }
        for _ in 0..4 {
            bufs.taken();
        }
        bufs.top_up();
        assert_eq!(bufs.offered, 2, "only 2 spare were left of 16");
        bufs.taken();
        bufs.taken();
        assert!(!bufs.has_room());
        bufs.ran_dry();
        bufs.top_up();
        assert_eq!((bufs.offered, bufs.target()), (0, 4));
        // Given back, they are offered again, up to the target.
        for id in 0..16 {
            bufs.give_back(id);
        }
        bufs.top_up();
        assert_eq!(bufs.offered, 4);
        // A calm stretch halves the offer, never below the floor (the
        // buffers already offered stay offered).
        for _ in 0..SHRINK_TURNS {
            bufs.top_up();
        }
        assert_eq!(bufs.target(), 2);
        for _ in 0..3 * SHRINK_TURNS {
            bufs.top_up();
        }
        assert_eq!(bufs.target(), 2);
        assert_eq!(bufs.offered, 4);
    }
}
