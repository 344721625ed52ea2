//! TCP streams and listeners on the ring: what a task's read, write,
//! connect and accept become.
//!
//! - A read copies from the segments the multishot receive has handed
//!   over (or, `poll_read_with`, hands them to the reader where they lie)
//!   and gives each buffer back once it is read; finding none, it arms the
//!   receive (once per connection, until it ends) and waits.
//! - A write copies the bytes into the socket's send buffer and queues one
//!   `Send`; it is done when they are queued, as a write into a kernel
//!   socket buffer is. Bytes written while a send is in flight wait in a
//!   second buffer, and a writer waits once `limits::URING_SEND_BACKLOG_MAX`
//!   bytes are not yet taken. A send that fails is reported by the next
//!   read or write.
//! - The socket is closed by the ring (`Close`, after cancelling what is
//!   in flight) at the driver's next turn.

use super::ops;
use super::Ring;
use crate::limits;
use crate::rt::sockets::{set_nodelay, sockaddr_of, stream_socket};
use crate::rt::timers::Sleep;
use io_uring::squeue;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// A connected stream on the ring.
pub struct Socket {
    ring: Rc<Ring>,
    fd: RawFd,
    slot: u32,
    generation: u32,
    /// Closed by `abort`: cancel the send too.
    aborted: bool,
}

impl std::fmt::Debug for Socket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "uring::Socket({})", self.fd)
    }
}

impl Socket {
    fn adopt(ring: Rc<Ring>, fd: OwnedFd) -> Socket {
        let fd = fd.into_raw_fd();
        let (slot, generation) = ring.state.borrow_mut().socks.add(fd);
        Socket {
            ring,
            fd,
            slot,
            generation,
            aborted: false,
        }
    }

    /// Runs `f` on this socket's state; an entry it returns is queued.
    fn with<T>(&self, f: impl FnOnce(&mut ops::Sock, u32) -> (T, Option<squeue::Entry>)) -> T {
        let (out, entry) = {
            let mut state = self.ring.state.borrow_mut();
            let sock = state
                .socks
                .get_mut(self.slot, self.generation)
                .expect("an open socket's slot");
            f(sock, self.slot)
        };
        if let Some(entry) = entry {
            self.ring.push(entry);
        }
        out
    }

    /// Connects within `timeout` and sets TCP_NODELAY; the connect is an
    /// operation on the ring.
    pub async fn connect(
        ring: Rc<Ring>,
        addr: SocketAddr,
        timeout: Duration,
    ) -> io::Result<Socket> {
        let deadline = Instant::now() + timeout;
        let fd = stream_socket(addr, false)?;
        set_nodelay(fd.as_raw_fd())?;
        let timers = ring.common.timers.clone();
        let socket = Socket::adopt(ring, fd);
        socket.with(|sock, slot| {
            sock.addr = Some(Box::new(sockaddr_of(addr)));
            sock.inflight += 1;
            ((), Some(ops::connect_entry(sock, slot)))
        });
        let mut expiry = std::pin::pin!(Sleep::new(timers, deadline));
        let result = std::future::poll_fn(|cx| {
            let done = socket.with(|sock, _| {
                if sock.connected.is_none() {
                    sock.writer = Some(cx.waker().clone());
                }
                (sock.connected.take(), None)
            });
            match done {
                Some(result) => Poll::Ready(Ok(result)),
                None if expiry.as_mut().poll(cx).is_ready() => {
                    Poll::Ready(Err(io::Error::from(io::ErrorKind::TimedOut)))
                }
                None => Poll::Pending,
            }
        })
        .await?;
        match result {
            0 => Ok(socket),
            errno => Err(io::Error::from_raw_os_error(-errno)),
        }
    }

