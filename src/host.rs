//! Facts about this process and kernel that planning and judging need:
//! the CPUs we may run on, the open-files limit, the local port range,
//! CPU time used, growing the descriptor table up front, and the wall
//! clock as seen from the monotonic one (`UnixClock`). Gathered in
//! one place (`Facts::gather`), so `validate` and `run` plan with the same
//! values.

use crate::limits;

/// The wall clock read once and carried by the monotonic clock: instants
/// taken on any thread become Unix times that never jump with an NTP step
/// during the run (the per-turn log and the mock's request log).
#[derive(Debug, Clone, Copy)]
pub struct UnixClock {
    instant: std::time::Instant,
    since_epoch: std::time::Duration,
}

impl UnixClock {
    /// Anchored now.
    pub fn now() -> UnixClock {
        UnixClock {
            instant: std::time::Instant::now(),
            since_epoch: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default(),
        }
    }

    /// `at` as microseconds since the Unix epoch.
    pub fn unix_us(&self, at: std::time::Instant) -> u64 {
        let at = if at >= self.instant {
            self.since_epoch + (at - self.instant)
        } else {
            self.since_epoch.saturating_sub(self.instant - at)
        };
        at.as_micros() as u64
    }
}

/// What planning needs to know about this host.
#[derive(Debug, Clone, PartialEq)]
pub struct Facts {
    /// CPUs this process may run on, ascending.
    pub allowed_cpus: Vec<usize>,
    /// The open-files soft limit, after raising it to the hard limit
    /// (0 when unknown).
    pub fd_limit: u64,
    /// `net.ipv4.ip_local_port_range`, when it can be read.
    pub local_port_range: Option<(u32, u32)>,
}

impl Facts {
    /// Reads the facts, raising the open-files limit on the way.
    pub fn gather() -> Facts {
        Facts {
            allowed_cpus: allowed_cpus(),
            fd_limit: raise_fd_limit(),
            local_port_range: local_port_range(),
        }
    }
}

/// Raises the soft open-file limit to the hard limit; returns the new soft limit.
pub fn raise_fd_limit() -> u64 {
    // SAFETY: getrlimit/setrlimit write to / read from a local struct.
    unsafe {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 0;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                return raised.rlim_cur;
            }
        }
        limit.rlim_cur
    }
}

/// The kernel's range of source ports for outgoing connections
/// (`net.ipv4.ip_local_port_range`), when it can be read.
pub fn local_port_range() -> Option<(u32, u32)> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    parse_port_range(&text)
}

fn parse_port_range(text: &str) -> Option<(u32, u32)> {
    let mut parts = text.split_whitespace().map(|p| p.parse::<u32>().ok());
    let (low, high) = (parts.next()??, parts.next()??);
    (low <= high && high <= 65_535).then_some((low, high))
}

/// Grows this process's file-descriptor table now, so that it can hold
/// `fds` descriptors (at most `limits::FD_TABLE_PRESIZE_MAX`, and below the
/// soft limit) without growing later.
///
/// Linux doubles the table when a new descriptor does not fit, and in a
/// process with more than one thread it then waits for an RCU grace
/// period, with the thread that asked for the descriptor blocked: measured
/// here, `socket(2)` took 4.7 ms when the shard's 256th descriptor came
/// and 4.3 ms at the 512th, and an open-loop shard whose idle pool ran dry
/// during an upstream stall fell up to ~45 ms behind at one of these steps.
/// Doing it once before the shards start costs one such wait, up front.
/// The table never shrinks; its size is 8 bytes a descriptor.
pub fn presize_fd_table(fds: u64) {
    // SAFETY: plain getrlimit into a local struct.
    let soft = unsafe {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return;
        }
        limit.rlim_cur
    };
    let top = fds.min(soft).min(limits::FD_TABLE_PRESIZE_MAX);
    if top < 2 {
        return;
    }
    let top = (top - 1) as libc::c_int;
    // SAFETY: opens /dev/null, duplicates it onto the lowest free
    // descriptor number at or above `top` (F_DUPFD never closes anything,
    // unlike dup2, so no other thread's descriptor can be lost), and closes
    // both again.
    unsafe {
        let source = libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
        if source < 0 {
            return;
        }
        let high = libc::fcntl(source, libc::F_DUPFD_CLOEXEC, top);
        if high >= 0 {
            libc::close(high);
        }
        libc::close(source);
    }
}

/// CPU seconds (user + system) this process has used so far.
pub fn process_cpu_seconds() -> f64 {
    cpu_seconds(libc::RUSAGE_SELF)
}

/// CPU seconds the calling thread has used so far.
pub fn thread_cpu_seconds() -> f64 {
    cpu_seconds(libc::RUSAGE_THREAD)
}

