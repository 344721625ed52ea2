//! The shard's reactor: socket readiness from one epoll set, and timers,
//! driven by one task that owns the executor's idle time.
//!
//! glommio learns that a socket is readable by arming an io_uring poll
//! after every read that finds no data, and every turn of its scheduler
//! loop re-arms its preemption timers and, before sleeping, issues a
//! `membarrier`. Measured at 20,000 arrivals/s that was 5.6
//! `io_uring_enter` calls and 0.6 `membarrier` calls per request, about a
//! quarter of the shard's CPU.
//!
//! Here every socket is registered once, edge-triggered, in an epoll set
//! owned by the executor, sleeps are kept in a local timer heap, and the
//! driver task stays runnable for the executor's whole life, so glommio's
//! task queue never empties and glommio never parks. Each turn the driver
//! collects up to 64 ready sockets with `epoll_pwait2`, wakes the tasks of
//! due timers and then those of the sockets (so a due pacer runs first),
//! and yields, so the tasks it woke run in the same pass. If other tasks ran
//! since its previous turn, the wait has a zero timeout (except right after
//! a blocking turn, when the turn skips epoll; see `drive`). If none did, the
//! executor has nothing else to run, and the wait blocks until a socket is
//! ready or the next timer is due: the executor thread then sleeps exactly
//! as the plain epoll reference in `benches/open_loop_ref.rs` does.
//!
//! "No other task ran" is known from a counter that every task spawned
//! through `rt` bumps on each poll (`Counted`). A task can only become
//! runnable through a socket or a timer (both the driver's), or through a
//! wake-up from another task of the executor (which bumped the counter when
//! it ran); glommio's own I/O and timers are not used once the reactor is
//! installed, so nothing else can wake a task while the driver blocks.
//!
//! Everything runs on the executor's one thread: the driver and the tasks
//! reading and writing never interleave inside a poll, so a task that saw
//! EAGAIN and stored its waker cannot miss an edge; the edge is reported
//! to the driver after that, and the driver wakes the task.

use crate::limits;
use std::cell::{Cell, RefCell};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// Which way a task waits.
#[derive(Clone, Copy, PartialEq)]
pub enum Direction {
    Read,
    Write,
}

/// One socket's readiness.
#[derive(Default)]
struct Slot {
    /// An event came in since the last failed attempt.
    readable: bool,
    writable: bool,
    /// Tasks waiting for the next event.
    reader: Option<Waker>,
    writer: Option<Waker>,
    /// EPOLLOUT is in the registration. It is added the first time a
    /// connect or a write has to wait; a connect drops it again once
    /// done, a write keeps it. Most connections never need it, and with
    /// it every ACK that frees buffer space wakes the driver.
    out_armed: bool,
}

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
struct Timers {
    heap: BinaryHeap<Reverse<(Instant, usize, u32)>>,
    entries: Vec<Timer>,
    free: Vec<usize>,
    live: usize,
}

