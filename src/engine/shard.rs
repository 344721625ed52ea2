//! One shard: a pinned executor that owns its connections, users, RNG,
//! buffers and histograms, and talks to the coordinator only through two
//! bounded channels wired before it started.
//!
//! Per stage it spawns its share of virtual users, lets them loop until the
//! stage's end instant, waits for the requests in flight to finish, and
//! sends its `StageMetrics` to the coordinator. A `Stop` command moves the
//! end instant to now (Ctrl-C); the stage still ends cleanly.
//!
//! Users are split over scenarios by weight for the whole stage, then dealt
//! to shards in turn, so every shard runs a similar blend. A user runs
//! conversations of its scenario back to back: each turn's request is
//! built by `workload`, sent by `Shard::request`, and folded into that
//! scenario's metrics; a multi-turn user appends the reply to its history,
//! waits its think time and sends the next turn.
//!
//! The source of work (`closed_user`) is separate from the request
//! machinery (`Shard::request` and `exchange`), so an open-loop arrival
//! source can drive the same machinery.

use super::arrivals::{Blend, Schedule};
use super::exchange::{self, Conn, Failure, Observed, Scratch};
use super::workload::{self, ScenarioState, UUID_LEN};
use super::{Command, Report, ShardMessage, Tick, COMMAND_POLL};
use crate::limits;
use crate::plan::Plan;
use crate::protocol::{Message, Role};
use crate::results::{ErrorClass, FinishedTurn, StageMetrics, Window};
use crate::rng::Rng;
use crate::rt;
use crate::sink::{Record, RecordKey, SinkSender};
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
    /// Ticks and stage reports to the coordinator.
    pub reports: mpsc::SyncSender<ShardMessage>,
    /// Where finished turns go for `results-<ts>.jsonl`, if anywhere.
    pub sink: Option<SinkSender>,
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
    let shard = Rc::new(Shard::new(ctx.index, ctx.count, ctx.plan, ctx.sink));
    // The first message on an empty channel: it cannot be full. If the
    // coordinator is gone, there is nothing to run.
    if ctx.reports.try_send(ShardMessage::Ready).is_err() {
        return;
    }
    while let Some(command) = next_command(&commands).await {
        let Command::RunStage { index, start } = command else {
            // Stop between stages, or Shutdown: nothing is running.
            if matches!(command, Command::Shutdown) {
                break;
            }
            continue;
        };
        // The start is a little ahead of the command (STAGE_START_LEAD), so
        // every shard begins on time rather than behind.
        rt::sleep_until(start).await;
        let stage = shard.plan.stages[index];
        let run = Rc::new(StageRun::new(
            index,
            &stage,
            start,
            shard.plan.warmup,
            shard.plan.scenarios.len(),
        ));
        let ticker = rt::spawn(tick_loop(shard.clone(), run.clone(), ctx.reports.clone()));
        let stage_future = run_stage(&shard, &run, index);
        let stop_listener = async {
            // Any command mid-stage (Stop, Shutdown) or a vanished
            // coordinator ends the stage now; in-flight requests finish.
            next_command(&commands).await;
            run.end.set(Instant::now());
            std::future::pending::<()>().await;
        };
        stage_future.or(stop_listener).await;
        // The last, partial second, if anything finished in it.
        run.done.set(true);
        if run.window.borrow().requests > 0 {
            let _ = ctx.reports.try_send(ShardMessage::Tick(shard.tick(&run)));
        }
        ticker.detach();
        let report = Report {
            shard: shard.index,
            stage: index,
            scenarios: run.metrics.take(),
            connections_open: shard.open_connections.get(),
            inflight_peak: shard.inflight_peak.get(),
            cpu_s: crate::host::thread_cpu_seconds(),
        };
        // The channel holds several reports per shard and the coordinator
        // drains it every stage, so it is never full in practice; if it
        // were, wait on the executor rather than block the thread.
        let mut pending = ShardMessage::Report(report);
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

/// Sends a tick at the end of every whole second of the stage (absolute
/// instants, so the seconds do not drift), until the stage is done.
async fn tick_loop(shard: Rc<Shard>, run: Rc<StageRun>, reports: mpsc::SyncSender<ShardMessage>) {
    loop {
        let next = run.start + Duration::from_secs(u64::from(run.ticks.get()) + 1);
        let now = Instant::now();
        if next > now {
            rt::sleep(next - now).await;
        }
        if run.done.get() {
            return;
        }
        // A full channel drops the tick: progress is best effort.
        let _ = reports.try_send(ShardMessage::Tick(shard.tick(&run)));
    }
}

/// State of the stage being run.
struct StageRun {
    /// Index into `Plan::stages`.
    index: usize,
    /// When the stage started (open-loop arrivals are offsets from it).
    start: Instant,
    /// No request starts at or after this instant.
    end: Cell<Instant>,
    /// Requests starting before this are warm-up.
    measure_from: Instant,
    /// What this shard measured, per scenario.
    metrics: RefCell<Vec<StageMetrics>>,
    /// What finished since the last tick.
    window: RefCell<Window>,
    /// Ticks sent so far.
    ticks: Cell<u32>,
    /// The stage is over (no more ticks from the tick loop).
    done: Cell<bool>,
}

impl StageRun {
    fn new(
        index: usize,
        stage: &Stage,
        start: Instant,
        warmup: Duration,
        scenarios: usize,
    ) -> Self {
        StageRun {
            index,
            start,
            end: Cell::new(start + stage.duration),
            measure_from: start + warmup,
            metrics: RefCell::new((0..scenarios).map(|_| StageMetrics::new()).collect()),
            window: RefCell::new(Window::default()),
            ticks: Cell::new(0),
            done: Cell::new(false),
        }
    }
}

async fn run_stage(shard: &Rc<Shard>, run: &Rc<StageRun>, index: usize) {
    let stage = shard.plan.stages[index];
    let users = match stage.load {
        Load::Closed { users } => users,
        Load::Open { rate, poisson } => {
            let watchdog = rt::spawn(watchdog(shard.clone(), run.clone()));
            shard.inflight_peak.set(0);
            // Its own task: the stage task also polls the stop listener,
            // and every poll of a pending glommio sleep registers another
            // timer entry, so waking the stage task 10,000 times a second
            // would pile up timer entries for nothing.
            rt::spawn(pacer(shard.clone(), run.clone(), index, rate, poisson)).await;
            shard.watchdog_stop.set(true);
            watchdog.await;
            shard.watchdog_stop.set(false);
            return;
        }
    };
    let watchdog = rt::spawn(watchdog(shard.clone(), run.clone()));
    let mut tasks = Vec::with_capacity(share_of(users, shard.index, shard.count) as usize);
    for (user, scenario) in users_of_shard(&shard.plan, users, shard.index, shard.count) {
        let seed = user_seed(shard.plan.seed, index, user);
        tasks.push(rt::spawn(closed_user(
            shard.clone(),
            run.clone(),
            scenario,
            seed,
        )));
    }
    for task in tasks {
        task.await;
    }
    shard.watchdog_stop.set(true);
    watchdog.await;
    shard.watchdog_stop.set(false);
}

/// The users of a stage that run on shard `index`, as (user number,
/// scenario): the stage's users are split over scenarios by weight, listed
/// scenario by scenario, and dealt to the shards in turn.
pub fn users_of_shard(plan: &Plan, users: u64, index: usize, count: usize) -> Vec<(u64, usize)> {
    let mut mine = Vec::new();
    let mut user = 0u64;
    for (scenario, n) in plan.split_users(users).into_iter().enumerate() {
        for _ in 0..n {
            if user % count as u64 == index as u64 {
                mine.push((user, scenario));
            }
            user += 1;
        }
    }
    mine
}

/// A user's seed: the same user of the same stage makes the same choices
/// in every run with this seed, whatever the timing.
fn user_seed(seed: u64, stage: usize, user: u64) -> u64 {
    let mut rng = Rng::new(seed ^ (stage as u64).wrapping_mul(0xA24B_AED4_963E_E407));
    rng.next_u64() ^ user.wrapping_mul(0x9FB2_1C65_1E98_DF25)
}

/// This shard's share of `total`: an even split, the remainder going to the
/// lowest-numbered shards.
pub fn share_of(total: u64, index: usize, count: usize) -> u64 {
    assert!(index < count, "shard index {index} out of range {count}");
    let count = count as u64;
    let index = index as u64;
    total / count + u64::from(index < total % count)
}

/// A closed-loop virtual user: conversations of one scenario back to back
/// until the stage ends. Holds one connection for its life and hands it
/// back to the shard's idle pool for its target at the end.
async fn closed_user(shard: Rc<Shard>, run: Rc<StageRun>, scenario: usize, seed: u64) {
    let plan = shard.plan.clone();
    let sc = &plan.scenarios[scenario];
    let mut user = User::new(seed, plan.run_nonce, !sc.single_turn());
    // The clock is read twice per request (send, and each read), because
    // on this VM `clock_gettime` showed up at 4 % of the engine's CPU when
    // it was read four times. The previous response's completion instant
    // serves as "now" for the loop check and the next send; what runs in
    // between is this loop's bookkeeping, well under a microsecond.
    let mut now = Instant::now();
    // A user thinks after every answer: between turns (inside
    // `conversation`), and before starting its next conversation, so
    // single-turn scenarios are paced like people too. Its very first
    // request waits a random part of one think time, so a stage's users
    // arrive spread out as people would, not all in the first millisecond.
    let mut first = true;
    while now < run.end.get() {
        let mut think = user.think_time(sc.think_time);
        if first && !think.is_zero() {
            let part = user.rng.below(1_000_001) as f64 / 1_000_000.0;
            think = think.mul_f64(part);
        }
        first = false;
        if !think.is_zero() {
            let left = run.end.get().saturating_duration_since(Instant::now());
            rt::sleep(think.min(left)).await;
            now = Instant::now();
            if now >= run.end.get() {
                break;
            }
        }
        let outcome = conversation(&shard, &run, scenario, &mut user, now, None).await;
        now = outcome.now;
        if outcome.connect_failed {
            let left = run.end.get().saturating_duration_since(Instant::now());
            rt::sleep(CONNECT_RETRY_BACKOFF.min(left)).await;
            now = Instant::now();
        }
    }
    if let Some(conn) = user.conn.take() {
        shard.idle[sc.target].borrow_mut().push(conn);
    }
}

/// How a conversation ended, for the loop that runs the next one.
struct Outcome {
    /// The instant to continue from (the last response's completion when
    /// known, so no extra clock read is needed).
    now: Instant,
    /// It ended because a connection could not be opened.
    connect_failed: bool,
}

/// Runs one conversation of `scenario` with `user`: its turns back to back
/// with think time between them, each reply fed into the next turn's
/// history, until the last turn, a failed turn or the end of the stage.
/// `intended` is the open-loop arrival time of its first turn; closed-loop
/// conversations pass `None`.
async fn conversation(
    shard: &Shard,
    run: &StageRun,
    scenario: usize,
    user: &mut User,
    mut now: Instant,
    mut intended: Option<Instant>,
) -> Outcome {
    let sc = &shard.plan.scenarios[scenario];
    let turns = user.rng.range_inclusive(sc.turns.0, sc.turns.1);
    user.uuid = workload::new_uuid(&mut user.ids);
    user.history.clear();
    for turn in 0..turns {
        if turn > 0 {
            let think = user.think_time(sc.think_time);
            if intended.is_some() {
                // A later turn is due one think time after the previous
                // answer; a late timer shows as scheduler lag.
                intended = Some(now + think);
            }
            if !think.is_zero() {
                let left = run.end.get().saturating_duration_since(Instant::now());
                rt::sleep(think.min(left)).await;
                now = Instant::now();
            }
            if now >= run.end.get() {
                run.metrics.borrow_mut()[scenario].conversations_cut += 1;
                break;
            }
        }
        let Some(source) = shard.prepare(scenario, user, turn) else {
            run.metrics.borrow_mut()[scenario].context_limit += 1;
            // The plan bounds first turns, but escaping can still grow one
            // past the limit; back off rather than spin on it.
            if turn == 0 {
                let left = run.end.get().saturating_duration_since(Instant::now());
                rt::sleep(CONNECT_RETRY_BACKOFF.min(left)).await;
            }
            return Outcome {
                now: Instant::now(),
                connect_failed: false,
            };
        };
        let result = AssertUnwindSafe(shard.request(user, scenario, source, now))
            .catch_unwind()
            .await;
        let result = result.unwrap_or_else(|_| {
            shard.close(&mut user.conn);
            Err(Attempt {
                class: ErrorClass::Panic,
                t0: now,
            })
        });
        let connect_failed = matches!(&result, Err(a) if a.class.is_connect());
        now = match (&result, user.observed.done_at) {
            (Ok(_), Some(done)) => done,
            _ => Instant::now(),
        };
        let at = TurnAt {
            scenario,
            turn,
            turns,
            intended,
        };
        if !shard.record(run, user, result, at) {
            return Outcome {
                now,
                connect_failed,
            };
        }
        if turn + 1 < turns {
            let reply = String::from_utf8_lossy(&user.scratch.reply.content).into_owned();
            user.history.push(Message {
                role: Role::Assistant,
                content: reply,
            });
        }
    }
    Outcome {
        now,
        connect_failed: false,
    }
}

/// The open-loop pacer of one shard for one stage: starts a conversation at
/// every arrival time of its schedule, whatever the responses do.
///
/// Arrivals are due at absolute instants (stage start + offset), so the
/// pacer catches up after any delay instead of drifting. It sleeps until the
/// next arrival but at least `limits::PACER_TICK`, and on each wake-up
/// starts every arrival already due: at high rates that is one timer
/// wake-up per tick instead of one per arrival. An arrival that finds
/// `max_inflight` conversations in flight is counted as dropped, never
/// queued or delayed.
async fn pacer(shard: Rc<Shard>, run: Rc<StageRun>, stage: usize, rate: f64, poisson: bool) {
    let plan = &shard.plan;
    let seed = plan.seed ^ (stage as u64).wrapping_mul(0x2545_F491_4F6C_DD1D);
    let mut schedule = Schedule::new(rate, poisson, shard.index, shard.count, seed);
    let weights: Vec<f64> = plan.scenarios.iter().map(|s| s.weight).collect();
    let mut blend = Blend::new(&weights);
    let limit = share_of(plan.max_inflight, shard.index, shard.count).max(1);
    let mut pass = PacerPass::new(plan.targets.len());
    // The next arrival's instant, converted from the schedule once per
    // arrival.
    let mut due = run.start + schedule.peek();
    'pacing: loop {
        let mut now = Instant::now();
        pass.reset();
        loop {
            if due >= run.end.get() {
                break 'pacing;
            }
            if due > now {
                break;
            }
            let intended = due;
            schedule.advance();
            due = run.start + schedule.peek();
            let scenario = blend.pick();
            let measured = intended >= run.measure_from;
            if measured {
                run.metrics.borrow_mut()[scenario].arrivals += 1;
            }
            if shard.open_inflight.get() >= limit {
                if measured {
                    run.metrics.borrow_mut()[scenario].dropped_arrivals += 1;
                }
                continue;
            }
            // An arrival past this pass's connect budget waits until the
            // answers already received have been read and their
            // connections pooled. It is held, not dropped: its intended
            // instant stays, and the wait shows as its scheduler lag. The
            // wait is for this shard's own CPU, never for the server.
            let target = plan.scenarios[scenario].target;
            while !pass.admit(target, shard.idle[target].borrow().len()) {
                rt::after_socket_poll().await;
                pass.reset();
                now = Instant::now();
            }
            let inflight = shard.open_inflight.get() + 1;
            shard.open_inflight.set(inflight);
            shard
                .inflight_peak
                .set(shard.inflight_peak.get().max(inflight));
            rt::spawn(open_arrival(shard.clone(), run.clone(), scenario, intended)).detach();
            // A long catch-up (the shard lost the CPU for a while) must
            // not keep it: answers that came in meanwhile would be read,
            // and their latency stamped, only after the whole backlog, and
            // their connections would not return to the pool, so every
            // late arrival would open a new one.
            if rt::need_yield() {
                rt::yield_if_needed().await;
                pass.reset();
                now = Instant::now();
            }
        }
        rt::sleep_until(due.max(now + limits::PACER_TICK).min(run.end.get())).await;
    }
    // The stage's arrivals are all started; let them finish.
    while shard.open_inflight.get() > 0 {
        rt::sleep(OPEN_DRAIN_POLL).await;
    }
}

