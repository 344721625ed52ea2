//! The profile file as written: raw serde structs, parsed from a `&str`
//! with no I/O and no validation beyond JSON shape.
//!
//! `plan` turns a `Profile` into a validated `Plan`; nothing else reads
//! these structs. Field names follow the seed tool's schema so its profiles
//! load here. Unknown fields are rejected so a typo is never silently
//! ignored, and every error names the JSON path of the offending value
//! (`scenarios[2].content.mdoe`) with a "did you mean" hint for misspelt
//! keys.
//!
//! Fields whose shape varies (`stages`, `turns`, `think_time`) are kept as
//! raw JSON values here and interpreted in `plan`, where the error can say
//! which shapes are accepted.

use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// A whole profile.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Settings every scenario starts from; alone, the one implicit scenario.
    #[serde(default)]
    pub defaults: Scenario,
    /// The traffic blend.
    pub scenarios: Option<Vec<Scenario>>,
    /// Gateways compared in one window: every scenario runs against each.
    pub services: Option<Vec<Service>>,
    /// The service the others are compared with (default: the fastest by
    /// TTFT p50 in each round).
    pub baseline: Option<String>,
    /// Times the stage list runs, rotating the services' order.
    pub rounds: Option<u32>,
    /// Stages: `"1:10s,100:60s"` or `[{"concurrency": 1, "duration": "10s"}]`.
    pub stages: Option<Value>,
    /// Warm-up at the start of each stage, excluded from statistics.
    pub warmup: Option<String>,
    /// Pause between turns, for scenarios that set none.
    pub think_time: Option<Value>,
    /// Most conversations in flight per open-loop stage (all shards).
    pub max_inflight: Option<u64>,
    /// Open loop: the shortest sleep of a pacer between wake-ups (`100us`).
    pub pacer_tick: Option<String>,
    /// `bust` (default), `shared-prefix` or `natural`.
    pub cache_mode: Option<String>,
    /// Length of the common preamble with `cache_mode: shared-prefix`.
    pub shared_prefix_tokens: Option<u64>,
    /// How a conversation is made traceable at the gateway.
    pub correlation: Option<Correlation>,
    /// Pass/fail limits, checked per stage and per scenario.
    pub thresholds: Option<Thresholds>,
    /// Whole-request timeout (overridden by `defaults.timeout`).
    pub timeout: Option<String>,
    /// Connect timeout.
    pub connect_timeout: Option<String>,
    /// Seed for every random choice, so blends and content are reproducible.
    pub seed: Option<u64>,
    /// Seed tool: this client speaks HTTP/1.1 only, so this is always true.
    pub disable_http2: Option<bool>,
    /// Seed tool: open a new connection for every request.
    pub disable_keepalive: Option<bool>,
    /// Seed tool: do not verify TLS certificates (same as `--insecure`).
    pub insecure_skip_verify: Option<bool>,
    /// Seed tool: keep the start of non-2xx bodies for the per-turn log.
    pub capture_error_body: Option<bool>,
    /// Headers whose values may be shown in reports (routing headers);
    /// every other value but a few harmless ones is masked.
    pub public_headers: Option<Vec<String>>,
}

/// One scenario, or the defaults (which take every field except `name`
/// and `weight`).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Name in reports.
    pub name: Option<String>,
    /// Share of virtual users (closed loop) or arrivals (open loop).
    pub weight: Option<f64>,
    /// Wire format (`openai-chat`, `anthropic`).
    pub protocol: Option<String>,
    /// Target URL; a bare origin gets the protocol's default path.
    pub target: Option<String>,
    /// Model name.
    pub model: Option<String>,
    /// Extra request headers (a scenario's are merged over the defaults').
    pub headers: Option<BTreeMap<String, String>>,
    /// System prompt.
    pub system: Option<String>,
    /// Output token cap.
    pub max_tokens: Option<u64>,
    /// Ask for an SSE stream.
    pub stream: Option<bool>,
    /// Whole-request timeout.
    pub timeout: Option<String>,
    /// Where `--vk` goes: `bearer` (Authorization) or `x-api-key`.
    pub auth: Option<String>,
    /// Turns per conversation: `3` or `{"min": 2, "max": 5}`.
    pub turns: Option<Value>,
    /// Pause between turns: `"2s"` or `{"min": "1s", "max": "3s"}`.
    pub think_time: Option<Value>,
    /// What the user says.
    pub content: Option<Content>,
    /// Where a multi-turn conversation's history lives (OpenAI Responses
    /// only): `resend` (default: every turn sends it) or
    /// `previous_response_id` (the server keeps it).
    pub history: Option<String>,
}

