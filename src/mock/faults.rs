//! The mock's fault catalogue: what it can do wrong to one request, asked
//! for per request (`x-mock-fault: NAME`) or drawn at seeded rates per
//! request (`loadtest mock --faults reset=0.01,status_429=0.02`). Each
//! fault lands in one error class of the generator, so a mixed-fault
//! stage checks that every one is counted, and counted once.

use crate::rng::Rng;

/// One way to answer a request wrongly.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Answer properly.
    #[default]
    None,
    /// Reset the connection (RST) once the request is read, before any
    /// answer: `conn_reset`, or, on a reused connection, the stale case
    /// (retried once, or `eof` with `--no-retry`).
    Reset,
    /// Stop a stream halfway (a non-streamed body at half its length) and
    /// close the connection: `truncated_stream` (non-streamed: `eof`).
    CloseMidStream,
    /// Answer with bytes that are not HTTP, then close: `bad_response`.
    Garbage,
    /// Send the response head one byte every
    /// `limits::MOCK_SLOW_HEAD_BYTE_GAP` (a slowloris answer): `timeout`
    /// with any request timeout under a few seconds.
    SlowHead,
    /// Never answer; hold the connection until the client closes it:
    /// `timeout`.
    Stall,
    /// 500 with an error body in the route's API shape: `http_5xx`.
    Status500,
    /// 429 with `Retry-After: 1`: `http_429`.
    Status429,
    /// A stream's error event halfway, then the stream ends normally:
    /// `stream_error_event` (non-streamed: answered properly).
    ErrorEvent,
}

impl Fault {
    /// Every fault but `None`, in catalogue order.
    pub const ALL: [Fault; 8] = [
        Fault::Reset,
        Fault::CloseMidStream,
        Fault::Garbage,
        Fault::SlowHead,
        Fault::Stall,
        Fault::Status500,
        Fault::Status429,
        Fault::ErrorEvent,
    ];

    /// Its name in `--faults` and `x-mock-fault`.
    pub fn name(self) -> &'static str {
        match self {
            Fault::None => "none",
            Fault::Reset => "reset",
            Fault::CloseMidStream => "close_mid_stream",
            Fault::Garbage => "garbage",
            Fault::SlowHead => "slow_head",
            Fault::Stall => "stall",
            Fault::Status500 => "status_500",
            Fault::Status429 => "status_429",
            Fault::ErrorEvent => "error_event",
        }
    }

    /// The fault with this name; `truncate` and `error-event` are the
    /// older header spellings.
    pub fn named(name: &str) -> Option<Fault> {
        match name {
            "none" => Some(Fault::None),
            "truncate" => Some(Fault::CloseMidStream),
            "error-event" => Some(Fault::ErrorEvent),
            _ => Fault::ALL.into_iter().find(|f| f.name() == name),
        }
    }

    /// Its index in `Fault::ALL` (for counting); `None` has none.
    pub fn index(self) -> Option<usize> {
        Fault::ALL.iter().position(|&f| f == self)
    }
}

/// Per-request probabilities of each fault (at most one per request).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FaultRates {
    rates: [f64; Fault::ALL.len()],
}

impl FaultRates {
    /// Parses `reset=0.01,status_429=0.02`: names from the catalogue,
    /// rates in [0, 1] adding up to at most 1.
    pub fn parse(text: &str) -> Result<FaultRates, String> {
        let mut out = FaultRates::default();
        for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (name, rate) = item
                .split_once('=')
                .ok_or_else(|| format!("`{item}`: expected NAME=RATE"))?;
            let fault = Fault::named(name.trim())
                .and_then(Fault::index)
                .ok_or_else(|| format!("`{name}`: no such fault (known: {})", names()))?;
            let rate: f64 = rate
                .trim()
                .parse()
                .ok()
                .filter(|r: &f64| (0.0..=1.0).contains(r))
                .ok_or_else(|| format!("`{item}`: the rate must be a number from 0 to 1"))?;
            out.rates[fault] = rate;
        }
        let total: f64 = out.rates.iter().sum();
        if total > 1.0 + 1e-9 {
            return Err(format!("the rates add up to {total}, more than 1"));
        }
        Ok(out)
    }

    /// Whether any rate is set.
    pub fn any(&self) -> bool {
        self.rates.iter().any(|&r| r > 0.0)
    }

    /// The fault for one request, from one uniform draw in `[0, 1)`.
    pub fn pick(&self, draw: f64) -> Fault {
        let mut below = 0.0;
        for (fault, rate) in Fault::ALL.iter().zip(self.rates) {
            below += rate;
            if draw < below {
                return *fault;
            }
        }
        Fault::None
    }

    /// Draws the fault for one request with `rng` (no draw when no rate
    /// is set, so a mock without faults uses no randomness).
    pub fn draw(&self, rng: &mut Rng) -> Fault {
        if !self.any() {
            return Fault::None;
        }
        self.pick(rng.unit())
    }
}

/// The catalogue's names, comma-separated.
pub fn names() -> String {
    Fault::ALL.map(Fault::name).join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_and_pick_in_catalogue_order() {
        let rates = FaultRates::parse("reset=0.1, status_429=0.2,garbage=0").unwrap();
        assert_eq!(rates.pick(0.05), Fault::Reset);
        assert_eq!(rates.pick(0.15), Fault::Status429);
        assert_eq!(rates.pick(0.29), Fault::Status429);
        assert_eq!(rates.pick(0.31), Fault::None);
        assert!(!FaultRates::default().any());
        assert_eq!(FaultRates::parse("").unwrap(), FaultRates::default());
        // Seeded draws reproduce, and follow the rates.
        let mut a = Rng::new(3);
        let picks: Vec<Fault> = (0..10_000).map(|_| rates.draw(&mut a)).collect();
        let mut b = Rng::new(3);
        assert!(picks.iter().all(|&f| f == rates.draw(&mut b)));
        let resets = picks.iter().filter(|&&f| f == Fault::Reset).count();
        assert!((850..1150).contains(&resets), "{resets}");
    }

    #[test]
    fn bad_rates_say_what_is_wrong() {
        let err = |t: &str| FaultRates::parse(t).unwrap_err();
        assert!(err("rst=0.1").contains("no such fault (known: reset, "));
        assert!(err("reset").contains("expected NAME=RATE"));
        assert!(err("reset=2").contains("from 0 to 1"));
        assert!(err("reset=x").contains("from 0 to 1"));
        assert!(err("reset=0.7,stall=0.7").contains("more than 1"));
    }

    #[test]
    fn names_round_trip() {
        for fault in Fault::ALL {
            assert_eq!(Fault::named(fault.name()), Some(fault));
        }
        assert_eq!(Fault::named("truncate"), Some(Fault::CloseMidStream));
        assert_eq!(Fault::named("error-event"), Some(Fault::ErrorEvent));
        assert_eq!(Fault::named("bogus"), None);
    }
}
