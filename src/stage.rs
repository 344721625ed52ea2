//! Stage strings: `1:10s,100:60s` (closed loop), `@20000:60s` or
//! `@~40k:60s` (open loop, constant or Poisson arrivals), and durations like
//! `500ms`, `10s`, `2m`.
//!
//! A stage is one load level held for a duration. This module only parses
//! and validates; it does not know how a stage is run.

use crate::limits;
use std::time::Duration;

/// What drives a stage's load.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Load {
    /// Closed loop: this many virtual users, each sending its next request
    /// when the previous one has finished.
    Closed {
        /// Virtual users across all shards.
        users: u64,
    },
    /// Open loop: conversations start at this rate whatever the server
    /// does.
    Open {
        /// Arrivals per second across all shards.
        rate: f64,
        /// Exponential gaps (a Poisson process) instead of even spacing.
        poisson: bool,
    },
}

/// One stage of a run.
#[derive(Debug, Clone, Copy, PartialEq)]
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
            Load::Open { rate, poisson } => format!(
                "@{}{}:{}",
                if poisson { "~" } else { "" },
                format_rate(rate),
                format_duration(self.duration)
            ),
        }
    }

    /// Whether arrivals are open loop.
    pub fn is_open(&self) -> bool {
        matches!(self.load, Load::Open { .. })
    }
}

/// A rate as written back: whole numbers plainly, others with up to three
/// decimals.
pub fn format_rate(rate: f64) -> String {
    if rate.fract() == 0.0 {
        format!("{rate:.0}")
    } else {
        let text = format!("{rate:.3}");
        text.trim_end_matches('0').trim_end_matches('.').to_string()
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

/// Parses one stage, `USERS:DURATION`, `@RATE:DURATION` or
/// `@~RATE:DURATION`.
pub fn parse_stage(text: &str) -> Result<Stage, String> {
    if let Some(open) = text.strip_prefix('@') {
        let (poisson, open) = match open.strip_prefix('~') {
            Some(rest) => (true, rest),
            None => (false, open),
        };
        let (rate, duration) = open
            .split_once(':')
            .ok_or("expected @RATE:DURATION, e.g. @20000:60s")?;
        let rate = parse_rate(rate.trim())?;
        let duration = parse_duration(duration.trim())?;
        return open_stage(rate, poisson, duration);
    }
    let (users, duration) = text.split_once(':').ok_or(
        "expected USERS:DURATION (closed loop, e.g. 100:60s), @RATE:DURATION (open loop, e.g. @20000:60s) or @~RATE:DURATION (Poisson arrivals)",
    )?;
    let users: u64 = users.trim().parse().map_err(|_| {
        format!("`{users}` is not a whole number of users (open-loop stages are @RATE:DURATION or @~RATE:DURATION)")
    })?;
    let duration = parse_duration(duration.trim())?;
    closed_stage(users, duration)
}

/// Parses a rate: `20000`, `1.5`, `40k`, `1.2m` (per second).
pub fn parse_rate(text: &str) -> Result<f64, String> {
    let lower = text.to_ascii_lowercase();
    let (number, scale) = if let Some(n) = lower.strip_suffix('k') {
        (n, 1e3)
    } else if let Some(n) = lower.strip_suffix('m') {
        (n, 1e6)
    } else {
        (lower.as_str(), 1.0)
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a rate (requests per second, e.g. 20000 or 40k)"))?;
    let rate = value * scale;
    if !rate.is_finite() || rate <= 0.0 {
        return Err(format!("rate `{text}` must be greater than zero"));
    }
    Ok(rate)
}

/// Builds a validated open-loop stage.
pub fn open_stage(rate: f64, poisson: bool, duration: Duration) -> Result<Stage, String> {
    if !(rate > 0.0 && rate <= limits::RATE_MAX) {
        return Err(format!(
            "rate must be greater than 0 and at most {}",
            format_rate(limits::RATE_MAX)
        ));
    }
    if duration.is_zero() {
        return Err("duration must be greater than zero".into());
    }
    if duration > limits::STAGE_DURATION_MAX {
        return Err("duration must be at most 7 days".into());
    }
    Ok(Stage {
        load: Load::Open { rate, poisson },
        duration,
    })
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
    fn parses_open_and_mixed_stages() {
        let stages = parse_stages("10:30s,@20000:60s,@~40k:1m,@1.5:10s").unwrap();
        assert_eq!(stages[0].load, Load::Closed { users: 10 });
        assert_eq!(
            stages[1].load,
            Load::Open {
                rate: 20000.0,
                poisson: false
            }
        );
        assert_eq!(
            stages[2].load,
            Load::Open {
                rate: 40000.0,
                poisson: true
            }
        );
        assert_eq!(stages[2].duration, Duration::from_secs(60));
        assert!(stages[1].is_open() && !stages[0].is_open());
        let labels: Vec<String> = stages.iter().map(Stage::label).collect();
        assert_eq!(labels, ["10:30s", "@20000:1m", "@~40000:1m", "@1.5:10s"]);
        for label in &labels {
            assert_eq!(parse_stage(label).unwrap().label(), *label);
        }
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
        // Every form is named, the open-loop ones too.
        assert!(
            err.contains("@RATE:DURATION") && err.contains("@~RATE:DURATION"),
            "{err}"
        );
        let err = parse_stages("fast:10s").unwrap_err();
        assert!(err.contains("@RATE:DURATION"), "{err}");
        let err = parse_stages("10:0s").unwrap_err();
        assert!(err.contains("greater than zero"), "{err}");
        let err = parse_stages("@0:10s").unwrap_err();
        assert!(err.contains("greater than zero"), "{err}");
        let err = parse_stages("@fast:10s").unwrap_err();
        assert!(err.contains("not a rate"), "{err}");
        let err = parse_stages("@100").unwrap_err();
        assert!(err.contains("@RATE:DURATION"), "{err}");
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
