//! Open-loop arrival schedules: when each arrival is due, and which
//! scenario it starts. Pure functions of the seed, so a schedule can be
//! tested without a clock and reproduced run after run.
//!
//! A stage's rate is split evenly over the shards. With constant spacing
//! the arrivals of the whole stage are `1/rate` apart and shard i takes
//! every `count`-th one starting with the i-th, so the merged stream is
//! evenly spaced. With Poisson arrivals each shard runs an independent
//! Poisson process of `rate/count`; their superposition is a Poisson
//! process of `rate`.

use crate::rng::Rng;
use std::time::Duration;

/// One shard's arrival times, as offsets from the stage start.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// Offset of the next arrival, seconds.
    next: f64,
    /// Mean gap between this shard's arrivals, seconds.
    gap: f64,
    poisson: bool,
    rng: Rng,
}

impl Schedule {
    /// The schedule of shard `index` of `count` for a stage of `rate`
    /// arrivals per second.
    pub fn new(rate: f64, poisson: bool, index: usize, count: usize, seed: u64) -> Self {
        let gap = count as f64 / rate;
        let mut schedule = Schedule {
            next: 0.0,
            gap,
            poisson,
            rng: Rng::new(seed ^ (index as u64 + 1).wrapping_mul(0xD6E8_FEB8_6659_FD93)),
        };
        schedule.next = if poisson {
            schedule.exponential()
        } else {
            index as f64 / rate
        };
        schedule
    }

