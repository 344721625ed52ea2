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
    pub async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(tcp) => tcp.read(buf).await,
            Stream::Tls(tls) => tls.read(buf).await,
        }
    }

    /// Writes all of `buf`.
    pub async fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Stream::Plain(tcp) => tcp.write_all(buf).await,
            Stream::Tls(tls) => tls.write_all(buf).await,
        }
    }

    /// Waits until the socket has something to read (see
    /// `rt::TcpStream::readable`); at once when TLS holds plaintext
    /// already.
    pub async fn readable(&mut self) {
        match self {
            Stream::Plain(tcp) => tcp.readable().await,
            Stream::Tls(tls) => tls.readable().await,
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
