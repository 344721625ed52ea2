//! The command line: flags defined once (`args`), the commands, and how a
//! command's outcome becomes an exit code.
//!
//! Exit codes (`verdict::Exit`): 0 ok; 1 a threshold failed or `compare`
//! found a regression; 2 usage or configuration error; 3 the run is
//! invalid (the generator was the bottleneck, or failed); 128 + the
//! signal's number when stopped by one (130 Ctrl-C, 143 SIGTERM, 129
//! SIGHUP; what was measured is written, see `signals`). A closed stdout (`| head`) is
//! not an error: output stops and the command ends as it would have.

/// Prints a line on stdout, unless stdout is gone (see `output`).
macro_rules! say {
    () => { $crate::cli::output::line("") };
    ($($arg:tt)*) => { $crate::cli::output::line(&format!($($arg)*)) };
}

mod args;
mod live;
mod mock;
pub mod output;
mod run;
mod setup;
mod signals;
mod summaries;

pub use args::*;

use crate::verdict::Exit;
use clap::CommandFactory as _;
use std::ffi::OsString;

/// An error at the edge: a message for the user and how the process ends.
#[derive(Debug)]
pub struct Failure {
    /// How the process ends.
    pub exit: Exit,
    /// One line.
    pub message: String,
}

/// A usage or configuration error (exit 2).
fn usage(message: impl Into<String>) -> Failure {
    Failure {
        exit: Exit::Usage,
        message: message.into(),
    }
}

/// Chooses the reactor before any executor starts (`--io`, else
/// `LOADTEST_IO`, else io_uring where it works), saying so when io_uring
/// cannot be used.
fn choose_io(asked: Option<IoArg>) -> Result<&'static crate::rt::Chosen, Failure> {
    let chosen = crate::rt::choose_io(asked.map(IoArg::io)).map_err(usage)?;
    if let Some(why) = &chosen.why {
        eprintln!("loadtest: running on epoll: {why}");
    }
    Ok(chosen)
}

/// Runs a parsed command line; returns how it ended.
pub fn dispatch(cli: Cli) -> Result<Exit, Failure> {
    match cli.command {
        Command::Run(args) => run::run(*args),
        Command::Validate(args) => summaries::validate(args),
        Command::Compare(args) => summaries::compare(args),
        Command::Merge(args) => summaries::merge(args),
        Command::Report(args) => summaries::report(args),
        Command::Mock(args) => mock::serve(args),
        Command::Join(args) => summaries::join(args),
    }
}

/// Every long flag of every command, as `--help` lists them.
fn long_flags() -> Vec<String> {
    let cli = Cli::command();
    let mut names: Vec<String> = vec!["help".into(), "version".into()];
    for command in cli.get_subcommands() {
        for arg in command.get_arguments() {
            if let Some(long) = arg.get_long() {
                names.push(long.to_string());
            }
        }
    }
    names.sort();
    names.dedup();
    names
}

/// Rewrites the seed tool's command line into this one: a long flag
/// spelled with one dash (`-config`, `-max-inflight=5`) gets a second
/// one, and a command line that starts with a flag (no subcommand, as
/// the seed tool was used) means `run`.
pub fn normalize_args(args: Vec<OsString>) -> Vec<OsString> {
    if let Some(compare) = seed_compare(&args) {
        return compare;
    }
    let flags = long_flags();
    let mut out: Vec<OsString> = Vec::with_capacity(args.len() + 1);
    for (i, arg) in args.into_iter().enumerate() {
        let rewritten = arg.to_str().and_then(|text| {
            let name = text.strip_prefix('-')?;
            if name.starts_with('-') || i == 0 {
                return None;
            }
            let key = name.split('=').next().unwrap_or(name);
            flags
                .iter()
                .any(|f| f == key)
                .then(|| OsString::from(format!("-{text}")))
        });
        out.push(rewritten.unwrap_or(arg));
    }
    let first = out.get(1).and_then(|a| a.to_str()).unwrap_or("");
    let bare_flag = first.starts_with('-')
        && !matches!(first, "-h" | "--help" | "-V" | "--version")
        && !first.starts_with("--version=");
    if bare_flag {
        out.insert(1, OsString::from("run"));
    }
    out
}