    fn exponential(&mut self) -> f64 {
        // 53 random bits as a uniform in (0, 1]; -ln(u) is exponential(1).
        let u = ((self.rng.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        -u.ln() * self.gap
    }

    /// The next arrival's offset, without consuming it.
    pub fn peek(&self) -> Duration {
        Duration::from_secs_f64(self.next)
    }

    /// Consumes every arrival due before `end` and returns how many there
    /// were: the ones a stage never got to send. Arithmetic rather than one
    /// step per arrival, so a pacer far behind at 10 million arrivals a
    /// second does not spend seconds counting. Constant spacing counts
    /// exactly; a Poisson process counts its next arrival plus the expected
    /// number in the rest of the interval (arrivals that were never drawn
    /// have no exact count), and restarts at `end` (it is memoryless).
    pub fn skip_until(&mut self, end: Duration) -> u64 {
        let end = end.as_secs_f64();
        if self.next >= end {
            return 0;
        }
        let span = end - self.next;
        if self.poisson {
            self.next = end + self.exponential();
            1 + (span / self.gap).round() as u64
        } else {
            let n = (span / self.gap).ceil().max(1.0);
            self.next += n * self.gap;
            n as u64
        }
    }

    /// Consumes the next arrival.
    pub fn advance(&mut self) {
        self.next += if self.poisson {
            self.exponential()
        } else {
            self.gap
        };
    }
}

/// Smooth weighted round-robin: picks scenarios in proportion to their
/// weights, spread out evenly and deterministically (55/30/15 gives exactly
/// 55, 30 and 15 of every 100 arrivals).
#[derive(Debug, Clone)]
pub struct Blend {
    weights: Vec<f64>,
    current: Vec<f64>,
    total: f64,
}

impl Blend {
    /// A blend over `weights` (at least one positive).
    pub fn new(weights: &[f64]) -> Self {
        Blend {
            weights: weights.to_vec(),
            current: vec![0.0; weights.len()],
            total: weights.iter().sum(),
        }
    }

    /// How many scenarios it picks among.
    pub fn scenarios(&self) -> usize {
        self.weights.len()
    }

    /// The scenario of the next arrival.
    pub fn pick(&mut self) -> usize {
        let mut best = 0;
        for i in 0..self.weights.len() {
            self.current[i] += self.weights[i];
            if self.current[i] > self.current[best] {
                best = i;
            }
        }
        self.current[best] -= self.total;
        best
    }

    /// Splits `n` arrivals over the scenarios: the next `n` picks exactly
    /// when there are few, otherwise in proportion to the weights (the
    /// rounding remainder to the heaviest), without a step per arrival.
    pub fn split(&mut self, n: u64) -> Vec<u64> {
        let mut counts = vec![0u64; self.weights.len()];
        if n <= 4096 {
            for _ in 0..n {
                counts[self.pick()] += 1;
            }
            return counts;
        }
        for (count, w) in counts.iter_mut().zip(&self.weights) {
            *count = (n as f64 * w / self.total).floor() as u64;
        }
        let heaviest = (0..self.weights.len())
            .max_by(|&a, &b| self.weights[a].total_cmp(&self.weights[b]))
            .unwrap_or(0);
        counts[heaviest] += n - counts.iter().sum::<u64>();
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offsets(mut s: Schedule, n: usize) -> Vec<f64> {
        (0..n)
            .map(|_| {
                let t = s.peek().as_secs_f64();
                s.advance();
                t
            })
            .collect()
    }

    #[test]
    fn constant_spacing_interleaves_shards() {
        let a = offsets(Schedule::new(1000.0, false, 0, 2, 1), 3);
        let b = offsets(Schedule::new(1000.0, false, 1, 2, 1), 3);
        let close = |x: f64, y: f64| (x - y).abs() < 1e-9;
        assert!(close(a[0], 0.0) && close(a[1], 0.002) && close(a[2], 0.004));
        assert!(close(b[0], 0.001) && close(b[1], 0.003) && close(b[2], 0.005));
    }

    #[test]
    fn poisson_is_reproducible_and_has_the_rate() {
        let a = offsets(Schedule::new(5000.0, true, 0, 1, 42), 50_000);
        let b = offsets(Schedule::new(5000.0, true, 0, 1, 42), 50_000);
        assert_eq!(a, b);
        let c = offsets(Schedule::new(5000.0, true, 0, 1, 43), 10);
        assert_ne!(a[..10], c[..]);
        // 50,000 arrivals at 5,000/s take about 10 s (±3 % is > 6 sigma).
        let span = a[a.len() - 1];
        assert!((9.7..10.3).contains(&span), "{span}");
        // Gaps are exponential: their coefficient of variation is ~1.
        let gaps: Vec<f64> = a.windows(2).map(|w| w[1] - w[0]).collect();
        let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
        let var = gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / gaps.len() as f64;
        let cv = var.sqrt() / mean;
        assert!((0.95..1.05).contains(&cv), "{cv}");
        assert!(gaps.iter().all(|&g| g >= 0.0));
    }

    #[test]
    fn skipping_counts_the_arrivals_left_without_stepping() {
        // 1,000/s from 0: arrivals at 0, 1, 2, ... ms; 250 before 250 ms.
        let mut s = Schedule::new(1000.0, false, 0, 1, 1);
        assert_eq!(s.skip_until(Duration::from_millis(250)), 250);
        assert!((s.peek().as_secs_f64() - 0.250).abs() < 1e-9);
        assert_eq!(s.skip_until(Duration::from_millis(250)), 0);
        // Shard 1 of 2 at 1,000/s: 1, 3, 5, ... ms; 5 before 10 ms.
        let mut s = Schedule::new(1000.0, false, 1, 2, 1);
        assert_eq!(s.skip_until(Duration::from_millis(10)), 5);
        // 10 million a second for an hour is counted at once.
        let mut s = Schedule::new(10_000_000.0, false, 0, 1, 1);
        assert_eq!(s.skip_until(Duration::from_secs(3600)), 36_000_000_000);
        // Poisson: about the expected count, then arrivals after the end.
        let mut s = Schedule::new(5000.0, true, 0, 1, 7);
        let n = s.skip_until(Duration::from_secs(2));
        assert!((9_990..=10_010).contains(&n), "{n}");
        assert!(s.peek() >= Duration::from_secs(2));
    }

    #[test]
    fn a_split_follows_the_blend() {
        let mut blend = Blend::new(&[55.0, 30.0, 15.0]);
        assert_eq!(blend.split(100), vec![55, 30, 15]);
        let mut blend = Blend::new(&[2.0, 1.0]);
        assert_eq!(blend.split(10_000_001), vec![6_666_668, 3_333_333]);
    }

    #[test]
    fn blend_follows_weights_exactly() {
        let mut blend = Blend::new(&[55.0, 30.0, 15.0]);
        let mut counts = [0; 3];
        for _ in 0..100 {
            counts[blend.pick()] += 1;
        }
        assert_eq!(counts, [55, 30, 15]);
        let mut blend = Blend::new(&[0.0, 1.0]);
        assert!((0..10).all(|_| blend.pick() == 1));
    }
}
