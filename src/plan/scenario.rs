//! One scenario of the blend: its fields as written, layered over the
//! profile's defaults and the command line's overrides, checked and
//! resolved (protocol, target, headers, turns, think time, content).

use super::target::{check_header, parse_target, Target};
use super::{hint, Overrides};
use crate::config;
use crate::content;
use crate::limits;
use crate::protocol::{self, Auth, Protocol};
use crate::stage;
use serde_json::Value;
use std::time::Duration;

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
    pub(super) fn longest(&self) -> usize {
        match self {
            Content::Pool(list) | Content::Scripted(list) => {
                list.iter().map(String::len).max().unwrap_or(0)
            }
            Content::Sized(tokens) => (*tokens * content::BYTES_PER_TOKEN) as usize + 64,
        }
    }
}

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
    /// Index into `Plan::services` (0 when there are none).
    pub service: usize,
    /// The scenario of the profile this is (its index in the blend): with
    /// services, each is run once per service, and `Plan::scenarios` holds
    /// every scenario × service pair.
    pub base: usize,
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
    /// The server keeps the conversation's history: each turn sends only
    /// its new message and the previous response's id (OpenAI Responses,
    /// `history: previous_response_id`).
    pub server_history: bool,
}

impl Scenario {
    /// Whether every conversation is a single request.
    pub fn single_turn(&self) -> bool {
        self.turns.1 == 1
    }
}

/// What every scenario inherits from the profile's top level and the
/// command line.
pub(super) struct Inherited<'a> {
    /// The command line.
    pub overrides: &'a Overrides,
    /// The profile's `timeout`.
    pub timeout: Option<Duration>,
    /// The profile's `think_time`.
    pub think: Option<(Duration, Duration)>,
}

/// A scenario's fields as written, beside the profile's defaults. As in
/// the seed tool, an empty string means "not set" and falls back (a seed
/// profile's `"system": ""` must not send an empty system prompt).
struct Layers<'a> {
    at: &'a str,
    own: config::Scenario,
    defaults: config::Scenario,
}

impl<'a> Layers<'a> {
    fn new(at: &'a str, own: &config::Scenario, defaults: &config::Scenario) -> Self {
        let blank = |o: &Option<String>| o.clone().filter(|v| !v.is_empty());
        let unblank = |s: &config::Scenario| config::Scenario {
            protocol: blank(&s.protocol),
            target: blank(&s.target),
            model: blank(&s.model),
            system: blank(&s.system),
            timeout: blank(&s.timeout),
            auth: blank(&s.auth),
            ..s.clone()
        };
        Layers {
            at,
            own: unblank(own),
            defaults: unblank(defaults),
        }
    }

    /// A field set in the scenario wins over the defaults'; the pointer
    /// names where the value came from.
    fn pick<T>(
        &self,
        field: &str,
        get: fn(&config::Scenario) -> &Option<T>,
    ) -> (Option<&T>, String) {
        match (get(&self.own), get(&self.defaults)) {
            (Some(v), _) => (Some(v), format!("{}.{field}", self.at)),
            (None, Some(v)) => (Some(v), format!("defaults.{field}")),
            (None, None) => (None, format!("{}.{field}", self.at)),
        }
    }
}

/// Resolves scenario `index` (at JSON path `at`); its target joins
/// `targets` unless an equal one is there.
pub(super) fn resolve(
    at: &str,
    index: usize,
    defaults: &config::Scenario,
    own: &config::Scenario,
    explicit: bool,
    inherited: &Inherited<'_>,
    targets: &mut Vec<Target>,
) -> Result<Scenario, String> {
    let layers = Layers::new(at, own, defaults);
    let overrides = inherited.overrides;
    let name = name_of(&layers, index, explicit)?;
    let weight = layers.own.weight.unwrap_or(1.0);
    if !weight.is_finite() || !(0.0..=1e9).contains(&weight) {
        return Err(format!("{at}.weight: must be between 0 and 1e9"));
    }
    let protocol = protocol_of(&layers)?;
    let target = target_of(&layers, protocol, overrides, targets)?;
    let model = match &overrides.model {
        Some(model) => model.clone(),
        None => layers
            .pick("model", |s| &s.model)
            .0
            .cloned()
            .unwrap_or_else(|| "gpt-4o-mini".into()),
    };
    let (max_tokens, pointer) = layers.pick("max_tokens", |s| &s.max_tokens);
    let max_tokens = u32::try_from(*max_tokens.unwrap_or(&64))
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("{pointer}: must be between 1 and 4294967295"))?;
    let timeout = timeout_of(&layers, inherited.timeout)?;
    let (auth, pointer) = layers.pick("auth", |s| &s.auth);
    let auth = match auth {
        Some(text) => Auth::parse(text).ok_or_else(|| {
            format!("{pointer}: unknown auth style `{text}` (known: bearer, x-api-key)")
        })?,
        None => protocol.default_auth(),
    };
    let server_history = history_of(&layers, protocol)?;
    Ok(Scenario {
        name,
        weight,
        protocol,
        target,
        service: 0,
        base: index,
        model,
        system: layers.pick("system", |s| &s.system).0.cloned(),
        max_tokens,
        stream: *layers.pick("stream", |s| &s.stream).0.unwrap_or(&false),
        headers: headers_of(&layers, auth, overrides)?,
        auth,
        timeout,
        turns: match layers.pick("turns", |s| &s.turns) {
            (Some(v), pointer) => turns_value(&pointer, v)?,
            (None, _) => (1, 1),
        },
        think_time: match layers.pick("think_time", |s| &s.think_time) {
            (Some(v), pointer) => think_value(&pointer, v)?,
            (None, _) => inherited.think.unwrap_or((Duration::ZERO, Duration::ZERO)),
        },
        content: match layers.pick("content", |s| &s.content) {
            (Some(c), pointer) => content_value(&pointer, c)?,
            (None, _) => Content::Pool(DEFAULT_PROMPTS.iter().map(|s| s.to_string()).collect()),
        },
        server_history,
    })
}

