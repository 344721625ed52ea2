//! Reference for the open-loop accuracy benchmark: the plainest open-loop
//! generator we could write, and a host-noise probe.
//!
//! `benches/open_loop.py` runs it in the same rounds as `loadtest`, so a
//! table row can say how much of loadtest's scheduler lag is the host's and
//! how much is the engine's.
//!
//! Three modes, each on one thread (pin it with `taskset`):
//!
//! * default, **epoll pacer**: one thread, no runtime, no io_uring. Arrivals
//!   at constant spacing against absolute intended times; each takes an
//!   idle keep-alive connection and sends the request at once, or starts a
//!   non-blocking connect and sends when it completes; responses are read
//!   when epoll says so (edge-triggered). Between arrivals it waits in
//!   `epoll_pwait2` with a nanosecond timeout. Lag is arrival start minus
//!   intended time, as loadtest defines it: an arrival starts when its turn
//!   comes, after the sends of the arrivals due before it, and before any
//!   connect. Latency is measured from the intended time (corrected) and
//!   from the start. `--work-per-arrival N` adds N rounds of the speed
//!   probe's work (2,000 rounds take about 3 µs here) to every arrival as
//!   it starts: the pacer made as costly per arrival as a fuller generator.
//!   `--trace FILE` writes each measured arrival's intended offset from the
//!   start and its lag (µs, one pair a line) for `lag_episodes.py`; the
//!   output's `start_unix_us` places those offsets in wall-clock time.
//! * `--hiccup`, **host floor**: no network at all. The thread spins on the
//!   clock for the stage length and reports the lag a perfect pacer would
//!   have had at `--rate`: an arrival due inside a gap in the thread's
//!   progress (the host took the CPU away) starts when the gap ends. No
//!   generator on this CPU can do better than this in the same seconds.
//! * `--speed`, **host speed**: no network either. The thread times the
//!   same small piece of work back to back and reports the median time per
//!   10 ms window: windows several times slower than the fastest are
//!   stretches in which the host gave this CPU only part of its speed, in
//!   slices too short for the host floor to see. A generator that needs CPU
//!   per arrival falls behind in them; the floor's zero-cost pacer does not.
//!
//! The request bytes are built from the profile with the library's public
//! API, so they are what `loadtest run` sends for the bench profile.
//!
//! Usage (after `cargo build --release --benches`):
//!   open_loop_ref --config benches/perf-128-nonstream.json --target http://127.0.0.1:18082 \
//!                 --rate 20000 --seconds 6 --warmup 2 [--hiccup | --speed]
//!                 [--work-per-arrival N] [--trace FILE]
//! Prints one JSON line; `late_1ms` counts the arrivals more than 1 ms late.

use hdrhistogram::Histogram;
use loadtest::plan;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant, SystemTime};

mod support;

struct Args {
    config: String,
    target: String,
    rate: f64,
    seconds: f64,
    warmup: f64,
    hiccup: bool,
    speed: bool,
    /// Epoll pacer: rounds of `work` done for every arrival as it starts,
    /// to see what a generator's per-arrival CPU costs it on this host.
    work_per_arrival: u64,
    /// Epoll pacer: write every measured arrival's intended offset from
    /// the start and its lag, in microseconds, one pair per line.
    trace: Option<String>,
}

fn parse_args() -> Args {
    let mut args = Args {
        config: "benches/perf-128-nonstream.json".into(),
        target: "http://127.0.0.1:18082".into(),
        rate: 20_000.0,
        seconds: 6.0,
        warmup: 2.0,
        hiccup: false,
        speed: false,
        work_per_arrival: 0,
        trace: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--config" => args.config = value(),
            "--target" => args.target = value(),
            "--rate" => args.rate = value().parse().expect("--rate number"),
            "--seconds" => args.seconds = value().parse().expect("--seconds number"),
            "--warmup" => args.warmup = value().parse().expect("--warmup number"),
            "--hiccup" => args.hiccup = true,
            "--speed" => args.speed = true,
            "--work-per-arrival" => {
                args.work_per_arrival = value().parse().expect("--work-per-arrival number")
            }
            "--trace" => args.trace = Some(value()),
            "--bench" => {} // added by `cargo bench`
            other => panic!("unknown flag {other}"),
        }
    }
    assert!(args.rate > 0.0, "--rate must be positive");
    args
}

