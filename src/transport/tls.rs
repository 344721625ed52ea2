//! TLS over the shard's own non-blocking socket: a rustls connection
//! driven by hand.
//!
//! rustls keeps no socket; it is handed bytes (`read_tls`) and asked for
//! bytes (`write_tls`). Here both go between its record layer and the
//! socket's own poll (`SocketIo`, a `Read`/`Write` over `rt::TcpStream`
//! that never blocks: a socket with nothing to give or no room is a
//! `WouldBlock`, and the reactor keeps the task's waker). No extra
//! ciphertext buffer, and whichever reactor runs the socket runs TLS.

use crate::rt;
use std::io::{self, Read as _, Write as _};
use std::os::fd::RawFd;
use std::sync::Arc;
use std::task::{Context, Poll};

/// A TLS stream, client or server side.
#[derive(Debug)]
pub struct TlsStream {
    tcp: rt::TcpStream,
    tls: rustls::Connection,
}

/// Why TLS failed, carried inside an `io::Error` so callers classify it.
#[derive(Debug)]
pub struct TlsFailure {
    /// It happened before the handshake finished.
    pub handshake: bool,
    /// What rustls said (`None`: the peer closed or timed out first).
    pub error: Option<rustls::Error>,
}

impl std::fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let when = if self.handshake {
            "TLS handshake"
        } else {
            "TLS"
        };
        match &self.error {
            Some(e) => write!(f, "{when}: {e}"),
            None => write!(f, "{when}: the peer closed the connection"),
        }
    }
}

impl std::error::Error for TlsFailure {}

impl TlsFailure {
    /// The `TlsFailure` inside `error`, if it is one.
    pub fn of(error: &io::Error) -> Option<&TlsFailure> {
        error.get_ref()?.downcast_ref::<TlsFailure>()
    }

    /// Whether the peer's certificate was refused (untrusted, expired,
    /// wrong name) rather than the handshake failing otherwise.
    pub fn is_certificate(&self) -> bool {
        matches!(
            self.error,
            Some(rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented)
        )
    }

    fn wrap(handshake: bool, error: Option<rustls::Error>) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, TlsFailure { handshake, error })
    }
}

impl TlsStream {
    /// Runs a client handshake on a connected socket, within `timeout`.
    pub async fn connect(
        tcp: rt::TcpStream,
        config: Arc<rustls::ClientConfig>,
        name: rustls::pki_types::ServerName<'static>,
        timeout: std::time::Duration,
    ) -> io::Result<TlsStream> {
        let tls = rustls::ClientConnection::new(config, name)
            .map_err(|e| TlsFailure::wrap(true, Some(e)))?;
        TlsStream::handshake(tcp, tls.into(), timeout).await
    }

    /// Runs a server handshake on an accepted socket, within `timeout`.
    pub async fn accept(
        tcp: rt::TcpStream,
        config: Arc<rustls::ServerConfig>,
        timeout: std::time::Duration,
    ) -> io::Result<TlsStream> {
        let tls =
            rustls::ServerConnection::new(config).map_err(|e| TlsFailure::wrap(true, Some(e)))?;
        TlsStream::handshake(tcp, tls.into(), timeout).await
    }

