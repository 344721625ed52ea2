//! The shard's io_uring reactor: one ring per executor, its sockets' I/O
//! submitted and reaped on it.
//!
//! Tasks queue operations (a send, a connect, a multishot receive or
//! accept, a cancel, a close) as submission entries; nothing reaches the
//! kernel until the driver's next turn, whose one `io_uring_enter` both
//! submits everything queued since and reaps the completions, waiting for
//! the next one (or the next timer) only when the executor has nothing else
//! to run (`driver::drive`). Receives are multishot with buffers from the
//! shard's provided-buffer ring (`bufs`): armed once per connection, they
//! hand over every arriving segment without another submission, and a
//! connection that waits for its answer holds no buffer.
//!
//! The ring is set up with `SINGLE_ISSUER | DEFER_TASKRUN` (Linux 6.1+):
//! completions are produced only inside this thread's `io_uring_enter`,
//! never by an interrupt on another CPU. `TASKRUN_FLAG` tells us, without a
//! system call, whether the kernel holds completions for us; a turn with
//! nothing to submit and nothing pending makes no system call at all.
//! Kernels from 6.0 without `DEFER_TASKRUN` get `COOP_TASKRUN |
//! TASKRUN_FLAG`; older ones, or a host that refuses io_uring, run the
//! epoll reactor (`select`).
//!
//! Each operation's `user_data` names the socket's slot, the slot's
//! generation and the operation, so a completion that arrives after its
//! socket was closed (and the slot reused) is recognised and only its
//! buffer is given back. A closed socket's slot is freed once the last of
//! its operations has completed, because a send's bytes and a connect's
//! address live in the slot until the kernel is done with them.

mod bufs;
mod ops;
mod select;
mod socket;

pub use select::{probe, Flags};
pub use socket::{Listener, Socket};

use super::driver::{Common, Poller};
use crate::limits;
use bufs::BufRing;
use io_uring::{cqueue, squeue, types, IoUring};
use ops::Socks;
use std::cell::RefCell;
use std::io;
use std::rc::Rc;
use std::task::Waker;
use std::time::Duration;

/// How the shard's ring is sized.
#[derive(Clone, Copy, Debug)]
pub struct Sizes {
    /// Submission queue entries (the completion queue has twice as many).
    pub entries: u32,
    /// Receive buffers in the provided-buffer ring (a power of two).
    pub buffers: u16,
    /// Bytes per receive buffer.
    pub buffer_bytes: usize,
    /// Receive buffers offered to the kernel at least (`bufs`).
    pub buffers_offered: usize,
}

/// The executor's ring, its sockets and its receive buffers.
pub struct Ring {
    /// Dropped first: closing the ring ends the kernel's use of the
    /// buffers and send bytes below.
    uring: RefCell<IoUring>,
    /// Completions taken out of the queue to make room for a submission
    /// (see `push`), handed out at the next turn.
    spilled: RefCell<Vec<cqueue::Entry>>,
    /// Each turn's completions and the entries queued in answer, kept
    /// between turns so a turn allocates nothing.
    scratch: RefCell<(Vec<cqueue::Entry>, Vec<squeue::Entry>)>,
    state: RefCell<State>,
    common: Common,
}

/// What the completions change: the sockets and the receive buffers.
pub(super) struct State {
    pub socks: Socks,
    pub bufs: BufRing,
    /// Sockets whose receive ended for want of buffers, re-armed when
    /// buffers come back.
    pub starved: Vec<(u32, u32)>,
    /// Receives that ended for want of buffers, so far.
    pub starvations: u64,
}

/// Creates this executor's ring (`driver::install` starts its driver).
pub fn create(flags: Flags, sizes: Sizes) -> io::Result<Rc<Ring>> {
    let uring = flags.build(sizes.entries)?;
    let bufs = BufRing::new(
        &uring,
        sizes.buffers,
        sizes.buffer_bytes,
        sizes.buffers_offered,
    )?;
    Ok(Rc::new(Ring {
        uring: RefCell::new(uring),
        spilled: RefCell::new(Vec::new()),
        scratch: RefCell::new((Vec::new(), Vec::new())),
        state: RefCell::new(State {
            socks: Socks::default(),
            bufs,
            starved: Vec::new(),
            starvations: 0,
        }),
        common: Common::default(),
    }))
}

