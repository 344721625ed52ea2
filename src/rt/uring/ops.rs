//! The ring's socket table, the submission entries its sockets make, and
//! what each completion does to them.
//!
//! Every buffer or address an entry points at lives in the socket's slot
//! (`sending`, `addr`) or in the provided-buffer ring, and a slot is freed
//! only when its last operation has completed (`inflight`), so the kernel
//! never writes or reads memory that was given back, whatever the tasks
//! did with their futures meanwhile.

use super::bufs::{self, BufRing};
use super::State;
use io_uring::{cqueue, opcode, squeue, types};
use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::task::Waker;

/// What an entry was for.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub enum Op {
    Recv = 1,
    Send = 2,
    Connect = 3,
    Accept = 4,
    /// Cancels and closes: nothing waits for them.
    Ignore = 5,
}

/// Generations are kept to 24 bits, so a key fits slot, generation and
/// operation in one `u64`.
const GENERATION_MASK: u32 = 0xFF_FFFF;

/// The `user_data` of an entry for slot `slot` in its `generation`.
pub fn key(slot: u32, generation: u32, op: Op) -> u64 {
    op as u64 | (slot as u64) << 8 | ((generation & GENERATION_MASK) as u64) << 40
}

fn parse(key: u64) -> (u32, u32, u8) {
    (
        (key >> 8) as u32,
        (key >> 40) as u32 & GENERATION_MASK,
        key as u8,
    )
}

/// One socket's state on the ring.
#[derive(Default)]
pub struct Sock {
    pub fd: RawFd,
    generation: u32,
    /// Its owner (a stream or listener) still holds it.
    pub open: bool,
    /// Operations whose last completion has not arrived.
    pub inflight: u32,
    /// A multishot receive (or accept) is armed.
    pub recv_armed: bool,
    /// Its receive ended for want of buffers; re-armed when they return.
    pub starved: bool,
    /// Received segments not yet read: buffer id and length.
    pub chunks: VecDeque<(u16, u32)>,
    /// Bytes of the front segment already read.
    pub consumed: usize,
    /// The receive side ended: 0 for the peer's close, else the errno.
    pub end: Option<i32>,
    pub reader: Option<Waker>,
    /// Bytes of the send in flight, and how many the kernel took so far.
    pub sending: Vec<u8>,
    pub sent: usize,
    pub send_busy: bool,
    /// Bytes written while a send was in flight: the next send.
    pub queued: Vec<u8>,
    pub send_error: Option<i32>,
    pub writer: Option<Waker>,
    /// The connect's address (the kernel reads it until it completes),
    /// and its result.
    pub addr: Option<Box<(libc::sockaddr_storage, libc::socklen_t)>>,
    pub connected: Option<i32>,
    /// Accepted descriptors not yet taken (a listener's).
    pub accepted: VecDeque<RawFd>,
    /// It is a listener: its armed operation is an accept.
    pub listener: bool,
    /// Its `Close` is queued: the descriptor number is no longer ours, so
    /// nothing more may be submitted on it.
    pub fd_closed: bool,
}

impl Sock {
    /// Bytes written but not yet taken by the kernel.
    pub fn backlog(&self) -> usize {
        self.sending.len() - self.sent + self.queued.len()
    }

    /// Whether a reader has something to see: data, the end, or a failed
    /// send (the connection is broken either way).
    pub fn has_news(&self) -> bool {
        !self.chunks.is_empty() || self.end.is_some() || self.send_error.is_some()
    }
}

/// The table of sockets: slots reused through a free list, each with a
/// generation bumped on reuse.
#[derive(Default)]
pub struct Socks {
    entries: Vec<Sock>,
    free: Vec<u32>,
}

impl Socks {
    /// Takes a slot for `fd`; returns it and its generation.
    pub fn add(&mut self, fd: RawFd) -> (u32, u32) {
        let slot = self.free.pop().unwrap_or_else(|| {
            self.entries.push(Sock::default());
            (self.entries.len() - 1) as u32
        });
        let sock = &mut self.entries[slot as usize];
        sock.fd = fd;
        sock.open = true;
        (slot, sock.generation)
    }

    /// The socket in `slot`, if it is still the one of `generation`.
    pub fn get_mut(&mut self, slot: u32, generation: u32) -> Option<&mut Sock> {
        self.entries
            .get_mut(slot as usize)
            .filter(|sock| sock.generation == generation && (sock.open || sock.inflight > 0))
    }

