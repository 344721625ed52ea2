//! The runtime seam: the only module that names glommio or a kernel I/O
//! interface.
//!
//! Everything else uses these wrappers: pinned executors, a TCP stream with
//! read / write-all, a listener, local task spawning, sleeping, cooperative
//! yielding and a counting semaphore.
//!
//! - `executor`: pinned glommio executors, task spawning, sleeping and
//!   yielding;
//! - `io`: which reactor carries the sockets (`--io`, chosen once);
//! - `driver`: the per-executor driver task that owns the executor's idle
//!   time, whichever reactor it runs, and `timers`, its sleeps;
//! - `uring`: the io_uring reactor, one ring per executor (the default);
//! - `epoll`: the epoll reactor, one epoll set per executor (the fallback);
//! - `net`: TCP streams and listeners on either; `sockets`, the plain
//!   socket calls both share;
//! - `kicker`: the backstop that nudges parked executors.
//!
//! glommio runs the tasks; sockets, their I/O and sleeps are this folder's
//! own. Executors are built with small registered I/O memory (no memlock
//! trouble as non-root), a deep ring, and a short preemption timer so no
//! task can hold a shard for long; glommio's own rings then carry only that
//! timer.

mod driver;
mod epoll;
mod executor;
mod io;
mod kicker;
mod net;
mod sockets;
mod timers;
mod uring;

pub use executor::{
    after_socket_poll, need_yield, sleep, sleep_until, spawn, start_executor, yield_if_needed,
    ExecutorHandle,
};
pub use glommio::sync::Semaphore;
pub use glommio::Task;
pub use io::{choose as choose_io, chosen as chosen_io, Chosen, Io};
pub use net::{Readable, TcpListener, TcpStream};
pub use sockets::{bind_reuseport, local_addr, shutdown_fd};

#[cfg(test)]
mod tests;
