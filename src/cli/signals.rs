//! What SIGINT (Ctrl-C), SIGTERM, SIGHUP and SIGQUIT do to a run. The
//! first ends the stage, lets requests in flight finish (at most
//! `limits::STOP_GRACE`) and writes every output marked as stopped; the
//! second stops waiting for requests in flight and still writes every
//! output from what was measured; the third exits at once and says what
//! was not written. The exit code is 128 + the first signal's number
//! (Ctrl-C 130, SIGTERM 143, SIGHUP 129, SIGQUIT 131).
//!
//! The signals are blocked in every thread (threads inherit the mask of
//! the thread that starts them, and `install` runs before any is
//! started) and taken one at a time by a thread of their own with
//! `sigwait`. With a handler instead, the kernel may run it on several
//! threads at once, and a third signal's `_exit` could cut the first's
//! message short.

use crate::engine;
use crate::results::Signal;

const FIRST: &str = "loadtest: stopping: the stage ends now and requests in flight get a few seconds to finish; interrupt again to stop waiting for them";
const SECOND: &str = "loadtest: not waiting for requests in flight; writing every output from what was measured; interrupt again to exit without writing them";
const THIRD: &str = "loadtest: exiting at once: the report, CSV, .prom and summary were NOT written; results-*.jsonl holds the turns flushed so far";

/// Blocks the stop signals in this thread (and so in every thread it
/// starts from now on) and starts the thread that takes them. Call it
/// before starting any other thread.
pub fn install() {
    // SAFETY: a zeroed sigset_t is a valid argument to sigemptyset, which
    // initialises it; the calls only change this thread's signal mask.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for signal in Signal::ALL {
            libc::sigaddset(&mut set, signal.number());
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
    let started = std::thread::Builder::new()
        .name("loadtest-signals".into())
        .spawn(move || loop {
            let mut number: libc::c_int = 0;
            // SAFETY: `set` is initialised and every signal in it is
            // blocked in every thread.
            if unsafe { libc::sigwait(&set, &mut number) } == 0 {
                on_signal(number);
            }
        });
    if let Err(e) = started {
        // Without the thread the signals stay blocked: say so rather than
        // leave a run that Ctrl-C cannot stop.
        eprintln!("loadtest: cannot watch for Ctrl-C ({e}); stop the run with SIGKILL");
    }
}

fn on_signal(number: libc::c_int) {
    let asked = engine::request_stop(Signal::of(number).unwrap_or_default());
    eprintln!(
        "\n{}",
        match asked {
            1 => FIRST,
            2 => SECOND,
            _ => THIRD,
        }
    );
    if asked >= 3 {
        // SAFETY: ends the process at once, as the message says.
        unsafe { libc::_exit(128 + engine::stop_signal().number()) };
    }
}
