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

use crate::metrics::{StageMetrics, Window};
use crate::plan::Plan;
use crate::rt;
use crate::stage::Stage;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant, SystemTime};

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

/// One second of a stage over all shards: a point of the time series.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Point {
    /// Seconds since the stage started (the last point may be partial).
    pub second: u32,
    /// The second is part of the warm-up.
    pub warmup: bool,
    /// Requests that finished in it.
    pub requests: u64,
    /// The same per second (equal for whole seconds; the last, partial
    /// second counts as a whole one).
    pub rps: f64,
    /// Failures among them.
    pub errors: u64,
    /// Latency p50 of the successful ones.
    pub latency_p50_ms: Option<f64>,
    /// Latency p99.
    pub latency_p99_ms: Option<f64>,
    /// TTFT p50.
    pub ttft_p50_ms: Option<f64>,
    /// Requests in flight at its end.
    pub in_flight: u64,
}

impl Point {
    fn new(second: u32, warmup: bool, window: &Window, in_flight: u64) -> Self {
        Point {
            second,
            warmup,
            requests: window.requests,
            rps: window.requests as f64,
            errors: window.errors,
            latency_p50_ms: window.latency.percentile_ms(50.0),
            latency_p99_ms: window.latency.percentile_ms(99.0),
            ttft_p50_ms: window.ttft.percentile_ms(50.0),
            in_flight,
        }
    }
}

/// One finished stage, merged over all shards.
#[derive(Debug, Clone)]
pub struct StageResult {
    /// Index into `Plan::stages`.
    pub index: usize,
    /// The stage.
    pub stage: Stage,
    /// Merged metrics of all scenarios.
    pub metrics: StageMetrics,
    /// Merged metrics per scenario, indexed like `Plan::scenarios`.
    pub scenarios: Vec<StageMetrics>,
    /// Length of the measured window (stage duration minus warm-up, or
    /// less when the stage was stopped early).
    pub measured: Duration,
    /// From stage start until the last shard reported (includes draining).
    pub elapsed: Duration,
    /// CPU seconds each shard spent in this stage.
    pub shard_cpu_s: Vec<f64>,
    /// The stage was cut short by a stop request.
    pub stopped_early: bool,
    /// Per second: requests, errors, latency p50/p99, TTFT p50, in flight.
    pub series: Vec<Point>,
}

impl StageResult {
    /// Requests per second over the measured window.
    pub fn rps(&self) -> f64 {
        self.rps_of(&self.metrics)
    }

    /// Completion tokens per second over the measured window.
    pub fn output_tokens_per_s(&self) -> f64 {
        self.output_tokens_per_s_of(&self.metrics)
    }

    /// Open loop: the stage's target arrival rate.
    pub fn target_rate(&self) -> Option<f64> {
        match self.stage.load {
            crate::stage::Load::Open { rate, .. } => Some(rate),
            crate::stage::Load::Closed { .. } => None,
        }
    }

    /// Open loop: conversations started and finished per second over the
    /// measured window (arrivals that were sent, not dropped).
    pub fn achieved_rate(&self) -> Option<f64> {
        self.target_rate()
            .map(|_| per_second(self.metrics.conversations_started, self.measured))
    }

    /// Requests per second of one scenario's (or the total) metrics.
    pub fn rps_of(&self, m: &StageMetrics) -> f64 {
        per_second(m.requests, self.measured)
    }

    /// Completion tokens per second of one scenario's (or the total)
    /// metrics; server counts only.
    pub fn output_tokens_per_s_of(&self, m: &StageMetrics) -> f64 {
        per_second(m.completion_tokens, self.measured)
    }

    /// Fraction of each shard's CPU that was busy, 0–1.
    pub fn shard_busy(&self) -> Vec<f64> {
        let wall = self.elapsed.as_secs_f64();
        self.shard_cpu_s
            .iter()
            .map(|cpu| {
                if wall > 0.0 {
                    (cpu / wall).min(1.0)
                } else {
                    0.0
                }
            })
            .collect()
    }
}

fn per_second(count: u64, window: Duration) -> f64 {
    let s = window.as_secs_f64();
    if s > 0.0 {
        count as f64 / s
    } else {
        0.0
    }
}

/// A whole run.
#[derive(Debug, Clone)]
pub struct RunResult {
    /// Finished stages, in order.
    pub stages: Vec<StageResult>,
    /// Wall-clock start.
    pub started_at: SystemTime,
    /// Why the run ended early, if it did.
    pub aborted: Option<String>,
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
        point: &'a Point,
    },
    /// A stage finished and was merged.
    StageFinished(&'a StageResult),
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
    // Before any shard thread opens a socket (see `rt::presize_fd_table`).
    rt::presize_fd_table(plan.users_max() + crate::limits::FDS_BESIDES_CONNECTIONS);
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
    let mut aborted = coordinate(&plan, &commands, &report_rx, &mut stages, &mut on_progress);
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
        aborted = Some(match aborted {
            Some(why) => format!("{why}: {failure}"),
            None => failure,
        });
    }
    Ok(RunResult {
        stages,
        started_at,
        aborted,
    })
}

