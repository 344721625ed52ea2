//! When the mock answers: delays given as a fixed value (`200ms`), a
//! uniform range (`100ms..300ms`) or a log-normal distribution set by its
//! median and 99th percentile (`p50=200ms,p99=800ms`, the long right tail
//! real models show), drawn per response (latency, time to first token)
//! and per token (inter-token delay) from the shard's seeded generator.

use super::faults::Fault;
use super::request::Knobs;
use super::MockConfig;
use crate::rng::Rng;
use crate::stage::parse_duration;
use std::time::Duration;

/// A delay, fixed or drawn from a distribution.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Delay {
    /// Always this.
    Fixed(Duration),
    /// Uniform between the two (inclusive of the first).
    Uniform(Duration, Duration),
    /// Log-normal with this median and 99th percentile.
    LogNormal {
        /// Median.
        p50: Duration,
        /// 99th percentile (at least the median).
        p99: Duration,
    },
}

impl Default for Delay {
    fn default() -> Self {
        Delay::Fixed(Duration::ZERO)
    }
}

/// The standard normal's 99th percentile.
const Z99: f64 = 2.326_347_874;

impl Delay {
    /// Parses `200ms`, `100ms..300ms` or `p50=200ms,p99=800ms`.
    pub fn parse(text: &str) -> Result<Delay, String> {
        let text = text.trim();
        if let Some((low, high)) = text.split_once("..") {
            let (low, high) = (parse_duration(low.trim())?, parse_duration(high.trim())?);
            if high < low {
                return Err(format!("`{text}`: the range ends before it starts"));
            }
            return Ok(Delay::Uniform(low, high));
        }
        if text.starts_with("p50=") {
            let (p50, p99) = text
                .split_once(',')
                .and_then(|(a, b)| Some((a.strip_prefix("p50=")?, b.trim().strip_prefix("p99=")?)))
                .ok_or_else(|| format!("`{text}`: expected p50=DURATION,p99=DURATION"))?;
            let (p50, p99) = (parse_duration(p50)?, parse_duration(p99)?);
            if p50.is_zero() || p99 < p50 {
                return Err(format!("`{text}`: needs 0 < p50 <= p99"));
            }
            return Ok(Delay::LogNormal { p50, p99 });
        }
        parse_duration(text).map(Delay::Fixed)
    }

    /// Whether it is always zero.
    pub fn is_zero(&self) -> bool {
        *self == Delay::Fixed(Duration::ZERO)
    }

    /// One delay.
    pub fn draw(&self, rng: &mut Rng) -> Duration {
        match *self {
            Delay::Fixed(d) => d,
            Delay::Uniform(low, high) => low + (high - low).mul_f64(rng.unit()),
            Delay::LogNormal { p50, p99 } => {
                let sigma = (p99.as_secs_f64() / p50.as_secs_f64()).ln() / Z99;
                // Bounded, so one draw far in the tail cannot hold a
                // connection for hours.
                let factor = (sigma * rng.normal()).exp().min(1_000.0);
                p50.mul_f64(factor)
            }
        }
    }
}

impl std::fmt::Display for Delay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        match *self {
            Delay::Fixed(d) => write!(f, "{}ms", ms(d)),
            Delay::Uniform(a, b) => write!(f, "{}ms..{}ms", ms(a), ms(b)),
            Delay::LogNormal { p50, p99 } => write!(f, "p50={}ms,p99={}ms", ms(p50), ms(p99)),
        }
    }
}

/// How one response is paced and broken: the server's settings, with
/// the per-request `x-mock-*` headers (fixed values) over them.
#[derive(Debug, Clone)]
pub(super) struct Timing {
    /// Before a non-streamed response.
    pub(super) latency: Duration,
    /// Before the first streamed token.
    pub(super) ttft: Duration,
    /// Between streamed tokens, drawn per token.
    itl: Delay,
    /// What goes wrong with it.
    pub(super) fault: Fault,
    /// Draws this response's inter-token delays.
    rng: Rng,
}

impl Timing {
    pub(super) fn new(knobs: &Knobs, config: &MockConfig, fault: Fault, rng: &mut Rng) -> Self {
        let pick = |knob: Option<u64>, delay: Delay, rng: &mut Rng| {
            knob.map_or_else(|| delay.draw(rng), Duration::from_millis)
        };
        Timing {
            latency: pick(knobs.latency_ms, config.latency, rng),
            ttft: pick(knobs.ttft_ms, config.ttft, rng),
            itl: knobs
                .itl_ms
                .map_or(config.itl, |ms| Delay::Fixed(Duration::from_millis(ms))),
            fault,
            rng: Rng::new(rng.next_u64()),
        }
    }

    /// Whether tokens follow each other without delay (so they can be
    /// written in one go).
    pub(super) fn back_to_back(&self) -> bool {
        self.itl.is_zero()
    }

    /// The delay before the next token.
    pub(super) fn next_gap(&mut self) -> Duration {
        self.itl.draw(&mut self.rng)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_parse_and_print() {
        let ms = Duration::from_millis;
        assert_eq!(Delay::parse("200ms").unwrap(), Delay::Fixed(ms(200)));
        assert_eq!(
            Delay::parse("100ms..300ms").unwrap(),
            Delay::Uniform(ms(100), ms(300))
        );
        let lognormal = Delay::parse("p50=200ms,p99=800ms").unwrap();
        assert_eq!(
            lognormal,
            Delay::LogNormal {
                p50: ms(200),
                p99: ms(800)
            }
        );
        assert_eq!(lognormal.to_string(), "p50=200ms,p99=800ms");
        assert!(Delay::parse("300ms..100ms")
            .unwrap_err()
            .contains("ends before"));
        assert!(Delay::parse("p50=200ms")
            .unwrap_err()
            .contains("expected p50="));
        assert!(Delay::parse("p50=800ms,p99=200ms")
            .unwrap_err()
            .contains("p50 <= p99"));
        assert!(Delay::parse("soon").is_err());
        assert!(Delay::default().is_zero());
    }

    #[test]
    fn draws_follow_the_distribution() {
        let mut rng = Rng::new(11);
        let uniform = Delay::parse("100ms..300ms").unwrap();
        let draws: Vec<f64> = (0..10_000)
            .map(|_| uniform.draw(&mut rng).as_secs_f64())
            .collect();
        assert!(draws.iter().all(|&d| (0.1..=0.3).contains(&d)));
        let mean = draws.iter().sum::<f64>() / draws.len() as f64;
        assert!((0.195..0.205).contains(&mean), "{mean}");
        // The log-normal's median and 99th percentile come back.
        let lognormal = Delay::parse("p50=200ms,p99=800ms").unwrap();
        let mut draws: Vec<f64> = (0..100_000)
            .map(|_| lognormal.draw(&mut rng).as_secs_f64())
            .collect();
        draws.sort_by(f64::total_cmp);
        let (p50, p99) = (draws[50_000], draws[99_000]);
        assert!((0.19..0.21).contains(&p50), "p50 {p50}");
        assert!((0.74..0.86).contains(&p99), "p99 {p99}");
    }
}