/// What one pass of the pacer (its run between two yields) has started:
/// the arrivals it spawned run after it yields, so until then the idle
/// pool has not yet lost the connections they will take.
struct PacerPass {
    /// Per target: arrivals spawned this pass.
    spawned: Vec<usize>,
    /// Arrivals this pass may still start that will find no idle
    /// connection (`limits::PACER_CONNECTS_PER_PASS`).
    connects_left: u32,
}

impl PacerPass {
    fn new(targets: usize) -> Self {
        PacerPass {
            spawned: vec![0; targets],
            connects_left: limits::PACER_CONNECTS_PER_PASS,
        }
    }

    /// A new pass: the arrivals of the last one have run.
    fn reset(&mut self) {
        self.spawned.fill(0);
        self.connects_left = limits::PACER_CONNECTS_PER_PASS;
    }

    /// Whether an arrival for `target` may start in this pass, given the
    /// target's idle connections now; counts it if so.
    fn admit(&mut self, target: usize, idle: usize) -> bool {
        let Some(spawned) = self.spawned.get_mut(target) else {
            return true;
        };
        if *spawned >= idle {
            if self.connects_left == 0 {
                return false;
            }
            self.connects_left -= 1;
        }
        *spawned += 1;
        true
    }
}

/// How often a pacer checks whether its stage's conversations are done.
const OPEN_DRAIN_POLL: Duration = Duration::from_millis(1);

