//! Tests of the ring's own mechanics: the provided-buffer ring running dry,
//! and operations outliving the futures that started them.

use super::*;
use crate::rt::executor::{start_executor_on, Reactor};
use crate::rt::{bind_reuseport, local_addr, sleep, spawn, TcpListener, TcpStream};
use std::time::Duration;

/// Runs `body` on an executor whose ring has `buffers` receive buffers of
/// `bytes` each, all offered; `None` where this kernel has no usable ring.
fn on_small_ring<T, F, Fut>(buffers: u16, bytes: usize, body: F) -> Option<T>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T> + 'static,
{
    on_ring(buffers, bytes, buffers as usize, body)
}

/// As `on_small_ring`, offering the kernel at least `offered` buffers.
fn on_ring<T, F, Fut>(buffers: u16, bytes: usize, offered: usize, body: F) -> Option<T>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T> + 'static,
{
    let flags = probe().ok()?;
    let sizes = Sizes {
        entries: 64,
        buffers,
        buffer_bytes: bytes,
        buffers_offered: offered,
    };
    let reactor = Reactor::Uring(flags, sizes);
    Some(
        start_executor_on("uring-test", None, reactor, body)
            .unwrap()
            .join()
            .unwrap(),
    )
}

/// `count` connected pairs (client, server) on this executor.
async fn pairs(count: usize) -> Vec<(TcpStream, TcpStream)> {
    let listen = bind_reuseport("127.0.0.1:0".parse().unwrap(), 256).unwrap();
    let addr = local_addr(&listen).unwrap();
    let listener = TcpListener::from_owned(listen);
    let mut out = Vec::new();
    for _ in 0..count {
        let client = TcpStream::connect(addr, Duration::from_secs(5))
            .await
            .unwrap();
        out.push((client, listener.accept().await.unwrap()));
    }
    out
}

fn pattern(connection: usize, len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + connection * 13) as u8).collect()
}

/// 16 connections each sent 1,000 bytes before anyone reads, through a
/// ring of `buffers` buffers of 64 bytes offering at least `offered`:
/// whether a receive ever found the ring empty, the offered set's size
/// then, and each connection's bytes as read.
type Answers = (u64, usize, Vec<(usize, Vec<u8>)>);

const CONNECTIONS: usize = 16;
const BYTES: usize = 1000;

fn answers_through(buffers: u16, offered: usize) -> Option<Answers> {
    on_ring(buffers, 64, offered, || async {
        let mut clients = Vec::new();
        for (i, (mut client, mut server)) in pairs(CONNECTIONS).await.into_iter().enumerate() {
            // Arm every receive before any answer is sent.
            let mut probe = Box::pin(client.readable());
            assert!(futures_lite::future::poll_once(probe.as_mut())
                .await
                .is_none());
            drop(probe);
            server.write_all(&pattern(i, BYTES)).await.unwrap();
            clients.push((client, server));
        }
        // Let the answers arrive while nobody reads: the ring empties.
        sleep(Duration::from_millis(20)).await;
        let starved = current_ring().state.borrow().starvations;
        let readers: Vec<_> = clients
            .into_iter()
            .enumerate()
            .map(|(i, (mut client, server))| {
                spawn(async move {
                    let mut got = Vec::new();
                    let mut buf = [0u8; 100];
                    while got.len() < BYTES {
                        let n = client.read(&mut buf).await.unwrap();
                        assert!(n > 0, "connection {i}: EOF after {} bytes", got.len());
                        got.extend_from_slice(&buf[..n]);
                    }
                    drop(server);
                    (i, got)
                })
            })
            .collect();
        let mut all = Vec::new();
        for reader in readers {
            all.push(reader.await);
        }
        let target = current_ring().state.borrow().bufs.target();
        (starved, target, all)
    })
}

/// Asserts that the ring ran dry (else the test tested nothing) and that
/// every connection's bytes arrived whole and in order.
fn ran_dry_and_arrived_whole(starved: u64, all: Vec<(usize, Vec<u8>)>) {
    assert!(
        starved > 0,
        "the ring never ran dry: the test tests nothing"
    );
    for (i, got) in all {
        assert_eq!(got, pattern(i, BYTES), "connection {i}'s bytes");
    }
}

#[test]
fn more_answers_than_receive_buffers_wait_and_arrive_whole() {
    // 4 buffers for 16,000 bytes: the ring runs dry many times over. Every
    // receive that finds no buffer must wait for buffers to come back and
    // then go on, with nothing lost, duplicated or reordered.
    let Some((starved, _, all)) = answers_through(4, 4) else {
        eprintln!("no usable io_uring here; skipped");
        return;
    };
    ran_dry_and_arrived_whole(starved, all);
}

#[test]
fn a_ring_offering_few_buffers_offers_more_when_they_run_out_and_loses_nothing() {
    // 64 buffers, 2 offered at first: the first turn's receives find the
    // ring empty while 62 are spare, so the offer grows, and the answers
    // still arrive whole and in order.
    let Some((starved, target, all)) = answers_through(64, 2) else {
        eprintln!("no usable io_uring here; skipped");
        return;
    };
    assert!(target > 2, "the offer stayed at {target}");
    ran_dry_and_arrived_whole(starved, all);
}

