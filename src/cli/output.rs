//! Standard output that a closed pipe cannot kill: `loadtest compare A B
//! | head -1` reads one line, and the command ends quietly instead of
//! panicking on the next write. Once stdout is gone every later line is
//! dropped, and `main` treats the command as finished.

use std::io::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once a write to stdout failed with a broken pipe.
static CLOSED: AtomicBool = AtomicBool::new(false);

/// Prints `text` and a newline, unless stdout was closed.
pub fn line(text: &str) {
    if CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let mut out = std::io::stdout().lock();
    let result = out
        .write_all(text.as_bytes())
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush());
    if let Err(e) = result {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            CLOSED.store(true, Ordering::Relaxed);
        }
    }
}

/// Whether stdout was closed under us.
pub fn closed() -> bool {
    CLOSED.load(Ordering::Relaxed)
}
