//! The coordinator: the calling thread, not a shard. It starts each stage
//! on every shard at a common instant, assembles the shards' seconds into
//! the live series, merges their reports into the stage's summary (the
//! one place histograms are merged during a run) and hands each finished
//! stage to the caller before starting the next.

use super::{stop_requests, stop_signal, Command, Progress, Report, ShardMessage, Tick};
use crate::host::ThreadSched;
use crate::limits;
use crate::plan::Plan;
use crate::results::{
    unix_ms, LaneCounts, SecondWindow, SeriesPoint, StageMetrics, StageSummary, Stats, Stop, Window,
};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

/// Drives the stages on the calling thread: start each stage on every
/// shard, collect one report per shard, merge into `stages`, report progress.
/// Returns why the run ended early, if it did.
pub(super) fn coordinate(
    plan: &Plan,
    commands: &[mpsc::SyncSender<Command>],
    reports: &mpsc::Receiver<ShardMessage>,
    stages: &mut Vec<StageSummary>,
    on_progress: &mut impl FnMut(Progress<'_>),
) -> Option<Stop> {
    if let Some(stop) = wait_until_ready(commands.len(), reports) {
        return Some(stop);
    }
    let mut clocks = ShardClocks::new(commands.len());
    for index in 0..plan.stages.len() {
        if stop_requests() > 0 {
            return Some(interrupted(0));
        }
        let start = Instant::now() + limits::STAGE_START_LEAD;
        let started_unix_ms = unix_ms(SystemTime::now() + limits::STAGE_START_LEAD);
        for command in commands {
            if command.send(Command::RunStage { index, start }).is_err() {
                return Some(failed("a shard exited before the stage started"));
            }
        }
        on_progress(Progress::StageStarted(index));
        let mut collector = Collector::new(plan, index, commands.len(), started_unix_ms);
        while collector.received < commands.len() {
            match reports.recv_timeout(limits::STOP_POLL) {
                Ok(ShardMessage::Tick(tick)) => {
                    if let Some((point, window)) = collector.tick(tick) {
                        on_progress(Progress::Second {
                            stage: index,
                            point: &point,
                            window: &window,
                            lanes: &collector.lanes(),
                        });
                        collector.series.push(point);
                    }
                }
                Ok(ShardMessage::Report(report)) => {
                    collector.report(&report, &mut clocks);
                }
                Ok(ShardMessage::Ready) | Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Some(failed(
                        "a shard died during the stage; later stages were not run",
                    ));
                }
            }
            collector.pass_on_stop(commands);
        }
        let (stopped_early, abandoned) = (collector.stopped_early, collector.abandoned);
        stages.push(collector.finish(start.elapsed()));
        if let Some(stage) = stages.last() {
            on_progress(Progress::StageFinished(stage));
        }
        if stopped_early {
            return Some(interrupted(abandoned));
        }
    }
    None
}

/// The share of the shards' CPUs' time stolen by the hypervisor since
/// `start`, percent; `None` where `/proc/stat` cannot be read.
fn steal_pct(start: Option<(u64, u64)>, cpus: &[usize]) -> Option<f64> {
    let (steal0, total0) = start?;
    let (steal1, total1) = crate::host::cpu_steal_ticks(cpus)?;
    let total = total1.saturating_sub(total0);
    (total > 0).then(|| 100.0 * steal1.saturating_sub(steal0) as f64 / total as f64)
}

fn interrupted(abandoned: u64) -> Stop {
    Stop::Interrupted {
        signal: stop_signal(),
        abandoned,
    }
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
        match reports.recv_timeout(limits::STOP_POLL) {
            Ok(ShardMessage::Ready) => ready += 1,
            Ok(_) => {}
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if stop_requests() > 0 {
                    return Some(interrupted(0));
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Some(failed("a shard exited before the first stage"));
            }
        }
    }
    None
}