fn cpu_seconds(who: libc::c_int) -> f64 {
    // SAFETY: `rusage` is plain data; all-zero is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the local struct it is given.
    if unsafe { libc::getrusage(who, &mut usage) } != 0 {
        return 0.0;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// The calling thread's scheduling so far, from
/// `/proc/thread-self/schedstat`: seconds it spent runnable but waiting
/// for a CPU (another process or thread had it), and how many times it
/// got one. `None` without schedstats (a kernel built without
/// `CONFIG_SCHED_INFO`).
pub fn thread_sched() -> Option<ThreadSched> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let mut fields = text.split_whitespace().skip(1);
    let wait_ns: u64 = fields.next()?.parse().ok()?;
    let runs: u64 = fields.next()?.parse().ok()?;
    Some(ThreadSched {
        wait_s: wait_ns as f64 / 1e9,
        runs,
    })
}

/// A thread's scheduling totals (`thread_sched`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ThreadSched {
    /// Seconds runnable but waiting for a CPU.
    pub wait_s: f64,
    /// Times it was given a CPU.
    pub runs: u64,
}

/// Steal and total ticks of `cpus`, from `/proc/stat`: time the hypervisor
/// gave those CPUs to another guest. `None` where it cannot be read.
pub fn cpu_steal_ticks(cpus: &[usize]) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    Some(steal_ticks(&text, cpus))
}

/// (steal, total) over the `cpuN` lines of `/proc/stat` text for `cpus`.
fn steal_ticks(stat: &str, cpus: &[usize]) -> (u64, u64) {
    let (mut steal, mut total) = (0, 0);
    for line in stat.lines() {
        let mut fields = line.split_whitespace();
        let Some(cpu) = fields.next().and_then(|n| n.strip_prefix("cpu")) else {
            continue;
        };
        if !cpu.parse().is_ok_and(|n: usize| cpus.contains(&n)) {
            continue;
        }
        // user nice system idle iowait irq softirq steal (guest time is
        // already in user and nice).
        let ticks: Vec<u64> = fields.take(8).filter_map(|f| f.parse().ok()).collect();
        if ticks.len() == 8 {
            steal += ticks[7];
            total += ticks.iter().sum::<u64>();
        }
    }
    (steal, total)
}

/// CPUs this process may run on, in ascending order.
pub fn allowed_cpus() -> Vec<usize> {
    let mut cpus: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.id)
        .collect();
    cpus.sort_unstable();
    cpus
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steal_is_read_for_the_cpus_asked_for() {
        let stat = "cpu  10 0 10 70 0 0 0 10 5 0\ncpu0 5 0 5 35 0 0 0 5 0 0\ncpu1 5 0 5 35 0 0 0 5 0 0\nintr 1 2\n";
        assert_eq!(steal_ticks(stat, &[1]), (5, 50));
        assert_eq!(steal_ticks(stat, &[0, 1]), (10, 100));
        assert_eq!(steal_ticks(stat, &[7]), (0, 0));
        // Where schedstats exist, a thread's wait is a finite number.
        if let Some(sched) = thread_sched() {
            assert!(sched.wait_s.is_finite() && sched.wait_s >= 0.0);
            assert!(sched.runs > 0, "this thread has run");
        }
    }

    #[test]
    fn port_range_parses_the_proc_format() {
        assert_eq!(parse_port_range("32768\t60999\n"), Some((32768, 60999)));
        assert_eq!(parse_port_range("1024 65535"), Some((1024, 65535)));
        assert_eq!(parse_port_range("60999 32768"), None);
        assert_eq!(parse_port_range("32768"), None);
        assert_eq!(parse_port_range("a b"), None);
        assert_eq!(parse_port_range("1 70000"), None);
    }

    #[test]
    fn the_descriptor_table_is_grown_up_front_and_nothing_stays_open() {
        fn table_size() -> u64 {
            let status = std::fs::read_to_string("/proc/self/status").unwrap();
            let line = status.lines().find(|l| l.starts_with("FDSize:")).unwrap();
            line["FDSize:".len()..].trim().parse().unwrap()
        }
        fn open_count() -> usize {
            std::fs::read_dir("/proc/self/fd").unwrap().count()
        }
        let wanted = 3_000u64;
        // Other tests of this binary open descriptors on their own threads
        // meanwhile, so only the table's growth is checked exactly.
        let before = open_count();
        presize_fd_table(wanted);
        assert!(table_size() >= wanted, "FDSize {}", table_size());
        // The descriptors used to grow it were closed again (allowing for
        // what concurrent tests opened).
        assert!(open_count() <= before + 64, "{before} -> {}", open_count());
        // A size beyond the soft limit is capped, not an error.
        presize_fd_table(u64::MAX);
    }
}
