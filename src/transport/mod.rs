//! What carries a connection's bytes: a plain TCP stream, or TLS driven by
//! hand over the same non-blocking socket.
//!
//! `Stream` offers the engine and the mock one set of operations (read,
//! write, wait for an answer, the descriptor, a reset) whichever it is, so
//! `exchange` and the mock's server do not know about TLS. TLS is rustls
//! used sans-I/O (`tls`): its record layer reads from and writes to the
//! socket directly, and the reactor stays in charge of readiness. `trust`
//! builds the client's configuration (roots, `--cacert`, `--insecure`,
//! resumption); `cert` the mock's (PEM files, or a CA and a leaf made at
//! start).

pub mod cert;
pub mod tls;
pub mod trust;

use crate::rt;
use std::future::Future;
use std::io;
use std::os::fd::RawFd;

pub use tls::{TlsFailure, TlsStream};

/// A connected stream, plain or TLS.
#[derive(Debug)]
pub enum Stream {
    /// Bytes as they are.
    Plain(rt::TcpStream),
    /// TLS over the socket (boxed: rustls' state is a few KiB).
    Tls(Box<TlsStream>),
}

impl Stream {
    /// Reads some bytes of plaintext; 0 means the peer closed (for TLS, with
    /// `close_notify`; a close without it is `UnexpectedEof`).
    ///
    /// One poll over both kinds rather than an `async fn` that awaits
    /// either: the future stays as small as the plain socket's was, and an
    /// open-loop arrival's task holds it.
    pub fn read<'a>(
        &'a mut self,
        buf: &'a mut [u8],
    ) -> impl Future<Output = io::Result<usize>> + 'a {
        std::future::poll_fn(move |cx| match self {
            Stream::Plain(tcp) => tcp.poll_read(cx, buf),
            Stream::Tls(tls) => tls.poll_read(cx, buf),
        })
    }

    /// As `read`, for a response's head: on the ring it copies from the
    /// first segment that arrived only, and `read_with` takes the rest of
    /// the body where it lies.
    pub fn read_head<'a>(
        &'a mut self,
        buf: &'a mut [u8],
    ) -> impl Future<Output = io::Result<usize>> + 'a {
        std::future::poll_fn(move |cx| match self {
            Stream::Plain(tcp) => tcp.poll_read_first(cx, buf),
            Stream::Tls(tls) => tls.poll_read(cx, buf),
        })
    }

    /// Reads some bytes of plaintext and hands them to `take`, which
    /// returns how many it used; the future gives the number of bytes
    /// shown, 0 when the peer closed. A plain stream on the ring shows
    /// them where they arrived (`rt::TcpStream::poll_read_with`); TLS
    /// and epoll read them into `buf` first. What `take` leaves unused
    /// must not be read again: the caller gives up the connection.
    pub fn read_with<'a>(
        &'a mut self,
        buf: &'a mut [u8],
        mut take: impl FnMut(&[u8]) -> usize + 'a,
    ) -> impl Future<Output = io::Result<usize>> + 'a {
        std::future::poll_fn(move |cx| match self {
            Stream::Plain(tcp) => tcp.poll_read_with(cx, buf, &mut take),
            Stream::Tls(tls) => tls.poll_read(cx, buf).map_ok(|n| {
                if n > 0 {
                    take(&buf[..n]);
                }
                n
            }),
        })
    }

    /// Writes all of `buf`.
    pub fn write_all<'a>(&'a mut self, buf: &'a [u8]) -> impl Future<Output = io::Result<()>> + 'a {
        let mut done = 0;
        std::future::poll_fn(move |cx| match self {
            Stream::Plain(tcp) => tcp.poll_write_all(cx, buf, &mut done),
            Stream::Tls(tls) => tls.poll_write_all(cx, buf, &mut done),
        })
    }

    /// Waits until the socket has something to read (see
    /// `rt::TcpStream::readable`). For TLS too it is the socket that is
    /// waited on: right after a request is sent, rustls holds nothing yet.
    pub fn readable(&mut self) -> rt::Readable<'_> {
        match self {
            Stream::Plain(tcp) => tcp.readable(),
            Stream::Tls(tls) => tls.readable(),
        }
    }

    /// The socket's file descriptor (for the timeout watchdog's shutdown).
    pub fn raw_fd(&self) -> RawFd {
        match self {
            Stream::Plain(tcp) => tcp.raw_fd(),
            Stream::Tls(tls) => tls.raw_fd(),
        }
    }

    /// Closes the connection with a reset (RST) instead of a FIN.
    pub fn reset(self) {
        match self {
            Stream::Plain(tcp) => tcp.reset(),
            Stream::Tls(tls) => tls.into_tcp().reset(),
        }
    }

    /// Whether a TLS session was resumed rather than fully negotiated
    /// (`None` for a plain stream).
    pub fn resumed(&self) -> Option<bool> {
        match self {
            Stream::Plain(_) => None,
            Stream::Tls(tls) => Some(tls.resumed()),
        }
    }
}
