//! From what was typed to what will happen: `Profile` + command-line
//! overrides become a validated `Plan`.
//!
//! Every check that can fail happens here, before any executor starts:
//! stage strings, the target URL, DNS resolution (once, on the calling
//! thread, never on a shard), header syntax, CPU lists. The engine only
//! ever sees a `Plan`. `scenario` resolves each scenario of the blend,
//! `services` the gateways a comparison runs every scenario against,
//! `target` the URLs and headers, `stages` the profile's stage list.

mod scenario;
mod services;
mod stages;
mod target;
#[cfg(test)]
mod tests;

pub use scenario::{Content, Scenario, DEFAULT_PROMPTS};
pub use services::{parse_flag as parse_service, Service};
pub use target::{check_header, parse_target, Resolve, Target};

use crate::config::{self, Profile};
use crate::content;
use crate::limits;
use crate::stage::{self, Stage};
use std::time::Duration;

/// How prompts are made (un)cacheable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheMode {
    /// The conversation UUID goes first in the first user message, so no
    /// prompt or response cache can hit.
    Bust,
    /// Every conversation starts with the same preamble, to measure prompt
    /// caching on purpose.
    SharedPrefix,
    /// Prompts are sent as written.
    Natural,
}

impl CacheMode {
    /// The profile spelling.
    pub fn name(self) -> &'static str {
        match self {
            CacheMode::Bust => "bust",
            CacheMode::SharedPrefix => "shared-prefix",
            CacheMode::Natural => "natural",
        }
    }
}

/// Pass/fail limits, the profile's type: once resolved by `build`, `None`
/// means not checked (a 0 in the profile becomes `None`).
pub use crate::config::Thresholds;

/// A validated run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The traffic blend (at least one).
    pub scenarios: Vec<Scenario>,
    /// Distinct targets the scenarios use.
    pub targets: Vec<Target>,
    /// Services compared in one window (empty: no comparison). Each
    /// scenario of the profile runs against each: `scenarios` holds them
    /// scenario by scenario, service by service (`lane`).
    pub services: Vec<Service>,
    /// The service deltas are taken against (`None`: the fastest by TTFT
    /// p50 in each round).
    pub baseline: Option<usize>,
    /// Times the profile's stage list runs (`stages` holds every round's).
    pub rounds: u32,
    /// Stages, in order, every round's.
    pub stages: Vec<Stage>,
    /// Warm-up at the start of each stage.
    pub warmup: Duration,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// How prompts are made (un)cacheable.
    pub cache_mode: CacheMode,
    /// The preamble of `cache_mode: shared-prefix`, generated from the seed.
    pub shared_prefix: Option<String>,
    /// Tokens in that preamble.
    pub shared_prefix_tokens: u64,
    /// Put the conversation UUID in the prompt.
    pub uuid_in_prompt: bool,
    /// Header carrying the conversation UUID (`None`: not sent).
    pub correlation_header: Option<String>,
    /// Pass/fail limits per stage and scenario.
    pub thresholds: Thresholds,
    /// Most conversations in flight in an open-loop stage, over all shards;
    /// an arrival beyond it is counted as dropped, never queued.
    pub max_inflight: u64,
    /// Open loop: the shortest sleep of a pacer between two wake-ups; the
    /// arrivals due meanwhile are sent together when it wakes.
    pub pacer_tick: Duration,
    /// Reuse connections between requests.
    pub keep_alive: bool,
    /// Skip TLS verification (only meaningful for https targets).
    pub insecure: bool,
    /// `--cacert` files: roots added to the system's.
    pub cacert: Vec<std::path::PathBuf>,
    /// Resume TLS sessions on reconnect (`--no-tls-resume` turns it off).
    pub tls_resume: bool,
    /// What the https targets are verified against, read once (`None`:
    /// no https target).
    pub trust: Option<crate::transport::trust::Trust>,
    /// Keep the start of error bodies for the per-turn log.
    pub capture_error_body: bool,
    /// Headers the profile says may be shown unmasked
    /// (`secrets::header_value`).
    pub public_headers: Vec<String>,
    /// Retry a request once, on a fresh connection, when a reused idle
    /// connection turns out closed before any answer (`--no-retry` turns
    /// it off: the server may then have received that POST twice).
    pub retry_stale: bool,
    /// One shard per CPU, pinned.
    pub cpus: Vec<usize>,
    /// Seed for blends and content.
    pub seed: u64,
    /// A live endpoint reads the run (`--metrics-listen`): each second
    /// also keeps the ITL of its responses.
    pub live: bool,
    /// Fresh per run: mixed into conversation UUIDs so a rerun with the
    /// same seed cannot hit a cache the previous run warmed.
    pub run_nonce: u64,
}

