//! Baseline: the barest glommio keep-alive request loop, for comparison
//! with the full engine on the same upstream.
//!
//! One pinned executor, N connections, one task per connection: write the
//! request, read until the head and Content-Length body are in, record the
//! latency in an HDR histogram, repeat. No SSE, no JSON, no stages, no
//! error classes. The request bytes are built with the library's public
//! API from a profile, so they are byte-for-byte what `loadtest run` sends.
//!
//! Usage (after `cargo build --release --benches`):
//!   bare_loop --config benches/perf-128-nonstream.json --target http://127.0.0.1:18080 \
//!             --conns 64 --seconds 10 --cpu 0
//! Prints one JSON line: requests, rps, p50/p99 ms, cpu_s (process).

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::{LocalExecutorBuilder, Placement};
use hdrhistogram::Histogram;
use loadtest::plan;
use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

mod support;

async fn connection(
    addr: std::net::SocketAddr,
    request: Rc<Vec<u8>>,
    until: Instant,
    hist: Rc<RefCell<Histogram<u64>>>,
) {
    let mut stream = glommio::net::TcpStream::connect_timeout(addr, Duration::from_secs(5))
        .await
        .expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let mut buf = vec![0u8; 16 * 1024];
    while Instant::now() < until {
        let t0 = Instant::now();
        stream.write_all(&request).await.expect("write");
        let mut filled = 0;
        loop {
            let n = stream.read(&mut buf[filled..]).await.expect("read");
            assert!(n > 0, "server closed");
            filled += n;
            if let Some(length) = support::response_length(&buf[..filled]) {
                while filled < length {
                    let n = stream.read(&mut buf[filled..]).await.expect("read body");
                    assert!(n > 0, "server closed mid-body");
                    filled += n;
                }
                break;
            }
        }
        hist.borrow_mut()
            .record(t0.elapsed().as_micros() as u64)
            .expect("record");
    }
}

fn main() {
    let args = support::LoopArgs::parse(false);
    let request = Rc::new(support::request_bytes(&args.config, &args.target));
    let addr = plan::parse_target(&args.target, &loadtest::protocol::openai::OpenAiChat, &[])
        .expect("target")
        .addr;
    let conns = args.conns;
    let seconds = args.seconds;
    let request_bytes = request.as_ref().clone();
    let cpu_before = loadtest::host::process_cpu_seconds();
    let started = Instant::now();
    let hist = LocalExecutorBuilder::new(Placement::Fixed(args.cpu))
        .io_memory(64 << 10)
        .ring_depth(1024)
        .spawn(move || async move {
            let request = Rc::new(request_bytes);
            let hist = Rc::new(RefCell::new(
                Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap(),
            ));
            let until = Instant::now() + Duration::from_secs(seconds);
            let tasks: Vec<_> = (0..conns)
                .map(|_| {
                    glommio::spawn_local(connection(addr, request.clone(), until, hist.clone()))
                })
                .collect();
            for t in tasks {
                t.await;
            }
            Rc::try_unwrap(hist).ok().unwrap().into_inner()
        })
        .expect("executor")
        .join()
        .expect("join");
    let wall = started.elapsed().as_secs_f64();
    let cpu = loadtest::host::process_cpu_seconds() - cpu_before;
    drop(request);
    support::print_result("bare-glommio", "", &hist, wall, cpu);
}