    async fn handshake(
        tcp: rt::TcpStream,
        tls: rustls::Connection,
        timeout: std::time::Duration,
    ) -> io::Result<TlsStream> {
        let mut stream = TlsStream { tcp, tls };
        let steps = async {
            while stream.tls.is_handshaking() {
                stream.flush().await?;
                let wants_read = stream.tls.is_handshaking() && stream.tls.wants_read();
                if wants_read && stream.fill(true).await? == 0 {
                    return Err(TlsFailure::wrap(true, None));
                }
            }
            // The client's Finished (or the server's tickets).
            stream.flush().await
        };
        let expiry = async {
            rt::sleep(timeout).await;
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the TLS handshake did not finish within the connect timeout",
            ))
        };
        futures_lite::future::or(steps, expiry).await?;
        Ok(stream)
    }

    /// Reads ciphertext from the socket into rustls and decrypts it;
    /// returns the bytes read (0: the peer closed the socket). A record
    /// rustls refuses sends its alert (best effort) and fails.
    async fn fill(&mut self, handshake: bool) -> io::Result<usize> {
        std::future::poll_fn(|cx| {
            let n = match self.tls.read_tls(&mut SocketIo::new(&mut self.tcp, cx)) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Poll::Pending,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                Err(e) => return Poll::Ready(Err(e)),
            };
            if let Err(error) = self.tls.process_new_packets() {
                // The alert rustls queued for the peer; the connection is
                // dead either way, so a socket that cannot take it is
                // ignored.
                let _ = self.tls.write_tls(&mut SocketIo::new(&mut self.tcp, cx));
                return Poll::Ready(Err(TlsFailure::wrap(handshake, Some(error))));
            }
            Poll::Ready(Ok(n))
        })
        .await
    }

    /// Sends everything rustls has encrypted.
    async fn flush(&mut self) -> io::Result<()> {
        std::future::poll_fn(|cx| self.poll_flush(cx)).await
    }

    /// Hands the socket everything rustls has encrypted; pending while the
    /// socket has no room.
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.tls.wants_write() {
            match self.tls.write_tls(&mut SocketIo::new(&mut self.tcp, cx)) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Poll::Pending,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Reads some plaintext; 0 means the peer closed with `close_notify`,
    /// `UnexpectedEof` that it closed without.
    ///
    /// Read and write are hand-written polls rather than `async fn`s: an
    /// open-loop arrival's task holds these futures, and nested `async
    /// fn`s (each keeping its own arguments) grew it past the size the
    /// allocator's per-thread cache serves.
    pub fn read<'a>(
        &'a mut self,
        buf: &'a mut [u8],
    ) -> impl std::future::Future<Output = io::Result<usize>> + 'a {
        std::future::poll_fn(move |cx| self.poll_read(cx, buf))
    }

    /// The poll behind `read`.
    pub fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        loop {
            match self.tls.reader().read(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                done => return Poll::Ready(done),
            }
            match self.tls.read_tls(&mut SocketIo::new(&mut self.tcp, cx)) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Poll::Pending,
                Err(e) => return Poll::Ready(Err(e)),
            }
            if let Err(error) = self.tls.process_new_packets() {
                let _ = self.tls.write_tls(&mut SocketIo::new(&mut self.tcp, cx));
                return Poll::Ready(Err(TlsFailure::wrap(false, Some(error))));
            }
            // A key update asks for an answer; one that finds no room now
            // stays queued for the next write.
            while self.tls.wants_write()
                && self
                    .tls
                    .write_tls(&mut SocketIo::new(&mut self.tcp, cx))
                    .is_ok()
            {}
        }
    }

    /// Encrypts and sends all of `buf`, in pieces when it is larger than
    /// rustls' send buffer.
    pub fn write_all<'a>(
        &'a mut self,
        buf: &'a [u8],
    ) -> impl std::future::Future<Output = io::Result<()>> + 'a {
        let mut taken = 0;
        std::future::poll_fn(move |cx| self.poll_write_all(cx, buf, &mut taken))
    }

    /// The poll behind `write_all`; `taken` carries the progress between
    /// polls.
    pub fn poll_write_all(
        &mut self,
        cx: &mut Context<'_>,
        buf: &[u8],
        taken: &mut usize,
    ) -> Poll<io::Result<()>> {
        loop {
            std::task::ready!(self.poll_flush(cx))?;
            if *taken == buf.len() {
                return Poll::Ready(Ok(()));
            }
            let n = self.tls.writer().write(&buf[*taken..])?;
            if n == 0 && !self.tls.wants_write() {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *taken += n;
        }
    }

    /// Waits for the socket to have something to read, as
    /// `rt::TcpStream::readable` does; a following `read` handles records
    /// that arrive in pieces.
    pub fn readable(&mut self) -> rt::Readable<'_> {
        self.tcp.readable()
    }

    /// The socket's file descriptor.
    pub fn raw_fd(&self) -> RawFd {
        self.tcp.raw_fd()
    }

    /// The socket, TLS state dropped (to reset it).
    pub fn into_tcp(self) -> rt::TcpStream {
        self.tcp
    }

    /// Whether the session was resumed (a ticket or session id accepted)
    /// rather than negotiated in full.
    pub fn resumed(&self) -> bool {
        self.tls.handshake_kind() == Some(rustls::HandshakeKind::Resumed)
    }
}

/// The socket as rustls' `Read`/`Write` inside a poll: a socket with
/// nothing to read or no room is `WouldBlock`, its reactor holding the
/// task's waker until that changes.
struct SocketIo<'a, 'b> {
    tcp: &'a mut rt::TcpStream,
    cx: &'a mut Context<'b>,
}

impl<'a, 'b> SocketIo<'a, 'b> {
    fn new(tcp: &'a mut rt::TcpStream, cx: &'a mut Context<'b>) -> Self {
        SocketIo { tcp, cx }
    }
}

fn would_block<T>(poll: Poll<io::Result<T>>) -> io::Result<T> {
    match poll {
        Poll::Ready(done) => done,
        Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
    }
}

impl io::Read for SocketIo<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        would_block(self.tcp.poll_read(self.cx, buf))
    }
}

impl io::Write for SocketIo<'_, '_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[io::IoSlice::new(buf)])
    }

    /// rustls hands over every queued record at once; the socket takes
    /// them in one call.
    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        would_block(self.tcp.poll_write_vectored(self.cx, bufs))
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A blocking handshake on the calling thread (the preflight check, before
/// any shard runs): the negotiated version and suite, or why it failed
/// (a `TlsFailure` for what rustls refused).
pub fn probe(
    addr: std::net::SocketAddr,
    config: Arc<rustls::ClientConfig>,
    name: rustls::pki_types::ServerName<'static>,
    timeout: std::time::Duration,
) -> io::Result<String> {
    let mut tcp = std::net::TcpStream::connect_timeout(&addr, timeout)?;
    tcp.set_read_timeout(Some(timeout))?;
    tcp.set_write_timeout(Some(timeout))?;
    let mut tls =
        rustls::ClientConnection::new(config, name).map_err(|e| TlsFailure::wrap(true, Some(e)))?;
    while tls.is_handshaking() {
        match tls.complete_io(&mut tcp) {
            Ok((0, 0)) if tls.is_handshaking() => return Err(TlsFailure::wrap(true, None)),
            Ok(_) => {}
            Err(e) => {
                // rustls reports its own refusals as InvalidData with the
                // rustls::Error inside.
                let inner = e
                    .get_ref()
                    .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                    .cloned();
                return Err(match inner {
                    Some(error) => TlsFailure::wrap(true, Some(error)),
                    None => e,
                });
            }
        }
    }
    let version = tls
        .protocol_version()
        .map_or("?".to_string(), |v| format!("{v:?}"));
    let suite = tls
        .negotiated_cipher_suite()
        .map_or("?".to_string(), |s| format!("{:?}", s.suite()));
    let alpn = tls.alpn_protocol().map_or("no ALPN".to_string(), |p| {
        String::from_utf8_lossy(p).into_owned()
    });
    tls.send_close_notify();
    let _ = tls.complete_io(&mut tcp);
    Ok(format!("{version} {suite} {alpn}"))
}
