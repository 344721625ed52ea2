//! The runtime seam: the only module that names glommio.
//!
//! Everything else uses these wrappers: pinned executors, a TCP stream with
//! read / write-all, a listener, local task spawning, sleeping, cooperative
//! yielding and a counting semaphore. Swapping the executor or the socket
//! layer (for io_uring RECV/SEND, or a runtime that sets
//! `IORING_SETUP_COOP_TASKRUN`) means rewriting this file only.
//!
//! Executors are built with the settings the research notes justify: small
//! registered I/O memory (no memlock trouble as non-root), a deep ring, and
//! a short preemption timer so no task can hold a shard for long. glommio
//! runs the tasks; sockets, their readiness and sleeps are this module's
//! own (see `reactor`): one epoll set and one timer heap per executor,
//! driven by a task that also owns the executor's idle time.

use crate::limits;
use glommio::{LocalExecutorBuilder, Placement};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::time::Duration;

pub use glommio::sync::Semaphore;
pub use glommio::Task;

/// A handle to a running executor thread.
pub struct ExecutorHandle<T: Send + 'static>(glommio::ExecutorJoinHandle<T>);

impl<T: Send + 'static> ExecutorHandle<T> {
    /// Waits for the executor's main future; an error means its thread
    /// panicked.
    pub fn join(self) -> Result<T, String> {
        self.0.join().map_err(|e| e.to_string())
    }
}

/// Starts an executor on its own thread, pinned to `cpu` when given, and
/// returns once it runs: an executor that cannot start (no io_uring, as
/// with `kernel.io_uring_disabled`, or no reactor) is an error here, with
/// glommio's reason, rather than a thread that is gone by the first use.
///
/// Its threads are named with the kicker's prefix (see `kicker`).
pub fn start_executor<G, F, T>(
    name: &str,
    cpu: Option<usize>,
    make_future: G,
) -> io::Result<ExecutorHandle<T>>
where
    G: FnOnce() -> F + Send + 'static,
    F: Future<Output = T> + 'static,
    T: Send + 'static,
{
    let placement = match cpu {
        Some(cpu) => Placement::Fixed(cpu),
        None => Placement::Unbound,
    };
    kicker::start();
    let (running, started) = std::sync::mpsc::sync_channel::<()>(1);
    let handle = LocalExecutorBuilder::new(placement)
        .name(&format!("{}{name}", kicker::THREAD_PREFIX))
        .io_memory(limits::IO_MEMORY_BYTES)
        .ring_depth(limits::RING_DEPTH)
        .preempt_timer(limits::PREEMPT_TIMER)
        .spawn(move || async move {
            let reactor = match reactor::install() {
                Ok(reactor) => reactor,
                Err(e) => panic!("cannot start the executor's reactor: {e}"),
            };
            let future = make_future();
            let _ = running.send(());
            let output = reactor::Counted(future).await;
            reactor.stop();
            output
        })
        .map_err(|e| io::Error::other(format!("cannot start executor {name}: {e}")))?;
    // The sender is dropped unsent only if the thread ended first.
    if started.recv().is_err() {
        let why = match handle.join() {
            Err(e) => e.to_string(),
            Ok(_) => "it stopped before it ran".to_string(),
        };
        return Err(io::Error::other(format!(
            "cannot start executor {name}: {why}"
        )));
    }
    Ok(ExecutorHandle(handle))
}

/// Bounds how long an executor can stay parked after a lost wake-up.
///
/// Measured here: under CPU contention, roughly one test run in fifteen left
/// an executor asleep in `io_uring_enter` although its next timer had
/// expired (a 10 ms poll timer and a 100 ms watchdog tick both pending).
/// Attaching a debugger or sending the thread a signal, both of which
/// interrupt the syscall, released it every time. glommio parks by arming
/// the timer on its latency ring and sleeping on the main ring with a poll
/// linked to the latency ring's fd; somewhere in that chain the wake-up is
/// occasionally lost, and we do not patch the runtime.
///
/// So one plain thread per process sends every executor thread a no-op
/// real-time signal every `KICK_INTERVAL`. The handler is installed without
/// `SA_RESTART`, so a parked `io_uring_enter` returns `EINTR`, which glommio
/// treats as a spurious wake-up: it re-checks its timers and goes back to
/// sleep. A lost wake-up therefore costs at most 20 ms instead of hanging
/// the run. Cost: 50 signals per second per executor, a few microseconds
/// each (< 0.1 % of a core).
///
/// Since `reactor` keeps glommio's queue busy, glommio parks only before
/// the reactor starts and after it stops; the kicker stays as a backstop,
/// and its signal costs the driver's `epoll_pwait2` one empty turn.
mod kicker {
    use std::sync::OnceLock;
    use std::time::Duration;

    /// How often parked executors are nudged.
    pub const KICK_INTERVAL: Duration = Duration::from_millis(20);

    /// Every executor thread's name starts with this (glommio's blocking
    /// pool threads inherit it; a no-op signal to them is harmless).
    pub const THREAD_PREFIX: &str = "lt-";

