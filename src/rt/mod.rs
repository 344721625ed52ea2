//! The runtime seam: the only module that names glommio.
//!
//! Everything else uses these wrappers: pinned executors, a TCP stream with
//! read / write-all, a listener, local task spawning, sleeping, cooperative
//! yielding and a counting semaphore. Swapping the executor or the socket
//! layer (for io_uring RECV/SEND, or a runtime that sets
//! `IORING_SETUP_COOP_TASKRUN`) means rewriting this folder only.
//!
//! - `executor`: pinned glommio executors, task spawning, sleeping and
//!   yielding;
//! - `kicker`: the backstop that nudges parked executors;
//! - `reactor`: each executor's epoll set and timer heap, and the driver
//!   task that owns its idle time;
//! - `net`: TCP streams and listeners on that reactor.
//!
//! Executors are built with the settings the research notes justify: small
//! registered I/O memory (no memlock trouble as non-root), a deep ring, and
//! a short preemption timer so no task can hold a shard for long. glommio
//! runs the tasks; sockets, their readiness and sleeps are this folder's
//! own (see `reactor`): one epoll set and one timer heap per executor,
//! driven by a task that also owns the executor's idle time.

mod executor;
mod kicker;
mod net;
mod reactor;

pub use executor::{
    after_socket_poll, need_yield, sleep, sleep_until, spawn, start_executor, yield_if_needed,
    ExecutorHandle,
};
pub use glommio::sync::Semaphore;

/// What carries the shards' socket I/O and timers, as the run header and
/// the summary (`plan.reactor`) name it.
pub const REACTOR_NAME: &str = "epoll";
pub use glommio::Task;
pub use net::{bind_reuseport, local_addr, shutdown_fd, Readable, TcpListener, TcpStream};

#[cfg(test)]
mod tests;
