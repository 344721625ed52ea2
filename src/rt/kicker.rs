//! Bounds how long an executor can stay parked after a lost wake-up.
//!
//! Measured here: under CPU contention, roughly one test run in fifteen left
//! an executor asleep in `io_uring_enter` although its next timer had
//! expired (a 10 ms poll timer and a 100 ms watchdog tick both pending).
//! Attaching a debugger or sending the thread a signal, both of which
//! interrupt the syscall, released it every time. glommio parks by arming
//! the timer on its latency ring and sleeping on the main ring with a poll
//! linked to the latency ring's fd; somewhere in that chain the wake-up is
//! occasionally lost, and we do not patch the runtime.
//!
//! So one plain thread per process sends every executor thread a no-op
//! real-time signal every `limits::KICK_INTERVAL`. The handler is installed without
//! `SA_RESTART`, so a parked `io_uring_enter` returns `EINTR`, which glommio
//! treats as a spurious wake-up: it re-checks its timers and goes back to
//! sleep. A lost wake-up therefore costs at most 20 ms instead of hanging
//! the run. Cost: 50 signals per second per executor, a few microseconds
//! each (< 0.1 % of a core).
//!
//! Since the driver task (`driver`) keeps glommio's queue busy, glommio
//! parks only before the driver starts and after it stops; the kicker
//! stays as a backstop, and its signal costs the driver's blocking wait
//! (`epoll_pwait2` or `io_uring_enter`) one empty turn.

use crate::limits;
use std::sync::OnceLock;

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

/// Every `limits::KICK_INTERVAL`, signals each thread of this process whose
/// name has `THREAD_PREFIX`, found by listing `/proc/self/task`.
///
/// Threads are found by listing the task directory rather than by a
/// registry: a first version kept a registry of thread ids, and in a
/// loaded test run one shard was missing from it (never kicked, parked
/// for good) for a reason not found; the task list cannot be wrong. The
/// listing is redone every `limits::KICKS_PER_SCAN` kicks (200 ms), and at once
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
        std::thread::sleep(limits::KICK_INTERVAL);
        if kicks_left == 0 {
            targets = executor_threads();
            kicks_left = limits::KICKS_PER_SCAN;
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
