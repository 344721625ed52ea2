//! Tests of the runtime as a whole: streams, sleeps and the reactor on
//! real executors.

use super::executor::{start_executor_on, Reactor};
use super::*;
use super::{epoll as reactor, uring};
use futures_lite::FutureExt;
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::rc::Rc;
use std::time::Duration;

/// Both reactors, where this kernel runs io_uring (else epoll alone).
fn reactors() -> Vec<Reactor> {
    let mut all = vec![Reactor::Epoll];
    if let Ok(flags) = uring::probe() {
        all.push(Reactor::Uring(
            flags,
            uring::Sizes {
                entries: 256,
                buffers: 256,
                buffer_bytes: 4096,
                buffers_offered: 16,
            },
        ));
    }
    all
}

/// Runs `body` with a connected pair of streams (client, server) on a
/// fresh executor of each reactor, failing instead of hanging.
fn with_pair<F, Fut>(body: F)
where
    F: Fn(TcpStream, TcpStream) -> Fut + Send + Clone + 'static,
    Fut: Future<Output = ()> + 'static,
{
    for reactor in reactors() {
        with_pair_on(reactor, body.clone());
    }
}

/// As `with_pair`, on one reactor, failing after `LIMIT`.
fn with_pair_on<F, Fut>(reactor: Reactor, body: F)
where
    F: FnOnce(TcpStream, TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    const LIMIT: Duration = Duration::from_secs(20);
    let handle = start_executor_on("rt-test", None, reactor, move || async move {
        let listen = bind_reuseport("127.0.0.1:0".parse().unwrap(), 16).unwrap();
        let addr = local_addr(&listen).unwrap();
        let listener = TcpListener::from_owned(listen);
        let accepting = spawn(async move { listener.accept().await.unwrap() });
        let client = TcpStream::connect(addr, Duration::from_secs(5))
            .await
            .unwrap();
        let server = accepting.await;
        let finished = async {
            body(client, server).await;
            true
        };
        finished
            .or(async {
                sleep(LIMIT).await;
                false
            })
            .await
    })
    .unwrap();
    assert!(
        handle.join().unwrap(),
        "the exchange hung for {LIMIT:?} on {reactor:?}"
    );
}

/// The slots this executor's epoll set holds, read from the kernel's
/// own listing of it (`/proc/self/fdinfo`, one `tfd:` line an entry,
/// its `data:` in hex).
fn slots_in_epoll_set() -> Vec<usize> {
    let epoll = reactor::current().unwrap().epoll_fd();
    let listing = std::fs::read_to_string(format!("/proc/self/fdinfo/{epoll}")).unwrap();
    listing
        .lines()
        .filter(|line| line.starts_with("tfd:"))
        .map(|line| {
            let data = line.split_whitespace().skip_while(|w| *w != "data:").nth(1);
            usize::from_str_radix(data.unwrap(), 16).unwrap()
        })
        .collect()
}

#[test]
fn closing_a_stream_takes_it_out_of_the_epoll_set() {
    // `deregister` leaves the removal to the close (no EPOLL_CTL_DEL);
    // an entry left behind would report a dead socket's events under a
    // slot that a new connection reuses.
    with_pair_on(Reactor::Epoll, |client, server| async move {
        let (gone, kept) = (client.epoll_slot(), server.epoll_slot());
        let before = slots_in_epoll_set();
        assert!(
            before.contains(&gone) && before.contains(&kept),
            "{before:?}"
        );
        drop(client);
        let after = slots_in_epoll_set();
        assert!(
            !after.contains(&gone),
            "slot {gone} still watched: {after:?}"
        );
        assert!(after.contains(&kept), "{after:?}");
        drop(server);
        assert!(!slots_in_epoll_set().contains(&kept));
    });
}

#[test]
fn a_write_larger_than_the_socket_buffers_waits_for_the_reader() {
    // 32 MiB cannot fit in loopback's send and receive buffers, so the
    // writer meets EAGAIN and must be woken when the reader drains.
    const SIZE: usize = 32 << 20;
    with_pair(|mut client, mut server| async move {
        let data: Vec<u8> = (0..SIZE).map(|i| (i % 251) as u8).collect();
        let writer = spawn(async move {
            client.write_all(&data).await.unwrap();
            client
        });
        let mut got = Vec::with_capacity(SIZE);
        let mut buf = vec![0u8; 64 << 10];
        while got.len() < SIZE {
            let n = server.read(&mut buf).await.unwrap();
            assert!(n > 0, "early EOF after {} bytes", got.len());
            got.extend_from_slice(&buf[..n]);
        }
        drop(writer.await);
        assert!(got.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
    });
}

#[test]
fn a_waiting_reader_wakes_on_data_then_on_shutdown() {
    with_pair(|mut client, mut server| async move {
        let fd = client.raw_fd();
        let reader = spawn(async move {
            let mut buf = [0u8; 16];
            let n = client.read(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], b"ping");
            // The watchdog's way of ending a request: shutdown(2) from
            // elsewhere must wake this read with EOF.
            client.read(&mut buf).await.unwrap_or(0)
        });
        server.write_all(b"ping").await.unwrap();
        // Most likely the reader is parked on its second read by now;
        // if not, the read finds EOF at once and the assertion holds
        // all the same (the pause is for coverage, not correctness).
        sleep(Duration::from_millis(20)).await;
        shutdown_fd(fd);
        assert_eq!(reader.await, 0);
    });
}

