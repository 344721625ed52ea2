//! One shard: a pinned executor that owns its connections, users, RNG,
//! buffers and histograms, and talks to the coordinator only through two
//! bounded channels wired before it started.
//!
//! Per stage it spawns its share of virtual users, lets them loop until the
//! stage's end instant, waits for the requests in flight to finish, and
//! sends its `StageMetrics` to the coordinator. A `Stop` command moves the
//! end instant to now (Ctrl-C); the stage still ends cleanly.
//!
//! The source of work (`closed_user`) is separate from the request
//! machinery (`Shard::request` and `exchange`), so an open-loop arrival
//! source can drive the same machinery.

use super::exchange::{self, Conn, Failure, Observed, Scratch};
use super::{Command, Report, COMMAND_POLL};
use crate::limits;
use crate::metrics::{ErrorClass, StageMetrics};
use crate::plan::Plan;
use crate::protocol::{Message, Role, TurnRequest};
use crate::rng::Rng;
use crate::rt;
use crate::stage::{Load, Stage};
use futures_lite::FutureExt;
use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::RawFd;
use std::panic::AssertUnwindSafe;
use std::rc::Rc;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// What a shard is given when its executor starts. `Send`, so it can cross
/// into the executor thread; everything inside the shard is `!Send`.
pub struct ShardContext {
    /// Shard number, 0-based.
    pub index: usize,
    /// Number of shards.
    pub count: usize,
    /// The run.
    pub plan: Arc<Plan>,
    /// Commands from the coordinator (polled, see `COMMAND_POLL`).
    pub commands: mpsc::Receiver<Command>,
    /// Stage reports to the coordinator.
    pub reports: mpsc::SyncSender<Report>,
}

/// How long a user waits after a failed connect before trying again, so a
/// refused target does not turn into a busy loop of errors.
const CONNECT_RETRY_BACKOFF: Duration = Duration::from_millis(100);

/// Waits for the next command without blocking the executor.
async fn next_command(commands: &mpsc::Receiver<Command>) -> Option<Command> {
    loop {
        match commands.try_recv() {
            Ok(command) => return Some(command),
            Err(mpsc::TryRecvError::Empty) => rt::sleep(COMMAND_POLL).await,
            Err(mpsc::TryRecvError::Disconnected) => return None,
        }
    }
}

/// The shard's main future.
pub async fn run(ctx: ShardContext) {
    let commands = ctx.commands;
    let shard = Rc::new(Shard::new(ctx.index, ctx.count, ctx.plan));
    while let Some(command) = next_command(&commands).await {
        let Command::RunStage { index, start } = command else {
            // Stop between stages, or Shutdown: nothing is running.
            if matches!(command, Command::Shutdown) {
                break;
            }
            continue;
        };
        let stage = shard.plan.stages[index];
        let run = Rc::new(StageRun::new(&stage, start, shard.plan.warmup));
        let stage_future = run_stage(&shard, &run, &stage);
        let stop_listener = async {
            // Any command mid-stage (Stop, Shutdown) or a vanished
            // coordinator ends the stage now; in-flight requests finish.
            next_command(&commands).await;
            run.end.set(Instant::now());
            std::future::pending::<()>().await;
        };
        stage_future.or(stop_listener).await;
        let mut metrics = run.metrics.take();
        metrics.connections_open = shard.open_connections.get();
        let report = Report {
            shard: shard.index,
            stage: index,
            metrics,
            cpu_s: rt::thread_cpu_seconds(),
        };
        // The channel holds several reports per shard and the coordinator
        // drains it every stage, so it is never full in practice; if it
        // were, wait on the executor rather than block the thread.
        let mut pending = report;
        loop {
            match ctx.reports.try_send(pending) {
                Ok(()) => break,
                Err(mpsc::TrySendError::Full(back)) => {
                    pending = back;
                    rt::sleep(COMMAND_POLL).await;
                }
                Err(mpsc::TrySendError::Disconnected(_)) => return,
            }
        }
    }
}

