//! The `loadtest` binary: parse flags, dispatch, map the result to an exit
//! code. Everything else lives in the library.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = loadtest::cli::normalize_args(std::env::args_os().collect());
    let cli = loadtest::cli::Cli::parse_from(args);
    match loadtest::cli::dispatch(cli) {
        Ok(code) => ExitCode::from(code),
        Err(failure) => {
            eprintln!("loadtest: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}
