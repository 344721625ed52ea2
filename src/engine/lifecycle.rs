//! A shard's life: it starts on its executor, says it is ready, and for
//! each stage command runs the stage (closed-loop users or the open-loop
//! pacer, with the timeout watchdog), sends a tick every second and its
//! report at the end. A `Stop` command moves the end instant to now
//! (Ctrl-C); the stage still ends cleanly.

use super::closed::{closed_user, share_of, user_seed, users_of_shard};
use super::inflight::watchdog;
use super::pacer::pacer;
use super::shard::Shard;
use super::{Command, Report, ShardMessage};
use crate::limits;
use crate::plan::Plan;
use crate::results::{StageMetrics, Window};
use crate::rt;
use crate::sink::SinkSender;
use crate::stage::{Load, Stage};
use futures_lite::FutureExt;
use std::cell::{Cell, RefCell};
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
    /// Commands from the coordinator (polled, see `limits::COMMAND_POLL`).
    pub commands: mpsc::Receiver<Command>,
    /// Ticks and stage reports to the coordinator.
    pub reports: mpsc::SyncSender<ShardMessage>,
    /// Where finished turns go for `results-<id>.jsonl`, if anywhere.
    pub sink: Option<SinkSender>,
}

/// Waits for the next command without blocking the executor.
async fn next_command(commands: &mpsc::Receiver<Command>) -> Option<Command> {
    loop {
        match commands.try_recv() {
            Ok(command) => return Some(command),
            Err(mpsc::TryRecvError::Empty) => rt::sleep(limits::COMMAND_POLL).await,
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
        // The start is a little ahead of the command (limits::STAGE_START_LEAD), so
        // every shard begins on time rather than behind.
        rt::sleep_until(start).await;
        let stage = shard.plan.stages[index];
        let run = Rc::new(StageRun::new(
            index,
            &stage,
            start,
            shard.plan.warmup,
            shard.plan.scenarios.len(),
            shard.addresses.len(),
        ));
        let ticker = rt::spawn(tick_loop(shard.clone(), run.clone(), ctx.reports.clone()));
        let stage_future = run_stage(&shard, &run, index);
        let stop_listener = async {
            // A Stop mid-stage ends the stage now and lets in-flight
            // requests finish; anything else (Abandon, Shutdown, a
            // vanished coordinator) also stops waiting for them.
            while let Some(Command::Stop) = next_command(&commands).await {
                run.stopped.set(true);
                run.end.set(Instant::now().min(run.end.get()));
            }
            run.stopped.set(true);
            run.end.set(Instant::now().min(run.end.get()));
        };
        stage_future.or(stop_listener).await;
        // The last, partial second, if anything finished in it.
        run.done.set(true);
        if run.window.borrow().requests > 0 {
            let _ = ctx.reports.try_send(ShardMessage::Tick(shard.tick(&run)));
        }
        ticker.detach();
        // Requests still in flight were abandoned: they go on until the
        // executor ends, counted into metrics nobody reads.
        let fresh = (0..shard.plan.scenarios.len())
            .map(|_| StageMetrics::new())
            .collect();
        let report = Report {
            shard: shard.index,
            stage: index,
            scenarios: run.metrics.replace(fresh),
            connections_open: shard.open_connections.get(),
            requests_by_address: run.address_requests.take(),
            inflight_peak: shard.inflight_peak.get(),
            cpu_s: crate::host::thread_cpu_seconds(),
            sched: crate::host::thread_sched(),
            abandoned: shard.inflight.borrow().live as u64,
        };
        if !send_report(&ctx.reports, report).await {
            return;
        }
    }
}

/// Sends a stage's report; false when the coordinator is gone. The
/// channel holds several reports per shard and the coordinator drains it
/// every stage, so it is never full in practice; if it were, this waits on
/// the executor rather than block the thread.
async fn send_report(reports: &mpsc::SyncSender<ShardMessage>, report: Report) -> bool {
    let mut pending = ShardMessage::Report(report);
    loop {
        match reports.try_send(pending) {
            Ok(()) => return true,
            Err(mpsc::TrySendError::Full(back)) => {
                pending = back;
                rt::sleep(limits::COMMAND_POLL).await;
            }
            Err(mpsc::TrySendError::Disconnected(_)) => return false,
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
pub(super) struct StageRun {
    /// Index into `Plan::stages`.
    pub(super) index: usize,
    /// When the stage started (open-loop arrivals are offsets from it).
    pub(super) start: Instant,
    /// No request starts at or after this instant.
    pub(super) end: Cell<Instant>,
    /// A stop request moved `end` forward: arrivals not sent by then were
    /// cut by the user, not missed by the generator.
    pub(super) stopped: Cell<bool>,
    /// Requests starting before this are warm-up.
    pub(super) measure_from: Instant,
    /// What this shard measured, per scenario.
    pub(super) metrics: RefCell<Vec<StageMetrics>>,
    /// Requests in the measured window per target address (indexed as
    /// `Plan::addresses`).
    pub(super) address_requests: RefCell<Vec<u64>>,
    /// What finished since the last tick.
    pub(super) window: RefCell<Window>,
    /// Ticks sent so far.
    pub(super) ticks: Cell<u32>,
    /// The stage is over (no more ticks from the tick loop).
    pub(super) done: Cell<bool>,
}

impl StageRun {
    pub(super) fn new(
        index: usize,
        stage: &Stage,
        start: Instant,
        warmup: Duration,
        scenarios: usize,
        addresses: usize,
    ) -> Self {
        StageRun {
            index,
            start,
            end: Cell::new(start + stage.duration),
            stopped: Cell::new(false),
            measure_from: start + warmup,
            metrics: RefCell::new((0..scenarios).map(|_| StageMetrics::new()).collect()),
            address_requests: RefCell::new(vec![0; addresses]),
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
    let round = shard.plan.round_of(index) as usize - 1;
    for (user, scenario) in users_of_shard(&shard.plan, users, shard.index, shard.count, round) {
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
