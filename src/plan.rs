//! From what was typed to what will happen: `Profile` + command-line
//! overrides become a validated `Plan`.
//!
//! Every check that can fail happens here, before any executor starts:
//! stage strings, the target URL, DNS resolution (once, on the calling
//! thread, never on a shard), header syntax, CPU lists. The engine only ever
//! sees a `Plan`.

use crate::config::{self, Profile};
use crate::content;
use crate::limits;
use crate::protocol::{self, Auth, Protocol};
use crate::stage::{self, Stage};
use serde_json::Value;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

/// Where requests go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The URL as given (for reports).
    pub url: String,
    /// The resolved address.
    pub addr: SocketAddr,
    /// The `Host` header value.
    pub host: String,
    /// Request path (with query).
    pub path: String,
}

/// Prompts used when a scenario gives none.
pub const DEFAULT_PROMPTS: &[&str] = &[
    "What is the capital of France?",
    "Explain what an HTTP keep-alive connection is in two sentences.",
    "Give me three tips for writing readable Rust code.",
    "What does TTFT stand for in LLM serving?",
];

/// What the user says in each turn.
#[derive(Debug, Clone, PartialEq)]
pub enum Content {
    /// A prompt picked at random per turn.
    Pool(Vec<String>),
    /// Turn i says `script[i % len]`.
    Scripted(Vec<String>),
    /// About this many tokens of generated text per turn.
    Sized(u64),
}

impl Content {
    /// The profile name of the mode.
    pub fn mode(&self) -> &'static str {
        match self {
            Content::Pool(_) => "pool",
            Content::Scripted(_) => "scripted",
            Content::Sized(_) => "sized",
        }
    }

    /// Longest user message this content can produce, in bytes.
    fn longest(&self) -> usize {
        match self {
            Content::Pool(list) | Content::Scripted(list) => {
                list.iter().map(String::len).max().unwrap_or(0)
            }
            Content::Sized(tokens) => (*tokens * content::BYTES_PER_TOKEN) as usize + 64,
        }
    }
}

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

/// One kind of traffic in the blend, fully resolved.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Name in reports.
    pub name: String,
    /// Relative share of users or arrivals (> 0 sums over the profile).
    pub weight: f64,
    /// Wire format.
    pub protocol: &'static dyn Protocol,
    /// Index into `Plan::targets`.
    pub target: usize,
    /// Model name.
    pub model: String,
    /// System prompt.
    pub system: Option<String>,
    /// Output token cap.
    pub max_tokens: u32,
    /// Ask for SSE streams.
    pub stream: bool,
    /// Request headers, validated, in sending order (auth included).
    pub headers: Vec<(String, String)>,
    /// Where `--vk` went (or would go).
    pub auth: Auth,
    /// Whole-request timeout.
    pub timeout: Duration,
    /// Turns per conversation, inclusive range.
    pub turns: (u64, u64),
    /// Pause between turns, inclusive range.
    pub think_time: (Duration, Duration),
    /// What the user says.
    pub content: Content,
}

impl Scenario {
    /// Whether every conversation is a single request.
    pub fn single_turn(&self) -> bool {
        self.turns.1 == 1
    }
}

/// A validated run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The traffic blend (at least one).
    pub scenarios: Vec<Scenario>,
    /// Distinct targets the scenarios use.
    pub targets: Vec<Target>,
    /// Stages, in order.
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
    /// Reuse connections between requests.
    pub keep_alive: bool,
    /// Skip TLS verification (only meaningful for https targets).
    pub insecure: bool,
    /// Keep the start of error bodies for the per-turn log.
    pub capture_error_body: bool,
    /// One shard per CPU, pinned.
    pub cpus: Vec<usize>,
    /// Seed for blends and content.
    pub seed: u64,
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
    /// `--max-inflight`.
    pub max_inflight: Option<u64>,
}

