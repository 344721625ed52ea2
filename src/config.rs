//! The profile file as written: raw serde structs, parsed from a `&str`
//! with no I/O and no validation beyond JSON shape.
//!
//! `plan` turns a `Profile` into a validated `Plan`; nothing else reads
//! these structs. Field names follow the seed tool's schema so its profiles
//! load here (`defaults`, `stages[].concurrency`, `stages[].duration`,
//! `warmup`, `timeout`); unknown fields are rejected so a typo is never
//! silently ignored.

use serde::Deserialize;
use std::collections::BTreeMap;

/// A whole profile.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Request settings shared by every scenario.
    #[serde(default)]
    pub defaults: Defaults,
    /// Stages, as a list of objects or as one `1:10s,100:60s` string.
    #[serde(default)]
    pub stages: Option<Stages>,
    /// Warm-up at the start of each stage, excluded from statistics.
    #[serde(default)]
    pub warmup: Option<String>,
    /// Whole-request timeout (overridden by `defaults.timeout`).
    #[serde(default)]
    pub timeout: Option<String>,
    /// Connect timeout.
    #[serde(default)]
    pub connect_timeout: Option<String>,
    /// Seed for every random choice, so runs are reproducible.
    #[serde(default)]
    pub seed: Option<u64>,
    /// Prompts the implicit scenario picks from, one per request.
    #[serde(default)]
    pub prompts: Option<Vec<String>>,
}

/// Request settings.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    /// Wire format (`openai-chat`).
    pub protocol: Option<String>,
    /// Target URL; a bare origin gets the protocol's default path.
    pub target: Option<String>,
    /// Model name.
    pub model: Option<String>,
    /// Extra request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// System prompt.
    pub system: Option<String>,
    /// Output token cap.
    pub max_tokens: Option<u64>,
    /// Ask for an SSE stream.
    pub stream: Option<bool>,
    /// Whole-request timeout.
    pub timeout: Option<String>,
}

/// Stages in either form.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Stages {
    /// `"1:10s,100:60s"`.
    Text(String),
    /// `[{"concurrency": 1, "duration": "10s"}]`.
    List(Vec<StageEntry>),
}

/// One stage as an object.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageEntry {
    /// Virtual users.
    #[serde(alias = "users")]
    pub concurrency: u64,
    /// How long, e.g. `"60s"`.
    pub duration: String,
}

/// Parses profile text. The error names the line and column.
pub fn parse(text: &str) -> Result<Profile, String> {
    serde_json::from_str(text).map_err(|e| {
        let message = e.to_string();
        // serde_json appends " at line L column C"; keep our own form.
        let message = message
            .split(" at line ")
            .next()
            .unwrap_or(&message)
            .to_string();
        format!("line {} column {}: {message}", e.line(), e.column())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_seed_shape() {
        let p = parse(
            r#"{"defaults":{"protocol":"openai-chat","target":"http://localhost:8080","model":"m",
                "headers":{"Authorization":"Bearer x"},"max_tokens":64,"stream":true,"system":"s"},
                "stages":[{"concurrency":2,"duration":"5s"}],"warmup":"1s","timeout":"30s"}"#,
        )
        .unwrap();
        assert_eq!(p.defaults.model.as_deref(), Some("m"));
        assert!(matches!(p.stages, Some(Stages::List(ref l)) if l[0].concurrency == 2));
        let p = parse(r#"{"stages":"1:10s,5:20s"}"#).unwrap();
        assert!(matches!(p.stages, Some(Stages::Text(_))));
    }

    #[test]
    fn unknown_fields_and_bad_json_name_the_place() {
        let err = parse(r#"{"defaults":{"modle":"x"}}"#).unwrap_err();
        assert!(err.contains("modle") && err.contains("line 1"), "{err}");
        let err = parse("{\n\"stages\": [1,2]\n}").unwrap_err();
        assert!(err.contains("line"), "{err}");
        let err = parse("{").unwrap_err();
        assert!(err.contains("EOF"), "{err}");
    }
}