    extern "C" fn on_kick(_: libc::c_int) {}

    /// Installs the handler and starts the kicker thread, once.
    pub fn start() {
        static STARTED: OnceLock<()> = OnceLock::new();
        STARTED.get_or_init(|| {
            let signal = libc::SIGRTMIN() + 4;
            // SAFETY: installs an async-signal-safe no-op handler; the
            // struct is fully initialised before use.
            unsafe {
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = on_kick as *const () as libc::sighandler_t;
                action.sa_flags = 0; // no SA_RESTART: interrupt io_uring_enter
                libc::sigemptyset(&mut action.sa_mask);
                libc::sigaction(signal, &action, std::ptr::null_mut());
            }
            std::thread::Builder::new()
                .name("loadtest-kicker".into())
                .spawn(move || kick_forever(signal))
                .expect("spawning the kicker thread");
        });
    }

    /// How many kicks reuse one listing of the executor threads.
    pub const KICKS_PER_SCAN: u32 = 10;

    /// Every `KICK_INTERVAL`, signals each thread of this process whose
    /// name has `THREAD_PREFIX`, found by listing `/proc/self/task`.
    ///
    /// Threads are found by listing the task directory rather than by a
    /// registry: a first version kept a registry of thread ids, and in a
    /// loaded test run one shard was missing from it (never kicked, parked
    /// for good) for a reason not found; the task list cannot be wrong. The
    /// listing is redone every `KICKS_PER_SCAN` kicks (200 ms), and at once
    /// after a signal finds a thread gone.
    ///
    /// This thread runs under `SCHED_IDLE`. It usually shares a CPU with a
    /// shard (`taskset` pins the whole process, and nothing stops the
    /// scheduler from putting it there otherwise), and measured at
    /// 20,000 arrivals/s a listing took ~110 µs on average and up to 2 ms:
    /// at normal priority it preempted the shard for that long every 20 ms,
    /// and such a pause was enough to start a burst of scheduler lag. Under
    /// `SCHED_IDLE` it never preempts a shard that has work; it runs when
    /// the CPU is otherwise idle, which is exactly when a parked executor
    /// may need it.
    fn kick_forever(signal: libc::c_int) {
        // SAFETY: sets this thread's own policy; the parameter struct is
        // fully initialised. Failure leaves the default policy, which
        // works, only less politely.
        unsafe {
            let param = libc::sched_param { sched_priority: 0 };
            libc::sched_setscheduler(0, libc::SCHED_IDLE, &param);
        }
        // SAFETY: getpid has no preconditions.
        let process = unsafe { libc::getpid() };
        let mut targets: Vec<libc::pid_t> = Vec::new();
        let mut kicks_left = 0u32;
        loop {
            std::thread::sleep(KICK_INTERVAL);
            if kicks_left == 0 {
                targets = executor_threads();
                kicks_left = KICKS_PER_SCAN;
            }
            kicks_left -= 1;
            for &tid in &targets {
                // SAFETY: tgkill only sends a signal; a thread that has
                // exited meanwhile yields ESRCH.
                let rc = unsafe { libc::syscall(libc::SYS_tgkill, process, tid, signal) };
                if rc != 0 {
                    kicks_left = 0;
                }
            }
        }
    }

    /// The ids of this process's threads named with `THREAD_PREFIX`.
    fn executor_threads() -> Vec<libc::pid_t> {
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
            return Vec::new();
        };
        tasks
            .flatten()
            .filter(|task| {
                std::fs::read_to_string(task.path().join("comm"))
                    .is_ok_and(|comm| comm.starts_with(THREAD_PREFIX))
            })
            .filter_map(|task| task.file_name().to_str()?.parse().ok())
            .collect()
    }
}

/// Spawns a task on the current executor.
pub fn spawn<T: 'static>(future: impl Future<Output = T> + 'static) -> Task<T> {
    glommio::spawn_local(reactor::Counted(future))
}

/// Sleeps on the current executor.
pub async fn sleep(duration: Duration) {
    sleep_until(std::time::Instant::now() + duration).await
}

/// Sleeps on the current executor until `deadline` (returns at once when
/// it has passed).
pub async fn sleep_until(deadline: std::time::Instant) {
    match reactor::current() {
        Some(r) => reactor::Sleep::new(r, deadline).await,
        None => {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            glommio::timer::sleep(left).await
        }
    }
}

/// Yields if the executor wants the CPU back (cheap when it does not).
pub async fn yield_if_needed() {
    glommio::yield_if_needed().await
}