/// One open-loop arrival: a conversation on a pooled user, then the user
/// and its connection go back to the shard's pools.
async fn open_arrival(shard: Rc<Shard>, run: Rc<StageRun>, scenario: usize, intended: Instant) {
    // Released on drop, so even a panic outside the per-request guard
    // cannot leave the pacer waiting for a conversation that is gone.
    struct InFlight<'a>(&'a Shard);
    impl Drop for InFlight<'_> {
        fn drop(&mut self) {
            let count = &self.0.open_inflight;
            count.set(count.get().saturating_sub(1));
        }
    }
    let _in_flight = InFlight(&shard);
    let mut user = shard.take_user(scenario);
    let now = Instant::now();
    if intended >= run.measure_from {
        run.metrics.borrow_mut()[scenario]
            .sched_lag
            .record(now.saturating_duration_since(intended));
    }
    conversation(&shard, &run, scenario, &mut user, now, Some(intended)).await;
    let target = shard.plan.scenarios[scenario].target;
    if let Some(conn) = user.conn.take() {
        shard.idle[target].borrow_mut().push(conn);
    }
    shard.users.borrow_mut().push(user);
}

/// One virtual user's state.
struct User {
    /// The connection it holds, if any.
    conn: Option<Conn>,
    /// Its response buffers.
    scratch: Scratch,
    /// A request serialized for this user (multi-turn, or a filled template).
    request: Vec<u8>,
    /// Body scratch while serializing.
    body: Vec<u8>,
    /// The conversation so far (multi-turn only).
    history: Vec<Message>,
    /// The current conversation's UUID.
    uuid: [u8; UUID_LEN],
    /// Bytes of prompt text in the current request (for estimates).
    prompt_bytes: u64,
    /// Content and turn choices, from the run's seed.
    rng: Rng,
    /// Conversation UUIDs: the seed mixed with a per-run nonce, so reruns
    /// never repeat a UUID a cache might remember.
    ids: Rng,
    /// What the exchange saw.
    observed: Observed,
    /// Time spent opening a connection for the current request.
    connect_time: Option<Duration>,
    /// The current request was retried after a stale connection.
    stale_retry: bool,
}