/// `history`: `resend` (default) or `previous_response_id`, which only the
/// OpenAI Responses protocol has.
fn history_of(layers: &Layers<'_>, protocol: &dyn Protocol) -> Result<bool, String> {
    let (history, pointer) = layers.pick("history", |s| &s.history);
    match history.map(String::as_str) {
        None | Some("resend") => Ok(false),
        Some("previous_response_id") if protocol.name() == "openai-responses" => Ok(true),
        Some("previous_response_id") => Err(format!(
            "{pointer}: previous_response_id keeps the history on the server, which only the openai-responses protocol does (this scenario speaks {})",
            protocol.name()
        )),
        Some(other) => Err(format!(
            "{pointer}: unknown history mode `{other}`{} (known: resend, previous_response_id)",
            hint(other, &["resend", "previous_response_id"])
        )),
    }
}

fn name_of(layers: &Layers<'_>, index: usize, explicit: bool) -> Result<String, String> {
    match &layers.own.name {
        Some(name) => {
            if name.is_empty()
                || name.len() > limits::SCENARIO_NAME_MAX
                || name.chars().any(|c| c.is_control() || c.is_whitespace())
            {
                return Err(format!(
                    "{}.name: must be 1 to {} characters without spaces or control characters",
                    layers.at,
                    limits::SCENARIO_NAME_MAX
                ));
            }
            Ok(name.clone())
        }
        None if explicit => Ok(format!("scenario-{}", index + 1)),
        None => Ok("default".to_string()),
    }
}

fn protocol_of(layers: &Layers<'_>) -> Result<&'static dyn Protocol, String> {
    let (name, pointer) = layers.pick("protocol", |s| &s.protocol);
    let name = name.map_or("openai-chat", String::as_str);
    protocol::by_name(name).ok_or_else(|| {
        format!(
            "{pointer}: unknown protocol `{name}`{} (known: {})",
            hint(name, &protocol::names()),
            protocol::names().join(", ")
        )
    })
}

/// The scenario's target (its index in `targets`).
fn target_of(
    layers: &Layers<'_>,
    protocol: &dyn Protocol,
    overrides: &Overrides,
    targets: &mut Vec<Target>,
) -> Result<usize, String> {
    let (url, pointer) = match (&overrides.target, layers.pick("target", |s| &s.target)) {
        (Some(url), _) => (
            url.clone(),
            overrides
                .target_from
                .clone()
                .unwrap_or_else(|| "--target".to_string()),
        ),
        (None, (Some(url), pointer)) => (url.clone(), pointer),
        (None, (None, pointer)) => {
            return Err(format!("{pointer}: missing (or pass --target URL)"))
        }
    };
    let target = parse_target(&url, protocol, &overrides.resolve)
        .map_err(|e| format!("{pointer} `{}`: {e}", crate::secrets::url(&url)))?;
    Ok(match targets.iter().position(|t| *t == target) {
        Some(i) => i,
        None => {
            targets.push(target);
            targets.len() - 1
        }
    })
}

fn timeout_of(layers: &Layers<'_>, top: Option<Duration>) -> Result<Duration, String> {
    let (timeout, pointer) = layers.pick("timeout", |s| &s.timeout);
    let timeout = match timeout {
        Some(text) => stage::parse_duration(text).map_err(|e| format!("{pointer}: {e}"))?,
        None => top.unwrap_or(limits::REQUEST_TIMEOUT_DEFAULT),
    };
    if timeout < limits::TIMEOUT_TICK {
        return Err(format!(
            "{pointer}: must be at least {:?}",
            limits::TIMEOUT_TICK
        ));
    }
    Ok(timeout)
}

/// Headers: the defaults', then the scenario's, then `--vk`, then
/// `--header`; a later name replaces an earlier one regardless of case.
fn headers_of(
    layers: &Layers<'_>,
    auth: Auth,
    overrides: &Overrides,
) -> Result<Vec<(String, String)>, String> {
    let mut headers: Vec<(String, String)> = Vec::new();
    let put = |name: &str, value: &str, headers: &mut Vec<(String, String)>| {
        headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        headers.push((name.to_string(), value.to_string()));
    };
    for (source, map) in [
        ("defaults", &layers.defaults.headers),
        (layers.at, &layers.own.headers),
    ] {
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
    Ok(headers)
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
pub(super) fn think_value(at: &str, v: &Value) -> Result<(Duration, Duration), String> {
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