/// The seed tool's `-compare old.json,new.json [-regress-pct N]`, as
/// `compare old.json new.json [--regress-pct N]`.
fn seed_compare(args: &[OsString]) -> Option<Vec<OsString>> {
    let texts: Vec<&str> = args.iter().map(|a| a.to_str().unwrap_or("")).collect();
    let at = texts.iter().position(|a| {
        let key = a.split('=').next().unwrap_or(a);
        key == "-compare" || key == "--compare"
    })?;
    let list = match texts[at].split_once('=') {
        Some((_, list)) => list,
        None => texts.get(at + 1)?,
    };
    let (old, new) = list.split_once(',')?;
    let mut out = vec![
        args[0].clone(),
        OsString::from("compare"),
        OsString::from(old),
        OsString::from(new),
    ];
    for (i, text) in texts.iter().enumerate() {
        let key = text.split('=').next().unwrap_or(text);
        if key == "-regress-pct" || key == "--regress-pct" {
            out.push(OsString::from("--regress-pct"));
            match text.split_once('=') {
                Some((_, value)) => out.push(OsString::from(value)),
                None => out.extend(args.get(i + 1).cloned()),
            }
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    fn normalized(argv: &[&str]) -> Vec<String> {
        normalize_args(argv.iter().map(OsString::from).collect())
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect()
    }

    #[test]
    fn seed_spellings_are_accepted() {
        assert_eq!(
            normalized(&[
                "loadtest",
                "-config",
                "p.json",
                "-vk",
                "k",
                "-header",
                "X: 1",
                "-out=runs"
            ]),
            [
                "loadtest",
                "run",
                "--config",
                "p.json",
                "--vk",
                "k",
                "--header",
                "X: 1",
                "--out=runs"
            ]
        );
        assert_eq!(
            normalized(&["loadtest", "-version"]),
            ["loadtest", "--version"]
        );
        assert_eq!(
            normalized(&["loadtest", "run", "--config", "p", "--stages", "1:1s"]),
            ["loadtest", "run", "--config", "p", "--stages", "1:1s"]
        );
        // A value that starts with a dash but is not a known flag is kept.
        assert_eq!(
            normalized(&["loadtest", "run", "--model", "-x"]),
            ["loadtest", "run", "--model", "-x"]
        );
        // Every long flag has a single-dash spelling, not only the seed's.
        assert_eq!(
            normalized(&[
                "loadtest",
                "run",
                "-quiet",
                "-cpus",
                "0",
                "-max-inflight=5",
                "-mock"
            ]),
            [
                "loadtest",
                "run",
                "--quiet",
                "--cpus",
                "0",
                "--max-inflight=5",
                "--mock"
            ]
        );
        assert_eq!(
            normalized(&["loadtest", "-compare=a.json,b.json", "-regress-pct=5"]),
            [
                "loadtest",
                "compare",
                "a.json",
                "b.json",
                "--regress-pct",
                "5"
            ]
        );
        assert_eq!(
            normalized(&["loadtest", "-compare", "a.json,b.json"]),
            ["loadtest", "compare", "a.json", "b.json"]
        );
        let argv = normalized(&[
            "loadtest", "-config", "p.json", "-stages", "1:1s", "-model", "a/b", "-quiet",
        ]);
        let cli = Cli::try_parse_from(argv).unwrap();
        let Command::Run(args) = cli.command else {
            panic!("not run")
        };
        assert_eq!(args.overrides.model.as_deref(), Some("a/b"));
        assert!(args.quiet);
    }

    #[test]
    fn flag_conflicts_are_usage_errors() {
        let argv = [
            "loadtest", "run", "--config", "x", "--mock", "--target", "http://a",
        ];
        assert!(Cli::try_parse_from(argv).is_err());
        let argv = ["loadtest", "run", "--config", "x", "--mock-ttft", "5ms"];
        assert!(Cli::try_parse_from(argv).is_err());
        let argv = ["loadtest", "run"];
        assert!(Cli::try_parse_from(argv).is_err());
    }

    #[test]
    fn help_names_what_users_look_for() {
        let mut cli = Cli::command();
        let run = cli
            .find_subcommand_mut("run")
            .unwrap()
            .render_long_help()
            .to_string();
        assert!(run.contains("@RATE") && run.contains("@~RATE"), "{run}");
        for file in [
            "results-<id>.jsonl",
            "summary-<id>.json",
            "report-<id>.txt",
            "report-<id>.csv",
            "metrics-<id>.prom",
        ] {
            assert!(run.contains(file), "--out help lacks {file}");
        }
        let mock = cli
            .find_subcommand_mut("mock")
            .unwrap()
            .render_long_help()
            .to_string();
        for header in [
            "x-mock-ttft-ms",
            "x-mock-status",
            "x-mock-close",
            "x-mock-fault",
        ] {
            assert!(mock.contains(header), "mock help lacks {header}");
        }
    }
}