impl Timers {
    fn add(&mut self, deadline: Instant, waker: Waker) -> (usize, u32) {
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

    fn remove(&mut self, (index, generation): (usize, u32)) {
        let entry = &mut self.entries[index];
        if entry.live && entry.generation == generation {
            entry.live = false;
            entry.waker = None;
            entry.generation = entry.generation.wrapping_add(1);
            self.free.push(index);
            self.live -= 1;
        }
    }

    fn is_current(&self, index: usize, generation: u32) -> bool {
        let entry = &self.entries[index];
        entry.live && entry.generation == generation
    }

    /// Takes the wakers of every sleep due at `now`.
    fn fire(&mut self, now: Instant, wake: &mut Vec<Waker>) {
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
    fn next(&mut self) -> Option<Instant> {
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

/// The executor's epoll set, its table of sockets and its timers.
pub struct Reactor {
    epoll: OwnedFd,
    /// One slot per registered socket; the epoll event carries its index.
    slots: RefCell<Vec<Slot>>,
    /// Slots of closed sockets, reused before the table grows.
    free: RefCell<Vec<usize>>,
    timers: RefCell<Timers>,
    /// Set when the executor's main future is done: the driver returns.
    stopped: Cell<bool>,
    waiter: RefCell<Waiter>,
    /// Driver turns that polled the sockets (see `after_socket_poll`).
    socket_polls: Cell<u64>,
    /// Waits ended by the timer descriptor (tests check it fires).
    #[cfg(test)]
    timer_events: Cell<u64>,
}

/// How the driver waits on the epoll set.
enum Waiter {
    /// `epoll_pwait2` (Linux 5.11 and later): a timeout in nanoseconds.
    Precise,
    /// `epoll_wait`, whose timeout is in whole milliseconds, with a
    /// timer descriptor in the set that ends the wait on time: for
    /// kernels 5.8 to 5.10 (glommio runs there, `epoll_pwait2` does
    /// not) and for sandboxes that refuse the call (valgrind, older
    /// container seccomp profiles). One more system call per wait that
    /// blocks.
    Timerfd(OwnedFd),
}

/// The epoll event that marks the wait's timer descriptor (never a
/// socket's slot).
const TIMER_EVENT: u64 = u64::MAX;

/// Whether `epoll_pwait2` works here, asked once of a new, empty set.
fn precise_wait_works(epoll: &OwnedFd) -> bool {
    let mut event = libc::epoll_event { events: 0, u64: 0 };
    let zero = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: room for one event, a valid timeout and a null sigmask.
    let n =
        unsafe { libc::epoll_pwait2(epoll.as_raw_fd(), &mut event, 1, &zero, std::ptr::null()) };
    let refused = matches!(
        io::Error::last_os_error().raw_os_error(),
        Some(libc::ENOSYS | libc::EPERM)
    );
    n >= 0 || !refused
}

/// A monotonic timer descriptor, registered edge-triggered in `epoll`:
/// each expiry is one event, with no need to read the count.
fn wait_timer(epoll: &OwnedFd) -> io::Result<OwnedFd> {
    // SAFETY: timerfd_create has no memory preconditions; the result is
    // checked, then owned.
    let fd = unsafe {
        libc::timerfd_create(
            libc::CLOCK_MONOTONIC,
            libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just created and is owned by nobody else.
    let timer = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut event = libc::epoll_event {
        events: (libc::EPOLLIN | libc::EPOLLET) as u32,
        u64: TIMER_EVENT,
    };
    // SAFETY: both descriptors are open; the event outlives the call.
    let rc = unsafe {
        libc::epoll_ctl(
            epoll.as_raw_fd(),
            libc::EPOLL_CTL_ADD,
            timer.as_raw_fd(),
            &mut event,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(timer)
}

thread_local! {
    static REACTOR: RefCell<Option<Rc<Reactor>>> = const { RefCell::new(None) };
    /// Polls of counted tasks on this thread (see `Counted`).
    static POLLS: Cell<u64> = const { Cell::new(0) };
}

/// The executor thread's timer slack. Linux lets a sleeping thread's
/// timer fire up to 50 µs late by default, to batch wake-ups; a pacer
/// waiting for its next arrival would carry that as scheduler lag.
const TIMER_SLACK_NS: libc::c_ulong = 1_000;

/// A future whose every poll is counted, so the driver can tell whether
/// any other task ran since its own previous turn.
pub struct Counted<F>(pub F);

impl<F: Future> Future for Counted<F> {
    type Output = F::Output;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        POLLS.with(|p| p.set(p.get().wrapping_add(1)));
        // SAFETY: structural pinning of the only field; it is never
        // moved out of the pinned wrapper.
        unsafe { self.map_unchecked_mut(|c| &mut c.0) }.poll(cx)
    }
}

fn polls() -> u64 {
    POLLS.with(Cell::get)
}

/// This thread's reactor, if `install` ran on it.
pub fn current() -> Option<Rc<Reactor>> {
    REACTOR.try_with(|r| r.borrow().clone()).ok().flatten()
}

/// Creates this executor's reactor and spawns its driver. Must run
/// inside the executor, before any socket or sleep is used.
pub fn install() -> io::Result<Rc<Reactor>> {
    // SAFETY: epoll_create1 has no memory preconditions; the result is
    // checked, then owned.
    let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: prctl with PR_SET_TIMERSLACK takes a plain number.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, TIMER_SLACK_NS);
    }
    // SAFETY: `fd` was just created and is owned by nobody else.
    let epoll = unsafe { OwnedFd::from_raw_fd(fd) };
    let waiter = if precise_wait_works(&epoll) {
        Waiter::Precise
    } else {
        Waiter::Timerfd(wait_timer(&epoll)?)
    };
    let reactor = Rc::new(Reactor {
        epoll,
        slots: RefCell::new(Vec::new()),
        free: RefCell::new(Vec::new()),
        timers: RefCell::new(Timers::default()),
        stopped: Cell::new(false),
        waiter: RefCell::new(waiter),
        socket_polls: Cell::new(0),
        #[cfg(test)]
        timer_events: Cell::new(0),
    });
    REACTOR.with(|r| *r.borrow_mut() = Some(reactor.clone()));
    glommio::spawn_local(drive(reactor.clone())).detach();
    Ok(reactor)
}

impl Reactor {
    /// Lets the driver return at its next turn, so the executor can
    /// see its main future finished.
    pub fn stop(&self) {
        self.stopped.set(true);
    }

    /// How many driver turns have polled the sockets so far.
    pub fn socket_polls(&self) -> u64 {
        self.socket_polls.get()
    }

    /// Collects up to `events.len()` ready sockets (waiting up to
    /// `timeout`) and puts the wakers of their waiting tasks in `wake`.
    /// Returns whether `events` came back full.
    fn poll_events(
        &self,
        events: &mut [libc::epoll_event],
        wake: &mut Vec<Waker>,
        timeout: Duration,
    ) -> bool {
        let n = self.wait(events, timeout);
        // Interrupted (the kicker's signal) or nothing.
        if n <= 0 {
            return false;
        }
        let mut slots = self.slots.borrow_mut();
        for event in &events[..n as usize] {
            #[cfg(test)]
            if event.u64 == TIMER_EVENT {
                self.timer_events.set(self.timer_events.get() + 1);
            }
            let Some(slot) = slots.get_mut(event.u64 as usize) else {
                continue;
            };
            let bits = event.events as libc::c_int;
            // An event goes to the task waiting for it, which retries at
            // once; only an event nobody waits for is kept in the flag
            // for the next attempt. (Keeping it after a wake-up as well
            // cost a needless `recv` per response: the next request's
            // first EAGAIN found the stale flag and tried again.)
            if bits & (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) != 0 {
                match slot.reader.take() {
                    Some(waker) => wake.push(waker),
                    None => slot.readable = true,
                }
            }
            if bits & (libc::EPOLLOUT | libc::EPOLLHUP | libc::EPOLLERR) != 0 {
                match slot.writer.take() {
                    Some(waker) => wake.push(waker),
                    None => slot.writable = true,
                }
            }
        }
        n as usize == events.len()
    }

    /// Waits up to `timeout` for ready sockets, as `epoll_wait`
    /// returns (a count, or -1 for an error such as EINTR).
    fn wait(&self, events: &mut [libc::epoll_event], timeout: Duration) -> libc::c_int {
        let epoll = self.epoll.as_raw_fd();
        let (ptr, max) = (events.as_mut_ptr(), events.len() as libc::c_int);
        let spec = |d: Duration| libc::timespec {
            tv_sec: d.as_secs() as libc::time_t,
            tv_nsec: d.subsec_nanos() as libc::c_long,
        };
        match &*self.waiter.borrow() {
            // SAFETY: `events` has room for `max`; the timeout and a
            // null sigmask are valid for the call.
            Waiter::Precise => unsafe {
                libc::epoll_pwait2(epoll, ptr, max, &spec(timeout), std::ptr::null())
            },
            // SAFETY: as above; a zero timeout only polls.
            Waiter::Timerfd(_) if timeout.is_zero() => unsafe {
                libc::epoll_wait(epoll, ptr, max, 0)
            },
            Waiter::Timerfd(timer) => {
                let due = libc::itimerspec {
                    it_interval: spec(Duration::ZERO),
                    it_value: spec(timeout),
                };
                // SAFETY: arms (replacing any earlier expiry) an open
                // timer from a valid itimerspec; the old value is not
                // asked for. An expiry left over from an earlier wait
                // only ends some wait early: the driver then waits again.
                let armed = unsafe {
                    libc::timerfd_settime(timer.as_raw_fd(), 0, &due, std::ptr::null_mut())
                };
                // Without the timer, round up to whole milliseconds
                // (late, never early).
                let ms = if armed == 0 {
                    -1
                } else {
                    timeout.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as libc::c_int
                };
                // SAFETY: `events` has room for `max`.
                unsafe { libc::epoll_wait(epoll, ptr, max, ms) }
            }
        }
    }

    /// Switches this reactor to the wait used where `epoll_pwait2` is
    /// missing, so tests can run it on any kernel.
    #[cfg(test)]
    pub fn use_timerfd_wait(&self) -> io::Result<()> {
        *self.waiter.borrow_mut() = Waiter::Timerfd(wait_timer(&self.epoll)?);
        Ok(())
    }

    /// The epoll set's descriptor.
    #[cfg(test)]
    pub fn epoll_fd(&self) -> RawFd {
        self.epoll.as_raw_fd()
    }

    /// How many waits the timer descriptor ended.
    #[cfg(test)]
    pub fn timer_events(&self) -> u64 {
        self.timer_events.get()
    }

    /// Wakes every sleep that is due.
    fn fire_timers(&self, wake: &mut Vec<Waker>) {
        self.timers.borrow_mut().fire(Instant::now(), wake);
        wake.drain(..).for_each(Waker::wake);
    }
}

/// The driver: each turn hands ready sockets and due timers to their
/// tasks, then yields; blocks only when the executor has nothing else
/// to run.
///
/// After a turn that blocked, the next turn only looks at the timers:
/// the tasks that turn woke have run by then, and their sockets'
/// answers are rarely back yet, so a poll of epoll would nearly always
/// be an empty system call. If nothing else ran meanwhile (nothing the
/// woken tasks spawned or woke), the turn after blocks; otherwise it
/// polls without waiting, as every busy turn does. Counted with `perf`
/// at 20,000 arrivals/s this saves about one `epoll_pwait2` per
/// wake-up.
async fn drive(r: Rc<Reactor>) {
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; limits::REACTOR_EVENTS_PER_TURN];
    let mut ready: Vec<Waker> = Vec::with_capacity(2 * limits::REACTOR_EVENTS_PER_TURN);
    let mut sleepers: Vec<Waker> = Vec::new();
    // Start as if another task had just run: the first turn only looks.
    let mut seen = polls().wrapping_sub(1);
    let mut blocked = false;
    while !r.stopped.get() {
        let ran = polls() != seen;
        if ran && blocked {
            // The woken tasks have run; skip epoll this turn (see above).
            blocked = false;
        } else {
            let timeout = if ran {
                Duration::ZERO
            } else {
                // Nothing ran since our last turn, so nothing else is
                // queued: wait for a socket or the next timer (a wait
                // that finds events ready returns at once).
                match r.timers.borrow_mut().next() {
                    Some(due) => due
                        .saturating_duration_since(Instant::now())
                        .min(limits::REACTOR_IDLE_MAX),
                    None => limits::REACTOR_IDLE_MAX,
                }
            };
            // A full batch may have left sockets ready: poll again
            // next turn rather than skip.
            let full = r.poll_events(&mut events, &mut ready, timeout);
            r.socket_polls.set(r.socket_polls.get().wrapping_add(1));
            blocked = !ran && !full;
        }
        // Due sleeps are woken first, so they run ahead of the sockets'
        // tasks in glommio's queue: the pacer sends the arrivals that
        // are due before this turn's answers are parsed. Wakers are
        // called after the socket table is released, so nothing a
        // wake-up might run can find it borrowed.
        r.fire_timers(&mut sleepers);
        ready.drain(..).for_each(Waker::wake);
        seen = polls();
        yield_now().await;
    }
}

/// Returns Pending once, asking to be polled again: the task goes to
/// the back of the executor's queue.
pub(super) fn yield_now() -> impl Future<Output = ()> {
    let mut yielded = false;
    std::future::poll_fn(move |cx| {
        if yielded {
            return Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    })
}

/// A sleep on the reactor's timer heap.
pub struct Sleep {
    reactor: Rc<Reactor>,
    deadline: Instant,
    key: Option<(usize, u32)>,
}

impl Sleep {
    pub fn new(reactor: Rc<Reactor>, deadline: Instant) -> Sleep {
        Sleep {
            reactor,
            deadline,
            key: None,
        }
    }
}

impl Future for Sleep {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let mut timers = this.reactor.timers.borrow_mut();
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
            self.reactor.timers.borrow_mut().remove(key);
        }
    }
}

fn control(r: &Reactor, op: libc::c_int, fd: RawFd, slot: usize, out: bool) -> io::Result<()> {
    let mut bits = libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLET;
    if out {
        bits |= libc::EPOLLOUT;
    }
    let mut event = libc::epoll_event {
        events: bits as u32,
        u64: slot as u64,
    };
    // SAFETY: both descriptors are open; the event outlives the call.
    let rc = unsafe { libc::epoll_ctl(r.epoll.as_raw_fd(), op, fd, &mut event) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

pub fn no_reactor() -> io::Error {
    io::Error::other("no reactor on this thread (not an rt executor)")
}

/// Adds a socket to this executor's set, watching reads (a wait for
/// writes arms them); returns its slot.
pub fn register(fd: &OwnedFd) -> io::Result<usize> {
    let r = current().ok_or_else(no_reactor)?;
    let slot = match r.free.borrow_mut().pop() {
        Some(slot) => slot,
        None => {
            let mut slots = r.slots.borrow_mut();
            slots.push(Slot::default());
            slots.len() - 1
        }
    };
    r.slots.borrow_mut()[slot] = Slot::default();
    if let Err(e) = control(&r, libc::EPOLL_CTL_ADD, fd.as_raw_fd(), slot, false) {
        r.free.borrow_mut().push(slot);
        return Err(e);
    }
    Ok(slot)
}

/// Stops watching writes on a socket whose connect completed (no call
/// when they were never armed).
pub fn disarm_out(fd: RawFd, slot: usize) -> io::Result<()> {
    let r = current().ok_or_else(no_reactor)?;
    let mut slots = r.slots.borrow_mut();
    slots[slot].writable = false;
    if !std::mem::take(&mut slots[slot].out_armed) {
        return Ok(());
    }
    control(&r, libc::EPOLL_CTL_MOD, fd, slot, false)
}

/// A read wait given up before its answer was seen: takes its waker
/// out of the slot, or, if an event already took it, keeps that event
/// for the next wait.
pub fn abandon_read_wait(slot: usize) {
    let Some(r) = current() else { return };
    let mut slots = r.slots.borrow_mut();
    if let Some(entry) = slots.get_mut(slot) {
        if entry.reader.take().is_none() {
            entry.readable = true;
        }
    }
}

/// Frees a socket's slot; its descriptor is closed right after.
///
/// No `EPOLL_CTL_DEL`: closing the last descriptor of a file removes it
/// from every epoll set, and these sockets are never duplicated and are
/// close-on-exec, so the close that follows is that last reference. The
/// call would be one system call per closed connection for nothing,
/// which `Connection: close` traffic pays on every request. Events are
/// only read inside the driver's turn and handed out before any task
/// runs, so none can name this slot after its next owner takes it.
pub fn deregister(slot: usize) {
    // During thread teardown the table may be gone already.
    let Some(r) = current() else {
        return;
    };
    r.slots.borrow_mut()[slot] = Slot::default();
    r.free.borrow_mut().push(slot);
}

/// After an attempt found the socket not ready: true if an event came
/// in since (try again now), else the task's waker is stored and false
/// returned (the driver wakes it on the next event).
pub fn wait(fd: RawFd, slot: usize, direction: Direction, cx: &mut Context<'_>) -> bool {
    let Some(r) = current() else {
        return true;
    };
    let mut slots = r.slots.borrow_mut();
    let entry = &mut slots[slot];
    match direction {
        Direction::Read => {
            if std::mem::take(&mut entry.readable) {
                return true;
            }
            entry.reader = Some(cx.waker().clone());
        }
        Direction::Write => {
            if std::mem::take(&mut entry.writable) {
                return true;
            }
            if !entry.out_armed {
                // Re-registering reports the current state, so a
                // socket that became writable just now is not missed.
                entry.out_armed = true;
                if control(&r, libc::EPOLL_CTL_MOD, fd, slot, true).is_err() {
                    return true;
                }
            }
            entry.writer = Some(cx.waker().clone());
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

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
