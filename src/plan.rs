//! From what was typed to what will happen: `Profile` + command-line
//! overrides become a validated `Plan`.
//!
//! Every check that can fail happens here, before any executor starts:
//! stage strings, the target URL, DNS resolution (once, on the calling
//! thread, never on a shard), header syntax, CPU lists. The engine only ever
//! sees a `Plan`.

use crate::config::{self, Profile};
use crate::limits;
use crate::protocol::{self, Protocol};
use crate::stage::{self, Stage};
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

/// Where requests go.
#[derive(Debug, Clone)]
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

/// Prompts used when a profile gives none.
const DEFAULT_PROMPTS: &[&str] = &[
    "What is the capital of France?",
    "Explain what an HTTP keep-alive connection is in two sentences.",
    "Give me three tips for writing readable Rust code.",
    "What does TTFT stand for in LLM serving?",
];

/// A validated run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Where requests go.
    pub target: Target,
    /// Wire format.
    pub protocol: &'static dyn Protocol,
    /// Model name.
    pub model: String,
    /// System prompt.
    pub system: Option<String>,
    /// Output token cap.
    pub max_tokens: u32,
    /// Ask for SSE streams.
    pub stream: bool,
    /// Extra headers, validated.
    pub headers: Vec<(String, String)>,
    /// Prompts, one picked per request.
    pub prompts: Vec<String>,
    /// Stages, in order.
    pub stages: Vec<Stage>,
    /// Warm-up at the start of each stage.
    pub warmup: Duration,
    /// Whole-request timeout.
    pub timeout: Duration,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// One shard per CPU, pinned.
    pub cpus: Vec<usize>,
    /// Seed for the shards' random choices.
    pub seed: u64,
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
    /// `--header`, in order.
    pub headers: Vec<(String, String)>,
}

impl Plan {
    /// The fixed start of every request: request line and headers up to
    /// (not including) Content-Length.
    pub fn request_head_prefix(&self) -> Vec<u8> {
        let mut head = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nUser-Agent: loadtest/{}\r\n",
            self.target.path,
            self.target.host,
            env!("CARGO_PKG_VERSION")
        );
        for (name, value) in self.protocol.fixed_headers() {
            if !self
                .headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case(name))
            {
                head.push_str(&format!("{name}: {value}\r\n"));
            }
        }
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.into_bytes()
    }

    /// Most virtual users of any stage.
    pub fn users_max(&self) -> u64 {
        self.stages
            .iter()
            .map(|s| match s.load {
                stage::Load::Closed { users } => users,
            })
            .max()
            .unwrap_or(0)
    }
}

/// Builds a plan. `cpus` are the generator's CPUs, already chosen; the
/// target is resolved but not contacted.
pub fn build(profile: &Profile, overrides: &Overrides, cpus: Vec<usize>) -> Result<Plan, String> {
    let d = &profile.defaults;
    let protocol_name = d.protocol.as_deref().unwrap_or("openai-chat");
    let protocol = protocol::by_name(protocol_name).ok_or_else(|| {
        format!(
            "/defaults/protocol: unknown protocol `{protocol_name}` (known: {})",
            protocol::names().join(", ")
        )
    })?;
    let url = overrides
        .target
        .clone()
        .or_else(|| d.target.clone())
        .ok_or("/defaults/target: missing (or pass --target URL)")?;
    let target = parse_target(&url, protocol).map_err(|e| format!("target `{url}`: {e}"))?;
    let stages = match (&overrides.stages, &profile.stages) {
        (Some(text), _) => stage::parse_stages(text).map_err(|e| format!("--stages: {e}"))?,
        (None, Some(config::Stages::Text(text))) => {
            stage::parse_stages(text).map_err(|e| format!("/stages: {e}"))?
        }
        (None, Some(config::Stages::List(list))) => stage_list(list)?,
        (None, None) => return Err("/stages: missing (or pass --stages 1:10s,10:30s)".into()),
    };
    if stages.is_empty() {
        return Err("/stages: empty".into());
    }
    if stages.len() > limits::STAGES_MAX {
        return Err(format!("/stages: more than {}", limits::STAGES_MAX));
    }
    let warmup = duration_field(
        "/warmup",
        overrides.warmup.as_deref().or(profile.warmup.as_deref()),
    )?
    .unwrap_or(Duration::ZERO);
    if let Some(short) = stages.iter().position(|s| s.duration <= warmup) {
        if !warmup.is_zero() {
            return Err(format!(
                "/warmup: {} is not shorter than stage {} ({}), which would leave nothing measured",
                stage::format_duration(warmup),
                short + 1,
                stage::format_duration(stages[short].duration)
            ));
        }
    }
    let timeout = duration_field(
        "/defaults/timeout",
        d.timeout.as_deref().or(profile.timeout.as_deref()),
    )?
    .unwrap_or(limits::REQUEST_TIMEOUT_DEFAULT);
    if timeout < limits::TIMEOUT_TICK {
        return Err(format!(
            "/defaults/timeout: must be at least {:?}",
            limits::TIMEOUT_TICK
        ));
    }
    let connect_timeout = duration_field("/connect_timeout", profile.connect_timeout.as_deref())?
        .unwrap_or(limits::CONNECT_TIMEOUT_DEFAULT);
    if connect_timeout.is_zero() {
        return Err("/connect_timeout: must be greater than zero".into());
    }
    let max_tokens = d.max_tokens.unwrap_or(64);
    if max_tokens == 0 || max_tokens > u64::from(u32::MAX) {
        return Err("/defaults/max_tokens: must be between 1 and 4294967295".into());
    }
    let mut headers = Vec::new();
    for (name, value) in &d.headers {
        check_header(name, value).map_err(|e| format!("/defaults/headers/{name}: {e}"))?;
        headers.push((name.clone(), value.clone()));
    }
    for (name, value) in &overrides.headers {
        check_header(name, value).map_err(|e| format!("--header `{name}`: {e}"))?;
        headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        headers.push((name.clone(), value.clone()));
    }
    let prompts = match &profile.prompts {
        Some(list) if list.is_empty() => return Err("/prompts: empty".into()),
        Some(list) => list.clone(),
        None => DEFAULT_PROMPTS.iter().map(|s| s.to_string()).collect(),
    };
    if cpus.is_empty() {
        return Err("no CPUs selected for the generator".into());
    }
    let plan = Plan {
        target,
        protocol,
        model: overrides
            .model
            .clone()
            .or_else(|| d.model.clone())
            .unwrap_or_else(|| "gpt-4o-mini".into()),
        system: d.system.clone(),
        max_tokens: max_tokens as u32,
        stream: d.stream.unwrap_or(false),
        headers,
        prompts,
        stages,
        warmup,
        timeout,
        connect_timeout,
        cpus,
        seed: overrides.seed.or(profile.seed).unwrap_or(0x5eed),
    };
    if plan.request_head_prefix().len() + 64 > limits::REQUEST_BYTES_MAX {
        return Err("/defaults/headers: request head too large".into());
    }
    // Generous slack for the JSON around the prompt (model, roles, escapes).
    let slack =
        plan.request_head_prefix().len() + plan.system.as_ref().map_or(0, |s| 2 * s.len()) + 1024;
    if let Some(i) = plan
        .prompts
        .iter()
        .position(|p| 2 * p.len() + slack > limits::REQUEST_BYTES_MAX)
    {
        return Err(format!(
            "/prompts/{i}: too long (requests are limited to {} bytes)",
            limits::REQUEST_BYTES_MAX
        ));
    }
    Ok(plan)
}

