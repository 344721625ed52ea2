//! Runs a `Plan`: one pinned shard per CPU plus a coordinator.
//!
//! The coordinator is an unpinned executor on the calling thread. Before any
//! shard starts it creates two bounded channels per shard (commands in,
//! reports out), so the topology is a fixed partial mesh: the coordinator
//! talks to every shard, shards never talk to each other. For each stage the
//! coordinator sends `RunStage` with a common start instant, waits for every
//! shard's report, merges the reports, and hands the merged stage to the
//! caller before starting the next stage. Histograms are merged exactly
//! once per stage, here.

mod exchange;
mod shard;

pub use shard::share_of;

use crate::metrics::StageMetrics;
use crate::plan::Plan;
use crate::rt;
use crate::stage::Stage;
use futures_lite::FutureExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
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
    /// What it measured.
    pub metrics: StageMetrics,
    /// The shard thread's CPU seconds so far.
    pub cpu_s: f64,
}

/// One finished stage, merged over all shards.
#[derive(Debug, Clone)]
pub struct StageResult {
    /// Index into `Plan::stages`.
    pub index: usize,
    /// The stage.
    pub stage: Stage,
    /// Merged metrics.
    pub metrics: StageMetrics,
    /// Length of the measured window (stage duration minus warm-up, or
    /// less when the stage was stopped early).
    pub measured: Duration,
    /// From stage start until the last shard reported (includes draining).
    pub elapsed: Duration,
    /// CPU seconds each shard spent in this stage.
    pub shard_cpu_s: Vec<f64>,
    /// The stage was cut short by a stop request.
    pub stopped_early: bool,
}

impl StageResult {
    /// Requests per second over the measured window.
    pub fn rps(&self) -> f64 {
        per_second(self.metrics.requests, self.measured)
    }

    /// Completion tokens per second over the measured window.
    pub fn output_tokens_per_s(&self) -> f64 {
        per_second(self.metrics.completion_tokens, self.measured)
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

/// Runs the plan; calls `on_stage` as each stage finishes. Stages already
/// finished are returned even when a later one fails.
pub fn run(plan: &Plan, mut on_stage: impl FnMut(&StageResult)) -> Result<RunResult, String> {
    STOP_REQUESTED.store(false, Ordering::Relaxed);
    let plan = Arc::new(plan.clone());
    let count = plan.cpus.len();
    let mut command_senders = Vec::with_capacity(count);
    let mut report_receivers = Vec::with_capacity(count);
    let mut handles = Vec::with_capacity(count);
    for (index, &cpu) in plan.cpus.iter().enumerate() {
        let (command_tx, command_rx) = rt::channel(crate::limits::CONTROL_CHANNEL_DEPTH);
        let (report_tx, report_rx) = rt::channel(crate::limits::CONTROL_CHANNEL_DEPTH);
        let ctx = shard::ShardContext {
            index,
            count,
            plan: plan.clone(),
            commands: command_rx,
            reports: report_tx,
        };
        let handle = rt::start_executor(&format!("shard-{index}"), Some(cpu), move || {
            shard::run(ctx)
        })
        .map_err(|e| format!("shard {index} on CPU {cpu}: {e}"))?;
        command_senders.push(command_tx);
        report_receivers.push(report_rx);
        handles.push(handle);
    }
    let started_at = SystemTime::now();
    // Stage results travel from the coordinator thread through a std
    // channel, so `on_stage` (which need not be `Send`) runs on this thread
    // as each stage finishes.
    let (result_tx, result_rx) = std::sync::mpsc::channel();
    let plan_for_coordinator = plan.clone();
    let coordinator = rt::start_executor("coordinator", None, move || {
        coordinate(
            plan_for_coordinator,
            command_senders,
            report_receivers,
            result_tx,
        )
    })
    .map_err(|e| format!("coordinator: {e}"))?;
    let mut stages = Vec::with_capacity(plan.stages.len());
    for stage in result_rx {
        on_stage(&stage);
        stages.push(stage);
    }
    let aborted = coordinator
        .join()
        .unwrap_or_else(|e| Some(format!("coordinator failed: {e}")));
    let mut aborted = aborted;
    for (index, handle) in handles.into_iter().enumerate() {
        if let Err(e) = handle.join() {
            aborted.get_or_insert(format!("shard {index} failed: {e}"));
        }
    }
    Ok(RunResult {
        stages,
        started_at,
        aborted,
    })
}

async fn coordinate(
    plan: Arc<Plan>,
    command_senders: Vec<rt::SharedSender<Command>>,
    report_receivers: Vec<rt::SharedReceiver<Report>>,
    results: std::sync::mpsc::Sender<StageResult>,
) -> Option<String> {
    let mut commands = Vec::with_capacity(command_senders.len());
    for sender in command_senders {
        commands.push(sender.connect().await);
    }
    let mut reports = Vec::with_capacity(report_receivers.len());
    for receiver in report_receivers {
        reports.push(receiver.connect().await);
    }
    let mut cpu_before = vec![0.0; commands.len()];
    let mut aborted = None;
    for (index, stage) in plan.stages.iter().enumerate() {
        if STOP_REQUESTED.load(Ordering::Relaxed) {
            aborted = Some("stopped by request".to_string());
            break;
        }
        let start = Instant::now();
        for command in &commands {
            if command
                .send(Command::RunStage { index, start })
                .await
                .is_err()
            {
                aborted = Some("a shard exited".into());
            }
        }
        if aborted.is_some() {
            break;
        }
        let mut merged = StageMetrics::new();
        let mut shard_cpu_s = vec![0.0; commands.len()];
        let mut stopped_early = false;
        for receiver in &reports {
            let report = loop {
                let stop_poll = async {
                    rt::sleep(STOP_POLL).await;
                    None
                };
                match async { Some(receiver.recv().await) }.or(stop_poll).await {
                    Some(report) => break report,
                    None if STOP_REQUESTED.load(Ordering::Relaxed) && !stopped_early => {
                        stopped_early = true;
                        for command in &commands {
                            let _ = command.send(Command::Stop).await;
                        }
                    }
                    None => {}
                }
            };
            let Some(report) = report else {
                aborted = Some("a shard died during the stage; later stages were not run".into());
                break;
            };
            assert_eq!(
                report.stage, index,
                "shard {} reported the wrong stage",
                report.shard
            );
            shard_cpu_s[report.shard] = report.cpu_s - cpu_before[report.shard];
            cpu_before[report.shard] = report.cpu_s;
            merged.merge(&report.metrics);
        }
        if aborted.is_some() {
            break;
        }
        let elapsed = start.elapsed();
        let planned = stage.duration.saturating_sub(plan.warmup);
        let measured = if stopped_early {
            elapsed.min(stage.duration).saturating_sub(plan.warmup)
        } else {
            planned
        };
        let result = StageResult {
            index,
            stage: *stage,
            metrics: merged,
            measured,
            elapsed,
            shard_cpu_s,
            stopped_early,
        };
        // The receiver only goes away if the caller's thread panicked.
        let _ = results.send(result);
        if stopped_early {
            aborted = Some("stopped by request".into());
            break;
        }
    }
    for command in &commands {
        let _ = command.send(Command::Shutdown).await;
    }
    aborted
}

/// Whether a stop was requested (for a second Ctrl-C to exit at once).
pub fn stop_was_requested() -> bool {
    STOP_REQUESTED.load(Ordering::Relaxed)
}