/// State of the stage being run.
struct StageRun {
    /// No request starts at or after this instant.
    end: Cell<Instant>,
    /// Requests starting before this are warm-up.
    measure_from: Instant,
    /// What this shard measured.
    metrics: RefCell<StageMetrics>,
}

impl StageRun {
    fn new(stage: &Stage, start: Instant, warmup: Duration) -> Self {
        StageRun {
            end: Cell::new(start + stage.duration),
            measure_from: start + warmup,
            metrics: RefCell::new(StageMetrics::new()),
        }
    }
}

async fn run_stage(shard: &Rc<Shard>, run: &Rc<StageRun>, stage: &Stage) {
    let users = match stage.load {
        Load::Closed { users } => share_of(users, shard.index, shard.count),
    };
    let watchdog = rt::spawn(watchdog(shard.clone(), run.clone()));
    let mut tasks = Vec::with_capacity(users as usize);
    for _ in 0..users {
        tasks.push(rt::spawn(closed_user(shard.clone(), run.clone())));
    }
    for task in tasks {
        task.await;
    }
    shard.watchdog_stop.set(true);
    watchdog.await;
    shard.watchdog_stop.set(false);
}

/// This shard's share of `total`: an even split, the remainder going to the
/// lowest-numbered shards.
pub fn share_of(total: u64, index: usize, count: usize) -> u64 {
    assert!(index < count, "shard index {index} out of range {count}");
    let count = count as u64;
    let index = index as u64;
    total / count + u64::from(index < total % count)
}

/// A closed-loop virtual user: request, response, next request, until the
/// stage ends. Holds one connection for its life and hands it back to the
/// shard's idle pool at the end.
async fn closed_user(shard: Rc<Shard>, run: Rc<StageRun>) {
    let mut user = User::new();
    // The clock is read twice per request (send, and each read), because
    // on this VM `clock_gettime` showed up at 4 % of the engine's CPU when
    // it was read four times. The previous response's completion instant
    // serves as "now" for the loop check and the next send; what runs in
    // between is this loop's bookkeeping, well under a microsecond.
    let mut now = Instant::now();
    while now < run.end.get() {
        // Single-turn requests depend only on the prompt picked, so their
        // bytes were prepared once at shard start and are written from
        // there: no JSON serialization and no copy per request.
        let prepared = shard.pick_request();
        let result = AssertUnwindSafe(shard.request(&mut user, prepared, now))
            .catch_unwind()
            .await;
        let result = result.unwrap_or_else(|_| {
            shard.close(&mut user.conn);
            Err(Attempt {
                class: ErrorClass::Panic,
                t0: now,
            })
        });
        let failed_to_connect = matches!(&result, Err(a) if is_connect_class(a.class));
        now = match (&result, user.observed.done_at) {
            (Ok(_), Some(done)) => done,
            _ => Instant::now(),
        };
        shard.record(&run, &user, result);
        if failed_to_connect {
            let left = run.end.get().saturating_duration_since(Instant::now());
            rt::sleep(CONNECT_RETRY_BACKOFF.min(left)).await;
        }
    }
    if let Some(conn) = user.conn.take() {
        shard.idle.borrow_mut().push(conn);
    }
}

fn is_connect_class(class: ErrorClass) -> bool {
    matches!(
        class,
        ErrorClass::ConnRefused
            | ErrorClass::ConnTimeout
            | ErrorClass::ConnOther
            | ErrorClass::GenPortExhaustion
            | ErrorClass::GenFdExhaustion
    )
}

/// One virtual user's state.
struct User {
    /// The connection it holds, if any.
    conn: Option<Conn>,
    /// Its buffers.
    scratch: Scratch,
    /// What the exchange saw.
    observed: Observed,
    /// Time spent opening a connection for the current request.
    connect_time: Option<Duration>,
    /// The current request was retried after a stale connection.
    stale_retry: bool,
}