/// Connects in flight at most: loadtest's per-shard limit.
const CONNECTS_MAX: usize = loadtest::limits::CONNECTS_IN_FLIGHT_PER_SHARD_MAX as usize;

/// How long the epoll pacer waits after the last arrival for the
/// responses still in flight (an upstream that accepted a connection but
/// never answers must not hang the benchmark).
const DRAIN_MAX: Duration = Duration::from_secs(5);

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("histogram bounds")
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

/// The host floor: spin for the stage and derive a perfect pacer's lag.
fn hiccup(args: &Args) {
    let step = Duration::from_secs_f64(1.0 / args.rate);
    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(args.warmup);
    let end = start + Duration::from_secs_f64(args.warmup + args.seconds);
    let mut lag = histogram();
    let mut next = start;
    let mut longest_gap = Duration::ZERO;
    let mut prev = start;
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        longest_gap = longest_gap.max(now - prev);
        prev = now;
        while next <= now {
            if next >= measure_from {
                lag.saturating_record((now - next).as_micros() as u64);
            }
            next += step;
        }
    }
    println!(
        "{{\"tool\":\"host-floor\",\"arrivals\":{},\"lag_p50_ms\":{:.3},\"lag_p99_ms\":{:.3},\"lag_max_ms\":{:.3},\"longest_gap_ms\":{:.3}}}",
        lag.len(),
        ms(&lag, 0.5),
        ms(&lag, 0.99),
        lag.max() as f64 / 1000.0,
        longest_gap.as_secs_f64() * 1000.0
    );
}

/// The host's speed over time: the same small piece of work (about 3 µs
/// here), timed back to back for the stage length, and the median time per
/// 10 ms window. A window whose median is several times the fastest
/// window's ran slow throughout: the host gave this CPU only part of its
/// speed for that long, in slices too short to show as a gap to the host
/// floor, which costs nothing per arrival. A generator spending tens of
/// microseconds of CPU per arrival falls behind in such a window.
fn speed(args: &Args) {
    const WINDOW: Duration = Duration::from_millis(10);
    let mut table = [0u64; 4096];
    let mut seed = 1u64;
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(args.warmup + args.seconds);
    let mut medians: Vec<f64> = Vec::new();
    let mut window: Vec<u32> = Vec::new();
    let mut window_end = start + WINDOW;
    loop {
        let t = Instant::now();
        if t >= window_end {
            if !window.is_empty() {
                window.sort_unstable();
                medians.push(f64::from(window[window.len() / 2]) / 1000.0);
                window.clear();
            }
            window_end += WINDOW;
            if t >= end {
                break;
            }
        }
        work(2000, &mut table, &mut seed);
        window.push(t.elapsed().as_nanos().min(u32::MAX as u128) as u32);
    }
    medians.sort_by(f64::total_cmp);
    let at = |q: f64| medians[((medians.len() - 1) as f64 * q) as usize];
    let fastest = medians[0];
    let slow = medians.iter().filter(|&&m| m > 3.0 * fastest).count();
    println!(
        "{{\"tool\":\"host-speed\",\"windows\":{},\"fastest_us\":{:.2},\"median_us\":{:.2},\"p99_us\":{:.2},\"slowest_us\":{:.2},\"windows_over_3x\":{}}}",
        medians.len(),
        fastest,
        at(0.5),
        at(0.99),
        medians[medians.len() - 1],
        slow
    );
}