impl Ring {
    /// Queues one operation, submitting what is queued first when the
    /// queue is full.
    pub(super) fn push(&self, entry: squeue::Entry) {
        let mut uring = self.uring.borrow_mut();
        loop {
            // SAFETY: every entry's buffers and addresses live in the
            // socket table (or are the kernel's own provided buffers)
            // until its completion arrives; see `ops`.
            if unsafe { uring.submission().push(&entry) }.is_ok() {
                return;
            }
            // The submission queue is full: hand it over now. A kernel
            // that cannot take it (EBUSY: completions it has no room for)
            // gets the completion queue emptied into `spilled` first.
            match uring.submit() {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    let taken: Vec<cqueue::Entry> = uring.completion().collect();
                    self.spilled.borrow_mut().extend(taken);
                }
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                // Nothing sane is left to do with a ring that refuses work.
                Err(e) => panic!("io_uring_enter failed while the queue was full: {e}"),
            }
        }
    }

    /// Submits what the tasks queued and collects completions, waiting up
    /// to `timeout` for one when it is not zero. Returns whether the kernel
    /// may hold more than this call took.
    fn enter(&self, timeout: Duration, done: &mut Vec<cqueue::Entry>) -> bool {
        done.append(&mut self.spilled.borrow_mut());
        let mut uring = self.uring.borrow_mut();
        let queued = !uring.submission().is_empty();
        let pending = uring.submission().taskrun() || uring.submission().cq_overflow();
        if timeout.is_zero() {
            // A look with nothing to hand over and nothing pending needs
            // no system call: the completion queue is read in memory.
            if queued || pending {
                let _ = uring.submit();
            }
        } else if uring.completion().is_empty() && done.is_empty() {
            let spec = types::Timespec::from(timeout);
            let args = types::SubmitArgs::new().timespec(&spec);
            // ETIME (the timeout) and EINTR (the kicker's signal) only end
            // the wait; the completions are read below either way.
            let _ = uring.submitter().submit_with_args(1, &args);
        } else if queued {
            let _ = uring.submit();
        }
        let mut completion = uring.completion();
        done.extend(completion.by_ref().take(limits::REACTOR_EVENTS_PER_TURN));
        let more = !completion.is_empty();
        drop(completion);
        more || uring.submission().cq_overflow()
    }

    /// Submits whatever is still queued (the executor is ending: its
    /// sockets' closes must still happen).
    pub fn flush(&self) {
        let _ = self.uring.borrow_mut().submit();
    }
}

impl Poller for Ring {
    fn poll(&self, timeout: Duration, wake: &mut Vec<Waker>) -> bool {
        let mut scratch = self.scratch.borrow_mut();
        let (done, again) = &mut *scratch;
        self.state.borrow_mut().bufs.top_up();
        let more = self.enter(timeout, done);
        self.complete(done, wake, again);
        done.clear();
        for entry in again.drain(..) {
            self.push(entry);
        }
        more
    }

    fn common(&self) -> &Common {
        &self.common
    }
}

impl Ring {
    /// Applies completions to their sockets; returns the operations to
    /// queue in answer (receives to re-arm, sends to continue).
    fn complete(
        &self,
        done: &[cqueue::Entry],
        wake: &mut Vec<Waker>,
        again: &mut Vec<squeue::Entry>,
    ) {
        let mut state = self.state.borrow_mut();
        for entry in done {
            ops::complete(&mut state, entry, wake, again);
        }
        if !state.starved.is_empty() && state.bufs.has_room() {
            let starved = std::mem::take(&mut state.starved);
            for (slot, generation) in starved {
                if let Some(sock) = state.socks.get_mut(slot, generation) {
                    sock.starved = false;
                    if sock.open && sock.end.is_none() && !sock.recv_armed {
                        sock.recv_armed = true;
                        sock.inflight += 1;
                        again.push(ops::recv_entry(sock, slot));
                    }
                }
            }
        }
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        self.flush();
    }
}

#[cfg(test)]
mod tests;