#[test]
fn readable_waits_for_data_and_keeps_an_edge_nobody_waited_for() {
    with_pair(|mut client, mut server| async move {
        let ready = Rc::new(Cell::new(false));
        let seen = ready.clone();
        let waiter = spawn(async move {
            client.readable().await;
            seen.set(true);
            let mut buf = [0u8; 16];
            let n = client.read(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], b"pong");
            client
        });
        // Nothing was sent: however many driver turns pass, the wait
        // must still be pending.
        sleep(Duration::from_millis(5)).await;
        assert!(!ready.get(), "readable() returned before any data");
        server.write_all(b"pong").await.unwrap();
        let mut client = waiter.await;
        assert!(ready.get());
        // Data that arrives while nobody waits: its edge is reported to
        // the driver first and must be kept for the next wait (or seen
        // by it directly); either way the wait ends and the data is read.
        server.write_all(b"pong").await.unwrap();
        sleep(Duration::from_millis(5)).await;
        client.readable().await;
        let mut buf = [0u8; 16];
        let n = client.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"pong");
    });
}

#[test]
fn an_abandoned_readable_wait_keeps_the_edge_it_was_handed() {
    with_pair(|mut client, mut server| async move {
        let mut wait = Box::pin(client.readable());
        assert!(futures_lite::future::poll_once(wait.as_mut())
            .await
            .is_none());
        server.write_all(b"late").await.unwrap();
        // Driver turns pass: the event goes to the waker the wait left,
        // then the wait is dropped without being polled again.
        sleep(Duration::from_millis(5)).await;
        drop(wait);
        // The next wait must still see that edge. The deadline goes
        // first: `or` polls its left side first, and a wait that is
        // polled again after waiting reports ready, so the other order
        // would let the deadline's wake-up hide a lost edge.
        let saw = async {
            sleep(Duration::from_secs(2)).await;
            false
        }
        .or(async {
            client.readable().await;
            true
        })
        .await;
        assert!(saw, "the edge handed to the abandoned wait was lost");
        let mut buf = [0u8; 16];
        let n = client.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"late");
    });
}

/// Runs `body` on a fresh executor of each reactor and returns its
/// outputs.
fn on_executor<T, F, Fut>(body: F) -> Vec<T>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + Clone + 'static,
    Fut: Future<Output = T> + 'static,
{
    reactors()
        .into_iter()
        .map(|reactor| {
            start_executor_on("rt-test", None, reactor, body.clone())
                .unwrap()
                .join()
                .unwrap()
        })
        .collect()
}

/// Sleeps for each of `micros` at once, each checking it did not end
/// early; returns them in the order they ended.
async fn sleep_each(micros: &[u64]) -> Vec<u64> {
    let done = Rc::new(RefCell::new(Vec::new()));
    let start = std::time::Instant::now();
    let tasks: Vec<_> = micros
        .iter()
        .map(|&us| {
            let done = done.clone();
            spawn(async move {
                sleep(Duration::from_micros(us)).await;
                assert!(
                    start.elapsed() >= Duration::from_micros(us),
                    "{us} µs sleep ended early"
                );
                done.borrow_mut().push(us);
            })
        })
        .collect();
    for task in tasks {
        task.await;
    }
    let order = done.borrow().clone();
    order
}

#[test]
fn sleeps_end_in_deadline_order_and_never_early() {
    for order in on_executor(|| async { sleep_each(&[30_000, 10_000, 20_000]).await }) {
        assert_eq!(order, vec![10_000, 20_000, 30_000]);
    }
}

#[test]
fn an_executor_that_cannot_start_is_an_error_with_its_reason() {
    // A failure inside the new thread before the executor runs (here
    // its set-up panics; on a host without io_uring, glommio's ring)
    // used to surface only when something joined the thread.
    let start = start_executor("rt-test", None, || -> std::future::Ready<()> {
        panic!("set-up failed")
    });
    let error = match start {
        Ok(_) => panic!("the executor was reported started"),
        Err(e) => e.to_string(),
    };
    assert!(
        error.starts_with("cannot start executor rt-test: "),
        "{error}"
    );
    assert!(error.contains("set-up failed"), "{error}");
}