/// Each shard's cumulative CPU and run-queue wait at its last report, so a
/// stage's share is the difference.
struct ShardClocks {
    cpu_s: Vec<f64>,
    sched: Vec<ThreadSched>,
}

impl ShardClocks {
    fn new(shards: usize) -> Self {
        ShardClocks {
            cpu_s: vec![0.0; shards],
            sched: vec![ThreadSched::default(); shards],
        }
    }
}

/// One stage's messages as they come in, merged into its summary.
struct Collector<'a> {
    plan: &'a Plan,
    index: usize,
    shards: usize,
    started_unix_ms: u64,
    scenarios: Vec<StageMetrics>,
    connections_open: u64,
    requests_by_address: Vec<u64>,
    inflight_peak: u64,
    shard_cpu_s: Vec<f64>,
    /// Each shard's scheduling in this stage (`None`: unknown).
    shard_sched: Option<Vec<ThreadSched>>,
    /// Steal and total ticks of the shards' CPUs at the stage start.
    steal_at_start: Option<(u64, u64)>,
    /// When the stop was passed on to the shards, if it was.
    stop_sent: Option<Instant>,
    stopped_early: bool,
    /// Whether the shards were told to abandon their requests in flight.
    abandon_sent: bool,
    /// Requests in flight the shards abandoned.
    abandoned: u64,
    received: usize,
    /// Seconds being assembled: (window, in flight, shards heard from).
    pending: std::collections::BTreeMap<u32, (Window, u64, usize)>,
    /// Each shard's latest per-scenario counters of the stage so far.
    lanes: Vec<Vec<LaneCounts>>,
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
            requests_by_address: vec![0; plan.addresses().len()],
            inflight_peak: 0,
            shard_cpu_s: vec![0.0; shards],
            shard_sched: Some(vec![ThreadSched::default(); shards]),
            steal_at_start: crate::host::cpu_steal_ticks(&plan.cpus),
            stop_sent: None,
            stopped_early: false,
            abandon_sent: false,
            abandoned: 0,
            received: 0,
            pending: std::collections::BTreeMap::new(),
            lanes: vec![Vec::new(); shards],
            series: Vec::new(),
        }
    }

    /// Each scenario's counters so far, over all shards.
    fn lanes(&self) -> Vec<LaneCounts> {
        let mut merged = vec![LaneCounts::default(); self.plan.scenarios.len()];
        for shard in &self.lanes {
            for (sum, lane) in merged.iter_mut().zip(shard) {
                sum.add(lane);
            }
        }
        merged
    }

    fn point(&self, second: u32, window: &Window, in_flight: u64) -> SeriesPoint {
        SeriesPoint {
            second,
            unix_s: (self.started_unix_ms + u64::from(second) * 1000) / 1000,
            warmup: f64::from(second) <= self.plan.warmup.as_secs_f64(),
            in_flight,
            window: SecondWindow::pack(window),
        }
    }

    /// Passes a stop request on to the shards: the first ends the stage
    /// and lets requests in flight finish; a second request, or a drain
    /// longer than `limits::STOP_GRACE`, has them report without waiting.
    fn pass_on_stop(&mut self, commands: &[mpsc::SyncSender<Command>]) {
        let asked = stop_requests();
        if asked == 0 || self.abandon_sent {
            return;
        }
        let command = match self.stop_sent {
            None => {
                self.stop_sent = Some(Instant::now());
                self.stopped_early = true;
                if asked == 1 {
                    Command::Stop
                } else {
                    Command::Abandon
                }
            }
            Some(at) if asked > 1 || at.elapsed() >= limits::STOP_GRACE => Command::Abandon,
            Some(_) => return,
        };
        self.abandon_sent = matches!(command, Command::Abandon);
        for shard in commands {
            // The channel holds several commands; a shard that is gone
            // shows as a disconnected report channel.
            let _ = shard.try_send(command);
        }
    }

    /// Adds a shard's second; returns the merged second once every shard
    /// sent it.
    fn tick(&mut self, tick: Box<Tick>) -> Option<(SeriesPoint, Window)> {
        if tick.stage != self.index {
            return None;
        }
        if let Some(lanes) = self.lanes.get_mut(tick.shard) {
            *lanes = tick.lanes;
        }
        let entry = self.pending.entry(tick.second).or_default();
        entry.0.merge(&tick.window);
        entry.1 += tick.in_flight;
        entry.2 += 1;
        if entry.2 < self.shards {
            return None;
        }
        let (window, in_flight, _) = self.pending.remove(&tick.second)?;
        Some((self.point(tick.second, &window, in_flight), window))
    }

    fn report(&mut self, report: &Report, clocks: &mut ShardClocks) {
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
        let shard = report.shard;
        self.shard_cpu_s[shard] = report.cpu_s - clocks.cpu_s[shard];
        clocks.cpu_s[shard] = report.cpu_s;
        match (report.sched, self.shard_sched.as_mut()) {
            (Some(now), Some(stage)) => {
                let before = clocks.sched[shard];
                stage[shard] = ThreadSched {
                    wait_s: now.wait_s - before.wait_s,
                    runs: now.runs.saturating_sub(before.runs),
                };
                clocks.sched[shard] = now;
            }
            _ => self.shard_sched = None,
        }
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
        for (sum, n) in self
            .requests_by_address
            .iter_mut()
            .zip(&report.requests_by_address)
        {
            *sum += n;
        }
        self.inflight_peak += report.inflight_peak;
        self.abandoned += report.abandoned;
        self.received += 1;
    }

    /// Measured requests per target address, by the address as text.
    fn by_address(&self) -> std::collections::BTreeMap<String, u64> {
        self.plan
            .addresses()
            .into_iter()
            .zip(&self.requests_by_address)
            .map(|((_, addr), &n)| (addr.to_string(), n))
            .collect()
    }

    fn finish(mut self, elapsed: Duration) -> StageSummary {
        // Seconds not every shard reported (the last, partial one, or a
        // tick dropped on a full channel) go in as they are.
        for (second, (window, in_flight, _)) in std::mem::take(&mut self.pending) {
            let point = self.point(second, &window, in_flight);
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
        let requests_by_address = self.by_address();
        let mut summary = StageSummary {
            index: self.index,
            label: stage.label(),
            load: stage.load,
            duration_s: stage.duration.as_secs_f64(),
            started_unix_ms: self.started_unix_ms,
            round: self.plan.round_of(self.index),
            measured_s: measured.as_secs_f64(),
            elapsed_s: wall,
            stopped_early: self.stopped_early,
            shard_busy_pct: self.shard_cpu_s.iter().map(busy).collect(),
            shard_cpu_s: self.shard_cpu_s,
            shard_wait_pct: self
                .shard_sched
                .iter()
                .flatten()
                .map(|s| busy(&s.wait_s))
                .collect(),
            shard_wait_per_run_ms: self
                .shard_sched
                .iter()
                .flatten()
                .map(|s| 1000.0 * s.wait_s / s.runs.max(1) as f64)
                .collect(),
            steal_pct: steal_pct(self.steal_at_start, &self.plan.cpus),
            connections_open: vec![self.connections_open],
            requests_by_address,
            open_loop: None,
            total: Stats::new("all", total),
            scenarios: lanes(self.plan, self.scenarios),
            services: Vec::new(),
            series: self.series,
        };
        summary.derive();
        summary
    }
}

/// Each scenario's merged metrics, named (with its service, if any).
fn lanes(plan: &Plan, metrics: Vec<StageMetrics>) -> Vec<Stats> {
    plan.scenarios
        .iter()
        .zip(metrics)
        .map(|(s, m)| Stats {
            service: plan.services.get(s.service).map(|v| v.name.clone()),
            ..Stats::new(s.name.clone(), m)
        })
        .collect()
}
