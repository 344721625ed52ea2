//! The `loadtest` binary: parse flags, dispatch, map the result to an exit
//! code. Everything else lives in the library.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = loadtest::cli::Cli::parse();
    match loadtest::cli::dispatch(cli) {
        Ok(code) => ExitCode::from(code),
        Err(failure) => {
            eprintln!("loadtest: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}
