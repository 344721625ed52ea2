//! Which ring this kernel gives us, asked once before any shard starts.
//!
//! The ring must take `SINGLE_ISSUER | DEFER_TASKRUN` (Linux 6.1+), or
//! failing that `COOP_TASKRUN | TASKRUN_FLAG` on Linux 6.0+ (multishot
//! receive is 6.0), and a provided-buffer ring must register on it. A host
//! that refuses io_uring altogether (`kernel.io_uring_disabled`, a seccomp
//! profile) fails the first step; the caller then runs on epoll and says
//! why.

use super::bufs::BufRing;
use io_uring::IoUring;
use std::io;

/// The setup flags a ring was made with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flags {
    /// `SINGLE_ISSUER | DEFER_TASKRUN | TASKRUN_FLAG`.
    Defer,
    /// `COOP_TASKRUN | TASKRUN_FLAG`.
    Coop,
}

impl Flags {
    /// Their name in the run header and the summary.
    pub fn name(self) -> &'static str {
        match self {
            Flags::Defer => "defer_taskrun",
            Flags::Coop => "coop_taskrun",
        }
    }

    /// A ring of `entries` submission entries with these flags (and twice
    /// as many completion entries: multishot operations post several).
    pub fn build(self, entries: u32) -> io::Result<IoUring> {
        let mut builder = IoUring::builder();
        builder.setup_cqsize(2 * entries).setup_taskrun_flag();
        match self {
            Flags::Defer => builder.setup_single_issuer().setup_defer_taskrun(),
            Flags::Coop => builder.setup_coop_taskrun(),
        };
        builder.build(entries)
    }
}

/// The best flags this kernel takes, or why io_uring cannot carry the
/// sockets here.
pub fn probe() -> Result<Flags, String> {
    let try_flags = |flags: Flags| -> io::Result<()> {
        let ring = flags.build(8)?;
        BufRing::new(&ring, 8, 64, 8).map(drop)
    };
    match try_flags(Flags::Defer) {
        Ok(()) => Ok(Flags::Defer),
        Err(defer) => {
            if !kernel_at_least(6, 0) {
                return Err(format!(
                    "io_uring with DEFER_TASKRUN is unavailable ({defer}) and this kernel predates 6.0's multishot receive"
                ));
            }
            try_flags(Flags::Coop)
                .map(|()| Flags::Coop)
                .map_err(|e| format!("io_uring is unavailable here: {e}"))
        }
    }
}

/// Whether the running kernel's release is at least `major.minor`.
fn kernel_at_least(major: u32, minor: u32) -> bool {
    // SAFETY: `uname` fills a zeroed struct of its own type.
    let release = unsafe {
        let mut name: libc::utsname = std::mem::zeroed();
        if libc::uname(&mut name) != 0 {
            return false;
        }
        std::ffi::CStr::from_ptr(name.release.as_ptr())
            .to_string_lossy()
            .into_owned()
    };
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse::<u32>().ok());
    let found = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    found >= (major, minor)
}