/// Lets the answers that are already in this executor's sockets be read
/// before the caller goes on. It yields once, so the tasks queued ahead of
/// the caller run (for the open-loop pacer, the arrivals it has just
/// spawned, which send their requests); then until the driver has polled
/// the sockets again; then once more, so the tasks that poll woke (queued
/// behind the caller) run first. It never waits for a peer: a poll that finds
/// nothing ends it just the same. Costs a few queue passes, each with a
/// zero-timeout `epoll_pwait2` while other tasks are queued.
pub async fn after_socket_poll() {
    let Some(r) = reactor::current() else {
        return reactor::yield_now().await;
    };
    reactor::yield_now().await;
    let seen = r.socket_polls();
    // The driver polls at least every other turn while tasks are running
    // (it skips one poll right after a turn that blocked), and it turns
    // once per pass of the queue; the bound only guards against a driver
    // that has stopped.
    for _ in 0..AFTER_SOCKET_POLL_PASSES_MAX {
        reactor::yield_now().await;
        if r.socket_polls() != seen {
            break;
        }
    }
    reactor::yield_now().await;
}

/// Queue passes `after_socket_poll` waits at most for the driver's poll.
const AFTER_SOCKET_POLL_PASSES_MAX: u32 = 4;

/// Whether the running task has held the executor past its preemption
/// timer (`limits::PREEMPT_TIMER`), so `yield_if_needed` would yield.
pub fn need_yield() -> bool {
    glommio::executor().need_preempt()
}

/// A connected TCP stream: a non-blocking socket whose readiness comes from
/// the executor's epoll set (see `reactor`).
#[derive(Debug)]
pub struct TcpStream {
    fd: OwnedFd,
    /// Its slot in this executor's socket table.
    slot: usize,
}

impl TcpStream {
    /// Connects with a timeout and sets TCP_NODELAY. The address must be
    /// resolved already: nothing here may block the executor on DNS.
    pub async fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
        let deadline = std::time::Instant::now() + timeout;
        let fd = stream_socket(addr)?;
        set_nodelay(fd.as_raw_fd())?;
        let (storage, len) = sockaddr_of(addr);
        // SAFETY: `storage` holds a valid sockaddr of `len` bytes.
        let rc = unsafe {
            libc::connect(
                fd.as_raw_fd(),
                (&storage as *const libc::sockaddr_storage).cast(),
                len,
            )
        };
        if rc == 0 {
            return TcpStream::adopt(fd);
        }
        let error = io::Error::last_os_error();
        // EINTR leaves the connect running, as EINPROGRESS does.
        if !matches!(error.raw_os_error(), Some(libc::EINPROGRESS | libc::EINTR)) {
            return Err(error);
        }
        // Registered for reads only: on loopback the handshake has usually
        // completed inside connect(2), and then arming writes (and disarming
        // them after) would be two `epoll_ctl` calls for nothing. A wait
        // below arms them only when the connect is really in progress.
        let stream = TcpStream::adopt(fd)?;
        let (raw, slot) = (stream.fd.as_raw_fd(), stream.slot);
        let mut state = connect_state(raw);
        if state == ConnectState::InProgress {
            let reactor = reactor::current().ok_or_else(reactor::no_reactor)?;
            let mut expiry = std::pin::pin!(reactor::Sleep::new(reactor, deadline));
            state = std::future::poll_fn(|cx| loop {
                let state = connect_state(raw);
                if state != ConnectState::InProgress {
                    return std::task::Poll::Ready(Ok(state));
                }
                if expiry.as_mut().poll(cx).is_ready() {
                    return std::task::Poll::Ready(Err(io::Error::from(io::ErrorKind::TimedOut)));
                }
                if !reactor::wait(raw, slot, reactor::Direction::Write, cx) {
                    return std::task::Poll::Pending;
                }
            })
            .await?;
            reactor::disarm_out(raw, slot)?;
        }
        if state == ConnectState::Connected {
            return Ok(stream);
        }
        let mut error: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: SO_ERROR into a local int of the size given.
        let rc = unsafe {
            libc::getsockopt(
                raw,
                libc::SOL_SOCKET,
                libc::SO_ERROR,
                (&mut error as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Err(if error != 0 {
            io::Error::from_raw_os_error(error)
        } else {
            // A hang-up with no error recorded: the peer reset it at once.
            io::Error::from(io::ErrorKind::ConnectionReset)
        })
    }

    /// Puts a non-blocking socket into this executor's epoll set.
    fn adopt(fd: OwnedFd) -> io::Result<TcpStream> {
        let slot = reactor::register(&fd)?;
        Ok(TcpStream { fd, slot })
    }

    /// Waits until the socket has reported something to read (data, the
    /// peer's close, or an error) since the last read that found nothing.
    ///
    /// For a caller that has just sent a request: its answer cannot be
    /// there yet, so a `read` right away would only cost a `recv` that
    /// finds nothing. Waiting first misses nothing: the socket is
    /// edge-triggered, and an edge reported while nobody waited is kept
    /// for the next wait. Ready at once when no reactor runs (the caller's
    /// `read` then blocks the usual way).
    pub fn readable(&mut self) -> Readable<'_> {
        Readable {
            stream: self,
            waiting: false,
        }
    }

    /// Reads some bytes; 0 means the peer closed.
    pub async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let (fd, slot) = (self.fd.as_raw_fd(), self.slot);
        std::future::poll_fn(|cx| loop {
            // SAFETY: receives into a live, writable slice of its length.
            let n =
                unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
            if n >= 0 {
                return std::task::Poll::Ready(Ok(n as usize));
            }
            if let Some(done) = after_failure(fd, slot, reactor::Direction::Read, cx) {
                return done;
            }
        })
        .await
    }

