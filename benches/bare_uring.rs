//! Ceiling: the barest io_uring keep-alive request loop, the number the
//! engine's io_uring work is measured against (as `bare_loop.rs` is for
//! glommio).
//!
//! One thread pinned to a CPU, one ring, N connections. Each connection
//! sends the request with a `Send` SQE, then reads with single-shot `Recv`
//! SQEs into its own 16 KiB buffer until the head and the Content-Length
//! body are in, records the latency in an HDR histogram, and sends again.
//! One `submit_and_wait(1)` per loop turn submits what the last turn queued
//! and reaps every completion. No SSE, no JSON, no stages, no error
//! classes. The request bytes are built with the library's public API from
//! a profile, so they are byte-for-byte what `loadtest run` sends.
//!
//! Ring flags: `SINGLE_ISSUER | DEFER_TASKRUN` (Linux 6.1+), else
//! `COOP_TASKRUN | TASKRUN_FLAG` (5.19+), else none; `--flags` forces one
//! (`defer`, `coop`, `none`). The line printed names the flags used.
//!
//! Usage (after `cargo build --release --benches`):
//!   bare_uring --config benches/perf-128-nonstream.json --target http://127.0.0.1:18080 \
//!              --conns 64 --seconds 10 --cpu 0 [--flags defer|coop|none]
//! Prints one JSON line: requests, rps, p50/p99 ms, cpu_s (process),
//! io_uring_enter calls.

use hdrhistogram::Histogram;
use io_uring::{opcode, types, IoUring};
use loadtest::plan;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

mod support;

/// A ring with the best flags this kernel takes (or the ones asked for),
/// and their name.
fn ring(entries: u32, asked: Option<&str>) -> (IoUring, &'static str) {
    let defer = || {
        IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .build(entries)
    };
    let coop = || {
        IoUring::builder()
            .setup_coop_taskrun()
            .setup_taskrun_flag()
            .build(entries)
    };
    let none = || IoUring::new(entries);
    match asked {
        Some("defer") => (defer().expect("DEFER_TASKRUN ring"), "defer"),
        Some("coop") => (coop().expect("COOP_TASKRUN ring"), "coop"),
        Some("none") => (none().expect("ring"), "none"),
        Some(other) => panic!("--flags {other}: defer, coop or none"),
        None => match defer() {
            Ok(ring) => (ring, "defer"),
            Err(_) => match coop() {
                Ok(ring) => (ring, "coop"),
                Err(_) => (none().expect("ring"), "none"),
            },
        },
    }
}

/// One connection: its socket, its read buffer and where its request is.
struct Conn {
    stream: std::net::TcpStream,
    buf: Vec<u8>,
    filled: usize,
    sent: usize,
    started: Instant,
}

/// What a completion was for: the connection's index and the operation.
const RECV: u64 = 1;

fn send(ring: &mut IoUring, conns: &[Conn], i: usize, request: &[u8]) {
    let c = &conns[i];
    let rest = &request[c.sent..];
    let sqe = opcode::Send::new(
        types::Fd(c.stream.as_raw_fd()),
        rest.as_ptr(),
        rest.len() as u32,
    )
    .build()
    .user_data((i as u64) << 1);
    // SAFETY: the request outlives the ring's use of it (it lives for the
    // whole run); the queue has room (one operation per connection).
    unsafe { ring.submission().push(&sqe).expect("queue full") };
}

fn recv(ring: &mut IoUring, conns: &mut [Conn], i: usize) {
    let c = &mut conns[i];
    let rest = &mut c.buf[c.filled..];
    let sqe = opcode::Recv::new(
        types::Fd(c.stream.as_raw_fd()),
        rest.as_mut_ptr(),
        rest.len() as u32,
    )
    .build()
    .user_data(((i as u64) << 1) | RECV);
    // SAFETY: the buffer is not touched until this receive completes, and
    // the connection (and its buffer) outlives the ring's use of it.
    unsafe { ring.submission().push(&sqe).expect("queue full") };
}

fn main() {
    let args = support::LoopArgs::parse(true);
    let request = support::request_bytes(&args.config, &args.target);
    let addr = plan::parse_target(&args.target, &loadtest::protocol::openai::OpenAiChat, &[])
        .expect("target")
        .addr;
    core_affinity::set_for_current(core_affinity::CoreId { id: args.cpu });
    let (mut ring, flags) = ring(
        (2 * args.conns).next_power_of_two() as u32,
        args.flags.as_deref(),
    );
    let mut conns: Vec<Conn> = (0..args.conns)
        .map(|_| {
            let stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))
                .expect("connect");
            stream.set_nodelay(true).expect("nodelay");
            Conn {
                stream,
                buf: vec![0; 16 * 1024],
                filled: 0,
                sent: 0,
                started: Instant::now(),
            }
        })
        .collect();
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    let cpu_before = loadtest::host::process_cpu_seconds();
    let started = Instant::now();
    let until = started + Duration::from_secs(args.seconds);
    for i in 0..conns.len() {
        conns[i].started = Instant::now();
        send(&mut ring, &conns, i, &request);
    }
    let (mut enters, mut open) = (0u64, conns.len());
    let mut done: Vec<(u64, i32)> = Vec::with_capacity(conns.len());
    while open > 0 {
        ring.submit_and_wait(1).expect("io_uring_enter");
        enters += 1;
        done.extend(ring.completion().map(|c| (c.user_data(), c.result())));
        for (data, result) in done.drain(..) {
            let i = (data >> 1) as usize;
            assert!(result >= 0, "operation failed: {}", -result);
            if data & RECV == 0 {
                conns[i].sent += result as usize;
                if conns[i].sent < request.len() {
                    send(&mut ring, &conns, i, &request);
                } else {
                    recv(&mut ring, &mut conns, i);
                }
                continue;
            }
            assert!(result > 0, "server closed");
            let c = &mut conns[i];
            c.filled += result as usize;
            if support::response_length(&c.buf[..c.filled]).is_none_or(|len| c.filled < len) {
                recv(&mut ring, &mut conns, i);
                continue;
            }
            let now = Instant::now();
            hist.record(now.duration_since(c.started).as_micros() as u64)
                .expect("record");
            if now >= until {
                open -= 1;
                continue;
            }
            (c.filled, c.sent, c.started) = (0, 0, now);
            send(&mut ring, &conns, i, &request);
        }
    }
    let wall = started.elapsed().as_secs_f64();
    let cpu = loadtest::host::process_cpu_seconds() - cpu_before;
    support::print_result(
        "bare-uring",
        &format!("\"flags\":\"{flags}\",\"enters\":{enters},"),
        &hist,
        wall,
        cpu,
    );
}