impl User {
    fn new(seed: u64, nonce: u64, keep_content: bool) -> Self {
        let mut scratch = Scratch::default();
        scratch.reply.keep_content = keep_content;
        User {
            conn: None,
            scratch,
            request: Vec::new(),
            body: Vec::new(),
            history: Vec::new(),
            uuid: [b'0'; UUID_LEN],
            prompt_bytes: 0,
            rng: Rng::new(seed),
            ids: Rng::new(seed ^ nonce),
            observed: Observed::default(),
            connect_time: None,
            stale_retry: false,
        }
    }

    /// A think time drawn from the scenario's range.
    fn think_time(&mut self, (min, max): (Duration, Duration)) -> Duration {
        if max <= min {
            return min;
        }
        let span = (max - min).as_micros() as u64;
        min + Duration::from_micros(self.rng.below(span + 1))
    }
}

/// Where the bytes of a request are.
#[derive(Debug, Clone, Copy)]
enum Source {
    /// A shard template, sent as is (nothing in it varies).
    Template(usize),
    /// The user's own `request` buffer.
    Own,
}

/// Where a finished request sits: its scenario, its turn (0-based) of how
/// many, and its open-loop intended send time.
#[derive(Debug, Clone, Copy)]
struct TurnAt {
    scenario: usize,
    turn: u64,
    turns: u64,
    intended: Option<Instant>,
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
    /// Per scenario: head prefix, templates, generated text.
    scenarios: Vec<ScenarioState>,
    /// Idle keep-alive connections, per target.
    idle: Vec<RefCell<Vec<Conn>>>,
    /// Bounds concurrent connects (see `limits::CONNECTS_IN_FLIGHT_PER_SHARD_MAX`).
    connect_slots: rt::Semaphore,
    /// Requests in flight, for the timeout watchdog.
    inflight: RefCell<Inflight>,
    /// Tells the watchdog to exit.
    watchdog_stop: Cell<bool>,
    /// Connections currently open.
    open_connections: Rc<Cell<u64>>,
    /// Open loop: idle users, reused by arrivals so their buffers are too.
    /// Boxed: a `User` is 520 bytes, and held by value in the arrival's
    /// future it made each arrival's task allocation 1,392 bytes, past the
    /// largest size glibc's per-thread cache serves (1,032); boxed, it is
    /// 880, and the user is no longer copied in and out of the pool. (No
    /// change in lag or rate could be measured on the development VM.)
    #[expect(
        clippy::vec_box,
        reason = "an arrival moves a pointer out of the pool, not 520 bytes"
    )]
    users: RefCell<Vec<Box<User>>>,
    /// Seeds users created for open-loop arrivals.
    user_seeds: RefCell<Rng>,
    /// Open loop: conversations in flight now.
    open_inflight: Cell<u64>,
    /// Open loop: most conversations in flight in this stage.
    inflight_peak: Cell<u64>,
    /// The JSONL writer's queue for this shard.
    sink: Option<SinkSender>,
    /// Scratch for the per-turn ITL median.
    itl_scratch: RefCell<Vec<u32>>,
}