    /// Frees a closed socket's slot once nothing of it is in flight; its
    /// queues keep their capacity for the next owner.
    fn release(&mut self, slot: u32) {
        let sock = &mut self.entries[slot as usize];
        if sock.open || sock.inflight > 0 {
            return;
        }
        let generation = (sock.generation + 1) & GENERATION_MASK;
        let (mut sending, mut queued) = (
            std::mem::take(&mut sock.sending),
            std::mem::take(&mut sock.queued),
        );
        let (mut chunks, mut accepted) = (
            std::mem::take(&mut sock.chunks),
            std::mem::take(&mut sock.accepted),
        );
        sending.clear();
        queued.clear();
        chunks.clear();
        accepted.clear();
        *sock = Sock {
            generation,
            sending,
            queued,
            chunks,
            accepted,
            ..Sock::default()
        };
        self.free.push(slot);
    }

    /// The owner let go of the socket: its unread data goes back to the
    /// ring and its unaccepted connections are closed. Returns the entries
    /// that cancel what is in flight and close the descriptor: everything
    /// when `abort`, else all but the send, whose bytes still go out (as a
    /// kernel socket's buffered bytes do after `close`); its descriptor is
    /// then closed when the last of them is sent (see `sent`), because a
    /// send submitted after the close would name a number that may already
    /// be another socket's.
    pub fn close(
        &mut self,
        slot: u32,
        generation: u32,
        bufs: &mut BufRing,
        abort: bool,
    ) -> Vec<squeue::Entry> {
        let Some(sock) = self.get_mut(slot, generation) else {
            return Vec::new();
        };
        sock.open = false;
        sock.reader = None;
        sock.writer = None;
        for (id, _) in sock.chunks.drain(..) {
            bufs.give_back(id);
        }
        for fd in sock.accepted.drain(..) {
            // SAFETY: an accepted descriptor nobody took owns itself.
            unsafe { libc::close(fd) };
        }
        let mut entries = Vec::new();
        let cancel = |op| {
            opcode::AsyncCancel::new(key(slot, sock.generation, op))
                .build()
                .user_data(Op::Ignore as u64)
        };
        if abort && sock.inflight > 0 {
            sock.queued.clear();
            let all = types::CancelBuilder::fd(types::Fd(sock.fd)).all();
            entries.push(
                opcode::AsyncCancel2::new(all)
                    .build()
                    .user_data(Op::Ignore as u64),
            );
        } else {
            if sock.recv_armed {
                entries.push(cancel(if sock.listener { Op::Accept } else { Op::Recv }));
            }
            if sock.addr.is_some() {
                entries.push(cancel(Op::Connect));
            }
        }
        if abort || !sock.send_busy {
            sock.fd_closed = true;
            entries.push(close_entry(sock.fd));
        }
        self.release(slot);
        entries
    }
}

/// The multishot receive for `sock` in `slot`.
pub fn recv_entry(sock: &Sock, slot: u32) -> squeue::Entry {
    opcode::RecvMulti::new(types::Fd(sock.fd), bufs::GROUP)
        .build()
        .user_data(key(slot, sock.generation, Op::Recv))
}

/// The multishot accept for listener `sock` in `slot`.
pub fn accept_entry(sock: &Sock, slot: u32) -> squeue::Entry {
    opcode::AcceptMulti::new(types::Fd(sock.fd))
        .flags(libc::SOCK_CLOEXEC)
        .build()
        .user_data(key(slot, sock.generation, Op::Accept))
}

/// The send of what is left of `sock.sending`.
pub fn send_entry(sock: &Sock, slot: u32) -> squeue::Entry {
    let rest = &sock.sending[sock.sent..];
    opcode::Send::new(types::Fd(sock.fd), rest.as_ptr(), rest.len() as u32)
        .flags(libc::MSG_NOSIGNAL)
        .build()
        .user_data(key(slot, sock.generation, Op::Send))
}

/// The connect to `sock.addr`.
pub fn connect_entry(sock: &Sock, slot: u32) -> squeue::Entry {
    let (storage, len) = &**sock.addr.as_ref().expect("a connect's address");
    opcode::Connect::new(
        types::Fd(sock.fd),
        (storage as *const libc::sockaddr_storage).cast(),
        *len,
    )
    .build()
    .user_data(key(slot, sock.generation, Op::Connect))
}

/// Closes `fd` (after the cancels queued ahead of it). An operation
/// still in flight holds the socket itself, so the descriptor can go now.
pub fn close_entry(fd: RawFd) -> squeue::Entry {
    opcode::Close::new(types::Fd(fd))
        .build()
        .user_data(Op::Ignore as u64)
}

