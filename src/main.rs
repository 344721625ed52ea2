//! The `loadtest` binary: parse flags, dispatch, map the outcome to an
//! exit code. Everything else lives in the library.

use clap::Parser;
use loadtest::cli;
use loadtest::verdict::Exit;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = cli::normalize_args(std::env::args_os().collect());
    let parsed = cli::Cli::parse_from(args);
    let exit = match cli::dispatch(parsed) {
        Ok(exit) => exit,
        Err(failure) => {
            eprintln!("loadtest: {}", failure.message);
            failure.exit
        }
    };
    // A reader that stopped reading (`| head`) is not a failure of ours.
    if cli::output::closed() && !matches!(exit, Exit::Interrupted(_)) {
        return ExitCode::SUCCESS;
    }
    ExitCode::from(exit.code())
}