impl Shard {
    fn new(index: usize, count: usize, plan: Arc<Plan>, sink: Option<SinkSender>) -> Self {
        let seed = plan.seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let mut rng = Rng::new(seed);
        let scenarios = (0..plan.scenarios.len())
            .map(|i| ScenarioState::new(&plan, i, &mut rng))
            .collect();
        Shard {
            index,
            count,
            idle: plan
                .targets
                .iter()
                .map(|_| RefCell::new(Vec::new()))
                .collect(),
            plan,
            scenarios,
            connect_slots: rt::Semaphore::new(limits::CONNECTS_IN_FLIGHT_PER_SHARD_MAX),
            inflight: RefCell::new(Inflight::default()),
            watchdog_stop: Cell::new(false),
            open_connections: Rc::new(Cell::new(0)),
            users: RefCell::new(Vec::new()),
            user_seeds: RefCell::new(Rng::new(seed)),
            open_inflight: Cell::new(0),
            inflight_peak: Cell::new(0),
            sink,
            itl_scratch: RefCell::new(Vec::new()),
        }
    }

    /// Closes the current second of `run` into a tick.
    fn tick(&self, run: &StageRun) -> Tick {
        let second = run.ticks.get() + 1;
        run.ticks.set(second);
        let in_flight = if run.done.get() {
            0
        } else {
            self.inflight.borrow().live as u64
        };
        Tick {
            shard: self.index,
            stage: run.index,
            second,
            window: run.window.take(),
            in_flight,
        }
    }

