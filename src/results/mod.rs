//! The results model: one typed description of a run, below the engine,
//! the reports, `merge` and `compare`.
//!
//! The engine fills it (`StageSummary` per stage, `StageMetrics` per
//! scenario with its HDR histograms); `summary-<id>.json` is `RunSummary`
//! written out, and `merge`, `compare` and the report writers read that
//! same type back. Figures derived from others (rates, percentiles, means,
//! the open-loop achieved rate) are written for readers but never read:
//! `RunSummary::derive` computes them again after a read or a merge, so a
//! merged summary cannot carry a stale figure.

mod clock;
mod comparison;
mod hist;
mod merge;
pub mod metrics;
mod metrics_wire;
mod plan_info;
mod turn;

pub use clock::{from_unix_ms, rfc3339, timestamp, unix_ms};
pub use comparison::{Comparison, ServiceRow, Spread, StageComparison, DELTA_FIGURES};
pub use hist::{Hist, PackedHist};
pub use merge::merge;
pub use metrics::{ErrorClass, LaneCounts, StageMetrics, TurnRow, Window};
pub use plan_info::{ContentInfo, Correlation, PlanInfo, Range, ScenarioInfo, ServiceInfo};
pub use turn::FinishedTurn;

use crate::stage::Load;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::SystemTime;

/// The summary format's version; bumped whenever a field changes meaning
/// or moves. Schema 2: the typed model (histograms inside each figure,
/// per-second series with their histograms, hosts, stop reason).
pub const SCHEMA: u32 = 2;

/// Rates of one scenario (or a stage total) over the measured window.
/// Derived: written, recomputed after every read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Rates {
    /// Requests per second.
    pub rps: f64,
    /// Successful / all requests, percent.
    pub ok_pct: f64,
    /// Failed / all requests, 0–1.
    pub error_rate: f64,
    /// Completion tokens per second (server counts).
    pub output_tokens_per_s: f64,
}

impl Rates {
    /// The rates of `m` over `measured_s` seconds.
    pub fn of(m: &StageMetrics, measured_s: f64) -> Rates {
        let share = |n: u64, of: u64| if of == 0 { 0.0 } else { n as f64 / of as f64 };
        Rates {
            rps: per_second(m.requests, measured_s),
            ok_pct: 100.0 * share(m.ok, m.requests),
            error_rate: share(m.errors_total(), m.requests),
            output_tokens_per_s: per_second(m.completion_tokens, measured_s),
        }
    }
}

fn per_second(count: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        count as f64 / seconds
    } else {
        0.0
    }
}

/// One scenario's figures in a stage (or the stage total, named `all`, or
/// one service's total, named after the service).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// Scenario name, or `all` for the stage total.
    pub name: String,
    /// The service this scenario ran against (comparisons only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Derived rates.
    #[serde(default, skip_deserializing)]
    pub rates: Rates,
    /// What was counted and recorded.
    pub metrics: StageMetrics,
}

impl Stats {
    /// Figures named `name`, rates not yet derived.
    pub fn new(name: impl Into<String>, metrics: StageMetrics) -> Stats {
        Stats {
            name: name.into(),
            service: None,
            rates: Rates::default(),
            metrics,
        }
    }

    /// The name a table shows: `chat`, or `chat@gw` for a scenario run
    /// against a service.
    pub fn label(&self) -> String {
        match &self.service {
            Some(service) => format!("{}@{service}", self.name),
            None => self.name.clone(),
        }
    }
}

/// An open-loop stage's offered against achieved load. Derived.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct OpenLoop {
    /// Arrivals per second asked for (over all hosts).
    pub target_rate: f64,
    /// Arrivals sent per second over the measured window, counted by
    /// when they were actually sent (not when they were due).
    pub achieved_rate: f64,
    /// Achieved / target, percent.
    pub achieved_pct: f64,
}

/// What finished in one second of a stage, kept for the series: counts,
/// and the latency and TTFT histograms packed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SecondWindow {
    /// Requests that finished.
    pub requests: u64,
    /// Of those, failures.
    pub errors: u64,
    /// Latency of the successful ones.
    #[serde(rename = "latency_ms")]
    pub latency: PackedHist,
    /// TTFT of the successful streamed ones.
    #[serde(rename = "ttft_ms")]
    pub ttft: PackedHist,
}

impl SecondWindow {
    /// Packs a merged second.
    pub fn pack(window: &Window) -> SecondWindow {
        SecondWindow {
            requests: window.requests,
            errors: window.errors(),
            latency: PackedHist::pack(&window.latency),
            ttft: PackedHist::pack(&window.ttft),
        }
    }

