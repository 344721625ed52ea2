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
//! owned by the executor, and each turn of the driver (`driver::drive`)
//! collects up to 64 ready sockets with `epoll_pwait2`, waiting only when
//! the executor has nothing else to run: the executor thread then sleeps
//! exactly as the plain epoll reference in `benches/open_loop_ref.rs` does.
//!
//! Everything runs on the executor's one thread: the driver and the tasks
//! reading and writing never interleave inside a poll, so a task that saw
//! EAGAIN and stored its waker cannot miss an edge; the edge is reported
//! to the driver after that, and the driver wakes the task.

mod socket;

pub use socket::{Listener, Socket};

use super::driver::{self, Common, Driver, Poller};
use crate::limits;
use std::cell::RefCell;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::task::{Context, Waker};
use std::time::Duration;

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

/// The executor's epoll set, its table of sockets and its timers.
pub struct Reactor {
    epoll: OwnedFd,
    /// One slot per registered socket; the epoll event carries its index.
    slots: RefCell<Vec<Slot>>,
    /// Slots of closed sockets, reused before the table grows.
    free: RefCell<Vec<usize>>,
    common: Common,
    waiter: RefCell<Waiter>,
    /// Waits ended by the timer descriptor (tests check it fires).
    #[cfg(test)]
    timer_events: std::cell::Cell<u64>,
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

/// This thread's epoll reactor, if the executor runs on one.
pub fn current() -> Option<Rc<Reactor>> {
    match driver::current()? {
        Driver::Epoll(r) => Some(r),
        Driver::Uring(_) => None,
    }
}

/// Creates this executor's epoll reactor (`driver::install` starts it).
pub fn create() -> io::Result<Rc<Reactor>> {
    // SAFETY: epoll_create1 has no memory preconditions; the result is
    // checked, then owned.
    let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
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
        common: Common::default(),
        waiter: RefCell::new(waiter),
        #[cfg(test)]
        timer_events: std::cell::Cell::new(0),
    });
    Ok(reactor)
}

impl Poller for Reactor {
    fn poll(&self, timeout: Duration, wake: &mut Vec<Waker>) -> bool {
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; limits::REACTOR_EVENTS_PER_TURN];
        self.poll_events(&mut events, wake, timeout)
    }

    fn common(&self) -> &Common {
        &self.common
    }
}

impl Reactor {
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

/// Adds a socket to this executor's set, watching reads (a wait for
/// writes arms them); returns its slot.
pub fn register(fd: &OwnedFd) -> io::Result<usize> {
    let r = current().ok_or_else(driver::no_driver)?;
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
    let r = current().ok_or_else(driver::no_driver)?;
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
