//! Runs a `Plan`: one pinned shard per CPU plus a coordinator.
//!
//! The coordinator is the calling thread (not a shard). Before any shard
//! starts it creates one bounded command channel per shard and one bounded
//! report channel they all send to, so the topology is a fixed partial
//! mesh: the coordinator talks to every shard, shards never talk to each
//! other. For each stage the coordinator sends `RunStage` with a common
//! start instant, waits for every shard's report, merges the reports, and
//! hands the merged stage to the caller before starting the next stage.
//! Histograms are merged exactly once per stage, here.
//!
//! The channels are std's, and shards poll theirs on a timer tick rather
//! than being woken by the sender. glommio's `shared_channel` was tried
//! first: in about one run in twelve a shard parked waiting for a command
//! never woke up (the wake-up across executors was lost; interrupting the
//! thread's `io_uring_enter` with a debugger released it). Control messages
//! are a handful per stage, so a 10 ms poll costs nothing measurable and
//! cannot hang.

pub mod arrivals;
mod closed;
mod conversation;
mod coordinator;
mod exchange;
mod inflight;
mod lifecycle;
mod pacer;
mod request;
mod shard;
pub mod workload;

pub use closed::{share_of, users_of_shard};

use crate::plan::Plan;
use crate::results::{LaneCounts, SeriesPoint, Signal, StageMetrics, StageSummary, Stop, Window};
use crate::rt;
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Instant, SystemTime};

pub use crate::results::RunResult;

/// Coordinator → shard.
#[derive(Debug, Clone, Copy)]
pub enum Command {
    /// Run stage `index`, which started at `start`.
    RunStage {
        /// Index into `Plan::stages`.
        index: usize,
        /// Common start instant for all shards.
        start: Instant,
    },
    /// End the current stage now (in-flight requests still finish).
    Stop,
    /// End the current stage now and report without waiting for the
    /// requests in flight.
    Abandon,
    /// Exit.
    Shutdown,
}

/// Shard → coordinator, once per stage.
#[derive(Debug)]
pub struct Report {
    /// Which shard.
    pub shard: usize,
    /// Which stage.
    pub stage: usize,
    /// What it measured, per scenario.
    pub scenarios: Vec<StageMetrics>,
    /// Connections it had open at the end of the stage.
    pub connections_open: u64,
    /// Measured requests per target address (`Plan::addresses`).
    pub requests_by_address: Vec<u64>,
    /// Open loop: most conversations it had in flight.
    pub inflight_peak: u64,
    /// The shard thread's CPU seconds so far.
    pub cpu_s: f64,
    /// The shard thread's scheduling so far, if known.
    pub sched: Option<crate::host::ThreadSched>,
    /// Requests in flight when the stage was abandoned, not counted.
    pub abandoned: u64,
}

/// One second of one shard's stage, sent as it ends.
#[derive(Debug)]
pub struct Tick {
    /// Which shard.
    pub shard: usize,
    /// Which stage.
    pub stage: usize,
    /// Seconds since the stage started (1 = the first second).
    pub second: u32,
    /// What finished in that second.
    pub window: Window,
    /// Requests in flight at its end.
    pub in_flight: u64,
    /// Each scenario's counters in the stage so far (cumulative, so a
    /// dropped tick loses nothing).
    pub lanes: Vec<LaneCounts>,
}

/// Shard → coordinator.
#[derive(Debug)]
pub enum ShardMessage {
    /// The shard has built its workload (prompts, templates, users) and
    /// waits for its first stage.
    Ready,
    /// A second of a running stage (boxed: it holds four histograms).
    Tick(Box<Tick>),
    /// The end of a stage.
    Report(Report),
}

/// Stop requests so far (signals, or `request_stop`): the first ends the
/// stage and drains, the second abandons the requests in flight. Read by
/// the coordinator between reports; written from signal handlers.
static STOP_REQUESTS: AtomicU32 = AtomicU32::new(0);

/// The number of the signal behind the first stop request (0: none yet).
static STOP_SIGNAL: AtomicI32 = AtomicI32::new(0);

/// Asks a running engine to end the current stage now and skip the rest;
/// asked again, not to wait for requests in flight. Returns how many times
/// it has been asked. Safe to call from a signal handler.
pub fn request_stop(signal: Signal) -> u32 {
    let _ = STOP_SIGNAL.compare_exchange(0, signal.number(), Ordering::Relaxed, Ordering::Relaxed);
    STOP_REQUESTS.fetch_add(1, Ordering::Relaxed) + 1
}