/// Command-line values that override the profile.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `--target`.
    pub target: Option<String>,
    /// `--stages`.
    pub stages: Option<String>,
    /// `--model`.
    pub model: Option<String>,
    /// `--warmup`.
    pub warmup: Option<String>,
    /// `--seed`.
    pub seed: Option<u64>,
    /// `--vk`: the key, placed as each scenario's `auth` says.
    pub vk: Option<String>,
    /// `--header`, in order (applied after `--vk`).
    pub headers: Vec<(String, String)>,
    /// `--insecure`.
    pub insecure: bool,
    /// `--cacert`.
    pub cacert: Vec<std::path::PathBuf>,
    /// `--no-tls-resume`.
    pub no_tls_resume: bool,
    /// `--resolve`.
    pub resolve: Vec<Resolve>,
    /// Roots trusted for this run only, DER (the in-process mock's CA).
    pub tls_roots: Vec<Vec<u8>>,
    /// `--max-inflight`.
    pub max_inflight: Option<u64>,
    /// `--pacer-tick`.
    pub pacer_tick: Option<String>,
    /// `--no-retry`.
    pub no_retry: bool,
    /// `--service`, in order (replaces the profile's `services`).
    pub services: Vec<config::Service>,
    /// `--baseline`.
    pub baseline: Option<String>,
    /// `--rounds`.
    pub rounds: Option<u32>,
    /// Where `target` came from, for errors (`None`: `--target`).
    pub target_from: Option<String>,
}

impl Plan {
    /// Every target address, target by target: an address's index here is
    /// how shards count requests per address.
    pub fn addresses(&self) -> Vec<(usize, std::net::SocketAddr)> {
        self.targets
            .iter()
            .enumerate()
            .flat_map(|(t, target)| target.addrs.iter().map(move |&a| (t, a)))
            .collect()
    }

    /// The fixed start of every request of scenario `index`: request line
    /// and headers up to (not including) the correlation header and
    /// Content-Length.
    pub fn request_head_prefix(&self, index: usize) -> Vec<u8> {
        let scenario = &self.scenarios[index];
        let target = &self.targets[scenario.target];
        crate::http::request::head_prefix(
            &target.path,
            &target.host,
            self.keep_alive,
            scenario.protocol.fixed_headers(),
            &scenario.headers,
        )
    }

    /// Most connections any stage may need: its users on every service
    /// (closed loop) or `max_inflight` (open loop).
    pub fn users_max(&self) -> u64 {
        self.stages
            .iter()
            .map(|s| match s.load {
                stage::Load::Closed { users } => users * self.service_count() as u64,
                stage::Load::Open { .. } => self.max_inflight,
            })
            .max()
            .unwrap_or(0)
    }

    /// Each profile scenario's share of `users`: largest-remainder split
    /// by weight, so the counts add up to `users` exactly. With services,
    /// each service gets these users.
    pub fn split_users(&self, users: u64) -> Vec<u64> {
        split_by_weight(users, &self.blend_weights())
    }

    /// The weights of the profile's scenarios (one per blend entry, not
    /// per service).
    pub fn blend_weights(&self) -> Vec<f64> {
        let step = self.service_count();
        self.scenarios
            .iter()
            .step_by(step)
            .map(|s| s.weight)
            .collect()
    }

    /// Services the scenarios run against (1 without a comparison).
    pub fn service_count(&self) -> usize {
        self.services.len().max(1)
    }

    /// The index in `scenarios` of profile scenario `base` run against
    /// service `service`.
    pub fn lane(&self, base: usize, service: usize) -> usize {
        base * self.service_count() + service
    }

    /// One round's stages: the profile's stage list as written.
    pub fn round_stages(&self) -> &[Stage] {
        &self.stages[..self.stages.len() / self.rounds.max(1) as usize]
    }

    /// The round (1-based) stage `index` belongs to.
    pub fn round_of(&self, index: usize) -> u32 {
        let per_round = (self.stages.len() / self.rounds.max(1) as usize).max(1);
        (index / per_round) as u32 + 1
    }
}