/// Applies one completion; operations to queue in answer go to `again`.
pub fn complete(
    state: &mut State,
    entry: &cqueue::Entry,
    wake: &mut Vec<Waker>,
    again: &mut Vec<squeue::Entry>,
) {
    let (slot, generation, op) = parse(entry.user_data());
    if op == Op::Ignore as u8 {
        return;
    }
    let (result, flags) = (entry.result(), entry.flags());
    if op == Op::Recv as u8 && entry.result() == -libc::ENOBUFS {
        state.starvations += 1;
    }
    let State {
        socks,
        bufs,
        starved,
        ..
    } = state;
    let buffer = cqueue::buffer_select(flags);
    if buffer.is_some() {
        bufs.taken();
    }
    let Some(sock) = socks.get_mut(slot, generation) else {
        // Cannot happen (a slot outlives its operations); a buffer it
        // carried goes back all the same.
        if let Some(id) = buffer {
            bufs.give_back(id);
        }
        return;
    };
    if !cqueue::more(flags) {
        sock.inflight -= 1;
    }
    match op {
        x if x == Op::Recv as u8 => received(
            sock,
            result,
            flags,
            buffer,
            bufs,
            wake,
            (slot, generation),
            starved,
        ),
        x if x == Op::Send as u8 => sent(sock, slot, result, wake, again),
        x if x == Op::Connect as u8 => {
            sock.connected = Some(result);
            sock.addr = None;
            wake.extend(sock.writer.take());
        }
        _ => accepted(sock, result, flags, wake),
    }
    if !sock.open && sock.inflight == 0 {
        socks.release(slot);
    }
}

/// A multishot receive's completion: a segment, the peer's close, an
/// error, or the end of the buffers.
#[allow(clippy::too_many_arguments)]
fn received(
    sock: &mut Sock,
    result: i32,
    flags: u32,
    buffer: Option<u16>,
    bufs: &mut BufRing,
    wake: &mut Vec<Waker>,
    at: (u32, u32),
    starved: &mut Vec<(u32, u32)>,
) {
    if !cqueue::more(flags) {
        sock.recv_armed = false;
    }
    match (result, buffer) {
        (n, Some(id)) if n > 0 && sock.open => sock.chunks.push_back((id, n as u32)),
        (_, Some(id)) => bufs.give_back(id),
        _ => {}
    }
    match -result {
        errno if errno < 0 => {}
        0 => sock.end = Some(0),
        libc::ENOBUFS => {
            // Every buffer offered is taken; wait for some to come back.
            bufs.ran_dry();
            sock.starved = true;
            starved.push(at);
            return;
        }
        // Cancelled on close, or not ready (a receive to arm again).
        libc::ECANCELED | libc::EAGAIN | libc::EINTR => return,
        errno => sock.end = Some(errno),
    }
    wake.extend(sock.reader.take());
}

/// A send's completion: continue a partial one, start the queued bytes,
/// or record why it failed. A closed socket's bytes go on being sent.
fn sent(
    sock: &mut Sock,
    slot: u32,
    result: i32,
    wake: &mut Vec<Waker>,
    again: &mut Vec<squeue::Entry>,
) {
    if result < 0 && result != -libc::EAGAIN && result != -libc::EINTR {
        sock.send_busy = false;
        sock.queued.clear();
        if sock.open {
            sock.send_error = Some(-result);
        } else if !sock.fd_closed {
            sock.fd_closed = true;
            again.push(close_entry(sock.fd));
        }
        wake.extend(sock.reader.take());
        wake.extend(sock.writer.take());
        return;
    }
    sock.sent += result.max(0) as usize;
    if sock.fd_closed {
        sock.send_busy = false;
        return;
    }
    if sock.sent == sock.sending.len() && !sock.queued.is_empty() {
        std::mem::swap(&mut sock.sending, &mut sock.queued);
        sock.queued.clear();
        sock.sent = 0;
    }
    if sock.sent < sock.sending.len() {
        sock.inflight += 1;
        again.push(send_entry(sock, slot));
    } else {
        sock.send_busy = false;
        if !sock.open {
            // Closed while sending: the last byte is out, close it now.
            sock.fd_closed = true;
            again.push(close_entry(sock.fd));
        }
    }
    wake.extend(sock.writer.take());
}

/// A multishot accept's completion: a new connection or an error.
fn accepted(sock: &mut Sock, result: i32, flags: u32, wake: &mut Vec<Waker>) {
    if !cqueue::more(flags) {
        sock.recv_armed = false;
    }
    if result >= 0 {
        if sock.open {
            sock.accepted.push_back(result);
        } else {
            // SAFETY: a descriptor the kernel just gave us, owned by nobody.
            unsafe { libc::close(result) };
        }
    } else if !matches!(-result, libc::ECANCELED | libc::EAGAIN | libc::EINTR) {
        sock.end = Some(-result);
    }
    wake.extend(sock.reader.take());
}
