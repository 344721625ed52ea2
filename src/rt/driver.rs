//! What every executor's I/O driver shares, whichever kernel interface
//! carries the sockets: the thread's current driver, the turn loop that
//! owns the executor's idle time, the count of task polls it decides by,
//! and the timer heap.
//!
//! A driver (`epoll::Reactor` or `uring::Ring`) is a `Poller`: asked once
//! per turn, it hands over the wakers of the tasks whose sockets made
//! progress, waiting up to a timeout when the executor has nothing else to
//! run. The loop around it (`drive`) is the same for both, so the two
//! reactors differ only in how they learn of socket progress.
//!
//! The driver task stays runnable for the executor's whole life, so
//! glommio's task queue never empties and glommio never parks. Each turn
//! polls the sockets, wakes the tasks of due timers and then those of the
//! sockets (so a due pacer runs first), and yields, so the tasks it woke
//! run in the same pass. If other tasks ran since its previous turn, the
//! poll does not wait (and right after a turn that blocked it is skipped;
//! see `drive`). If none did, the executor has nothing else to run, and the
//! poll blocks until a socket makes progress or the next timer is due.
//!
//! "No other task ran" is known from a counter that every task spawned
//! through `rt` bumps on each poll (`Counted`). A task can only become
//! runnable through a socket or a timer (both the driver's), or through a
//! wake-up from another task of the executor (which bumped the counter
//! when it ran); glommio's own I/O and timers are not used once the driver
//! is installed, so nothing else can wake a task while the driver blocks.

use super::timers::Timers;
use super::{epoll, uring};
use crate::limits;
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// The executor's driver.
#[derive(Clone)]
pub enum Driver {
    Epoll(Rc<epoll::Reactor>),
    Uring(Rc<uring::Ring>),
}

/// What a driver does each turn.
pub trait Poller {
    /// Collects the sockets' progress, waiting up to `timeout` for some
    /// (zero: only look), and puts the wakers of the tasks it concerns in
    /// `wake`. Returns whether more may be waiting than one turn took.
    fn poll(&self, timeout: Duration, wake: &mut Vec<Waker>) -> bool;
    /// The state every driver keeps.
    fn common(&self) -> &Common;
}

/// The state every driver keeps: its sleeps, whether it should stop, and
/// how many turns polled the sockets.
#[derive(Default)]
pub struct Common {
    pub timers: Rc<RefCell<Timers>>,
    pub stopped: Cell<bool>,
    pub socket_polls: Cell<u64>,
}

thread_local! {
    static CURRENT: RefCell<Option<Driver>> = const { RefCell::new(None) };
    /// Polls of counted tasks on this thread (see `Counted`).
    static POLLS: Cell<u64> = const { Cell::new(0) };
}

/// The executor thread's timer slack. Linux lets a sleeping thread's
/// timer fire up to 50 µs late by default, to batch wake-ups; a pacer
/// waiting for its next arrival would carry that as scheduler lag.
const TIMER_SLACK_NS: libc::c_ulong = 1_000;

impl Driver {
    fn common(&self) -> &Common {
        match self {
            Driver::Epoll(r) => r.common(),
            Driver::Uring(r) => r.common(),
        }
    }

    /// Lets the driver return at its next turn, so the executor can see
    /// its main future finished.
    pub fn stop(&self) {
        self.common().stopped.set(true);
    }

    /// How many driver turns have polled the sockets so far.
    pub fn socket_polls(&self) -> u64 {
        self.common().socket_polls.get()
    }

    /// The executor's sleeps.
    pub fn timers(&self) -> Rc<RefCell<Timers>> {
        self.common().timers.clone()
    }
}

/// This thread's driver, if `install` ran on it.
pub fn current() -> Option<Driver> {
    CURRENT.try_with(|r| r.borrow().clone()).ok().flatten()
}

/// Makes `driver` this executor's and spawns its turn loop. Must run
/// inside the executor, before any socket or sleep is used.
pub fn install(driver: Driver) {
    // SAFETY: prctl with PR_SET_TIMERSLACK takes a plain number.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, TIMER_SLACK_NS);
    }
    CURRENT.with(|r| *r.borrow_mut() = Some(driver.clone()));
    match driver {
        Driver::Epoll(r) => glommio::spawn_local(drive(r)).detach(),
        Driver::Uring(r) => glommio::spawn_local(drive(r)).detach(),
    };
}

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

/// The turn loop: each turn hands socket progress and due timers to their
/// tasks, then yields; blocks only when the executor has nothing else to
/// run.
///
/// After a turn that blocked, the next turn only looks at the timers: the
/// tasks that turn woke have run by then, and their sockets' answers are
/// rarely back yet, so a poll would nearly always be an empty system call.
/// If nothing else ran meanwhile (nothing the woken tasks spawned or
/// woke), the turn after blocks; otherwise it polls without waiting, as
/// every busy turn does. Counted with `perf` at 20,000 arrivals/s on epoll
/// this saves about one `epoll_pwait2` per wake-up; on io_uring the
/// operations those tasks queued are submitted by that next poll.
async fn drive<P: Poller>(p: Rc<P>) {
    let common = p.common();
    let mut ready: Vec<Waker> = Vec::with_capacity(2 * limits::REACTOR_EVENTS_PER_TURN);
    let mut sleepers: Vec<Waker> = Vec::new();
    // Start as if another task had just run: the first turn only looks.
    let mut seen = polls().wrapping_sub(1);
    let mut blocked = false;
    while !common.stopped.get() {
        let ran = polls() != seen;
        if ran && blocked {
            // The woken tasks have run; skip the poll this turn.
            blocked = false;
        } else {
            let timeout = if ran {
                Duration::ZERO
            } else {
                // Nothing ran since our last turn, so nothing else is
                // queued: wait for a socket or the next timer (a wait
                // that finds progress ready returns at once).
                match common.timers.borrow_mut().next() {
                    Some(due) => due
                        .saturating_duration_since(Instant::now())
                        .min(limits::REACTOR_IDLE_MAX),
                    None => limits::REACTOR_IDLE_MAX,
                }
            };
            // A full batch may have left more waiting: poll again next
            // turn rather than skip.
            let full = p.poll(timeout, &mut ready);
            common
                .socket_polls
                .set(common.socket_polls.get().wrapping_add(1));
            blocked = !ran && !full;
        }
        // Due sleeps are woken first, so they run ahead of the sockets'
        // tasks in glommio's queue: the pacer sends the arrivals that are
        // due before this turn's answers are parsed. Wakers are called
        // after the driver's tables are released, so nothing a wake-up
        // might run can find them borrowed.
        common
            .timers
            .borrow_mut()
            .fire(Instant::now(), &mut sleepers);
        sleepers.drain(..).for_each(Waker::wake);
        ready.drain(..).for_each(Waker::wake);
        seen = polls();
        yield_now().await;
    }
}

/// Returns Pending once, asking to be polled again: the task goes to the
/// back of the executor's queue.
pub fn yield_now() -> impl Future<Output = ()> {
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

/// The error for a socket used off an `rt` executor.
pub fn no_driver() -> std::io::Error {
    std::io::Error::other("no reactor on this thread (not an rt executor)")
}