/// Splits `total` by `weights` (largest remainder; ties to the earlier).
pub fn split_by_weight(total: u64, weights: &[f64]) -> Vec<u64> {
    let sum: f64 = weights.iter().sum();
    if sum <= 0.0 || weights.is_empty() {
        return vec![0; weights.len()];
    }
    let exact: Vec<f64> = weights.iter().map(|w| total as f64 * w / sum).collect();
    let mut counts: Vec<u64> = exact.iter().map(|x| x.floor() as u64).collect();
    let mut left = total.saturating_sub(counts.iter().sum());
    let mut order: Vec<usize> = (0..weights.len()).collect();
    order.sort_by(|&a, &b| {
        let ra = exact[a] - exact[a].floor();
        let rb = exact[b] - exact[b].floor();
        rb.partial_cmp(&ra).unwrap_or(std::cmp::Ordering::Equal)
    });
    for &i in order.iter().cycle() {
        if left == 0 {
            break;
        }
        if weights[i] > 0.0 {
            counts[i] += 1;
            left -= 1;
        }
    }
    counts
}

/// Builds a plan. `cpus` are the generator's CPUs, already chosen; the
/// targets are resolved but not contacted.
pub fn build(profile: &Profile, overrides: &Overrides, cpus: Vec<usize>) -> Result<Plan, String> {
    if let Some(name) = &profile.defaults.name {
        return Err(format!(
            "defaults.name: only scenarios have a name (got `{name}`)"
        ));
    }
    if profile.defaults.weight.is_some() {
        return Err("defaults.weight: only scenarios have a weight".into());
    }
    if cpus.is_empty() {
        return Err("no CPUs selected for the generator".into());
    }
    let specs = services::specs(profile, overrides, &|var| std::env::var(var).ok())?;
    let rounds = rounds(profile, overrides, specs.len())?;
    let (stages, warmup) = stages_and_warmup(profile, overrides, rounds)?;
    let connect_timeout = duration_field("connect_timeout", profile.connect_timeout.as_deref())?
        .unwrap_or(limits::CONNECT_TIMEOUT_DEFAULT);
    if connect_timeout.is_zero() {
        return Err("connect_timeout: must be greater than zero".into());
    }
    let cache = cache_settings(profile)?;
    let seed = overrides.seed.or(profile.seed).unwrap_or(0x5eed);
    let (scenarios, targets) = scenarios(profile, overrides, &specs)?;
    let services: Vec<Service> = specs.into_iter().map(|s| s.service).collect();
    let baseline = services::baseline(profile, overrides, &services)?;
    let insecure = overrides.insecure || profile.insecure_skip_verify.unwrap_or(false);
    let trust = if targets.iter().any(|t| t.tls) {
        let options = crate::transport::trust::TlsOptions {
            cacert: overrides.cacert.clone(),
            insecure,
            resume: !overrides.no_tls_resume,
            extra_roots: overrides.tls_roots.clone(),
        };
        Some(crate::transport::trust::Trust::load(&options)?)
    } else {
        None
    };
    let plan = Plan {
        scenarios,
        targets,
        services,
        baseline,
        rounds,
        stages,
        warmup,
        connect_timeout,
        cache_mode: cache.mode,
        shared_prefix: (cache.mode == CacheMode::SharedPrefix)
            .then(|| content::shared_prefix(seed, cache.shared_prefix_tokens)),
        shared_prefix_tokens: cache.shared_prefix_tokens,
        uuid_in_prompt: cache.uuid_in_prompt,
        correlation_header: cache.correlation_header,
        thresholds: thresholds(profile.thresholds.unwrap_or_default())?,
        max_inflight: max_inflight(profile, overrides)?,
        pacer_tick: pacer_tick(profile, overrides)?,
        keep_alive: !profile.disable_keepalive.unwrap_or(false),
        insecure,
        cacert: overrides.cacert.clone(),
        tls_resume: !overrides.no_tls_resume,
        trust,
        capture_error_body: profile.capture_error_body.unwrap_or(false),
        public_headers: profile.public_headers.clone().unwrap_or_default(),
        retry_stale: !overrides.no_retry,
        cpus,
        seed,
        run_nonce: uuid::Uuid::new_v4().as_u64_pair().0,
        live: false,
    };
    check_request_sizes(&plan, profile.scenarios.is_some())?;
    Ok(plan)
}