impl Plan {
    /// The fixed start of every request of scenario `index`: request line
    /// and headers up to (not including) the correlation header and
    /// Content-Length.
    pub fn request_head_prefix(&self, index: usize) -> Vec<u8> {
        let scenario = &self.scenarios[index];
        let target = &self.targets[scenario.target];
        let mut head = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nUser-Agent: loadtest/{}\r\n",
            target.path,
            target.host,
            env!("CARGO_PKG_VERSION")
        );
        if !self.keep_alive {
            head.push_str("Connection: close\r\n");
        }
        for (name, value) in scenario.protocol.fixed_headers() {
            if !scenario
                .headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case(name))
            {
                head.push_str(&format!("{name}: {value}\r\n"));
            }
        }
        for (name, value) in &scenario.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.into_bytes()
    }

    /// Most connections any stage may need: its users (closed loop) or
    /// `max_inflight` (open loop).
    pub fn users_max(&self) -> u64 {
        self.stages
            .iter()
            .map(|s| match s.load {
                stage::Load::Closed { users } => users,
                stage::Load::Open { .. } => self.max_inflight,
            })
            .max()
            .unwrap_or(0)
    }

    /// Each scenario's share of `users`: largest-remainder split by weight,
    /// so the counts add up to `users` exactly.
    pub fn split_users(&self, users: u64) -> Vec<u64> {
        let weights: Vec<f64> = self.scenarios.iter().map(|s| s.weight).collect();
        split_by_weight(users, &weights)
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
    let stages = match (&overrides.stages, &profile.stages) {
        (Some(text), _) => stage::parse_stages(text).map_err(|e| format!("--stages: {e}"))?,
        (None, Some(value)) => stages_value(value)?,
        (None, None) => return Err("stages: missing (or pass --stages 1:10s,10:30s)".into()),
    };
    if stages.is_empty() {
        return Err("stages: empty".into());
    }
    if stages.len() > limits::STAGES_MAX {
        return Err(format!("stages: more than {}", limits::STAGES_MAX));
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
    let connect_timeout = duration_field("connect_timeout", profile.connect_timeout.as_deref())?
        .unwrap_or(limits::CONNECT_TIMEOUT_DEFAULT);
    if connect_timeout.is_zero() {
        return Err("connect_timeout: must be greater than zero".into());
    }
    let top_timeout = duration_field("timeout", profile.timeout.as_deref())?;
    let top_think = profile
        .think_time
        .as_ref()
        .map(|v| think_value("think_time", v))
        .transpose()?;
    let cache_mode = match profile.cache_mode.as_deref() {
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
    if cache_mode == CacheMode::Bust && !uuid_in_prompt {
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
    let shared_prefix_tokens = match (profile.shared_prefix_tokens, cache_mode) {
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
    let thresholds = thresholds(profile.thresholds.unwrap_or_default())?;
    let max_inflight = match overrides.max_inflight.or(profile.max_inflight) {
        Some(0) => return Err("max_inflight: must be at least 1".into()),
        Some(n) if n > limits::USERS_MAX => {
            return Err(format!(
                "max_inflight: must be at most {}",
                limits::USERS_MAX
            ))
        }
        Some(n) => n,
        None => limits::MAX_INFLIGHT_DEFAULT,
    };
    if cpus.is_empty() {
        return Err("no CPUs selected for the generator".into());
    }
    let seed = overrides.seed.or(profile.seed).unwrap_or(0x5eed);
    let implicit = [config::Scenario::default()];
    let (raw, base): (&[config::Scenario], &str) = match &profile.scenarios {
        Some(list) if list.is_empty() => {
            return Err(
                "scenarios: empty (leave it out to use the defaults as one scenario)".into(),
            )
        }
        Some(list) => (list, "scenarios"),
        None => (&implicit, "defaults"),
    };
    if raw.len() > limits::SCENARIOS_MAX {
        return Err(format!(
            "scenarios: more than {} scenarios",
            limits::SCENARIOS_MAX
        ));
    }
    let mut targets: Vec<Target> = Vec::new();
    let mut scenarios = Vec::with_capacity(raw.len());
    for (i, own) in raw.iter().enumerate() {
        let at = if profile.scenarios.is_some() {
            format!("{base}[{i}]")
        } else {
            base.to_string()
        };
        let scenario = resolve_scenario(
            &at,
            i,
            &profile.defaults,
            own,
            profile.scenarios.is_some(),
            overrides,
            top_timeout,
            top_think,
            &mut targets,
        )?;
        if scenarios.iter().any(|s: &Scenario| s.name == scenario.name) {
            return Err(format!("{at}.name: `{}` is used twice", scenario.name));
        }
        scenarios.push(scenario);
    }
    if scenarios.iter().all(|s| s.weight == 0.0) {
        return Err(format!(
            "{base}: every weight is 0, so no traffic would be sent"
        ));
    }
    let shared_prefix = (cache_mode == CacheMode::SharedPrefix)
        .then(|| content::shared_prefix(seed, shared_prefix_tokens));
    let plan = Plan {
        scenarios,
        targets,
        stages,
        warmup,
        connect_timeout,
        cache_mode,
        shared_prefix,
        shared_prefix_tokens,
        uuid_in_prompt,
        correlation_header,
        thresholds,
        max_inflight,
        keep_alive: !profile.disable_keepalive.unwrap_or(false),
        insecure: overrides.insecure || profile.insecure_skip_verify.unwrap_or(false),
        capture_error_body: profile.capture_error_body.unwrap_or(false),
        cpus,
        seed,
        run_nonce: uuid::Uuid::new_v4().as_u64_pair().0,
    };
    for (i, scenario) in plan.scenarios.iter().enumerate() {
        let at = if profile.scenarios.is_some() {
            format!("scenarios[{i}]")
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
    Ok(plan)
}

#[allow(clippy::too_many_arguments)]
fn resolve_scenario(
    at: &str,
    index: usize,
    defaults: &config::Scenario,
    own: &config::Scenario,
    explicit: bool,
    overrides: &Overrides,
    top_timeout: Option<Duration>,
    top_think: Option<(Duration, Duration)>,
    targets: &mut Vec<Target>,
) -> Result<Scenario, String> {
    // A field set in the scenario wins; its pointer names where it came from.
    fn pick<'a, T>(
        at: &str,
        field: &str,
        own: &'a Option<T>,
        defaults: &'a Option<T>,
    ) -> (Option<&'a T>, String) {
        match (own, defaults) {
            (Some(v), _) => (Some(v), format!("{at}.{field}")),
            (None, Some(v)) => (Some(v), format!("defaults.{field}")),
            (None, None) => (None, format!("{at}.{field}")),
        }
    }
    // As in the seed tool, an empty string means "not set" and falls back
    // (a seed profile's `"system": ""` must not send an empty system prompt).
    let blank = |o: &Option<String>| o.clone().filter(|v| !v.is_empty());
    let (own, defaults) = (
        &config::Scenario {
            protocol: blank(&own.protocol),
            target: blank(&own.target),
            model: blank(&own.model),
            system: blank(&own.system),
            timeout: blank(&own.timeout),
            auth: blank(&own.auth),
            ..own.clone()
        },
        &config::Scenario {
            protocol: blank(&defaults.protocol),
            target: blank(&defaults.target),
            model: blank(&defaults.model),
            system: blank(&defaults.system),
            timeout: blank(&defaults.timeout),
            auth: blank(&defaults.auth),
            ..defaults.clone()
        },
    );
    let name = match &own.name {
        Some(name) => {
            if name.is_empty()
                || name.len() > limits::SCENARIO_NAME_MAX
                || name.chars().any(|c| c.is_control() || c.is_whitespace())
            {
                return Err(format!(
                    "{at}.name: must be 1 to {} characters without spaces or control characters",
                    limits::SCENARIO_NAME_MAX
                ));
            }
            name.clone()
        }
        None if explicit => format!("scenario-{}", index + 1),
        None => "default".to_string(),
    };
    let weight = own.weight.unwrap_or(1.0);
    if !weight.is_finite() || !(0.0..=1e9).contains(&weight) {
        return Err(format!("{at}.weight: must be between 0 and 1e9"));
    }
    let (protocol_name, p) = pick(at, "protocol", &own.protocol, &defaults.protocol);
    let protocol_name = protocol_name.map_or("openai-chat", String::as_str);
    let protocol = protocol::by_name(protocol_name).ok_or_else(|| {
        format!(
            "{p}: unknown protocol `{protocol_name}`{} (known: {})",
            hint(protocol_name, &protocol::names()),
            protocol::names().join(", ")
        )
    })?;
    let (url, p) = pick(at, "target", &own.target, &defaults.target);
    let (url, p) = match &overrides.target {
        Some(url) => (url.clone(), "--target".to_string()),
        None => (
            url.cloned()
                .ok_or_else(|| format!("{p}: missing (or pass --target URL)"))?,
            p,
        ),
    };
    let target = parse_target(&url, protocol).map_err(|e| format!("{p} `{url}`: {e}"))?;
    let target_index = match targets.iter().position(|t| *t == target) {
        Some(i) => i,
        None => {
            targets.push(target);
            targets.len() - 1
        }
    };
    let model = match &overrides.model {
        Some(model) => model.clone(),
        None => pick(at, "model", &own.model, &defaults.model)
            .0
            .cloned()
            .unwrap_or_else(|| "gpt-4o-mini".into()),
    };
    let system = pick(at, "system", &own.system, &defaults.system).0.cloned();
    let (max_tokens, p) = pick(at, "max_tokens", &own.max_tokens, &defaults.max_tokens);
    let max_tokens = *max_tokens.unwrap_or(&64);
    if max_tokens == 0 || max_tokens > u64::from(u32::MAX) {
        return Err(format!("{p}: must be between 1 and 4294967295"));
    }
    let stream = *pick(at, "stream", &own.stream, &defaults.stream)
        .0
        .unwrap_or(&false);
    let (timeout, p) = pick(at, "timeout", &own.timeout, &defaults.timeout);
    let timeout = match timeout {
        Some(text) => stage::parse_duration(text).map_err(|e| format!("{p}: {e}"))?,
        None => top_timeout.unwrap_or(limits::REQUEST_TIMEOUT_DEFAULT),
    };
    if timeout < limits::TIMEOUT_TICK {
        return Err(format!("{p}: must be at least {:?}", limits::TIMEOUT_TICK));
    }
    let (auth, p) = pick(at, "auth", &own.auth, &defaults.auth);
    let auth = match auth {
        Some(text) => Auth::parse(text).ok_or_else(|| {
            format!("{p}: unknown auth style `{text}` (known: bearer, x-api-key)")
        })?,
        None => protocol.default_auth(),
    };
    // Headers: defaults, then the scenario's, then --vk, then --header;
    // a later name replaces an earlier one regardless of case.
    let mut headers: Vec<(String, String)> = Vec::new();
    let put = |name: &str, value: &str, headers: &mut Vec<(String, String)>| {
        headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        headers.push((name.to_string(), value.to_string()));
    };
    for (source, map) in [("defaults", &defaults.headers), (at, &own.headers)] {
        for (name, value) in map.iter().flatten() {
            check_header(name, value).map_err(|e| format!("{source}.headers.{name}: {e}"))?;
            put(name, value, &mut headers);
        }
    }
    if let Some(key) = &overrides.vk {
        let (name, value) = auth.header(key);
        check_header(&name, &value).map_err(|e| format!("--vk: {e}"))?;
        put(&name, &value, &mut headers);
    }
    for (name, value) in &overrides.headers {
        check_header(name, value).map_err(|e| format!("--header `{name}`: {e}"))?;
        put(name, value, &mut headers);
    }
    let (turns, p) = pick(at, "turns", &own.turns, &defaults.turns);
    let turns = match turns {
        Some(v) => turns_value(&p, v)?,
        None => (1, 1),
    };
    let (think, p) = pick(at, "think_time", &own.think_time, &defaults.think_time);
    let think_time = match think {
        Some(v) => think_value(&p, v)?,
        None => top_think.unwrap_or((Duration::ZERO, Duration::ZERO)),
    };
    let (content, p) = pick(at, "content", &own.content, &defaults.content);
    let content = match content {
        Some(c) => content_value(&p, c)?,
        None => Content::Pool(DEFAULT_PROMPTS.iter().map(|s| s.to_string()).collect()),
    };
    Ok(Scenario {
        name,
        weight,
        protocol,
        target: target_index,
        model,
        system,
        max_tokens: max_tokens as u32,
        stream,
        headers,
        auth,
        timeout,
        turns,
        think_time,
        content,
    })
}

/// ` (did you mean "x"?)` when `word` is close to one of `known`.
fn hint(word: &str, known: &[&str]) -> String {
    config::closest(word, known).map_or(String::new(), |k| format!(", did you mean \"{k}\"?"))
}

fn content_value(at: &str, c: &config::Content) -> Result<Content, String> {
    let mode = match c.mode.as_deref() {
        Some(mode) => mode.to_string(),
        None if c.prompts.is_some() => "pool".into(),
        None if c.script.is_some() => "scripted".into(),
        None if c.approx_input_tokens.is_some() => "sized".into(),
        None => "pool".into(),
    };
    let list = |field: &str, list: &Option<Vec<String>>| -> Result<Vec<String>, String> {
        let list = list
            .as_ref()
            .ok_or_else(|| format!("{at}.{field}: missing (mode {mode} needs it)"))?;
        if list.is_empty() {
            return Err(format!("{at}.{field}: empty"));
        }
        if list.len() > limits::PROMPTS_MAX {
            return Err(format!("{at}.{field}: more than {}", limits::PROMPTS_MAX));
        }
        if let Some(i) = list.iter().position(|p| p.trim().is_empty()) {
            return Err(format!("{at}.{field}[{i}]: empty prompt"));
        }
        Ok(list.clone())
    };
    let unused = |field: &str, set: bool| -> Result<(), String> {
        if set {
            Err(format!("{at}.{field}: not used by mode {mode}"))
        } else {
            Ok(())
        }
    };
    match mode.as_str() {
        "pool" => {
            unused("script", c.script.is_some())?;
            unused("approx_input_tokens", c.approx_input_tokens.is_some())?;
            match &c.prompts {
                None => Ok(Content::Pool(
                    DEFAULT_PROMPTS.iter().map(|s| s.to_string()).collect(),
                )),
                some => Ok(Content::Pool(list("prompts", some)?)),
            }
        }
        "scripted" => {
            unused("prompts", c.prompts.is_some())?;
            unused("approx_input_tokens", c.approx_input_tokens.is_some())?;
            Ok(Content::Scripted(list("script", &c.script)?))
        }
        "sized" => {
            unused("prompts", c.prompts.is_some())?;
            unused("script", c.script.is_some())?;
            let tokens = c.approx_input_tokens.ok_or_else(|| {
                format!("{at}.approx_input_tokens: missing (mode sized needs it)")
            })?;
            if tokens == 0 || tokens > limits::SIZED_TOKENS_MAX {
                return Err(format!(
                    "{at}.approx_input_tokens: must be between 1 and {}",
                    limits::SIZED_TOKENS_MAX
                ));
            }
            Ok(Content::Sized(tokens))
        }
        other => Err(format!(
            "{at}.mode: unknown mode `{other}`{} (known: pool, scripted, sized)",
            hint(other, &["pool", "scripted", "sized"])
        )),
    }
}

/// `X` or `{"min": X, "max": X}`, each read by `one`; min ≤ max.
fn min_max<T: PartialOrd + Copy>(
    at: &str,
    v: &Value,
    one: impl Fn(&str, &Value) -> Result<T, String>,
) -> Result<(T, T), String> {
    let Value::Object(map) = v else {
        return one(at, v).map(|x| (x, x));
    };
    if let Some(key) = map.keys().find(|k| *k != "min" && *k != "max") {
        return Err(format!(
            "{at}.{key}: unknown field{}",
            hint(key, &["min", "max"])
        ));
    }
    let get = |name: &str| -> Result<T, String> {
        let at = format!("{at}.{name}");
        one(&at, map.get(name).ok_or(format!("{at}: missing"))?)
    };
    let (min, max) = (get("min")?, get("max")?);
    if min > max {
        return Err(format!("{at}: min is greater than max"));
    }
    Ok((min, max))
}

/// `3` or `{"min": 2, "max": 5}`.
fn turns_value(at: &str, v: &Value) -> Result<(u64, u64), String> {
    min_max(at, v, |at, v| {
        let n = v
            .as_u64()
            .ok_or_else(|| format!("{at}: must be a whole number"))?;
        if n == 0 || n > limits::TURNS_MAX {
            return Err(format!("{at}: must be between 1 and {}", limits::TURNS_MAX));
        }
        Ok(n)
    })
}

/// `"2s"` or `{"min": "1s", "max": "3s"}`.
fn think_value(at: &str, v: &Value) -> Result<(Duration, Duration), String> {
    min_max(at, v, |at, v| {
        let d = match v {
            Value::String(text) => stage::parse_duration(text).map_err(|e| format!("{at}: {e}"))?,
            Value::Number(n) if n.as_f64().is_some_and(|x| x >= 0.0) => {
                // A bare number is seconds, as on the command line.
                stage::parse_duration(&n.to_string()).map_err(|e| format!("{at}: {e}"))?
            }
            _ => return Err(format!("{at}: must be a duration like \"500ms\" or \"2s\"")),
        };
        if d > limits::THINK_TIME_MAX {
            return Err(format!("{at}: must be at most 1h"));
        }
        Ok(d)
    })
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

/// `"1:10s,100:60s"` or `[{"concurrency": 1, "duration": "10s"}, ...]`.
fn stages_value(value: &Value) -> Result<Vec<Stage>, String> {
    let list = match value {
        Value::String(text) => return stage::parse_stages(text).map_err(|e| format!("stages: {e}")),
        Value::Array(list) => list,
        _ => {
            return Err(
                "stages: must be a string like \"1:10s,100:60s\" or a list of {\"concurrency\", \"duration\"}"
                    .into(),
            )
        }
    };
    let mut stages = Vec::with_capacity(list.len());
    for (i, entry) in list.iter().enumerate() {
        let at = format!("stages[{i}]");
        let Value::Object(map) = entry else {
            return Err(format!(
                "{at}: must be an object like {{\"concurrency\": 10, \"duration\": \"30s\"}}"
            ));
        };
        let known = ["concurrency", "users", "rate", "arrival", "duration"];
        if let Some(key) = map.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(format!("{at}.{key}: unknown field{}", hint(key, &known)));
        }
        let duration = match map.get("duration") {
            Some(Value::String(text)) => {
                stage::parse_duration(text).map_err(|e| format!("{at}.duration: {e}"))?
            }
            Some(_) => return Err(format!("{at}.duration: must be a string like \"60s\"")),
            None => return Err(format!("{at}.duration: missing")),
        };
        let closed = match (map.get("concurrency"), map.get("users")) {
            (Some(v), None) => Some(
                v.as_u64()
                    .ok_or(format!("{at}.concurrency: must be a whole number"))?,
            ),
            (None, Some(v)) => Some(
                v.as_u64()
                    .ok_or(format!("{at}.users: must be a whole number"))?,
            ),
            (Some(_), Some(_)) => return Err(format!("{at}: give concurrency or users, not both")),
            (None, None) => None,
        };
        let stage = match (closed, map.get("rate")) {
            (Some(users), None) => {
                if map.contains_key("arrival") {
                    return Err(format!(
                        "{at}.arrival: only open-loop (rate) stages have arrivals"
                    ));
                }
                stage::closed_stage(users, duration).map_err(|e| format!("{at}: {e}"))?
            }
            (None, Some(rate)) => {
                let rate = match rate {
                    Value::Number(n) => n.as_f64().unwrap_or(f64::NAN),
                    Value::String(text) => {
                        stage::parse_rate(text).map_err(|e| format!("{at}.rate: {e}"))?
                    }
                    _ => {
                        return Err(format!(
                            "{at}.rate: must be a number of requests per second"
                        ))
                    }
                };
                let poisson = match map.get("arrival").map(|v| v.as_str()) {
                    None | Some(Some("constant")) => false,
                    Some(Some("poisson")) => true,
                    Some(Some(other)) => {
                        return Err(format!(
                            "{at}.arrival: unknown arrival process `{other}`{} (known: constant, poisson)",
                            hint(other, &["constant", "poisson"])
                        ))
                    }
                    Some(None) => return Err(format!("{at}.arrival: must be \"constant\" or \"poisson\"")),
                };
                stage::open_stage(rate, poisson, duration).map_err(|e| format!("{at}: {e}"))?
            }
            (Some(_), Some(_)) => {
                return Err(format!(
                    "{at}: give concurrency (closed loop) or rate (open loop), not both"
                ))
            }
            (None, None) => {
                return Err(format!(
                    "{at}: missing concurrency (closed loop) or rate (open loop)"
                ))
            }
        };
        stages.push(stage);
    }
    Ok(stages)
}

fn duration_field(pointer: &str, text: Option<&str>) -> Result<Option<Duration>, String> {
    text.map(|t| stage::parse_duration(t).map_err(|e| format!("{pointer}: {e}")))
        .transpose()
}

/// Checks a header name (an RFC 9110 token) and value (no CR, LF or NUL).
pub fn check_header(name: &str, value: &str) -> Result<(), String> {
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if name.is_empty() || !name.chars().all(token) {
        return Err("header name must be a token (letters, digits, -)".into());
    }
    if value.contains(['\r', '\n', '\0']) {
        return Err("header value must not contain CR, LF or NUL".into());
    }
    for reserved in ["host", "content-length", "transfer-encoding", "connection"] {
        if name.eq_ignore_ascii_case(reserved) {
            return Err(format!("`{name}` is set by the engine"));
        }
    }
    Ok(())
}

/// Parses `http://host[:port][/path]` and resolves the host once.
pub fn parse_target(url: &str, protocol: &dyn Protocol) -> Result<Target, String> {
    let rest = if let Some(rest) = url.strip_prefix("http://") {
        rest
    } else if url.starts_with("https://") {
        return Err(
            "https targets need TLS, which this build does not support yet; use http://".into(),
        );
    } else {
        return Err("must start with http://".into());
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if authority.is_empty() {
        return Err("missing host".into());
    }
    if authority.contains('@') {
        return Err("credentials in the URL are not supported; use --header".into());
    }
    let (host, port) = split_host_port(authority)?;
    let path = if path.is_empty() || path == "/" {
        protocol.default_path().to_string()
    } else {
        path.to_string()
    };
    if path.contains([' ', '\r', '\n']) {
        return Err("path must not contain spaces or line breaks".into());
    }
    let addr = (host.trim_start_matches('[').trim_end_matches(']'), port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve `{host}`: {e}"))?
        .next()
        .ok_or_else(|| format!("`{host}` resolved to no address"))?;
    Ok(Target {
        url: url.to_string(),
        addr,
        host: authority.to_string(),
        path,
    })
}

fn split_host_port(authority: &str) -> Result<(&str, u16), String> {
    let (host, port) = if authority.starts_with('[') {
        match authority.find("]:") {
            Some(i) => (&authority[..=i], Some(&authority[i + 2..])),
            None => (authority, None),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let port = match port {
        Some(p) => p.parse::<u16>().map_err(|_| format!("bad port `{p}`"))?,
        None => 80,
    };
    if host.is_empty() {
        return Err("missing host".into());
    }
    Ok((host, port))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::openai::OpenAiChat;

    #[test]
    fn targets() {
        let t = parse_target("http://127.0.0.1:8080", &OpenAiChat).unwrap();
        assert_eq!(t.addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(t.path, "/v1/chat/completions");
        assert_eq!(t.host, "127.0.0.1:8080");
        let t = parse_target("http://127.0.0.1/gw/v1/chat?x=1", &OpenAiChat).unwrap();
        assert_eq!(t.addr.port(), 80);
        assert_eq!(t.path, "/gw/v1/chat?x=1");
        let t = parse_target("http://[::1]:9000/", &OpenAiChat).unwrap();
        assert_eq!(t.addr, "[::1]:9000".parse().unwrap());
        assert!(parse_target("https://x", &OpenAiChat)
            .unwrap_err()
            .contains("TLS"));
        assert!(parse_target("ftp://x", &OpenAiChat)
            .unwrap_err()
            .contains("http://"));
        assert!(parse_target("http://:80", &OpenAiChat)
            .unwrap_err()
            .contains("host"));
        assert!(parse_target("http://h:99999", &OpenAiChat)
            .unwrap_err()
            .contains("port"));
        assert!(parse_target("http://no-such-host.invalid", &OpenAiChat)
            .unwrap_err()
            .contains("resolve"));
    }

    #[test]
    fn cpu_lists() {
        let allowed = [0, 1, 2, 3, 6];
        assert_eq!(parse_cpus("0,2-3", &allowed).unwrap(), vec![0, 2, 3]);
        assert!(parse_cpus("5", &allowed)
            .unwrap_err()
            .contains("not available"));
        assert!(parse_cpus("3-1", &allowed)
            .unwrap_err()
            .contains("backwards"));
        assert!(parse_cpus("x", &allowed).unwrap_err().contains("not a CPU"));
        assert!(parse_cpus("1,1", &allowed).unwrap_err().contains("twice"));
        assert_eq!(format_cpus(&allowed), "0-3,6");
    }

    #[test]
    fn headers() {
        assert!(check_header("Authorization", "Bearer x").is_ok());
        assert!(check_header("Bad Name", "x").is_err());
        assert!(check_header("X-A", "a\r\nInjected: 1").is_err());
        assert!(check_header("content-length", "1").is_err());
    }

    fn profile(text: &str) -> Profile {
        config::parse(text).unwrap()
    }

    #[test]
    fn builds_and_overrides() {
        let p = profile(
            r#"{"defaults":{"target":"http://127.0.0.1:1","headers":{"Authorization":"Bearer A"},"stream":true},
                "stages":[{"concurrency":3,"duration":"5s"}],"warmup":"1s"}"#,
        );
        let over = Overrides {
            headers: vec![("authorization".into(), "Bearer B".into())],
            model: Some("p/m".into()),
            ..Default::default()
        };
        let plan = build(&p, &over, vec![0]).unwrap();
        assert_eq!(plan.users_max(), 3);
        assert_eq!(plan.scenarios.len(), 1);
        let s = &plan.scenarios[0];
        assert_eq!(s.name, "default");
        assert_eq!(s.model, "p/m");
        assert!(s.stream);
        assert_eq!(
            s.headers,
            vec![("authorization".to_string(), "Bearer B".to_string())]
        );
        let head = String::from_utf8(plan.request_head_prefix(0)).unwrap();
        assert!(head.starts_with("POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:1\r\n"));
        assert!(head.contains("authorization: Bearer B\r\n"));
        assert!(!head.contains("Bearer A"));
        assert_eq!(plan.cache_mode, CacheMode::Bust);
        assert_eq!(plan.correlation_header.as_deref(), Some("x-request-id"));

        let over = Overrides {
            stages: Some("2:3s".into()),
            ..Default::default()
        };
        let plan = build(&p, &over, vec![0]).unwrap();
        assert_eq!(plan.stages.len(), 1);
        assert_eq!(plan.users_max(), 2);
    }

    #[test]
    fn scenarios_inherit_and_override() {
        let p = profile(
            r#"{"defaults":{"target":"http://127.0.0.1:1","model":"m","headers":{"X-A":"1","Authorization":"Bearer REPLACE_WITH_VK"},
                  "max_tokens":32,"system":"sys"},
                "stages":"4:2s","think_time":"250ms",
                "scenarios":[
                  {"name":"simple","weight":55},
                  {"name":"medium","weight":30,"turns":4,"stream":true,"think_time":{"min":"1s","max":"2s"},
                   "content":{"mode":"scripted","script":["a","b"]}},
                  {"name":"claude","weight":15,"protocol":"anthropic","target":"http://127.0.0.1:2/gw/messages",
                   "headers":{"X-A":"2"},"turns":{"min":2,"max":3},"content":{"mode":"sized","approx_input_tokens":100}}]}"#,
        );
        let over = Overrides {
            vk: Some("sk-123".into()),
            headers: vec![("X-Route".into(), "r".into())],
            ..Default::default()
        };
        let plan = build(&p, &over, vec![0]).unwrap();
        let [simple, medium, claude] = &plan.scenarios[..] else {
            panic!("three scenarios")
        };
        assert_eq!(simple.model, "m");
        assert_eq!(simple.max_tokens, 32);
        assert_eq!(
            simple.think_time,
            (Duration::from_millis(250), Duration::from_millis(250))
        );
        assert_eq!(simple.content.mode(), "pool");
        assert!(simple.single_turn());
        assert_eq!(medium.turns, (4, 4));
        assert_eq!(
            medium.think_time,
            (Duration::from_secs(1), Duration::from_secs(2))
        );
        assert_eq!(
            medium.content,
            Content::Scripted(vec!["a".into(), "b".into()])
        );
        assert_eq!(claude.turns, (2, 3));
        assert_eq!(claude.content, Content::Sized(100));
        assert_eq!(claude.protocol.name(), "anthropic");
        assert_eq!(claude.auth, Auth::XApiKey);
        assert_eq!(plan.targets.len(), 2);
        assert_eq!(plan.targets[claude.target].path, "/gw/messages");
        // Defaults, then the scenario, then --vk, then --header.
        assert_eq!(
            simple.headers,
            vec![
                ("X-A".to_string(), "1".to_string()),
                ("Authorization".to_string(), "Bearer sk-123".to_string()),
                ("X-Route".to_string(), "r".to_string()),
            ]
        );
        assert!(claude
            .headers
            .contains(&("X-A".to_string(), "2".to_string())));
        assert!(claude
            .headers
            .contains(&("x-api-key".to_string(), "sk-123".to_string())));
        let head = String::from_utf8(plan.request_head_prefix(2)).unwrap();
        assert!(head.contains("anthropic-version: 2023-06-01\r\n"), "{head}");
        // Weights split users by largest remainder.
        assert_eq!(plan.split_users(100), vec![55, 30, 15]);
        assert_eq!(plan.split_users(4), vec![2, 1, 1]);
        assert_eq!(plan.split_users(1), vec![1, 0, 0]);
    }

    #[test]
    fn seed_tool_switches_take_effect() {
        let p = profile(
            r#"{"defaults":{"target":"http://127.0.0.1:1"},"stages":"1:1s",
                "disable_keepalive":true,"insecure_skip_verify":true,"capture_error_body":true}"#,
        );
        let plan = build(&p, &Overrides::default(), vec![0]).unwrap();
        assert!(!plan.keep_alive && plan.insecure && plan.capture_error_body);
        let head = String::from_utf8(plan.request_head_prefix(0)).unwrap();
        assert!(head.contains("Connection: close\r\n"), "{head}");
        let p = profile(r#"{"defaults":{"target":"http://127.0.0.1:1"},"stages":"1:1s"}"#);
        let plan = build(&p, &Overrides::default(), vec![0]).unwrap();
        assert!(!String::from_utf8(plan.request_head_prefix(0))
            .unwrap()
            .contains("Connection:"));
    }

    #[test]
    fn empty_strings_fall_back_like_the_seed_tool() {
        let p = profile(
            r#"{"defaults":{"target":"http://127.0.0.1:1","model":"m","system":""},"stages":"1:1s",
                "scenarios":[{"name":"a","model":"","target":"","protocol":""}]}"#,
        );
        let plan = build(&p, &Overrides::default(), vec![0]).unwrap();
        let s = &plan.scenarios[0];
        assert_eq!(s.model, "m");
        assert_eq!(s.system, None);
        assert_eq!(s.protocol.name(), "openai-chat");
    }

    #[test]
    fn open_loop_stage_objects() {
        let p = profile(
            r#"{"defaults":{"target":"http://127.0.0.1:1"},"max_inflight":50,
                "stages":[{"concurrency":2,"duration":"1s"},{"rate":"40k","duration":"2s"},
                          {"rate":1500,"arrival":"poisson","duration":"3s"}]}"#,
        );
        let plan = build(&p, &Overrides::default(), vec![0]).unwrap();
        let labels: Vec<String> = plan.stages.iter().map(Stage::label).collect();
        assert_eq!(labels, ["2:1s", "@40000:2s", "@~1500:3s"]);
        assert_eq!(plan.max_inflight, 50);
        assert_eq!(plan.users_max(), 50);
    }

    #[test]
    fn weight_split_adds_up() {
        for total in [0u64, 1, 2, 3, 7, 100, 1001] {
            for weights in [
                &[1.0][..],
                &[1.0, 1.0, 1.0],
                &[55.0, 30.0, 15.0],
                &[0.0, 2.0, 0.5],
            ] {
                let split = split_by_weight(total, weights);
                assert_eq!(split.iter().sum::<u64>(), total, "{total} {weights:?}");
                for (n, w) in split.iter().zip(weights) {
                    if *w == 0.0 {
                        assert_eq!(*n, 0);
                    }
                }
            }
        }
    }

    #[test]
    fn cache_modes() {
        let base = r#""defaults":{"target":"http://127.0.0.1:1"},"stages":"1:1s""#;
        let plan = build(
            &profile(&format!(
                r#"{{{base},"cache_mode":"shared-prefix","shared_prefix_tokens":64}}"#
            )),
            &Overrides::default(),
            vec![0],
        )
        .unwrap();
        assert_eq!(plan.cache_mode, CacheMode::SharedPrefix);
        let prefix = plan.shared_prefix.unwrap();
        assert!(prefix.len() >= 200, "{}", prefix.len());
        let plan = build(
            &profile(&format!(
                r#"{{{base},"cache_mode":"natural","correlation":{{"header":""}}}}"#
            )),
            &Overrides::default(),
            vec![0],
        )
        .unwrap();
        assert_eq!(plan.cache_mode, CacheMode::Natural);
        assert_eq!(plan.correlation_header, None);
    }

    #[test]
    fn plan_errors_name_the_field() {
        let t = r#""target":"http://127.0.0.1:1""#;
        let cases = [
            (r#"{"stages":"1:1s"}"#.to_string(), "defaults.target"),
            (format!(r#"{{"defaults":{{{t}}}}}"#), "stages"),
            (
                format!(r#"{{"defaults":{{{t},"protocol":"openai-chta"}},"stages":"1:1s"}}"#),
                "defaults.protocol: unknown protocol `openai-chta`, did you mean \"openai-chat\"?",
            ),
            (
                format!(r#"{{"defaults":{{{t}}},"stages":[{{"concurrency":0,"duration":"1s"}}]}}"#),
                "stages[0]",
            ),
            (
                format!(r#"{{"defaults":{{{t}}},"stages":[{{"concurrency":1,"duration":"1x"}}]}}"#),
                "stages[0].duration",
            ),
            (
                format!(r#"{{"defaults":{{{t}}},"stages":[{{"concurency":1,"duration":"1s"}}]}}"#),
                "stages[0].concurency: unknown field, did you mean \"concurrency\"?",
            ),
            (
                format!(r#"{{"defaults":{{{t}}},"stages":"1:5s","warmup":"5s"}}"#),
                "warmup",
            ),
            (
                format!(r#"{{"defaults":{{{t},"max_tokens":0}},"stages":"1:5s"}}"#),
                "defaults.max_tokens",
            ),
            (
                format!(r#"{{"defaults":{{{t},"timeout":"1ms"}},"stages":"1:5s"}}"#),
                "defaults.timeout",
            ),
            (
                format!(r#"{{"defaults":{{{t},"name":"x"}},"stages":"1:5s"}}"#),
                "defaults.name",
            ),
            (
                format!(r#"{{"defaults":{{{t}}},"stages":"1:5s","scenarios":[]}}"#),
                "scenarios: empty",
            ),
            (
                format!(r#"{{"defaults":{{{t}}},"stages":"1:5s","scenarios":[{{"weight":-1}}]}}"#),
                "scenarios[0].weight",
            ),
            (
                format!(r#"{{"defaults":{{{t}}},"stages":"1:5s","scenarios":[{{"weight":0}}]}}"#),
                "scenarios: every weight is 0",
            ),
            (
                format!(
                    r#"{{"defaults":{{{t}}},"stages":"1:5s","scenarios":[{{"name":"a"}},{{"name":"a"}}]}}"#
                ),
                "scenarios[1].name",
            ),
            (
                format!(r#"{{"defaults":{{{t}}},"stages":"1:5s","scenarios":[{{"turns":0}}]}}"#),
                "scenarios[0].turns",
            ),
            (
                format!(
                    r#"{{"defaults":{{{t}}},"stages":"1:5s","scenarios":[{{"turns":{{"min":3,"max":2}}}}]}}"#
                ),
                "scenarios[0].turns: min is greater than max",
            ),
            (
                format!(
                    r#"{{"defaults":{{{t}}},"stages":"1:5s","scenarios":[{{"turns":{{"min":1,"mx":2}}}}]}}"#
                ),
                "scenarios[0].turns.mx: unknown field, did you mean \"max\"?",
            ),
            (
                format!(r#"{{"defaults":{{{t}}},"stages":"1:5s","scenarios":[{{"turns":"3"}}]}}"#),
                "scenarios[0].turns: must be a whole number",
            ),
            (
                format!(
                    r#"{{"defaults":{{{t}}},"stages":"1:5s","scenarios":[{{"think_time":"2 weeks"}}]}}"#
                ),
                "scenarios[0].think_time",
            ),
            (
                format!(
                    r#"{{"defaults":{{{t}}},"stages":"1:5s","scenarios":[{{}},{{"content":{{"mode":"sizd"}}}}]}}"#
                ),
                "scenarios[1].content.mode: unknown mode `sizd`, did you mean \"sized\"?",
            ),
            (
                format!(
                    r#"{{"defaults":{{{t}}},"stages":"1:5s","scenarios":[{{"content":{{"mode":"sized"}}}}]}}"#
                ),
                "scenarios[0].content.approx_input_tokens: missing",
            ),
            (
                format!(
                    r#"{{"defaults":{{{t}}},"stages":"1:5s","scenarios":[{{"content":{{"mode":"sized","approx_input_tokens":0}}}}]}}"#
                ),
                "scenarios[0].content.approx_input_tokens: must be",
            ),
            (
                format!(
                    r#"{{"defaults":{{{t}}},"stages":"1:5s","scenarios":[{{"content":{{"mode":"scripted"}}}}]}}"#
                ),
                "scenarios[0].content.script: missing",
            ),
            (
                format!(
                    r#"{{"defaults":{{{t}}},"stages":"1:5s","scenarios":[{{"content":{{"prompts":[]}}}}]}}"#
                ),
                "scenarios[0].content.prompts: empty",
            ),
            (
                format!(
                    r#"{{"defaults":{{{t}}},"stages":"1:5s","scenarios":[{{"content":{{"prompts":["a"],"script":["b"]}}}}]}}"#
                ),
                "scenarios[0].content.script: not used by mode pool",
            ),
            (
                format!(
                    r#"{{"defaults":{{{t}}},"stages":"1:5s","scenarios":[{{"auth":"basic"}}]}}"#
                ),
                "scenarios[0].auth",
            ),
            (
                format!(
                    r#"{{"defaults":{{{t}}},"stages":"1:5s","scenarios":[{{"headers":{{"Bad Name":"x"}}}}]}}"#
                ),
                "scenarios[0].headers.Bad Name",
            ),
            (
                format!(r#"{{"defaults":{{{t}}},"stages":"1:5s","cache_mode":"bsut"}}"#),
                "cache_mode: unknown mode `bsut`, did you mean \"bust\"?",
            ),
            (
                format!(
                    r#"{{"defaults":{{{t}}},"stages":"1:5s","correlation":{{"uuid_in_prompt":false}}}}"#
                ),
                "correlation.uuid_in_prompt",
            ),
            (
                format!(r#"{{"defaults":{{{t}}},"stages":"1:5s","shared_prefix_tokens":10}}"#),
                "shared_prefix_tokens",
            ),
            (
                format!(
                    r#"{{"defaults":{{{t}}},"stages":"1:5s","thresholds":{{"error_rate":2}}}}"#
                ),
                "thresholds.error_rate",
            ),
            (
                format!(
                    r#"{{"defaults":{{{t}}},"stages":"1:5s","scenarios":[{{"target":"https://x"}}]}}"#
                ),
                "scenarios[0].target",
            ),
        ];
        for (text, expected) in cases {
            let err = build(&profile(&text), &Overrides::default(), vec![0]).unwrap_err();
            assert!(
                err.starts_with(expected),
                "{text}\n  got: {err}\n  want: {expected}"
            );
        }
    }
}
