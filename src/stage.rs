//! Stage strings: `1:10s,100:60s` and durations like `500ms`, `10s`, `2m`.
//!
//! A stage is one load level held for a duration. This module only parses
//! and validates; it does not know how a stage is run. Open-loop stages
//! (`@RATE:DURATION`) are recognised so the error can say they are not
//! supported yet, rather than "bad number".

use crate::limits;
use std::time::Duration;

/// What drives a stage's load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Load {
    /// Closed loop: this many virtual users, each sending its next request
    /// when the previous one has finished.
    Closed {
        /// Virtual users across all shards.
        users: u64,
    },
}

/// One stage of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stage {
    /// What drives it.
    pub load: Load,
    /// How long new requests are started; in-flight ones then finish.
    pub duration: Duration,
}

impl Stage {
    /// A short label for tables, e.g. `100 users` .
    pub fn label(&self) -> String {
        match self.load {
            Load::Closed { users } => format!("{users}:{}", format_duration(self.duration)),
        }
    }
}

/// Parses a comma-separated list of stages.
pub fn parse_stages(text: &str) -> Result<Vec<Stage>, String> {
    let mut stages = Vec::new();
    for (index, part) in text.split(',').enumerate() {
        let part = part.trim();
        if part.is_empty() {
            return Err(format!("stage {}: empty (stray comma?)", index + 1));
        }
        let stage = parse_stage(part).map_err(|e| format!("stage {} `{part}`: {e}", index + 1))?;
        stages.push(stage);
        if stages.len() > limits::STAGES_MAX {
            return Err(format!("more than {} stages", limits::STAGES_MAX));
        }
    }
    Ok(stages)
}

/// Parses one stage, `USERS:DURATION`.
pub fn parse_stage(text: &str) -> Result<Stage, String> {
    if text.starts_with('@') {
        return Err("open-loop stages (@RATE:DURATION) are not supported yet".into());
    }
    let (users, duration) = text
        .split_once(':')
        .ok_or("expected USERS:DURATION, e.g. 100:60s")?;
    let users: u64 = users
        .trim()
        .parse()
        .map_err(|_| format!("`{users}` is not a whole number of users"))?;
    let duration = parse_duration(duration.trim())?;
    closed_stage(users, duration)
}

/// Builds a validated closed-loop stage.
pub fn closed_stage(users: u64, duration: Duration) -> Result<Stage, String> {
    if users == 0 {
        return Err("users must be at least 1".into());
    }
    if users > limits::USERS_MAX {
        return Err(format!("users must be at most {}", limits::USERS_MAX));
    }
    if duration.is_zero() {
        return Err("duration must be greater than zero".into());
    }
    if duration > limits::STAGE_DURATION_MAX {
        return Err("duration must be at most 7 days".into());
    }
    Ok(Stage {
        load: Load::Closed { users },
        duration,
    })
}

/// Parses `250ms`, `10s`, `1.5s`, `2m`, `1h`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration (e.g. 500ms, 10s, 2m)"))?;
    let seconds_per_unit = match unit {
        "" | "s" => 1.0,
        "ms" => 0.001,
        "us" | "µs" => 0.000_001,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return Err(format!("`{unit}` is not a duration unit (ms, s, m, h)")),
    };
    let seconds = value * seconds_per_unit;
    if !seconds.is_finite() || seconds > limits::STAGE_DURATION_MAX.as_secs_f64() {
        return Err(format!("`{text}` is too long"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Formats a duration the way `parse_duration` reads it back.
pub fn format_duration(duration: Duration) -> String {
    let ms = duration.as_millis();
    if !ms.is_multiple_of(1000) {
        format!("{ms}ms")
    } else if ms.is_multiple_of(60_000) && ms >= 60_000 {
        format!("{}m", ms / 60_000)
    } else {
        format!("{}s", ms / 1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_closed_stages() {
        let stages = parse_stages("1:10s, 100:60s,5:2m").unwrap();
        assert_eq!(stages.len(), 3);
        assert_eq!(stages[0].load, Load::Closed { users: 1 });
        assert_eq!(stages[0].duration, Duration::from_secs(10));
        assert_eq!(stages[1].load, Load::Closed { users: 100 });
        assert_eq!(stages[2].duration, Duration::from_secs(120));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert!(parse_duration("10 parsecs").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("1e400s").is_err());
        assert!(parse_duration("9999999h").is_err());
    }

    #[test]
    fn rejects_bad_stages_with_the_reason() {
        let err = parse_stages("1:10s,,2:5s").unwrap_err();
        assert!(err.contains("stage 2"), "{err}");
        let err = parse_stages("0:10s").unwrap_err();
        assert!(err.contains("at least 1"), "{err}");
        let err = parse_stages("ten:10s").unwrap_err();
        assert!(err.contains("whole number"), "{err}");
        let err = parse_stages("10").unwrap_err();
        assert!(err.contains("USERS:DURATION"), "{err}");
        let err = parse_stages("10:0s").unwrap_err();
        assert!(err.contains("greater than zero"), "{err}");
        let err = parse_stages("@100:10s").unwrap_err();
        assert!(err.contains("open-loop"), "{err}");
        let err = parse_stages("-1:10s").unwrap_err();
        assert!(err.contains("whole number"), "{err}");
    }

    #[test]
    fn duration_round_trip() {
        for text in ["250ms", "10s", "2m", "1500ms"] {
            assert_eq!(format_duration(parse_duration(text).unwrap()), text);
        }
    }
}