/// One service of a comparison: a gateway (or the upstream itself) that
/// every scenario also runs against, in the same window.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// Name in reports (`direct`, `gw`).
    pub name: Option<String>,
    /// Its URL, as a scenario's `target`.
    pub target: Option<String>,
    /// Model name for this service (a gateway's own spelling).
    pub model: Option<String>,
    /// Headers added to every request to this service.
    pub headers: Option<BTreeMap<String, String>>,
    /// The environment variable holding this service's key (never the key
    /// itself), placed as each scenario's `auth` says.
    pub key_env: Option<String>,
}

/// What the user says in each turn.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Content {
    /// `pool` (default), `scripted` or `sized`.
    pub mode: Option<String>,
    /// `pool`: one picked at random per turn.
    pub prompts: Option<Vec<String>>,
    /// `scripted`: turn i says `script[i % len]`.
    pub script: Option<Vec<String>>,
    /// `sized`: about this many input tokens of generated text per turn.
    pub approx_input_tokens: Option<u64>,
}

/// Correlation settings.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Correlation {
    /// Put the conversation UUID in the prompt (default true).
    pub uuid_in_prompt: Option<bool>,
    /// Header carrying the conversation UUID on every turn (default
    /// `x-request-id`; `""` sends none).
    pub header: Option<String>,
}

/// Pass/fail limits; an absent or zero value is not checked (as in the
/// seed tool). The plan uses the same type, with zeros turned into `None`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    /// TTFT p95, milliseconds.
    pub ttft_p95_ms: Option<f64>,
    /// Latency p95, milliseconds.
    pub p95_ms: Option<f64>,
    /// Latency p99, milliseconds.
    pub p99_ms: Option<f64>,
    /// Failed requests / requests, 0–1.
    pub error_rate: Option<f64>,
    /// Requests per second, at least.
    pub min_rps: Option<f64>,
}

impl Thresholds {
    /// Whether any limit is set.
    pub fn any(&self) -> bool {
        self.ttft_p95_ms.is_some()
            || self.p95_ms.is_some()
            || self.p99_ms.is_some()
            || self.error_rate.is_some()
            || self.min_rps.is_some()
    }
}

/// Parses profile text. The error names the JSON path, the line and
/// column, and for an unknown key the closest known one.
pub fn parse(text: &str) -> Result<Profile, String> {
    // serde would call an array "a sequence" and count its elements
    // against the struct's fields; say what is wrong instead.
    match text.trim_start().chars().next() {
        Some('{') | None => {}
        Some(_) => return Err("the profile must be a JSON object ({ ... })".into()),
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let profile: Profile = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let (line, column) = (inner.line(), inner.column());
        let message = inner.to_string();
        // serde_json appends " at line L column C"; we print our own.
        let message = message
            .split(" at line ")
            .next()
            .unwrap_or(&message)
            .to_string();
        let message = explain_unknown_field(&message).unwrap_or(message);
        // A key or value from the profile may hold control characters; the
        // error stays one line.
        let (path, message) = (one_line(&path), one_line(&message));
        if path.is_empty() || path == "." || path == "?" || path.ends_with(".?") {
            format!("line {line} column {column}: {message}")
        } else {
            format!("{path}: {message} (line {line} column {column})")
        }
    })?;
    de.end().map_err(|e| {
        format!(
            "line {} column {}: unexpected text after the profile's closing brace",
            e.line(),
            e.column()
        )
    })?;
    Ok(profile)
}

/// `text` with control characters escaped (`\n`, `\u{1b}`), so an error
/// quoting profile text is one line.
fn one_line(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_string();
    }
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Rewrites serde's "unknown field `x`, expected one of `a`, `b`" into
/// "unknown field, did you mean "a"?" (or the list when nothing is close).
fn explain_unknown_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    let (unknown, expected) = rest.split_once('`')?;
    let known: Vec<&str> = expected
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|s| !s.is_empty())
        .collect();
    match closest(unknown, &known) {
        Some(best) => Some(format!("unknown field, did you mean \"{best}\"?")),
        None if known.is_empty() => Some("unknown field (no fields expected here)".to_string()),
        None => Some(format!(
            "unknown field (expected one of: {})",
            known.join(", ")
        )),
    }
}