fn stage_list(list: &[config::StageEntry]) -> Result<Vec<Stage>, String> {
    let mut stages = Vec::with_capacity(list.len());
    for (i, entry) in list.iter().enumerate() {
        let duration = stage::parse_duration(&entry.duration)
            .map_err(|e| format!("/stages/{i}/duration: {e}"))?;
        let stage = stage::closed_stage(entry.concurrency, duration)
            .map_err(|e| format!("/stages/{i}: {e}"))?;
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
        assert_eq!(plan.model, "p/m");
        assert_eq!(
            plan.headers,
            vec![("authorization".to_string(), "Bearer B".to_string())]
        );
        let head = String::from_utf8(plan.request_head_prefix()).unwrap();
        assert!(head.starts_with("POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:1\r\n"));
        assert!(head.contains("authorization: Bearer B\r\n"));
        assert!(!head.contains("Bearer A"));

        let over = Overrides {
            stages: Some("2:3s".into()),
            ..Default::default()
        };
        let plan = build(&p, &over, vec![0]).unwrap();
        assert_eq!(plan.stages.len(), 1);
        assert_eq!(plan.users_max(), 2);
    }

    #[test]
    fn plan_errors_name_the_field() {
        let cases = [
            (r#"{"stages":"1:1s"}"#, "/defaults/target"),
            (r#"{"defaults":{"target":"http://127.0.0.1:1"}}"#, "/stages"),
            (
                r#"{"defaults":{"target":"http://127.0.0.1:1","protocol":"x"},"stages":"1:1s"}"#,
                "/defaults/protocol",
            ),
            (
                r#"{"defaults":{"target":"http://127.0.0.1:1"},"stages":[{"concurrency":0,"duration":"1s"}]}"#,
                "/stages/0",
            ),
            (
                r#"{"defaults":{"target":"http://127.0.0.1:1"},"stages":[{"concurrency":1,"duration":"1x"}]}"#,
                "/stages/0/duration",
            ),
            (
                r#"{"defaults":{"target":"http://127.0.0.1:1"},"stages":"1:5s","warmup":"5s"}"#,
                "/warmup",
            ),
            (
                r#"{"defaults":{"target":"http://127.0.0.1:1","max_tokens":0},"stages":"1:5s"}"#,
                "/defaults/max_tokens",
            ),
            (
                r#"{"defaults":{"target":"http://127.0.0.1:1","timeout":"1ms"},"stages":"1:5s"}"#,
                "/defaults/timeout",
            ),
            (
                r#"{"defaults":{"target":"http://127.0.0.1:1"},"stages":"1:5s","prompts":[]}"#,
                "/prompts",
            ),
        ];
        for (text, pointer) in cases {
            let err = build(&profile(text), &Overrides::default(), vec![0]).unwrap_err();
            assert!(err.starts_with(pointer), "{text}: {err}");
        }
    }
}