    /// Writes all of `buf`.
    pub async fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        let (fd, slot) = (self.fd.as_raw_fd(), self.slot);
        let mut written = 0;
        std::future::poll_fn(|cx| loop {
            if written == buf.len() {
                return std::task::Poll::Ready(Ok(()));
            }
            let rest = &buf[written..];
            // SAFETY: sends from a live slice of its length; MSG_NOSIGNAL
            // turns a closed peer into EPIPE instead of a signal.
            let n = unsafe {
                libc::send(
                    fd,
                    rest.as_ptr().cast(),
                    rest.len(),
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                )
            };
            if n >= 0 {
                written += n as usize;
                continue;
            }
            if let Some(done) = after_failure(fd, slot, reactor::Direction::Write, cx) {
                return done;
            }
        })
        .await
    }

    /// The socket's file descriptor (for the timeout watchdog's shutdown).
    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// After a non-blocking call on a socket failed: `None` to make the call
/// again (interrupted, or an event came in since), else what the poll
/// returns (the error, or `Pending` with the task's waker stored until the
/// socket is ready).
fn after_failure<T>(
    fd: RawFd,
    slot: usize,
    direction: reactor::Direction,
    cx: &mut std::task::Context<'_>,
) -> Option<std::task::Poll<io::Result<T>>> {
    let error = io::Error::last_os_error();
    match error.kind() {
        io::ErrorKind::Interrupted => None,
        io::ErrorKind::WouldBlock if reactor::wait(fd, slot, direction, cx) => None,
        io::ErrorKind::WouldBlock => Some(std::task::Poll::Pending),
        _ => Some(std::task::Poll::Ready(Err(error))),
    }
}

impl Drop for TcpStream {
    fn drop(&mut self) {
        reactor::deregister(self.slot);
    }
}

/// The future of [`TcpStream::readable`].
pub struct Readable<'a> {
    stream: &'a TcpStream,
    /// Its waker is (or was, until an event took it) in the socket's slot.
    waiting: bool,
}

impl Future for Readable<'_> {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        // An event wakes the waiting task without setting the flag, so the
        // poll after a wait is the answer. A spurious wake-up only costs
        // the caller's `read` one `recv` that finds nothing.
        if std::mem::take(&mut self.waiting) {
            return std::task::Poll::Ready(());
        }
        let (fd, slot) = (self.stream.fd.as_raw_fd(), self.stream.slot);
        if reactor::wait(fd, slot, reactor::Direction::Read, cx) {
            return std::task::Poll::Ready(());
        }
        self.waiting = true;
        std::task::Poll::Pending
    }
}

impl Drop for Readable<'_> {
    fn drop(&mut self) {
        // Dropped while waiting: leave no waker behind that could swallow
        // the next edge, and keep an edge that was handed to us unused.
        if self.waiting {
            reactor::abandon_read_wait(self.stream.slot);
        }
    }
}

/// The shard's reactor: socket readiness from one epoll set, and timers,
/// driven by one task that owns the executor's idle time.
///
/// glommio learns that a socket is readable by arming an io_uring poll
/// after every read that finds no data, and every turn of its scheduler
/// loop re-arms its preemption timers and, before sleeping, issues a
/// `membarrier`. Measured at 20,000 arrivals/s that was 5.6
/// `io_uring_enter` calls and 0.6 `membarrier` calls per request, about a
/// quarter of the shard's CPU.
///
/// Here every socket is registered once, edge-triggered, in an epoll set
/// owned by the executor, sleeps are kept in a local timer heap, and the
/// driver task stays runnable for the executor's whole life, so glommio's
/// task queue never empties and glommio never parks. Each turn the driver
/// collects up to 64 ready sockets with `epoll_pwait2`, wakes the tasks of
/// due timers and then those of the sockets (so a due pacer runs first),
/// and yields, so the tasks it woke run in the same pass. If other tasks ran
/// since its previous turn, the wait has a zero timeout (except right after
/// a blocking turn, when the turn skips epoll; see `drive`). If none did, the
/// executor has nothing else to run, and the wait blocks until a socket is
/// ready or the next timer is due: the executor thread then sleeps exactly
/// as the plain epoll reference in `benches/open_loop_ref.rs` does.
///
/// "No other task ran" is known from a counter that every task spawned
/// through `rt` bumps on each poll (`Counted`). A task can only become
/// runnable through a socket or a timer (both the driver's), or through a
/// wake-up from another task of the executor (which bumped the counter when
/// it ran); glommio's own I/O and timers are not used once the reactor is
/// installed, so nothing else can wake a task while the driver blocks.
///
/// Everything runs on the executor's one thread: the driver and the tasks
/// reading and writing never interleave inside a poll, so a task that saw
/// EAGAIN and stored its waker cannot miss an edge; the edge is reported
/// to the driver after that, and the driver wakes the task.
mod reactor {
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
        let n = unsafe {
            libc::epoll_pwait2(epoll.as_raw_fd(), &mut event, 1, &zero, std::ptr::null())
        };
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