/// How many stops were requested so far.
pub fn stop_requests() -> u32 {
    STOP_REQUESTS.load(Ordering::Relaxed)
}

/// The signal behind the first stop request.
pub fn stop_signal() -> Signal {
    Signal::of(STOP_SIGNAL.load(Ordering::Relaxed)).unwrap_or_default()
}

/// What the engine tells its caller as a run progresses.
#[derive(Debug)]
pub enum Progress<'a> {
    /// Stage `index` has been started on every shard.
    StageStarted(usize),
    /// A second of stage `stage` ended on every shard.
    Second {
        /// Index into `Plan::stages`.
        stage: usize,
        /// What happened in it, as the series keeps it.
        point: &'a SeriesPoint,
        /// The same second unpacked, with what only the live view uses
        /// (errors by class, ITL, open-loop arrivals and lag).
        window: &'a Window,
        /// Each scenario's counters in the stage so far, over all shards.
        lanes: &'a [LaneCounts],
    },
    /// A stage finished and was merged.
    StageFinished(&'a StageSummary),
}

/// Runs the plan; calls `on_progress` as each stage starts and finishes.
/// Stages already finished are returned even when a later one fails. A stop
/// requested before the run (`request_stop`) means no stage starts: the
/// request is not cleared, so a Ctrl-C that lands while the run is being
/// set up is not lost.
pub fn run(plan: &Plan, on_progress: impl FnMut(Progress<'_>)) -> Result<RunResult, String> {
    run_with_sink(plan, None, on_progress)
}

/// Like `run`, and every finished turn also goes to `sink` (the JSONL
/// writer), without ever blocking a shard.
pub fn run_with_sink(
    plan: &Plan,
    sink: Option<&crate::sink::Sink>,
    mut on_progress: impl FnMut(Progress<'_>),
) -> Result<RunResult, String> {
    let plan = Arc::new(plan.clone());
    let count = plan.cpus.len();
    // Before any shard thread opens a socket (see `host::presize_fd_table`).
    crate::host::presize_fd_table(plan.users_max() + crate::limits::FDS_BESIDES_CONNECTIONS);
    // Room for several seconds of ticks per shard besides the reports.
    let (report_tx, report_rx) = mpsc::sync_channel(count * crate::limits::SHARD_MESSAGE_DEPTH);
    let mut commands = Vec::with_capacity(count);
    let mut handles = Vec::with_capacity(count);
    for (index, &cpu) in plan.cpus.iter().enumerate() {
        let (command_tx, command_rx) = mpsc::sync_channel(crate::limits::CONTROL_CHANNEL_DEPTH);
        let ctx = lifecycle::ShardContext {
            index,
            count,
            plan: plan.clone(),
            commands: command_rx,
            reports: report_tx.clone(),
            sink: sink.map(|s| s.sender(index)),
        };
        let handle = match rt::start_executor(&format!("shard-{index}"), Some(cpu), move || {
            lifecycle::run(ctx)
        }) {
            Ok(handle) => handle,
            Err(e) => {
                // Shards already started exit when their command channel closes.
                drop(commands);
                return Err(format!("shard {index} on CPU {cpu}: {e}"));
            }
        };
        commands.push(command_tx);
        handles.push(handle);
    }
    drop(report_tx);
    let started_at = SystemTime::now();
    let mut stages = Vec::with_capacity(plan.stages.len());
    let mut stop =
        coordinator::coordinate(&plan, &commands, &report_rx, &mut stages, &mut on_progress);
    for command in &commands {
        let _ = command.try_send(Command::Shutdown);
    }
    drop(commands);
    let mut failure = None;
    for (index, handle) in handles.into_iter().enumerate() {
        if let Err(e) = handle.join() {
            failure.get_or_insert(format!("shard {index} failed: {e}"));
        }
    }
    // A shard's own error says why ("a shard exited" alone does not).
    if let Some(failure) = failure {
        stop = Some(Stop::Failed {
            reason: match stop {
                Some(Stop::Failed { reason }) => format!("{reason}: {failure}"),
                _ => failure,
            },
        });
    }
    Ok(RunResult {
        stages,
        started_at,
        stop,
    })
}
