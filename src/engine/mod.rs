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
mod exchange;
mod shard;
pub mod workload;

pub use shard::{share_of, users_of_shard};

use crate::plan::Plan;
use crate::results::{unix_ms, SeriesPoint, StageMetrics, StageSummary, Stats, Stop, Window};
use crate::rt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant, SystemTime};

pub use crate::results::RunResult;

/// Coordinator → shard.
#[derive(Debug)]
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
    /// Open loop: most conversations it had in flight.
    pub inflight_peak: u64,
    /// The shard thread's CPU seconds so far.
    pub cpu_s: f64,
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
}

/// Shard → coordinator.
#[derive(Debug)]
pub enum ShardMessage {
    /// The shard has built its workload (prompts, templates, users) and
    /// waits for its first stage.
    Ready,
    /// A second of a running stage.
    Tick(Tick),
    /// The end of a stage.
    Report(Report),
}

/// Set by the Ctrl-C handler; the coordinator polls it between reports.
static STOP_REQUESTED: AtomicBool = AtomicBool::new(false);

/// Asks a running engine to end the current stage now and skip the rest.
/// Safe to call from a signal handler.
pub fn request_stop() {
    STOP_REQUESTED.store(true, Ordering::Relaxed);
}

/// How often the coordinator checks for a stop request while waiting.
const STOP_POLL: Duration = Duration::from_millis(50);

/// How often an idle shard looks for its next command, and a running shard
/// for a stop command.
pub(crate) const COMMAND_POLL: Duration = Duration::from_millis(10);

/// How far ahead of its command a stage's start instant is set, so every
/// shard has seen the command (within `COMMAND_POLL`) and waits for the
/// start instead of beginning behind it. A start stamped when the command
/// was sent left an open-loop shard up to 10 ms of arrivals behind before
/// its first one, with an empty connection pool: 500 connects at once at
/// 50,000/s.
const STAGE_START_LEAD: Duration = Duration::from_millis(25);

