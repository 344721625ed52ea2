//! Pinned glommio executors, and the task primitives every shard uses:
//! spawning, sleeping, yielding.

use super::{kicker, reactor};
use crate::limits;
use glommio::{LocalExecutorBuilder, Placement};
use std::future::Future;
use std::io;
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
    for _ in 0..limits::AFTER_SOCKET_POLL_PASSES_MAX {
        reactor::yield_now().await;
        if r.socket_polls() != seen {
            break;
        }
    }
    reactor::yield_now().await;
}

/// Whether the running task has held the executor past its preemption
/// timer (`limits::PREEMPT_TIMER`), so `yield_if_needed` would yield.
pub fn need_yield() -> bool {
    glommio::executor().need_preempt()
}