/// The stages (the command line's or the profile's) and the warm-up,
/// which must leave something of every stage to measure.
fn stages_and_warmup(
    profile: &Profile,
    overrides: &Overrides,
    rounds: u32,
) -> Result<(Vec<Stage>, Duration), String> {
    let stages = match (&overrides.stages, &profile.stages) {
        (Some(text), _) => stage::parse_stages(text).map_err(|e| format!("--stages: {e}"))?,
        (None, Some(value)) => stages::stages_value(value)?,
        (None, None) => return Err("stages: missing (or pass --stages 1:10s,10:30s)".into()),
    };
    if stages.is_empty() {
        return Err("stages: empty".into());
    }
    if stages.len() * rounds as usize > limits::STAGES_MAX {
        return Err(format!(
            "stages: more than {} (over {rounds} rounds)",
            limits::STAGES_MAX
        ));
    }
    let warmup = duration_field(
        "warmup",
        overrides.warmup.as_deref().or(profile.warmup.as_deref()),
    )?
    .unwrap_or(Duration::ZERO);
    if let Some(short) = stages.iter().position(|s| s.duration <= warmup) {
        if !warmup.is_zero() {
            return Err(format!(
                "warmup: {} is not shorter than stage {} ({}), which would leave nothing measured",
                stage::format_duration(warmup),
                short + 1,
                stage::format_duration(stages[short].duration)
            ));
        }
    }
    Ok((stages.repeat(rounds as usize), warmup))
}

/// `--rounds` (or the profile's `rounds`): how many times the stage list
/// runs; more than one only means something with services.
fn rounds(profile: &Profile, overrides: &Overrides, services: usize) -> Result<u32, String> {
    let (rounds, at) = match (overrides.rounds, profile.rounds) {
        (Some(n), _) => (n, "--rounds"),
        (None, Some(n)) => (n, "rounds"),
        (None, None) => return Ok(1),
    };
    if rounds == 0 || rounds > limits::ROUNDS_MAX {
        return Err(format!(
            "{at}: must be between 1 and {}",
            limits::ROUNDS_MAX
        ));
    }
    if rounds > 1 && services == 0 {
        return Err(format!(
            "{at}: rounds rotate services, and there are none (add --service NAME=URL)"
        ));
    }
    Ok(rounds)
}

/// How prompts are made (un)cacheable and correlated.
struct CacheSettings {
    mode: CacheMode,
    uuid_in_prompt: bool,
    correlation_header: Option<String>,
    shared_prefix_tokens: u64,
}

fn cache_settings(profile: &Profile) -> Result<CacheSettings, String> {
    let mode = match profile.cache_mode.as_deref() {
        None | Some("bust") => CacheMode::Bust,
        Some("shared-prefix") | Some("shared_prefix") => CacheMode::SharedPrefix,
        Some("natural") => CacheMode::Natural,
        Some(other) => {
            return Err(format!(
                "cache_mode: unknown mode `{other}`{} (known: bust, shared-prefix, natural)",
                hint(other, &["bust", "shared-prefix", "natural"])
            ))
        }
    };
    let correlation = profile.correlation.clone().unwrap_or_default();
    let uuid_in_prompt = correlation.uuid_in_prompt.unwrap_or(true);
    if mode == CacheMode::Bust && !uuid_in_prompt {
        return Err("correlation.uuid_in_prompt: cache_mode bust works by putting the conversation UUID first in the prompt; use cache_mode natural to send prompts unchanged".into());
    }
    let correlation_header = match correlation.header.as_deref() {
        None => Some("x-request-id".to_string()),
        Some("") => None,
        Some(name) => {
            check_header(name, "").map_err(|e| format!("correlation.header: {e}"))?;
            Some(name.to_string())
        }
    };
    let shared_prefix_tokens = match (profile.shared_prefix_tokens, mode) {
        (Some(_), mode) if mode != CacheMode::SharedPrefix => {
            return Err("shared_prefix_tokens: only used with cache_mode shared-prefix".into())
        }
        (Some(n), _) if n == 0 || n > limits::SIZED_TOKENS_MAX => {
            return Err(format!(
                "shared_prefix_tokens: must be between 1 and {}",
                limits::SIZED_TOKENS_MAX
            ))
        }
        (n, _) => n.unwrap_or(1024),
    };
    Ok(CacheSettings {
        mode,
        uuid_in_prompt,
        correlation_header,
        shared_prefix_tokens,
    })
}