impl User {
    fn new() -> Self {
        User {
            conn: None,
            scratch: Scratch::default(),
            observed: Observed::default(),
            connect_time: None,
            stale_retry: false,
        }
    }
}

/// A failed request: its class and when it started.
struct Attempt {
    class: ErrorClass,
    t0: Instant,
}

/// The shard's long-lived state.
struct Shard {
    index: usize,
    count: usize,
    plan: Arc<Plan>,
    /// Request line and fixed headers, up to Content-Length.
    head_prefix: Vec<u8>,
    /// Complete request bytes, one per prompt, built at start-up.
    prepared: Vec<Vec<u8>>,
    /// Idle keep-alive connections to the target.
    idle: RefCell<Vec<Conn>>,
    /// Bounds concurrent connects (see `limits::CONNECTS_IN_FLIGHT_PER_SHARD_MAX`).
    connect_slots: rt::Semaphore,
    /// Requests in flight, for the timeout watchdog.
    inflight: RefCell<Inflight>,
    /// Tells the watchdog to exit.
    watchdog_stop: Cell<bool>,
    /// Connections currently open.
    open_connections: Rc<Cell<u64>>,
    /// Random choices (prompt picks), seeded per shard.
    rng: RefCell<Rng>,
}

impl Shard {
    fn new(index: usize, count: usize, plan: Arc<Plan>) -> Self {
        let head_prefix = plan.request_head_prefix();
        let seed = plan.seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let mut shard = Shard {
            index,
            count,
            plan,
            head_prefix,
            prepared: Vec::new(),
            idle: RefCell::new(Vec::new()),
            connect_slots: rt::Semaphore::new(limits::CONNECTS_IN_FLIGHT_PER_SHARD_MAX),
            inflight: RefCell::new(Inflight::default()),
            watchdog_stop: Cell::new(false),
            open_connections: Rc::new(Cell::new(0)),
            rng: RefCell::new(Rng::new(seed)),
        };
        let mut scratch = Scratch::default();
        let mut messages = vec![Message {
            role: Role::User,
            content: String::new(),
        }];
        for prompt in &shard.plan.prompts {
            messages[0].content.clone_from(prompt);
            shard.build_request(&messages, &mut scratch);
            shard.prepared.push(scratch.request.clone());
        }
        shard
    }

    fn pick_request(&self) -> &[u8] {
        let i = self.rng.borrow_mut().below(self.prepared.len() as u64) as usize;
        &self.prepared[i]
    }

    /// Builds head and body into `scratch.request` (the body is built in
    /// `scratch.body` first to learn its length; both buffers are reused).
    fn build_request(&self, messages: &[Message], scratch: &mut Scratch) {
        let plan = &self.plan;
        let turn = TurnRequest {
            model: &plan.model,
            system: plan.system.as_deref(),
            messages,
            max_tokens: plan.max_tokens,
            stream: plan.stream,
        };
        scratch.body.clear();
        plan.protocol.write_body(&turn, &mut scratch.body);
        let request = &mut scratch.request;
        request.clear();
        request.extend_from_slice(&self.head_prefix);
        request.extend_from_slice(b"Content-Length: ");
        crate::http::push_decimal(request, scratch.body.len() as u64);
        request.extend_from_slice(b"\r\n\r\n");
        request.extend_from_slice(&scratch.body);
    }

    /// Opens a connection, waiting for a connect slot first.
    async fn connect(&self) -> Result<Conn, ErrorClass> {
        let _permit = self
            .connect_slots
            .acquire_permit(1)
            .await
            .map_err(|_| ErrorClass::ConnOther)?;
        let stream = rt::TcpStream::connect(self.plan.target.addr, self.plan.connect_timeout)
            .await
            .map_err(|e| connect_class(&e))?;
        Ok(Conn::new(stream))
    }