/// Drives the stages on the calling thread: start each stage on every
/// shard, collect one report per shard, merge into `stages`, report progress.
/// Returns why the run ended early, if it did.
fn coordinate(
    plan: &Plan,
    commands: &[mpsc::SyncSender<Command>],
    reports: &mpsc::Receiver<ShardMessage>,
    stages: &mut Vec<StageResult>,
    on_progress: &mut impl FnMut(Progress<'_>),
) -> Option<String> {
    let mut cpu_before = vec![0.0; commands.len()];
    // The first stage starts when every shard is ready: building a heavy
    // profile's prompts takes a while (measured: 100-230 ms per shard for
    // 12,500-token sized prompts in a debug build), and a stage clock
    // started before that would count the setup as part of the stage.
    let mut ready = 0;
    while ready < commands.len() {
        match reports.recv_timeout(STOP_POLL) {
            Ok(ShardMessage::Ready) => ready += 1,
            Ok(_) => {}
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if STOP_REQUESTED.load(Ordering::Relaxed) {
                    return Some("stopped by request".into());
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Some("a shard exited before the first stage".into());
            }
        }
    }
    for (index, stage) in plan.stages.iter().enumerate() {
        if STOP_REQUESTED.load(Ordering::Relaxed) {
            return Some("stopped by request".into());
        }
        let start = Instant::now() + STAGE_START_LEAD;
        for command in commands {
            if command.send(Command::RunStage { index, start }).is_err() {
                return Some("a shard exited before the stage started".into());
            }
        }
        on_progress(Progress::StageStarted(index));
        let mut scenarios: Vec<StageMetrics> =
            plan.scenarios.iter().map(|_| StageMetrics::new()).collect();
        let mut connections_open = 0;
        let mut inflight_peak = 0;
        let mut shard_cpu_s = vec![0.0; commands.len()];
        let mut stopped_early = false;
        let mut received = 0;
        // Seconds being assembled: (window, in flight, shards heard from).
        let mut pending: std::collections::BTreeMap<u32, (Window, u64, usize)> =
            std::collections::BTreeMap::new();
        let mut series: Vec<Point> = Vec::new();
        let warm = |second: u32| f64::from(second) <= plan.warmup.as_secs_f64();
        while received < commands.len() {
            let report = match reports.recv_timeout(STOP_POLL) {
                Ok(ShardMessage::Tick(tick)) => {
                    if tick.stage != index {
                        continue;
                    }
                    let entry = pending.entry(tick.second).or_default();
                    entry.0.merge(&tick.window);
                    entry.1 += tick.in_flight;
                    entry.2 += 1;
                    if entry.2 == commands.len() {
                        if let Some((window, in_flight, _)) = pending.remove(&tick.second) {
                            let point =
                                Point::new(tick.second, warm(tick.second), &window, in_flight);
                            on_progress(Progress::Second {
                                stage: index,
                                point: &point,
                            });
                            series.push(point);
                        }
                    }
                    continue;
                }
                Ok(ShardMessage::Report(report)) => report,
                Ok(ShardMessage::Ready) => continue,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if STOP_REQUESTED.load(Ordering::Relaxed) && !stopped_early {
                        stopped_early = true;
                        for command in commands {
                            let _ = command.try_send(Command::Stop);
                        }
                    }
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Some("a shard died during the stage; later stages were not run".into());
                }
            };
            assert_eq!(
                report.stage, index,
                "shard {} reported the wrong stage",
                report.shard
            );
            assert!(
                report.shard < commands.len(),
                "shard index {} out of range",
                report.shard
            );
            shard_cpu_s[report.shard] = report.cpu_s - cpu_before[report.shard];
            cpu_before[report.shard] = report.cpu_s;
            assert_eq!(
                report.scenarios.len(),
                scenarios.len(),
                "shard {} reported the wrong number of scenarios",
                report.shard
            );
            for (merged, theirs) in scenarios.iter_mut().zip(&report.scenarios) {
                merged.merge(theirs);
            }
            connections_open += report.connections_open;
            inflight_peak += report.inflight_peak;
            received += 1;
        }
        // Seconds not every shard reported (the last, partial one, or a
        // tick dropped on a full channel) go in as they are.
        for (second, (window, in_flight, _)) in pending {
            series.push(Point::new(second, warm(second), &window, in_flight));
        }
        series.sort_by_key(|p| p.second);
        let mut merged = StageMetrics::new();
        for scenario in &scenarios {
            merged.merge(scenario);
        }
        merged.connections_open = connections_open;
        merged.inflight_peak = inflight_peak;
        let elapsed = start.elapsed();
        let measured = if stopped_early {
            elapsed.min(stage.duration).saturating_sub(plan.warmup)
        } else {
            stage.duration.saturating_sub(plan.warmup)
        };
        stages.push(StageResult {
            index,
            stage: *stage,
            metrics: merged,
            scenarios,
            measured,
            elapsed,
            shard_cpu_s,
            stopped_early,
            series,
        });
        if let Some(stage) = stages.last() {
            on_progress(Progress::StageFinished(stage));
        }
        if stopped_early {
            return Some("stopped by request".into());
        }
    }
    None
}

/// Whether a stop was requested (for a second Ctrl-C to exit at once).
pub fn stop_was_requested() -> bool {
    STOP_REQUESTED.load(Ordering::Relaxed)
}