fn max_inflight(profile: &Profile, overrides: &Overrides) -> Result<u64, String> {
    match overrides.max_inflight.or(profile.max_inflight) {
        Some(0) => Err("max_inflight: must be at least 1".into()),
        Some(n) if n > limits::USERS_MAX => Err(format!(
            "max_inflight: must be at most {}",
            limits::USERS_MAX
        )),
        Some(n) => Ok(n),
        None => Ok(limits::MAX_INFLIGHT_DEFAULT),
    }
}

fn pacer_tick(profile: &Profile, overrides: &Overrides) -> Result<Duration, String> {
    let text = overrides.pacer_tick.as_deref();
    let pointer = if text.is_some() {
        "--pacer-tick"
    } else {
        "pacer_tick"
    };
    let tick = duration_field(pointer, text.or(profile.pacer_tick.as_deref()))?
        .unwrap_or(limits::PACER_TICK);
    let (min, max) = (limits::PACER_TICK_MIN, limits::PACER_TICK_MAX);
    if tick < min || tick > max {
        return Err(format!(
            "{pointer}: {}us is outside {}us..{}us",
            tick.as_micros(),
            min.as_micros(),
            max.as_micros()
        ));
    }
    Ok(tick)
}

/// The blend: each scenario resolved (once per service, when there are
/// services), with the distinct targets they use.
fn scenarios(
    profile: &Profile,
    overrides: &Overrides,
    services: &[services::Spec],
) -> Result<(Vec<Scenario>, Vec<Target>), String> {
    let (raw, base) = blend_as_written(profile, services.len())?;
    let timeout = duration_field("timeout", profile.timeout.as_deref())?;
    let think = profile
        .think_time
        .as_ref()
        .map(|v| scenario::think_value("think_time", v))
        .transpose()?;
    let inherit = |overrides| scenario::Inherited {
        overrides,
        timeout,
        think,
    };
    let inherited: Vec<scenario::Inherited<'_>> = if services.is_empty() {
        vec![inherit(overrides)]
    } else {
        services.iter().map(|s| inherit(&s.overrides)).collect()
    };
    let explicit = profile.scenarios.is_some();
    let mut targets: Vec<Target> = Vec::new();
    let mut scenarios = Vec::with_capacity(raw.len());
    for (i, own) in raw.iter().enumerate() {
        let at = if explicit {
            format!("{base}[{i}]")
        } else {
            base.to_string()
        };
        for (service, inherited) in inherited.iter().enumerate() {
            let mut scenario = scenario::resolve(
                &at,
                i,
                &profile.defaults,
                own,
                explicit,
                inherited,
                &mut targets,
            )?;
            if service == 0 && scenarios.iter().any(|s: &Scenario| s.name == scenario.name) {
                return Err(format!("{at}.name: `{}` is used twice", scenario.name));
            }
            scenario.service = service;
            scenarios.push(scenario);
        }
    }
    if scenarios.iter().all(|s| s.weight == 0.0) {
        return Err(format!(
            "{base}: every weight is 0, so no traffic would be sent"
        ));
    }
    Ok((scenarios, targets))
}

/// The profile's scenarios as written (the defaults alone when it lists
/// none) and where they are, checked against the bounds.
fn blend_as_written(
    profile: &Profile,
    services: usize,
) -> Result<(Vec<config::Scenario>, &'static str), String> {
    let (raw, base) = match &profile.scenarios {
        Some(list) if list.is_empty() => {
            return Err(
                "scenarios: empty (leave it out to use the defaults as one scenario)".into(),
            )
        }
        Some(list) => (list.clone(), "scenarios"),
        None => (vec![config::Scenario::default()], "defaults"),
    };
    if raw.len() > limits::SCENARIOS_MAX {
        return Err(format!(
            "scenarios: more than {} scenarios",
            limits::SCENARIOS_MAX
        ));
    }
    if raw.len() * services.max(1) > limits::LANES_MAX {
        return Err(format!(
            "services: {} scenarios × {services} services is more than {} pairs",
            raw.len(),
            limits::LANES_MAX
        ));
    }
    Ok((raw, base))
}