/// A fixed amount of CPU work: `rounds` steps of a generator that touches
/// a small table, so it cannot be optimised away.
fn work(rounds: u64, table: &mut [u64; 4096], seed: &mut u64) {
    for _ in 0..rounds {
        *seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        table[(*seed >> 52) as usize] ^= *seed;
    }
    std::hint::black_box(table);
}

/// One keep-alive connection of the epoll pacer.
struct Conn {
    fd: OwnedFd,
    buf: Vec<u8>,
    filled: usize,
    /// The non-blocking connect has not completed yet; the request waits.
    connecting: bool,
    /// Intended and actual start of the request in flight, if any.
    in_flight: Option<(Instant, Instant)>,
}

/// Starts a non-blocking connect (a blocking one would stall the pacer for
/// a SYN retransmit when the upstream's accept queue is full).
fn start_connect(addr: std::net::SocketAddr) -> std::io::Result<OwnedFd> {
    let std::net::SocketAddr::V4(v4) = addr else {
        return Err(std::io::Error::other("IPv4 targets only"));
    };
    // SAFETY: plain socket calls on a descriptor this function owns from
    // the moment it is created; the sockaddr is fully initialised.
    unsafe {
        let fd = libc::socket(
            libc::AF_INET,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        );
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let fd = OwnedFd::from_raw_fd(fd);
        let one: libc::c_int = 1;
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        let mut sa: libc::sockaddr_in = std::mem::zeroed();
        sa.sin_family = libc::AF_INET as libc::sa_family_t;
        sa.sin_port = v4.port().to_be();
        sa.sin_addr.s_addr = u32::from(*v4.ip()).to_be();
        let rc = libc::connect(
            fd.as_raw_fd(),
            (&sa as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        if rc != 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINPROGRESS) {
            return Err(std::io::Error::last_os_error());
        }
        Ok(fd)
    }
}

/// Sends the whole request on a non-blocking socket (it fits in the socket
/// buffer of a fresh or idle keep-alive connection).
fn send_request(fd: &OwnedFd, request: &[u8]) -> bool {
    // SAFETY: sends from a live slice on an open descriptor.
    let n = unsafe {
        libc::send(
            fd.as_raw_fd(),
            request.as_ptr().cast(),
            request.len(),
            libc::MSG_NOSIGNAL,
        )
    };
    n == request.len() as isize
}

/// Counts of the epoll pacer's run.
#[derive(Default)]
struct Counts {
    sent: u64,
    done: u64,
    connect_errors: u64,
    failed: u64,
}

fn epoll_pacer(args: &Args) {
    let request = support::request_bytes(&args.config, &args.target);
    let addr = plan::parse_target(&args.target, &loadtest::protocol::openai::OpenAiChat, &[])
        .expect("target")
        .addr;
    // SAFETY: epoll_create1 has no memory preconditions; the result is
    // checked and then owned.
    let epoll = unsafe {
        let fd = libc::epoll_create1(libc::EPOLL_CLOEXEC);
        assert!(fd >= 0, "epoll_create1 failed");
        OwnedFd::from_raw_fd(fd)
    };
    let step = Duration::from_secs_f64(1.0 / args.rate);
    let cpu_before = loadtest::host::process_cpu_seconds();
    let start = Instant::now() + Duration::from_millis(10);
    // The start as Unix time, so a trace can be laid over loadtest's JSONL
    // from the same seconds (`benches/side_by_side.py`).
    let start_unix_us = (SystemTime::now() + Duration::from_millis(10))
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros());
    let measure_from = start + Duration::from_secs_f64(args.warmup);
    let end = start + Duration::from_secs_f64(args.warmup + args.seconds);
    let (mut lag, mut corrected, mut uncorrected) = (histogram(), histogram(), histogram());
    let mut conns: Vec<Conn> = Vec::new();
    let mut idle: Vec<usize> = Vec::new();
    let mut k: u64 = 0;
    let mut counts = Counts::default();
    let mut started = 0u64;
    let mut pending: std::collections::VecDeque<(Instant, Option<Instant>)> = Default::default();
    let mut connecting = 0usize;
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
    let (mut table, mut seed) = ([0u64; 4096], 1u64);
    let mut trace: Vec<(u64, u64)> = Vec::new();
    loop {
        let mut due = start + step.mul_f64(k as f64);
        let now = Instant::now();
        let settled = counts.done + counts.failed + counts.connect_errors;
        if due >= end && (settled == started || now >= end + DRAIN_MAX) {
            break;
        }
        while due <= now && due < end {
            started += 1;
            k += 1;
            pending.push_back((due, None));
            due = start + step.mul_f64(k as f64);
        }
        // Serve due arrivals in order: an idle connection sends at once;
        // else a connect starts, at most CONNECTS_MAX at a time (as
        // loadtest's per-shard connect limit), and the rest wait their turn.
        //
        // An arrival starts when its turn comes here, so its lag includes
        // the sends of the arrivals due before it, as in loadtest, where
        // each arrival is a task that records its lag when it first runs,
        // after the tasks spawned before it. Arrivals left waiting for a
        // connect slot have started too (loadtest's wait on its connect
        // semaphore), so they are stamped before the loop stops.
        let mut stamp = |entry: &mut (Instant, Option<Instant>)| -> Instant {
            *entry.1.get_or_insert_with(|| {
                let begun = Instant::now();
                // Once per arrival, as it starts (an arrival waiting for a
                // connect slot is stamped once, however often it is seen).
                if args.work_per_arrival > 0 {
                    work(args.work_per_arrival, &mut table, &mut seed);
                }
                if entry.0 >= measure_from {
                    lag.saturating_record((begun - entry.0).as_micros() as u64);
                    if args.trace.is_some() {
                        trace.push((
                            (entry.0 - start).as_micros() as u64,
                            (begun - entry.0).as_micros() as u64,
                        ));
                    }
                }
                begun
            })
        };
        while let Some(entry) = pending.front_mut() {
            let intended = entry.0;
            let begun = stamp(entry);
            if let Some(c) = idle.pop() {
                pending.pop_front();
                let conn = &mut conns[c];
                conn.filled = 0;
                conn.in_flight = Some((intended, begun));
                if send_request(&conn.fd, &request) {
                    counts.sent += 1;
                } else {
                    conn.in_flight = None;
                    counts.failed += 1;
                }
                continue;
            }
            if connecting >= CONNECTS_MAX {
                pending.iter_mut().for_each(|entry| {
                    stamp(entry);
                });
                break;
            }
            pending.pop_front();
            match start_connect(addr) {
                Ok(fd) => {
                    let mut event = libc::epoll_event {
                        events: (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLET) as u32,
                        u64: conns.len() as u64,
                    };
                    // SAFETY: both fds are open; the event outlives the call.
                    let rc = unsafe {
                        libc::epoll_ctl(
                            epoll.as_raw_fd(),
                            libc::EPOLL_CTL_ADD,
                            fd.as_raw_fd(),
                            &mut event,
                        )
                    };
                    assert_eq!(rc, 0, "epoll_ctl");
                    conns.push(Conn {
                        fd,
                        buf: vec![0; 16 * 1024],
                        filled: 0,
                        connecting: true,
                        in_flight: Some((intended, begun)),
                    });
                    connecting += 1;
                }
                // Out of file descriptors (the upstream stalled for long):
                // counted, as loadtest's max_inflight drops are.
                Err(_) => counts.connect_errors += 1,
            }
        }
        let wait = if due < end {
            due.saturating_duration_since(Instant::now())
        } else {
            Duration::from_millis(1)
        };
        let timeout = libc::timespec {
            tv_sec: wait.as_secs() as libc::time_t,
            tv_nsec: wait.subsec_nanos() as libc::c_long,
        };
        // SAFETY: `events` has room for the count passed; the timeout and a
        // null sigmask are valid for the call.
        let n = unsafe {
            libc::epoll_pwait2(
                epoll.as_raw_fd(),
                events.as_mut_ptr(),
                events.len() as i32,
                &timeout,
                std::ptr::null(),
            )
        };
        for event in events.iter().take(n.max(0) as usize) {
            let c = event.u64 as usize;
            let conn = &mut conns[c];
            if conn.connecting {
                if event.events & (libc::EPOLLOUT | libc::EPOLLERR | libc::EPOLLHUP) as u32 == 0 {
                    continue;
                }
                conn.connecting = false;
                connecting -= 1;
                let mut error: libc::c_int = 0;
                let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
                // SAFETY: SO_ERROR into a local int of the size given.
                unsafe {
                    libc::getsockopt(
                        conn.fd.as_raw_fd(),
                        libc::SOL_SOCKET,
                        libc::SO_ERROR,
                        (&mut error as *mut libc::c_int).cast(),
                        &mut len,
                    );
                }
                if error == 0 && send_request(&conn.fd, &request) {
                    counts.sent += 1;
                } else {
                    conn.in_flight = None;
                    counts.failed += 1;
                }
                continue;
            }
            loop {
                let filled = conn.filled;
                // SAFETY: reads into the unfilled tail of the connection's
                // own buffer.
                let r = unsafe {
                    libc::recv(
                        conn.fd.as_raw_fd(),
                        conn.buf[filled..].as_mut_ptr().cast(),
                        conn.buf.len() - filled,
                        0,
                    )
                };
                if r > 0 {
                    conn.filled += r as usize;
                    continue;
                }
                let again = r < 0
                    && std::io::Error::last_os_error().kind() == std::io::ErrorKind::WouldBlock;
                if !again && conn.in_flight.take().is_some() {
                    // Closed or reset under a request: counted, and the
                    // connection is not reused.
                    counts.failed += 1;
                }
                break;
            }
            let Some((intended, begun)) = conn.in_flight else {
                continue;
            };
            if support::response_length(&conn.buf[..conn.filled])
                .is_some_and(|len| conn.filled >= len)
            {
                let now = Instant::now();
                if intended >= measure_from {
                    corrected.saturating_record((now - intended).as_micros() as u64);
                    uncorrected.saturating_record((now - begun).as_micros() as u64);
                }
                conn.in_flight = None;
                counts.done += 1;
                idle.push(c);
            }
        }
    }
    let cpu = loadtest::host::process_cpu_seconds() - cpu_before;
    if let Some(path) = &args.trace {
        let text: String = trace
            .iter()
            .map(|(at, lag)| format!("{at} {lag}\n"))
            .collect();
        std::fs::write(path, text).unwrap_or_else(|e| panic!("--trace {path}: {e}"));
    }
    println!(
        "{{\"tool\":\"epoll-reference\",\"arrivals\":{},\"achieved_rate\":{:.1},\"connections\":{},\"lag_p50_ms\":{:.3},\"lag_p99_ms\":{:.3},\"lag_max_ms\":{:.3},\"late_1ms\":{},\"lag_mean_ms\":{:.3},\"corrected_p99_ms\":{:.3},\"uncorrected_p99_ms\":{:.3},\"cpu_s\":{:.3},\"sent\":{},\"connect_errors\":{},\"failed\":{},\"unanswered\":{},\"start_unix_us\":{}}}",
        lag.len(),
        lag.len() as f64 / args.seconds,
        conns.len(),
        ms(&lag, 0.5),
        ms(&lag, 0.99),
        lag.max() as f64 / 1000.0,
        lag.count_between(1001, u64::MAX),
        lag.mean() / 1000.0,
        ms(&corrected, 0.99),
        ms(&uncorrected, 0.99),
        cpu,
        counts.sent,
        counts.connect_errors,
        counts.failed,
        started - counts.done - counts.failed - counts.connect_errors,
        start_unix_us
    );
}

fn main() {
    let args = parse_args();
    if args.speed {
        speed(&args);
    } else if args.hiccup {
        hiccup(&args);
    } else {
        epoll_pacer(&args);
    }
}