    /// Reads some bytes; 0 means the peer closed.
    pub fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        self.poll_copy(cx, buf, usize::MAX)
    }

    /// As `poll_read`, but copies from the first segment that arrived
    /// only: a reader that will take the rest in place
    /// (`poll_read_with`) copies no more than it must.
    pub fn poll_read_first(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_copy(cx, buf, 1)
    }

    /// Copies from at most `segments` segments into `buf`.
    fn poll_copy(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
        mut segments: usize,
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let mut n = 0;
        self.poll_read_with(cx, &mut |data: &[u8]| {
            if segments == 0 {
                return 0;
            }
            segments -= 1;
            let take = data.len().min(buf.len() - n);
            buf[n..n + take].copy_from_slice(&data[..take]);
            n += take;
            take
        })
        .map_ok(|_| n)
    }

    /// Hands what has arrived to `take` where it lies in the ring's
    /// buffers, without copying it out: segment by segment, in order,
    /// until `take` uses less than it was shown (it returns how much it
    /// used; the rest stays for the next read). Ready with the number of
    /// bytes shown; 0 means the peer closed.
    ///
    /// `take` runs while the ring's state is borrowed, so it must not do
    /// I/O on this reactor.
    pub fn poll_read_with(
        &mut self,
        cx: &mut Context<'_>,
        take: &mut dyn FnMut(&[u8]) -> usize,
    ) -> Poll<io::Result<usize>> {
        let mut state = self.ring.state.borrow_mut();
        let super::State { socks, bufs, .. } = &mut *state;
        let sock = socks
            .get_mut(self.slot, self.generation)
            .expect("an open socket's slot");
        let mut shown = 0;
        while let Some(&(id, len)) = sock.chunks.front() {
            let data = &bufs.data(id, len as usize)[sock.consumed..];
            let avail = data.len();
            let used = take(data).min(avail);
            shown += avail;
            sock.consumed += used;
            if sock.consumed == len as usize {
                sock.chunks.pop_front();
                sock.consumed = 0;
                bufs.give_back(id);
            }
            if used < avail {
                break;
            }
        }
        if shown > 0 {
            return Poll::Ready(Ok(shown));
        }
        if let Some(end) = sock.end {
            return Poll::Ready(if end == 0 {
                Ok(0)
            } else {
                Err(io::Error::from_raw_os_error(end))
            });
        }
        if let Some(errno) = sock.send_error {
            return Poll::Ready(Err(io::Error::from_raw_os_error(errno)));
        }
        let entry = arm(sock, self.slot, cx);
        drop(state);
        if let Some(entry) = entry {
            self.ring.push(entry);
        }
        Poll::Pending
    }

    /// Whether a read would find something (data, the end or an error);
    /// if not, the receive is armed and the task waits for it.
    pub fn poll_readable(&self, cx: &mut Context<'_>) -> bool {
        self.with(|sock, slot| {
            if sock.has_news() {
                return (true, None);
            }
            (false, arm(sock, slot, cx))
        })
    }

    /// Queues `bufs` for sending; all of it, or nothing while the bytes
    /// not yet taken by the kernel exceed the backlog bound.
    pub fn poll_write_vectored(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.with(|sock, slot| {
            if let Some(errno) = sock.send_error {
                return (Poll::Ready(Err(io::Error::from_raw_os_error(errno))), None);
            }
            if sock.backlog() >= limits::URING_SEND_BACKLOG_MAX {
                sock.writer = Some(cx.waker().clone());
                return (Poll::Pending, None);
            }
            let target = if sock.send_busy {
                &mut sock.queued
            } else {
                sock.sending.clear();
                sock.sent = 0;
                &mut sock.sending
            };
            let mut n = 0;
            for buf in bufs {
                target.extend_from_slice(buf);
                n += buf.len();
            }
            if sock.send_busy || n == 0 {
                return (Poll::Ready(Ok(n)), None);
            }
            sock.send_busy = true;
            sock.inflight += 1;
            (Poll::Ready(Ok(n)), Some(ops::send_entry(sock, slot)))
        })
    }

    /// Writes all of `buf` (see `poll_write_vectored`); `written` carries
    /// the progress between polls.
    pub fn poll_write_all(
        &mut self,
        cx: &mut Context<'_>,
        buf: &[u8],
        written: &mut usize,
    ) -> Poll<io::Result<()>> {
        while *written < buf.len() {
            match self.poll_write_vectored(cx, &[io::IoSlice::new(&buf[*written..])]) {
                Poll::Ready(Ok(n)) => *written += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }

    pub fn raw_fd(&self) -> RawFd {
        self.fd
    }
}

/// Arms the socket's multishot receive unless it is armed or waits for
/// buffers, and keeps the task's waker.
fn arm(sock: &mut ops::Sock, slot: u32, cx: &mut Context<'_>) -> Option<squeue::Entry> {
    if !sock
        .reader
        .as_ref()
        .is_some_and(|w| w.will_wake(cx.waker()))
    {
        sock.reader = Some(cx.waker().clone());
    }
    if sock.recv_armed || sock.starved {
        return None;
    }
    sock.recv_armed = true;
    sock.inflight += 1;
    Some(ops::recv_entry(sock, slot))
}

/// Closes a socket of the ring: cancels what is in flight (all of it, or
/// all but the send) and closes the descriptor, at the driver's next turn
/// or once the send is done (see `Socks::close`).
fn close(ring: &Ring, slot: u32, generation: u32, abort: bool) {
    let entries = {
        let mut state = ring.state.borrow_mut();
        let super::State { socks, bufs, .. } = &mut *state;
        socks.close(slot, generation, bufs, abort)
    };
    for entry in entries {
        ring.push(entry);
    }
}

impl Socket {
    /// Closes at once, dropping bytes not yet sent (after `SO_LINGER` 0,
    /// the close then sends a reset).
    pub fn abort(mut self) {
        self.aborted = true;
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        close(&self.ring, self.slot, self.generation, self.aborted);
    }
}

/// A listening socket on the ring, accepting with one multishot accept.
pub struct Listener {
    socket: Socket,
}

impl Listener {
    /// Takes ownership of a bound, listening socket.
    pub fn from_owned(ring: Rc<Ring>, fd: OwnedFd) -> io::Result<Listener> {
        set_blocking(fd.as_raw_fd())?;
        let socket = Socket::adopt(ring, fd);
        socket.with(|sock, _| {
            sock.listener = true;
            ((), None)
        });
        Ok(Listener { socket })
    }

    /// Accepts one connection and sets TCP_NODELAY on it.
    pub async fn accept(&self) -> io::Result<Socket> {
        let s = &self.socket;
        let fd = std::future::poll_fn(|cx| {
            s.with(|sock, slot| {
                if let Some(fd) = sock.accepted.pop_front() {
                    return (Poll::Ready(Ok(fd)), None);
                }
                if let Some(errno) = sock.end.take() {
                    return (Poll::Ready(Err(io::Error::from_raw_os_error(errno))), None);
                }
                sock.reader = Some(cx.waker().clone());
                if sock.recv_armed {
                    return (Poll::Pending, None);
                }
                sock.recv_armed = true;
                sock.inflight += 1;
                (Poll::Pending, Some(ops::accept_entry(sock, slot)))
            })
        })
        .await?;
        // SAFETY: a descriptor the kernel just gave us, owned by nobody.
        let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        set_nodelay(fd.as_raw_fd())?;
        Ok(Socket::adopt(self.socket.ring.clone(), fd))
    }
}

/// Clears O_NONBLOCK: the ring waits for the socket itself, and an
/// operation on a non-blocking socket could come back with EAGAIN.
fn set_blocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own, with plain integer flags.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}
