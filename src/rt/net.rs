//! TCP streams and listeners on the executor's reactor: non-blocking
//! sockets registered once in its epoll set, and the socket-address
//! helpers they need.

use super::reactor;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::time::Duration;

/// A connected TCP stream: a non-blocking socket whose readiness comes from
/// the executor's epoll set (see `reactor`).
#[derive(Debug)]
pub struct TcpStream {
    fd: OwnedFd,
    /// Its slot in this executor's socket table.
    pub(super) slot: usize,
}

impl TcpStream {
    /// Connects with a timeout and sets TCP_NODELAY. The address must be
    /// resolved already: nothing here may block the executor on DNS.
    ///
    /// Over 70 lines on purpose: the non-blocking connect is one state
    /// machine (start, wait for writability or the deadline, read the
    /// result), each error path named where it happens.
    pub async fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
        let deadline = std::time::Instant::now() + timeout;
        let fd = stream_socket(addr)?;
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
            return TcpStream::adopt(fd);
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
        let stream = TcpStream::adopt(fd)?;
        let (raw, slot) = (stream.fd.as_raw_fd(), stream.slot);
        let mut state = connect_state(raw);
        if state == ConnectState::InProgress {
            let reactor = reactor::current().ok_or_else(reactor::no_reactor)?;
            let mut expiry = std::pin::pin!(reactor::Sleep::new(reactor, deadline));
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
    fn adopt(fd: OwnedFd) -> io::Result<TcpStream> {
        let slot = reactor::register(&fd)?;
        Ok(TcpStream { fd, slot })
    }

    /// Waits until the socket has reported something to read (data, the
    /// peer's close, or an error) since the last read that found nothing.
    ///
    /// For a caller that has just sent a request: its answer cannot be
    /// there yet, so a `read` right away would only cost a `recv` that
    /// finds nothing. Waiting first misses nothing: the socket is
    /// edge-triggered, and an edge reported while nobody waited is kept
    /// for the next wait. Ready at once when no reactor runs (the caller's
    /// `read` then blocks the usual way).
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

    /// Writes all of `buf`.
    pub async fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        let mut written = 0;
        std::future::poll_fn(|cx| self.poll_write_all(cx, buf, &mut written)).await
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

    /// Runs `op`, a non-blocking read-side call on this socket (TLS feeds
    /// its record layer this way), until it stops reporting `WouldBlock`,
    /// waiting for the socket to become readable between tries.
    pub async fn read_with<T>(&mut self, op: impl FnMut() -> io::Result<T>) -> io::Result<T> {
        self.ready_with(reactor::Direction::Read, op).await
    }

    /// As `read_with`, for a write-side call.
    pub async fn write_with<T>(&mut self, op: impl FnMut() -> io::Result<T>) -> io::Result<T> {
        self.ready_with(reactor::Direction::Write, op).await
    }

    /// For a hand-written poll after a non-blocking call found the socket
    /// with nothing to read: true if an event came in since (try again
    /// now), else the task's waker is kept for the next event.
    pub fn poll_readable(&self, cx: &mut std::task::Context<'_>) -> bool {
        reactor::wait(self.fd.as_raw_fd(), self.slot, reactor::Direction::Read, cx)
    }

    /// As `poll_readable`, for a socket with no room to write.
    pub fn poll_writable(&self, cx: &mut std::task::Context<'_>) -> bool {
        reactor::wait(
            self.fd.as_raw_fd(),
            self.slot,
            reactor::Direction::Write,
            cx,
        )
    }

    async fn ready_with<T>(
        &mut self,
        direction: reactor::Direction,
        mut op: impl FnMut() -> io::Result<T>,
    ) -> io::Result<T> {
        let (fd, slot) = (self.fd.as_raw_fd(), self.slot);
        std::future::poll_fn(|cx| loop {
            match op() {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if !reactor::wait(fd, slot, direction, cx) {
                        return std::task::Poll::Pending;
                    }
                }
                done => return std::task::Poll::Ready(done),
            }
        })
        .await
    }

    /// The socket's file descriptor (for the timeout watchdog's shutdown).
    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
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
                self.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&linger as *const libc::linger).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            );
        }
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

impl Drop for TcpStream {
    fn drop(&mut self) {
        reactor::deregister(self.slot);
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
    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        // An event wakes the waiting task without setting the flag, so the
        // poll after a wait is the answer. A spurious wake-up only costs
        // the caller's `read` one `recv` that finds nothing.
        if std::mem::take(&mut self.waiting) {
            return std::task::Poll::Ready(());
        }
        let (fd, slot) = (self.stream.fd.as_raw_fd(), self.stream.slot);
        if reactor::wait(fd, slot, reactor::Direction::Read, cx) {
            return std::task::Poll::Ready(());
        }
        self.waiting = true;
        std::task::Poll::Pending
    }
}