    /// An idle user for an open-loop arrival of `scenario`.
    fn take_user(&self, scenario: usize) -> Box<User> {
        let keep = !self.plan.scenarios[scenario].single_turn();
        let mut user = self.users.borrow_mut().pop().unwrap_or_else(|| {
            let seed = self.user_seeds.borrow_mut().next_u64();
            Box::new(User::new(seed, self.plan.run_nonce, keep))
        });
        user.scratch.reply.keep_content = keep;
        user
    }

    /// Puts turn `turn` of the user's conversation into sendable bytes.
    /// `None` when the request would exceed `limits::REQUEST_BYTES_MAX`.
    fn prepare(&self, scenario: usize, user: &mut User, turn: u64) -> Option<Source> {
        let sc = &self.plan.scenarios[scenario];
        let state = &self.scenarios[scenario];
        if turn == 0 {
            if let Some(i) = state.pick_template(sc, &mut user.rng) {
                let template = &state.templates[i];
                user.prompt_bytes = template.prompt_bytes;
                if template.uuid_at.is_empty() {
                    return Some(Source::Template(i));
                }
                workload::fill_template(template, &user.uuid, &mut user.request);
                return Some(Source::Own);
            }
        }
        let text = state.turn_text(sc, turn, &mut user.rng);
        let content = if turn == 0 {
            workload::first_message(&self.plan, &user.uuid, text)
        } else {
            text.to_string()
        };
        user.history.push(Message {
            role: Role::User,
            content,
        });
        user.prompt_bytes = workload::prompt_bytes(sc, &user.history);
        workload::build_request(
            &self.plan,
            sc,
            &state.head_prefix,
            &user.uuid,
            &user.history,
            &mut user.body,
            &mut user.request,
        );
        (user.request.len() <= limits::REQUEST_BYTES_MAX).then_some(Source::Own)
    }