    /// Sends the user's prepared request, connecting or reconnecting as
    /// needed; retries once when a reused idle connection turns out stale.
    async fn request(
        &self,
        user: &mut User,
        request: &[u8],
        now: Instant,
    ) -> Result<Instant, Attempt> {
        user.connect_time = None;
        user.stale_retry = false;
        // A failed connect never reaches `exchange`, which resets this; a
        // stale value would be recorded as this attempt's TTFB and status.
        user.observed = Observed::default();
        // `now` is fresh unless a connect or a retry intervenes.
        let mut fresh = Some(now);
        loop {
            if user.conn.is_none() {
                let pooled = self.idle.borrow_mut().pop();
                user.conn = match pooled {
                    Some(conn) => Some(conn),
                    None => {
                        let started = Instant::now();
                        let conn = self
                            .connect()
                            .await
                            .map_err(|class| Attempt { class, t0: started })?;
                        let connected = Instant::now();
                        user.connect_time = Some(connected - started);
                        fresh = Some(connected);
                        self.open_connections.set(self.open_connections.get() + 1);
                        Some(conn)
                    }
                };
            }
            let Some(conn) = user.conn.as_mut() else {
                unreachable!("a connection was just ensured");
            };
            let t0 = fresh.take().unwrap_or_else(Instant::now);
            let guard = InflightGuard::new(self, t0 + self.plan.timeout, conn.stream.raw_fd());
            let result = exchange::exchange(
                conn,
                self.plan.protocol,
                request,
                &mut user.scratch,
                t0,
                &mut user.observed,
            )
            .await;
            let timed_out = guard.finish();
            let keep = matches!(result, Ok(())) && user.observed.keep_alive && !timed_out;
            if !keep {
                self.close(&mut user.conn);
            }
            return match result {
                _ if timed_out => Err(Attempt {
                    class: ErrorClass::Timeout,
                    t0,
                }),
                Ok(()) => Ok(t0),
                Err(Failure::Stale) if !user.stale_retry => {
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

    fn close(&self, conn: &mut Option<Conn>) {
        if conn.take().is_some() {
            self.open_connections
                .set(self.open_connections.get().saturating_sub(1));
        }
    }

    /// Folds one finished request into the stage's metrics.
    fn record(&self, run: &StageRun, user: &User, result: Result<Instant, Attempt>) {
        let mut m = run.metrics.borrow_mut();
        let t0 = match &result {
            Ok(t0) => *t0,
            Err(a) => a.t0,
        };
        if let Some(connect) = user.connect_time {
            m.connects += 1;
            m.connect.record(connect);
        }
        if t0 < run.measure_from {
            m.warmup_requests += 1;
            return;
        }
        m.requests += 1;
        m.stale_retries += u64::from(user.stale_retry);
        let observed = &user.observed;
        let class = match result {
            Err(a) => Some(a.class),
            Ok(_) if (200..300).contains(&observed.status) => None,
            Ok(_) => Some(ErrorClass::for_status(observed.status)),
        };
        if observed.status != 0 && !matches!(class, Some(c) if is_connect_class(c)) {
            m.count_status(observed.status);
        }
        if let Some(ttfb) = observed.ttfb {
            m.ttfb.record(ttfb);
        }
        if let Some(class) = class {
            m.count_error(class);
            if class == ErrorClass::Http429 {
                m.retry_after_s_max = m.retry_after_s_max.max(observed.retry_after_s);
            }
            return;
        }
        m.ok += 1;
        if let Some(done) = observed.done_at {
            m.latency.record(done - t0);
        }
        if let Some(ttft) = observed.ttft {
            m.ttft.record(ttft);
        }
        for &gap in &user.scratch.itl_gaps_us {
            m.itl.record_us(u64::from(gap));
        }
        m.itl_gaps_dropped += observed.itl_gaps_dropped;
        m.sse_events += observed.sse_events;
        m.content_events += observed.content_events;
        let reply = &user.scratch.reply;
        m.content_bytes += reply.content_bytes;
        match (reply.prompt_tokens, reply.completion_tokens) {
            (None, None) => m.usage_missing += 1,
            (p, c) => {
                m.prompt_tokens += p.unwrap_or(0);
                m.completion_tokens += c.unwrap_or(0);
            }
        }
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

/// Requests in flight with their deadlines, for the timeout watchdog.
///
/// A slab: slots are reused through a free list, so registering a request
/// does not allocate once the slab has grown to the peak in-flight count.
#[derive(Default)]
struct Inflight {
    slots: Vec<Slot>,
    free: Vec<usize>,
}

#[derive(Clone, Copy)]
struct Slot {
    deadline: Instant,
    fd: RawFd,
    live: bool,
    expired: bool,
}

impl Inflight {
    fn register(&mut self, deadline: Instant, fd: RawFd) -> usize {
        let slot = Slot {
            deadline,
            fd,
            live: true,
            expired: false,
        };
        match self.free.pop() {
            Some(i) => {
                self.slots[i] = slot;
                i
            }
            None => {
                self.slots.push(slot);
                self.slots.len() - 1
            }
        }
    }

    fn unregister(&mut self, index: usize) -> bool {
        let slot = &mut self.slots[index];
        assert!(slot.live, "in-flight slot {index} released twice");
        slot.live = false;
        self.free.push(index);
        slot.expired
    }

    /// Shuts down the sockets of requests past their deadline; their
    /// pending reads then return and the request reports a timeout.
    fn expire(&mut self, now: Instant) {
        for slot in self.slots.iter_mut() {
            if slot.live && !slot.expired && now >= slot.deadline {
                slot.expired = true;
                rt::shutdown_fd(slot.fd);
            }
        }
    }
}

/// Keeps a request registered with the watchdog; unregisters on drop, so a
/// panicking request can never leave a slot that would later shut down an
/// unrelated socket reusing the same fd number.
struct InflightGuard<'a> {
    shard: &'a Shard,
    index: Option<usize>,
}

impl<'a> InflightGuard<'a> {
    fn new(shard: &'a Shard, deadline: Instant, fd: RawFd) -> Self {
        let index = shard.inflight.borrow_mut().register(deadline, fd);
        InflightGuard {
            shard,
            index: Some(index),
        }
    }

    /// Unregisters; returns whether the request timed out.
    fn finish(mut self) -> bool {
        let index = self.index.take();
        index.is_some_and(|i| self.shard.inflight.borrow_mut().unregister(i))
    }
}

impl Drop for InflightGuard<'_> {
    fn drop(&mut self) {
        if let Some(i) = self.index.take() {
            if let Ok(mut inflight) = self.shard.inflight.try_borrow_mut() {
                inflight.unregister(i);
            }
        }
    }
}

async fn watchdog(shard: Rc<Shard>, _run: Rc<StageRun>) {
    while !shard.watchdog_stop.get() {
        rt::sleep(limits::TIMEOUT_TICK).await;
        shard.inflight.borrow_mut().expire(Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up() {
        for total in [0u64, 1, 2, 7, 100, 1001] {
            for count in 1..=5 {
                let sum: u64 = (0..count).map(|i| share_of(total, i, count)).sum();
                assert_eq!(sum, total);
                let max = (0..count).map(|i| share_of(total, i, count)).max().unwrap();
                let min = (0..count).map(|i| share_of(total, i, count)).min().unwrap();
                assert!(max - min <= 1);
            }
        }
    }

    #[test]
    fn inflight_slab_reuses_and_expires() {
        let mut inflight = Inflight::default();
        let now = Instant::now();
        let a = inflight.register(now + Duration::from_secs(10), -1);
        let b = inflight.register(now, -1);
        inflight.expire(now);
        assert!(!inflight.unregister(a));
        assert!(inflight.unregister(b));
        let c = inflight.register(now, -1);
        assert!(c == a || c == b);
        assert_eq!(inflight.slots.len(), 2);
    }
}
