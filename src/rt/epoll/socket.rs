//! TCP streams and listeners on the epoll reactor: non-blocking sockets
//! registered once in its epoll set, read and written with one system call
//! each when they are ready.

use super::{self as reactor};
use crate::rt::driver;
use crate::rt::sockets::{set_nodelay, sockaddr_of, stream_socket};
use crate::rt::timers::Sleep;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// A connected TCP stream: a non-blocking socket whose readiness comes from
/// the executor's epoll set.
#[derive(Debug)]
pub struct Socket {
    fd: OwnedFd,
    /// Its slot in this executor's socket table.
    pub(in crate::rt) slot: usize,
}

impl Socket {
    /// Connects with a timeout and sets TCP_NODELAY. The address must be
    /// resolved already: nothing here may block the executor on DNS.
    ///
    /// Over 70 lines on purpose: the non-blocking connect is one state
    /// machine (start, wait for writability or the deadline, read the
    /// result), each error path named where it happens.
    pub async fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<Socket> {
        let deadline = std::time::Instant::now() + timeout;
        let fd = stream_socket(addr, true)?;
        set_nodelay(fd.as_raw_fd())?;
        let (storage, len) = sockaddr_of(addr);
        // SAFETY: `storage` holds a valid sockaddr of `len` bytes.
        let rc = unsafe {
            libc::connect(
                fd.as_raw_fd(),
                (&storage as *const libc::sockaddr_storage).cast(),
                len,
            )
        };
        if rc == 0 {
            return Socket::adopt(fd);
        }
        let error = io::Error::last_os_error();
        // EINTR leaves the connect running, as EINPROGRESS does.
        if !matches!(error.raw_os_error(), Some(libc::EINPROGRESS | libc::EINTR)) {
            return Err(error);
        }
        // Registered for reads only: on loopback the handshake has usually
        // completed inside connect(2), and then arming writes (and disarming
        // them after) would be two `epoll_ctl` calls for nothing. A wait
        // below arms them only when the connect is really in progress.
        let stream = Socket::adopt(fd)?;
        let (raw, slot) = (stream.fd.as_raw_fd(), stream.slot);
        let mut state = connect_state(raw);
        if state == ConnectState::InProgress {
            let timers = driver::current().ok_or_else(driver::no_driver)?.timers();
            let mut expiry = std::pin::pin!(Sleep::new(timers, deadline));
            state = std::future::poll_fn(|cx| loop {
                let state = connect_state(raw);
                if state != ConnectState::InProgress {
                    return std::task::Poll::Ready(Ok(state));
                }
                if expiry.as_mut().poll(cx).is_ready() {
                    return std::task::Poll::Ready(Err(io::Error::from(io::ErrorKind::TimedOut)));
                }
                if !reactor::wait(raw, slot, reactor::Direction::Write, cx) {
                    return std::task::Poll::Pending;
                }
            })
            .await?;
            reactor::disarm_out(raw, slot)?;
        }
        if state == ConnectState::Connected {
            return Ok(stream);
        }
        let mut error: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: SO_ERROR into a local int of the size given.
        let rc = unsafe {
            libc::getsockopt(
                raw,
                libc::SOL_SOCKET,
                libc::SO_ERROR,
                (&mut error as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Err(if error != 0 {
            io::Error::from_raw_os_error(error)
        } else {
            // A hang-up with no error recorded: the peer reset it at once.
            io::Error::from(io::ErrorKind::ConnectionReset)
        })
    }

    /// Puts a non-blocking socket into this executor's epoll set.
    fn adopt(fd: OwnedFd) -> io::Result<Socket> {
        let slot = reactor::register(&fd)?;
        Ok(Socket { fd, slot })
    }

    /// The poll behind `read`, for futures that hold a socket of either
    /// kind (`transport::Stream`).
    pub fn poll_read(
        &mut self,
        cx: &mut std::task::Context<'_>,
        buf: &mut [u8],
    ) -> std::task::Poll<io::Result<usize>> {
        let (fd, slot) = (self.fd.as_raw_fd(), self.slot);
        loop {
            // SAFETY: receives into a live, writable slice of its length.
            let n =
                unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
            if n >= 0 {
                return std::task::Poll::Ready(Ok(n as usize));
            }
            if let Some(done) = after_failure(fd, slot, reactor::Direction::Read, cx) {
                return done;
            }
        }
    }

    /// The poll behind `write_all`; `written` carries the progress
    /// between polls.
    pub fn poll_write_all(
        &mut self,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
        written: &mut usize,
    ) -> std::task::Poll<io::Result<()>> {
        let (fd, slot) = (self.fd.as_raw_fd(), self.slot);
        loop {
            if *written == buf.len() {
                return std::task::Poll::Ready(Ok(()));
            }
            let rest = &buf[*written..];
            // SAFETY: sends from a live slice of its length; MSG_NOSIGNAL
            // turns a closed peer into EPIPE instead of a signal.
            let n = unsafe {
                libc::send(
                    fd,
                    rest.as_ptr().cast(),
                    rest.len(),
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                )
            };
            if n >= 0 {
                *written += n as usize;
                continue;
            }
            if let Some(done) = after_failure(fd, slot, reactor::Direction::Write, cx) {
                return done;
            }
        }
    }

    /// Sends what it can of `bufs` with one `sendmsg` (rustls hands over
    /// every queued record at once), waiting while the socket has no room.
    pub fn poll_write_vectored(
        &mut self,
        cx: &mut std::task::Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> std::task::Poll<io::Result<usize>> {
        let (fd, slot) = (self.fd.as_raw_fd(), self.slot);
        loop {
            // SAFETY: a zeroed msghdr is valid; it points at `bufs`, live
            // `IoSlice`s (ABI-compatible with iovec) that outlive the call.
            let n = unsafe {
                let mut msg: libc::msghdr = std::mem::zeroed();
                msg.msg_iov = bufs.as_ptr() as *mut libc::iovec;
                msg.msg_iovlen = bufs.len().min(libc::UIO_MAXIOV as usize) as _;
                libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
            };
            if n >= 0 {
                return std::task::Poll::Ready(Ok(n as usize));
            }
            if let Some(done) = after_failure(fd, slot, reactor::Direction::Write, cx) {
                return done;
            }
        }
    }

    /// After a read found nothing: true if an event came in since (read
    /// again now), else the task's waker is kept for the next event.
    pub fn poll_readable(&self, cx: &mut std::task::Context<'_>) -> bool {
        reactor::wait(self.fd.as_raw_fd(), self.slot, reactor::Direction::Read, cx)
    }

    /// A read wait given up before its event was seen (see
    /// `reactor::abandon_read_wait`).
    pub fn abandon_read_wait(&self) {
        reactor::abandon_read_wait(self.slot);
    }

    /// The socket's file descriptor (for the timeout watchdog's shutdown).
    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// After a non-blocking call on a socket failed: `None` to make the call
/// again (interrupted, or an event came in since), else what the poll
/// returns (the error, or `Pending` with the task's waker stored until the
/// socket is ready).
fn after_failure<T>(
    fd: RawFd,
    slot: usize,
    direction: reactor::Direction,
    cx: &mut std::task::Context<'_>,
) -> Option<std::task::Poll<io::Result<T>>> {
    let error = io::Error::last_os_error();
    match error.kind() {
        io::ErrorKind::Interrupted => None,
        io::ErrorKind::WouldBlock if reactor::wait(fd, slot, direction, cx) => None,
        io::ErrorKind::WouldBlock => Some(std::task::Poll::Pending),
        _ => Some(std::task::Poll::Ready(Err(error))),
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        reactor::deregister(self.slot);
    }
}

/// A listening socket owned by one executor.
pub struct Listener {
    fd: OwnedFd,
    /// Its slot in the executor's socket table, from the first accept.
    slot: std::cell::Cell<Option<usize>>,
}

impl Listener {
    /// Takes ownership of a bound, listening, non-blocking socket. Its
    /// descriptor must have no duplicates: its close is what takes it out
    /// of the executor's epoll set (see `reactor::deregister`).
    pub fn from_owned(fd: OwnedFd) -> Listener {
        Listener {
            fd,
            slot: std::cell::Cell::new(None),
        }
    }

    /// Accepts one connection and sets TCP_NODELAY on it.
    pub async fn accept(&self) -> io::Result<Socket> {
        let slot = match self.slot.get() {
            Some(slot) => slot,
            None => {
                let slot = reactor::register(&self.fd)?;
                self.slot.set(Some(slot));
                slot
            }
        };
        let listener = self.fd.as_raw_fd();
        let fd = std::future::poll_fn(|cx| loop {
            // SAFETY: accept4 on our listening socket, without the peer
            // address; the result is checked before use.
            let fd = unsafe {
                libc::accept4(
                    listener,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                )
            };
            if fd >= 0 {
                // SAFETY: accept4 returned a new descriptor nobody else owns.
                return std::task::Poll::Ready(Ok(unsafe { OwnedFd::from_raw_fd(fd) }));
            }
            // A connection that went away before we took it: next one.
            if io::Error::last_os_error().raw_os_error() == Some(libc::ECONNABORTED) {
                continue;
            }
            if let Some(done) = after_failure(listener, slot, reactor::Direction::Read, cx) {
                return done;
            }
        })
        .await?;
        set_nodelay(fd.as_raw_fd())?;
        Socket::adopt(fd)
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.get() {
            reactor::deregister(slot);
        }
    }
}

/// Where a non-blocking connect stands.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum ConnectState {
    InProgress,
    /// Writable with no error or hang-up: the handshake completed.
    Connected,
    /// An error or hang-up: `SO_ERROR` says why.
    Failed,
}

/// Asks a zero-timeout `poll(2)` where a non-blocking connect stands.
fn connect_state(fd: RawFd) -> ConnectState {
    let mut pollfd = libc::pollfd {
        fd,
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: one valid pollfd, zero timeout.
    let n = unsafe { libc::poll(&mut pollfd, 1, 0) };
    if n <= 0 {
        return ConnectState::InProgress;
    }
    if pollfd.revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0 {
        ConnectState::Failed
    } else if pollfd.revents & libc::POLLOUT != 0 {
        ConnectState::Connected
    } else {
        ConnectState::InProgress
    }
}