    /// Opens a connection, waiting for a connect slot first.
    async fn connect(&self, target: usize) -> Result<Conn, ErrorClass> {
        let _permit = self
            .connect_slots
            .acquire_permit(1)
            .await
            .map_err(|_| ErrorClass::ConnOther)?;
        let addr = self.plan.targets[target].addr;
        let stream = rt::TcpStream::connect(addr, self.plan.connect_timeout)
            .await
            .map_err(|e| connect_class(&e))?;
        Ok(Conn::new(stream))
    }

    /// Sends the user's prepared request, connecting or reconnecting as
    /// needed; retries once when a reused idle connection turns out stale.
    async fn request(
        &self,
        user: &mut User,
        scenario: usize,
        source: Source,
        now: Instant,
    ) -> Result<Instant, Attempt> {
        let sc = &self.plan.scenarios[scenario];
        user.connect_time = None;
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
                        let started = Instant::now();
                        let conn = self
                            .connect(sc.target)
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
            let User {
                conn,
                scratch,
                observed,
                request: own,
                ..
            } = &mut *user;
            let Some(conn) = conn.as_mut() else {
                unreachable!("a connection was just ensured");
            };
            let bytes: &[u8] = match source {
                Source::Template(i) => &self.scenarios[scenario].templates[i].bytes,
                Source::Own => own,
            };
            let t0 = fresh.take().unwrap_or_else(Instant::now);
            let guard = InflightGuard::new(self, t0 + sc.timeout, conn.stream.raw_fd());
            let result = exchange::exchange(conn, sc.protocol, bytes, scratch, t0, observed).await;
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

    /// Counts one finished turn: in its scenario's metrics, the current
    /// second and the per-turn log. Returns whether it succeeded (a failed
    /// turn ends the conversation).
    fn record(
        &self,
        run: &StageRun,
        user: &User,
        result: Result<Instant, Attempt>,
        at: TurnAt,
    ) -> bool {
        let observed = &user.observed;
        let reply = &user.scratch.reply;
        let (t0, error) = match result {
            Err(a) => (a.t0, Some(a.class)),
            Ok(t0) if (200..300).contains(&observed.status) => (t0, None),
            Ok(t0) => (t0, Some(ErrorClass::for_status(observed.status))),
        };
        let turn = FinishedTurn {
            turn: at.turn,
            turns: at.turns,
            // Open loop: a request belongs to the window its intended time
            // falls in, so a late start cannot move it out of a stage's count.
            warmup: at.intended.unwrap_or(t0) < run.measure_from,
            error,
            status: observed.status,
            connect: user.connect_time,
            stale_retry: user.stale_retry,
            ttfb: observed.ttfb,
            ttft: observed.ttft,
            latency: observed
                .done_at
                .map(|done| done.saturating_duration_since(t0)),
            late: at
                .intended
                .map(|intended| t0.saturating_duration_since(intended)),
            retry_after_s: observed.retry_after_s,
            itl_gaps_us: &user.scratch.itl_gaps_us,
            itl_gaps_dropped: observed.itl_gaps_dropped,
            sse_events: observed.sse_events,
            content_events: observed.content_events,
            content_bytes: reply.content_bytes,
            prompt_tokens: reply.prompt_tokens,
            completion_tokens: reply.completion_tokens,
            cached_tokens: reply.cached_tokens,
            prompt_bytes: user.prompt_bytes,
        };
        if let Some(sink) = &self.sink {
            let key = RecordKey {
                conv_uuid: user.uuid,
                scenario: at.scenario as u16,
                stage: run.index as u16,
                shard: self.index as u16,
                intended: at.intended,
                start: t0,
            };
            sink.send(Record::of(key, &turn, &mut self.itl_scratch.borrow_mut()));
        }
        run.window.borrow_mut().record_turn(&turn);
        run.metrics.borrow_mut()[at.scenario].record_turn(&turn)
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
    /// Slots in use (requests in flight).
    live: usize,
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
        self.live += 1;
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
        self.live -= 1;
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
    fn a_pacer_pass_limits_connects_not_reuse() {
        let budget = limits::PACER_CONNECTS_PER_PASS as usize;
        let mut pass = PacerPass::new(2);
        // Target 0 has 5 idle connections: those 5 arrivals are free, the
        // next ones each spend a connect.
        let admitted = (0..1000).take_while(|_| pass.admit(0, 5)).count();
        assert_eq!(admitted, 5 + budget);
        // The budget is the pass's, whatever the target; idle connections
        // of target 1 still serve target 1.
        assert!(pass.admit(1, 3));
        assert!(pass.admit(1, 3));
        assert!(pass.admit(1, 3));
        assert!(!pass.admit(1, 3));
        // A new pass (the spawned arrivals have run) starts afresh.
        pass.reset();
        let admitted = (0..1000).take_while(|_| pass.admit(1, 0)).count();
        assert_eq!(admitted, budget);
        // An unknown target is never held (a plan always has its targets).
        assert!(pass.admit(7, 0));
    }

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