    /// Most ready sockets one driver turn hands out. The tasks woken in a
    /// turn all run before the driver's next turn, which is when the next
    /// due timer (the open-loop pacer's) can fire; a burst of a few hundred
    /// answers, each parsed and recorded by its task, would hold the pacer
    /// back for milliseconds. Events beyond this stay on epoll's ready list
    /// for the next turn.
    const EVENTS_PER_TURN: usize = 64;

    /// The longest the driver blocks without a timer due. Nothing should
    /// need it; it bounds the cost of a wake-up this design failed to
    /// foresee.
    const IDLE_MAX: Duration = Duration::from_millis(10);

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
                if bits & (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) != 0
                {
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
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; EVENTS_PER_TURN];
        let mut ready: Vec<Waker> = Vec::with_capacity(2 * EVENTS_PER_TURN);
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
                        Some(due) => due.saturating_duration_since(Instant::now()).min(IDLE_MAX),
                        None => IDLE_MAX,
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
}

/// A listening socket owned by one executor.
pub struct TcpListener {
    fd: OwnedFd,
    /// Its slot in the executor's socket table, from the first accept.
    slot: std::cell::Cell<Option<usize>>,
}

impl TcpListener {
    /// Takes ownership of a bound, listening, non-blocking socket (see
    /// `bind_reuseport`). Must be used on the executor that will accept on
    /// it, and the descriptor must have no duplicates: its close is what
    /// takes it out of the executor's epoll set (see `reactor::deregister`).
    pub fn from_owned(fd: OwnedFd) -> TcpListener {
        TcpListener {
            fd,
            slot: std::cell::Cell::new(None),
        }
    }

    /// Accepts one connection and sets TCP_NODELAY on it.
    pub async fn accept(&self) -> io::Result<TcpStream> {
        let slot = match self.slot.get() {
            Some(slot) => slot,
            None => {
                let slot = reactor::register(&self.fd)?;
                self.slot.set(Some(slot));
                slot
            }
        };
        let listener = self.fd.as_raw_fd();
        let fd = std::future::poll_fn(|cx| loop {
            // SAFETY: accept4 on our listening socket, without the peer
            // address; the result is checked before use.
            let fd = unsafe {
                libc::accept4(
                    listener,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                )
            };
            if fd >= 0 {
                // SAFETY: accept4 returned a new descriptor nobody else owns.
                return std::task::Poll::Ready(Ok(unsafe { OwnedFd::from_raw_fd(fd) }));
            }
            // A connection that went away before we took it: next one.
            if io::Error::last_os_error().raw_os_error() == Some(libc::ECONNABORTED) {
                continue;
            }
            if let Some(done) = after_failure(listener, slot, reactor::Direction::Read, cx) {
                return done;
            }
        })
        .await?;
        set_nodelay(fd.as_raw_fd())?;
        TcpStream::adopt(fd)
    }
}

impl Drop for TcpListener {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.get() {
            reactor::deregister(slot);
        }
    }
}

/// Where a non-blocking connect stands.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum ConnectState {
    InProgress,
    /// Writable with no error or hang-up: the handshake completed.
    Connected,
    /// An error or hang-up: `SO_ERROR` says why.
    Failed,
}

