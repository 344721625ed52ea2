//! The timeout watchdog: every request in flight is registered with its
//! deadline, and one task per shard shuts down the sockets of those past
//! it, so a stalled server cannot hold a user beyond its timeout.

use super::lifecycle::StageRun;
use super::shard::Shard;
use crate::limits;
use crate::rt;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::time::Instant;

/// Requests in flight with their deadlines, for the timeout watchdog.
///
/// A slab: slots are reused through a free list, so registering a request
/// does not allocate once the slab has grown to the peak in-flight count.
#[derive(Default)]
pub(super) struct Inflight {
    slots: Vec<Slot>,
    free: Vec<usize>,
    /// Slots in use (requests in flight).
    pub(super) live: usize,
}

#[derive(Clone, Copy)]
struct Slot {
    deadline: Instant,
    fd: RawFd,
    live: bool,
    expired: bool,
}

impl Inflight {
    pub(super) fn register(&mut self, deadline: Instant, fd: RawFd) -> usize {
        let slot = Slot {
            deadline,
            fd,
            live: true,
            expired: false,
        };
        self.live += 1;
        match self.free.pop() {
            Some(i) => {
                self.slots[i] = slot;
                i
            }
            None => {
                self.slots.push(slot);
                self.slots.len() - 1
            }
        }
    }

    pub(super) fn unregister(&mut self, index: usize) -> bool {
        let slot = &mut self.slots[index];
        assert!(slot.live, "in-flight slot {index} released twice");
        slot.live = false;
        self.live -= 1;
        self.free.push(index);
        slot.expired
    }

    /// Shuts down the sockets of requests past their deadline; their
    /// pending reads then return and the request reports a timeout.
    pub(super) fn expire(&mut self, now: Instant) {
        for slot in self.slots.iter_mut() {
            if slot.live && !slot.expired && now >= slot.deadline {
                slot.expired = true;
                rt::shutdown_fd(slot.fd);
            }
        }
    }
}

/// Keeps a request registered with the watchdog; unregisters on drop, so a
/// panicking request can never leave a slot that would later shut down an
/// unrelated socket reusing the same fd number.
pub(super) struct InflightGuard<'a> {
    shard: &'a Shard,
    index: Option<usize>,
}

impl<'a> InflightGuard<'a> {
    pub(super) fn new(shard: &'a Shard, deadline: Instant, fd: RawFd) -> Self {
        let index = shard.inflight.borrow_mut().register(deadline, fd);
        InflightGuard {
            shard,
            index: Some(index),
        }
    }

    /// Unregisters; returns whether the request timed out.
    pub(super) fn finish(mut self) -> bool {
        let index = self.index.take();
        index.is_some_and(|i| self.shard.inflight.borrow_mut().unregister(i))
    }
}

impl Drop for InflightGuard<'_> {
    fn drop(&mut self) {
        if let Some(i) = self.index.take() {
            if let Ok(mut inflight) = self.shard.inflight.try_borrow_mut() {
                inflight.unregister(i);
            }
        }
    }
}

pub(super) async fn watchdog(shard: Rc<Shard>, _run: Rc<StageRun>) {
    while !shard.watchdog_stop.get() {
        rt::sleep(limits::TIMEOUT_TICK).await;
        shard.inflight.borrow_mut().expire(Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn inflight_slab_reuses_and_expires() {
        let mut inflight = Inflight::default();
        let now = Instant::now();
        let a = inflight.register(now + Duration::from_secs(10), -1);
        let b = inflight.register(now, -1);
        inflight.expire(now);
        assert!(!inflight.unregister(a));
        assert!(inflight.unregister(b));
        let c = inflight.register(now, -1);
        assert!(c == a || c == b);
        assert_eq!(inflight.slots.len(), 2);
    }
}