    /// Adds another host's same second.
    pub fn merge(&mut self, other: &SecondWindow) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.latency.merge(&other.latency);
        self.ttft.merge(&other.ttft);
    }
}

/// One second of a stage over all shards (and hosts, once merged).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeriesPoint {
    /// Seconds since the stage started (the last point may be partial).
    pub second: u32,
    /// The wall-clock second (Unix) the window ended in; merges line up
    /// hosts' points on it.
    pub unix_s: u64,
    /// Part of the warm-up.
    pub warmup: bool,
    /// Requests in flight at its end.
    pub in_flight: u64,
    /// What finished in it.
    #[serde(flatten)]
    pub window: SecondWindow,
}

/// One finished stage, merged over all shards (and hosts).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageSummary {
    /// Index into the plan's stages.
    pub index: usize,
    /// The stage as written in the profile, e.g. `@200:30s`.
    pub label: String,
    /// Users or rate over all hosts.
    pub load: Load,
    /// Planned length, seconds.
    pub duration_s: f64,
    /// Wall-clock start (Unix milliseconds).
    pub started_unix_ms: u64,
    /// The round it belongs to (1 unless `--rounds`).
    #[serde(default = "first_round")]
    pub round: u32,
    /// Length of the measured window, seconds (stage less warm-up, or
    /// less when stopped early); the window starts `warmup_s` after the
    /// start.
    pub measured_s: f64,
    /// From start until the last shard reported (includes draining).
    pub elapsed_s: f64,
    /// Cut short by a stop request.
    pub stopped_early: bool,
    /// CPU seconds of each shard in this stage (each host's in turn).
    pub shard_cpu_s: Vec<f64>,
    /// Each shard's CPU over the stage's elapsed time, percent.
    pub shard_busy_pct: Vec<f64>,
    /// Each shard's time runnable but waiting for a CPU (another process
    /// or thread had it) over the stage's elapsed time, percent; empty
    /// where the kernel keeps no schedstats.
    #[serde(default)]
    pub shard_wait_pct: Vec<f64>,
    /// Each shard's mean wait for a CPU each time it became runnable,
    /// milliseconds: about how late that wait stamped what it then read.
    #[serde(default)]
    pub shard_wait_per_run_ms: Vec<f64>,
    /// Share of the shards' CPUs' time the hypervisor gave to another
    /// guest during the stage, percent (merged: the highest host's).
    #[serde(default)]
    pub steal_pct: Option<f64>,
    /// Connections open at the end, per host (in `RunSummary::hosts`
    /// order).
    pub connections_open: Vec<u64>,
    /// Measured requests per target address (a host that resolved to
    /// several gets connections on each in turn).
    #[serde(default)]
    pub requests_by_address: std::collections::BTreeMap<String, u64>,
    /// Open loop: offered against achieved. Derived.
    #[serde(default, skip_deserializing)]
    pub open_loop: Option<OpenLoop>,
    /// All scenarios together.
    pub total: Stats,
    /// Per scenario, in plan order (with services: per scenario and
    /// service, each scenario's services together).
    pub scenarios: Vec<Stats>,
    /// Per service, all its scenarios together (comparisons only).
    /// Derived.
    #[serde(default, skip_deserializing, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<Stats>,
    /// Per second.
    pub series: Vec<SeriesPoint>,
}

fn first_round() -> u32 {
    1
}

impl StageSummary {
    /// Open loop: the target rate.
    pub fn target_rate(&self) -> Option<f64> {
        match self.load {
            Load::Open { rate, .. } => Some(rate),
            Load::Closed { .. } => None,
        }
    }

    /// Open loop: the achieved rate.
    pub fn achieved_rate(&self) -> Option<f64> {
        self.open_loop.map(|o| o.achieved_rate)
    }

    /// Whether arrivals were open loop.
    pub fn is_open(&self) -> bool {
        self.target_rate().is_some()
    }

    /// The rows a table shows: each scenario's when there are several
    /// (with services: each scenario × service when there are several
    /// scenarios, then each service's total), then the total.
    pub fn rows(&self) -> Vec<&Stats> {
        let mut rows: Vec<&Stats> = Vec::new();
        if self.scenarios.len() > self.services.len().max(1) {
            rows.extend(&self.scenarios);
        }
        rows.extend(&self.services);
        rows.push(&self.total);
        rows
    }

