//! Pinned glommio executors, and the task primitives every shard uses:
//! spawning, sleeping, yielding.

use super::driver::{self, Counted, Driver};
use super::io::{self, Io};
use super::timers::Sleep;
use super::{epoll, kicker, uring};
use crate::limits;
use glommio::{LocalExecutorBuilder, Placement};
use std::future::Future;
use std::time::Duration;

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
) -> std::io::Result<ExecutorHandle<T>>
where
    G: FnOnce() -> F + Send + 'static,
    F: Future<Output = T> + 'static,
    T: Send + 'static,
{
    start_executor_on(name, cpu, Reactor::chosen(), make_future)
}

/// The reactor an executor runs, and its ring's sizes.
#[derive(Clone, Copy, Debug)]
pub enum Reactor {
    Epoll,
    Uring(uring::Flags, uring::Sizes),
}

impl Reactor {
    /// The process's choice (`io::chosen`), with the sizes in `limits`.
    pub fn chosen() -> Reactor {
        let chosen = io::chosen();
        match (chosen.io, chosen.flags) {
            (Io::Uring, Some(flags)) => Reactor::Uring(
                flags,
                uring::Sizes {
                    entries: limits::URING_ENTRIES,
                    buffers: limits::URING_BUFFERS,
                    buffer_bytes: limits::URING_BUFFER_BYTES,
                    buffers_offered: limits::URING_BUFFERS_OFFERED_MIN,
                },
            ),
            _ => Reactor::Epoll,
        }
    }

    fn install(self) -> std::io::Result<Driver> {
        let driver = match self {
            Reactor::Epoll => Driver::Epoll(epoll::create()?),
            Reactor::Uring(flags, sizes) => Driver::Uring(uring::create(flags, sizes)?),
        };
        driver::install(driver.clone());
        Ok(driver)
    }
}

/// As `start_executor`, on the reactor given.
pub fn start_executor_on<G, F, T>(
    name: &str,
    cpu: Option<usize>,
    reactor: Reactor,
    make_future: G,
) -> std::io::Result<ExecutorHandle<T>>
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
            let driver = match reactor.install() {
                Ok(driver) => driver,
                Err(e) => panic!("cannot start the executor's reactor: {e}"),
            };
            let future = make_future();
            let _ = running.send(());
            let output = Counted(future).await;
            driver.stop();
            output
        })
        .map_err(|e| std::io::Error::other(format!("cannot start executor {name}: {e}")))?;
    // The sender is dropped unsent only if the thread ended first.
    if started.recv().is_err() {
        let why = match handle.join() {
            Err(e) => e.to_string(),
            Ok(_) => "it stopped before it ran".to_string(),
        };
        return Err(std::io::Error::other(format!(
            "cannot start executor {name}: {why}"
        )));
    }
    Ok(ExecutorHandle(handle))
}

/// Spawns a task on the current executor.
pub fn spawn<T: 'static>(future: impl Future<Output = T> + 'static) -> Task<T> {
    glommio::spawn_local(Counted(future))
}

/// Sleeps on the current executor.
pub async fn sleep(duration: Duration) {
    sleep_until(std::time::Instant::now() + duration).await
}

/// Sleeps on the current executor until `deadline` (returns at once when
/// it has passed).
pub async fn sleep_until(deadline: std::time::Instant) {
    match driver::current() {
        Some(d) => Sleep::new(d.timers(), deadline).await,
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
/// look at the sockets (a zero-timeout `epoll_pwait2`, or on io_uring
/// a read of the completion queue) while other tasks are queued.
pub async fn after_socket_poll() {
    let Some(r) = driver::current() else {
        return driver::yield_now().await;
    };
    driver::yield_now().await;
    let seen = r.socket_polls();
    // The driver polls at least every other turn while tasks are running
    // (it skips one poll right after a turn that blocked), and it turns
    // once per pass of the queue; the bound only guards against a driver
    // that has stopped.
    for _ in 0..limits::AFTER_SOCKET_POLL_PASSES_MAX {
        driver::yield_now().await;
        if r.socket_polls() != seen {
            break;
        }
    }
    driver::yield_now().await;
}

/// Whether the running task has held the executor past its preemption
/// timer (`limits::PREEMPT_TIMER`), so `yield_if_needed` would yield.
pub fn need_yield() -> bool {
    glommio::executor().need_preempt()
}
