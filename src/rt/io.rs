//! Which reactor carries the executors' sockets: chosen once per process,
//! before the first executor starts.
//!
//! `--io uring|epoll` asks (`run` and `mock`); without it the environment
//! variable `LOADTEST_IO` does (the test suite runs on either this way),
//! and without that io_uring is used wherever `uring::probe` finds a ring
//! it can use. When it cannot, the run goes on over epoll and `Chosen::why`
//! says why, for the caller to print.

use super::uring;
use std::sync::OnceLock;

/// A reactor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Io {
    /// One io_uring per executor (`uring`).
    Uring,
    /// One epoll set per executor (`epoll`).
    Epoll,
}

impl Io {
    /// Parses `uring` or `epoll` (as `--io` and `LOADTEST_IO` take them).
    pub fn parse(text: &str) -> Result<Io, String> {
        match text {
            "uring" | "io_uring" => Ok(Io::Uring),
            "epoll" => Ok(Io::Epoll),
            other => Err(format!("unknown reactor '{other}': uring or epoll")),
        }
    }
}

/// The reactor this process runs on.
#[derive(Clone, Debug)]
pub struct Chosen {
    /// The reactor.
    pub io: Io,
    /// The ring's flags, when it is io_uring.
    pub flags: Option<uring::Flags>,
    /// Why io_uring was asked for (or is the default) but not used.
    pub why: Option<String>,
}

impl Chosen {
    /// Its name in the run header and the summary (`plan.reactor`).
    pub fn name(&self) -> &'static str {
        match self.io {
            Io::Uring => "io_uring",
            Io::Epoll => "epoll",
        }
    }
}

static CHOSEN: OnceLock<Chosen> = OnceLock::new();

/// Chooses the reactor for this process (the first call decides; later
/// ones get that choice). `asked` is `--io`; `None` defers to
/// `LOADTEST_IO`, then to what the kernel supports. An unknown
/// `LOADTEST_IO` is an error naming it.
pub fn choose(asked: Option<Io>) -> Result<&'static Chosen, String> {
    if let Some(chosen) = CHOSEN.get() {
        return Ok(chosen);
    }
    let asked = match asked {
        Some(io) => Some(io),
        None => match std::env::var("LOADTEST_IO") {
            Ok(text) if !text.is_empty() => {
                Some(Io::parse(&text).map_err(|e| format!("LOADTEST_IO: {e}"))?)
            }
            _ => None,
        },
    };
    let chosen = decide(asked, probe);
    Ok(CHOSEN.get_or_init(|| chosen))
}

/// The reactor chosen so far, choosing by default if nothing has (an
/// unknown `LOADTEST_IO` then means epoll, with the reason kept).
pub fn chosen() -> &'static Chosen {
    match choose(None) {
        Ok(chosen) => chosen,
        Err(why) => CHOSEN.get_or_init(|| Chosen {
            io: Io::Epoll,
            flags: None,
            why: Some(why),
        }),
    }
}

/// The probe, or a refusal when `LOADTEST_IO_SIMULATE_REFUSAL` is set (so
/// a test can see the fallback on a host that has io_uring).
fn probe() -> Result<uring::Flags, String> {
    if std::env::var_os("LOADTEST_IO_SIMULATE_REFUSAL").is_some() {
        return Err("io_uring_setup refused (simulated by LOADTEST_IO_SIMULATE_REFUSAL)".into());
    }
    uring::probe()
}

/// The choice, given what was asked and what the probe finds.
fn decide(asked: Option<Io>, probe: impl FnOnce() -> Result<uring::Flags, String>) -> Chosen {
    if asked == Some(Io::Epoll) {
        return Chosen {
            io: Io::Epoll,
            flags: None,
            why: None,
        };
    }
    match probe() {
        Ok(flags) => Chosen {
            io: Io::Uring,
            flags: Some(flags),
            why: None,
        },
        Err(why) => Chosen {
            io: Io::Epoll,
            flags: None,
            why: Some(why),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_ring_falls_back_to_epoll_with_the_reason() {
        let refused = || Err("io_uring_setup: Operation not permitted".to_string());
        for asked in [None, Some(Io::Uring)] {
            let chosen = decide(asked, refused);
            assert_eq!(chosen.io, Io::Epoll);
            assert_eq!(chosen.name(), "epoll");
            assert!(chosen.why.unwrap().contains("not permitted"));
        }
    }

    #[test]
    fn epoll_asked_for_is_used_without_probing() {
        let chosen = decide(Some(Io::Epoll), || panic!("probed"));
        assert_eq!((chosen.io, chosen.why), (Io::Epoll, None));
    }

    #[test]
    fn a_working_ring_is_the_default() {
        let chosen = decide(None, || Ok(uring::Flags::Defer));
        assert_eq!(chosen.io, Io::Uring);
        assert_eq!(chosen.name(), "io_uring");
        assert_eq!(chosen.flags, Some(uring::Flags::Defer));
    }

    #[test]
    fn reactor_names_parse() {
        assert_eq!(Io::parse("uring"), Ok(Io::Uring));
        assert_eq!(Io::parse("epoll"), Ok(Io::Epoll));
        assert!(Io::parse("kqueue").unwrap_err().contains("uring or epoll"));
    }
}