    /// Each service's statistics: its scenarios merged, in the order the
    /// services first appear.
    fn by_service(&self) -> Vec<Stats> {
        let mut services: Vec<Stats> = Vec::new();
        for lane in &self.scenarios {
            let Some(name) = &lane.service else { continue };
            match services.iter_mut().find(|s| &s.name == name) {
                Some(have) => have.metrics.merge(&lane.metrics),
                None => services.push(Stats::new(name.clone(), lane.metrics.clone())),
            }
        }
        services
    }

    /// Computes the derived figures.
    pub fn derive(&mut self) {
        let measured = self.measured_s;
        self.total.rates = Rates::of(&self.total.metrics, measured);
        self.services = self.by_service();
        for s in self.scenarios.iter_mut().chain(&mut self.services) {
            s.rates = Rates::of(&s.metrics, measured);
        }
        self.open_loop = self.target_rate().map(|target| {
            let achieved = per_second(self.total.metrics.arrivals_sent, measured);
            OpenLoop {
                target_rate: target,
                achieved_rate: achieved,
                achieved_pct: if target > 0.0 {
                    100.0 * achieved / target
                } else {
                    0.0
                },
            }
        });
    }

    /// The measured window in Unix milliseconds, `[from, to)`.
    pub fn window_unix_ms(&self, warmup_s: f64) -> (u64, u64) {
        let from = self.started_unix_ms + (warmup_s * 1000.0).round() as u64;
        (from, from + (self.measured_s * 1000.0).round() as u64)
    }
}

/// What one generator host knew about itself.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Host {
    /// The run id this host's summary had.
    pub run_id: String,
    /// The open-files limit after raising it.
    pub fd_limit: u64,
    /// JSONL records dropped because a shard's queue was full.
    pub sink_dropped: u64,
    /// JSONL lines written.
    pub jsonl_lines: u64,
    /// The JSONL file, when one was written.
    pub results_file: Option<String>,
    /// `net.ipv4.ip_local_port_range`, when known.
    pub local_port_range: Option<(u32, u32)>,
}

/// Why a run ended before its last stage did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Stop {
    /// The user asked (Ctrl-C, or a signal asking the process to end);
    /// what was measured stands.
    Interrupted {
        /// The signal that asked first.
        #[serde(default)]
        signal: Signal,
        /// Requests in flight given up on (a second interrupt, or the
        /// drain outlasting `limits::STOP_GRACE`): neither counted as
        /// done nor as failed.
        #[serde(default)]
        abandoned: u64,
    },
    /// A shard failed.
    Failed {
        /// What failed.
        reason: String,
    },
}

impl Stop {
    /// One line for people: "stopped by SIGTERM; 3 requests in flight
    /// abandoned" or "failed: why".
    pub fn describe(&self) -> String {
        match self {
            Stop::Interrupted { signal, abandoned } => match abandoned {
                0 => format!("stopped by {}", signal.name()),
                n => format!(
                    "stopped by {}; {n} requests in flight abandoned, not counted",
                    signal.name()
                ),
            },
            Stop::Failed { reason } => format!("failed: {reason}"),
        }
    }
}

/// A signal that stops a run: SIGINT (Ctrl-C), SIGTERM, SIGHUP and SIGQUIT
/// all stop it the same way; the exit code says which (128 + number).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Signal {
    /// Ctrl-C, or a stop requested by a caller of the library.
    #[default]
    #[serde(rename = "SIGINT")]
    Int,
    /// `kill`, `timeout`, a container runtime or systemd stopping it.
    #[serde(rename = "SIGTERM")]
    Term,
    /// The terminal went away.
    #[serde(rename = "SIGHUP")]
    Hup,
    /// Ctrl-\ on a terminal.
    #[serde(rename = "SIGQUIT")]
    Quit,
}

impl Signal {
    /// Every signal a run stops on.
    pub const ALL: [Signal; 4] = [Signal::Int, Signal::Term, Signal::Hup, Signal::Quit];

    /// Its number on Linux.
    pub fn number(self) -> i32 {
        match self {
            Signal::Int => libc::SIGINT,
            Signal::Term => libc::SIGTERM,
            Signal::Hup => libc::SIGHUP,
            Signal::Quit => libc::SIGQUIT,
        }
    }

    /// The signal with this number, if a run stops on it.
    pub fn of(number: i32) -> Option<Signal> {
        Signal::ALL.into_iter().find(|s| s.number() == number)
    }