impl Drop for Readable<'_> {
    fn drop(&mut self) {
        // Dropped while waiting: leave no waker behind that could swallow
        // the next edge, and keep an edge that was handed to us unused.
        if self.waiting {
            reactor::abandon_read_wait(self.stream.slot);
        }
    }
}

/// A listening socket owned by one executor.
pub struct TcpListener {
    fd: OwnedFd,
    /// Its slot in the executor's socket table, from the first accept.
    slot: std::cell::Cell<Option<usize>>,
}

impl TcpListener {
    /// Takes ownership of a bound, listening, non-blocking socket (see
    /// `bind_reuseport`). Must be used on the executor that will accept on
    /// it, and the descriptor must have no duplicates: its close is what
    /// takes it out of the executor's epoll set (see `reactor::deregister`).
    pub fn from_owned(fd: OwnedFd) -> TcpListener {
        TcpListener {
            fd,
            slot: std::cell::Cell::new(None),
        }
    }

    /// Accepts one connection and sets TCP_NODELAY on it.
    pub async fn accept(&self) -> io::Result<TcpStream> {
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
        TcpStream::adopt(fd)
    }
}

impl Drop for TcpListener {
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

/// A new non-blocking, close-on-exec TCP socket for `addr`'s family.
fn stream_socket(addr: SocketAddr) -> io::Result<OwnedFd> {
    let domain = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain socket(2) call; the result is checked before use.
    let fd = unsafe {
        libc::socket(
            domain,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket(2) and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn set_nodelay(fd: RawFd) -> io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: `one` outlives the call and its size is passed correctly.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Binds a non-blocking TCP listener with SO_REUSEPORT and a large backlog.
///
/// Several executors can each bind one on the same address; the kernel then
/// spreads new connections across them. Port 0 picks a free port; bind the
/// others to the port `local_addr` reports.
pub fn bind_reuseport(addr: SocketAddr, backlog: i32) -> io::Result<OwnedFd> {
    let owned = stream_socket(addr)?;
    let fd = owned.as_raw_fd();
    let one: libc::c_int = 1;
    for option in [libc::SO_REUSEADDR, libc::SO_REUSEPORT] {
        // SAFETY: `one` outlives the call and its size is passed correctly.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                option,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    let (storage, len) = sockaddr_of(addr);
    // SAFETY: `storage` holds a valid sockaddr of `len` bytes.
    if unsafe { libc::bind(fd, (&storage as *const libc::sockaddr_storage).cast(), len) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: plain listen(2) on a socket we own.
    if unsafe { libc::listen(fd, backlog) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(owned)
}

/// The address a socket is bound to.
pub fn local_addr(fd: &OwnedFd) -> io::Result<SocketAddr> {
    // SAFETY: `sockaddr_storage` is plain data; all-zero is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `storage` and `len` are valid for writes of `len` bytes.
    let rc = unsafe {
        libc::getsockname(
            fd.as_raw_fd(),
            (&mut storage as *mut libc::sockaddr_storage).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    match i32::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the kernel wrote a sockaddr_in for an AF_INET socket.
            let sin: libc::sockaddr_in =
                unsafe { *(&storage as *const libc::sockaddr_storage).cast() };
            let ip = std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Ok(SocketAddr::from((ip, u16::from_be(sin.sin_port))))
        }
        libc::AF_INET6 => {
            // SAFETY: the kernel wrote a sockaddr_in6 for an AF_INET6 socket.
            let sin6: libc::sockaddr_in6 =
                unsafe { *(&storage as *const libc::sockaddr_storage).cast() };
            let ip = std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Ok(SocketAddr::from((ip, u16::from_be(sin6.sin6_port))))
        }
        _ => Err(io::Error::other("unknown address family")),
    }
}

fn sockaddr_of(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: `sockaddr_storage` is plain data; all-zero is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(v4) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*v4.ip()).to_be(),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(v6) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: v6.port().to_be(),
                sin6_flowinfo: v6.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: v6.ip().octets(),
                },
                sin6_scope_id: v6.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

/// Shuts a socket down in both directions, waking any pending read with EOF.
/// Used by the timeout watchdog and to stop listeners; errors (an fd already
/// closed) are harmless there and ignored.
pub fn shutdown_fd(fd: RawFd) {
    // SAFETY: shutdown(2) on an fd number has no memory effects; a stale or
    // invalid fd only yields an error, which we ignore.
    unsafe {
        libc::shutdown(fd, libc::SHUT_RDWR);
    }
}
