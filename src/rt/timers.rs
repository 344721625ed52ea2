//! Each executor's sleeps: a min-heap of deadlines over a slab of entries,
//! kept by whichever driver runs the executor (`epoll` or `uring`), and the
//! `Sleep` future that waits on it. The driver wakes due sleeps at each turn
//! and bounds its blocking wait by the earliest deadline.

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

/// One sleep's entry in the timer slab.
#[derive(Default)]
struct Timer {
    /// Bumped when the entry is freed, so stale heap entries are known.
    generation: u32,
    live: bool,
    waker: Option<Waker>,
}

/// Pending sleeps: a min-heap of deadlines over a slab of entries.
/// A cancelled sleep frees its entry at once and leaves its heap entry
/// to be skipped when it comes up (or dropped by `compact`).
#[derive(Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<(Instant, usize, u32)>>,
    entries: Vec<Timer>,
    free: Vec<usize>,
    live: usize,
}

impl Timers {
    pub fn add(&mut self, deadline: Instant, waker: Waker) -> (usize, u32) {
        let index = self.free.pop().unwrap_or_else(|| {
            self.entries.push(Timer::default());
            self.entries.len() - 1
        });
        let entry = &mut self.entries[index];
        entry.live = true;
        entry.waker = Some(waker);
        let generation = entry.generation;
        self.live += 1;
        self.heap.push(Reverse((deadline, index, generation)));
        self.compact();
        (index, generation)
    }

    pub fn remove(&mut self, (index, generation): (usize, u32)) {
        let entry = &mut self.entries[index];
        if entry.live && entry.generation == generation {
            entry.live = false;
            entry.waker = None;
            entry.generation = entry.generation.wrapping_add(1);
            self.free.push(index);
            self.live -= 1;
        }
    }

    pub fn is_current(&self, index: usize, generation: u32) -> bool {
        let entry = &self.entries[index];
        entry.live && entry.generation == generation
    }

    /// Takes the wakers of every sleep due at `now`.
    pub fn fire(&mut self, now: Instant, wake: &mut Vec<Waker>) {
        while let Some(&Reverse((deadline, index, generation))) = self.heap.peek() {
            if deadline > now {
                break;
            }
            self.heap.pop();
            if self.is_current(index, generation) {
                wake.extend(self.entries[index].waker.take());
            }
        }
    }

    /// The earliest deadline still wanted.
    pub fn next(&mut self) -> Option<Instant> {
        while let Some(&Reverse((deadline, index, generation))) = self.heap.peek() {
            if self.is_current(index, generation) && self.entries[index].waker.is_some() {
                return Some(deadline);
            }
            self.heap.pop();
        }
        None
    }

    /// Drops the heap entries of cancelled sleeps once they dominate
    /// (long connect timeouts that were never reached, for example).
    fn compact(&mut self) {
        if self.heap.len() > 4 * self.live + 1024 {
            let entries = &self.entries;
            self.heap.retain(|Reverse((_, index, generation))| {
                let entry = &entries[*index];
                entry.live && entry.generation == *generation
            });
        }
    }
}

/// A sleep on the driver's timer heap.
pub struct Sleep {
    timers: Rc<RefCell<Timers>>,
    deadline: Instant,
    key: Option<(usize, u32)>,
}

impl Sleep {
    pub fn new(timers: Rc<RefCell<Timers>>, deadline: Instant) -> Sleep {
        Sleep {
            timers,
            deadline,
            key: None,
        }
    }
}

impl Future for Sleep {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let mut timers = this.timers.borrow_mut();
        if Instant::now() >= this.deadline {
            if let Some(key) = this.key.take() {
                timers.remove(key);
            }
            return Poll::Ready(());
        }
        match this.key {
            Some((index, generation)) if timers.is_current(index, generation) => {
                let waker = &mut timers.entries[index].waker;
                if !waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    *waker = Some(cx.waker().clone());
                }
            }
            _ => this.key = Some(timers.add(this.deadline, cx.waker().clone())),
        }
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.timers.borrow_mut().remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn noop() -> Waker {
        Waker::noop().clone()
    }

    #[test]
    fn timers_fire_in_deadline_order_and_skip_cancelled() {
        let mut timers = Timers::default();
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let late = timers.add(at(30), noop());
        let early = timers.add(at(10), noop());
        let cancelled = timers.add(at(5), noop());
        timers.remove(cancelled);
        assert_eq!(timers.next(), Some(at(10)));
        let mut wake = Vec::new();
        timers.fire(at(20), &mut wake);
        assert_eq!(wake.len(), 1, "only the 10 ms sleep is due at 20 ms");
        // A fired sleep stays registered until its future sees the
        // deadline; it no longer asks for a wake-up.
        timers.remove(early);
        assert_eq!(timers.next(), Some(at(30)));
        wake.clear();
        timers.fire(at(30), &mut wake);
        assert_eq!(wake.len(), 1);
        timers.remove(late);
        assert_eq!((timers.live, timers.next()), (0, None));
    }

    #[test]
    fn a_reused_timer_entry_ignores_the_old_deadline() {
        let mut timers = Timers::default();
        let t0 = Instant::now();
        let old = timers.add(t0 + Duration::from_millis(1), noop());
        timers.remove(old);
        let new = timers.add(t0 + Duration::from_millis(50), noop());
        assert_eq!(old.0, new.0, "the freed entry is reused");
        let mut wake = Vec::new();
        timers.fire(t0 + Duration::from_millis(2), &mut wake);
        assert!(
            wake.is_empty(),
            "the old heap entry must not wake the new sleep"
        );
    }

    #[test]
    fn cancelled_sleeps_do_not_pile_up_in_the_heap() {
        let mut timers = Timers::default();
        let far = Instant::now() + Duration::from_secs(60);
        for _ in 0..100_000 {
            let key = timers.add(far, noop());
            timers.remove(key);
        }
        assert!(
            timers.heap.len() <= 1024 + 1,
            "heap kept {}",
            timers.heap.len()
        );
    }
}