    /// Its name, `SIGINT`.
    pub fn name(self) -> &'static str {
        match self {
            Signal::Int => "SIGINT",
            Signal::Term => "SIGTERM",
            Signal::Hup => "SIGHUP",
            Signal::Quit => "SIGQUIT",
        }
    }
}

/// What the engine hands back.
#[derive(Debug, Clone)]
pub struct RunResult {
    /// Finished stages, in order.
    pub stages: Vec<StageSummary>,
    /// Wall-clock start.
    pub started_at: SystemTime,
    /// Why the run ended early, if it did.
    pub stop: Option<Stop>,
}

/// How the histograms were kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistogramFormat {
    /// Recorded unit.
    pub unit: String,
    /// Significant digits.
    pub significant_digits: u8,
    /// Largest recordable value, milliseconds.
    pub max_ms: u64,
}

impl Default for HistogramFormat {
    fn default() -> Self {
        HistogramFormat {
            unit: "us".into(),
            significant_digits: crate::limits::HISTOGRAM_SIGFIG,
            max_ms: crate::limits::HISTOGRAM_US_MAX / 1000,
        }
    }
}

/// A whole run: `summary-<id>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    /// `SCHEMA`.
    pub schema: u32,
    /// `loadtest`.
    pub tool: String,
    /// The version that wrote it.
    pub version: String,
    /// Names every file of the run (`merged-…` for a merge).
    pub run_id: String,
    /// Wall-clock start (Unix milliseconds).
    pub started_unix_ms: u64,
    /// The same, RFC 3339.
    pub started: String,
    /// The plan.
    pub plan: PlanInfo,
    /// How histograms were kept.
    pub histogram: HistogramFormat,
    /// Finished stages.
    pub stages: Vec<StageSummary>,
    /// The generator hosts (one, unless merged).
    pub hosts: Vec<Host>,
    /// Why the run ended early, if it did.
    pub stop: Option<Stop>,
    /// The files a merge was made from.
    #[serde(default)]
    pub merged_from: Vec<String>,
    /// Services side by side with their deltas (comparisons only).
    /// Derived.
    #[serde(default, skip_deserializing, skip_serializing_if = "Option::is_none")]
    pub comparison: Option<Comparison>,
}

impl RunSummary {
    /// The summary of a finished run.
    pub fn new(plan: PlanInfo, run: RunResult, host: Host) -> RunSummary {
        let started_unix_ms = unix_ms(run.started_at);
        let mut summary = RunSummary {
            schema: SCHEMA,
            tool: "loadtest".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            run_id: host.run_id.clone(),
            started_unix_ms,
            started: rfc3339(run.started_at),
            plan,
            histogram: HistogramFormat::default(),
            stages: run.stages,
            hosts: vec![host],
            stop: run.stop,
            merged_from: Vec::new(),
            comparison: None,
        };
        summary.derive();
        summary
    }

    /// Computes every derived figure.
    pub fn derive(&mut self) {
        for stage in &mut self.stages {
            stage.derive();
        }
        let rounds = self.plan.rounds.max(1);
        self.comparison = Comparison::of(
            &self.stages,
            self.plan.baseline.as_deref(),
            rounds,
            self.plan.stages.len() / rounds as usize,
        );
    }

    /// All stages together (the report's aggregate line).
    pub fn all_stages(&self) -> StageMetrics {
        let mut all = StageMetrics::new();
        for stage in &self.stages {
            all.merge(&stage.total.metrics);
        }
        all
    }

    /// Reads a summary from JSON text; the error names the JSON path.
    pub fn parse(text: &str) -> Result<RunSummary, String> {
        let probe: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        match probe.get("schema").and_then(serde_json::Value::as_u64) {
            Some(n) if n == u64::from(SCHEMA) => {}
            Some(n) => {
                return Err(format!(
                    "summary schema {n}, but this version reads schema {SCHEMA}"
                ))
            }
            None => return Err("not a loadtest summary (no `schema`)".into()),
        }
        let mut summary: RunSummary = serde_path_to_error::deserialize(probe).map_err(|e| {
            let path = e.path().to_string();
            format!("{path}: {}", e.into_inner())
        })?;
        summary.derive();
        Ok(summary)
    }

    /// Reads `summary-<id>.json`; the error names the file.
    pub fn read(path: &Path) -> Result<RunSummary, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        RunSummary::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }
}

/// A run id: the start time and a short random suffix, so two runs
/// started in the same second into one folder never share a file name.
pub fn new_run_id(at: SystemTime) -> String {
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    format!("{}-{}", timestamp(at), &suffix[..8])
}