#[test]
fn a_closed_socket_is_closed_for_the_peer_even_with_a_receive_armed() {
    // The multishot receive holds the socket open inside the kernel; the
    // close must cancel it, or the peer would never see the FIN.
    let outcome = on_small_ring(16, 4096, || async {
        let (mut client, mut server) = pairs(1).await.pop().unwrap();
        let mut wait = Box::pin(client.readable());
        assert!(futures_lite::future::poll_once(wait.as_mut())
            .await
            .is_none());
        drop(wait);
        drop(client);
        let mut buf = [0u8; 8];
        server.read(&mut buf).await.unwrap()
    });
    if let Some(n) = outcome {
        assert_eq!(n, 0, "the peer read data instead of EOF");
    }
}

#[test]
fn a_large_write_is_sent_whole_behind_the_first() {
    // Writes while a send is in flight queue behind it, and one larger
    // than the backlog bound waits for the kernel to take the first.
    const SIZE: usize = 3 * crate::limits::URING_SEND_BACKLOG_MAX;
    let outcome = on_small_ring(64, 4096, || async {
        let (mut client, mut server) = pairs(1).await.pop().unwrap();
        let data: Vec<u8> = (0..SIZE).map(|i| (i % 251) as u8).collect();
        let writer = spawn(async move {
            for part in data.chunks(SIZE / 3 + 1) {
                client.write_all(part).await.unwrap();
            }
            client
        });
        let mut got = Vec::with_capacity(SIZE);
        let mut buf = vec![0u8; 64 << 10];
        while got.len() < SIZE {
            let n = server.read(&mut buf).await.unwrap();
            assert!(n > 0, "EOF after {} bytes", got.len());
            got.extend_from_slice(&buf[..n]);
        }
        drop(writer.await);
        got.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8)
    });
    if let Some(intact) = outcome {
        assert!(intact, "the bytes arrived changed");
    }
}

#[test]
fn bytes_written_just_before_a_close_all_arrive_then_the_end() {
    // A send in flight and bytes queued behind it when the socket is
    // dropped: all of them must still go out, to this peer only, before
    // the close (a send submitted after the descriptor's close would go
    // to whatever socket reuses its number).
    const PART: usize = 200 * 1024;
    let outcome = on_small_ring(64, 4096, || async {
        let mut all = pairs(2).await;
        let (mut bystander_client, mut bystander_server) = all.pop().unwrap();
        let (mut client, mut server) = all.pop().unwrap();
        let data: Vec<u8> = (0..3 * PART).map(|i| (i % 239) as u8).collect();
        for part in data.chunks(PART) {
            client.write_all(part).await.unwrap();
        }
        drop(client);
        // New sockets now, so a reused descriptor number would be theirs.
        let mut others = pairs(4).await;
        let mut got = Vec::new();
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = server.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        // Nothing arrived anywhere else.
        bystander_client.write_all(b"x").await.unwrap();
        let n = bystander_server.read(&mut buf).await.unwrap();
        let stray = futures_lite::future::poll_once(others[0].1.read(&mut buf)).await;
        others.clear();
        (got == data, n, stray.is_none())
    });
    if let Some((whole, n, quiet)) = outcome {
        assert!(
            whole,
            "the bytes written before the close did not all arrive"
        );
        assert_eq!(n, 1, "the bystander got stray bytes");
        assert!(quiet, "a new socket got bytes");
    }
}

#[test]
fn a_reader_in_place_sees_each_segment_and_what_it_leaves_comes_again() {
    // 64-byte buffers, 1,000 bytes sent: the reader is shown the bytes
    // where they lie, at most one buffer's worth at a time, in order; it
    // takes at most 10 of each showing, and the rest is shown again.
    const BYTES: usize = 1000;
    let outcome = on_small_ring(8, 64, || async {
        let (mut client, mut server) = pairs(1).await.pop().unwrap();
        server.write_all(&pattern(3, BYTES)).await.unwrap();
        drop(server);
        let (mut got, mut largest_showing) = (Vec::new(), 0);
        loop {
            let shown = std::future::poll_fn(|cx| {
                client.poll_read_with(cx, &mut [], &mut |data: &[u8]| {
                    largest_showing = largest_showing.max(data.len());
                    let take = data.len().min(10);
                    got.extend_from_slice(&data[..take]);
                    take
                })
            })
            .await
            .unwrap();
            if shown == 0 {
                break;
            }
        }
        (got, largest_showing)
    });
    let Some((got, largest_showing)) = outcome else {
        return;
    };
    assert_eq!(got, pattern(3, BYTES));
    assert!(
        largest_showing <= 64,
        "shown {largest_showing} bytes at once"
    );
}

fn current_ring() -> Rc<Ring> {
    match crate::rt::driver::current() {
        Some(crate::rt::driver::Driver::Uring(ring)) => ring,
        _ => panic!("not on a ring"),
    }
}
