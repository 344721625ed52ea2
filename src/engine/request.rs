//! Sending one prepared request: a pooled connection or a new one
//! (through the shard's connect slots), the exchange under the timeout
//! watchdog, and one retry when a reused idle connection turns out to
//! have been closed by the server.

use super::conversation::{Source, User};
use super::exchange::{self, Conn, Failure, Observed};
use super::inflight::InflightGuard;
use super::shard::Shard;
use crate::results::ErrorClass;
use crate::rt;
use crate::transport::{Stream, TlsFailure, TlsStream};
use rustls::pki_types::ServerName;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A failed request: its class and when it started.
pub(super) struct Attempt {
    pub(super) class: ErrorClass,
    pub(super) t0: Instant,
}

impl Attempt {
    fn new(class: ErrorClass, t0: Instant) -> Attempt {
        Attempt { class, t0 }
    }
}

impl Shard {
    /// The TLS configuration and server name of an https target.
    fn tls_for(&self, target: usize) -> Option<(Arc<rustls::ClientConfig>, ServerName<'static>)> {
        self.tls[target].clone()
    }

    /// The address the next new connection to `target` goes to (an index
    /// into `addresses`): each of the target's addresses in turn.
    pub(super) fn next_address(&self, target: usize) -> usize {
        let (first, turn) = &self.address_turn[target];
        let n = turn.get();
        turn.set(n.wrapping_add(1));
        first + n % self.plan.targets[target].addrs.len()
    }

    /// Opens a connection to address `address` (an index into
    /// `addresses`), waiting for a connect slot first, and runs the TLS
    /// handshake on it for an https target.
    pub(super) async fn connect(&self, address: usize) -> Result<Connected, Attempt> {
        // The connect time includes the wait for a slot.
        let started = Instant::now();
        let _permit = self
            .connect_slots
            .acquire_permit(1)
            .await
            .map_err(|_| Attempt::new(ErrorClass::ConnOther, started))?;
        let addr = self.addresses[address].1;
        let tcp = rt::TcpStream::connect(addr, self.plan.connect_timeout)
            .await
            .map_err(|e| Attempt::new(connect_class(&e), started))?;
        let connected = Instant::now();
        let Some((config, name)) = self.tls_for(self.addresses[address].0) else {
            return Ok(Connected {
                conn: Conn::new(Stream::Plain(tcp), address),
                tcp: connected - started,
                tls: None,
            });
        };
        // Boxed, with everything it holds: the handshake's future (its
        // steps and its timer) is several times the size of the rest of
        // an open-loop arrival's task, and a handshake is rare next to
        // requests.
        let timeout = self.plan.connect_timeout;
        Box::pin(async move {
            let tls = TlsStream::connect(tcp, config, name, timeout)
                .await
                .map_err(|e| Attempt::new(handshake_class(&e), started))?;
            Ok(Connected {
                conn: Conn::new(Stream::Tls(Box::new(tls)), address),
                tcp: connected - started,
                tls: Some(connected.elapsed()),
            })
        })
        .await
    }

    /// Sends the user's prepared request, connecting or reconnecting as
    /// needed; retries once when a reused idle connection turns out stale.
    ///
    /// Over 70 lines on purpose: pool, connect, send and the one stale
    /// retry are one loop, and its borrows of `user` do not split well.
    pub(super) async fn request(
        &self,
        user: &mut User,
        scenario: usize,
        source: Source,
        now: Instant,
    ) -> Result<Instant, Attempt> {
        let sc = &self.plan.scenarios[scenario];
        user.connect_time = None;
        user.tls_time = None;
        user.stale_retry = false;
        // A failed connect never reaches `exchange`, which resets this; a
        // stale value would be recorded as this attempt's TTFB and status.
        user.observed = Observed::default();
        // `now` is fresh unless a connect or a retry intervenes.
        let mut fresh = Some(now);
        loop {
            if user.conn.is_none() {
                let pooled = self.idle[sc.target].borrow_mut().pop();
                user.conn = match pooled {
                    Some(conn) => Some(conn),
                    None => {
                        user.address = self.next_address(sc.target);
                        let connected = self.connect(user.address).await?;
                        user.connect_time = Some(connected.tcp);
                        user.tls_time = connected.tls;
                        user.tls_resumed = connected.conn.stream.resumed() == Some(true);
                        fresh = Some(Instant::now());
                        self.open_connections.set(self.open_connections.get() + 1);
                        Some(connected.conn)
                    }
                };
            }
            let User {
                conn,
                scratch,
                observed,
                request: own,
                address,
                ..
            } = &mut *user;
            let Some(conn) = conn.as_mut() else {
                unreachable!("a connection was just ensured");
            };
            *address = conn.address;
            let bytes: &[u8] = match source {
                Source::Template(i) => &self.scenarios[scenario].templates[i].bytes,
                Source::Own => own,
            };
            let t0 = fresh.take().unwrap_or_else(Instant::now);
            let guard = InflightGuard::new(self, t0 + sc.timeout, conn.stream.raw_fd());
            let result = exchange::exchange(conn, sc.protocol, bytes, scratch, t0, observed).await;
            let timed_out = guard.finish();
            // A request sent with `Connection: close` never leaves its
            // connection for another, whatever the server answered.
            let keep = matches!(result, Ok(()))
                && user.observed.keep_alive
                && self.plan.keep_alive
                && !timed_out;
            if !keep {
                self.close(&mut user.conn);
            }
            return match result {
                _ if timed_out => Err(Attempt {
                    class: ErrorClass::Timeout,
                    t0,
                }),
                Ok(()) => Ok(t0),
                Err(Failure::Stale) if !user.stale_retry && self.plan.retry_stale => {
                    user.stale_retry = true;
                    continue;
                }
                Err(Failure::Stale) => Err(Attempt {
                    class: ErrorClass::Eof,
                    t0,
                }),
                Err(Failure::Class(class)) => Err(Attempt { class, t0 }),
            };
        }
    }

    pub(super) fn close(&self, conn: &mut Option<Conn>) {
        if conn.take().is_some() {
            self.open_connections
                .set(self.open_connections.get().saturating_sub(1));
        }
    }
}

/// A new connection and what opening it took.
pub(super) struct Connected {
    pub(super) conn: Conn,
    /// The TCP connect (with the wait for a connect slot before it).
    pub(super) tcp: Duration,
    /// The TLS handshake after it, for an https target.
    pub(super) tls: Option<Duration>,
}

/// The class of a failed TLS handshake: the certificate refused, or
/// anything else (a timeout, an alert, a close, a protocol error).
fn handshake_class(error: &io::Error) -> ErrorClass {
    if TlsFailure::of(error).is_some_and(TlsFailure::is_certificate) {
        ErrorClass::TlsCert
    } else {
        ErrorClass::TlsHandshake
    }
}

fn connect_class(error: &io::Error) -> ErrorClass {
    match error.raw_os_error() {
        Some(libc::ECONNREFUSED) => ErrorClass::ConnRefused,
        Some(libc::EADDRNOTAVAIL) => ErrorClass::GenPortExhaustion,
        Some(libc::EMFILE) | Some(libc::ENFILE) => ErrorClass::GenFdExhaustion,
        Some(libc::ETIMEDOUT) => ErrorClass::ConnTimeout,
        _ if error.kind() == io::ErrorKind::TimedOut => ErrorClass::ConnTimeout,
        _ => ErrorClass::ConnOther,
    }
}