/// What the engine tells its caller as a run progresses.
#[derive(Debug)]
pub enum Progress<'a> {
    /// Stage `index` has been started on every shard.
    StageStarted(usize),
    /// A second of stage `stage` ended on every shard.
    Second {
        /// Index into `Plan::stages`.
        stage: usize,
        /// What happened in it.
        point: &'a SeriesPoint,
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
        let ctx = shard::ShardContext {
            index,
            count,
            plan: plan.clone(),
            commands: command_rx,
            reports: report_tx.clone(),
            sink: sink.map(|s| s.sender(index)),
        };
        let handle = match rt::start_executor(&format!("shard-{index}"), Some(cpu), move || {
            shard::run(ctx)
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
    let mut stop = coordinate(&plan, &commands, &report_rx, &mut stages, &mut on_progress);
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

/// Drives the stages on the calling thread: start each stage on every
/// shard, collect one report per shard, merge into `stages`, report progress.
/// Returns why the run ended early, if it did.
fn coordinate(
    plan: &Plan,
    commands: &[mpsc::SyncSender<Command>],
    reports: &mpsc::Receiver<ShardMessage>,
    stages: &mut Vec<StageSummary>,
    on_progress: &mut impl FnMut(Progress<'_>),
) -> Option<Stop> {
    if let Some(stop) = wait_until_ready(commands.len(), reports) {
        return Some(stop);
    }
    let mut cpu_before = vec![0.0; commands.len()];
    for index in 0..plan.stages.len() {
        if STOP_REQUESTED.load(Ordering::Relaxed) {
            return Some(Stop::Interrupted);
        }
        let start = Instant::now() + STAGE_START_LEAD;
        let started_unix_ms = unix_ms(SystemTime::now() + STAGE_START_LEAD);
        for command in commands {
            if command.send(Command::RunStage { index, start }).is_err() {
                return Some(failed("a shard exited before the stage started"));
            }
        }
        on_progress(Progress::StageStarted(index));
        let mut collector = Collector::new(plan, index, commands.len(), started_unix_ms);
        while collector.received < commands.len() {
            match reports.recv_timeout(STOP_POLL) {
                Ok(ShardMessage::Tick(tick)) => {
                    if let Some(point) = collector.tick(tick) {
                        on_progress(Progress::Second {
                            stage: index,
                            point: &point,
                        });
                        collector.series.push(point);
                    }
                }
                Ok(ShardMessage::Report(report)) => {
                    collector.report(&report, &mut cpu_before);
                }
                Ok(ShardMessage::Ready) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if STOP_REQUESTED.load(Ordering::Relaxed) && !collector.stopped_early {
                        collector.stopped_early = true;
                        for command in commands {
                            let _ = command.try_send(Command::Stop);
                        }
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Some(failed(
                        "a shard died during the stage; later stages were not run",
                    ));
                }
            }
        }
        let stopped_early = collector.stopped_early;
        stages.push(collector.finish(start.elapsed()));
        if let Some(stage) = stages.last() {
            on_progress(Progress::StageFinished(stage));
        }
        if stopped_early {
            return Some(Stop::Interrupted);
        }
    }
    None
}

fn failed(reason: &str) -> Stop {
    Stop::Failed {
        reason: reason.to_string(),
    }
}

/// The first stage starts when every shard is ready: building a heavy
/// profile's prompts takes a while (measured: 100-230 ms per shard for
/// 12,500-token sized prompts in a debug build), and a stage clock
/// started before that would count the setup as part of the stage.
fn wait_until_ready(shards: usize, reports: &mpsc::Receiver<ShardMessage>) -> Option<Stop> {
    let mut ready = 0;
    while ready < shards {
        match reports.recv_timeout(STOP_POLL) {
            Ok(ShardMessage::Ready) => ready += 1,
            Ok(_) => {}
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if STOP_REQUESTED.load(Ordering::Relaxed) {
                    return Some(Stop::Interrupted);
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Some(failed("a shard exited before the first stage"));
            }
        }
    }
    None
}

/// One stage's messages as they come in, merged into its summary.
struct Collector<'a> {
    plan: &'a Plan,
    index: usize,
    shards: usize,
    started_unix_ms: u64,
    scenarios: Vec<StageMetrics>,
    connections_open: u64,
    inflight_peak: u64,
    shard_cpu_s: Vec<f64>,
    stopped_early: bool,
    received: usize,
    /// Seconds being assembled: (window, in flight, shards heard from).
    pending: std::collections::BTreeMap<u32, (Window, u64, usize)>,
    series: Vec<SeriesPoint>,
}

impl<'a> Collector<'a> {
    fn new(plan: &'a Plan, index: usize, shards: usize, started_unix_ms: u64) -> Self {
        Collector {
            plan,
            index,
            shards,
            started_unix_ms,
            scenarios: plan.scenarios.iter().map(|_| StageMetrics::new()).collect(),
            connections_open: 0,
            inflight_peak: 0,
            shard_cpu_s: vec![0.0; shards],
            stopped_early: false,
            received: 0,
            pending: std::collections::BTreeMap::new(),
            series: Vec::new(),
        }
    }

    fn point(&self, second: u32, window: Window, in_flight: u64) -> SeriesPoint {
        SeriesPoint {
            second,
            unix_s: (self.started_unix_ms + u64::from(second) * 1000) / 1000,
            warmup: f64::from(second) <= self.plan.warmup.as_secs_f64(),
            in_flight,
            window,
        }
    }

    /// Adds a shard's second; returns the point once every shard sent it.
    fn tick(&mut self, tick: Tick) -> Option<SeriesPoint> {
        if tick.stage != self.index {
            return None;
        }
        let entry = self.pending.entry(tick.second).or_default();
        entry.0.merge(&tick.window);
        entry.1 += tick.in_flight;
        entry.2 += 1;
        if entry.2 < self.shards {
            return None;
        }
        let (window, in_flight, _) = self.pending.remove(&tick.second)?;
        Some(self.point(tick.second, window, in_flight))
    }

    fn report(&mut self, report: &Report, cpu_before: &mut [f64]) {
        assert_eq!(
            report.stage, self.index,
            "shard {} reported the wrong stage",
            report.shard
        );
        assert!(
            report.shard < self.shards,
            "shard index {} out of range",
            report.shard
        );
        self.shard_cpu_s[report.shard] = report.cpu_s - cpu_before[report.shard];
        cpu_before[report.shard] = report.cpu_s;
        assert_eq!(
            report.scenarios.len(),
            self.scenarios.len(),
            "shard {} reported the wrong number of scenarios",
            report.shard
        );
        for (merged, theirs) in self.scenarios.iter_mut().zip(&report.scenarios) {
            merged.merge(theirs);
        }
        self.connections_open += report.connections_open;
        self.inflight_peak += report.inflight_peak;
        self.received += 1;
    }

    fn finish(mut self, elapsed: Duration) -> StageSummary {
        // Seconds not every shard reported (the last, partial one, or a
        // tick dropped on a full channel) go in as they are.
        for (second, (window, in_flight, _)) in std::mem::take(&mut self.pending) {
            let point = self.point(second, window, in_flight);
            self.series.push(point);
        }
        self.series.sort_by_key(|p| p.second);
        let stage = self.plan.stages[self.index];
        let mut total = StageMetrics::new();
        for scenario in &self.scenarios {
            total.merge(scenario);
        }
        total.connections_open = self.connections_open;
        total.inflight_peak = self.inflight_peak;
        let measured = if self.stopped_early {
            elapsed.min(stage.duration).saturating_sub(self.plan.warmup)
        } else {
            stage.duration.saturating_sub(self.plan.warmup)
        };
        let wall = elapsed.as_secs_f64();
        let busy = |cpu: &f64| {
            if wall > 0.0 {
                (cpu / wall).min(1.0) * 100.0
            } else {
                0.0
            }
        };
        let mut summary = StageSummary {
            index: self.index,
            label: stage.label(),
            load: stage.load,
            duration_s: stage.duration.as_secs_f64(),
            started_unix_ms: self.started_unix_ms,
            measured_s: measured.as_secs_f64(),
            elapsed_s: wall,
            stopped_early: self.stopped_early,
            shard_busy_pct: self.shard_cpu_s.iter().map(busy).collect(),
            shard_cpu_s: self.shard_cpu_s,
            connections_open: vec![self.connections_open],
            open_loop: None,
            total: Stats::new("all", total),
            scenarios: self
                .plan
                .scenarios
                .iter()
                .zip(self.scenarios)
                .map(|(s, m)| Stats::new(s.name.clone(), m))
                .collect(),
            series: self.series,
        };
        summary.derive();
        summary
    }
}

/// Whether a stop was requested (for a second Ctrl-C to exit at once).
pub fn stop_was_requested() -> bool {
    STOP_REQUESTED.load(Ordering::Relaxed)
}
