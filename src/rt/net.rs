//! TCP streams and listeners on whichever reactor the executor runs: one
//! set of operations for the engine, the mock and TLS, a `match` away from
//! the epoll socket (`epoll::Socket`) or the ring's (`uring::Socket`).

use super::driver::{self, Driver};
use super::{epoll, uring};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{OwnedFd, RawFd};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// A connected TCP stream.
#[derive(Debug)]
pub struct TcpStream(Inner);

#[derive(Debug)]
enum Inner {
    Epoll(epoll::Socket),
    Uring(uring::Socket),
}

impl TcpStream {
    /// Connects with a timeout and sets TCP_NODELAY. The address must be
    /// resolved already: nothing here may block the executor on DNS.
    pub async fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
        match driver::current() {
            Some(Driver::Uring(ring)) => uring::Socket::connect(ring, addr, timeout)
                .await
                .map(|s| TcpStream(Inner::Uring(s))),
            _ => epoll::Socket::connect(addr, timeout)
                .await
                .map(|s| TcpStream(Inner::Epoll(s))),
        }
    }

    /// Waits until the socket has something to read (data, the peer's
    /// close, or an error).
    ///
    /// For a caller that has just sent a request: its answer cannot be
    /// there yet, so a `read` right away would only look for nothing.
    /// Waiting first misses nothing: on epoll an edge reported while nobody
    /// waited is kept for the next wait; on io_uring the receive is armed
    /// here and its segments are kept until read.
    pub fn readable(&mut self) -> Readable<'_> {
        Readable {
            stream: self,
            waiting: false,
        }
    }

    /// Reads some bytes; 0 means the peer closed.
    pub async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        std::future::poll_fn(|cx| self.poll_read(cx, buf)).await
    }

    /// The poll behind `read`, for futures that hold a socket of either
    /// kind (`transport::Stream`).
    pub fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        match &mut self.0 {
            Inner::Epoll(s) => s.poll_read(cx, buf),
            Inner::Uring(s) => s.poll_read(cx, buf),
        }
    }

    /// As `poll_read`, but on the ring copies from the first segment that
    /// arrived only, for a reader that takes the rest with
    /// `poll_read_with`.
    pub fn poll_read_first(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.0 {
            Inner::Epoll(s) => s.poll_read(cx, buf),
            Inner::Uring(s) => s.poll_read_first(cx, buf),
        }
    }

    /// Reads some bytes and hands them to `take`, which returns how many
    /// it used: on the ring where they lie in its buffers (no copy; what
    /// `take` leaves stays for the next read), on epoll after reading them
    /// into `buf` (what `take` leaves is dropped). Ready with the number of
    /// bytes shown; 0 means the peer closed. `take` must not do I/O.
    pub fn poll_read_with(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
        take: &mut dyn FnMut(&[u8]) -> usize,
    ) -> Poll<io::Result<usize>> {
        match &mut self.0 {
            Inner::Epoll(s) => s.poll_read(cx, buf).map_ok(|n| {
                if n > 0 {
                    take(&buf[..n]);
                }
                n
            }),
            Inner::Uring(s) => s.poll_read_with(cx, take),
        }
    }

    /// Writes all of `buf`.
    pub async fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        let mut written = 0;
        std::future::poll_fn(|cx| self.poll_write_all(cx, buf, &mut written)).await
    }

    /// The poll behind `write_all`; `written` carries the progress between
    /// polls.
    pub fn poll_write_all(
        &mut self,
        cx: &mut Context<'_>,
        buf: &[u8],
        written: &mut usize,
    ) -> Poll<io::Result<()>> {
        match &mut self.0 {
            Inner::Epoll(s) => s.poll_write_all(cx, buf, written),
            Inner::Uring(s) => s.poll_write_all(cx, buf, written),
        }
    }

    /// Writes some of `bufs` (TLS hands over its queued records this way).
    pub fn poll_write_vectored(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.0 {
            Inner::Epoll(s) => s.poll_write_vectored(cx, bufs),
            Inner::Uring(s) => s.poll_write_vectored(cx, bufs),
        }
    }

    /// The socket's slot in the epoll set, when it is in one.
    #[cfg(test)]
    pub fn epoll_slot(&self) -> usize {
        match &self.0 {
            Inner::Epoll(s) => s.slot,
            Inner::Uring(_) => panic!("not an epoll socket"),
        }
    }

    /// The socket's file descriptor (for the timeout watchdog's shutdown).
    pub fn raw_fd(&self) -> RawFd {
        match &self.0 {
            Inner::Epoll(s) => s.raw_fd(),
            Inner::Uring(s) => s.raw_fd(),
        }
    }

    /// Closes the connection with a reset (RST) instead of a FIN, as a
    /// crashed or overloaded server's kernel does (the mock's `reset`
    /// fault).
    pub fn reset(self) {
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: sets an option on our own socket from a local struct of
        // the size given; closing it (on drop) then sends the RST.
        unsafe {
            libc::setsockopt(
                self.raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&linger as *const libc::linger).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            );
        }
        if let Inner::Uring(s) = self.0 {
            s.abort();
        }
    }
}

/// The future of [`TcpStream::readable`].
pub struct Readable<'a> {
    stream: &'a TcpStream,
    /// Its waker is (or was, until an event took it) in the socket's slot.
    waiting: bool,
}

impl Future for Readable<'_> {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // A wake-up is the answer: an epoll event wakes the waiting task
        // without setting the flag, and the ring wakes it for a segment,
        // the end or an error. A spurious one only costs the caller's
        // `read` one look that finds nothing.
        if std::mem::take(&mut self.waiting) {
            return Poll::Ready(());
        }
        let ready = match &self.stream.0 {
            Inner::Epoll(s) => s.poll_readable(cx),
            Inner::Uring(s) => s.poll_readable(cx),
        };
        if ready {
            return Poll::Ready(());
        }
        self.waiting = true;
        Poll::Pending
    }
}

impl Drop for Readable<'_> {
    fn drop(&mut self) {
        // Dropped while waiting on epoll: leave no waker behind that could
        // swallow the next edge, and keep an edge that was handed to us
        // unused. (The ring keeps segments until they are read.)
        if let (true, Inner::Epoll(s)) = (self.waiting, &self.stream.0) {
            s.abandon_read_wait();
        }
    }
}

/// A listening socket owned by one executor.
pub struct TcpListener(ListenerInner);

enum ListenerInner {
    Epoll(epoll::Listener),
    Uring(uring::Listener),
    /// The ring refused it (reported by every accept).
    Failed(io::Error),
}

impl TcpListener {
    /// Takes ownership of a bound, listening socket (see `bind_reuseport`).
    /// Must be used on the executor that will accept on it, and the
    /// descriptor must have no duplicates.
    pub fn from_owned(fd: OwnedFd) -> TcpListener {
        TcpListener(match driver::current() {
            Some(Driver::Uring(ring)) => match uring::Listener::from_owned(ring, fd) {
                Ok(l) => ListenerInner::Uring(l),
                Err(e) => ListenerInner::Failed(e),
            },
            _ => ListenerInner::Epoll(epoll::Listener::from_owned(fd)),
        })
    }

    /// Accepts one connection and sets TCP_NODELAY on it.
    pub async fn accept(&self) -> io::Result<TcpStream> {
        match &self.0 {
            ListenerInner::Epoll(l) => l.accept().await.map(|s| TcpStream(Inner::Epoll(s))),
            ListenerInner::Uring(l) => l.accept().await.map(|s| TcpStream(Inner::Uring(s))),
            ListenerInner::Failed(e) => Err(io::Error::new(e.kind(), e.to_string())),
        }
    }
}