/// Refuses a plan whose first request of some scenario could not fit in
/// `limits::REQUEST_BYTES_MAX` (or whose head is far too large).
fn check_request_sizes(plan: &Plan, explicit: bool) -> Result<(), String> {
    for (i, scenario) in plan.scenarios.iter().enumerate() {
        let at = if explicit {
            format!("scenarios[{}]", scenario.base)
        } else {
            "defaults".to_string()
        };
        let head = plan.request_head_prefix(i).len() + 128;
        if head > limits::HEAD_BYTES_MAX * 4 {
            return Err(format!("{at}.headers: request head too large"));
        }
        // Generous slack for the JSON around the prompt (escapes can double
        // it) and the cache-busting prefix.
        let first_turn = head
            + scenario.system.as_ref().map_or(0, |s| 2 * s.len())
            + plan.shared_prefix.as_ref().map_or(0, String::len)
            + 2 * scenario.content.longest()
            + 1024;
        if first_turn > limits::REQUEST_BYTES_MAX {
            return Err(format!(
                "{at}.content: the first request would be larger than {} bytes",
                limits::REQUEST_BYTES_MAX
            ));
        }
    }
    Ok(())
}

/// ` (did you mean "x"?)` when `word` is close to one of `known`.
fn hint(word: &str, known: &[&str]) -> String {
    config::closest(word, known).map_or(String::new(), |k| format!(", did you mean \"{k}\"?"))
}

fn thresholds(raw: config::Thresholds) -> Result<Thresholds, String> {
    // As in the seed tool, 0 means "not checked".
    let check = |name: &str, v: Option<f64>, max: f64| -> Result<Option<f64>, String> {
        match v {
            None => Ok(None),
            Some(x) if !x.is_finite() || x < 0.0 || x > max => {
                Err(format!("thresholds.{name}: must be between 0 and {max}"))
            }
            Some(0.0) => Ok(None),
            Some(x) => Ok(Some(x)),
        }
    };
    Ok(Thresholds {
        ttft_p95_ms: check("ttft_p95_ms", raw.ttft_p95_ms, 3.6e6)?,
        p95_ms: check("p95_ms", raw.p95_ms, 3.6e6)?,
        p99_ms: check("p99_ms", raw.p99_ms, 3.6e6)?,
        error_rate: check("error_rate", raw.error_rate, 1.0)?,
        min_rps: check("min_rps", raw.min_rps, 1e9)?,
    })
}

fn duration_field(pointer: &str, text: Option<&str>) -> Result<Option<Duration>, String> {
    text.map(|t| stage::parse_duration(t).map_err(|e| format!("{pointer}: {e}")))
        .transpose()
}

/// Parses `0,2-3` into CPU numbers, checking each is available.
pub fn parse_cpus(text: &str, allowed: &[usize]) -> Result<Vec<usize>, String> {
    let mut cpus = Vec::new();
    for part in text.split(',') {
        let part = part.trim();
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (part, part),
        };
        let lo: usize = lo
            .parse()
            .map_err(|_| format!("`{part}` is not a CPU number or range"))?;
        let hi: usize = hi
            .parse()
            .map_err(|_| format!("`{part}` is not a CPU number or range"))?;
        if lo > hi {
            return Err(format!("`{part}`: range is backwards"));
        }
        if hi - lo > 4096 {
            return Err(format!("`{part}`: range too large"));
        }
        for cpu in lo..=hi {
            if !allowed.contains(&cpu) {
                return Err(format!(
                    "CPU {cpu} is not available (available: {})",
                    format_cpus(allowed)
                ));
            }
            if cpus.contains(&cpu) {
                return Err(format!("CPU {cpu} listed twice"));
            }
            cpus.push(cpu);
        }
    }
    Ok(cpus)
}

/// Formats CPU numbers compactly (`0-3,6`).
pub fn format_cpus(cpus: &[usize]) -> String {
    let mut out = Vec::new();
    let mut i = 0;
    while i < cpus.len() {
        let mut j = i;
        while j + 1 < cpus.len() && cpus[j + 1] == cpus[j] + 1 {
            j += 1;
        }
        out.push(if i == j {
            cpus[i].to_string()
        } else {
            format!("{}-{}", cpus[i], cpus[j])
        });
        i = j + 1;
    }
    out.join(",")
}