/// The known word nearest to `word` by edit distance, if it is close
/// enough to be a plausible typo.
pub fn closest<'a>(word: &str, known: &[&'a str]) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).max(1) + 1;
    known
        .iter()
        .map(|k| (edit_distance(&word.to_ascii_lowercase(), k), *k))
        .filter(|&(d, _)| d <= limit)
        .min_by_key(|&(d, _)| d)
        .map(|(_, k)| k)
}

/// Levenshtein distance with adjacent transpositions counted as one edit.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    if a.len() > 64 || b.len() > 64 {
        return usize::MAX;
    }
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_profile_that_is_not_an_object_says_so() {
        for text in ["[1, 2]", "  \"x\"", "3", "null"] {
            let err = parse(text).unwrap_err();
            assert_eq!(err, "the profile must be a JSON object ({ ... })", "{text}");
        }
        assert!(parse("").is_err());
    }

    #[test]
    fn errors_quoting_control_characters_stay_on_one_line() {
        let err = parse("{\"defaults\": {\"max_tok\\ns\": 1}}").unwrap_err();
        assert!(!err.contains('\n'), "{err}");
        assert!(err.contains("max_tok\\ns"), "{err}");
    }

    #[test]
    fn parses_the_seed_shape() {
        let p = parse(
            r#"{"defaults":{"protocol":"openai-chat","target":"http://localhost:8080","model":"m",
                "headers":{"Authorization":"Bearer x"},"max_tokens":64,"stream":true,"system":"s"},
                "stages":[{"concurrency":2,"duration":"5s"}],"warmup":"1s","timeout":"30s",
                "cache_mode":"bust","correlation":{"uuid_in_prompt":true,"header":"x-request-id"},
                "thresholds":{"ttft_p95_ms":800,"p95_ms":0,"error_rate":0.01},"think_time":"250ms",
                "disable_http2":true,"disable_keepalive":false,"insecure_skip_verify":false,
                "capture_error_body":true,
                "scenarios":[{"name":"a","weight":3,"turns":{"min":2,"max":4},"stream":false,
                  "content":{"mode":"pool","prompts":["x"]}},
                  {"name":"b","protocol":"anthropic","turns":2,"content":{"mode":"sized","approx_input_tokens":100}}]}"#,
        )
        .unwrap();
        assert_eq!(p.defaults.model.as_deref(), Some("m"));
        let scenarios = p.scenarios.unwrap();
        assert_eq!(scenarios[0].weight, Some(3.0));
        assert_eq!(
            scenarios[1].content.as_ref().unwrap().approx_input_tokens,
            Some(100)
        );
        assert_eq!(p.thresholds.unwrap().ttft_p95_ms, Some(800.0));
    }

    #[test]
    fn unknown_fields_name_the_path_and_suggest() {
        let err = parse(r#"{"scenarios":[{},{},{"content":{"mdoe":"pool"}}]}"#).unwrap_err();
        assert!(
            err.starts_with("scenarios[2].content.mdoe: unknown field, did you mean \"mode\"?"),
            "{err}"
        );
        let err = parse(r#"{"defaults":{"modle":"x"}}"#).unwrap_err();
        assert!(
            err.contains("defaults.modle") && err.contains("\"model\""),
            "{err}"
        );
        let err = parse(r#"{"zzzzzz":1}"#).unwrap_err();
        assert!(err.contains("expected one of"), "{err}");
        let err = parse(r#"{"scenarios":[{"weight":"x"}]}"#).unwrap_err();
        assert!(
            err.starts_with("scenarios[0].weight: invalid type"),
            "{err}"
        );
    }

    #[test]
    fn bad_json_names_the_place() {
        let err = parse("{\n\"stages\": [1,2]\n").unwrap_err();
        assert!(err.contains("line"), "{err}");
        let err = parse("{").unwrap_err();
        assert!(err.contains("EOF"), "{err}");
        assert!(parse("{} x").is_err());
    }

    #[test]
    fn suggestions() {
        assert_eq!(closest("mdoe", &["mode", "prompts"]), Some("mode"));
        assert_eq!(closest("promtps", &["mode", "prompts"]), Some("prompts"));
        assert_eq!(closest("Weight", &["weight"]), Some("weight"));
        assert_eq!(closest("xyz", &["mode", "prompts"]), None);
    }
}