/// Asks a zero-timeout `poll(2)` where a non-blocking connect stands.
fn connect_state(fd: RawFd) -> ConnectState {
    let mut pollfd = libc::pollfd {
        fd,
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: one valid pollfd, zero timeout.
    let n = unsafe { libc::poll(&mut pollfd, 1, 0) };
    if n <= 0 {
        return ConnectState::InProgress;
    }
    if pollfd.revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0 {
        ConnectState::Failed
    } else if pollfd.revents & libc::POLLOUT != 0 {
        ConnectState::Connected
    } else {
        ConnectState::InProgress
    }
}

/// A new non-blocking, close-on-exec TCP socket for `addr`'s family.
fn stream_socket(addr: SocketAddr) -> io::Result<OwnedFd> {
    let domain = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain socket(2) call; the result is checked before use.
    let fd = unsafe {
        libc::socket(
            domain,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket(2) and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn set_nodelay(fd: RawFd) -> io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: `one` outlives the call and its size is passed correctly.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Binds a non-blocking TCP listener with SO_REUSEPORT and a large backlog.
///
/// Several executors can each bind one on the same address; the kernel then
/// spreads new connections across them. Port 0 picks a free port; bind the
/// others to the port `local_addr` reports.
pub fn bind_reuseport(addr: SocketAddr, backlog: i32) -> io::Result<OwnedFd> {
    let owned = stream_socket(addr)?;
    let fd = owned.as_raw_fd();
    let one: libc::c_int = 1;
    for option in [libc::SO_REUSEADDR, libc::SO_REUSEPORT] {
        // SAFETY: `one` outlives the call and its size is passed correctly.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                option,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    let (storage, len) = sockaddr_of(addr);
    // SAFETY: `storage` holds a valid sockaddr of `len` bytes.
    if unsafe { libc::bind(fd, (&storage as *const libc::sockaddr_storage).cast(), len) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: plain listen(2) on a socket we own.
    if unsafe { libc::listen(fd, backlog) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(owned)
}

/// The address a socket is bound to.
pub fn local_addr(fd: &OwnedFd) -> io::Result<SocketAddr> {
    // SAFETY: `sockaddr_storage` is plain data; all-zero is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `storage` and `len` are valid for writes of `len` bytes.
    let rc = unsafe {
        libc::getsockname(
            fd.as_raw_fd(),
            (&mut storage as *mut libc::sockaddr_storage).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    match i32::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the kernel wrote a sockaddr_in for an AF_INET socket.
            let sin: libc::sockaddr_in =
                unsafe { *(&storage as *const libc::sockaddr_storage).cast() };
            let ip = std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Ok(SocketAddr::from((ip, u16::from_be(sin.sin_port))))
        }
        libc::AF_INET6 => {
            // SAFETY: the kernel wrote a sockaddr_in6 for an AF_INET6 socket.
            let sin6: libc::sockaddr_in6 =
                unsafe { *(&storage as *const libc::sockaddr_storage).cast() };
            let ip = std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Ok(SocketAddr::from((ip, u16::from_be(sin6.sin6_port))))
        }
        _ => Err(io::Error::other("unknown address family")),
    }
}

fn sockaddr_of(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: `sockaddr_storage` is plain data; all-zero is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(v4) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*v4.ip()).to_be(),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(v6) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: v6.port().to_be(),
                sin6_flowinfo: v6.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: v6.ip().octets(),
                },
                sin6_scope_id: v6.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

/// Shuts a socket down in both directions, waking any pending read with EOF.
/// Used by the timeout watchdog and to stop listeners; errors (an fd already
/// closed) are harmless there and ignored.
pub fn shutdown_fd(fd: RawFd) {
    // SAFETY: shutdown(2) on an fd number has no memory effects; a stale or
    // invalid fd only yields an error, which we ignore.
    unsafe {
        libc::shutdown(fd, libc::SHUT_RDWR);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::FutureExt;
    use std::cell::{Cell, RefCell};
    use std::rc::Rc;

    /// Runs `body` on a fresh executor with a connected pair of streams
    /// (client, server), failing instead of hanging after `LIMIT`.
    fn with_pair<F, Fut>(body: F)
    where
        F: FnOnce(TcpStream, TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        const LIMIT: Duration = Duration::from_secs(20);
        let handle = start_executor("rt-test", None, move || async move {
            let listen = bind_reuseport("127.0.0.1:0".parse().unwrap(), 16).unwrap();
            let addr = local_addr(&listen).unwrap();
            let listener = TcpListener::from_owned(listen);
            let accepting = spawn(async move { listener.accept().await.unwrap() });
            let client = TcpStream::connect(addr, Duration::from_secs(5))
                .await
                .unwrap();
            let server = accepting.await;
            let finished = async {
                body(client, server).await;
                true
            };
            finished
                .or(async {
                    sleep(LIMIT).await;
                    false
                })
                .await
        })
        .unwrap();
        assert!(handle.join().unwrap(), "the exchange hung for {LIMIT:?}");
    }

    /// The slots this executor's epoll set holds, read from the kernel's
    /// own listing of it (`/proc/self/fdinfo`, one `tfd:` line an entry,
    /// its `data:` in hex).
    fn slots_in_epoll_set() -> Vec<usize> {
        let epoll = reactor::current().unwrap().epoll_fd();
        let listing = std::fs::read_to_string(format!("/proc/self/fdinfo/{epoll}")).unwrap();
        listing
            .lines()
            .filter(|line| line.starts_with("tfd:"))
            .map(|line| {
                let data = line.split_whitespace().skip_while(|w| *w != "data:").nth(1);
                usize::from_str_radix(data.unwrap(), 16).unwrap()
            })
            .collect()
    }

    #[test]
    fn closing_a_stream_takes_it_out_of_the_epoll_set() {
        // `deregister` leaves the removal to the close (no EPOLL_CTL_DEL);
        // an entry left behind would report a dead socket's events under a
        // slot that a new connection reuses.
        with_pair(|client, server| async move {
            let (gone, kept) = (client.slot, server.slot);
            let before = slots_in_epoll_set();
            assert!(
                before.contains(&gone) && before.contains(&kept),
                "{before:?}"
            );
            drop(client);
            let after = slots_in_epoll_set();
            assert!(
                !after.contains(&gone),
                "slot {gone} still watched: {after:?}"
            );
            assert!(after.contains(&kept), "{after:?}");
            drop(server);
            assert!(!slots_in_epoll_set().contains(&kept));
        });
    }

    #[test]
    fn a_write_larger_than_the_socket_buffers_waits_for_the_reader() {
        // 32 MiB cannot fit in loopback's send and receive buffers, so the
        // writer meets EAGAIN and must be woken when the reader drains.
        const SIZE: usize = 32 << 20;
        with_pair(|mut client, mut server| async move {
            let data: Vec<u8> = (0..SIZE).map(|i| (i % 251) as u8).collect();
            let writer = spawn(async move {
                client.write_all(&data).await.unwrap();
                client
            });
            let mut got = Vec::with_capacity(SIZE);
            let mut buf = vec![0u8; 64 << 10];
            while got.len() < SIZE {
                let n = server.read(&mut buf).await.unwrap();
                assert!(n > 0, "early EOF after {} bytes", got.len());
                got.extend_from_slice(&buf[..n]);
            }
            drop(writer.await);
            assert!(got.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
        });
    }

    #[test]
    fn a_waiting_reader_wakes_on_data_then_on_shutdown() {
        with_pair(|mut client, mut server| async move {
            let fd = client.raw_fd();
            let reader = spawn(async move {
                let mut buf = [0u8; 16];
                let n = client.read(&mut buf).await.unwrap();
                assert_eq!(&buf[..n], b"ping");
                // The watchdog's way of ending a request: shutdown(2) from
                // elsewhere must wake this read with EOF.
                client.read(&mut buf).await.unwrap_or(0)
            });
            server.write_all(b"ping").await.unwrap();
            // Most likely the reader is parked on its second read by now;
            // if not, the read finds EOF at once and the assertion holds
            // all the same (the pause is for coverage, not correctness).
            sleep(Duration::from_millis(20)).await;
            shutdown_fd(fd);
            assert_eq!(reader.await, 0);
        });
    }

    #[test]
    fn readable_waits_for_data_and_keeps_an_edge_nobody_waited_for() {
        with_pair(|mut client, mut server| async move {
            let ready = Rc::new(Cell::new(false));
            let seen = ready.clone();
            let waiter = spawn(async move {
                client.readable().await;
                seen.set(true);
                let mut buf = [0u8; 16];
                let n = client.read(&mut buf).await.unwrap();
                assert_eq!(&buf[..n], b"pong");
                client
            });
            // Nothing was sent: however many driver turns pass, the wait
            // must still be pending.
            sleep(Duration::from_millis(5)).await;
            assert!(!ready.get(), "readable() returned before any data");
            server.write_all(b"pong").await.unwrap();
            let mut client = waiter.await;
            assert!(ready.get());
            // Data that arrives while nobody waits: its edge is reported to
            // the driver first and must be kept for the next wait (or seen
            // by it directly); either way the wait ends and the data is read.
            server.write_all(b"pong").await.unwrap();
            sleep(Duration::from_millis(5)).await;
            client.readable().await;
            let mut buf = [0u8; 16];
            let n = client.read(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], b"pong");
        });
    }

    #[test]
    fn an_abandoned_readable_wait_keeps_the_edge_it_was_handed() {
        with_pair(|mut client, mut server| async move {
            let mut wait = Box::pin(client.readable());
            assert!(futures_lite::future::poll_once(wait.as_mut())
                .await
                .is_none());
            server.write_all(b"late").await.unwrap();
            // Driver turns pass: the event goes to the waker the wait left,
            // then the wait is dropped without being polled again.
            sleep(Duration::from_millis(5)).await;
            drop(wait);
            // The next wait must still see that edge. The deadline goes
            // first: `or` polls its left side first, and a wait that is
            // polled again after waiting reports ready, so the other order
            // would let the deadline's wake-up hide a lost edge.
            let saw = async {
                sleep(Duration::from_secs(2)).await;
                false
            }
            .or(async {
                client.readable().await;
                true
            })
            .await;
            assert!(saw, "the edge handed to the abandoned wait was lost");
            let mut buf = [0u8; 16];
            let n = client.read(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], b"late");
        });
    }

    /// Runs `body` on a fresh executor and returns its output.
    fn on_executor<T, F, Fut>(body: F) -> T
    where
        T: Send + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
    {
        start_executor("rt-test", None, body)
            .unwrap()
            .join()
            .unwrap()
    }

    /// Sleeps for each of `micros` at once, each checking it did not end
    /// early; returns them in the order they ended.
    async fn sleep_each(micros: &[u64]) -> Vec<u64> {
        let done = Rc::new(RefCell::new(Vec::new()));
        let start = std::time::Instant::now();
        let tasks: Vec<_> = micros
            .iter()
            .map(|&us| {
                let done = done.clone();
                spawn(async move {
                    sleep(Duration::from_micros(us)).await;
                    assert!(
                        start.elapsed() >= Duration::from_micros(us),
                        "{us} µs sleep ended early"
                    );
                    done.borrow_mut().push(us);
                })
            })
            .collect();
        for task in tasks {
            task.await;
        }
        let order = done.borrow().clone();
        order
    }

    #[test]
    fn sleeps_end_in_deadline_order_and_never_early() {
        let order = on_executor(|| async { sleep_each(&[30_000, 10_000, 20_000]).await });
        assert_eq!(order, vec![10_000, 20_000, 30_000]);
    }

    #[test]
    fn an_executor_that_cannot_start_is_an_error_with_its_reason() {
        // A failure inside the new thread before the executor runs (here
        // its set-up panics; on a host without io_uring, glommio's ring)
        // used to surface only when something joined the thread.
        let start = start_executor("rt-test", None, || -> std::future::Ready<()> {
            panic!("set-up failed")
        });
        let error = match start {
            Ok(_) => panic!("the executor was reported started"),
            Err(e) => e.to_string(),
        };
        assert!(
            error.starts_with("cannot start executor rt-test: "),
            "{error}"
        );
        assert!(error.contains("set-up failed"), "{error}");
    }

    #[test]
    fn without_epoll_pwait2_sleeps_and_sockets_still_wake_on_time() {
        // Kernels before 5.11 (and valgrind) lack `epoll_pwait2`; the
        // reactor then waits with `epoll_wait` and a timer descriptor. Sub-
        // millisecond sleeps must still end in order and never early, and
        // a reader parked in the same wait must wake on its data.
        with_pair(|mut client, mut server| async move {
            reactor::current().unwrap().use_timerfd_wait().unwrap();
            let reader = spawn(async move {
                let mut buf = [0u8; 16];
                let n = client.read(&mut buf).await.unwrap();
                buf[..n].to_vec()
            });
            assert_eq!(
                sleep_each(&[900, 300, 2500, 50]).await,
                vec![50, 300, 900, 2500]
            );
            server.write_all(b"pong").await.unwrap();
            assert_eq!(reader.await, b"pong");
            // The sleeps were ended by the timer, not by the kicker's signal.
            assert!(reactor::current().unwrap().timer_events() > 0);
        });
    }

    #[test]
    fn a_due_sleep_runs_before_the_sockets_ready_in_the_same_turn() {
        // More ready sockets than one turn hands out, and a sleep that is
        // due by the same turn: the sleeper (the open-loop pacer, in the
        // engine) must not wait for every socket's task to run first.
        let log = on_executor(|| async {
            const PAIRS: usize = 100;
            let listen = bind_reuseport("127.0.0.1:0".parse().unwrap(), 256).unwrap();
            let addr = local_addr(&listen).unwrap();
            let listener = TcpListener::from_owned(listen);
            let log = Rc::new(RefCell::new(Vec::new()));
            let mut servers = Vec::new();
            let mut readers = Vec::new();
            for _ in 0..PAIRS {
                let mut client = TcpStream::connect(addr, Duration::from_secs(5))
                    .await
                    .unwrap();
                servers.push(listener.accept().await.unwrap());
                let log = log.clone();
                // Spawned tasks run at once, so each parks on its socket now.
                readers.push(spawn(async move {
                    client.readable().await;
                    log.borrow_mut().push("socket");
                }));
            }
            let sleeper = {
                let log = log.clone();
                spawn(async move {
                    sleep(Duration::from_millis(1)).await;
                    log.borrow_mut().push("sleep");
                })
            };
            for server in &mut servers {
                server.write_all(b"x").await.unwrap();
            }
            // Hold the thread past the sleep's deadline: the driver's next
            // turn finds it due and every socket readable.
            std::thread::sleep(Duration::from_millis(5));
            sleeper.await;
            for reader in readers {
                reader.await;
            }
            let log = log.borrow().clone();
            log
        });
        assert_eq!(log.len(), 101);
        assert_eq!(log[0], "sleep", "the due sleep ran after {:?}", &log[..3]);
    }

    #[test]
    fn a_refused_connect_fails_at_once_with_its_reason() {
        let error = on_executor(|| async {
            // Bind a port, then close it: nothing listens there now.
            let fd = bind_reuseport("127.0.0.1:0".parse().unwrap(), 1).unwrap();
            let addr = local_addr(&fd).unwrap();
            drop(fd);
            TcpStream::connect(addr, Duration::from_secs(10))
                .await
                .unwrap_err()
        });
        assert_eq!(error.raw_os_error(), Some(libc::ECONNREFUSED), "{error}");
    }

    #[test]
    fn a_connect_that_gets_no_answer_times_out() {
        let (error, waited) = on_executor(|| async {
            // A listener that never accepts drops SYNs once its accept
            // queue is full, so a further connect gets no answer at all.
            let listen = bind_reuseport("127.0.0.1:0".parse().unwrap(), 1).unwrap();
            let addr = local_addr(&listen).unwrap();
            let mut held = Vec::new();
            let start = std::time::Instant::now();
            loop {
                match TcpStream::connect(addr, Duration::from_millis(300)).await {
                    Ok(stream) => held.push(stream),
                    Err(error) => return (error, start.elapsed()),
                }
                assert!(held.len() < 64, "the accept queue never filled");
            }
        });
        // Our own timeout, not the kernel's (ETIMEDOUT after its SYN
        // retries, about two minutes later).
        assert_eq!(error.kind(), io::ErrorKind::TimedOut, "{error}");
        assert_eq!(error.raw_os_error(), None, "{error}");
        assert!(
            waited >= Duration::from_millis(300),
            "gave up after {waited:?}"
        );
    }
}