#[test]
fn without_epoll_pwait2_sleeps_and_sockets_still_wake_on_time() {
    // Kernels before 5.11 (and valgrind) lack `epoll_pwait2`; the
    // reactor then waits with `epoll_wait` and a timer descriptor. Sub-
    // millisecond sleeps must still end in order and never early, and
    // a reader parked in the same wait must wake on its data.
    with_pair_on(Reactor::Epoll, |mut client, mut server| async move {
        reactor::current().unwrap().use_timerfd_wait().unwrap();
        let reader = spawn(async move {
            let mut buf = [0u8; 16];
            let n = client.read(&mut buf).await.unwrap();
            buf[..n].to_vec()
        });
        assert_eq!(
            sleep_each(&[900, 300, 2500, 50]).await,
            vec![50, 300, 900, 2500]
        );
        server.write_all(b"pong").await.unwrap();
        assert_eq!(reader.await, b"pong");
        // The sleeps were ended by the timer, not by the kicker's signal.
        assert!(reactor::current().unwrap().timer_events() > 0);
    });
}

#[test]
fn a_due_sleep_runs_before_the_sockets_ready_in_the_same_turn() {
    // More ready sockets than one turn hands out, and a sleep that is
    // due by the same turn: the sleeper (the open-loop pacer, in the
    // engine) must not wait for every socket's task to run first.
    for log in on_executor(|| async {
        const PAIRS: usize = 100;
        let listen = bind_reuseport("127.0.0.1:0".parse().unwrap(), 256).unwrap();
        let addr = local_addr(&listen).unwrap();
        let listener = TcpListener::from_owned(listen);
        let log = Rc::new(RefCell::new(Vec::new()));
        let mut servers = Vec::new();
        let mut readers = Vec::new();
        for _ in 0..PAIRS {
            let mut client = TcpStream::connect(addr, Duration::from_secs(5))
                .await
                .unwrap();
            servers.push(listener.accept().await.unwrap());
            let log = log.clone();
            // Spawned tasks run at once, so each parks on its socket now.
            readers.push(spawn(async move {
                client.readable().await;
                log.borrow_mut().push("socket");
            }));
        }
        let sleeper = {
            let log = log.clone();
            spawn(async move {
                sleep(Duration::from_millis(1)).await;
                log.borrow_mut().push("sleep");
            })
        };
        for server in &mut servers {
            server.write_all(b"x").await.unwrap();
        }
        // Hold the thread past the sleep's deadline: the driver's next
        // turn finds it due and every socket readable.
        std::thread::sleep(Duration::from_millis(5));
        sleeper.await;
        for reader in readers {
            reader.await;
        }
        let log = log.borrow().clone();
        log
    }) {
        assert_eq!(log.len(), 101);
        assert_eq!(log[0], "sleep", "the due sleep ran after {:?}", &log[..3]);
    }
}

#[test]
fn a_refused_connect_fails_at_once_with_its_reason() {
    for error in on_executor(|| async {
        // Bind a port, then close it: nothing listens there now.
        let fd = bind_reuseport("127.0.0.1:0".parse().unwrap(), 1).unwrap();
        let addr = local_addr(&fd).unwrap();
        drop(fd);
        TcpStream::connect(addr, Duration::from_secs(10))
            .await
            .unwrap_err()
    }) {
        assert_eq!(error.raw_os_error(), Some(libc::ECONNREFUSED), "{error}");
    }
}

#[test]
fn a_connect_that_gets_no_answer_times_out() {
    for (error, waited) in on_executor(|| async {
        // A listener that never accepts drops SYNs once its accept
        // queue is full, so a further connect gets no answer at all.
        let listen = bind_reuseport("127.0.0.1:0".parse().unwrap(), 1).unwrap();
        let addr = local_addr(&listen).unwrap();
        let mut held = Vec::new();
        let start = std::time::Instant::now();
        loop {
            match TcpStream::connect(addr, Duration::from_millis(300)).await {
                Ok(stream) => held.push(stream),
                Err(error) => return (error, start.elapsed()),
            }
            assert!(held.len() < 64, "the accept queue never filled");
        }
    }) {
        // Our own timeout, not the kernel's (ETIMEDOUT after its SYN
        // retries, about two minutes later).
        assert_eq!(error.kind(), io::ErrorKind::TimedOut, "{error}");
        assert_eq!(error.raw_os_error(), None, "{error}");
        assert!(
            waited >= Duration::from_millis(300),
            "gave up after {waited:?}"
        );
    }
}
